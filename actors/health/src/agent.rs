//! One node's health agent, without I/O: each [`HealthAgent::step`] samples
//! the source, evaluates the policy and returns the messages to publish on
//! `<prefix>.health.<node>` — a heartbeat always, a report when the
//! hardware could be read, and `health_source_unavailable` exactly once
//! when it cannot (no NVML library or driver). The agent never stops
//! heartbeating because its source is gone: a node without readable GPUs is
//! a fact the control plane should see, not a silent agent.
//!
//! The `flotilla agent` command drives it on an interval and publishes;
//! the fleet simulator drives it on virtual time.

use super::policy::{HealthEvaluator, HealthPolicy};
use super::source::{HealthSource, SourceError};
use flotilla_messages::health::{GpuTelemetry, HealthMessage, Verdict};
use serde::Serialize;

/// What `/healthz` shows.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AgentStatus {
    /// The node.
    pub node_id: String,
    /// The source's name.
    pub source: String,
    /// Whether the source can be read.
    pub source_available: bool,
    /// Why not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The last verdict, once there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verdict: Option<Verdict>,
    /// Steps taken.
    pub steps: u64,
    /// When the last step ran (unix ms).
    pub last_step_at: u64,
}

/// A node's agent.
pub struct HealthAgent {
    node_id: String,
    source: Result<Box<dyn HealthSource>, (String, String)>,
    evaluator: HealthEvaluator,
    reported_unavailable: bool,
    status: AgentStatus,
}

impl HealthAgent {
    /// An agent for `node_id` over `source` (or the reason it could not be
    /// opened: `(source name, reason)`).
    pub fn new(
        node_id: &str,
        source: Result<Box<dyn HealthSource>, (String, String)>,
        policy: HealthPolicy,
    ) -> Self {
        let (name, reason) = match &source {
            Ok(s) => (s.name().to_string(), None),
            Err((name, reason)) => (name.clone(), Some(reason.clone())),
        };
        HealthAgent {
            node_id: node_id.to_string(),
            status: AgentStatus {
                node_id: node_id.to_string(),
                source: name,
                source_available: reason.is_none(),
                reason,
                verdict: None,
                steps: 0,
                last_step_at: 0,
            },
            source,
            evaluator: HealthEvaluator::new(policy),
            reported_unavailable: false,
        }
    }

    /// The agent's status.
    pub fn status(&self) -> &AgentStatus {
        &self.status
    }

    /// One round at `now`: the messages to publish, in order.
    pub fn step(&mut self, now: u64) -> Vec<HealthMessage> {
        self.status.steps += 1;
        self.status.last_step_at = now;
        let mut out = Vec::new();
        let sample = match &mut self.source {
            Ok(source) => source.sample(now),
            Err((_, reason)) => Err(SourceError::Unavailable(reason.clone())),
        };
        let (gpus, report) = match sample {
            Ok(sample) => {
                let e = self.evaluator.evaluate(&sample);
                self.status.verdict = Some(e.verdict);
                let report = HealthMessage::Report {
                    node_id: self.node_id.clone(),
                    at: now,
                    verdict: e.verdict,
                    action: e.action,
                    reasons: e.reasons,
                    xids: e.xids,
                };
                (sample.gpus, Some(report))
            }
            Err(SourceError::Unavailable(reason)) => {
                self.unavailable(now, reason, &mut out);
                (Vec::<GpuTelemetry>::new(), None)
            }
            Err(SourceError::Failed(reason)) => {
                tracing::warn!(node = %self.node_id, %reason, "sample failed");
                (Vec::new(), None)
            }
        };
        out.push(HealthMessage::Heartbeat {
            node_id: self.node_id.clone(),
            at: now,
            gpus,
        });
        out.extend(report);
        out
    }

    fn unavailable(&mut self, now: u64, reason: String, out: &mut Vec<HealthMessage>) {
        self.status.source_available = false;
        self.status.reason = Some(reason.clone());
        if self.reported_unavailable {
            return;
        }
        self.reported_unavailable = true;
        tracing::warn!(node = %self.node_id, source = %self.status.source, %reason,
            "health source unavailable: heartbeating without GPU health");
        out.push(HealthMessage::HealthSourceUnavailable {
            node_id: self.node_id.clone(),
            at: now,
            source: self.status.source.clone(),
            reason,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::{Fault, FaultKind, FaultQueue, GpuEvent, SimSource};
    use flotilla_messages::health::HealthAction;

    #[test]
    fn without_a_source_it_says_so_once_and_keeps_heartbeating() {
        let mut agent = HealthAgent::new(
            "n1",
            Err(("nvml".into(), "cannot load libnvidia-ml.so.1".into())),
            HealthPolicy::default(),
        );
        let first = agent.step(1);
        assert!(
            matches!(&first[0], HealthMessage::HealthSourceUnavailable { reason, .. } if reason.contains("libnvidia-ml"))
        );
        assert!(matches!(first[1], HealthMessage::Heartbeat { .. }));
        for t in 2..5 {
            let later = agent.step(t);
            assert_eq!(later.len(), 1);
            assert!(matches!(later[0], HealthMessage::Heartbeat { .. }));
        }
        assert!(!agent.status().source_available);
    }

    #[test]
    fn a_sim_xid_79_is_reported_unhealthy_with_replace() {
        let faults = FaultQueue::default();
        let mut agent = HealthAgent::new(
            "n1",
            Ok(Box::new(SimSource::new(2, faults.clone()))),
            HealthPolicy::default(),
        );
        agent.step(1_000);
        faults.inject_now(
            FaultKind::Event {
                event: GpuEvent::Xid { gpu: 1, code: 79 },
            },
            1_500,
        );
        let out = agent.step(2_000);
        let HealthMessage::Report {
            verdict,
            action,
            xids,
            ..
        } = &out[1]
        else {
            panic!("no report: {out:?}")
        };
        assert_eq!(
            (*verdict, *action, xids.as_slice()),
            (Verdict::Unhealthy, HealthAction::Replace, &[79][..])
        );
        let _ = Fault {
            at: 0,
            what: FaultKind::Utilization {
                gpu: 0,
                percent: 1.0,
            },
        };
    }
}
