//! The inference worker's Prometheus metrics: CarlaRL's families with
//! CarlaRL's labels (so a CarlaRL Grafana dashboard or alert works
//! unchanged), `http_request_duration_seconds` and `http_requests_total`,
//! which CarlaRL's own seed alert queries but CarlaRL never emits, the
//! standard `process_*` families, and the batching metrics of Flotilla.
//!
//! Every family has a series from the start (zeros labelled with the
//! serving version, `unknown` while none serves), so dashboards and alerts
//! find them before the first request. `carla_rl_model_loaded` and
//! `carla_rl_model_warmed_up` hold one series, the serving version's, so
//! `min(carla_rl_model_loaded) == 0` means "serves nothing" after a switch too.

use prometheus::{
    Gauge, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Latency buckets from 50 µs to 2.5 s.
const BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 2.5,
];

/// Batch size buckets, CarlaRL's.
const SIZE_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
];

/// The `model_version` label while no version serves (as `/healthz` says).
pub const NO_VERSION: &str = "unknown";

/// Labels of CarlaRL's per-request HTTP families.
const CARLA_HTTP_LABELS: &[&str] = &["method", "endpoint", "status_code"];

/// The route whose series exist before its first request.
const PREDICT_ROUTE: [&str; 3] = ["POST", "/predict", "200"];

/// Every metric of the worker.
#[derive(Clone)]
pub struct InferenceMetrics {
    /// One forward pass, by `model_version`, `device` and `batch_size_range`.
    pub inference_seconds: HistogramVec,
    /// Predictions answered, by `model_version`, `device` and `status`
    /// (`success` or `error`), over HTTP and NATS alike.
    pub inference_requests: IntCounterVec,
    /// Observations per prediction request, by `model_version`.
    pub batch_size: HistogramVec,
    /// Deterministic prediction requests, by `model_version`.
    pub deterministic_requests: IntCounterVec,
    /// Errors answered, by `error_type`, `endpoint` and `model_version`.
    pub errors: IntCounterVec,
    /// CarlaRL's HTTP request count, by `method`, `endpoint` and `status_code`.
    pub carla_http_requests: IntCounterVec,
    /// CarlaRL's HTTP request time, by `method`, `endpoint` and `status_code`.
    pub request_seconds: HistogramVec,
    /// HTTP request time by `method`, `endpoint` and `status` (the seed's alert).
    pub http_seconds: HistogramVec,
    /// HTTP requests by `method`, `endpoint` and `status` (the seed's alert).
    pub http_requests: IntCounterVec,
    /// 1 while the version serves, by `model_version` and `device`.
    pub model_loaded: IntGaugeVec,
    /// 1 once the serving version is warm, by `model_version`.
    pub model_warmed_up: IntGaugeVec,
    /// Time to read, verify and build a version, by `model_version`.
    pub model_loading_seconds: HistogramVec,
    /// Time of a version's warm-up run, by `model_version`.
    pub model_warmup_seconds: HistogramVec,
    /// Requests being answered (HTTP requests and NATS predictions).
    pub active_requests: IntGauge,
    /// Requests waiting for a batch (CarlaRL's name).
    pub request_queue_length: IntGauge,
    /// Seconds since start (set at every scrape).
    pub uptime_seconds: Gauge,
    /// When the worker started, in Unix seconds.
    pub startup_timestamp: Gauge,
    /// The machine's CPU use since the last scrape, in percent.
    pub cpu_usage_percent: Gauge,
    /// The machine's memory in use (total less available), in bytes.
    pub memory_usage_bytes: Gauge,
    /// The machine's memory in use, in percent of the total.
    pub memory_usage_percent: Gauge,
    /// This process's CPU use since the last scrape, in percent of one core.
    pub process_cpu_percent: Gauge,
    /// This process's resident memory, in bytes.
    pub process_memory_bytes: Gauge,
    /// Observations per forward pass.
    pub batch_rows: Histogram,
    /// Requests waiting for a batch.
    pub queue_depth: IntGauge,
    serving: Arc<Mutex<Serving>>,
    resources: Arc<Mutex<crate::resources::Previous>>,
    started: Instant,
}

