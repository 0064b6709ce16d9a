//! Where an agent's observations come from: the [`HealthSource`] trait, the
//! observation types, and the simulated source with injected faults.
//!
//! A source is sampled once per agent interval and answers with telemetry
//! per GPU plus the discrete events (XIDs, ECC errors, row-remap failures,
//! recovery actions) seen since the last sample. The NVML source lives in
//! [`super::nvml`].

use flotilla_messages::fleet::parse_millis;
use flotilla_messages::health::GpuTelemetry;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// A discrete hardware event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum GpuEvent {
    /// A critical XID error.
    Xid {
        /// The device.
        gpu: u32,
        /// The XID code.
        code: u32,
    },
    /// New double-bit (uncorrectable) ECC errors.
    EccDbe {
        /// The device.
        gpu: u32,
        /// How many.
        count: u64,
    },
    /// New single-bit (corrected) ECC errors.
    EccSbe {
        /// The device.
        gpu: u32,
        /// How many.
        count: u64,
    },
    /// The row remapper failed (a replacement criterion).
    RowRemapFailure {
        /// The device.
        gpu: u32,
    },
    /// A row remap is pending (needs a GPU reset).
    RowRemapPending {
        /// The device.
        gpu: u32,
    },
    /// The driver asks for a recovery action (NVML field 230).
    RecoveryAction {
        /// The device.
        gpu: u32,
        /// `gpu_reset`, `node_reboot`, `drain_p2p`, `drain_and_reset`.
        action: String,
    },
}

impl GpuEvent {
    /// Navarch's `event_type` for it.
    pub fn event_type(&self) -> &'static str {
        match self {
            GpuEvent::Xid { .. } => "xid",
            GpuEvent::EccDbe { .. } => "ecc_dbe",
            GpuEvent::EccSbe { .. } => "ecc_sbe",
            GpuEvent::RowRemapFailure { .. } => "row_remap_failure",
            GpuEvent::RowRemapPending { .. } => "row_remap_pending",
            GpuEvent::RecoveryAction { .. } => "recovery_action",
        }
    }

    /// The device.
    pub fn gpu(&self) -> u32 {
        match self {
            GpuEvent::Xid { gpu, .. }
            | GpuEvent::EccDbe { gpu, .. }
            | GpuEvent::EccSbe { gpu, .. }
            | GpuEvent::RowRemapFailure { gpu }
            | GpuEvent::RowRemapPending { gpu }
            | GpuEvent::RecoveryAction { gpu, .. } => *gpu,
        }
    }
}

/// One sample of a node.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Sample {
    /// When, unix milliseconds.
    pub at: u64,
    /// Telemetry per GPU.
    pub gpus: Vec<GpuTelemetry>,
    /// Events since the previous sample.
    pub events: Vec<GpuEvent>,
}

/// Why a source cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SourceError {
    /// The hardware interface is missing (no library, no driver): it will
    /// not come back by itself.
    #[error("{0}")]
    Unavailable(String),
    /// A passing failure of one sample.
    #[error("{0}")]
    Failed(String),
}

/// Something that reads a node's GPU health.
pub trait HealthSource: Send + 'static {
    /// The source's name (`nvml`, `sim`).
    fn name(&self) -> &'static str;
    /// Reads the GPUs now.
    fn sample(&mut self, now: u64) -> Result<Sample, SourceError>;
}

/// A fault injected into the simulated source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fault {
    /// When, after the source started (`30s`, `500ms`, or milliseconds as a number).
    #[serde(default, deserialize_with = "offset_ms")]
    pub at: u64,
    /// What happens.
    #[serde(flatten)]
    pub what: FaultKind,
}

/// What a simulated fault does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum FaultKind {
    /// A hardware event (XID, ECC, row remap, recovery action) at `at`.
    Event {
        /// The event.
        event: GpuEvent,
    },
    /// A GPU runs at `celsius` from `at` for `duration`.
    Temperature {
        /// The device.
        #[serde(default)]
        gpu: u32,
        /// The temperature.
        celsius: f64,
        /// How long (`10s`); for good when absent.
        #[serde(default, deserialize_with = "optional_ms")]
        duration: Option<u64>,
    },
    /// A GPU's utilisation from `at` on.
    Utilization {
        /// The device.
        #[serde(default)]
        gpu: u32,
        /// Percent.
        percent: f64,
    },
    /// The GPUs cannot be read (NVML stops answering) from `at` for
    /// `duration`: the agent heartbeats without reports meanwhile.
    Unavailable {
        /// How long (`2m`); for good when absent.
        #[serde(default, deserialize_with = "optional_ms")]
        duration: Option<u64>,
    },
}

