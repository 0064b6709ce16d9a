//! `flotilla token create|list|revoke`: the HTTP bearer tokens of `up`,
//! `worker` and `agent` (`--tokens FILE`).
//!
//! `create` prints the new token once, on stdout, and stores only its
//! SHA-256 with the name and role; the file is rewritten atomically with
//! mode 0600. The file is [`flotilla_gateway::auth::TokenFile`]; servers
//! read it at start, so a revoked token stops working when they restart.

use crate::cli::{TokenArgs, TokenWhat};
use anyhow::{anyhow, Result};
use flotilla_gateway::auth::TokenFile;
use flotilla_messages::auth::Role;
use std::path::PathBuf;
use std::process::ExitCode;

/// Where `token` keeps the file when neither `--tokens` nor
/// `FLOTILLA_TOKENS_FILE` names one: beside the embedded data directory.
pub const DEFAULT_TOKENS_FILE: &str = ".flotilla/tokens.json";

/// Runs `flotilla token ...`.
pub fn run(args: TokenArgs) -> Result<ExitCode> {
    let path = args
        .tokens
        .unwrap_or_else(|| PathBuf::from(DEFAULT_TOKENS_FILE));
    match args.what {
        TokenWhat::Create { name, role } => {
            let role = Role::parse(&role).map_err(|e| anyhow!("role: {e}"))?;
            let mut file = TokenFile::load_or_empty(&path)?;
            let token = file.create(&name, role)?;
            file.save(&path)?;
            println!("{token}");
            eprintln!(
                "token {name:?} ({role}) added to {}: it is shown only this once; \
                 send it as Authorization: Bearer <token>",
                path.display()
            );
        }
        TokenWhat::List => {
            let file = TokenFile::load(&path)?;
            println!("{:<32} ROLE", "NAME");
            for t in &file.tokens {
                println!("{:<32} {}", t.name, t.role);
            }
        }
        TokenWhat::Revoke { name } => {
            let mut file = TokenFile::load(&path)?;
            file.revoke(&name)?;
            file.save(&path)?;
            eprintln!(
                "token {name:?} revoked in {}; restart the servers that read it",
                path.display()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
