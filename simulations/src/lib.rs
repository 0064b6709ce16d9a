//! Deterministic simulations on virtual time.
//!
//! A simulation drives an actor's pure domain logic (`decide` and `evolve`
//! from the actor crates: `flotilla-solver`, `flotilla-provisioner`,
//! `flotilla-health`) with scripted commands, without a bus, a log or a
//! clock, so a run is a function of its seed alone and takes microseconds
//! per step. [`scenario`] runs chaos scenarios (Navarch's format) against
//! GPU node pools — the provisioner's pool aggregate and real health agents
//! on simulated GPUs — behind `flotilla simulate` and `flotilla bench
//! fleet`; [`study`] runs a whole study against a benchmark objective, the
//! benchmark [`objectives`] with their known optima, and [`solver_bench`],
//! the quality and overhead measurements behind `flotilla bench solver`.

#![warn(missing_docs)]

pub mod multi_objective;
pub mod objectives;
pub mod scenario;
pub mod solver_bench;
pub mod study;
