//! The recording sink: what API requests a component's kube client makes,
//! taken from its own tests, so the RBAC it needs cannot drift from the
//! code.
//!
//! Every recorded server ([`crate::replaying`], [`crate::Cassette`])
//! appends each request it answers from its recording to the file named by
//! [`RECORD_ENV`], when that is set. [`check_needs_file`] runs the calling
//! test binary again with a filter (its Kubernetes tests) and that
//! variable, maps every recorded request to its RBAC [`Access`], and
//! compares the set with the component's needs file, which the deploy
//! checks compare with the manifests' Roles. With [`BLESS_ENV`] set it
//! writes the file instead.

use crate::rbac::{access_of_line, parse_needs, Access, RbacError};
use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The variable naming the file a recording run appends requests to.
pub const RECORD_ENV: &str = "FLOTILLA_KUBE_RECORD";

/// The variable that makes [`check_needs_file`] write the needs file.
pub const BLESS_ENV: &str = "FLOTILLA_BLESS";

/// How long the recording run of a crate's Kubernetes tests may take.
const RUN_LIMIT: Duration = Duration::from_secs(180);

/// Why the needs could not be recorded or do not match.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// The test binary could not be run again, or its files not used.
    #[error("recording run: {0}")]
    Io(#[from] std::io::Error),
    /// The recording run's tests failed.
    #[error("the recording run `{filter}` failed ({status}):\n{output}")]
    Failed {
        /// The test filter.
        filter: String,
        /// Its exit status.
        status: String,
        /// The end of its output.
        output: String,
    },
    /// The recording run took longer than it may.
    #[error("the recording run `{0}` did not end within {RUN_LIMIT:?}")]
    TimedOut(String),
    /// A recorded request or the needs file cannot be read.
    #[error(transparent)]
    Rbac(#[from] RbacError),
    /// The tests recorded no request: the filter selects nothing.
    #[error("the recording run `{0}` recorded no request (does the filter select the Kubernetes tests?)")]
    Empty(String),
    /// The recorded needs differ from the needs file.
    #[error("{} differs from the recorded requests (run with {BLESS_ENV}=1 to rewrite it, then make the Roles match):{}{}", .file.display(), list("\n  missing from the file: ", .missing), list("\n  no longer recorded: ", .extra))]
    Mismatch {
        /// The needs file.
        file: PathBuf,
        /// Recorded, not in the file.
        missing: Vec<String>,
        /// In the file, not recorded.
        extra: Vec<String>,
    },
}

fn list(prefix: &str, items: &[String]) -> String {
    items.iter().map(|i| format!("{prefix}{i}")).collect()
}

/// Whether this process is a recording run (a test that calls
/// [`check_needs_file`] returns at once in one).
pub fn is_recording() -> bool {
    std::env::var_os(RECORD_ENV).is_some()
}

/// Appends `line` (`METHOD path?query`) to the sink, when recording.
pub(crate) fn served(line: &str) {
    let Some(path) = std::env::var_os(RECORD_ENV) else {
        return;
    };
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path);
    // One write per line: appends of whole lines from parallel tests do not
    // interleave.
    if let Ok(mut file) = file {
        let _ = file.write_all(format!("{line}\n").as_bytes());
    }
}

/// Runs this test binary again with `filter`, recording, and returns the
/// access of every request its recorded servers answered.
pub fn record_needs(filter: &str) -> Result<BTreeSet<Access>, RecordError> {
    let stamp = format!("{}-{}", std::process::id(), filter.replace(':', "_"));
    let dir = std::env::temp_dir();
    let sink = dir.join(format!("flotilla-kube-record-{stamp}.txt"));
    let log = dir.join(format!("flotilla-kube-record-{stamp}.log"));
    let _ = std::fs::remove_file(&sink);
    let mut child = Command::new(std::env::current_exe()?)
        .args([filter, "--test-threads", "2", "-q"])
        .env(RECORD_ENV, &sink)
        .stdout(Stdio::from(std::fs::File::create(&log)?))
        .stderr(Stdio::from(std::fs::File::create(&log)?.try_clone()?))
        .spawn()?;
    let deadline = Instant::now() + RUN_LIMIT;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(RecordError::TimedOut(filter.into()));
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let output = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_file(&log);
    if !status.success() {
        return Err(RecordError::Failed {
            filter: filter.into(),
            status: status.to_string(),
            output: tail(&output, 4000).to_string(),
        });
    }
    let recorded = std::fs::read_to_string(&sink).unwrap_or_default();
    let _ = std::fs::remove_file(&sink);
    let needs = recorded
        .lines()
        .map(access_of_line)
        .collect::<Result<BTreeSet<_>, _>>()?;
    if needs.is_empty() {
        return Err(RecordError::Empty(filter.into()));
    }
    Ok(needs)
}

/// [`check_needs_file`] for the kube client of one crate: its tests under
/// `kubernetes::`, its `kube-needs.txt`; `who` names the component in the
/// file's header (`scheduler`), `package` the crate (`flotilla-scheduler`).
/// Panics with the mismatch.
pub fn assert_crate_needs(manifest_dir: &str, who: &str, package: &str) {
    let file = Path::new(manifest_dir).join("kube-needs.txt");
    let header = format!(
        "# The Kubernetes API permissions the {who}'s kube client needs, one\n\
         # `verb group/resource scope` a line, recorded from its tests\n\
         # (FLOTILLA_BLESS=1 cargo test -p {package} kubernetes:: rewrites it)."
    );
    if let Err(e) = check_needs_file("kubernetes::", &file, &header) {
        panic!("{e}")
    }
}

/// Records the needs of the tests `filter` selects (see [`record_needs`])
/// and compares them with the needs file `file`, or writes it when
/// [`BLESS_ENV`] is set. In a recording run it does nothing.
pub fn check_needs_file(filter: &str, file: &Path, header: &str) -> Result<(), RecordError> {
    if is_recording() {
        return Ok(());
    }
    let recorded = record_needs(filter)?;
    if std::env::var_os(BLESS_ENV).is_some() {
        let lines: BTreeSet<String> = recorded.iter().map(Access::to_string).collect();
        let lines: Vec<String> = lines.into_iter().collect();
        std::fs::write(file, format!("{header}\n{}\n", lines.join("\n")))?;
        return Ok(());
    }
    let text = std::fs::read_to_string(file).unwrap_or_default();
    let written = parse_needs(&text)?;
    let missing: Vec<String> = recorded
        .difference(&written)
        .map(Access::to_string)
        .collect();
    let extra: Vec<String> = written
        .difference(&recorded)
        .map(Access::to_string)
        .collect();
    if missing.is_empty() && extra.is_empty() {
        return Ok(());
    }
    Err(RecordError::Mismatch {
        file: file.to_path_buf(),
        missing,
        extra,
    })
}

/// The last `n` bytes of `text` (or a little more, to a char boundary).
fn tail(text: &str, n: usize) -> &str {
    let mut start = text.len().saturating_sub(n);
    while !text.is_char_boundary(start) {
        start -= 1;
    }
    &text[start..]
}