/// The labels of what serves now.
#[derive(Debug, Clone)]
struct Serving {
    version: String,
    device: String,
}

fn histogram(
    name: &str,
    help: &str,
    buckets: &[f64],
    labels: &[&str],
) -> prometheus::Result<HistogramVec> {
    HistogramVec::new(
        HistogramOpts::new(name, help).buckets(buckets.to_vec()),
        labels,
    )
}

fn counter(name: &str, help: &str, labels: &[&str]) -> prometheus::Result<IntCounterVec> {
    IntCounterVec::new(Opts::new(name, help), labels)
}

impl InferenceMetrics {
    /// Creates the metrics and registers them in `registry`, with the
    /// process collector on Linux.
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let http_labels = &["method", "endpoint", "status"];
        let version = &["model_version"];
        let m = InferenceMetrics {
            inference_seconds: histogram(
                "carla_rl_inference_duration_seconds",
                "Forward pass time per batch",
                BUCKETS,
                &["model_version", "device", "batch_size_range"],
            )?,
            inference_requests: counter(
                "carla_rl_inference_requests_total",
                "Prediction requests answered",
                &["model_version", "device", "status"],
            )?,
            batch_size: histogram(
                "carla_rl_batch_size",
                "Observations per prediction request",
                SIZE_BUCKETS,
                version,
            )?,
            deterministic_requests: counter(
                "carla_rl_deterministic_requests_total",
                "Deterministic prediction requests",
                version,
            )?,
            errors: counter(
                "carla_rl_errors_total",
                "Errors answered",
                &["error_type", "endpoint", "model_version"],
            )?,
            carla_http_requests: counter(
                "carla_rl_http_requests_total",
                "HTTP requests",
                CARLA_HTTP_LABELS,
            )?,
            request_seconds: histogram(
                "carla_rl_request_duration_seconds",
                "HTTP request time by endpoint",
                BUCKETS,
                CARLA_HTTP_LABELS,
            )?,
            http_seconds: histogram(
                "http_request_duration_seconds",
                "HTTP request time",
                BUCKETS,
                http_labels,
            )?,
            http_requests: counter("http_requests_total", "HTTP requests", http_labels)?,
            model_loaded: IntGaugeVec::new(
                Opts::new("carla_rl_model_loaded", "1 while the version serves"),
                &["model_version", "device"],
            )?,
            model_warmed_up: IntGaugeVec::new(
                Opts::new(
                    "carla_rl_model_warmed_up",
                    "1 once the serving version is warm",
                ),
                version,
            )?,
            model_loading_seconds: histogram(
                "carla_rl_model_loading_duration_seconds",
                "Time to read, verify and build a version",
                BUCKETS,
                version,
            )?,
            model_warmup_seconds: histogram(
                "carla_rl_model_warmup_duration_seconds",
                "Time of a version's warm-up run",
                BUCKETS,
                version,
            )?,
            active_requests: IntGauge::new("carla_rl_active_requests", "Requests being answered")?,
            request_queue_length: IntGauge::new(
                "carla_rl_request_queue_length",
                "Requests waiting for a batch",
            )?,
            uptime_seconds: Gauge::new("carla_rl_service_uptime_seconds", "Seconds since start")?,
            startup_timestamp: Gauge::new(
                "carla_rl_service_startup_timestamp_seconds",
                "When the worker started, in Unix seconds",
            )?,
            cpu_usage_percent: Gauge::new(
                "carla_rl_cpu_usage_percent",
                "The machine's CPU use since the last scrape, in percent",
            )?,
            memory_usage_bytes: Gauge::new(
                "carla_rl_memory_usage_bytes",
                "The machine's memory in use, in bytes",
            )?,
            memory_usage_percent: Gauge::new(
                "carla_rl_memory_usage_percent",
                "The machine's memory in use, in percent",
            )?,
            process_cpu_percent: Gauge::new(
                "carla_rl_process_cpu_percent",
                "This process's CPU use since the last scrape, in percent of one core",
            )?,
            process_memory_bytes: Gauge::new(
                "carla_rl_process_memory_bytes",
                "This process's resident memory, in bytes",
            )?,
            batch_rows: Histogram::with_opts(
                HistogramOpts::new(
                    "flotilla_inference_batch_rows",
                    "Observations per forward pass",
                )
                .buckets(SIZE_BUCKETS.to_vec()),
            )?,
            queue_depth: IntGauge::new(
                "flotilla_inference_queue_depth",
                "Requests waiting for a batch",
            )?,
            serving: Arc::new(Mutex::new(Serving {
                version: NO_VERSION.into(),
                device: "cpu".into(),
            })),
            resources: Arc::new(Mutex::new(crate::resources::Previous::now())),
            started: Instant::now(),
        };
        let collectors: Vec<Box<dyn prometheus::core::Collector>> = vec![
            Box::new(m.inference_seconds.clone()),
            Box::new(m.inference_requests.clone()),
            Box::new(m.batch_size.clone()),
            Box::new(m.deterministic_requests.clone()),
            Box::new(m.errors.clone()),
            Box::new(m.carla_http_requests.clone()),
            Box::new(m.request_seconds.clone()),
            Box::new(m.http_seconds.clone()),
            Box::new(m.http_requests.clone()),
            Box::new(m.model_loaded.clone()),
            Box::new(m.model_warmed_up.clone()),
            Box::new(m.model_loading_seconds.clone()),
            Box::new(m.model_warmup_seconds.clone()),
            Box::new(m.active_requests.clone()),
            Box::new(m.request_queue_length.clone()),
            Box::new(m.uptime_seconds.clone()),
            Box::new(m.startup_timestamp.clone()),
            Box::new(m.cpu_usage_percent.clone()),
            Box::new(m.memory_usage_bytes.clone()),
            Box::new(m.memory_usage_percent.clone()),
            Box::new(m.process_cpu_percent.clone()),
            Box::new(m.process_memory_bytes.clone()),
            Box::new(m.batch_rows.clone()),
            Box::new(m.queue_depth.clone()),
        ];
        for c in collectors {
            registry.register(c)?;
        }
        #[cfg(target_os = "linux")]
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        let since_epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        m.startup_timestamp.set(since_epoch.as_secs_f64());
        m.zero_route(&PREDICT_ROUTE);
        m.label_serving(NO_VERSION, "cpu", false);
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

