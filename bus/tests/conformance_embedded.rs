//! The conformance suite against the embedded backend: `EmbeddedBus` and
//! `SledLog` in a temp dir. Reopening drops the handle and opens the same
//! directory; corrupting flips a payload byte inside the stored record with
//! the log closed, as a disk fault would. Leases are one `EmbeddedLeases`
//! shared by every handle, as in the one process that holds them.

use async_trait::async_trait;
use flotilla_bus::conformance::{self, LeaseFixture, LogFixture};
use flotilla_bus::embedded::{corrupt_event_for_test, EmbeddedBus, EmbeddedLeases, SledLog};
use flotilla_bus::{EventLog, LeaseStore, LogKeys};
use std::sync::Arc;

struct SledFixture {
    dir: tempfile::TempDir,
    log: Option<Arc<SledLog>>,
}

impl SledFixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = Arc::new(SledLog::open(dir.path()).expect("open"));
        SledFixture {
            dir,
            log: Some(log),
        }
    }

    /// Drops our handle and waits until sled has released the directory.
    async fn close(&mut self) {
        if let Some(log) = self.log.take() {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            let mut log = log;
            loop {
                match Arc::try_unwrap(log) {
                    Ok(inner) => {
                        drop(inner);
                        break;
                    }
                    Err(still_shared) if std::time::Instant::now() < deadline => {
                        log = still_shared;
                        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                    }
                    Err(_) => panic!("the log is still in use"),
                }
            }
        }
        // The group-commit thread holds a clone of the db until it notices.
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }

    fn open_again(&mut self) -> Arc<SledLog> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            match SledLog::open(self.dir.path()) {
                Ok(log) => {
                    let log = Arc::new(log);
                    self.log = Some(log.clone());
                    return log;
                }
                Err(e) if std::time::Instant::now() >= deadline => panic!("reopen: {e}"),
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(50)),
            }
        }
    }
}

#[async_trait]
impl LogFixture for SledFixture {
    async fn log(&self) -> Arc<dyn EventLog> {
        self.log.clone().expect("open")
    }

    async fn reopen(&mut self) -> Arc<dyn EventLog> {
        self.close().await;
        self.open_again()
    }

    async fn corrupt(&mut self, stream: &str, seq: u64) {
        self.close().await;
        corrupt_event_for_test(self.dir.path(), stream, seq);
        self.open_again();
    }

    async fn with_keys(&self, keys: LogKeys) -> Arc<dyn EventLog> {
        let log = self.log.as_deref().expect("open").clone();
        Arc::new(log.with_keys(keys))
    }
}

/// One in-process store; every handle is the same map.
#[derive(Default)]
struct LeasesFixture(Arc<EmbeddedLeases>);

#[async_trait]
impl LeaseFixture for LeasesFixture {
    async fn leases(&self) -> Arc<dyn LeaseStore> {
        self.0.clone()
    }
}

flotilla_bus::conformance_tests!(
    log: SledFixture::new(),
    bus: ((), Arc::new(EmbeddedBus::new())),
    leases: LeasesFixture::default(),
);

/// Flips one byte inside the sled files themselves (not through sled), as
/// a disk fault would: opening or reading must fail naming what is wrong,
/// or every event must still read back intact — never fewer events without
/// an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_byte_in_the_sled_files_is_never_replayed_silently() {
    let mut fx = SledFixture::new();
    let s = "solver/disk";
    let log = fx.log().await;
    let mut marked = Vec::new();
    for seq in 0..20u64 {
        let mut e = conformance::event(&uuid::Uuid::new_v4().to_string(), seq);
        e.payload = flotilla_messages::Payload::from_value(
            &serde_json::json!({"type": "tick", "marker": format!("MARKER{seq:04}")}),
        );
        marked.extend(log.append(s, seq, vec![e]).await.expect("append"));
    }
    drop(log);
    fx.close().await;
    let flipped = flip_marker_byte(fx.dir.path(), b"MARKER0007");
    assert!(flipped, "the marker was found in the sled files");
    let log = match SledLog::open(fx.dir.path()) {
        Ok(log) => log,
        Err(e) => {
            eprintln!("open refused the damaged files: {e}");
            return;
        }
    };
    let read: Vec<_> =
        futures::StreamExt::collect::<Vec<_>>(log.read_stream(s, 1).await.expect("read")).await;
    let good: Vec<_> = read.iter().filter_map(|r| r.as_ref().ok()).collect();
    let error = read.iter().find_map(|r| r.as_ref().err());
    match error {
        Some(e) => eprintln!("read reported: {e}"),
        None => assert_eq!(good.len(), marked.len(), "a clean read returns every event"),
    }
}

/// Flips a byte of the first occurrence of `marker` in any file under `dir`.
fn flip_marker_byte(dir: &std::path::Path, marker: &[u8]) -> bool {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(p) = stack.pop() {
        if p.is_dir() {
            stack.extend(
                std::fs::read_dir(&p)
                    .expect("dir")
                    .map(|e| e.expect("entry").path()),
            );
            continue;
        }
        let mut bytes = std::fs::read(&p).expect("read file");
        if let Some(at) = bytes.windows(marker.len()).position(|w| w == marker) {
            bytes[at + marker.len() - 1] ^= 0x01;
            std::fs::write(&p, bytes).expect("write file");
            return true;
        }
    }
    false
}
