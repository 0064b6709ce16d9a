//! Study runs: the control plane running a study's trials as jobs by
//! itself, so that a study goes on to its budget with no CLI process
//! driving it (Katib's Experiment controller, ArqonHPO's Job pattern).
//!
//! A run is a process manager between two actors: it asks the solver's
//! study for trials, submits each as a job of the scheduler's queue for
//! the study, and tells the study each job's value. Its neighbours:
//!
//! - [`StudyRun`] (`run`): the pure aggregate, `study_run/<study>`; the
//!   wire types are in `flotilla_messages::study_run`;
//! - [`RunEffects`] (`effects`): its events' effects, commands to the
//!   study and the queue over the bus, and their outcomes fed back;
//! - `reactions`: the scheduler's and the solver's events as the run's
//!   commands;
//! - [`RunDriver`] (`driver`): hosts the runs in `flotilla up`, follows the
//!   peers' events, reconciles against the queues, renews leases;
//! - [`RunMetrics`] (`metrics`): the Prometheus gauges.

#![warn(missing_docs)]

mod driver;
mod effects;
mod metrics;
pub mod reactions;
mod run;

pub use driver::{DriverSettings, RunDriver, DEFAULT_HEARTBEAT, DEFAULT_RECONCILE_EVERY};
pub use effects::{Peers, RunEffects};
pub use metrics::RunMetrics;
pub use run::{RunTrialRecord, StudyRun, TrialPhase, COUNTED};
