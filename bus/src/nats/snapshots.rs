//! Snapshots in the KV bucket [`SNAPSHOT_BUCKET`], of any size.
//!
//! A NATS message may not exceed the server's `max_payload` (1 MiB by
//! default), and a client that sends a larger one is disconnected. A
//! snapshot that fits is one value at its stream's key; a larger one is cut
//! into parts stored under keys of their own generation (`<key>.g<seq>.p<i>`)
//! and the value at the key becomes a manifest naming them with a SHA-256 of
//! the whole. Parts are written before the manifest, so a crash mid-save
//! leaves the previous snapshot intact; the previous generation's parts are
//! deleted afterwards.

use crate::{backend, LogError, Snapshot};
use async_nats::jetstream::kv;
use bytes::Bytes;
use flotilla_messages::StreamName;
use sha2::{Digest, Sha256};

/// The KV bucket that holds snapshots.
pub const SNAPSHOT_BUCKET: &str = "FLOTILLA_SNAPSHOTS";
/// A whole snapshot in one value.
const WHOLE: u8 = 1;
/// A manifest of parts.
const MANIFEST: u8 = 2;
/// Room left in each message for headers and subject.
const HEADROOM: usize = 8 * 1024;

/// Reads and writes snapshots in the bucket.
#[derive(Clone, Debug)]
pub struct SnapshotStore {
    kv: kv::Store,
    part_size: usize,
}

/// The manifest of a snapshot stored in parts.
struct Manifest {
    generation: u64,
    parts: u32,
    length: u64,
    digest: [u8; 32],
}

impl SnapshotStore {
    /// A store in `kv` whose values stay under `max_payload` bytes.
    pub fn new(kv: kv::Store, max_payload: usize) -> Self {
        SnapshotStore {
            kv,
            part_size: max_payload.saturating_sub(HEADROOM).max(1024),
        }
    }

    /// Stores `snapshot` as the stream's latest.
    pub async fn save(&self, stream: &str, snapshot: &Snapshot) -> Result<(), LogError> {
        let key = snapshot_key(stream)?;
        let whole = encode(snapshot);
        let previous = self.manifest_at(&key).await.ok().flatten();
        let generation = if whole.len() <= self.part_size {
            self.kv.put(&key, whole.into()).await.map_err(backend)?;
            None
        } else {
            let manifest = self.save_parts(&key, snapshot.seq, &whole).await?;
            self.kv
                .put(&key, manifest.encode())
                .await
                .map_err(backend)?;
            Some(snapshot.seq)
        };
        if let Some(old) = previous.filter(|m| Some(m.generation) != generation) {
            self.delete_parts(&key, &old).await;
        }
        Ok(())
    }

    /// The stream's latest snapshot.
    pub async fn load(&self, stream: &str) -> Result<Option<Snapshot>, LogError> {
        let key = snapshot_key(stream)?;
        let Some(value) = self.kv.get(&key).await.map_err(backend)? else {
            return Ok(None);
        };
        let whole = match value.first() {
            Some(&MANIFEST) => {
                let manifest = Manifest::decode(stream, &value)?;
                self.load_parts(stream, &key, &manifest).await?
            }
            _ => value.to_vec(),
        };
        decode(stream, &whole).map(Some)
    }

    async fn save_parts(
        &self,
        key: &str,
        generation: u64,
        whole: &[u8],
    ) -> Result<Manifest, LogError> {
        let chunks: Vec<&[u8]> = whole.chunks(self.part_size).collect();
        for (i, chunk) in chunks.iter().enumerate() {
            let part = part_key(key, generation, i);
            self.kv
                .put(&part, Bytes::copy_from_slice(chunk))
                .await
                .map_err(backend)?;
        }
        Ok(Manifest {
            generation,
            parts: chunks.len() as u32,
            length: whole.len() as u64,
            digest: Sha256::digest(whole).into(),
        })
    }

