//! ArqonHPO's dashboard API, its shapes: what `arqonhpo dashboard` answers
//! on `/api/state`, `/api/summary`, `/api/events` and `/api/actions`, and
//! how a Flotilla study maps onto them.
//!
//! Both servers of that API use this module: the gateway, per study under
//! `/v1/studies/{study}/api/` ([`crate::arqon_api`]), and `flotilla
//! dashboard --state` for a state file; `flotilla run --state` writes its
//! state file with [`ArqonState`] too.
//!
//! - state: `{"config", "history": [{"params", "value", "cost"}], "run_id"}`
//!   (a multi-objective or constrained study's entries add `values` and
//!   `constraints`);
//! - summary: `{"run_id", "budget", "history_len", "best", "latest"}`;
//! - events: `{"events": [...]}`, the newest `limit` (default 100) in
//!   chronological order, `event` matching an event's `event` (or
//!   `event_type`) field, `q` a substring of its line;
//! - actions: `{"actions": [...]}`, the newest `limit` (default 50); a
//!   posted action is `{"action": "pause"|"resume"|"rollback", "reason"}`.
//!
//! Unlike ArqonHPO, a bad query parameter or body is refused with
//! `INVALID_FIELD` naming it, never a 500.

use flotilla_messages::solver::Params;
use flotilla_messages::{Envelope, ErrorCode, Rejection};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// Events answered when the query names no limit (as ArqonHPO).
pub const DEFAULT_EVENTS_LIMIT: usize = 100;
/// Actions answered when the query names no limit (as ArqonHPO).
pub const DEFAULT_ACTIONS_LIMIT: usize = 50;
/// The most events or actions one answer may hold.
pub const MAX_LIMIT: usize = 10_000;
/// The longest reason an action may give, in bytes.
pub const MAX_REASON_BYTES: usize = 1_000;

/// ArqonHPO's state file: the config, the told trials and the run's id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ArqonState {
    /// The study's config (ArqonHPO's `{seed, budget, bounds, ...}`).
    pub config: Value,
    /// The told trials, in trial order.
    pub history: Vec<HistoryEntry>,
    /// The run's id (in Flotilla, the id of the study's creation event).
    pub run_id: Option<String>,
}

/// One told trial, as ArqonHPO writes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HistoryEntry {
    /// The trial's parameters.
    #[schema(value_type = Object)]
    pub params: Params,
    /// Its result.
    pub value: f64,
    /// Its cost: the seconds its evaluation took, if known.
    pub cost: Option<f64>,
    /// Every objective of a multi-objective study's trial (`value` is the
    /// first); absent for a single objective.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<f64>,
    /// Its constraint values (feasible when every one is ≤ 0); absent
    /// without constraints.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub constraints: Vec<f64>,
}

impl ArqonState {
    /// The state of a study from its query view (`GET
    /// /v1/query/solver/<id>`'s `result`): its config, and every trial
    /// with a value as history (failed, pruned and running ones have none).
    pub fn from_study_view(view: &Value, run_id: Option<String>) -> Result<Self, Rejection> {
        let trials = view["trials"].as_array().map(Vec::as_slice).unwrap_or(&[]);
        let history = trials
            .iter()
            .filter(|t| t["value"].is_number())
            .map(|t| {
                let mut entry = json!({
                    "params": t["params"], "value": t["value"], "cost": t["cost"],
                });
                for field in ["values", "constraints"] {
                    if t[field].is_array() {
                        entry[field] = t[field].clone();
                    }
                }
                serde_json::from_value(entry)
            })
            .collect::<Result<Vec<HistoryEntry>, _>>()
            .map_err(|e| Rejection::new(ErrorCode::Internal, format!("study view: {e}")))?;
        Ok(ArqonState {
            config: view["config"].clone(),
            history,
            run_id,
        })
    }

    /// The summary. The best is the lowest value, or the highest for a
    /// study whose config says `direction: maximize`; the latest is the
    /// last history entry's value.
    pub fn summary(&self) -> Summary {
        let values = self.history.iter().map(|h| h.value);
        let best = if self.config["direction"] == "maximize" {
            values.reduce(f64::max)
        } else {
            values.reduce(f64::min)
        };
        Summary {
            run_id: self.run_id.clone(),
            budget: self.config.get("budget").cloned(),
            history_len: self.history.len(),
            best,
            latest: self.history.last().map(|h| h.value),
        }
    }
}

/// ArqonHPO's summary: `{run_id, budget, history_len, best, latest}`.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Summary {
    /// The run's id.
    pub run_id: Option<String>,
    /// The config's budget, as written.
    #[schema(value_type = Option<u64>)]
    pub budget: Option<Value>,
    /// How many trials have a value.
    pub history_len: usize,
    /// The best value, if any.
    pub best: Option<f64>,
    /// The last history entry's value, if any.
    pub latest: Option<f64>,
}

