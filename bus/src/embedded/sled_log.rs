//! The event log in sled.
//!
//! One tree holds the events. Each append is stored as *blocks* of up to
//! [`BLOCK_EVENTS`] records (MessagePack), so a batch costs few sled inserts
//! and a replay decodes many events per lookup:
//!
//! | key | value |
//! |---|---|
//! | `s` stream `\0` first seq (u64 BE) | the block: the batch's records |
//! | `g` first global position (u64 BE) | the block's `s` key |
//! | `h` stream | head: seq (u64 BE) + checksum |
//! | `n` | next global position (u64 BE) |
//!
//! A batch is written with one `apply_batch`, which sled applies atomically,
//! and then flushed. Flushes are shared: a dedicated thread flushes whatever
//! was written since the last flush and wakes every appender waiting for it,
//! so concurrent appends amortise the fsync (group commit). Snapshots live in
//! a second tree.

use crate::{
    backend, check_stream_name, seal_batch, ChainVerifier, CheckedBatch, EventLog, EventStream,
    LogError, LogKeys, Positioned, PositionedStream, Snapshot, StreamHead,
};
use async_trait::async_trait;
use chrono::DateTime;
use flotilla_messages::{Envelope, IntegrityError, Payload};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::ops::RangeInclusive;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Mutex, Notify};

/// The stored form of an envelope: compact, with the payload's canonical
/// JSON text kept as is so that verification hashes the stored bytes.
#[derive(Serialize, Deserialize)]
struct StoredRecord {
    id: String,
    stream: String,
    seq: u64,
    event_type: String,
    at_micros: i64,
    causation_id: String,
    correlation_id: String,
    checksum: String,
    prev_hash: String,
    payload: String,
    /// Last, and defaulted, so blocks written before signing still decode.
    #[serde(default)]
    signature: Option<String>,
    /// After `signature`, and defaulted, so blocks written before
    /// attribution still decode.
    #[serde(default)]
    principal: Option<String>,
}

impl StoredRecord {
    fn from_envelope(e: &Envelope) -> Self {
        StoredRecord {
            id: e.id.clone(),
            stream: e.stream.clone(),
            seq: e.seq,
            event_type: e.event_type.clone(),
            at_micros: e.at.timestamp_micros(),
            causation_id: e.causation_id.clone(),
            correlation_id: e.correlation_id.clone(),
            checksum: e.checksum.clone(),
            prev_hash: e.prev_hash.clone(),
            payload: e.payload.as_str().to_string(),
            signature: e.signature.clone(),
            principal: e.principal.clone(),
        }
    }

    fn into_envelope(self) -> Envelope {
        Envelope {
            id: self.id,
            stream: self.stream,
            seq: self.seq,
            event_type: self.event_type,
            at: DateTime::from_timestamp_micros(self.at_micros).unwrap_or_default(),
            causation_id: self.causation_id,
            correlation_id: self.correlation_id,
            checksum: self.checksum,
            prev_hash: self.prev_hash,
            payload: Payload::from_canonical_text(self.payload),
            signature: self.signature,
            principal: self.principal,
        }
    }
}

fn stream_prefix(stream: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(stream.len() + 10);
    k.push(b's');
    k.extend_from_slice(stream.as_bytes());
    k.push(0);
    k
}

