//! The solver actor: ask/tell hyperparameter search as an event-sourced
//! aggregate.
//!
//! A [`Study`] is one search: `create_study` fixes the search space and the
//! budget (ArqonHPO's config), `ask` hands out trials, `tell` records their
//! scores, `stop` ends it early. Every change is a
//! [`SolverEvent`](flotilla_messages::solver::SolverEvent), one per command,
//! and the state is a fold of those events, so a study recovered from its log
//! is bit for bit the study that wrote it.
//!
//! Trials are drawn by the study's sampler (`samplers`: `auto`, the
//! default, which picks TPE or CMA-ES from the space's shape; random,
//! scrambled Sobol, a shuffled grid, TPE, CMA-ES, GP or NSGA-II; a
//! multi-objective study runs NSGA-II or multi-objective TPE, whose Pareto
//! arithmetic is [`pareto`]) in the unit cube and
//! mapped onto the parameters (float, int, categorical, conditional) by
//! `sampling`; `pruners` stop trials early from their reports. Each trial's point depends on the config, its number and
//! (for TPE) the trials recorded before it, so replaying a study's events
//! always hands out the same trials.
//!
//! The wire types live in `flotilla_messages::solver`.

#![warn(missing_docs)]

mod pruners;
mod samplers;
mod sampling;
mod study;

pub use samplers::pareto;
pub use study::{Failure, Outcome, Study, StudyStatus, TrialRecord, TrialState};
