//! The health watcher: the agent on every GPU node.
//!
//! - [`source`]: the [`source::HealthSource`] trait, observation types and
//!   the simulated source with injected faults;
//! - [`nvml`]: the NVML source (nvml-wrapper), which says once, clearly,
//!   when there is no library or driver;
//! - [`condition`]: Navarch's rule condition language (a CEL subset);
//! - [`policy`]: rules (NVIDIA's XID catalog by default), thermal N-of-M
//!   windows and probation → verdicts;
//! - [`agent`]: one node's loop: sample → evaluate → heartbeat and report
//!   messages for `<prefix>.health.<node>`.
//!
//! The provisioner ([`crate::provisioner`]) receives the messages and
//! folds them into the node lifecycle.

pub mod agent;
pub mod condition;
pub mod nvml;
pub mod policy;
pub mod source;