fn stream_key(stream: &str, seq: u64) -> Vec<u8> {
    let mut k = stream_prefix(stream);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

fn global_key(position: u64) -> [u8; 9] {
    let mut k = [b'g'; 9];
    k[1..].copy_from_slice(&position.to_be_bytes());
    k
}

fn head_key(stream: &str) -> Vec<u8> {
    let mut k = vec![b'h'];
    k.extend_from_slice(stream.as_bytes());
    k
}

const NEXT_POSITION_KEY: &[u8] = b"n";

fn encode_head(head: &StreamHead) -> Vec<u8> {
    let mut v = head.seq.to_be_bytes().to_vec();
    v.extend_from_slice(head.checksum.as_bytes());
    v
}

fn decode_head(stream: &str, bytes: &[u8]) -> Result<StreamHead, LogError> {
    let bad = || {
        LogError::Corrupt(IntegrityError::Unreadable {
            stream: stream.to_string(),
            seq: 0,
            reason: "unreadable stream head".into(),
        })
    };
    let seq = u64::from_be_bytes(
        bytes
            .get(..8)
            .ok_or_else(bad)?
            .try_into()
            .map_err(|_| bad())?,
    );
    let checksum = std::str::from_utf8(&bytes[8..]).map_err(|_| bad())?;
    Ok(StreamHead {
        seq,
        checksum: checksum.to_string(),
    })
}

fn be_u64(bytes: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    let n = bytes.len().min(8);
    b[..n].copy_from_slice(&bytes[..n]);
    u64::from_be_bytes(b)
}

fn unreadable(stream: &str, seq: u64, reason: impl std::fmt::Display) -> LogError {
    LogError::Corrupt(IntegrityError::Unreadable {
        stream: stream.to_string(),
        seq,
        reason: reason.to_string(),
    })
}

/// Decodes a block whose first event should be `first_seq`.
fn decode_block(stream: &str, first_seq: u64, bytes: &[u8]) -> Result<Vec<Envelope>, LogError> {
    let records: Vec<StoredRecord> =
        rmp_serde::from_slice(bytes).map_err(|e| unreadable(stream, first_seq, e))?;
    Ok(records
        .into_iter()
        .map(StoredRecord::into_envelope)
        .collect())
}

/// How many records a block holds, read from its MessagePack array header
/// without decoding them (0 if unreadable: its read reports why).
fn block_len(block: &[u8]) -> u64 {
    rmp::decode::read_array_len(&mut &block[..]).map_or(0, u64::from)
}

/// The first seq (or position) encoded at the end of a block key.
fn key_suffix(key: &[u8]) -> u64 {
    be_u64(&key[key.len().saturating_sub(8)..])
}

/// Shares fsyncs between concurrent appenders.
struct GroupCommit {
    written: std::sync::atomic::AtomicU64,
    wake: Notify,
    flushed: watch::Sender<Result<u64, String>>,
}

impl GroupCommit {
    fn start(db: sled::Db, watermark: Watermark) -> Arc<Self> {
        let gc = Arc::new(GroupCommit {
            written: 0.into(),
            wake: Notify::new(),
            flushed: watch::channel(Ok(0)).0,
        });
        let weak = Arc::downgrade(&gc);
        std::thread::Builder::new()
            .name("sled-group-commit".into())
            .spawn(move || Self::run(weak, db, watermark))
            .expect("spawn the group-commit thread");
        gc
    }

    fn run(gc: std::sync::Weak<Self>, db: sled::Db, watermark: Watermark) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime");
        loop {
            let Some(gc) = gc.upgrade() else { return };
            let target = gc.written.load(std::sync::atomic::Ordering::Acquire);
            let done = match &*gc.flushed.borrow() {
                Ok(d) => *d,
                Err(_) => return,
            };
            if target > done {
                // Read the last position before flushing: all of it is then durable.
                let last = last_position(&db);
                let outcome = db.flush().map(|_| target).map_err(|e| e.to_string());
                if let (Ok(_), Ok(last)) = (&outcome, last) {
                    watermark.record(last);
                }
                let _ = gc.flushed.send_replace(outcome);
                continue;
            }
            // Wait for a writer, but wake now and then to notice a drop.
            rt.block_on(async {
                let _ = tokio::time::timeout(Duration::from_millis(200), gc.wake.notified()).await;
            });
        }
    }

    /// The flush failure that stopped the log, if any. After one, nothing
    /// more is written: what is in sled's memory may never reach the disk.
    fn failure(&self) -> Option<String> {
        self.flushed.borrow().as_ref().err().cloned()
    }

    /// Waits until everything written so far is on disk.
    async fn wait_durable(&self) -> Result<(), LogError> {
        let ticket = self
            .written
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel)
            + 1;
        self.wake.notify_one();
        let mut rx = self.flushed.subscribe();
        loop {
            match &*rx.borrow_and_update() {
                Ok(done) if *done >= ticket => return Ok(()),
                Ok(_) => {}
                Err(e) => return Err(LogError::Backend(format!("flush failed: {e}"))),
            }
            rx.changed()
                .await
                .map_err(|_| backend("group commit stopped"))?;
        }
    }
}

/// The last durable global position, kept in a small file beside sled.
///
/// sled checks its own records, but when it finds a damaged one while
/// recovering it treats it as the torn end of its log and silently drops it
/// and everything after. The watermark turns that into an error: a log that
/// ends before the last position we acknowledged refuses to open.
#[derive(Clone)]
struct Watermark {
    path: std::path::PathBuf,
}

impl Watermark {
    const FILE: &'static str = "flotilla-watermark";

    fn new(dir: &Path) -> Self {
        Watermark {
            path: dir.join(Self::FILE),
        }
    }

