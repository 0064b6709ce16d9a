//! The envelope: one stored event, checksummed and hash-chained.
//!
//! `{id, stream, seq, type, at, causation_id, correlation_id, checksum, prev_hash, payload, principal, signature}`
//!
//! `checksum` is the SHA-256 of every other field but `signature` (with `prev_hash`; `seq`
//! and `at`, in microseconds since the epoch, as little-endian u64), so a
//! flipped byte anywhere in the record is caught; `prev_hash` is the checksum
//! of the previous event of the same stream ([`GENESIS_HASH`] for seq 1), so
//! a record rewritten with a fresh checksum, a removed event or a reordered
//! one breaks the chain at the next event. The checksum is computed over a
//! length-prefixed framing of the fields and the payload's canonical JSON
//! text, so it does not depend on the wire encoding: the same event hashes
//! the same in sled, in JetStream, in JSON and in MessagePack.
//!
//! The checksum has no key, so anyone who can write the log could forge a
//! well-chained event. The control plane therefore also signs each event it
//! appends: `signature` is an Ed25519 signature (hex) of the checksum with a
//! key only the control plane holds, and readers that have its public key
//! tell its events from forged ones. Events written before signing existed
//! carry no `signature` and still decode ("unsigned").
//!
//! `principal` names who caused the event (see `crate::auth`): the token or
//! key the command came with, or `flotilla` for what the control plane did
//! by itself. It is covered by the checksum (and so by the signature) when
//! present; events written before attribution have none, and their checksum
//! is computed exactly as it was then, so old logs still verify.

use chrono::{DateTime, Utc};
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};
use std::fmt;
use std::sync::Arc;

/// The `prev_hash` of a stream's first event.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// An event's body as canonical JSON text (keys sorted, shortest floats).
///
/// Kept as text so that the checksum is computed over exactly the bytes that
/// were stored, without re-encoding on every replay.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Payload(Arc<str>);

impl Payload {
    /// The canonical text of `value`.
    pub fn from_value(value: &serde_json::Value) -> Self {
        Payload(Arc::from(value.to_string()))
    }

    /// Encodes a typed event. Fails only for values JSON cannot hold
    /// (non-finite floats, non-string map keys).
    pub fn encode<T: Serialize>(value: &T) -> Result<Self, serde_json::Error> {
        Ok(Self::from_value(&serde_json::to_value(value)?))
    }

    /// Wraps text that is already canonical JSON (as read back from a log).
    pub fn from_canonical_text(text: impl Into<Arc<str>>) -> Self {
        Payload(text.into())
    }

    /// The canonical JSON text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The payload as a JSON value.
    pub fn to_value(&self) -> serde_json::Value {
        serde_json::from_str(&self.0).unwrap_or(serde_json::Value::Null)
    }

    /// Decodes the payload into a typed event.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_str(&self.0)
    }
}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for Payload {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.to_value().serialize(s)
    }
}

impl<'de> Deserialize<'de> for Payload {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(d)?;
        Ok(Payload::from_value(&value))
    }
}

/// A stored event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Envelope {
    /// Unique event id (a UUID); JetStream's `Nats-Msg-Id`.
    pub id: String,
    /// The aggregate's stream, `<actor>/<id>`.
    pub stream: String,
    /// Position in the stream, from 1, without gaps.
    pub seq: u64,
    /// The event type, snake_case (the payload's `type`).
    #[serde(rename = "type")]
    pub event_type: String,
    /// When the host stored it (UTC, microseconds).
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub at: DateTime<Utc>,
    /// The command (or event) that caused it: the command id.
    pub causation_id: String,
    /// The conversation it belongs to.
    pub correlation_id: String,
    /// SHA-256 (hex) of every other field but `signature`, see the module docs.
    pub checksum: String,
    /// The checksum of the stream's previous event.
    pub prev_hash: String,
    /// The event body.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub payload: Payload,
    /// Who caused it (see [`crate::auth`]); absent on events written before
    /// attribution existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal: Option<String>,
    /// The control plane's Ed25519 signature (hex) of `checksum`; absent on
    /// events written before signing (or by a writer without a key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
}

/// An event that the host wants to append; the log seals it with its stream
/// position ([`PendingEvent::seal`]).
#[derive(Debug, Clone, PartialEq)]
pub struct PendingEvent {
    /// Unique event id.
    pub id: String,
    /// The event type.
    pub event_type: String,
    /// When it was decided.
    pub at: DateTime<Utc>,
    /// The causing command id.
    pub causation_id: String,
    /// The conversation id.
    pub correlation_id: String,
    /// The body.
    pub payload: Payload,
    /// Who caused it.
    pub principal: Option<String>,
}

