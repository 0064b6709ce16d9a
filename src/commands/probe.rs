//! `flotilla probe URL`: the health check of an image that has no curl.
//!
//! The flotilla image is FROM scratch (deploy/image/), so Docker's
//! `HEALTHCHECK` and Compose's `healthcheck` run the binary itself: one GET,
//! exit 0 on a 2xx answer, 1 on any other answer or no answer in time,
//! with the reason on stderr (what `docker inspect` shows as the check's
//! output). Kubernetes probes use `httpGet` and need none of this.

use crate::cli::ProbeArgs;
use anyhow::{Context, Result};
use std::process::ExitCode;

/// Runs the probe.
pub fn run(args: ProbeArgs) -> Result<ExitCode> {
    // The answer of exactly this URL counts: no proxy from the environment
    // in between, no redirect followed elsewhere.
    let client = reqwest::blocking::Client::builder()
        .timeout(args.timeout)
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .context("probe: HTTP client")?;
    match client.get(&args.url).send() {
        Ok(reply) if reply.status().is_success() => Ok(ExitCode::SUCCESS),
        Ok(reply) => {
            let status = reply.status();
            let body = reply.text().unwrap_or_default();
            eprintln!("probe: {} answered {status}: {}", args.url, body.trim());
            Ok(ExitCode::from(1))
        }
        Err(e) => {
            eprintln!("probe: {}: {e}", args.url);
            Ok(ExitCode::from(1))
        }
    }
}