    /// The recorded position; `None` when there is no file yet. A file that
    /// does not decode, or whose checksum fails, is an error: treating it as
    /// absent would silently switch the guard off.
    fn read(&self) -> Result<Option<u64>, LogError> {
        let text = match std::fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.damaged(format!("cannot read it: {e}"))),
        };
        let text = String::from_utf8(text).map_err(|_| self.damaged("not text".into()))?;
        decode_watermark(text.trim())
            .map(Some)
            .map_err(|reason| self.damaged(reason))
    }

    fn damaged(&self, reason: String) -> LogError {
        LogError::Damaged {
            file: self.path.clone(),
            offset: None,
            reason,
        }
    }

    /// Records `position` (write to a temp file, then rename over).
    fn record(&self, position: u64) {
        let tmp = self.path.with_extension("tmp");
        let written = std::fs::write(&tmp, encode_watermark(position))
            .and_then(|_| std::fs::rename(&tmp, &self.path));
        if let Err(e) = written {
            tracing::warn!(error = %e, "cannot record the log's watermark");
        }
    }

    /// Fails if the log ends before the watermark, or if the watermark is
    /// gone while the log holds events. A new log gets its watermark (0)
    /// here, before any append, so a missing one is never a crash's doing.
    fn check(&self, db: &sled::Db) -> Result<(), LogError> {
        let found = last_position(db)?;
        let Some(acknowledged) = self.read()? else {
            if found > 0 {
                return Err(self.damaged(format!(
                    "missing, but the log holds events up to position {found}: \
                     without it a truncation goes unnoticed"
                )));
            }
            self.record(0);
            return Ok(());
        };
        if found < acknowledged {
            return Err(LogError::Truncated {
                acknowledged,
                found,
            });
        }
        Ok(())
    }
}

/// The first line of a watermark file of this format.
const WATERMARK_V1: &str = "flotilla-watermark v1";

/// The checksum of a watermark: the first 16 hex digits of the SHA-256 of
/// its position, so a flipped digit cannot pass as another position.
fn watermark_checksum(position: u64) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(format!("{WATERMARK_V1} {position}"));
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// `position` as a watermark file: `flotilla-watermark v1 <position> <checksum>`.
fn encode_watermark(position: u64) -> String {
    format!(
        "{WATERMARK_V1} {position} {}\n",
        watermark_checksum(position)
    )
}

/// The position in a watermark file's text, strictly: the v1 format with
/// a matching checksum, or a bare number (the format before checksums).
fn decode_watermark(text: &str) -> Result<u64, String> {
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return text.parse().map_err(|e| format!("bad position: {e}"));
    }
    let rest = text
        .strip_prefix(WATERMARK_V1)
        .ok_or_else(|| format!("not a watermark (expected {WATERMARK_V1:?})"))?;
    let (position, checksum) = rest
        .trim()
        .split_once(' ')
        .ok_or_else(|| "no checksum".to_string())?;
    let position: u64 = position
        .parse()
        .map_err(|e| format!("bad position {position:?}: {e}"))?;
    if checksum != watermark_checksum(position) {
        return Err(format!("checksum mismatch for position {position}"));
    }
    Ok(position)
}

/// The last global position stored (0 when empty).
fn last_position(db: &sled::Db) -> Result<u64, LogError> {
    let events = db.open_tree("events").map_err(backend)?;
    Ok(events
        .get(NEXT_POSITION_KEY)
        .map_err(backend)?
        .map(|b| be_u64(&b).saturating_sub(1))
        .unwrap_or(0))
}

/// Opens sled in `dir`. Damage sled notices is [`LogError::Damaged`] naming
/// the file and offset; damage that makes sled panic while it recovers
/// (a log cut short in the middle of a segment) is caught and reported the
/// same way, without an offset, instead of ending the process.
fn open_db(dir: &Path) -> Result<sled::Db, LogError> {
    let config = sled::Config::new()
        .path(dir)
        .mode(sled::Mode::HighThroughput)
        .cache_capacity(CACHE_BYTES);
    let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| config.open()));
    let log_file = dir.join("db");
    match opened {
        Ok(Ok(db)) => Ok(db),
        Ok(Err(sled::Error::Corruption { at, .. })) => Err(LogError::Damaged {
            file: log_file,
            offset: at.map(|ptr| ptr.lid()),
            reason: "sled found a damaged record".into(),
        }),
        Ok(Err(sled::Error::Io(io)))
            if io.kind() == std::io::ErrorKind::WouldBlock
                || io.to_string().contains("could not acquire lock") =>
        {
            Err(LogError::InUse {
                dir: dir.to_path_buf(),
            })
        }
        Ok(Err(other)) => Err(LogError::Backend(format!(
            "cannot open event log in {}: {other}",
            dir.display()
        ))),
        Err(panic) => Err(LogError::Damaged {
            file: log_file,
            offset: None,
            reason: format!("sled cannot recover it: {}", panic_message(&*panic)),
        }),
    }
}

/// The text of a caught panic.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "it panicked".into())
}

/// The sled-backed [`EventLog`]. Cheap to clone; clones share the database.
#[derive(Clone)]
pub struct SledLog {
    db: sled::Db,
    events: sled::Tree,
    snapshots: sled::Tree,
    write_lock: Arc<Mutex<()>>,
    group_commit: Arc<GroupCommit>,
    appended: Arc<Notify>,
    keys: LogKeys,
}

/// sled's page cache, in bytes. sled's own default (1 GiB) lets a busy log
/// take a gigabyte of RSS; reads past the cache cost a disk read, which the
/// OS page cache usually serves.
const CACHE_BYTES: u64 = 64 * 1024 * 1024;

