//! The NVML source: every GPU through nvml-wrapper.
//!
//! - XID critical errors and ECC errors arrive through an NVML event set,
//!   waited on by a dedicated thread (`EventSet::wait` blocks) and handed
//!   to the sampler over a channel;
//! - each sample reads temperature and the device's own slowdown threshold
//!   (the policy works on the margin, not an absolute), utilisation, memory,
//!   power, throttle reasons, volatile uncorrected ECC (a rise is a
//!   double-bit event), pages retired for double-bit errors, row remapping
//!   (fields 144 pending, 145 failure) and the driver's recovery action
//!   (field 230).
//!
//! [`NvmlSource::open`] fails with [`SourceError::Unavailable`] and a
//! readable reason when the library or the driver is missing — the agent
//! reports that once and keeps running.

use super::source::{GpuEvent, HealthSource, Sample, SourceError};
use flotilla_messages::health::GpuTelemetry;
use nvml_wrapper::bitmasks::event::EventTypes;
use nvml_wrapper::enum_wrappers::device::{
    EccCounter, MemoryError, RetirementCause, TemperatureSensor, TemperatureThreshold,
};
use nvml_wrapper::enums::device::SampleValue;
use nvml_wrapper::enums::event::XidError;
use nvml_wrapper::error::NvmlError;
use nvml_wrapper::structs::device::FieldId;
use nvml_wrapper::{Device, Nvml};
use std::collections::HashMap;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;

/// Row remapping pending (needs a GPU reset).
const FIELD_REMAP_PENDING: u32 = 144;
/// Row remapping failed (replace).
const FIELD_REMAP_FAILURE: u32 = 145;
/// The driver's recommended recovery action.
const FIELD_RECOVERY_ACTION: u32 = 230;

/// A readable reason for an NVML error.
pub fn describe(e: &NvmlError) -> String {
    match e {
        NvmlError::LibloadingError(inner) => {
            format!("NVML is not installed: cannot load libnvidia-ml.so.1 ({inner}); is the NVIDIA driver installed?")
        }
        NvmlError::DriverNotLoaded => "the NVIDIA driver is not loaded".into(),
        NvmlError::NoPermission => "no permission to read the GPUs (run privileged)".into(),
        other => format!("NVML: {other}"),
    }
}

/// Reads GPUs through NVML.
pub struct NvmlSource {
    nvml: Arc<Nvml>,
    events: Receiver<GpuEvent>,
    last_dbe: HashMap<u32, u64>,
    last_retired: HashMap<u32, usize>,
    last_remap: HashMap<u32, (bool, bool)>,
    last_action: HashMap<u32, u64>,
}

impl NvmlSource {
    /// Loads NVML and starts the event thread.
    pub fn open() -> Result<Self, SourceError> {
        let nvml = Arc::new(Nvml::init().map_err(|e| SourceError::Unavailable(describe(&e)))?);
        let count = nvml
            .device_count()
            .map_err(|e| SourceError::Unavailable(describe(&e)))?;
        if count == 0 {
            return Err(SourceError::Unavailable(
                "NVML sees no GPU on this node".into(),
            ));
        }
        let (tx, rx) = mpsc::channel();
        let for_thread = nvml.clone();
        std::thread::Builder::new()
            .name("nvml-events".into())
            .spawn(move || {
                if let Err(e) = watch_events(&for_thread, &tx) {
                    tracing::warn!(error = %describe(&e), "NVML event watch stopped; XIDs are not reported");
                }
            })
            .map_err(|e| SourceError::Unavailable(format!("cannot start the NVML event thread: {e}")))?;
        Ok(NvmlSource {
            nvml,
            events: rx,
            last_dbe: HashMap::new(),
            last_retired: HashMap::new(),
            last_remap: HashMap::new(),
            last_action: HashMap::new(),
        })
    }

    fn read_device(
        &mut self,
        index: u32,
        events: &mut Vec<GpuEvent>,
    ) -> Result<GpuTelemetry, NvmlError> {
        let nvml = self.nvml.clone();
        let d = nvml.device_by_index(index)?;
        let mut t = GpuTelemetry {
            index,
            uuid: d.uuid().ok(),
            temperature_c: d.temperature(TemperatureSensor::Gpu).ok().map(f64::from),
            slowdown_c: d
                .temperature_threshold(TemperatureThreshold::Slowdown)
                .ok()
                .map(f64::from),
            utilization_percent: d.utilization_rates().ok().map(|u| f64::from(u.gpu)),
            power_watts: d.power_usage().ok().map(|mw| f64::from(mw) / 1000.0),
            ecc_uncorrected: d
                .total_ecc_errors(MemoryError::Uncorrected, EccCounter::Volatile)
                .ok(),
            throttle_reasons: d
                .current_throttle_reasons()
                .map(|r| {
                    r.iter_names()
                        .map(|(name, _)| name.to_ascii_lowercase())
                        .collect()
                })
                .unwrap_or_default(),
            ..Default::default()
        };
        if let Ok(m) = d.memory_info() {
            t.memory_used_bytes = Some(m.used);
            t.memory_total_bytes = Some(m.total);
        }
        self.ecc_events(index, &d, t.ecc_uncorrected, events);
        self.field_events(index, &d, events);
        Ok(t)
    }

    fn ecc_events(&mut self, index: u32, d: &Device, dbe: Option<u64>, events: &mut Vec<GpuEvent>) {
        if let Some(now) = dbe {
            let before = self.last_dbe.insert(index, now);
            if let Some(before) = before.filter(|b| now > *b) {
                events.push(GpuEvent::EccDbe {
                    gpu: index,
                    count: now - before,
                });
            }
        }
        if let Ok(pages) = d.retired_pages(RetirementCause::DoubleBitEccError) {
            let before = self.last_retired.insert(index, pages.len());
            if before.is_some_and(|b| pages.len() > b) {
                events.push(GpuEvent::EccDbe {
                    gpu: index,
                    count: (pages.len() - before.unwrap_or(0)) as u64,
                });
            }
        }
    }