    /// The serving version's label (`unknown` while none serves).
    pub fn serving_version(&self) -> String {
        lock(&self.serving).version.clone()
    }

    /// Labels the model families with what serves now: the previous
    /// version's `model_loaded`/`model_warmed_up` series go, the new one's
    /// say `loaded`, and the per-version families get their zero series.
    pub fn label_serving(&self, version: &str, device: &str, loaded: bool) {
        let mut serving = lock(&self.serving);
        if serving.version != version || serving.device != device {
            let _ = self
                .model_loaded
                .remove_label_values(&[&serving.version, &serving.device]);
            let _ = self
                .model_warmed_up
                .remove_label_values(&[&serving.version]);
            *serving = Serving {
                version: version.into(),
                device: device.into(),
            };
        }
        self.model_loaded
            .with_label_values(&[version, device])
            .set(i64::from(loaded));
        self.model_warmed_up
            .with_label_values(&[version])
            .set(i64::from(loaded));
        for status in ["success", "error"] {
            self.inference_requests
                .with_label_values(&[version, device, status]);
        }
        self.inference_seconds
            .with_label_values(&[version, device, batch_size_range(1)]);
        self.batch_size.with_label_values(&[version]);
        self.deterministic_requests.with_label_values(&[version]);
        self.model_loading_seconds.with_label_values(&[version]);
        self.model_warmup_seconds.with_label_values(&[version]);
        self.errors
            .with_label_values(&["VALIDATION_ERROR", PREDICT_ROUTE[1], version]);
    }