fn offset_ms<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    match serde_json::Value::deserialize(d)? {
        serde_json::Value::Number(n) => n
            .as_u64()
            .ok_or_else(|| serde::de::Error::custom("must be >= 0")),
        serde_json::Value::String(s) => parse_millis(&s).map_err(serde::de::Error::custom),
        other => Err(serde::de::Error::custom(format!(
            "expected a duration, got {other}"
        ))),
    }
}

fn optional_ms<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    offset_ms(d).map(Some)
}

/// Faults the simulated source plays, shared with whoever injects more.
#[derive(Debug, Clone, Default)]
pub struct FaultQueue {
    faults: Arc<Mutex<Vec<Fault>>>,
    /// When the source took its first sample (unix ms; 0 before).
    origin: Arc<AtomicU64>,
}

impl FaultQueue {
    /// Adds a fault (its `at` relative to the source's start).
    pub fn inject(&self, fault: Fault) {
        self.faults
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(fault);
    }

    /// Adds a fault that happens at `now` (unix ms): it shows in the next sample.
    pub fn inject_now(&self, what: FaultKind, now: u64) {
        let origin = self.origin.load(Ordering::Acquire);
        // One past `now`: a sample taken at this very millisecond has not
        // seen it, the next one will.
        let at = if origin == 0 {
            0
        } else {
            now.saturating_sub(origin) + 1
        };
        self.inject(Fault { at, what });
    }

    /// Ends every lasting fault (heat, unavailability) at `now` (unix
    /// ms): the next sample is nominal again. Hardware events that already
    /// played stay played.
    pub fn end_all(&self, now: u64) {
        let origin = self.origin.load(Ordering::Acquire);
        let elapsed = now.saturating_sub(origin.max(1));
        let mut faults = self.faults.lock().unwrap_or_else(|e| e.into_inner());
        for f in faults.iter_mut() {
            let (FaultKind::Temperature { duration, .. } | FaultKind::Unavailable { duration }) =
                &mut f.what
            else {
                continue;
            };
            let until_now = elapsed.saturating_sub(f.at);
            *duration = Some(duration.map_or(until_now, |d| d.min(until_now)));
        }
    }

