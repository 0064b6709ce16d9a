//! `report`: a running trial's intermediate results, and the pruner's
//! answer ([`pruners`](crate::pruners)).
//!
//! A report is recorded whatever the answer, so the history of every trial's
//! learning curve is in the log; the pruners read those curves (as losses,
//! negated when the study maximises) and nothing else, so a replay decides
//! the same way.

use super::{StudyState, TrialState};
use crate::pruners::{prunes, Peer, Reports};
use flotilla_messages::solver::{PruneAction, Report, SolverEvent};
use flotilla_messages::{ErrorCode, Rejection};

impl StudyState {
    pub(super) fn decide_report(&self, report: &Report) -> Result<Vec<SolverEvent>, Rejection> {
        let Report {
            trial_id: id,
            step,
            value,
        } = report;
        if !value.is_finite() {
            return Err(Rejection::invalid(format!(
                "report: value of trial {id} must be finite, got {value}"
            )));
        }
        let index = self
            .index_of(id)
            .ok_or_else(|| self.unknown_trial_in("report", id))?;
        let record = &self.trials[index];
        let refuse = |why: String| {
            Err(Rejection::new(
                ErrorCode::InvalidState,
                format!("report: trial {id} {why}"),
            ))
        };
        match record.state() {
            TrialState::Asked | TrialState::Stale => {}
            TrialState::Pruned => {
                let at = record.pruned_at.unwrap_or_default();
                return refuse(format!("was pruned at step {at}; stop evaluating it"));
            }
            TrialState::Completed => return refuse("is completed already".to_string()),
            TrialState::Failed => return refuse("failed already".to_string()),
        }
        if let Some(&earlier) = record.reports.get(step) {
            if earlier != *value {
                return refuse(format!(
                    "already reported {earlier} at step {step}; refusing {value}"
                ));
            }
        }
        let action = if self.prunes(index, *step, *value) {
            PruneAction::Prune
        } else {
            PruneAction::Continue
        };
        let completes_study =
            action == PruneAction::Prune && self.is_open(record) && self.completed_by(1);
        Ok(vec![SolverEvent::TrialReported {
            trial_id: id.clone(),
            step: *step,
            value: *value,
            action,
            completes_study,
        }])
    }

    /// Whether the study's pruner stops trial `index` after it reports
    /// `value` at `step`; never without a pruner.
    fn prunes(&self, index: usize, step: u64, value: f64) -> bool {
        let Some(pruner) = &self.config.pruner else {
            return false;
        };
        let losses = |reports: &Reports| -> Reports {
            let direction = self.config.direction;
            reports
                .iter()
                .map(|(&s, &v)| (s, direction.loss(v)))
                .collect()
        };
        let mut own = losses(&self.trials[index].reports);
        own.insert(step, self.config.direction.loss(value));
        let curves: Vec<(Reports, bool)> = self
            .trials
            .iter()
            .enumerate()
            .filter(|&(i, r)| i != index && !r.reports.is_empty())
            .map(|(_, r)| (losses(&r.reports), r.outcome.is_some()))
            .collect();
        let peers: Vec<Peer> = curves
            .iter()
            .map(|(reports, completed)| Peer {
                reports,
                completed: *completed,
            })
            .collect();
        prunes(pruner, &own, step, &peers)
    }

    pub(super) fn record_report(
        &mut self,
        id: &str,
        step: u64,
        value: f64,
        action: PruneAction,
        completes_study: bool,
    ) {
        let Some(index) = self.index_of(id) else {
            return;
        };
        self.trials[index].reports.entry(step).or_insert(value);
        let running = matches!(
            self.trials[index].state(),
            TrialState::Asked | TrialState::Stale
        );
        if action == PruneAction::Prune && running {
            self.unstale(index);
            self.trials[index].pruned_at = Some(step);
            self.pruned += 1;
        }
        if completes_study {
            self.complete();
        }
    }
}
