//! The generic command request: what arrives on `<prefix>.cmd.<actor>.<id>`
//! or `POST /v1/cmd/<actor>/<id>` before an actor knows its exact type.
//!
//! A command is a map with `"type"` and its fields. Two fields are common to
//! every command and are taken out here: `command_id` (also accepted as the
//! `Nats-Msg-Id` header) makes the command idempotent, and `expected_seq`
//! asks for optimistic concurrency against the aggregate's current sequence.
//! The rest is parsed into the actor's own command enum by [`CommandRequest::parse`],
//! which turns serde's errors into typed codes naming the field.

use crate::codec::Encoding;
use crate::error::{ErrorCode, Rejection};
use crate::subjects::validate_id;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

/// A decoded, not yet typed command.
#[derive(Debug, Clone, PartialEq)]
pub struct CommandRequest {
    /// The `type` field.
    pub command_type: String,
    /// The idempotency key, if the client gave one.
    pub command_id: Option<String>,
    /// The sequence the client expects the aggregate to be at.
    pub expected_seq: Option<u64>,
    /// The remaining fields, `type` included.
    pub fields: Map<String, Value>,
    /// Who sent it, as the transport vouched for it (`crate::auth`); never
    /// read from the body, so a client cannot name itself.
    pub principal: Option<String>,
}

impl CommandRequest {
    /// Decodes a body in `encoding`. `header_id` is the `Nats-Msg-Id` header,
    /// used when the body carries no `command_id`.
    pub fn decode(
        encoding: Encoding,
        body: &[u8],
        header_id: Option<&str>,
    ) -> Result<Self, Rejection> {
        let value: Value = encoding
            .decode(body)
            .map_err(|e| Rejection::new(ErrorCode::MalformedBody, e.to_string()))?;
        Self::from_value(value, header_id)
    }

    /// Builds a request from a JSON value.
    pub fn from_value(value: Value, header_id: Option<&str>) -> Result<Self, Rejection> {
        let Value::Object(mut fields) = value else {
            return Err(Rejection::new(
                ErrorCode::MalformedBody,
                "a command must be a map with a \"type\" field",
            ));
        };
        let command_type = match fields.get("type") {
            Some(Value::String(t)) => t.clone(),
            Some(other) => {
                return Err(Rejection::new(
                    ErrorCode::UnknownCommand,
                    format!("field \"type\" must be a string, got {other}"),
                ))
            }
            None => {
                return Err(Rejection::new(
                    ErrorCode::UnknownCommand,
                    "missing field \"type\"",
                ))
            }
        };
        let command_id = match fields.remove("command_id") {
            None | Some(Value::Null) => header_id.map(str::to_string),
            Some(Value::String(id)) => Some(id),
            Some(other) => {
                return Err(Rejection::invalid(format!(
                    "field \"command_id\" must be a string, got {other}"
                )))
            }
        };
        if let Some(id) = &command_id {
            validate_id("command_id", id)
                .map_err(|e| Rejection::new(ErrorCode::InvalidId, e.to_string()))?;
        }
        let expected_seq = match fields.remove("expected_seq") {
            None | Some(Value::Null) => None,
            Some(v) => Some(v.as_u64().ok_or_else(|| {
                Rejection::invalid(format!(
                    "field \"expected_seq\" must be a non-negative integer, got {v}"
                ))
            })?),
        };
        Ok(CommandRequest {
            command_type,
            command_id,
            expected_seq,
            fields,
            principal: None,
        })
    }

    /// The same request, attributed to `principal`.
    pub fn by(mut self, principal: impl Into<String>) -> Self {
        self.principal = Some(principal.into());
        self
    }

    /// Parses the fields into an actor's command enum (internally tagged by
    /// `type`, `deny_unknown_fields`). `known` lists the actor's command types.
    pub fn parse<C: DeserializeOwned>(&self, actor: &str, known: &[&str]) -> Result<C, Rejection> {
        if !known.contains(&self.command_type.as_str()) {
            return Err(Rejection::new(
                ErrorCode::UnknownCommand,
                format!(
                    "unknown command type {:?} for {actor}: expected one of {}",
                    self.command_type,
                    known.join(", ")
                ),
            ));
        }
        let value = Value::Object(self.fields.clone());
        serde_path_to_error::deserialize(value).map_err(|e| field_rejection(&self.command_type, e))
    }
}

fn field_rejection(command: &str, e: serde_path_to_error::Error<serde_json::Error>) -> Rejection {
    let path = e.path().to_string();
    let inner = e.into_inner().to_string();
    let code = if inner.starts_with("unknown field") {
        ErrorCode::UnknownField
    } else {
        ErrorCode::InvalidField
    };
    let message = if path == "." || path.is_empty() {
        format!("{command}: {inner}")
    } else {
        format!("{command}: field {path}: {inner}")
    };
    Rejection::new(code, message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use serde_json::json;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
    enum Cmd {
        Ask { n: u32 },
        Stop,
    }

    fn req(v: Value) -> Result<CommandRequest, Rejection> {
        CommandRequest::from_value(v, None)
    }

    #[test]
    fn common_fields_are_taken_out() {
        let r =
            req(json!({"type": "ask", "n": 2, "command_id": "c-1", "expected_seq": 3})).unwrap();
        assert_eq!(r.command_id.as_deref(), Some("c-1"));
        assert_eq!(r.expected_seq, Some(3));
        assert_eq!(
            r.parse::<Cmd>("solver", &["ask", "stop"]).unwrap(),
            Cmd::Ask { n: 2 }
        );
        let h = CommandRequest::from_value(json!({"type": "stop"}), Some("hdr")).unwrap();
        assert_eq!(h.command_id.as_deref(), Some("hdr"));
    }

    #[test]
    fn errors_are_typed_and_name_the_field() {
        let known = &["ask", "stop"];
        let code = |v: Value| match req(v) {
            Err(r) => r.code,
            Ok(r) => r.parse::<Cmd>("solver", known).unwrap_err().code,
        };
        assert_eq!(code(json!([1])), ErrorCode::MalformedBody);
        assert_eq!(code(json!({"n": 1})), ErrorCode::UnknownCommand);
        assert_eq!(code(json!({"type": "fly"})), ErrorCode::UnknownCommand);
        assert_eq!(
            code(json!({"type": "ask", "n": 1, "x": 2})),
            ErrorCode::UnknownField
        );
        assert_eq!(code(json!({"type": "ask"})), ErrorCode::InvalidField);
        assert_eq!(
            code(json!({"type": "stop", "command_id": "a.b"})),
            ErrorCode::InvalidId
        );
        assert_eq!(
            code(json!({"type": "stop", "expected_seq": -1})),
            ErrorCode::InvalidField
        );
        let r = req(json!({"type": "ask", "n": "x"})).unwrap();
        let e = r.parse::<Cmd>("solver", known).unwrap_err();
        assert!(e.message.contains("n"), "{}", e.message);
    }

    #[test]
    fn malformed_bytes_are_rejected() {
        let e = CommandRequest::decode(Encoding::Json, b"{not json", None).unwrap_err();
        assert_eq!(e.code, ErrorCode::MalformedBody);
        let e = CommandRequest::decode(Encoding::MsgPack, &[0xc1], None).unwrap_err();
        assert_eq!(e.code, ErrorCode::MalformedBody);
    }
}