impl SledLog {
    /// Opens (or creates) the log in `dir`. Fails clearly if another process
    /// holds it, or if it ends before the last position it acknowledged.
    pub fn open(dir: &Path) -> Result<Self, LogError> {
        let db = open_db(dir)?;
        let watermark = Watermark::new(dir);
        watermark.check(&db)?;
        let events = db.open_tree("events").map_err(backend)?;
        let snapshots = db.open_tree("snapshots").map_err(backend)?;
        Ok(SledLog {
            group_commit: GroupCommit::start(db.clone(), watermark),
            db,
            events,
            snapshots,
            write_lock: Arc::new(Mutex::new(())),
            appended: Arc::new(Notify::new()),
            keys: LogKeys::default(),
        })
    }

    /// Signs appends and checks reads with `keys`.
    pub fn with_keys(mut self, keys: LogKeys) -> Self {
        self.keys = keys;
        self
    }

    /// A verifier of `stream` after `head`, checking signatures with the log's key.
    fn verifier(&self, stream: &str, head: StreamHead, signed_before: bool) -> ChainVerifier {
        ChainVerifier::new(stream, head).with_key(self.keys.verifying(), signed_before)
    }

    /// How much space the database takes on disk, in bytes.
    pub fn size_on_disk(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0)
    }

    fn head_sync(&self, stream: &str) -> Result<StreamHead, LogError> {
        match self.events.get(head_key(stream)).map_err(backend)? {
            Some(bytes) => decode_head(stream, &bytes),
            None => Ok(StreamHead::empty()),
        }
    }

    /// The key of the block of `stream` that holds `seq` (the last block
    /// starting at or before it), if any.
    fn locate(&self, stream: &str, seq: u64) -> Result<Option<sled::IVec>, LogError> {
        let prefix = stream_prefix(stream);
        let found = self
            .events
            .range(prefix.clone()..=stream_key(stream, seq))
            .next_back()
            .transpose()
            .map_err(backend)?;
        Ok(found.map(|(k, _)| k))
    }

    /// The blocks of `stream` from the one holding `from_seq` on, as stored,
    /// until about `limit` events are covered.
    fn raw_blocks_from(
        &self,
        stream: &str,
        from_seq: u64,
        limit: usize,
    ) -> Result<Vec<(u64, sled::IVec)>, LogError> {
        let start = match self.locate(stream, from_seq)? {
            Some(k) => k.to_vec(),
            None => stream_key(stream, from_seq),
        };
        let mut out = Vec::new();
        for item in self.events.range(start..=stream_key(stream, u64::MAX)) {
            let (key, block) = item.map_err(backend)?;
            let first = key_suffix(&key);
            if !out.is_empty() && first.saturating_sub(from_seq) >= limit as u64 {
                break;
            }
            out.push((first, block));
        }
        Ok(out)
    }

    /// The events of `stream` from the block holding `from_seq` on, up to
    /// about `limit` events (whole blocks), unverified.
    fn blocks_from(
        &self,
        stream: &str,
        from_seq: u64,
        limit: usize,
    ) -> Result<Vec<Envelope>, LogError> {
        let mut out = Vec::new();
        for (first, block) in self.raw_blocks_from(stream, from_seq, limit)? {
            out.extend(decode_block(stream, first, &block)?);
        }
        Ok(out)
    }

    fn get_sync(&self, stream: &str, seq: u64) -> Result<Option<Envelope>, LogError> {
        let events = self.blocks_from(stream, seq, 1)?;
        Ok(events.into_iter().find(|e| e.seq == seq))
    }

    /// The stored events right after `expected` if their ids are `ids`
    /// (a retried append), else `None`.
    fn already_stored(
        &self,
        stream: &str,
        expected: u64,
        ids: &[&str],
    ) -> Result<Option<Vec<Envelope>>, LogError> {
        let stored: Vec<Envelope> = self
            .blocks_from(stream, expected + 1, ids.len())?
            .into_iter()
            .filter(|e| e.seq > expected)
            .take(ids.len())
            .collect();
        let same = stored.len() == ids.len() && stored.iter().zip(ids).all(|(e, id)| e.id == *id);
        Ok(same.then_some(stored))
    }

    /// Writes a sealed batch as blocks of at most [`BLOCK_EVENTS`] events,
    /// with the head and the next position, in one atomic sled batch.
    fn write_batch(&self, stream: &str, envelopes: &[Envelope]) -> Result<(), LogError> {
        let Some(last) = envelopes.last() else {
            return Ok(());
        };
        let mut position = self
            .events
            .get(NEXT_POSITION_KEY)
            .map_err(backend)?
            .map(|b| be_u64(&b))
            .unwrap_or(1);
        let mut batch = sled::Batch::default();
        for block in envelopes.chunks(BLOCK_EVENTS) {
            let records: Vec<StoredRecord> =
                block.iter().map(StoredRecord::from_envelope).collect();
            let key = stream_key(stream, block[0].seq);
            batch.insert(global_key(position).to_vec(), key.clone());
            batch.insert(key, rmp_serde::to_vec(&records).map_err(backend)?);
            position += block.len() as u64;
        }
        let head = StreamHead {
            seq: last.seq,
            checksum: last.checksum.clone(),
        };
        batch.insert(head_key(stream), encode_head(&head));
        batch.insert(NEXT_POSITION_KEY, position.to_be_bytes().to_vec());
        self.events.apply_batch(batch).map_err(backend)
    }

    /// The next verified events of one stream after the verifier's head. A
    /// bad record ends the chunk with its error, after the good events
    /// before it.
    fn stream_chunk(
        &self,
        stream: &str,
        verifier: &mut ChainVerifier,
    ) -> Vec<Result<Envelope, LogError>> {
        let next = verifier.head().seq + 1;
        let blocks = match self.raw_blocks_from(stream, next, CHUNK) {
            Ok(blocks) => blocks,
            Err(e) => return vec![Err(e)],
        };
        let mut out = Vec::new();
        for hashed in decode_and_hash(stream, blocks) {
            let (env, checksum) = match hashed {
                Ok(h) => h,
                Err(e) => {
                    out.push(Err(e));
                    break;
                }
            };
            if env.seq < next {
                continue;
            }
            let checked = verifier
                .check_verified(&env, checksum)
                .map(|()| env)
                .map_err(LogError::from);
            let failed = checked.is_err();
            out.push(checked);
            if failed {
                break;
            }
        }
        crate::settle_signatures(&mut out, self.keys.verifying(), |e| e);
        out
    }

    /// The chain state just before `from_seq` (verifying that predecessor).
    fn verifier_before(&self, stream: &str, from_seq: u64) -> Result<ChainVerifier, LogError> {
        if from_seq <= 1 {
            return Ok(self.verifier(stream, StreamHead::empty(), false));
        }
        let before = from_seq - 1;
        let Some(prev) = self.get_sync(stream, before)? else {
            let head = self.head_sync(stream)?;
            return Ok(self.verifier(stream, head, false));
        };
        prev.verify_sealed(self.keys.verifying())?;
        let signed = prev.signature.is_some();
        let head = StreamHead {
            seq: before,
            checksum: prev.checksum,
        };
        Ok(self.verifier(stream, head, signed))
    }

    /// The next verified events in global order from `from_position`; like
    /// [`Self::stream_chunk`], a bad record ends the chunk with its error.
    fn all_chunk(
        &self,
        from_position: u64,
        verifiers: &mut HashMap<String, ChainVerifier>,
    ) -> Vec<Result<Positioned, LogError>> {
        let mut out = self.all_chunk_unsigned(from_position, verifiers);
        crate::settle_signatures(&mut out, self.keys.verifying(), |p| &p.envelope);
        out
    }

    /// [`Self::all_chunk`] before its signatures are checked.
    fn all_chunk_unsigned(
        &self,
        from_position: u64,
        verifiers: &mut HashMap<String, ChainVerifier>,
    ) -> Vec<Result<Positioned, LogError>> {
        let start = match self
            .events
            .range(global_key(0)..=global_key(from_position))
            .next_back()
        {
            Some(Ok((k, _))) => k.to_vec(),
            Some(Err(e)) => return vec![Err(backend(e))],
            None => global_key(from_position).to_vec(),
        };
        let mut out = Vec::new();
        for item in self.events.range(start..=global_key(u64::MAX).to_vec()) {
            let block = item
                .map_err(backend)
                .and_then(|(gk, skey)| self.block_at(key_suffix(&gk), &skey));
            let block = match block {
                Ok(b) => b,
                Err(e) => {
                    out.push(Err(e));
                    return out;
                }
            };
            for p in block.into_iter().filter(|p| p.position >= from_position) {
                let checked = self.check_positioned(&p, verifiers).map(|()| p);
                let failed = checked.is_err();
                out.push(checked);
                if failed {
                    return out;
                }
            }
            if out.len() >= CHUNK {
                break;
            }
        }
        out
    }

    /// The events of the block at `skey`, whose first global position is `first`.
    fn block_at(&self, first: u64, skey: &[u8]) -> Result<Vec<Positioned>, LogError> {
        let stream = String::from_utf8_lossy(&skey[1..skey.len().saturating_sub(9)]).to_string();
        let block = self.events.get(skey).map_err(backend)?.ok_or_else(|| {
            LogError::Backend(format!(
                "position {first} points at a missing block of {stream}"
            ))
        })?;
        let events = decode_block(&stream, key_suffix(skey), &block)?;
        Ok(events
            .into_iter()
            .enumerate()
            .map(|(i, envelope)| Positioned {
                position: first + i as u64,
                envelope,
            })
            .collect())
    }

    fn check_positioned(
        &self,
        p: &Positioned,
        verifiers: &mut HashMap<String, ChainVerifier>,
    ) -> Result<(), LogError> {
        let stream = &p.envelope.stream;
        let verifier = match verifiers.get_mut(stream) {
            Some(v) => v,
            None => {
                let v = self.verifier_before(stream, p.envelope.seq)?;
                verifiers.entry(stream.clone()).or_insert(v)
            }
        };
        // Checksums here; signatures once per chunk (`settle_signatures`).
        Ok(verifier.check_verified(&p.envelope, p.envelope.verify())?)
    }
}

