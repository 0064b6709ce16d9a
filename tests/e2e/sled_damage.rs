//! Damaged sled files are reported as such (issue 11, defect 7): real
//! sled files written by `flotilla up` are truncated at many lengths, a
//! byte of a blob file is flipped, and the watermark is overwritten.
//! Before, some truncations and the flip made sled panic (exit 101) in
//! `audit` and `up`, the others said only "event log truncated", and a
//! garbled `flotilla-watermark` passed `audit`. Now each
//! damaged store is refused with `CORRUPT` naming the file, exit 2.

use crate::support::{flotilla, flotilla_bin, free_port, http_client, FlotillaUp};
use serde_json::{json, Map, Value};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Studies written; with their parameters, enough for sled to write
/// several segments and a snapshot of its page table.
const STUDIES: usize = 60;
const PARAMETERS: usize = 100;
/// The log is cut to every multiple of this length.
const CUT_STEP: u64 = 100_000;

fn create() -> Value {
    let bounds: Map<String, Value> = (0..PARAMETERS)
        .map(|i| (format!("p{i}"), json!({"min": 0, "max": 1})))
        .collect();
    json!({"type": "create_study", "seed": 1, "budget": 100, "bounds": bounds})
}

/// A data directory written by a real `flotilla up`, stopped cleanly.
fn written_data_dir(root: &Path) -> std::path::PathBuf {
    let data = root.join("data");
    let data_arg = data.display().to_string();
    let mut up = FlotillaUp::start(&["--data-dir", &data_arg], root);
    for i in 0..STUDIES {
        let id = format!("s{i}");
        assert_eq!(up.send("solver", &id, &create()).0, 200);
        assert_eq!(
            up.send("solver", &id, &json!({"type": "ask", "n": 20})).0,
            200
        );
    }
    up.terminate();
    data
}

/// Copies the directory tree `from` to `to`.
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `out` is a refusal with exit 2 whose last line says `CORRUPT` and names `file`.
fn assert_corrupt(out: &Output, file: &Path) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stderr.lines().last().unwrap_or_default();
    assert_eq!(out.status.code(), Some(2), "{}", text(out));
    assert!(
        last.contains("CORRUPT") && last.contains(&file.display().to_string()),
        "names CORRUPT and {}: {}",
        file.display(),
        text(out)
    );
}

/// Runs `flotilla up` on `data` until it exits (its output) or serves
/// (`None`, and it is killed): some damage only shows when a record is read.
fn up_once(data: &Path) -> Option<Output> {
    let http = format!("127.0.0.1:{}", free_port());
    let mut child = Command::new(flotilla_bin())
        .args([
            "up",
            "--data-dir",
            &data.display().to_string(),
            "--http",
            &http,
        ])
        .current_dir(data)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn flotilla up");
    let started = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            return Some(child.wait_with_output().unwrap());
        }
        let ready = http_client().get(format!("http://{http}/readyz")).send();
        if ready.is_ok_and(|r| r.status().is_success()) {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "up neither exited nor served"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A copy of `data` named `name` whose sled log is cut to `keep` bytes.
fn cut_copy(data: &Path, name: &str, keep: u64) -> std::path::PathBuf {
    let copy = data.with_file_name(name);
    copy_tree(data, &copy);
    let db = copy.join("log/db");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&db)
        .unwrap()
        .set_len(keep)
        .unwrap();
    copy
}

#[test]
fn a_truncated_or_garbled_sled_store_is_reported_corrupt() {
    let root = tempfile::tempdir().unwrap();
    let data = written_data_dir(root.path());
    let size = std::fs::metadata(data.join("log/db")).unwrap().len();
    let mut refused = 0;
    for keep in (1..).map(|k| k * CUT_STEP).take_while(|k| *k < size) {
        // Each program gets its own copy: sled rewrites what it recovers.
        let copy = cut_copy(&data, &format!("audit-{keep}"), keep);
        let audit = flotilla(&["audit", "--data-dir", &copy.display().to_string()]);
        assert_ne!(
            audit.status.code(),
            Some(101),
            "cut to {keep}: {}",
            text(&audit)
        );
        if !audit.status.success() {
            refused += 1;
            assert_corrupt(&audit, &copy.join("log"));
        }
        let copy = cut_copy(&data, &format!("up-{keep}"), keep);
        if let Some(up) = up_once(&copy) {
            assert_ne!(up.status.code(), Some(101), "cut to {keep}: {}", text(&up));
            assert_corrupt(&up, &copy.join("log"));
        }
    }
    assert!(refused > 0, "some cut of a {size}-byte log is noticed");

    // sled keeps large values (these studies' blocks) in blob files.
    let flipped = root.path().join("flipped");
    copy_tree(&data, &flipped);
    let mut blobs: Vec<_> = std::fs::read_dir(flipped.join("log/blobs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    blobs.sort();
    let blob = blobs.first().expect("sled wrote a blob");
    let mut bytes = std::fs::read(blob).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(blob, bytes).unwrap();
    let audit = flotilla(&["audit", "--data-dir", &flipped.display().to_string()]);
    assert_corrupt(&audit, &flipped.join("log"));

    let garbled = root.path().join("garbled");
    copy_tree(&data, &garbled);
    let watermark = garbled.join("log/flotilla-watermark");
    std::fs::write(&watermark, "1\u{0}9x").unwrap();
    let audit = flotilla(&["audit", "--data-dir", &garbled.display().to_string()]);
    assert_corrupt(&audit, &watermark);
    let up = up_once(&garbled).expect("up refuses a garbled watermark");
    assert_corrupt(&up, &watermark);
}