    fn snapshot(&self) -> Vec<Fault> {
        self.faults
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// Parses a faults file (YAML or JSON: a list of faults).
pub fn parse_faults(text: &str) -> Result<Vec<Fault>, String> {
    serde_yaml::from_str(text).map_err(|e| e.to_string())
}

/// Simulated GPUs: steady telemetry plus the faults of a [`FaultQueue`].
pub struct SimSource {
    gpus: u32,
    slowdown_c: f64,
    started: Option<u64>,
    last: Option<u64>,
    faults: FaultQueue,
}

/// A simulated GPU's resting temperature.
pub const SIM_IDLE_C: f64 = 55.0;
/// The simulated slowdown threshold (an H100's).
pub const SIM_SLOWDOWN_C: f64 = 89.0;

impl SimSource {
    /// `gpus` simulated devices playing `faults`.
    pub fn new(gpus: u32, faults: FaultQueue) -> Self {
        SimSource {
            gpus,
            slowdown_c: SIM_SLOWDOWN_C,
            started: None,
            last: None,
            faults,
        }
    }

    fn telemetry(&self, faults: &[Fault], elapsed: u64) -> Vec<GpuTelemetry> {
        (0..self.gpus)
            .map(|gpu| {
                let mut t = GpuTelemetry {
                    index: gpu,
                    uuid: None,
                    temperature_c: Some(SIM_IDLE_C),
                    slowdown_c: Some(self.slowdown_c),
                    utilization_percent: Some(0.0),
                    memory_total_bytes: Some(80 << 30),
                    memory_used_bytes: Some(0),
                    power_watts: Some(70.0),
                    ecc_uncorrected: Some(0),
                    throttle_reasons: vec![],
                };
                for f in faults.iter().filter(|f| f.at <= elapsed) {
                    match &f.what {
                        FaultKind::Temperature {
                            gpu: g,
                            celsius,
                            duration,
                        } if *g == gpu => {
                            let ongoing = duration.is_none_or(|d| elapsed < f.at + d);
                            if ongoing {
                                t.temperature_c = Some(*celsius);
                            }
                        }
                        FaultKind::Utilization { gpu: g, percent } if *g == gpu => {
                            t.utilization_percent = Some(*percent);
                        }
                        _ => {}
                    }
                }
                if t.temperature_c.unwrap_or(0.0) >= self.slowdown_c {
                    t.throttle_reasons.push("hw_thermal_slowdown".into());
                }
                t
            })
            .collect()
    }
}

impl HealthSource for SimSource {
    fn name(&self) -> &'static str {
        "sim"
    }

    fn sample(&mut self, now: u64) -> Result<Sample, SourceError> {
        let started = *self.started.get_or_insert(now);
        self.faults.origin.store(started.max(1), Ordering::Release);
        let elapsed = now.saturating_sub(started);
        let since = self.last.map(|l| l.saturating_sub(started));
        self.last = Some(now);
        let faults = self.faults.snapshot();
        let down = faults.iter().any(|f| {
            matches!(f.what, FaultKind::Unavailable { duration }
                if f.at <= elapsed && duration.is_none_or(|d| elapsed < f.at + d))
        });
        if down {
            return Err(SourceError::Unavailable(
                "sim: NVML does not answer (injected)".into(),
            ));
        }
        let events = faults
            .iter()
            .filter(|f| f.at <= elapsed && since.is_none_or(|s| f.at > s))
            .filter_map(|f| match &f.what {
                FaultKind::Event { event } => Some(event.clone()),
                _ => None,
            })
            .collect();
        Ok(Sample {
            at: now,
            gpus: self.telemetry(&faults, elapsed),
            events,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unavailable_fault_hides_the_gpus_for_its_duration() {
        let queue = FaultQueue::default();
        for f in parse_faults("- {at: 5s, kind: unavailable, duration: 10s}\n").unwrap() {
            queue.inject(f);
        }
        let mut sim = SimSource::new(1, queue);
        assert!(sim.sample(1_000).is_ok());
        assert!(matches!(
            sim.sample(7_000),
            Err(SourceError::Unavailable(_))
        ));
        assert!(sim.sample(16_000).is_ok(), "back after 10 s");
    }

    #[test]
    fn end_all_stops_lasting_faults_at_once() {
        let queue = FaultQueue::default();
        let mut sim = SimSource::new(1, queue.clone());
        sim.sample(1_000).unwrap();
        queue.inject_now(
            FaultKind::Temperature {
                gpu: 0,
                celsius: 95.0,
                duration: None,
            },
            2_000,
        );
        assert_eq!(sim.sample(3_000).unwrap().gpus[0].temperature_c, Some(95.0));
        queue.end_all(4_000);
        let after = sim.sample(5_000).unwrap();
        assert_eq!(after.gpus[0].temperature_c, Some(SIM_IDLE_C));
    }

    #[test]
    fn faults_play_once_at_their_time() {
        let faults = parse_faults(
            "- {at: 10s, kind: event, event: {kind: xid, gpu: 1, code: 79}}\n\
             - {at: 5s, kind: temperature, gpu: 0, celsius: 92, duration: 3s}\n",
        )
        .unwrap();
        let queue = FaultQueue::default();
        for f in faults {
            queue.inject(f);
        }
        let mut sim = SimSource::new(2, queue);
        let s0 = sim.sample(1_000).unwrap();
        assert_eq!(s0.gpus.len(), 2);
        assert!(s0.events.is_empty());
        let s1 = sim.sample(7_000).unwrap();
        assert_eq!(s1.gpus[0].temperature_c, Some(92.0));
        assert_eq!(s1.gpus[0].throttle_reasons, vec!["hw_thermal_slowdown"]);
        let s2 = sim.sample(11_000).unwrap();
        assert_eq!(s2.gpus[0].temperature_c, Some(SIM_IDLE_C), "the blip ended");
        assert_eq!(s2.events, vec![GpuEvent::Xid { gpu: 1, code: 79 }]);
        assert!(sim.sample(12_000).unwrap().events.is_empty(), "once");
    }

    #[test]
    fn bad_faults_are_errors() {
        assert!(parse_faults("- {at: 1s, kind: meteor}")
            .unwrap_err()
            .contains("meteor"));
        assert!(parse_faults("- {at: -1s, kind: utilization, percent: 5}").is_err());
    }
}
