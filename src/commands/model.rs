//! `flotilla model init DIR`: writes a working example version folder —
//! CarlaRL's 5 → 64 (ReLU) → 64 (ReLU) → 3 (Tanh) policy shape with seeded
//! weights, its preprocessing statistics and a model card carrying the real
//! sha256 of each file — so `flotilla worker --artifacts DIR` serves real
//! predictions at once.

use anyhow::{anyhow, Result};
use clap::{Args, Subcommand};
use flotilla_inference::{write_example, WeightsFormat};
use std::path::PathBuf;
use std::process::ExitCode;

/// `flotilla model`.
#[derive(Debug, Args)]
pub struct ModelArgs {
    /// What to do.
    #[command(subcommand)]
    pub what: ModelWhat,
}

/// Model artifact commands.
#[derive(Debug, Subcommand)]
pub enum ModelWhat {
    /// Write an example version folder into DIR.
    Init(ModelInitArgs),
}

/// `flotilla model init`.
#[derive(Debug, Args)]
pub struct ModelInitArgs {
    /// The artifact folder (created if missing).
    pub dir: PathBuf,
    /// The version folder to write.
    #[arg(long, default_value = "v0.1.0")]
    pub version: String,
    /// Seed of the weights.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Weights file: safetensors (model.safetensors) or pytorch (model.pt, a state_dict).
    #[arg(long, value_enum, default_value = "safetensors")]
    pub format: Format,
}

/// Weights formats.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Format {
    /// `model.safetensors`.
    Safetensors,
    /// `model.pt`, a PyTorch state_dict.
    Pytorch,
}

/// Runs `flotilla model`.
pub fn run(args: ModelArgs) -> Result<ExitCode> {
    match args.what {
        ModelWhat::Init(a) => {
            let format = match a.format {
                Format::Safetensors => WeightsFormat::Safetensors,
                Format::Pytorch => WeightsFormat::Pytorch,
            };
            let dir = write_example(&a.dir, &a.version, a.seed, format).map_err(|e| anyhow!(e))?;
            println!("wrote {}", dir.display());
            println!("serve it: flotilla worker --artifacts {}", a.dir.display());
            Ok(ExitCode::SUCCESS)
        }
    }
}