/// An event with its checksum's verdict.
type Hashed = (Envelope, Result<(), IntegrityError>);

/// Decodes blocks and checks every event's checksum, spread over the
/// machine's cores: hashing is most of a replay's work and does not depend
/// on order (the chain is then checked in order by the caller). Results
/// keep the blocks' order; an undecodable block ends them.
fn decode_and_hash(stream: &str, blocks: Vec<(u64, sled::IVec)>) -> Vec<Result<Hashed, LogError>> {
    let hash_block = |(first, block): &(u64, sled::IVec)| -> Result<Vec<Hashed>, LogError> {
        let events = decode_block(stream, *first, block)?;
        Ok(events
            .into_iter()
            .map(|e| {
                let v = e.verify();
                (e, v)
            })
            .collect())
    };
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(blocks.len().div_ceil(64))
        .max(1);
    let per_thread = blocks.len().div_ceil(threads).max(1);
    let groups: Vec<Vec<Result<Vec<Hashed>, LogError>>> = std::thread::scope(|scope| {
        let mut parts = blocks.chunks(per_thread);
        let first = parts.next().unwrap_or(&[]);
        let others: Vec<_> = parts
            .map(|part| scope.spawn(move || part.iter().map(hash_block).collect::<Vec<_>>()))
            .collect();
        let mut groups = vec![first.iter().map(hash_block).collect()];
        groups.extend(others.into_iter().map(|h| {
            h.join()
                .unwrap_or_else(|_| vec![Err(backend("a hashing thread panicked"))])
        }));
        groups
    });
    let mut out = Vec::new();
    for block in groups.into_iter().flatten() {
        match block {
            Ok(events) => out.extend(events.into_iter().map(Ok)),
            Err(e) => {
                out.push(Err(e));
                break;
            }
        }
    }
    out
}

