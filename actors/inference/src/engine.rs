//! The worker's serving state: which versions are loaded (verified and
//! warm), which one serves, and the batcher in front of it.
//!
//! The engine does the I/O of the inference actor — reading artifacts,
//! building networks, switching traffic — and is driven by the
//! `ModelDeployment` aggregate's effects ([`crate::deployment`]),
//! so every load, activation and rollback is first an event in the log. The
//! transports (`flotilla-gateway`'s HTTP routes, [`crate::nats`])
//! call [`InferenceEngine::predict_body`].

use crate::artifacts::ArtifactStore;
use crate::batcher::{BatchConfig, Batched, Batcher, ServingSlot};
use crate::metrics::{InferenceMetrics, NO_VERSION};
use crate::policy::{device_name, Policy};
use candle_core::Device;
use flotilla_messages::inference::{
    decode_predict, LoadedVersion, PredictRequest, PredictResponse, ServingError, ServingErrorCode,
};
use flotilla_messages::Encoding;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::watch;

/// How the engine is set up.
#[derive(Debug, Clone, Default)]
pub struct EngineConfig {
    /// Batching.
    pub batch: BatchConfig,
    /// Seed of the samples of requests that bring none.
    pub seed: u64,
    /// `USE_GPU`: run on CUDA device 0 when the build has the `cuda` feature.
    pub use_gpu: bool,
    /// `MODEL_VERSION`, if set (shown by `/versions`).
    pub pinned_version: Option<String>,
}

/// Loaded versions, the serving one, and the batcher.
pub struct InferenceEngine {
    store: ArtifactStore,
    device: Device,
    config: EngineConfig,
    loaded: Mutex<BTreeMap<String, Arc<Policy>>>,
    applied_seq: Mutex<u64>,
    slot: Arc<ServingSlot>,
    warmed: AtomicBool,
    batcher: Batcher,
    metrics: InferenceMetrics,
    draws: AtomicU64,
    changes: watch::Sender<u64>,
}

/// CPU, or CUDA device 0 when asked for and available (else CPU, as CarlaRL falls back).
pub fn choose_device(use_gpu: bool) -> Device {
    if !use_gpu {
        return Device::Cpu;
    }
    match Device::cuda_if_available(0) {
        Ok(d) if d.is_cuda() => d,
        _ => {
            tracing::warn!(
                "USE_GPU is set but no CUDA device is usable (build with --features cuda); using the CPU"
            );
            Device::Cpu
        }
    }
}

impl InferenceEngine {
    /// An engine over `store` with nothing loaded yet.
    pub fn new(store: ArtifactStore, config: EngineConfig, metrics: InferenceMetrics) -> Arc<Self> {
        let slot = Arc::new(ServingSlot::default());
        let batcher = Batcher::start(&config.batch, slot.clone(), metrics.clone());
        let device = choose_device(config.use_gpu);
        metrics.label_serving(NO_VERSION, &device_name(&device), false);
        Arc::new(InferenceEngine {
            store,
            device,
            config,
            loaded: Mutex::new(BTreeMap::new()),
            applied_seq: Mutex::new(0),
            slot,
            warmed: AtomicBool::new(false),
            batcher,
            metrics,
            draws: AtomicU64::new(0),
            changes: watch::channel(0).0,
        })
    }

    /// The artifact folder.
    pub fn store(&self) -> &ArtifactStore {
        &self.store
    }

    /// The metrics.
    pub fn metrics(&self) -> &InferenceMetrics {
        &self.metrics
    }

    /// `cpu` or `cuda:N`.
    pub fn device_name(&self) -> String {
        device_name(&self.device)
    }

    /// Reads, verifies, builds and warms `version` (blocking: call it off
    /// the async threads). Loading a loaded version again is a no-op.
    pub fn load(&self, version: &str) -> Result<LoadedVersion, ServingError> {
        if let Some(p) = lock(&self.loaded).get(version) {
            return Ok(p.summary(0.0));
        }
        let started = Instant::now();
        let outcome = self
            .store
            .load(version, &self.device)
            .map_err(|e| e.to_serving())
            .and_then(|a| Policy::new(a, &self.device))
            .and_then(|p| {
                let loading = started.elapsed().as_secs_f64();
                let ms = p.warm_up(self.config.batch.max_batch_size.min(64))?;
                self.metrics.observe_load(version, loading, ms / 1e3);
                Ok((p, ms))
            });
        let result = match outcome {
            Ok((policy, ms)) => {
                let summary = policy.summary(ms);
                lock(&self.loaded).insert(version.to_string(), Arc::new(policy));
                tracing::info!(version, warmup_ms = ms, "model version loaded and warm");
                Ok(summary)
            }
            Err(e) => {
                tracing::error!(version, error = %e, "model version not loaded");
                Err(e)
            }
        };
        self.changes.send_modify(|n| *n += 1);
        result
    }

    /// [`InferenceEngine::load`] on the blocking pool.
    pub async fn load_off_thread(
        self: Arc<Self>,
        version: &str,
    ) -> Result<LoadedVersion, ServingError> {
        let v = version.to_string();
        tokio::task::spawn_blocking(move || self.load(&v))
            .await
            .unwrap_or_else(|e| {
                Err(ServingError::new(
                    ServingErrorCode::InternalError,
                    format!("load task: {e}"),
                ))
            })
    }

