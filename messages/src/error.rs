//! Typed errors that travel on the wire: a stable `SNAKE_CASE` code and a
//! human message. Clients branch on the code; people read the message.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The error codes Flotilla replies with. Stable: clients match on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// The body is neither valid JSON nor valid MessagePack.
    MalformedBody,
    /// The command's `type` is missing or not a command of this actor.
    UnknownCommand,
    /// The command carries a field its type does not have.
    UnknownField,
    /// A field is missing or has a wrong type or value.
    InvalidField,
    /// An id or subject token does not match `[A-Za-z0-9_-]{1,64}`.
    InvalidId,
    /// The actor named in a subject or path does not exist.
    UnknownActor,
    /// `expected_seq` does not match the aggregate's current sequence.
    WrongExpectedSeq,
    /// The aggregate does not exist yet.
    NotFound,
    /// The aggregate exists already.
    AlreadyExists,
    /// A trial id the study never handed out.
    UnknownTrial,
    /// The command is valid but not in the aggregate's current state.
    InvalidState,
    /// Nobody answered in time.
    Timeout,
    /// The service is not ready (recovering) or a backend is unreachable.
    Unavailable,
    /// Stored data failed its checksum or hash chain.
    Corrupt,
    /// A bug or an unexpected backend failure.
    Internal,
    /// An HTTP command's `Content-Type` is not JSON or MessagePack (or is missing).
    UnsupportedMediaType,
    /// An HTTP request's `Origin` is neither the gateway's own nor an allowed one.
    ForbiddenOrigin,
    /// An HTTP request's `Host` is not an allowed host (DNS rebinding).
    ForbiddenHost,
    /// What a command would write or answer is above a size limit (the
    /// message names the limit and its setting).
    TooLarge,
    /// No credentials, or credentials nobody knows (a missing or unknown
    /// token, an unsigned or badly signed NATS command where one is needed).
    Unauthenticated,
    /// The caller is known but its role lacks the permission the message names.
    Forbidden,
    /// A job's program is not in the local executor's allowlist
    /// (`scheduler.local.allowed_commands`; the message names the program
    /// and the setting).
    CommandNotAllowed,
    /// The principal sent more than its role's rate limit allows (429, with
    /// `Retry-After`).
    RateLimited,
    /// The HTTP method is not one the route answers (405, with `Allow`).
    MethodNotAllowed,
}

impl ErrorCode {
    /// Every code.
    pub const ALL: [ErrorCode; 24] = [
        ErrorCode::MalformedBody,
        ErrorCode::UnknownCommand,
        ErrorCode::UnknownField,
        ErrorCode::InvalidField,
        ErrorCode::InvalidId,
        ErrorCode::UnknownActor,
        ErrorCode::WrongExpectedSeq,
        ErrorCode::NotFound,
        ErrorCode::AlreadyExists,
        ErrorCode::UnknownTrial,
        ErrorCode::InvalidState,
        ErrorCode::Timeout,
        ErrorCode::Unavailable,
        ErrorCode::Corrupt,
        ErrorCode::Internal,
        ErrorCode::UnsupportedMediaType,
        ErrorCode::ForbiddenOrigin,
        ErrorCode::ForbiddenHost,
        ErrorCode::TooLarge,
        ErrorCode::Unauthenticated,
        ErrorCode::Forbidden,
        ErrorCode::CommandNotAllowed,
        ErrorCode::RateLimited,
        ErrorCode::MethodNotAllowed,
    ];

    /// The code a wire spelling names, if any.
    pub fn parse(code: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == code)
    }

    /// The wire spelling, e.g. `UNKNOWN_FIELD`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::MalformedBody => "MALFORMED_BODY",
            ErrorCode::UnknownCommand => "UNKNOWN_COMMAND",
            ErrorCode::UnknownField => "UNKNOWN_FIELD",
            ErrorCode::InvalidField => "INVALID_FIELD",
            ErrorCode::InvalidId => "INVALID_ID",
            ErrorCode::UnknownActor => "UNKNOWN_ACTOR",
            ErrorCode::WrongExpectedSeq => "WRONG_EXPECTED_SEQ",
            ErrorCode::NotFound => "NOT_FOUND",
            ErrorCode::AlreadyExists => "ALREADY_EXISTS",
            ErrorCode::UnknownTrial => "UNKNOWN_TRIAL",
            ErrorCode::InvalidState => "INVALID_STATE",
            ErrorCode::Timeout => "TIMEOUT",
            ErrorCode::Unavailable => "UNAVAILABLE",
            ErrorCode::Corrupt => "CORRUPT",
            ErrorCode::Internal => "INTERNAL",
            ErrorCode::UnsupportedMediaType => "UNSUPPORTED_MEDIA_TYPE",
            ErrorCode::ForbiddenOrigin => "FORBIDDEN_ORIGIN",
            ErrorCode::ForbiddenHost => "FORBIDDEN_HOST",
            ErrorCode::TooLarge => "TOO_LARGE",
            ErrorCode::Unauthenticated => "UNAUTHENTICATED",
            ErrorCode::Forbidden => "FORBIDDEN",
            ErrorCode::CommandNotAllowed => "COMMAND_NOT_ALLOWED",
            ErrorCode::RateLimited => "RATE_LIMITED",
            ErrorCode::MethodNotAllowed => "METHOD_NOT_ALLOWED",
        }
    }

    /// The HTTP status the gateway maps this code to.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::MalformedBody
            | ErrorCode::UnknownCommand
            | ErrorCode::UnknownField
            | ErrorCode::InvalidField
            | ErrorCode::InvalidId => 400,
            ErrorCode::UnknownActor | ErrorCode::NotFound => 404,
            ErrorCode::WrongExpectedSeq | ErrorCode::AlreadyExists | ErrorCode::InvalidState => 409,
            ErrorCode::UnknownTrial => 422,
            ErrorCode::Timeout => 504,
            ErrorCode::Unavailable => 503,
            ErrorCode::Corrupt | ErrorCode::Internal => 500,
            ErrorCode::UnsupportedMediaType => 415,
            ErrorCode::ForbiddenOrigin
            | ErrorCode::ForbiddenHost
            | ErrorCode::CommandNotAllowed => 403,
            ErrorCode::TooLarge => 413,
            ErrorCode::Unauthenticated => 401,
            ErrorCode::Forbidden => 403,
            ErrorCode::RateLimited => 429,
            ErrorCode::MethodNotAllowed => 405,
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The `error` object of a failed reply: `{"code": "...", "message": "..."}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ErrorBody {
    /// A stable `SNAKE_CASE` code (see [`ErrorCode`]).
    #[cfg_attr(feature = "openapi", schema(value_type = ErrorCode))]
    pub code: String,
    /// What went wrong, naming the field or value at fault.
    pub message: String,
}

/// Why a command was refused. Rejections append nothing and change nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct Rejection {
    /// The typed reason.
    pub code: ErrorCode,
    /// A message naming the field or value at fault.
    pub message: String,
}

impl Rejection {
    /// A rejection with `code` and `message`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Rejection {
            code,
            message: message.into(),
        }
    }

    /// Shorthand for an [`ErrorCode::InvalidField`] rejection.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidField, message)
    }

    /// The wire form.
    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            code: self.code.as_str().to_string(),
            message: self.message.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_parses_back_from_its_spelling() {
        for code in ErrorCode::ALL {
            assert_eq!(ErrorCode::parse(code.as_str()), Some(code));
        }
        assert_eq!(ErrorCode::parse("NOPE"), None);
    }
}
