//! `flotilla agent`.
use crate::cli::AgentArgs;
use anyhow::Result;
use std::process::ExitCode;

/// Runs the agent.
pub fn run(_args: AgentArgs) -> Result<ExitCode> {
    anyhow::bail!("agent: not yet")
}
