//! Faults: what each of Navarch's failure types does to a simulated node,
//! and the seeded draws of the `chaos` section.
//!
//! | failure type | what the node does |
//! |---|---|
//! | `xid_error` | an XID on one GPU (drawn from `xid_distribution`) |
//! | `memory_error` | a double-bit ECC error |
//! | `nvlink_error` | XID 74 |
//! | `temperature` | one GPU at 95 °C (above the 89 °C slowdown) while it lasts |
//! | `nvml_failure` | NVML stops answering while it lasts (heartbeats go on) |
//! | `network`, `backend_error` | the agent falls silent while it lasts |
//! | `boot_failure` | the node goes down and never comes back |
//!
//! What the pool then does is the real health policy's and pool's
//! business, not this module's. The one judgement made here is
//! [`FaultSpec::benign`]: faults that must never cost a node its place
//! (NVIDIA's application and ignorable XIDs, XIDs to investigate, NVML
//! outages, backend blips); a replacement that follows only such faults is
//! counted as wrongly replaced.

use super::file::{ChaosConfig, FailureType};
use super::placement::pick;
use super::world::World;
use flotilla_health::{
    FaultKind, GpuEvent, APPLICATION_XIDS, IGNORABLE_XIDS, INVESTIGATE_XIDS, SIM_SLOWDOWN_C,
};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// A chaos run's XID mix when the scenario gives none: application and
/// ignorable XIDs (which must never replace a node) next to reset-class
/// and replace-class ones.
pub const DEFAULT_XIDS: [(u32, u32); 8] = [
    (13, 20),
    (31, 10),
    (94, 10),
    (43, 5),
    (79, 20),
    (48, 10),
    (62, 15),
    (74, 10),
];

/// How hot a `temperature` fault runs a GPU.
pub const FAULT_CELSIUS: f64 = SIM_SLOWDOWN_C + 6.0;

/// One fault for one node.
#[derive(Debug, Clone, PartialEq)]
pub struct FaultSpec {
    /// The failure type.
    pub kind: FailureType,
    /// The XID, for `xid_error`.
    pub xid: Option<u32>,
    /// The GPU.
    pub gpu: u32,
    /// How long it lasts; `None`: until recovered (or for good).
    pub lasting: Option<u64>,
}

impl FaultSpec {
    /// The fault table's row name: `xid 79`, `temperature`, …
    pub fn label(&self) -> String {
        match (self.kind, self.xid) {
            (FailureType::XidError, Some(code)) => format!("xid {code}"),
            (kind, _) => kind_name(kind).to_string(),
        }
    }

    /// Whether no correct policy replaces a node for it.
    pub fn benign(&self) -> bool {
        match self.kind {
            FailureType::XidError => self.xid.is_some_and(|c| {
                APPLICATION_XIDS.contains(&c)
                    || IGNORABLE_XIDS.contains(&c)
                    || INVESTIGATE_XIDS.contains(&c)
            }),
            FailureType::NvlinkError | FailureType::NvmlFailure | FailureType::BackendError => true,
            _ => false,
        }
    }

    /// Applies it to a node of the world now; false when the node has no
    /// running agent.
    pub fn apply(&self, world: &mut World, node_id: &str) -> bool {
        let event = |event| FaultKind::Event { event };
        let gpu = self.gpu;
        match self.kind {
            FailureType::XidError => {
                let code = self.xid.unwrap_or(79);
                world.inject(node_id, event(GpuEvent::Xid { gpu, code }), Some(0))
            }
            FailureType::NvlinkError => {
                world.inject(node_id, event(GpuEvent::Xid { gpu, code: 74 }), Some(0))
            }
            FailureType::MemoryError => {
                world.inject(node_id, event(GpuEvent::EccDbe { gpu, count: 1 }), Some(0))
            }
            FailureType::Temperature => world.inject(
                node_id,
                FaultKind::Temperature {
                    gpu,
                    celsius: FAULT_CELSIUS,
                    duration: self.lasting,
                },
                self.lasting,
            ),
            FailureType::NvmlFailure => world.inject(
                node_id,
                FaultKind::Unavailable {
                    duration: self.lasting,
                },
                self.lasting,
            ),
            FailureType::Network | FailureType::BackendError | FailureType::BootFailure => {
                world.silence(node_id)
            }
        }
    }