    /// Records a version's load: reading and building, then its warm-up.
    pub fn observe_load(&self, version: &str, loading_seconds: f64, warmup_seconds: f64) {
        self.model_loading_seconds
            .with_label_values(&[version])
            .observe(loading_seconds);
        self.model_warmup_seconds
            .with_label_values(&[version])
            .observe(warmup_seconds);
    }

    /// Records a warm-up run of the serving `version` (`POST /warmup`).
    pub fn warmed_up(&self, version: &str, seconds: f64) {
        self.model_warmup_seconds
            .with_label_values(&[version])
            .observe(seconds);
        if self.serving_version() == version {
            self.model_warmed_up.with_label_values(&[version]).set(1);
        }
    }

    /// Records one forward pass of `rows` observations.
    pub fn observe_forward(&self, version: &str, device: &str, rows: usize, seconds: f64) {
        self.inference_seconds
            .with_label_values(&[version, device, batch_size_range(rows)])
            .observe(seconds);
        self.batch_rows.observe(rows as f64);
    }

    /// Counts one answered prediction request of the version that answered
    /// (`None`: the serving one).
    pub fn record_prediction(
        &self,
        version: Option<&str>,
        rows: usize,
        deterministic: bool,
        ok: bool,
    ) {
        // Held for the few counter updates below (they never take it), so
        // no label is copied per prediction.
        let serving = lock(&self.serving);
        let version = version.unwrap_or(&serving.version);
        let status = if ok { "success" } else { "error" };
        self.inference_requests
            .with_label_values(&[version, &serving.device, status])
            .inc();
        if ok {
            self.batch_size
                .with_label_values(&[version])
                .observe(rows as f64);
            if deterministic {
                self.deterministic_requests
                    .with_label_values(&[version])
                    .inc();
            }
        }
    }

    /// Counts one error answered on `endpoint` (an HTTP route or a subject).
    pub fn record_error(&self, code: &str, endpoint: &str) {
        let version = self.serving_version();
        self.errors
            .with_label_values(&[code, endpoint, &version])
            .inc();
    }

    /// Records one HTTP request in CarlaRL's and the seed alert's families.
    pub fn record_http(&self, method: &str, endpoint: &str, status: u16, seconds: f64) {
        // A client may send any method token: only the standard ones get
        // their own series, so no client can grow the families.
        const METHODS: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"];
        let method = if METHODS.contains(&method) {
            method
        } else {
            "other"
        };
        let status = status.to_string();
        let labels = [method, endpoint, status.as_str()];
        self.http_seconds
            .with_label_values(&labels)
            .observe(seconds);
        self.http_requests.with_label_values(&labels).inc();
        self.request_seconds
            .with_label_values(&labels)
            .observe(seconds);
        self.carla_http_requests.with_label_values(&labels).inc();
    }

    /// The HTTP series of `route` (method, endpoint, status) at zero.
    fn zero_route(&self, route: &[&str; 3]) {
        self.http_seconds.with_label_values(route);
        self.http_requests.with_label_values(route);
        self.request_seconds.with_label_values(route);
        self.carla_http_requests.with_label_values(route);
    }

    /// Sets both names of the batching queue's depth.
    pub fn set_queue_depth(&self, depth: usize) {
        let depth = i64::try_from(depth).unwrap_or(i64::MAX);
        self.queue_depth.set(depth);
        self.request_queue_length.set(depth);
    }

    /// Counts a request as active until the guard drops.
    pub fn track_active(&self) -> ActiveRequest {
        self.active_requests.inc();
        ActiveRequest(self.active_requests.clone())
    }

