//! What every Flotilla HTTP server's OpenAPI document and viewers must be
//! (the worker's and the gateway's alike), and schemathesis run against a
//! live server.

use super::inference::header;
use super::{http_client, output_within, tool};
use serde_json::Value;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// Fetches `/openapi.json` (open: no token) and checks it is OpenAPI 3.1
/// JSON; checks that `/docs` and `/redoc` are HTML pages loading only the
/// server's own vendored assets, that those are the real bundles, and that
/// another method gets 405 with `Allow`. Returns the document.
pub fn assert_document_and_viewers(url: &str) -> Value {
    let client = http_client();
    let r = client.get(format!("{url}/openapi.json")).send().unwrap();
    assert_eq!(r.status(), 200);
    assert!(header(&r, "content-type").starts_with("application/json"));
    let doc: Value = r.json().unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"), "{doc}");

    for page in ["/docs", "/redoc"] {
        let r = client.get(format!("{url}{page}")).send().unwrap();
        assert_eq!(r.status(), 200, "{page}");
        assert!(
            header(&r, "content-type").starts_with("text/html"),
            "{page}"
        );
        let html = r.text().unwrap();
        assert!(html.contains("/openapi.json"), "{page}: {html}");
        assert!(
            !html.contains("http://") && !html.contains("https://") && !html.contains("//cdn"),
            "{page} loads only the server's own URLs: {html}"
        );
        for src in srcs(&html) {
            assert!(src.starts_with("/docs/"), "{page} loads {src}");
        }
    }
    for (asset, content_type) in [
        ("/docs/swagger-ui-bundle.js", "text/javascript"),
        ("/docs/swagger-ui.css", "text/css"),
        ("/docs/redoc.standalone.js", "text/javascript"),
    ] {
        let r = client.get(format!("{url}{asset}")).send().unwrap();
        assert_eq!(r.status(), 200, "{asset}");
        assert!(
            header(&r, "content-type").starts_with(content_type),
            "{asset}"
        );
        assert!(
            r.bytes().unwrap().len() > 100_000,
            "{asset} is the real bundle"
        );
    }
    let r = client.post(format!("{url}/openapi.json")).send().unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(header(&r, "allow"), "GET");
    doc
}

/// The `src` and `href` values of an HTML page.
fn srcs(html: &str) -> Vec<String> {
    ["src=\"", "href=\""]
        .iter()
        .flat_map(|attr| html.split(attr).skip(1))
        .filter_map(|rest| rest.split('"').next())
        .map(str::to_string)
        .collect()
}

/// Runs schemathesis 4 (`SCHEMATHESIS_BIN`) against the document at `url`
/// with every check on but `excluded_checks`, `config` as its
/// `schemathesis.toml` and `extra` arguments; panics with its report when
/// it finds a failure.
pub fn schemathesis(
    url: &str,
    config: &str,
    excluded_checks: &[&str],
    extra: &[&str],
    work: &Path,
) {
    let schemathesis = tool("SCHEMATHESIS_BIN", "schemathesis");
    std::fs::write(work.join("schemathesis.toml"), config).unwrap();
    let mut cmd = Command::new(&schemathesis);
    cmd.current_dir(work)
        .args(["--config-file", "schemathesis.toml", "run"])
        .arg(format!("{url}/openapi.json"))
        .args(["--checks", "all"]);
    if !excluded_checks.is_empty() {
        cmd.args(["--exclude-checks", &excluded_checks.join(",")]);
    }
    cmd.args(["--seed", "1", "--workers", "1"])
        .args(["--generation-database", "none", "--no-color"])
        .args(extra)
        .env_remove("SCHEMATHESIS_HOOKS");
    let out = output_within(&mut cmd, Duration::from_secs(900)).unwrap();
    let report = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "schemathesis failed:\n{report}");
}
