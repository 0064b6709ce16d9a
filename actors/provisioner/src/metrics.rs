//! Fleet metrics, under Flotilla's names and Navarch's (`navarch_*`) as
//! aliases, so existing dashboards and alerts keep working.
//!
//! | Flotilla | Navarch alias | labels |
//! |---|---|---|
//! | `flotilla_nodes_total` | `navarch_nodes_total` | pool |
//! | `flotilla_nodes_healthy` | `navarch_nodes_healthy` | pool |
//! | `flotilla_nodes_unhealthy` | `navarch_nodes_unhealthy` | pool |
//! | `flotilla_xid_errors_total` | `navarch_xid_errors_total` | node, xid |
//! | `flotilla_node_gpu_temperature_celsius` | `navarch_node_gpu_temperature_celsius` | node, gpu |
//! | `flotilla_node_gpu_utilization_percent` | `navarch_node_gpu_utilization_percent` | node, gpu |
//! | `flotilla_node_replacements_total` | `navarch_node_replacements_total` | pool |
//! | `flotilla_circuit_breaker_open` | `navarch_circuit_breaker_open` | pool |

use prometheus::{GaugeVec, IntCounterVec, Opts, Registry};
use std::collections::HashMap;
use std::sync::Mutex;

/// A metric registered under both names.
#[derive(Clone)]
struct Twin<M> {
    ours: M,
    alias: M,
}

impl<M: prometheus::core::Collector + Clone + 'static> Twin<M> {
    fn register(
        registry: &Registry,
        name: &str,
        help: &str,
        labels: &[&str],
        make: impl Fn(Opts, &[&str]) -> prometheus::Result<M>,
    ) -> prometheus::Result<Self> {
        let twin = Twin {
            ours: make(Opts::new(format!("flotilla_{name}"), help), labels)?,
            alias: make(
                Opts::new(format!("navarch_{name}"), format!("{help} (Navarch alias)")),
                labels,
            )?,
        };
        registry.register(Box::new(twin.ours.clone()))?;
        registry.register(Box::new(twin.alias.clone()))?;
        Ok(twin)
    }
}

impl Twin<GaugeVec> {
    fn set(&self, labels: &[&str], value: f64) {
        self.ours.with_label_values(labels).set(value);
        self.alias.with_label_values(labels).set(value);
    }
}

impl Twin<IntCounterVec> {
    fn inc_by(&self, labels: &[&str], n: u64) {
        self.ours.with_label_values(labels).inc_by(n);
        self.alias.with_label_values(labels).inc_by(n);
    }
}

/// The fleet's metrics.
#[derive(Clone)]
pub struct FleetMetrics {
    nodes_total: Twin<GaugeVec>,
    nodes_healthy: Twin<GaugeVec>,
    nodes_unhealthy: Twin<GaugeVec>,
    xid_errors: Twin<IntCounterVec>,
    temperature: Twin<GaugeVec>,
    utilization: Twin<GaugeVec>,
    replacements: Twin<IntCounterVec>,
    breaker_open: Twin<GaugeVec>,
    replacements_seen: std::sync::Arc<Mutex<HashMap<String, u64>>>,
}

/// A pool's numbers as its state view gives them.
#[derive(Debug, Clone, Copy, Default)]
pub struct PoolFigures {
    /// Nodes not gone.
    pub total: u64,
    /// Serving and not unhealthy.
    pub healthy: u64,
    /// Unhealthy.
    pub unhealthy: u64,
    /// Replacements ever requested.
    pub replacements: u64,
    /// Circuit breaker open.
    pub breaker_open: bool,
}