    /// Brings the gauges read at a scrape up to date: uptime, and the
    /// machine's and this process's CPU and memory.
    pub fn refresh(&self) {
        self.uptime_seconds.set(self.uptime());
        let mut previous = lock(&self.resources);
        if let Some(r) = previous.sample() {
            self.cpu_usage_percent.set(r.cpu_percent);
            self.memory_usage_bytes.set(r.memory_used_bytes);
            self.memory_usage_percent.set(r.memory_percent);
            self.process_cpu_percent.set(r.process_cpu_percent);
            self.process_memory_bytes.set(r.process_memory_bytes);
        }
    }
}

/// Keeps `carla_rl_active_requests` counted while alive.
pub struct ActiveRequest(IntGauge);

impl Drop for ActiveRequest {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// CarlaRL's `batch_size_range` label for `rows` observations.
pub fn batch_size_range(rows: usize) -> &'static str {
    match rows {
        0..=1 => "1",
        2..=4 => "2-4",
        5..=8 => "5-8",
        9..=16 => "9-16",
        17..=32 => "17-32",
        33..=64 => "33-64",
        65..=128 => "65-128",
        _ => "129+",
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(registry: &Registry) -> String {
        let mut out = String::new();
        prometheus::TextEncoder::new()
            .encode_utf8(&registry.gather(), &mut out)
            .unwrap();
        out
    }

    #[test]
    fn every_family_has_a_series_from_the_start() {
        let registry = Registry::new();
        let m = InferenceMetrics::register(&registry).unwrap();
        m.refresh();
        let families = registry.gather();
        assert!(families.len() >= 24, "{}", families.len());
        for f in &families {
            assert!(!f.get_metric().is_empty(), "{} has no series", f.name());
        }
        let out = text(&registry);
        assert!(
            out.contains(r#"carla_rl_model_loaded{device="cpu",model_version="unknown"} 0"#),
            "{out}"
        );
    }

    #[test]
    fn invented_methods_share_one_series() {
        let registry = Registry::new();
        let m = InferenceMetrics::register(&registry).unwrap();
        for method in ["FOO1", "FOO2", "BREW"] {
            m.record_http(method, "/predict", 405, 0.001);
        }
        m.record_http("GET", "/predict", 405, 0.001);
        let out = text(&registry);
        let series: Vec<&str> = out
            .lines()
            .filter(|l| l.starts_with("carla_rl_http_requests_total{") && l.contains("405"))
            .collect();
        assert_eq!(series.len(), 2, "{series:?}");
        assert!(series
            .iter()
            .any(|l| l.contains(r#"method="other""#) && l.ends_with(" 3")));
        assert!(!out.contains("FOO1"), "{out}");
    }

    #[test]
    fn a_switch_leaves_one_model_loaded_series() {
        let registry = Registry::new();
        let m = InferenceMetrics::register(&registry).unwrap();
        m.label_serving("v0.1.0", "cpu", true);
        m.label_serving("v0.2.0", "cpu", true);
        let out = text(&registry);
        let loaded: Vec<&str> = out
            .lines()
            .filter(|l| l.starts_with("carla_rl_model_loaded{"))
            .collect();
        assert_eq!(
            loaded,
            [r#"carla_rl_model_loaded{device="cpu",model_version="v0.2.0"} 1"#]
        );
    }

    #[test]
    fn batch_size_ranges_are_carla_rls() {
        let ranges: Vec<&str> = [1, 2, 4, 5, 8, 9, 16, 17, 32, 33, 64, 65, 128, 129, 1000]
            .into_iter()
            .map(batch_size_range)
            .collect();
        assert_eq!(
            ranges,
            [
                "1", "2-4", "2-4", "5-8", "5-8", "9-16", "9-16", "17-32", "17-32", "33-64",
                "33-64", "65-128", "65-128", "129+", "129+"
            ]
        );
    }
}