    /// Whether the node comes back by itself once it has lasted.
    pub fn recovers(&self) -> bool {
        self.lasting.is_some()
            && matches!(
                self.kind,
                FailureType::Network
                    | FailureType::BackendError
                    | FailureType::NvmlFailure
                    | FailureType::Temperature
            )
    }
}

/// The scenario's spelling of a failure type.
pub fn kind_name(kind: FailureType) -> &'static str {
    match kind {
        FailureType::XidError => "xid_error",
        FailureType::Temperature => "temperature",
        FailureType::MemoryError => "memory_error",
        FailureType::NvlinkError => "nvlink_error",
        FailureType::NvmlFailure => "nvml_failure",
        FailureType::BackendError => "backend_error",
        FailureType::BootFailure => "boot_failure",
        FailureType::Network => "network",
    }
}

/// The chaos section's draws, from one seeded stream.
pub struct ChaosDraws<'a> {
    /// The section.
    pub config: &'a ChaosConfig,
    /// The stream.
    pub rng: &'a mut ChaCha8Rng,
}

impl ChaosDraws<'_> {
    /// A failure type from `failure_types` (XID errors when none).
    pub fn kind(&mut self) -> FailureType {
        let weights = self.config.failure_types.iter();
        pick(self.rng, weights.map(|w| (w.failure_type, w.weight))).unwrap_or(FailureType::XidError)
    }

    /// An XID from `xid_distribution` ([`DEFAULT_XIDS`] when none).
    pub fn xid(&mut self) -> u32 {
        let given = self.config.xid_distribution.iter().map(|(c, w)| (*c, *w));
        let drawn = pick(self.rng, given);
        drawn.unwrap_or_else(|| pick(self.rng, DEFAULT_XIDS.into_iter()).unwrap_or(79))
    }

    /// How long a fault of `kind` lasts: `recovery` draws it (normal around
    /// `mean_time`) with its `probability`; otherwise it lasts for good.
    pub fn lasting(&mut self, kind: FailureType) -> Option<u64> {
        let recoverable = !matches!(
            kind,
            FailureType::BootFailure
                | FailureType::XidError
                | FailureType::MemoryError
                | FailureType::NvlinkError
        );
        let r = self.config.recovery.as_ref().filter(|r| r.enabled)?;
        if !recoverable || !self.rng.random_bool(r.probability.clamp(0.0, 1.0)) {
            return None;
        }
        let mean = r.mean_time_ms as f64;
        let drawn = super::placement::normal(self.rng, mean, r.std_dev_ms as f64);
        Some(drawn.max(1_000.0) as u64)
    }

    /// A whole fault of `kind` (its XID, GPU and duration drawn).
    pub fn fault(&mut self, kind: FailureType, gpus: u32) -> FaultSpec {
        let xid = (kind == FailureType::XidError).then(|| self.xid());
        FaultSpec {
            kind,
            xid,
            gpu: self.rng.random_range(0..gpus.max(1)),
            lasting: self.lasting(kind),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn application_and_ignorable_xids_are_benign_and_hardware_ones_are_not() {
        let xid = |code| FaultSpec {
            kind: FailureType::XidError,
            xid: Some(code),
            gpu: 0,
            lasting: None,
        };
        for code in [13, 31, 43, 94, 74] {
            assert!(xid(code).benign(), "{code}");
        }
        for code in [79, 48, 62] {
            assert!(!xid(code).benign(), "{code}");
        }
        assert_eq!(xid(79).label(), "xid 79");
    }
}