    fn field_events(&mut self, index: u32, d: &Device, events: &mut Vec<GpuEvent>) {
        let ids = [
            FieldId(FIELD_REMAP_PENDING),
            FieldId(FIELD_REMAP_FAILURE),
            FieldId(FIELD_RECOVERY_ACTION),
        ];
        let Ok(values) = d.field_values_for(&ids) else {
            return;
        };
        let mut read = HashMap::new();
        for sample in values.into_iter().flatten() {
            if let Ok(v) = sample.value {
                read.insert(sample.field.0, as_u64(v));
            }
        }
        let pending = read.get(&FIELD_REMAP_PENDING).is_some_and(|v| *v > 0);
        let failure = read.get(&FIELD_REMAP_FAILURE).is_some_and(|v| *v > 0);
        let (was_pending, was_failure) = self
            .last_remap
            .insert(index, (pending, failure))
            .unwrap_or_default();
        if pending && !was_pending {
            events.push(GpuEvent::RowRemapPending { gpu: index });
        }
        if failure && !was_failure {
            events.push(GpuEvent::RowRemapFailure { gpu: index });
        }
        if let Some(&action) = read.get(&FIELD_RECOVERY_ACTION) {
            let before = self.last_action.insert(index, action);
            if action != 0 && before != Some(action) {
                events.push(GpuEvent::RecoveryAction {
                    gpu: index,
                    action: recovery_action_name(action).into(),
                });
            }
        }
    }
}

fn as_u64(v: SampleValue) -> u64 {
    match v {
        SampleValue::U32(n) => u64::from(n),
        SampleValue::U64(n) => n,
        SampleValue::I64(n) => n.max(0) as u64,
        SampleValue::F64(n) => n.max(0.0) as u64,
    }
}

/// NVML's `nvmlDeviceGpuRecoveryAction_t` names.
fn recovery_action_name(code: u64) -> &'static str {
    match code {
        1 => "gpu_reset",
        2 => "node_reboot",
        3 => "drain_p2p",
        4 => "drain_and_reset",
        _ => "unknown",
    }
}

/// Waits on an event set over every device until the receiver is gone.
fn watch_events(nvml: &Nvml, tx: &Sender<GpuEvent>) -> Result<(), NvmlError> {
    let mut set = nvml.create_event_set()?;
    for i in 0..nvml.device_count()? {
        let device = nvml.device_by_index(i)?;
        let wanted = EventTypes::CRITICAL_XID_ERROR
            | EventTypes::DOUBLE_BIT_ECC_ERROR
            | EventTypes::SINGLE_BIT_ECC_ERROR;
        set = match device.register_events(wanted, set) {
            Ok(set) => set,
            Err(e) => {
                tracing::warn!(gpu = i, error = %describe(&e.error), "cannot watch ECC events; watching XIDs only");
                let fresh = nvml.create_event_set()?;
                device
                    .register_events(EventTypes::CRITICAL_XID_ERROR, fresh)
                    .map_err(|e| e.error)?
            }
        };
    }
    loop {
        match set.wait(1000) {
            Ok(data) => {
                let gpu = data.device.index().unwrap_or(u32::MAX);
                let event = if data.event_type.contains(EventTypes::CRITICAL_XID_ERROR) {
                    let code = match data.event_data {
                        Some(XidError::Value(v)) => u32::try_from(v).unwrap_or(u32::MAX),
                        _ => 0,
                    };
                    GpuEvent::Xid { gpu, code }
                } else if data.event_type.contains(EventTypes::DOUBLE_BIT_ECC_ERROR) {
                    GpuEvent::EccDbe { gpu, count: 1 }
                } else {
                    GpuEvent::EccSbe { gpu, count: 1 }
                };
                if tx.send(event).is_err() {
                    return Ok(());
                }
            }
            Err(NvmlError::Timeout) => {}
            Err(e) => return Err(e),
        }
    }
}

impl HealthSource for NvmlSource {
    fn name(&self) -> &'static str {
        "nvml"
    }

    fn sample(&mut self, now: u64) -> Result<Sample, SourceError> {
        let count = self
            .nvml
            .device_count()
            .map_err(|e| SourceError::Failed(describe(&e)))?;
        let mut events: Vec<GpuEvent> = self.events.try_iter().collect();
        let mut gpus = Vec::new();
        for i in 0..count {
            match self.read_device(i, &mut events) {
                Ok(t) => gpus.push(t),
                Err(NvmlError::GpuLost) => events.push(GpuEvent::Xid { gpu: i, code: 79 }),
                Err(e) => tracing::warn!(gpu = i, error = %describe(&e), "cannot read GPU"),
            }
        }
        Ok(Sample {
            at: now,
            gpus,
            events,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This machine has no NVIDIA driver: opening must fail cleanly with a
    /// reason, not panic.
    #[test]
    fn without_nvml_open_says_why() {
        if std::path::Path::new("/dev/nvidiactl").exists() {
            return;
        }
        match NvmlSource::open() {
            Err(SourceError::Unavailable(reason)) => {
                assert!(
                    reason.contains("libnvidia-ml") || reason.contains("driver"),
                    "{reason}"
                )
            }
            Err(other) => panic!("unexpected error kind: {other}"),
            Ok(_) => panic!("NVML opened on a machine without a GPU"),
        }
    }
}
