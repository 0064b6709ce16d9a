//! The solver's wire contract, tested through the request path and both
//! codecs: the shared helpers, and one file per part of the contract.

use super::*;
use crate::command::CommandRequest;
use crate::error::ErrorCode;
use crate::error::Rejection;
use serde_json::Value;
use std::collections::BTreeMap;

mod commands;
mod config;
mod events;
mod multi_objective;
mod round_trip;

fn parse(v: Value) -> Result<SolverCommand, Rejection> {
    CommandRequest::from_value(v, None)?.parse("solver", COMMAND_TYPES)
}

fn code(v: Value) -> ErrorCode {
    parse(v).unwrap_err().code
}

fn lr_config() -> StudyConfig {
    let bound = Bound::new(1e-5, 0.1, Scale::Log);
    StudyConfig {
        seed: 7,
        budget: 10,
        bounds: BTreeMap::from([("lr".to_string(), bound)]),
        probe_ratio: None,
        strategy_params: BTreeMap::new(),
        sampler: Sampler::Auto,
        max_retries: 0,
        ..Default::default()
    }
}
