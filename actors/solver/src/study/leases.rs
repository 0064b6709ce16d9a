//! Leases: `heartbeat`, `expire`, and what they and a leased `ask` do to
//! the trials ([`solver`](flotilla_messages::solver) has the wire form).
//!
//! Time only ever comes in a command's `now` (unix milliseconds), so
//! deciding stays pure and a replay marks the same trials stale. A lease
//! runs from `now` for `lease_seconds` (default one hour); a trial whose
//! lease ended is stale until it is handed out again (a retry, same id and
//! parameters) or a late result or failure clears the mark.

use super::{StudyState, TrialRecord, TrialState};
use flotilla_messages::solver::{
    Heartbeat, SolverEvent, Trial, DEFAULT_LEASE_SECONDS, MAX_LEASE_SECONDS,
};
use flotilla_messages::Rejection;

impl StudyState {
    pub(super) fn decide_heartbeat(
        &self,
        heartbeat: &Heartbeat,
    ) -> Result<Vec<SolverEvent>, Rejection> {
        let lease_until = lease_until("heartbeat", heartbeat.now, heartbeat.lease_seconds)?;
        if heartbeat.trial_ids.is_empty() {
            return Err(Rejection::invalid("heartbeat: trial_ids must not be empty"));
        }
        let mut renewed: Vec<String> = Vec::new();
        for id in &heartbeat.trial_ids {
            let record = self
                .trial(id)
                .ok_or_else(|| self.unknown_trial_in("heartbeat", id))?;
            let running = record.state() == TrialState::Asked;
            let extends = record.lease_until.is_none_or(|until| until < lease_until);
            if running && extends && !renewed.contains(id) {
                renewed.push(id.clone());
            }
        }
        if renewed.is_empty() {
            return Ok(Vec::new());
        }
        Ok(vec![SolverEvent::LeasesRenewed {
            trial_ids: renewed,
            lease_until,
        }])
    }

    pub(super) fn decide_expire(&self, now: u64) -> Result<Vec<SolverEvent>, Rejection> {
        let expired: Vec<&TrialRecord> = self
            .trials
            .iter()
            .filter(|r| r.state() == TrialState::Asked && r.lease_until.is_some_and(|t| t <= now))
            .collect();
        if expired.is_empty() {
            return Ok(Vec::new());
        }
        let max = self.config.max_retries;
        let newly_final = expired.iter().filter(|r| r.retries >= max).count() as u64;
        Ok(vec![SolverEvent::TrialsExpired {
            trial_ids: expired.iter().map(|r| r.trial.trial_id.clone()).collect(),
            now,
            completes_study: self.completed_by(newly_final),
        }])
    }

    pub(super) fn renew_leases(&mut self, trial_ids: &[String], lease_until: u64) {
        for id in trial_ids {
            if let Some(index) = self.index_of(id) {
                if self.trials[index].state() == TrialState::Asked {
                    self.trials[index].lease_until = Some(lease_until);
                }
            }
        }
    }

    pub(super) fn retry_trials(&mut self, retried: &[Trial], lease_until: Option<u64>) {
        for trial in retried {
            let Some(index) = self.index_of(&trial.trial_id) else {
                continue;
            };
            if self.trials[index].state() != TrialState::Stale || self.is_final(&self.trials[index])
            {
                continue;
            }
            let record = &mut self.trials[index];
            record.stale = false;
            record.retries += 1;
            record.lease_until = lease_until;
            self.stale -= 1;
        }
    }

    pub(super) fn expire_trials(&mut self, trial_ids: &[String], completes_study: bool) {
        for id in trial_ids {
            let Some(index) = self.index_of(id) else {
                continue;
            };
            if self.trials[index].state() != TrialState::Asked {
                continue;
            }
            self.trials[index].stale = true;
            self.stale += 1;
            if self.is_final(&self.trials[index]) {
                self.stale_final += 1;
            }
        }
        if completes_study {
            self.complete();
        }
    }

    /// Clears trial `index`'s stale mark before a result or failure.
    pub(super) fn unstale(&mut self, index: usize) {
        if self.trials[index].state() != TrialState::Stale {
            return;
        }
        if self.is_final(&self.trials[index]) {
            self.stale_final -= 1;
        }
        self.stale -= 1;
        self.trials[index].stale = false;
    }
}

/// When a lease taken at `now` for `seconds` (default one hour) ends.
pub(super) fn lease_until(command: &str, now: u64, seconds: Option<u64>) -> Result<u64, Rejection> {
    let seconds = seconds.unwrap_or(DEFAULT_LEASE_SECONDS);
    if !(1..=MAX_LEASE_SECONDS).contains(&seconds) {
        return Err(Rejection::invalid(format!(
            "{command}: lease_seconds must be between 1 and {MAX_LEASE_SECONDS}, got {seconds}"
        )));
    }
    now.checked_add(seconds * 1000).ok_or_else(|| {
        Rejection::invalid(format!(
            "{command}: now must be unix milliseconds, got {now}"
        ))
    })
}