    /// Routes traffic to the loaded `version` from the next batch on, as
    /// the deployment's event at `seq` says. An activation older than the
    /// last one applied is ignored: effects re-driven after a restart may
    /// run in any order, and the newest event must win.
    pub fn activate(&self, version: &str, seq: u64) -> Result<(), ServingError> {
        let policy = lock(&self.loaded).get(version).cloned().ok_or_else(|| {
            ServingError::new(
                ServingErrorCode::ServiceUnavailable,
                format!("version {version} is not loaded in this worker"),
            )
        })?;
        let mut applied = lock(&self.applied_seq);
        if seq < *applied {
            return Ok(());
        }
        *applied = seq;
        let previous = self.slot.set(policy);
        drop(applied);
        self.warmed.store(true, Ordering::Release);
        self.metrics
            .label_serving(version, &self.device_name(), true);
        tracing::info!(version, previous = ?previous.map(|p| p.version().to_string()), "serving version");
        self.changes.send_modify(|n| *n += 1);
        Ok(())
    }

    /// The serving policy.
    pub fn active(&self) -> Option<Arc<Policy>> {
        self.slot.get()
    }

    /// Whether `version` is loaded.
    pub fn is_loaded(&self, version: &str) -> bool {
        lock(&self.loaded).contains_key(version)
    }

    /// Ticks on every load (or failed load) and activation.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Loaded and warm: `/readyz` answers 200.
    pub fn ready(&self) -> bool {
        self.active().is_some() && self.warmed.load(Ordering::Acquire)
    }

    /// Warms the serving policy up again (`POST /warmup`); blocking.
    pub fn warm_up(&self) -> Result<f64, ServingError> {
        let policy = self.active().ok_or_else(ServingError::no_model)?;
        let ms = policy.warm_up(self.config.batch.max_batch_size.min(64))?;
        self.warmed.store(true, Ordering::Release);
        self.metrics.warmed_up(policy.version(), ms / 1e3);
        Ok(ms)
    }

    /// Decodes, validates and answers a `/predict` body.
    pub async fn predict_body(
        &self,
        encoding: Encoding,
        body: &[u8],
    ) -> Result<PredictResponse, ServingError> {
        let started = Instant::now();
        // The body is validated first, as FastAPI does before CarlaRL's
        // handler runs: a bad body is 422 even while no model serves.
        let request = decode_predict(encoding, body)?;
        if self.active().is_none() {
            return Err(ServingError::no_model());
        }
        self.predict(request, started).await
    }

    /// Answers a validated request through the batcher.
    pub async fn predict(
        &self,
        request: PredictRequest,
        started: Instant,
    ) -> Result<PredictResponse, ServingError> {
        let deterministic = request.deterministic;
        let rows = request.observations.len();
        let seed = request.seed.unwrap_or_else(|| self.next_seed());
        let answered = self.batch(request, seed).await;
        let version = answered.as_ref().ok().map(|b| b.version.as_str());
        self.metrics
            .record_prediction(version, rows, deterministic, answered.is_ok());
        let batched = answered?;
        let elapsed = started.elapsed().as_secs_f64();
        Ok(PredictResponse {
            actions: batched.actions,
            version: batched.version,
            timing_ms: elapsed * 1e3,
            deterministic,
        })
    }

    /// Queues a request and waits for its batch.
    async fn batch(&self, request: PredictRequest, seed: u64) -> Result<Batched, ServingError> {
        let answer = self.batcher.submit(request, seed)?;
        self.metrics.set_queue_depth(self.batcher.depth());
        answer.await.map_err(|_| {
            ServingError::new(ServingErrorCode::InferenceError, "the batch thread stopped")
        })?
    }

    /// The next seed of the worker's own sequence (SplitMix64 of seed + n).
    fn next_seed(&self) -> u64 {
        let n = self.draws.fetch_add(1, Ordering::Relaxed);
        let mut z = self
            .config
            .seed
            .wrapping_add(n.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Counts an error answered to a client on `endpoint` (an HTTP route
    /// or a subject).
    pub fn record_error(&self, error: &ServingError, endpoint: &str) {
        self.metrics.record_error(error.code.as_str(), endpoint);
    }

    /// The `/versions` body.
    pub fn versions_view(&self) -> Value {
        let current = self.active().map(|p| p.version().to_string());
        let available: Vec<Value> = self
            .store
            .versions()
            .into_iter()
            .map(|e| {
                let card = e.card.as_ref().map(|c| c.to_json()).unwrap_or(Value::Null);
                let metrics = e
                    .card
                    .as_ref()
                    .map(|c| json!(c.performance_metrics))
                    .unwrap_or(json!({}));
                json!({
                    "version": e.version,
                    "is_stable": e.stable,
                    "is_current": current.as_deref() == Some(e.version.as_str()),
                    "is_loaded": self.is_loaded(&e.version),
                    "performance_metrics": metrics,
                    "model_card": card,
                    "card_error": e.card.err(),
                })
            })
            .collect();
        let strategy = match &self.config.pinned_version {
            Some(v) => format!("pinned: MODEL_VERSION={v}"),
            None => "latest_stable".into(),
        };
        json!({
            "current_version": current,
            "available_versions": available,
            "selection_strategy": strategy,
            "artifacts_root": self.store.root().display().to_string(),
        })
    }

    /// Requests waiting for a batch.
    pub fn queue_depth(&self) -> usize {
        self.batcher.depth()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
