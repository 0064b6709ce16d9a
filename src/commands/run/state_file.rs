//! The state file (`--state`): ArqonHPO's `{config, history, run_id}`
//! ([`ArqonState`], the shape `flotilla dashboard` and the gateway's
//! `/v1/studies/<id>/api/state` answer too), plus what Flotilla needs to
//! resume (`flotilla`: the study, its data directory and the failed
//! trials), rewritten atomically after every result.

use anyhow::{anyhow, Context, Result};
use flotilla_gateway::arqon::ArqonState;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The state file: ArqonHPO's `{config, history, run_id}` plus what
/// Flotilla needs to resume.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct StateFile {
    /// ArqonHPO's part: the config file as written, the told trials and
    /// the study's run (the id of its creation event).
    #[serde(flatten)]
    pub(super) arqon: ArqonState,
    /// What Flotilla adds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) flotilla: Option<FlotillaState>,
}

/// The state file's `flotilla` part.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct FlotillaState {
    /// The study's id.
    pub(super) study: String,
    /// The embedded log's directory.
    pub(super) data_dir: PathBuf,
    /// The failed trials.
    #[serde(default)]
    pub(super) failed: Vec<FailedTrial>,
}

/// A failed trial and why it failed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct FailedTrial {
    /// The trial's id.
    pub(super) trial_id: String,
    /// Why it failed.
    pub(super) reason: String,
}

impl StateFile {
    /// Reads the state file at `path`.
    pub(super) fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("state {}: cannot read", path.display()))?;
        serde_json::from_str(&text).map_err(|e| anyhow!("state {}: {e}", path.display()))
    }

    /// Writes `path` atomically: a temp file in the same directory, synced,
    /// then renamed over it.
    pub(super) fn save(&self, path: &Path) -> Result<()> {
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "state.json".into());
        let tmp = dir.join(format!(".{name}.tmp.{}", std::process::id()));
        let body = serde_json::to_vec_pretty(self)?;
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&body)?;
            f.write_all(b"\n")?;
            f.sync_all()?;
            std::fs::rename(&tmp, path)
        };
        write().with_context(|| format!("state {}: cannot write", path.display()))
    }
}
