//! `flotilla signing-key FILE`: the control plane's Ed25519 signing key,
//! made before anything runs (to put in a Kubernetes Secret, a Compose
//! volume, …) with the code `up` makes it with
//! ([`crate::signing::load_or_create`]).
//!
//! FILE gets 64 hex digits (mode 0600, written aside and linked into
//! place) when it does not exist; an existing key is kept. Its public key
//! goes beside it as `FILE.pub`, and the public key's path and hex are
//! printed on stdout, on one line: `FILE.pub HEX`.

use crate::cli::SigningKeyArgs;
use crate::signing::{load_or_create, public_key_path, publish_public_key};
use anyhow::Result;
use std::process::ExitCode;

/// Runs `flotilla signing-key`.
pub fn run(args: SigningKeyArgs) -> Result<ExitCode> {
    let existed = args.file.exists();
    let key = load_or_create(&args.file)?;
    // `up` only warns when it cannot publish the public key; here the
    // public key is what was asked for.
    publish_public_key(&args.file, &key)?;
    if existed {
        eprintln!("kept the existing key {}", args.file.display());
    }
    let hex = hex::encode(key.verifying_key().as_bytes());
    println!("{} {hex}", public_key_path(&args.file).display());
    Ok(ExitCode::SUCCESS)
}
