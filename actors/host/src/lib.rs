//! The event-sourced actor host.
//!
//! - [`Aggregate`]: the pure `decide`/`evolve` contract;
//! - [`AggregateCore`]: recovery and the durable command step for one aggregate;
//! - [`AggregateActor`] and [`AggregateRegistry`]: actix hosting, one actor per aggregate;
//! - [`CommandService`]: subscribes an actor kind's `cmd` and `query` subjects on the bus;
//!   [`CommandTrust`]: whom a command on the bus is attributed to;
//! - [`EffectHandler`]: side effects after their event is stored;
//! - [`HostMetrics`]: Prometheus metrics;
//! - [`Clock`], [`wall_clock`] and [`unix_millis`]: the time the hosts stamp commands with;
//! - [`replay()`]: fold a stream outside the host (audits, point-in-time views).

#![warn(missing_docs)]

mod aggregate;
mod clock;
mod core;
mod effects;
mod host;
mod metrics;
mod replay;
mod service;
mod trust;

pub use aggregate::Aggregate;
pub use clock::{unix_millis, wall_clock, Clock};
pub use core::{
    AggregateCore, EffectJob, HostConfig, HostDeps, DEFAULT_MAX_BATCH_BYTES,
    DEFAULT_MAX_EVENT_BYTES,
};
pub use effects::{derived_command_id, outcome_command_id, EffectHandler};
pub use host::{AggregateActor, AggregateRegistry, Execute, Query, Recovered};
pub use metrics::HostMetrics;
pub use replay::{replay, Replayed, Until};
pub use service::CommandService;
pub use trust::CommandTrust;
