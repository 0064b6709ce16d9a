//! The provisioner: keeps GPU node pools at the right size and replaces
//! failed nodes, make-before-break.
//!
//! - [`autoscaler`]: pure sizing functions of demand and the clock;
//! - [`pool`]: the pool aggregate (node lifecycle, health counting,
//!   replacement, circuit breaker) — pure `decide`/`evolve`;
//! - [`provider`]: the [`provider::Provider`] trait the effects call, with
//!   [`sim`] (in-process fake cloud), [`exec`] (user commands) and
//!   [`kubernetes`] (Kubernetes Nodes: cordon and drain through the API)
//!   providers;
//! - [`effects`]: runs provider calls after their event is stored, keyed by
//!   event id;
//! - [`service`]: the host side: ticks, agent reports from
//!   `flotilla.health.>`, queue signals from `flotilla.signal.queue.>`,
//!   metrics.
//!
//! Neighbours: `flotilla_messages::{fleet, provisioner, health}` (wire
//! types), [`crate::health`] (the agent that reports), [`crate::runtime`]
//! (the host).

pub mod autoscaler;
pub mod effects;
pub mod exec;
pub mod kubernetes;
pub mod metrics;
pub mod pool;
pub mod provider;
pub mod service;
pub mod sim;

pub use effects::{wall_clock, Clock, ProviderEffects};
pub use metrics::FleetMetrics;
pub use pool::{Node, NodeStatus, Pool, PoolState};
pub use provider::{Provider, ProviderSet};
pub use service::{FleetService, FleetServiceConfig};
