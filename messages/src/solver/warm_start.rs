//! Warm starts: results a study did not produce itself, and candidates a
//! user wants tried first.
//!
//! `seed` is ArqonHPO's call of the same name: results from an earlier run
//! (or a colleague's notebook) enter the study's history, so the model-based
//! samplers learn from them. They become completed trials with their own
//! ids, numbered on like any trial, but use none of the budget:
//!
//! ```json
//! {"type": "seed", "trials": [{"params": {"lr": 0.01, "layers": 3}, "value": 0.31, "cost": 12.0}]}
//! ```
//!
//! `enqueue` puts candidates in a queue that the next asks hand out before
//! sampling anything (after stale trials being retried); they do use the
//! budget. A candidate may leave parameters out: the sampler fills them in.
//!
//! ```json
//! {"type": "enqueue", "params": {"lr": 0.001, "optimizer": "adam"}}
//! {"type": "enqueue", "candidates": [{"lr": 0.001}, {"lr": 0.01}]}
//! {"type": "enqueue", "params": {"lr": 0.001}, "rollback_to": "t7", "reason": "diverged"}
//! ```
//!
//! `rollback_to` names a trial the candidates repeat (ArqonHPO's dashboard
//! action `rollback`: the next trial re-evaluates the best known
//! configuration); it must be a trial the study handed out. It and
//! `reason` are only recorded, for people and the dashboard's actions.
//!
//! Every value is checked against the search space (a name that is not a
//! parameter, a value out of range or off its step, not one of the choices,
//! given for a parameter that is inactive there) and the whole command is
//! refused naming the first problem.

use super::search_space::Params;
use serde::{Deserialize, Serialize};

/// The most results one `seed` or candidates one `enqueue` may carry.
pub const MAX_WARM_START: usize = 10_000;

/// One earlier result, as ArqonHPO's `seed` takes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PriorResult {
    /// Every active parameter's value.
    #[cfg_attr(feature = "openapi", schema(value_type = std::collections::BTreeMap<String, crate::solver::ParamValue>))]
    pub params: Params,
    /// The objective; must be finite.
    pub value: f64,
    /// What the evaluation cost, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost: Option<f64>,
}

/// The body of a `seed`: one or more earlier results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SeedTrials {
    /// The results, in the order given; never empty.
    pub trials: Vec<PriorResult>,
}

/// The body of an `enqueue`: candidates to hand out before sampling.
///
/// On the wire either `{"candidates": [{...}, ...]}` or one candidate as
/// `{"params": {...}}`. Always written in the `candidates` form.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "EnqueueWire", into = "EnqueueWire")]
pub struct Enqueue {
    /// The candidates, in order; never empty.
    pub candidates: Vec<Params>,
    /// The trial whose parameters the candidates repeat (a rollback to it).
    pub rollback_to: Option<String>,
    /// Why, for the record.
    pub reason: Option<String>,
}

/// Both spellings of an `enqueue`, before they are checked.
#[derive(Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
struct EnqueueWire {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Vec<std::collections::BTreeMap<String, crate::solver::ParamValue>>>))]
    candidates: Option<Vec<Params>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<std::collections::BTreeMap<String, crate::solver::ParamValue>>))]
    params: Option<Params>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rollback_to: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

#[cfg(feature = "openapi")]
schema_as_wire!(Enqueue, EnqueueWire);

impl TryFrom<EnqueueWire> for Enqueue {
    type Error = String;

    fn try_from(wire: EnqueueWire) -> Result<Self, String> {
        let candidates = super::commands::one_or_many(
            "candidates",
            "`params`",
            wire.candidates,
            wire.params.map(Some),
        )?;
        Ok(Enqueue {
            candidates,
            rollback_to: wire.rollback_to,
            reason: wire.reason,
        })
    }
}

impl From<Enqueue> for EnqueueWire {
    fn from(enqueue: Enqueue) -> Self {
        EnqueueWire {
            candidates: Some(enqueue.candidates),
            params: None,
            rollback_to: enqueue.rollback_to,
            reason: enqueue.reason,
        }
    }
}
