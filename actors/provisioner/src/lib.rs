//! The provisioner: keeps GPU node pools at the right size and replaces
//! failed nodes, make-before-break.
//!
//! - `autoscaler`: pure sizing functions of demand and the clock;
//! - `pool`: the pool aggregate (node lifecycle, health counting,
//!   replacement, circuit breaker) — pure `decide`/`evolve`;
//! - `provider`: the [`Provider`] trait the effects call, with
//!   `sim` (in-process fake cloud), `exec` (user commands) and
//!   `kubernetes` (Kubernetes Nodes: cordon and drain through the API)
//!   providers;
//! - `effects`: runs provider calls after their event is stored, keyed by
//!   event id;
//! - `service`: the host side: ticks, agent reports from
//!   `flotilla.health.>`, queue signals from `flotilla.signal.queue.>`,
//!   metrics;
//! - `conformance` (tests and the `test-util` feature only): the cases
//!   every provider passes, run against all three.
//!
//! Neighbours: `flotilla_messages::{fleet, provisioner, health}` (wire
//! types), `flotilla_health` (the agent that reports), `flotilla_host`
//! (the host).

#![warn(missing_docs)]

mod autoscaler;
#[cfg(any(test, feature = "test-util"))]
pub mod conformance;
mod effects;
mod exec;
mod kubernetes;
mod metrics;
mod pool;
mod provider;
mod service;
mod sim;

pub use autoscaler::{decide_scale, ScaleInput, ScaleLimits};
pub use effects::ProviderEffects;
pub use exec::ExecProvider;
pub use flotilla_host::{wall_clock, Clock};
pub use kubernetes::KubernetesProvider;
pub use metrics::FleetMetrics;
pub use pool::{Node, NodeStatus, Pool, PoolState};
pub use provider::{Provider, ProviderSet};
pub use service::command_for;
pub use service::{FleetService, FleetServiceConfig};
pub use sim::{fnv1a, sim_fails, SimCloud, SimInstance, SimProvider};
