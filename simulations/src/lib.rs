//! Deterministic simulations on virtual time.
//!
//! A simulation drives an actor's pure domain logic (`decide` and `evolve`
//! from the actor crates: `flotilla-solver`, `flotilla-provisioner`, `flotilla-health`) with scripted commands, without a bus, a log or a
//! clock, so a run is a function of its seed alone and takes microseconds
//! per step. [`fleet`] runs a GPU node pool (the provisioner's pool
//! aggregate, real health agents on simulated GPUs) under injected faults
//! on virtual time; [`study`] runs a whole
//! study against a benchmark objective, the benchmark [`objectives`] with
//! their known optima, and [`solver_bench`], the quality and overhead
//! measurements behind `flotilla bench solver`.

#![warn(missing_docs)]

pub mod fleet;
pub mod fleet_bench;
#[cfg(test)]
mod fleet_scenarios;
pub mod objectives;
pub mod scenario;
pub mod solver_bench;
pub mod study;