impl PendingEvent {
    /// Gives the event its position and computes its checksum (unsigned).
    pub fn seal(self, stream: &str, seq: u64, prev_hash: &str) -> Envelope {
        let mut env = Envelope {
            id: self.id,
            stream: stream.to_string(),
            seq,
            event_type: self.event_type,
            at: self.at,
            causation_id: self.causation_id,
            correlation_id: self.correlation_id,
            checksum: String::new(),
            prev_hash: prev_hash.to_string(),
            payload: self.payload,
            principal: self.principal,
            signature: None,
        };
        env.checksum = env.compute_checksum();
        env
    }

    /// Seals the event, and signs it when the writer holds a key.
    pub fn seal_signed(
        self,
        stream: &str,
        seq: u64,
        prev_hash: &str,
        key: Option<&SigningKey>,
    ) -> Envelope {
        let mut env = self.seal(stream, seq, prev_hash);
        if let Some(key) = key {
            env.signature = Some(hex::encode(
                key.sign(&signed_message(&env.checksum)).to_bytes(),
            ));
        }
        env
    }
}

/// What a signature covers: a domain tag and the checksum (which covers
/// every other field, the link to the predecessor included).
fn signed_message(checksum: &str) -> Vec<u8> {
    let mut m = b"flotilla-event-v1:".to_vec();
    m.extend_from_slice(checksum.as_bytes());
    m
}

/// A stored event that failed verification.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IntegrityError {
    /// The record's content does not match its checksum.
    #[error("stream {stream} seq {seq}: checksum mismatch (stored {stored}, computed {computed})")]
    Checksum {
        /// The stream.
        stream: String,
        /// The bad event's seq.
        seq: u64,
        /// The checksum in the record.
        stored: String,
        /// The checksum of the record's content.
        computed: String,
    },
    /// The record's `prev_hash` is not its predecessor's checksum.
    #[error("stream {stream} seq {seq}: hash chain broken (prev_hash {found}, predecessor's checksum {expected})")]
    Chain {
        /// The stream.
        stream: String,
        /// The bad event's seq.
        seq: u64,
        /// The predecessor's checksum.
        expected: String,
        /// The record's prev_hash.
        found: String,
    },
    /// A gap or a reordering: the record is not at the position it claims.
    #[error(
        "stream {stream} seq {expected}: found an event claiming stream {found_stream} seq {found}"
    )]
    Position {
        /// The stream being read.
        stream: String,
        /// The seq that should come next.
        expected: u64,
        /// The record's stream.
        found_stream: String,
        /// The record's seq.
        found: u64,
    },
    /// The record's signature is not the control plane's.
    #[error("stream {stream} seq {seq}: signature invalid (forged event?)")]
    Signature {
        /// The stream.
        stream: String,
        /// The forged event's seq.
        seq: u64,
    },
    /// An event without a signature after signed ones: only a writer without
    /// the control plane's key appends such an event.
    #[error("stream {stream} seq {seq}: unsigned event after signed ones (forged event?)")]
    Unsigned {
        /// The stream.
        stream: String,
        /// The unsigned event's seq.
        seq: u64,
    },
    /// The record cannot be decoded at all.
    #[error("stream {stream} seq {seq}: unreadable record: {reason}")]
    Unreadable {
        /// The stream.
        stream: String,
        /// The seq (or position) of the record.
        seq: u64,
        /// The decoder's message.
        reason: String,
    },
}

impl IntegrityError {
    /// The stream and seq the error names.
    pub fn location(&self) -> (&str, u64) {
        match self {
            IntegrityError::Checksum { stream, seq, .. }
            | IntegrityError::Chain { stream, seq, .. }
            | IntegrityError::Signature { stream, seq }
            | IntegrityError::Unsigned { stream, seq }
            | IntegrityError::Unreadable { stream, seq, .. } => (stream, *seq),
            IntegrityError::Position {
                stream, expected, ..
            } => (stream, *expected),
        }
    }
}

impl Envelope {
    /// The checksum this envelope's content should carry.
    pub fn compute_checksum(&self) -> String {
        hex::encode(self.digest())
    }