    async fn load_parts(&self, stream: &str, key: &str, m: &Manifest) -> Result<Vec<u8>, LogError> {
        let mut whole = Vec::with_capacity(m.length as usize);
        for i in 0..m.parts as usize {
            let part = self
                .kv
                .get(part_key(key, m.generation, i))
                .await
                .map_err(backend)?
                .ok_or_else(|| bad(stream, &format!("part {i} of {} is missing", m.parts)))?;
            whole.extend_from_slice(&part);
        }
        let digest: [u8; 32] = Sha256::digest(&whole).into();
        if whole.len() as u64 != m.length || digest != m.digest {
            return Err(bad(stream, "its parts do not match the manifest's digest"));
        }
        Ok(whole)
    }

    async fn manifest_at(&self, key: &str) -> Result<Option<Manifest>, LogError> {
        let value = self.kv.get(key).await.map_err(backend)?;
        Ok(value
            .filter(|v| v.first() == Some(&MANIFEST))
            .and_then(|v| Manifest::decode(key, &v).ok()))
    }

    async fn delete_parts(&self, key: &str, old: &Manifest) {
        for i in 0..old.parts as usize {
            if let Err(e) = self.kv.purge(part_key(key, old.generation, i)).await {
                tracing::warn!(%key, error = %e, "old snapshot part not deleted");
            }
        }
    }
}

impl Manifest {
    fn encode(&self) -> Bytes {
        let mut out = vec![MANIFEST];
        out.extend_from_slice(&self.generation.to_be_bytes());
        out.extend_from_slice(&self.parts.to_be_bytes());
        out.extend_from_slice(&self.length.to_be_bytes());
        out.extend_from_slice(&self.digest);
        out.into()
    }

    fn decode(stream: &str, bytes: &[u8]) -> Result<Self, LogError> {
        if bytes.len() != 1 + 8 + 4 + 8 + 32 {
            return Err(bad(stream, "malformed manifest"));
        }
        let u64_at = |i: usize| u64::from_be_bytes(bytes[i..i + 8].try_into().expect("8 bytes"));
        Ok(Manifest {
            generation: u64_at(1),
            parts: u32::from_be_bytes(bytes[9..13].try_into().expect("4 bytes")),
            length: u64_at(13),
            digest: bytes[21..53].try_into().expect("32 bytes"),
        })
    }
}

fn part_key(key: &str, generation: u64, i: usize) -> String {
    format!("{key}.g{generation}.p{i}")
}

fn bad(stream: &str, reason: &str) -> LogError {
    LogError::BadSnapshot {
        stream: stream.to_string(),
        reason: reason.to_string(),
    }
}

/// The KV key of a stream's snapshot: the name with `/` as `.`.
fn snapshot_key(stream: &str) -> Result<String, LogError> {
    stream
        .parse::<StreamName>()
        .map_err(|e| LogError::Invalid(e.to_string()))?;
    Ok(stream.replace('/', "."))
}

/// `[version][seq: u64 BE][checksum length: u32 BE][checksum][state]`.
fn encode(s: &Snapshot) -> Vec<u8> {
    let mut out = Vec::with_capacity(13 + s.checksum.len() + s.state.len());
    out.push(WHOLE);
    out.extend_from_slice(&s.seq.to_be_bytes());
    out.extend_from_slice(&(s.checksum.len() as u32).to_be_bytes());
    out.extend_from_slice(s.checksum.as_bytes());
    out.extend_from_slice(&s.state);
    out
}

fn decode(stream: &str, bytes: &[u8]) -> Result<Snapshot, LogError> {
    let (&version, rest) = bytes.split_first().ok_or_else(|| bad(stream, "empty"))?;
    if version != WHOLE || rest.len() < 12 {
        return Err(bad(stream, "unknown encoding"));
    }
    let seq = u64::from_be_bytes(rest[..8].try_into().expect("8 bytes"));
    let len = u32::from_be_bytes(rest[8..12].try_into().expect("4 bytes")) as usize;
    let rest = &rest[12..];
    let checksum = rest.get(..len).ok_or_else(|| bad(stream, "truncated"))?;
    let checksum =
        std::str::from_utf8(checksum).map_err(|_| bad(stream, "checksum is not text"))?;
    Ok(Snapshot {
        seq,
        checksum: checksum.to_string(),
        state: rest[len..].to_vec(),
    })
}
