//! The streams a process found corrupt while recovering, shared between the
//! host that finds them and the gateway that reports them on `/readyz`.
//!
//! One bad record must not stop the control plane (issue 11): recovery sets
//! the stream aside here, its aggregate answers `CORRUPT`, and every other
//! aggregate serves.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// Corrupt streams by name, each with what was found (stream and seq).
#[derive(Debug, Clone, Default)]
pub struct CorruptStreams {
    found: Arc<Mutex<BTreeMap<String, String>>>,
}

impl CorruptStreams {
    /// Records `stream` as corrupt, with `reason`; whether it is new.
    pub fn mark(&self, stream: &str, reason: &str) -> bool {
        self.lock()
            .insert(stream.to_string(), reason.to_string())
            .is_none()
    }

    /// Every corrupt stream and its reason, by name.
    pub fn list(&self) -> BTreeMap<String, String> {
        self.lock().clone()
    }

    /// How many streams are corrupt.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no stream is corrupt.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, String>> {
        self.found.lock().unwrap_or_else(|e| e.into_inner())
    }
}
