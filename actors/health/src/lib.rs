//! The health watcher: the agent on every GPU node.
//!
//! - `source`: the [`HealthSource`] trait, observation types and
//!   the simulated source with injected faults;
//! - `nvml`: the NVML source (nvml-wrapper), which says once, clearly,
//!   when there is no library or driver;
//! - `condition`: Navarch's rule condition language (a CEL subset);
//! - `policy`: rules (NVIDIA's XID catalog by default), thermal N-of-M
//!   windows and probation → verdicts;
//! - `agent`: one node's loop: sample → evaluate → heartbeat and report
//!   messages for `<prefix>.health.<node>`.
//!
//! The provisioner (`flotilla_provisioner`) receives the messages and
//! folds them into the node lifecycle.

#![warn(missing_docs)]

mod agent;
mod condition;
mod nvml;
mod policy;
mod source;

pub use agent::{AgentStatus, HealthAgent};
pub use condition::{EventFields, Expr};
pub use nvml::NvmlSource;
pub use policy::{
    default_rules, Evaluation, HealthEvaluator, HealthPolicy, Matcher, RecoverySettings,
    Recurrence, Rule, RuleAction, ThermalSettings, APPLICATION_XIDS, IGNORABLE_XIDS,
    INVESTIGATE_XIDS, REPLACE_XIDS, RESET_XIDS,
};
pub use source::{
    parse_faults, Fault, FaultKind, FaultQueue, GpuEvent, HealthSource, Sample, SimSource,
    SourceError, SIM_IDLE_C, SIM_SLOWDOWN_C,
};
