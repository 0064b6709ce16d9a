//! Flotilla's actors: each one pure domain logic plus the actix host that
//! makes it durable.
//!
//! - [`runtime`]: the [`runtime::Aggregate`] contract (`decide` and `evolve`,
//!   nothing else) and the host that runs it: recovery from snapshot + replay,
//!   then per command: idempotency check → decide → append with expected seq
//!   → evolve → publish → reply, atomically per aggregate; effects after the
//!   event that asks for them is stored.
//! - [`solver`]: studies and trials (ask/tell hyperparameter search).
//! - [`scheduler`]: queues of jobs run on local processes, Kubernetes Jobs
//!   or manifests.
//! - [`provisioner`]: GPU node pools, autoscaling and replacement.
//! - [`health`]: the per-node health agent: hardware sources and policy.
//! - [`inference`]: the policy-serving worker (candle, batching, model versions).
//!
//! Messages come from `flotilla-messages`; storage and subjects from
//! `flotilla-bus`; the HTTP face is `flotilla-gateway`.

pub mod health;
pub mod inference;
#[cfg(test)]
mod kube_replay;
pub mod provisioner;
pub mod runtime;
pub mod scheduler;
pub mod solver;
