//! What a node's health agent publishes on `<prefix>.health.<node>`.
//!
//! Three kinds of message, JSON maps tagged by `type`:
//!
//! - `heartbeat`: the agent is alive (and, if it can read the GPUs, their
//!   telemetry);
//! - `report`: the agent's policy evaluated the node: a [`Verdict`], the
//!   [`HealthAction`] it recommends and the reasons;
//! - `health_source_unavailable`: the agent cannot read the hardware (no
//!   NVML library, no driver) and says why, once.
//!
//! The agent evaluates its own health policy (windows and hysteresis live
//! next to the data), the control plane (the provisioner) counts
//! consecutive unhealthy reports against the pool's `unhealthy_threshold`
//! and acts. Neighbours: `flotilla-health` (agent, sources,
//! policy) and `flotilla-provisioner` (the pool aggregate).

use serde::{Deserialize, Serialize};

/// How healthy a node is, as its agent's policy sees it.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default,
)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Nothing wrong.
    #[default]
    Healthy,
    /// Something to watch; keeps serving.
    Degraded,
    /// Should not take work.
    Unhealthy,
}

impl Verdict {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Healthy => "healthy",
            Verdict::Degraded => "degraded",
            Verdict::Unhealthy => "unhealthy",
        }
    }
}

/// What the policy recommends for an unhealthy node.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default,
)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum HealthAction {
    /// Nothing.
    #[default]
    None,
    /// Cordon and reset the GPU; the node may come back.
    ResetGpu,
    /// Take the node out and replace it.
    Replace,
}

/// One GPU's telemetry in a heartbeat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct GpuTelemetry {
    /// The device index.
    pub index: u32,
    /// The device UUID, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    /// Core temperature, °C.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature_c: Option<f64>,
    /// The device's slowdown threshold, °C.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slowdown_c: Option<f64>,
    /// GPU utilisation, percent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub utilization_percent: Option<f64>,
    /// Memory used, bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_used_bytes: Option<u64>,
    /// Memory total, bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_total_bytes: Option<u64>,
    /// Power draw, watts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub power_watts: Option<f64>,
    /// Volatile uncorrected (double-bit) ECC errors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ecc_uncorrected: Option<u64>,
    /// Active throttle reasons.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub throttle_reasons: Vec<String>,
}

/// A message on `<prefix>.health.<node>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum HealthMessage {
    /// The agent is alive.
    Heartbeat {
        /// The node.
        node_id: String,
        /// The agent's clock, unix milliseconds.
        at: u64,
        /// Telemetry per GPU (empty without a hardware source).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        gpus: Vec<GpuTelemetry>,
    },
    /// A policy evaluation.
    Report {
        /// The node.
        node_id: String,
        /// The agent's clock, unix milliseconds.
        at: u64,
        /// The verdict after windows and hysteresis.
        verdict: Verdict,
        /// What to do about it.
        #[serde(default)]
        action: HealthAction,
        /// The rules that fired, e.g. `xid_79_fell_off_bus`.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        reasons: Vec<String>,
        /// XID codes seen since the last report.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        xids: Vec<u32>,
    },
    /// The hardware cannot be read; sent once per agent start.
    HealthSourceUnavailable {
        /// The node.
        node_id: String,
        /// The agent's clock, unix milliseconds.
        at: u64,
        /// The source (`nvml`).
        source: String,
        /// Why, e.g. `libnvidia-ml.so.1: cannot open shared object file`.
        reason: String,
    },
}

impl HealthMessage {
    /// The node the message is about.
    pub fn node_id(&self) -> &str {
        match self {
            HealthMessage::Heartbeat { node_id, .. }
            | HealthMessage::Report { node_id, .. }
            | HealthMessage::HealthSourceUnavailable { node_id, .. } => node_id,
        }
    }

    /// When it was sent.
    pub fn at(&self) -> u64 {
        match self {
            HealthMessage::Heartbeat { at, .. }
            | HealthMessage::Report { at, .. }
            | HealthMessage::HealthSourceUnavailable { at, .. } => *at,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_tagged_json() {
        let m = HealthMessage::Report {
            node_id: "n1".into(),
            at: 5,
            verdict: Verdict::Unhealthy,
            action: HealthAction::Replace,
            reasons: vec!["xid_79".into()],
            xids: vec![79],
        };
        let v = serde_json::to_value(&m).unwrap();
        assert_eq!(v["type"], "report");
        assert_eq!(v["verdict"], "unhealthy");
        assert_eq!(v["action"], "replace");
        let back: HealthMessage = serde_json::from_value(v).unwrap();
        assert_eq!(back, m);
    }
}