/// The most events one stored block holds. Small enough that a block stays
/// well under sled's threshold for storing a value as a separate blob file
/// (which would cost a file read per block), large enough to amortise the
/// per-value cost of sled on replay.
const BLOCK_EVENTS: usize = 16;

/// Roughly how many events one read step decodes.
const CHUNK: usize = 4096;

#[async_trait]
impl EventLog for SledLog {
    async fn store_batch(&self, batch: CheckedBatch<'_>) -> Result<Vec<Envelope>, LogError> {
        let (stream, expected_seq, events) = batch.into_parts();
        if let Some(e) = self.group_commit.failure() {
            return Err(LogError::Backend(format!(
                "the log stopped after a failed flush: {e}"
            )));
        }
        let sealed = {
            let _guard = self.write_lock.lock().await;
            let head = self.head_sync(stream)?;
            if head.seq != expected_seq {
                let ids: Vec<&str> = events.iter().map(|e| e.id.as_str()).collect();
                return match self.already_stored(stream, expected_seq, &ids)? {
                    Some(stored) => Ok(stored),
                    None => Err(LogError::Conflict {
                        stream: stream.to_string(),
                        expected: expected_seq,
                        actual: head.seq,
                    }),
                };
            }
            let sealed = seal_batch(stream, &head, events, self.keys.signing());
            self.write_batch(stream, &sealed)?;
            sealed
        };
        self.group_commit.wait_durable().await?;
        self.appended.notify_waiters();
        Ok(sealed)
    }

    async fn head(&self, stream: &str) -> Result<StreamHead, LogError> {
        self.head_sync(stream)
    }

    async fn read_stream(&self, stream: &str, from_seq: u64) -> Result<EventStream, LogError> {
        let verifier = match self.verifier_before(stream, from_seq) {
            Ok(v) => v,
            // A bad predecessor is reported in the stream, like any bad record.
            Err(e) => return Ok(futures::stream::iter([Err(e)]).boxed()),
        };
        let log = self.clone();
        let stream = stream.to_string();
        let chunks = futures::stream::unfold(
            (log, stream, verifier, false),
            |(log, stream, mut verifier, finished)| async move {
                if finished {
                    return None;
                }
                let chunk = log.stream_chunk(&stream, &mut verifier);
                let finished = chunk.is_empty() || chunk.last().is_some_and(Result::is_err);
                Some((chunk, (log, stream, verifier, finished)))
            },
        );
        Ok(flatten_chunks(chunks))
    }

