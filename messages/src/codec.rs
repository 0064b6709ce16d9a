//! JSON and MessagePack, the two encodings every subject and endpoint accepts.
//!
//! The `Content-Type` header decides (`application/json`,
//! `application/msgpack`, and any structured `+json` type such as
//! `application/vnd.api+json`, RFC 6839). On NATS a message without one is
//! sniffed: a body whose first non-blank byte is `{` is JSON and anything
//! else is MessagePack ([`Encoding::detect`]). HTTP never sniffs
//! ([`Encoding::declared`]): a body there must say what it is. A reply is written in the
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
    /// An HTTP body came without a `Content-Type`.
    #[error("the body has no Content-Type: send application/json or application/msgpack")]
    MissingContentType,
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

    /// The encoding a `Content-Type` header names, without regard to case
    /// or the blanks around it; parameters such as `; charset=utf-8` are
    /// ignored, and any `type/subtype+json` is JSON (RFC 6839).
    pub fn from_content_type(value: &str) -> Result<Self, CodecError> {
        let unsupported = || CodecError::UnsupportedContentType(value.to_string());
        let essence = value
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        let (kind, subtype) = essence.split_once('/').ok_or_else(unsupported)?;
        if !is_token(kind) || !is_token(subtype) {
            return Err(unsupported());
        }
        match (kind, subtype) {
            ("application" | "text", "json") => Ok(Encoding::Json),
            ("application", "msgpack" | "x-msgpack" | "vnd.msgpack") => Ok(Encoding::MsgPack),
            (_, s) if s.len() > "+json".len() && s.ends_with("+json") => Ok(Encoding::Json),
            _ => Err(unsupported()),
        }
    }

    /// The encoding an HTTP request declares: a `Content-Type` is required,
    /// as CarlaRL's FastAPI requires it (HTTP never sniffs).
    pub fn declared(content_type: Option<&str>) -> Result<Self, CodecError> {
        match content_type {
            Some(ct) if !ct.trim().is_empty() => Self::from_content_type(ct),
            _ => Err(CodecError::MissingContentType),
        }
    }

    /// The brief's detection rule for NATS: the header if present, else
    /// sniff the body.
    pub fn detect(content_type: Option<&str>, body: &[u8]) -> Result<Self, CodecError> {
        match Self::declared(content_type) {
            Err(CodecError::MissingContentType) => Ok(Self::sniff(body)),
            declared => declared,
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

/// Whether `s` is an HTTP token (RFC 9110 §5.6.2), as a media type's
/// type and subtype must be.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
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
        assert_eq!(
            Encoding::declared(None),
            Err(CodecError::MissingContentType)
        );
        assert_eq!(
            Encoding::declared(Some(" ")),
            Err(CodecError::MissingContentType)
        );
    }

    #[test]
    fn structured_json_suffixes_are_json() {
        for ct in [
            "application/vnd.api+json",
            "application/problem+json; charset=utf-8",
            "Application/LD+JSON",
        ] {
            assert_eq!(Encoding::from_content_type(ct), Ok(Encoding::Json), "{ct}");
        }
        for ct in [
            "application/+json",
            "application/json+xml",
            "application/ json",
            "json",
            "/json",
        ] {
            assert!(Encoding::from_content_type(ct).is_err(), "{ct}");
        }
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

    /// `s` with each letter's case drawn from `flips`.
    fn recase(s: &str, flips: &[bool]) -> String {
        s.chars()
            .zip(flips.iter().cycle())
            .map(|(c, up)| if *up { c.to_ascii_uppercase() } else { c })
            .collect()
    }

    /// A media type with random case, blanks and parameters around `essence`.
    fn dressed() -> impl Strategy<Value = (Vec<bool>, String, String, String)> {
        (
            proptest::collection::vec(any::<bool>(), 1..16),
            "[ \t]{0,3}",
            "[ \t]{0,3}",
            proptest::option::of("[a-z]{1,8}=[A-Za-z0-9-]{0,8}").prop_map(|p| match p {
                Some(p) => format!(";{p}"),
                None => String::new(),
            }),
        )
    }

    proptest! {
        #[test]
        fn media_types_parse_whatever_the_case_blanks_and_parameters(
            (flips, before, after, params) in dressed(),
            which in 0usize..6,
            vendor in "[a-z][a-z0-9.-]{0,12}",
        ) {
            let (essence, expected) = match which {
                0 => ("application/json".to_string(), Encoding::Json),
                1 => ("text/json".to_string(), Encoding::Json),
                2 => (format!("application/{vendor}+json"), Encoding::Json),
                3 => (format!("text/{vendor}+json"), Encoding::Json),
                4 => ("application/msgpack".to_string(), Encoding::MsgPack),
                _ => ("application/x-msgpack".to_string(), Encoding::MsgPack),
            };
            let header = format!("{before}{}{after}{params}", recase(&essence, &flips));
            prop_assert_eq!(Encoding::from_content_type(&header), Ok(expected));
            prop_assert_eq!(Encoding::declared(Some(&header)), Ok(expected));
            // A declared type wins over what the body looks like.
            prop_assert_eq!(Encoding::detect(Some(&header), b"{}"), Ok(expected));
        }

        #[test]
        fn other_media_types_are_refused_and_never_sniffed(
            (flips, before, after, params) in dressed(),
            kind in "(text|application|image|multipart)",
            subtype in "[a-z][a-z0-9.-]{0,12}",
        ) {
            prop_assume!(!["json", "msgpack", "x-msgpack", "vnd.msgpack"].contains(&subtype.as_str()));
            let header = format!("{before}{}{after}{params}", recase(&format!("{kind}/{subtype}"), &flips));
            prop_assert!(matches!(
                Encoding::from_content_type(&header),
                Err(CodecError::UnsupportedContentType(_))
            ));
            let sniffed = Encoding::detect(Some(&header), b"{}");
            prop_assert!(sniffed.is_err(), "{:?} for {}", sniffed, header);
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let enc = Encoding::sniff(&bytes);
            let _ = enc.decode::<Value>(&bytes);
            let _ = Encoding::Json.decode::<Value>(&bytes);
            let _ = Encoding::MsgPack.decode::<Value>(&bytes);
        }
    }
}