/// The query of `/api/events`: `?limit=&event=&q=`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    /// At most this many events, 1..=[`MAX_LIMIT`] (default
    /// [`DEFAULT_EVENTS_LIMIT`]).
    #[serde(default)]
    pub limit: Option<usize>,
    /// Only events of this type (their `event` or `event_type` field).
    #[serde(default)]
    pub event: Option<String>,
    /// Only events whose JSON line contains this text.
    #[serde(default)]
    pub q: Option<String>,
}

/// The query of `GET /api/actions`: `?limit=`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionsQuery {
    /// At most this many actions, 1..=[`MAX_LIMIT`] (default
    /// [`DEFAULT_ACTIONS_LIMIT`]).
    #[serde(default)]
    pub limit: Option<usize>,
}

/// Reads a query string into `T`, refusing an unknown parameter or a bad
/// value with `INVALID_FIELD` naming it, and a limit out of range.
pub fn parse_query<T: serde::de::DeserializeOwned + Limited>(query: &str) -> Result<T, Rejection> {
    let pairs = url_decoded_pairs(query)?;
    let parsed: T = serde_json::from_value(Value::Object(pairs))
        .map_err(|e| Rejection::invalid(format!("query: {e}")))?;
    match parsed.limit() {
        Some(n) if !(1..=MAX_LIMIT).contains(&n) => Err(Rejection::invalid(format!(
            "limit must be between 1 and {MAX_LIMIT}, got {n}"
        ))),
        _ => Ok(parsed),
    }
}

/// A query with a `limit`.
pub trait Limited {
    /// The limit the query names, if any.
    fn limit(&self) -> Option<usize>;
}

impl Limited for EventsQuery {
    fn limit(&self) -> Option<usize> {
        self.limit
    }
}

impl Limited for ActionsQuery {
    fn limit(&self) -> Option<usize> {
        self.limit
    }
}

/// The query's pairs as a JSON object; `limit` becomes a number (or the
/// pair is refused naming it), the others stay strings. An empty value is
/// no value: ArqonHPO's own page sends `?event=&q=` when it filters nothing.
fn url_decoded_pairs(query: &str) -> Result<serde_json::Map<String, Value>, Rejection> {
    let pairs = actix_web::web::Query::<Vec<(String, String)>>::from_query(query)
        .map_err(|e| Rejection::invalid(format!("query: {e}")))?
        .into_inner();
    let mut object = serde_json::Map::new();
    for (key, value) in pairs {
        let value = if value.is_empty() {
            Value::Null
        } else if key == "limit" {
            let n: usize = value.parse().map_err(|_| {
                Rejection::invalid(format!("limit must be a whole number, got {value:?}"))
            })?;
            Value::from(n)
        } else {
            Value::String(value)
        };
        if object.insert(key.clone(), value).is_some() {
            return Err(Rejection::invalid(format!("query: {key} is given twice")));
        }
    }
    Ok(object)
}

impl EventsQuery {
    /// The newest events of `lines` (JSON lines, oldest first) that match,
    /// at most the limit, oldest first. Blank lines and lines that are not
    /// JSON are skipped, as ArqonHPO does. Lines are read newest first and
    /// only until the limit is reached, so a lazy iterator does no more.
    pub fn select<L: AsRef<str>>(&self, lines: impl DoubleEndedIterator<Item = L>) -> Vec<Value> {
        let limit = self.limit.unwrap_or(DEFAULT_EVENTS_LIMIT);
        let mut picked: Vec<Value> = lines
            .rev()
            .filter(|line| !line.as_ref().trim().is_empty())
            .filter(|line| self.q.as_deref().is_none_or(|q| line.as_ref().contains(q)))
            .filter_map(|line| serde_json::from_str::<Value>(line.as_ref()).ok())
            .filter(|event| {
                self.event
                    .as_deref()
                    .is_none_or(|wanted| event_type_of(event) == wanted)
            })
            .take(limit)
            .collect();
        picked.reverse();
        picked
    }
}

/// An event's type: its `event` field, else its `event_type`.
fn event_type_of(event: &Value) -> &str {
    event
        .get("event")
        .or_else(|| event.get("event_type"))
        .and_then(Value::as_str)
        .unwrap_or_default()
}

impl ActionsQuery {
    /// The newest `limit` of `actions` (oldest first), oldest first.
    pub fn select(&self, mut actions: Vec<Value>) -> Vec<Value> {
        let limit = self.limit.unwrap_or(DEFAULT_ACTIONS_LIMIT);
        actions.split_off(actions.len().saturating_sub(limit))
    }
}

