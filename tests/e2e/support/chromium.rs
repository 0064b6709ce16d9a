//! A real browser for the tests of pages Flotilla writes (the simulation
//! report): headless Chromium loads a local file and gives back its DOM
//! after load (`--dump-dom`) or a PNG screenshot. Each run gets a fresh
//! profile in a temporary directory and is killed (by its own pid) if it
//! hangs. The shared process helpers are in [`super`]; pages served over
//! HTTP that stay live (the dashboard) are driven over the DevTools
//! protocol by [`super::devtools`].

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// How long one browser run may take (a cold start on a loaded two-core
/// machine takes a few seconds).
const WITHIN: Duration = Duration::from_secs(60);

/// The screenshot's size, px: the width of a laptop screen, tall enough
/// for a report's charts.
pub const WINDOW: (u32, u32) = (1280, 4000);

/// The browser: `$CHROMIUM_BIN`, else `chromium` or `chromium-browser` on
/// `PATH`. Missing is a failure, never a skip.
pub fn chromium_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("CHROMIUM_BIN").filter(|b| !b.is_empty()) {
        return PathBuf::from(bin);
    }
    ["chromium", "chromium-browser"]
        .iter()
        .find_map(|name| super::on_path(name))
        .unwrap_or_else(|| {
            panic!(
                "chromium not found: run scripts/test (it installs Debian's chromium), \
                 or set CHROMIUM_BIN"
            )
        })
}

/// The DOM of `page` (a local HTML file) after it loaded, serialized.
pub fn dump_dom(page: &Path) -> String {
    let out = run(page, &["--dump-dom".to_string()]);
    String::from_utf8(out).expect("the DOM is UTF-8")
}

/// A screenshot of `page` ([`WINDOW`] px) written to `png`.
pub fn screenshot(page: &Path, png: &Path) {
    run(page, &[format!("--screenshot={}", png.display())]);
    assert!(png.is_file(), "chromium wrote no {}", png.display());
}

/// Headless Chromium with a fresh profile in `profile` and a window of
/// `window` px, started in that directory (so nothing it writes lands in
/// the repository).
pub fn headless(profile: &Path, window: (u32, u32)) -> Command {
    let mut command = Command::new(chromium_bin());
    command
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            // Containers have a small /dev/shm.
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--no-default-browser-check",
            &format!("--window-size={},{}", window.0, window.1),
            &format!("--user-data-dir={}", profile.display()),
        ])
        .current_dir(profile);
    command
}

/// Runs headless Chromium on `page` with `extra` flags; its stdout.
fn run(page: &Path, extra: &[String]) -> Vec<u8> {
    let profile = tempfile::tempdir().expect("a profile directory");
    let mut command = headless(profile.path(), WINDOW);
    command.args(extra).arg(file_url(page));
    let out = super::output_within(&mut command, WITHIN).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        out.status.success(),
        "{command:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// `file://` and the absolute path, bytes other than unreserved ones and
/// `/` percent-encoded.
fn file_url(page: &Path) -> String {
    let path = page.canonicalize().expect("the page exists");
    let mut url = String::from("file://");
    for byte in path.to_string_lossy().bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'/' => {
                url.push(byte as char)
            }
            other => url.push_str(&format!("%{other:02X}")),
        }
    }
    url
}
