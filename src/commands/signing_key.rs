//! `flotilla signing-key FILE`: the control plane's Ed25519 signing key,
//! made before anything runs (to put in a Kubernetes Secret, a Compose
//! volume, …) with the code `up` makes it with
//! ([`crate::signing::load_or_generate`]).
//!
//! FILE gets 64 hex digits (mode 0600, written aside and linked into
//! place) when it does not exist; an existing key is kept. Its public key
//! goes beside it as `FILE.pub`, and the public key's path and hex are
//! printed on stdout, on one line: `FILE.pub HEX`.

use crate::cli::SigningKeyArgs;
use crate::signing::{load_or_generate, public_key_path};
use anyhow::{bail, Result};
use std::process::ExitCode;

/// Runs `flotilla signing-key`.
pub fn run(args: SigningKeyArgs) -> Result<ExitCode> {
    let existed = args.file.exists();
    let key = load_or_generate(&args.file)?;
    let hex = hex::encode(key.verifying_key().as_bytes());
    // `up` only warns when it cannot publish the public key; here the
    // public key is what was asked for.
    let public = public_key_path(&args.file);
    let published = std::fs::read_to_string(&public).unwrap_or_default();
    if published.trim() != hex {
        bail!(
            "signing_key: cannot write the public key to {} (the key is in {})",
            public.display(),
            args.file.display()
        );
    }
    if existed {
        eprintln!("kept the existing key {}", args.file.display());
    }
    println!("{} {hex}", public.display());
    Ok(ExitCode::SUCCESS)
}
