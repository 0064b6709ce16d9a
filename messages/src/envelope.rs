//! The envelope: one stored event, checksummed and hash-chained.
//!
//! `{id, stream, seq, type, at, causation_id, correlation_id, checksum, prev_hash, payload}`
//!
//! `checksum` is the SHA-256 of every other field (with `prev_hash`; `seq`
//! and `at`, in microseconds since the epoch, as little-endian u64), so a
//! flipped byte anywhere in the record is caught; `prev_hash` is the checksum
//! of the previous event of the same stream ([`GENESIS_HASH`] for seq 1), so
//! a record rewritten with a fresh checksum, a removed event or a reordered
//! one breaks the chain at the next event. The checksum is computed over a
//! length-prefixed framing of the fields and the payload's canonical JSON
//! text, so it does not depend on the wire encoding: the same event hashes
//! the same in sled, in JetStream, in JSON and in MessagePack.

use chrono::{DateTime, Utc};
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
    pub at: DateTime<Utc>,
    /// The command (or event) that caused it: the command id.
    pub causation_id: String,
    /// The conversation it belongs to.
    pub correlation_id: String,
    /// SHA-256 (hex) of every other field, see the module docs.
    pub checksum: String,
    /// The checksum of the stream's previous event.
    pub prev_hash: String,
    /// The event body.
    pub payload: Payload,
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
}

impl PendingEvent {
    /// Gives the event its position and computes its checksum.
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
        };
        env.checksum = env.compute_checksum();
        env
    }
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