impl FleetMetrics {
    /// Creates the metrics and registers them (both names) in `registry`.
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let gauge = |o: Opts, l: &[&str]| GaugeVec::new(o, l);
        let counter = |o: Opts, l: &[&str]| IntCounterVec::new(o, l);
        Ok(FleetMetrics {
            nodes_total: Twin::register(
                registry,
                "nodes_total",
                "Nodes per pool",
                &["pool"],
                gauge,
            )?,
            nodes_healthy: Twin::register(
                registry,
                "nodes_healthy",
                "Healthy nodes per pool",
                &["pool"],
                gauge,
            )?,
            nodes_unhealthy: Twin::register(
                registry,
                "nodes_unhealthy",
                "Unhealthy nodes per pool",
                &["pool"],
                gauge,
            )?,
            xid_errors: Twin::register(
                registry,
                "xid_errors_total",
                "GPU XID errors reported",
                &["node", "xid"],
                counter,
            )?,
            temperature: Twin::register(
                registry,
                "node_gpu_temperature_celsius",
                "GPU temperature per node",
                &["node", "gpu"],
                gauge,
            )?,
            utilization: Twin::register(
                registry,
                "node_gpu_utilization_percent",
                "GPU utilisation per node",
                &["node", "gpu"],
                gauge,
            )?,
            replacements: Twin::register(
                registry,
                "node_replacements_total",
                "Node replacements requested",
                &["pool"],
                counter,
            )?,
            breaker_open: Twin::register(
                registry,
                "circuit_breaker_open",
                "1 while automatic replacement is stopped",
                &["pool"],
                gauge,
            )?,
            replacements_seen: Default::default(),
        })
    }

    /// Metrics registered nowhere (tests).
    pub fn unregistered() -> Self {
        Self::register(&Registry::new()).expect("fresh registry")
    }

    /// Updates a pool's gauges.
    pub fn pool(&self, pool: &str, f: PoolFigures) {
        self.nodes_total.set(&[pool], f.total as f64);
        self.nodes_healthy.set(&[pool], f.healthy as f64);
        self.nodes_unhealthy.set(&[pool], f.unhealthy as f64);
        self.breaker_open
            .set(&[pool], if f.breaker_open { 1.0 } else { 0.0 });
        let mut seen = self
            .replacements_seen
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let before = seen.insert(pool.to_string(), f.replacements).unwrap_or(0);
        // Even by 0: the pool's series exists from its first figures, so
        // `increase()` in an alert sees its first replacement.
        self.replacements
            .inc_by(&[pool], f.replacements.saturating_sub(before));
    }

    /// Counts XID errors a node reported.
    pub fn xids(&self, node: &str, xids: &[u32]) {
        for xid in xids {
            self.xid_errors.inc_by(&[node, &xid.to_string()], 1);
        }
    }

    /// Records one GPU's temperature and utilisation.
    pub fn gpu(&self, node: &str, gpu: u32, temperature: Option<f64>, utilization: Option<f64>) {
        let gpu = gpu.to_string();
        if let Some(t) = temperature {
            self.temperature.set(&[node, &gpu], t);
        }
        if let Some(u) = utilization {
            self.utilization.set(&[node, &gpu], u);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::Encoder;

    #[test]
    fn both_names_are_exported() {
        let registry = Registry::new();
        let m = FleetMetrics::register(&registry).unwrap();
        m.pool(
            "gpu",
            PoolFigures {
                total: 3,
                healthy: 2,
                unhealthy: 1,
                replacements: 2,
                breaker_open: true,
            },
        );
        m.pool(
            "gpu",
            PoolFigures {
                replacements: 3,
                ..Default::default()
            },
        );
        // A pool that never replaced a node has its counter at 0.
        m.pool("idle", PoolFigures::default());
        m.xids("gpu-1", &[79]);
        m.gpu("gpu-1", 0, Some(71.0), Some(55.0));
        let mut out = Vec::new();
        prometheus::TextEncoder::new()
            .encode(&registry.gather(), &mut out)
            .unwrap();
        let text = String::from_utf8(out).unwrap();
        for name in [
            "flotilla_nodes_total{pool=\"gpu\"} 0",
            "navarch_nodes_total{pool=\"gpu\"} 0",
            "navarch_xid_errors_total{node=\"gpu-1\",xid=\"79\"} 1",
            "navarch_node_gpu_temperature_celsius{gpu=\"0\",node=\"gpu-1\"} 71",
            "flotilla_node_replacements_total{pool=\"gpu\"} 3",
            "flotilla_node_replacements_total{pool=\"idle\"} 0",
            "flotilla_circuit_breaker_open{pool=\"gpu\"} 0",
        ] {
            assert!(text.contains(name), "{name} missing in\n{text}");
        }
    }
}