    /// The SHA-256 of the content (see the module docs).
    fn digest(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        let numbers = [self.seq, self.at.timestamp_micros() as u64];
        for n in numbers {
            h.update(n.to_le_bytes());
        }
        for field in [
            self.id.as_str(),
            self.stream.as_str(),
            self.event_type.as_str(),
            self.causation_id.as_str(),
            self.correlation_id.as_str(),
            self.prev_hash.as_str(),
            self.payload.as_str(),
        ] {
            h.update((field.len() as u64).to_le_bytes());
            h.update(field.as_bytes());
        }
        // Only when present, so events from before attribution hash as they did.
        if let Some(principal) = &self.principal {
            h.update(b"principal");
            h.update((principal.len() as u64).to_le_bytes());
            h.update(principal.as_bytes());
        }
        h.finalize().into()
    }

    /// Checks the checksum (without allocating on the hot replay path).
    pub fn verify(&self) -> Result<(), IntegrityError> {
        let digest = self.digest();
        let mut stored = [0u8; 32];
        let matches = hex::decode_to_slice(&self.checksum, &mut stored).is_ok() && stored == digest;
        if matches {
            Ok(())
        } else {
            Err(IntegrityError::Checksum {
                stream: self.stream.clone(),
                seq: self.seq,
                stored: self.checksum.clone(),
                computed: hex::encode(digest),
            })
        }
    }

    /// Checks the checksum and, given the control plane's public key, the
    /// signature if there is one (whether one must be there depends on the
    /// events before, see [`Envelope::verify_unsigned_after`]).
    pub fn verify_sealed(&self, key: Option<&VerifyingKey>) -> Result<(), IntegrityError> {
        self.verify()?;
        match (key, &self.signature) {
            (Some(key), Some(sig)) => self.verify_signature(key, sig),
            _ => Ok(()),
        }
    }

    fn verify_signature(&self, key: &VerifyingKey, sig: &str) -> Result<(), IntegrityError> {
        let mut bytes = [0u8; 64];
        let decoded = hex::decode_to_slice(sig, &mut bytes).is_ok();
        let valid = decoded
            && key
                .verify(
                    &signed_message(&self.checksum),
                    &Signature::from_bytes(&bytes),
                )
                .is_ok();
        if valid {
            Ok(())
        } else {
            Err(IntegrityError::Signature {
                stream: self.stream.clone(),
                seq: self.seq,
            })
        }
    }

    /// Fails for an unsigned event when the stream's earlier events were
    /// signed: once the control plane signs, every later event is signed.
    pub fn verify_unsigned_after(&self, signed_before: bool) -> Result<(), IntegrityError> {
        if signed_before && self.signature.is_none() {
            return Err(IntegrityError::Unsigned {
                stream: self.stream.clone(),
                seq: self.seq,
            });
        }
        Ok(())
    }

    /// Checks the checksum, the position (`stream`, `expected_seq`) and the
    /// link to the predecessor's checksum.
    pub fn verify_after(
        &self,
        stream: &str,
        expected_seq: u64,
        prev_checksum: &str,
    ) -> Result<(), IntegrityError> {
        self.verify_position(stream, expected_seq)?;
        self.verify()?;
        self.verify_link(stream, prev_checksum)
    }

    /// Checks that the record is at the position the reader expects.
    pub fn verify_position(&self, stream: &str, expected_seq: u64) -> Result<(), IntegrityError> {
        if self.stream != stream || self.seq != expected_seq {
            return Err(IntegrityError::Position {
                stream: stream.to_string(),
                expected: expected_seq,
                found_stream: self.stream.clone(),
                found: self.seq,
            });
        }
        Ok(())
    }

    /// Checks that `prev_hash` is the predecessor's checksum.
    pub fn verify_link(&self, stream: &str, prev_checksum: &str) -> Result<(), IntegrityError> {
        if self.prev_hash != prev_checksum {
            return Err(IntegrityError::Chain {
                stream: stream.to_string(),
                seq: self.seq,
                expected: prev_checksum.to_string(),
                found: self.prev_hash.clone(),
            });
        }
        Ok(())
    }
}