    async fn read_all(
        &self,
        from_position: u64,
        follow: bool,
    ) -> Result<PositionedStream, LogError> {
        let log = self.clone();
        let state = (log, from_position.max(1), HashMap::new(), false);
        let chunks = futures::stream::unfold(
            state,
            move |(log, next, mut verifiers, failed)| async move {
                if failed {
                    return None;
                }
                loop {
                    let appended = log.appended.clone();
                    let notified = appended.notified();
                    let chunk = log.all_chunk(next, &mut verifiers);
                    if let Some(last) = chunk.last() {
                        let failed = last.is_err();
                        let next = last.as_ref().map_or(next, |p| p.position + 1);
                        return Some((chunk, (log, next, verifiers, failed)));
                    }
                    if !follow {
                        return None;
                    }
                    let _ = tokio::time::timeout(Duration::from_millis(250), notified).await;
                }
            },
        );
        Ok(flatten_chunks(chunks))
    }

    async fn streams(&self) -> Result<Vec<String>, LogError> {
        self.events
            .scan_prefix(b"h")
            .keys()
            .map(|k| {
                let k = k.map_err(backend)?;
                Ok(String::from_utf8_lossy(&k[1..]).to_string())
            })
            .collect()
    }

    async fn removed_positions(&self) -> Result<Vec<RangeInclusive<u64>>, LogError> {
        let mut present = Vec::new();
        for item in self.events.range(global_key(0)..=global_key(u64::MAX)) {
            let (gk, skey) = item.map_err(backend)?;
            let first = key_suffix(&gk);
            // A block whose records are gone stores nothing at its positions.
            let events = self
                .events
                .get(&skey)
                .map_err(backend)?
                .map_or(0, |b| block_len(&b));
            if events > 0 {
                present.push(first..=first + events - 1);
            }
        }
        Ok(crate::missing_ranges(present, last_position(&self.db)?))
    }

    async fn save_snapshot(&self, stream: &str, snapshot: Snapshot) -> Result<(), LogError> {
        check_stream_name(stream)?;
        let bytes = rmp_serde::to_vec(&(snapshot.seq, &snapshot.checksum, &snapshot.state))
            .map_err(backend)?;
        self.snapshots
            .insert(stream.as_bytes(), bytes)
            .map_err(backend)?;
        Ok(())
    }

    async fn load_snapshot(&self, stream: &str) -> Result<Option<Snapshot>, LogError> {
        let Some(bytes) = self.snapshots.get(stream.as_bytes()).map_err(backend)? else {
            return Ok(None);
        };
        let (seq, checksum, state): (u64, String, Vec<u8>) = rmp_serde::from_slice(&bytes)
            .map_err(|e| LogError::BadSnapshot {
                stream: stream.to_string(),
                reason: e.to_string(),
            })?;
        Ok(Some(Snapshot {
            seq,
            checksum,
            state,
        }))
    }
}

fn flatten_chunks<T: Send + 'static>(
    chunks: impl futures::Stream<Item = Vec<Result<T, LogError>>> + Send + 'static,
) -> futures::stream::BoxStream<'static, Result<T, LogError>> {
    chunks.flat_map(futures::stream::iter).boxed()
}

/// Removes every trace of `stream` (its blocks, their global positions and
/// its head), as someone with write access to the files could, for tamper
/// tests. The log in `dir` must be closed.
#[cfg(feature = "test-util")]
pub fn purge_stream_for_test(dir: &Path, stream: &str) {
    let db = sled::open(dir).expect("open the sled log to purge a stream");
    let tree = db.open_tree("events").expect("events tree");
    let prefix = stream_prefix(stream);
    let globals: Vec<sled::IVec> = tree
        .scan_prefix(b"g")
        .filter_map(|item| item.ok())
        .filter(|(_, skey)| skey.starts_with(&prefix))
        .map(|(gk, _)| gk)
        .collect();
    let blocks: Vec<sled::IVec> = tree
        .scan_prefix(&prefix)
        .keys()
        .filter_map(|k| k.ok())
        .collect();
    for key in globals.iter().chain(&blocks) {
        tree.remove(key).expect("remove");
    }
    tree.remove(head_key(stream)).expect("remove the head");
    db.flush().expect("flush");
}

