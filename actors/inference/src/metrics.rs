//! The inference worker's Prometheus metrics, under CarlaRL's names (so its
//! dashboards keep working) plus `http_request_duration_seconds` and
//! `http_requests_total`, which CarlaRL's own alert rules query but CarlaRL
//! never emits, and the batching metrics of Flotilla.

use prometheus::{
    Gauge, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry,
};
use std::time::Instant;

/// Latency buckets from 50 µs to 2.5 s.
const BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 2.5,
];

/// Every metric of the worker.
#[derive(Clone)]
pub struct InferenceMetrics {
    /// One forward pass (a whole batch).
    pub inference_seconds: Histogram,
    /// One prediction request inside the worker (queue + forward).
    pub request_seconds: Histogram,
    /// Errors by code.
    pub errors: IntCounterVec,
    /// 1 while a model serves.
    pub model_loaded: IntGauge,
    /// 1 once the serving model is warmed up.
    pub model_warmed_up: IntGauge,
    /// Seconds since start (set at every scrape).
    pub uptime_seconds: Gauge,
    /// HTTP requests by method, endpoint and status.
    pub http_seconds: HistogramVec,
    /// HTTP requests by method, endpoint and status.
    pub http_requests: IntCounterVec,
    /// Observations per forward pass.
    pub batch_rows: Histogram,
    /// Requests waiting for a batch.
    pub queue_depth: IntGauge,
    started: Instant,
}

impl InferenceMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let http_labels = &["method", "endpoint", "status"];
        let m = InferenceMetrics {
            inference_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "carla_rl_inference_duration_seconds",
                    "Forward pass time per batch",
                )
                .buckets(BUCKETS.to_vec()),
            )?,
            request_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "carla_rl_request_duration_seconds",
                    "Prediction time per request, queue included",
                )
                .buckets(BUCKETS.to_vec()),
            )?,
            errors: IntCounterVec::new(
                Opts::new("carla_rl_errors_total", "Errors by code"),
                &["error_type"],
            )?,
            model_loaded: IntGauge::new("carla_rl_model_loaded", "1 while a model serves")?,
            model_warmed_up: IntGauge::new(
                "carla_rl_model_warmed_up",
                "1 once the serving model is warm",
            )?,
            uptime_seconds: Gauge::new("carla_rl_service_uptime_seconds", "Seconds since start")?,
            http_seconds: HistogramVec::new(
                HistogramOpts::new("http_request_duration_seconds", "HTTP request time")
                    .buckets(BUCKETS.to_vec()),
                http_labels,
            )?,
            http_requests: IntCounterVec::new(
                Opts::new("http_requests_total", "HTTP requests"),
                http_labels,
            )?,
            batch_rows: Histogram::with_opts(
                HistogramOpts::new(
                    "flotilla_inference_batch_rows",
                    "Observations per forward pass",
                )
                .buckets(vec![
                    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
                ]),
            )?,
            queue_depth: IntGauge::new(
                "flotilla_inference_queue_depth",
                "Requests waiting for a batch",
            )?,
            started: Instant::now(),
        };
        registry.register(Box::new(m.inference_seconds.clone()))?;
        registry.register(Box::new(m.request_seconds.clone()))?;
        registry.register(Box::new(m.errors.clone()))?;
        registry.register(Box::new(m.model_loaded.clone()))?;
        registry.register(Box::new(m.model_warmed_up.clone()))?;
        registry.register(Box::new(m.uptime_seconds.clone()))?;
        registry.register(Box::new(m.http_seconds.clone()))?;
        registry.register(Box::new(m.http_requests.clone()))?;
        registry.register(Box::new(m.batch_rows.clone()))?;
        registry.register(Box::new(m.queue_depth.clone()))?;
        Ok(m)
    }

    /// Metrics registered nowhere (tests).
    pub fn unregistered() -> Self {
        Self::register(&Registry::new()).expect("fresh registry")
    }

    /// Seconds since the metrics were created.
    pub fn uptime(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }
}