/// The current time truncated to microseconds, the precision envelopes keep.
pub fn now_micros() -> DateTime<Utc> {
    let now = Utc::now();
    DateTime::from_timestamp_micros(now.timestamp_micros()).unwrap_or(now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Encoding;
    use proptest::prelude::*;
    use serde_json::json;

    fn pending(payload: serde_json::Value) -> PendingEvent {
        PendingEvent {
            id: "e1".into(),
            event_type: "study_created".into(),
            at: now_micros(),
            causation_id: "c1".into(),
            correlation_id: "c1".into(),
            payload: Payload::from_value(&payload),
            principal: None,
        }
    }

    #[test]
    fn sealed_envelopes_verify_and_chain() {
        let a = pending(json!({"type": "x", "n": 1})).seal("solver/s", 1, GENESIS_HASH);
        let b = pending(json!({"type": "x", "n": 2})).seal("solver/s", 2, &a.checksum);
        assert!(a.verify_after("solver/s", 1, GENESIS_HASH).is_ok());
        assert!(b.verify_after("solver/s", 2, &a.checksum).is_ok());
        let wrong = b.verify_after("solver/s", 2, GENESIS_HASH).unwrap_err();
        assert_eq!(wrong.location(), ("solver/s", 2));
        let mut tampered = b.clone();
        tampered.payload = Payload::from_value(&json!({"type": "x", "n": 3}));
        assert!(matches!(
            tampered.verify(),
            Err(IntegrityError::Checksum { seq: 2, .. })
        ));
    }

    #[test]
    fn only_the_control_planes_key_signs_a_valid_event() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let forger = SigningKey::from_bytes(&[8; 32]);
        let public = key.verifying_key();
        let signed =
            pending(json!({"type": "x"})).seal_signed("solver/s", 1, GENESIS_HASH, Some(&key));
        assert!(signed.verify_sealed(Some(&public)).is_ok());
        let forged =
            pending(json!({"type": "x"})).seal_signed("solver/s", 1, GENESIS_HASH, Some(&forger));
        assert_eq!(
            forged.verify_sealed(Some(&public)),
            Err(IntegrityError::Signature {
                stream: "solver/s".into(),
                seq: 1
            })
        );
        let unsigned = pending(json!({"type": "x"})).seal("solver/s", 2, &signed.checksum);
        assert!(unsigned.verify_sealed(Some(&public)).is_ok());
        assert!(unsigned.verify_unsigned_after(false).is_ok());
        assert!(matches!(
            unsigned.verify_unsigned_after(true),
            Err(IntegrityError::Unsigned { seq: 2, .. })
        ));
    }

    #[test]
    fn an_envelope_written_before_signing_still_decodes_as_unsigned() {
        let env = pending(json!({"type": "x"})).seal("solver/s", 1, GENESIS_HASH);
        let mut old = serde_json::to_value(&env).unwrap();
        assert!(old.get("signature").is_none(), "no field when unsigned");
        old.as_object_mut().unwrap().remove("signature");
        let back: Envelope = serde_json::from_value(old).unwrap();
        assert_eq!(back.signature, None);
        assert!(back.verify().is_ok());
    }

    /// An event as a log from before attribution holds it: no `principal`
    /// field. Its checksum was computed by an independent implementation of
    /// the framing in the module docs (Python's hashlib), so a change that
    /// altered how old events hash would fail here.
    #[test]
    fn an_envelope_written_before_attribution_verifies_unchanged() {
        let old = json!({
            "id": "0190e1a2-0000-7000-8000-000000000001", "stream": "solver/s1", "seq": 3,
            "type": "trials_told", "at": "2026-11-01T12:00:00.123456Z",
            "causation_id": "k1", "correlation_id": "k1",
            "checksum": "fdd8fae27e0b811a9c0c853b77f4dacdb0226269e2f0aaf72e080480bb99c643",
            "prev_hash": "0".repeat(64), "payload": {"type": "trials_told"},
        });
        let env: Envelope = serde_json::from_value(old).unwrap();
        assert_eq!(env.principal, None);
        assert!(env.verify().is_ok(), "{:?}", env.verify());
        let mut attributed = env.clone();
        attributed.principal = Some("alice".into());
        assert!(
            attributed.verify().is_err(),
            "the principal is covered by the checksum"
        );
    }

    proptest! {
        #[test]
        fn envelopes_round_trip_in_both_encodings(
            n in any::<i64>(), x in -1e300f64..1e300, s in ".{0,20}", seq in 1u64..u64::MAX
        ) {
            let env = pending(json!({"type": "t", "n": n, "x": x, "s": s})).seal("solver/p", seq, GENESIS_HASH);
            for enc in [Encoding::Json, Encoding::MsgPack] {
                let bytes = enc.encode(&env).unwrap();
                let back: Envelope = enc.decode(&bytes).unwrap();
                prop_assert_eq!(&back, &env);
                prop_assert!(back.verify().is_ok());
            }
        }
    }
}