/// Flips one byte of the payload of a stored event, for corruption tests.
/// The log in `dir` must be closed. The record stays decodable, so only the
/// checksum can tell.
#[cfg(feature = "test-util")]
pub fn corrupt_event_for_test(dir: &Path, stream: &str, seq: u64) {
    let db = sled::open(dir).expect("open the sled log to corrupt it");
    let tree = db.open_tree("events").expect("events tree");
    let (key, block) = tree
        .range(stream_prefix(stream)..=stream_key(stream, seq))
        .next_back()
        .expect("a block")
        .expect("read");
    let mut records: Vec<StoredRecord> = rmp_serde::from_slice(&block).expect("decodable block");
    let record = records
        .iter_mut()
        .find(|r| r.seq == seq)
        .expect("no such event to corrupt");
    let mut payload = std::mem::take(&mut record.payload).into_bytes();
    let i = payload.len() / 2;
    payload[i] = if payload[i] == b'1' { b'2' } else { b'1' };
    record.payload = String::from_utf8_lossy(&payload).to_string();
    tree.insert(key, rmp_serde::to_vec(&records).expect("encode"))
        .expect("write");
    db.flush().expect("flush");
}

#[cfg(test)]
mod watermark_tests {
    use super::{SledLog, Watermark};
    use crate::{conformance::events, EventLog, LogError};

    /// A log in a temporary directory with 3 durable events, closed.
    async fn closed_log_with_events() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let log = SledLog::open(dir.path()).unwrap();
        log.append("solver/w", 0, events(3)).await.unwrap();
        drop(log);
        dir
    }

    /// Opens the log in `dir` once the group-commit thread of a dropped
    /// handle has let go of sled's lock.
    fn open_when_free(dir: &std::path::Path) -> Result<SledLog, LogError> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            match SledLog::open(dir) {
                Err(e @ LogError::InUse { .. }) => {
                    assert!(std::time::Instant::now() < deadline, "{e}");
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                other => return other,
            }
        }
    }

    #[tokio::test]
    async fn a_second_writer_is_refused_naming_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let _first = SledLog::open(dir.path()).unwrap();
        match SledLog::open(dir.path()) {
            Err(e @ LogError::InUse { .. }) => {
                assert!(
                    e.to_string().contains(&dir.path().display().to_string()),
                    "{e}"
                )
            }
            Err(other) => panic!("not refused as in use: {other}"),
            Ok(_) => panic!("a second writer opened the log"),
        }
    }

    /// Opening fails naming the watermark file.
    fn assert_refused(dir: &std::path::Path) {
        match open_when_free(dir) {
            Err(e @ LogError::Damaged { .. }) => {
                assert!(e.to_string().contains(Watermark::FILE), "{e}")
            }
            Err(other) => panic!("not a damaged file: {other}"),
            Ok(_) => panic!("a corrupt watermark was accepted"),
        }
    }

    #[tokio::test]
    async fn an_unreadable_watermark_refuses_to_open() {
        let dir = closed_log_with_events().await;
        std::fs::write(dir.path().join(Watermark::FILE), "3\u{1}x").unwrap();
        assert_refused(dir.path());
    }

    #[tokio::test]
    async fn a_watermark_whose_checksum_fails_refuses_to_open() {
        let dir = closed_log_with_events().await;
        let path = dir.path().join(Watermark::FILE);
        let stored = std::fs::read_to_string(&path).unwrap();
        // Lowering the position is the harmful change: it hides a truncation.
        assert!(stored.contains(" 3 "), "{stored:?}");
        std::fs::write(&path, stored.replacen(" 3 ", " 1 ", 1)).unwrap();
        assert_refused(dir.path());
    }

    #[tokio::test]
    async fn a_deleted_watermark_refuses_to_open() {
        let dir = closed_log_with_events().await;
        std::fs::remove_file(dir.path().join(Watermark::FILE)).unwrap();
        assert_refused(dir.path());
    }

    #[tokio::test]
    async fn a_sound_watermark_opens() {
        let dir = closed_log_with_events().await;
        open_when_free(dir.path()).unwrap();
    }
}

#[cfg(test)]
mod record_format_tests {
    use super::StoredRecord;

    /// Records as logs from before signing (10 fields) and before
    /// attribution (11 fields) stored them still decode, unsigned and
    /// unattributed.
    #[test]
    fn records_from_older_versions_decode() {
        let fields10 = (
            "id", "solver/s", 1u64, "tick", 5i64, "c", "c", "sum", "prev", "{}",
        );
        let old = rmp_serde::to_vec(&fields10).unwrap();
        let rec: StoredRecord = rmp_serde::from_slice(&old).unwrap();
        assert_eq!(
            (rec.signature.as_deref(), rec.principal.as_deref()),
            (None, None)
        );
        let fields11 = (
            "id",
            "solver/s",
            1u64,
            "tick",
            5i64,
            "c",
            "c",
            "sum",
            "prev",
            "{}",
            Some("sig"),
        );
        let old = rmp_serde::to_vec(&fields11).unwrap();
        let rec: StoredRecord = rmp_serde::from_slice(&old).unwrap();
        assert_eq!(
            (rec.signature.as_deref(), rec.principal.as_deref()),
            (Some("sig"), None)
        );
        assert_eq!(rec.into_envelope().payload.as_str(), "{}");
    }
}