/// One event of the log as `/api/events` answers it: its type as
/// `event`, its body as `data`, and where, when and by whom.
pub fn event_json(envelope: &Envelope) -> Value {
    let data: Value = serde_json::from_str(envelope.payload.as_str()).unwrap_or(Value::Null);
    json!({
        "event": envelope.event_type,
        "stream": envelope.stream,
        "seq": envelope.seq,
        "timestamp_us": envelope.at.timestamp_micros(),
        "at": envelope.at,
        "principal": envelope.principal,
        "data": data,
    })
}

/// What a dashboard may ask of a study.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Pause the study's run: no new trial starts, running ones go on.
    Pause,
    /// Resume a paused run.
    Resume,
    /// Re-evaluate the best known configuration next (the study enqueues
    /// the best trial's parameters).
    Rollback,
}

impl Action {
    /// Every action, as spelled on the wire.
    pub const ALL: [&'static str; 3] = ["pause", "resume", "rollback"];

    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Pause => "pause",
            Action::Resume => "resume",
            Action::Rollback => "rollback",
        }
    }

    fn parse(name: &str) -> Result<Self, Rejection> {
        match name {
            "pause" => Ok(Action::Pause),
            "resume" => Ok(Action::Resume),
            "rollback" => Ok(Action::Rollback),
            other => Err(Rejection::invalid(format!(
                "action: unknown action {other:?}; allowed: {}",
                Action::ALL.join(", ")
            ))),
        }
    }
}

/// A posted action: `{"action": "pause", "reason": "..."}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionRequest {
    /// What to do.
    pub action: Action,
    /// Why, for the record.
    pub reason: Option<String>,
}

/// The answer to a posted action in `flotilla up`.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ActionAnswer {
    /// Always true (a refusal is an error reply).
    pub ok: bool,
    /// The action taken.
    pub action: String,
    /// Whether it changed anything (pausing a paused run does not).
    pub recorded: bool,
    /// The stream it was recorded on.
    pub stream: Option<String>,
    /// The seq of the stream after it.
    pub seq: Option<u64>,
}

/// The body of `POST /api/actions`, before it is checked.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ActionBody {
    /// `pause`, `resume` or `rollback`.
    #[schema(pattern = "^(pause|resume|rollback)$")]
    action: String,
    /// Why, for the record (at most 1,000 bytes).
    #[serde(default)]
    #[schema(max_length = 1000)]
    reason: Option<String>,
}

impl ActionRequest {
    /// Reads a posted body, refusing anything but a JSON object with a
    /// known `action` and an optional string `reason` up to
    /// [`MAX_REASON_BYTES`] (`INVALID_FIELD`, naming the field).
    pub fn parse(body: &[u8]) -> Result<Self, Rejection> {
        let body: ActionBody = serde_json::from_slice(body)
            .map_err(|e| Rejection::invalid(format!("action body: {e}")))?;
        let action = Action::parse(&body.action)?;
        if let Some(reason) = &body.reason {
            if reason.len() > MAX_REASON_BYTES {
                return Err(Rejection::invalid(format!(
                    "reason: at most {MAX_REASON_BYTES} bytes, got {}",
                    reason.len()
                )));
            }
        }
        Ok(ActionRequest {
            action,
            reason: body.reason,
        })
    }

    /// The action as ArqonHPO's actions file records it, stamped now.
    pub fn record(&self, principal: &str) -> Value {
        json!({
            "action": self.action.as_str(),
            "reason": self.reason,
            "principal": principal,
            "timestamp_us": now_us(),
        })
    }
}

fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

/// The dashboard action an event of a study's log records, if it records
/// one: a run paused or resumed, or candidates enqueued as a rollback.
pub fn action_of(envelope: &Envelope) -> Option<Value> {
    let action = match envelope.event_type.as_str() {
        "run_paused" => Action::Pause,
        "run_resumed" => Action::Resume,
        "candidates_enqueued" => Action::Rollback,
        _ => return None,
    };
    let data: Value = serde_json::from_str(envelope.payload.as_str()).ok()?;
    if action == Action::Rollback && data["rollback_to"].is_null() {
        return None;
    }
    let mut record = json!({
        "action": action.as_str(),
        "reason": data["reason"],
        "principal": envelope.principal,
        "timestamp_us": envelope.at.timestamp_micros(),
        "stream": envelope.stream,
        "seq": envelope.seq,
    });
    if action == Action::Rollback {
        record["rollback_to"] = data["rollback_to"].clone();
        record["params"] = data["candidates"][0].clone();
    }
    Some(record)
}

#[cfg(test)]
mod tests;
