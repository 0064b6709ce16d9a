//! The reply to every command and query, over NATS and HTTP alike.
//!
//! Success: `{"ok": true, "stream": "<actor>/<id>", "seq": n, "events": [...], "result": {...}}`.
//! Failure: `{"ok": false, "error": {"code": "SNAKE_CASE_CODE", "message": "..."}}`.

use crate::envelope::Envelope;
use crate::error::{ErrorBody, Rejection};
use serde::{Deserialize, Serialize};

/// A command or query reply. Exactly one of the success fields or `error` is set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Reply {
    /// Whether the command was accepted.
    pub ok: bool,
    /// The aggregate's stream, `<actor>/<id>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<String>,
    /// The aggregate's sequence after the command (its last event's seq).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// The events the command appended (empty when it changed nothing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events: Option<Vec<Envelope>>,
    /// What the caller asked for: new trials, the current state, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
    /// Why the command was refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
}

impl Reply {
    /// An accepted command or a query answer.
    pub fn accepted(
        stream: impl Into<String>,
        seq: u64,
        events: Vec<Envelope>,
        result: serde_json::Value,
    ) -> Self {
        Reply {
            ok: true,
            stream: Some(stream.into()),
            seq: Some(seq),
            events: Some(events),
            result: Some(result),
            error: None,
        }
    }

    /// A refused command.
    pub fn rejected(rejection: &Rejection) -> Self {
        Reply {
            ok: false,
            stream: None,
            seq: None,
            events: None,
            result: None,
            error: Some(rejection.body()),
        }
    }
}
