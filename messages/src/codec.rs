//! JSON and MessagePack, the two encodings every subject and endpoint accepts.
//!
//! The `Content-Type` header decides (`application/json`,
//! `application/msgpack`); without one, a body whose first non-blank byte is
//! `{` is JSON and anything else is MessagePack. A reply is written in the
//! request's encoding, so a `nats req` user gets JSON back and a Rust client
//! speaking MessagePack gets MessagePack. MessagePack is written with named
//! fields (maps, not arrays) so that both encodings carry the same shape.

use serde::de::DeserializeOwned;
use serde::Serialize;

/// The two wire encodings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Encoding {
    /// `application/json`.
    Json,
    /// `application/msgpack`, with named fields.
    MsgPack,
}

/// A body that could not be read or written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// The body is not valid JSON for the expected shape.
    #[error("malformed JSON body: {0}")]
    Json(String),
    /// The body is not valid MessagePack for the expected shape.
    #[error("malformed MessagePack body: {0}")]
    MsgPack(String),
    /// The `Content-Type` is neither JSON nor MessagePack.
    #[error("unsupported Content-Type {0:?}: use application/json or application/msgpack")]
    UnsupportedContentType(String),
    /// A value could not be encoded (e.g. a map with non-string keys in JSON).
    #[error("cannot encode value: {0}")]
    Encode(String),
}

impl Encoding {
    /// The `Content-Type` value for this encoding.
    pub fn content_type(self) -> &'static str {
        match self {
            Encoding::Json => "application/json",
            Encoding::MsgPack => "application/msgpack",
        }
    }

    /// The encoding a `Content-Type` header names (parameters such as
    /// `; charset=utf-8` are ignored).
    pub fn from_content_type(value: &str) -> Result<Self, CodecError> {
        let essence = value.split(';').next().unwrap_or("").trim();
        match essence.to_ascii_lowercase().as_str() {
            "application/json" | "text/json" => Ok(Encoding::Json),
            "application/msgpack" | "application/x-msgpack" | "application/vnd.msgpack" => {
                Ok(Encoding::MsgPack)
            }
            _ => Err(CodecError::UnsupportedContentType(value.to_string())),
        }
    }

    /// The brief's detection rule: the header if present, else sniff the body.
    pub fn detect(content_type: Option<&str>, body: &[u8]) -> Result<Self, CodecError> {
        match content_type {
            Some(ct) if !ct.trim().is_empty() => Self::from_content_type(ct),
            _ => Ok(Self::sniff(body)),
        }
    }

    /// JSON if the first non-blank byte is `{`, else MessagePack.
    pub fn sniff(body: &[u8]) -> Self {
        match body.iter().find(|b| !b.is_ascii_whitespace()) {
            Some(b'{') => Encoding::Json,
            _ => Encoding::MsgPack,
        }
    }

    /// Decodes `body` into `T`.
    pub fn decode<T: DeserializeOwned>(self, body: &[u8]) -> Result<T, CodecError> {
        match self {
            Encoding::Json => {
                serde_json::from_slice(body).map_err(|e| CodecError::Json(e.to_string()))
            }
            Encoding::MsgPack => {
                rmp_serde::from_slice(body).map_err(|e| CodecError::MsgPack(e.to_string()))
            }
        }
    }

    /// Encodes `value`; MessagePack uses named fields.
    pub fn encode<T: Serialize + ?Sized>(self, value: &T) -> Result<Vec<u8>, CodecError> {
        match self {
            Encoding::Json => {
                serde_json::to_vec(value).map_err(|e| CodecError::Encode(e.to_string()))
            }
            Encoding::MsgPack => {
                rmp_serde::to_vec_named(value).map_err(|e| CodecError::Encode(e.to_string()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::{json, Value};

    #[test]
    fn detection_follows_the_brief() {
        assert_eq!(
            Encoding::detect(None, b"  {\"a\":1}").unwrap(),
            Encoding::Json
        );
        assert_eq!(
            Encoding::detect(None, &[0x81, 0xa1]).unwrap(),
            Encoding::MsgPack
        );
        assert_eq!(
            Encoding::detect(Some("application/msgpack"), b"{").unwrap(),
            Encoding::MsgPack
        );
        assert_eq!(
            Encoding::detect(Some("application/json; charset=utf-8"), b"").unwrap(),
            Encoding::Json
        );
        assert!(Encoding::detect(Some("text/plain"), b"{}").is_err());
    }

    #[test]
    fn msgpack_uses_named_fields() {
        #[derive(Serialize)]
        struct S {
            alpha: u8,
        }
        let bytes = Encoding::MsgPack.encode(&S { alpha: 1 }).unwrap();
        let v: Value = Encoding::MsgPack.decode(&bytes).unwrap();
        assert_eq!(v, json!({"alpha": 1}));
    }

    proptest! {
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let enc = Encoding::sniff(&bytes);
            let _ = enc.decode::<Value>(&bytes);
            let _ = Encoding::Json.decode::<Value>(&bytes);
            let _ = Encoding::MsgPack.decode::<Value>(&bytes);
        }
    }
}
