//! A run's Prometheus gauges, set from its view by the driver:
//!
//! | metric | labels | what |
//! |---|---|---|
//! | `flotilla_study_trials` | study, state | the run's trials by state (waiting, pending, running, completed, failed, pruned) |
//! | `flotilla_study_best_value` | study | the best value the study took from the run |
//! | `flotilla_study_run_active` | study | 1 while the run drives jobs (starting, running, paused), else 0 |

use crate::run::COUNTED;
use prometheus::{GaugeVec, Opts, Registry};
use serde_json::Value;

/// The study run gauges.
#[derive(Clone)]
pub struct RunMetrics {
    trials: GaugeVec,
    best: GaugeVec,
    active: GaugeVec,
}

impl RunMetrics {
    /// Registers the gauges in `registry`.
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let gauge = |name: &str, help: &str, labels: &[&str]| -> prometheus::Result<GaugeVec> {
            let g = GaugeVec::new(Opts::new(name, help), labels)?;
            registry.register(Box::new(g.clone()))?;
            Ok(g)
        };
        Ok(RunMetrics {
            trials: gauge(
                "flotilla_study_trials",
                "Trials of a study's run by state",
                &["study", "state"],
            )?,
            best: gauge(
                "flotilla_study_best_value",
                "The best value of a study's run",
                &["study"],
            )?,
            active: gauge(
                "flotilla_study_run_active",
                "Whether a study's run drives jobs (1) or not (0)",
                &["study"],
            )?,
        })
    }

    /// Sets the gauges of run `study` from its view.
    pub fn observe(&self, study: &str, view: &Value) {
        for state in COUNTED {
            let n = view["counts"][state].as_f64().unwrap_or_default();
            self.trials.with_label_values(&[study, state]).set(n);
        }
        if let Some(best) = view["best"]["value"].as_f64() {
            self.best.with_label_values(&[study]).set(best);
        }
        let active = matches!(
            view["status"].as_str(),
            Some("starting" | "running" | "paused")
        );
        self.active
            .with_label_values(&[study])
            .set(if active { 1.0 } else { 0.0 });
    }
}
