//! Prometheus metrics of the actor host.

use flotilla_bus::CorruptStreams;
use prometheus::{
    HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

/// Counters and histograms shared by every aggregate host in a process.
#[derive(Clone)]
pub struct HostMetrics {
    /// Commands handled, by actor and outcome (`accepted`, `rejected`, `repeated`, `failed`).
    pub commands: IntCounterVec,
    /// Command handling time (decide + append + publish), by actor.
    pub command_seconds: HistogramVec,
    /// Events appended, by actor.
    pub events_appended: IntCounterVec,
    /// Events folded during recovery, by actor.
    pub events_replayed: IntCounterVec,
    /// Aggregates currently hosted.
    pub aggregates: IntGauge,
    /// Aggregates whose stream failed its integrity checks, by actor.
    pub aggregates_corrupt: IntGaugeVec,
    /// Which streams those are (listed on `/readyz`).
    pub corrupt_streams: CorruptStreams,
}

impl HostMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let m = HostMetrics {
            commands: IntCounterVec::new(
                Opts::new("flotilla_commands_total", "Commands handled"),
                &["actor", "outcome"],
            )?,
            command_seconds: HistogramVec::new(
                HistogramOpts::new("flotilla_command_duration_seconds", "Command handling time")
                    .buckets(vec![
                        0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                        0.25, 1.0,
                    ]),
                &["actor"],
            )?,
            events_appended: IntCounterVec::new(
                Opts::new(
                    "flotilla_events_appended_total",
                    "Events appended to the log",
                ),
                &["actor"],
            )?,
            events_replayed: IntCounterVec::new(
                Opts::new(
                    "flotilla_events_replayed_total",
                    "Events folded during recovery",
                ),
                &["actor"],
            )?,
            aggregates: IntGauge::new("flotilla_aggregates", "Aggregates hosted")?,
            aggregates_corrupt: IntGaugeVec::new(
                Opts::new(
                    "flotilla_aggregates_corrupt",
                    "Aggregates set aside because their stream failed its integrity checks",
                ),
                &["actor"],
            )?,
            corrupt_streams: CorruptStreams::default(),
        };
        registry.register(Box::new(m.commands.clone()))?;
        registry.register(Box::new(m.command_seconds.clone()))?;
        registry.register(Box::new(m.events_appended.clone()))?;
        registry.register(Box::new(m.events_replayed.clone()))?;
        registry.register(Box::new(m.aggregates.clone()))?;
        registry.register(Box::new(m.aggregates_corrupt.clone()))?;
        // Exported at 0 from the start, so an alert on it sees a healthy
        // control plane rather than no series at all.
        for actor in flotilla_messages::Actor::ALL {
            m.aggregates_corrupt
                .with_label_values(&[actor.as_str()])
                .set(0);
        }
        Ok(m)
    }

    /// Metrics registered nowhere (tests, benchmarks).
    pub fn unregistered() -> Self {
        Self::register(&Registry::new()).expect("fresh registry")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corrupt_aggregates_are_exported_at_zero_from_the_start() {
        let registry = Registry::new();
        HostMetrics::register(&registry).unwrap();
        let mut text = String::new();
        prometheus::TextEncoder::new()
            .encode_utf8(&registry.gather(), &mut text)
            .unwrap();
        assert!(
            text.contains("flotilla_aggregates_corrupt{actor=\"solver\"} 0"),
            "{text}"
        );
    }
}
