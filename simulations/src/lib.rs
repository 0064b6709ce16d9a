//! Deterministic simulations on virtual time.
//!
//! A simulation drives an actor's pure domain logic (`decide` and `evolve`
//! from `flotilla-actors`) with scripted commands, without a bus, a log or a
//! clock, so a run is a function of its seed alone and takes microseconds
//! per step. The fleet simulator (thousands of GPU nodes under injected
//! faults) will live here; today it holds [`study`], which runs a whole
//! study against a benchmark objective, the benchmark [`objectives`] with
//! their known optima, and [`solver_bench`], the quality and overhead
//! measurements behind `flotilla bench solver`.

pub mod objectives;
pub mod solver_bench;
pub mod study;
