//! Rate limits per principal, against the real gateway and worker: one
//! client floods past its bucket and gets 429 `RATE_LIMITED` with
//! `Retry-After` and `RateLimit-*`, while another client of the same role,
//! with its own bucket, sees every request succeed. The assertions are on
//! counts; the calm client's latencies are printed for the report, not
//! asserted. Anonymous callers are limited by peer IP when configured.

use crate::http_auth::tokens_file;
use crate::support::inference::{model_init, predict_body, Worker};
use crate::support::{flotilla, http_client, FlotillaUp};
use serde_json::{json, Value};
use std::path::Path;
use std::time::{Duration, Instant};

/// Adds a token `name` of `role` to `file`; returns it.
fn add_token(file: &Path, name: &str, role: &str) -> String {
    let out = flotilla(&[
        "token",
        "create",
        "--tokens",
        file.to_str().unwrap(),
        "--name",
        name,
        "--role",
        role,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// What one client saw.
#[derive(Debug, Default)]
struct Seen {
    ok: usize,
    limited: usize,
    other: Vec<String>,
    latencies: Vec<Duration>,
}

/// How a client sends one request with its token.
type Send<'a> =
    &'a (dyn Fn(&reqwest::blocking::Client, &str) -> reqwest::blocking::Response + Sync);

/// Sends `n` requests as `token` from one thread and counts the answers;
/// every 429 must carry the code and headers, every answer `RateLimit-*`.
fn client(n: usize, token: &str, send: Send<'_>, code: fn(&Value) -> String) -> Seen {
    let http = http_client();
    let mut seen = Seen::default();
    for _ in 0..n {
        let started = Instant::now();
        let r = send(&http, token);
        seen.latencies.push(started.elapsed());
        let status = r.status().as_u16();
        let header = |name: &str| {
            r.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok())
        };
        let (limit, remaining, reset) = (
            header("ratelimit-limit"),
            header("ratelimit-remaining"),
            header("ratelimit-reset"),
        );
        let retry = header("retry-after");
        let body: Value = r.json().unwrap_or(Value::Null);
        match status {
            200 if limit.is_some() && remaining.is_some() && reset.is_some() => seen.ok += 1,
            429 if code(&body) == "RATE_LIMITED"
                && retry.is_some_and(|s| s >= 1)
                && remaining == Some(0)
                && limit.is_some() =>
            {
                seen.limited += 1
            }
            _ => seen.other.push(format!(
                "{status} {body} limit={limit:?} remaining={remaining:?} retry={retry:?}"
            )),
        }
    }
    seen
}

fn percentile(latencies: &[Duration], p: f64) -> Duration {
    let mut sorted = latencies.to_vec();
    sorted.sort();
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Runs 3 flooding threads of `flood` requests each, all as `flooder`,
/// and one calm client of `calm` requests at once; returns what the
/// flooders (together) and the calm client saw.
fn flood_and_calm(
    (flooder, calm_token): (&str, &str),
    (flood, calm): (usize, usize),
    send: Send<'_>,
    code: fn(&Value) -> String,
) -> (Seen, Seen) {
    std::thread::scope(|s| {
        let floods: Vec<_> = (0..3)
            .map(|_| s.spawn(move || client(flood, flooder, send, code)))
            .collect();
        let calm = s.spawn(move || client(calm, calm_token, send, code));
        let mut flooded = Seen::default();
        for f in floods {
            let seen = f.join().unwrap();
            flooded.ok += seen.ok;
            flooded.limited += seen.limited;
            flooded.other.extend(seen.other);
        }
        (flooded, calm.join().unwrap())
    })
}

/// Prints the counts and the calm client's latencies, then checks the
/// counts: the calm client's requests all succeed, the flood is limited.
fn check(what: &str, flooded: &Seen, calm: &Seen, calm_n: usize, burst: usize) {
    println!(
        "{what}: flooder {} ok / {} limited; other client {} ok of {}, p50 {:?}, p99 {:?}",
        flooded.ok,
        flooded.limited,
        calm.ok,
        calm.latencies.len(),
        percentile(&calm.latencies, 0.5),
        percentile(&calm.latencies, 0.99),
    );
    assert!(
        flooded.other.is_empty() && calm.other.is_empty(),
        "unexpected answers: {:?} {:?}",
        flooded.other,
        calm.other
    );
    assert_eq!(calm.ok, calm_n, "the other client's requests all succeed");
    assert!(
        flooded.ok >= burst,
        "the flooder had its burst: {flooded:?}"
    );
    assert!(flooded.limited >= 200, "the flood is limited: {flooded:?}");
}

fn reply_code(body: &Value) -> String {
    body["error"]["code"].as_str().unwrap_or("").to_string()
}

fn serving_code(body: &Value) -> String {
    body["error"].as_str().unwrap_or("").to_string()
}

#[test]
fn on_the_gateway_a_flooding_principal_is_limited_and_another_of_its_role_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let (file, _) = tokens_file(dir.path());
    let flooder = add_token(&file, "flood", "operator");
    let calm = add_token(&file, "calm", "operator");
    // A burst of 30 and one more a second: the calm client's 30 requests
    // fit in its own bucket however long they take; 300 from the flooder
    // cannot (they would need minutes).
    let up = FlotillaUp::start(
        &[
            "--tokens",
            file.to_str().unwrap(),
            "--rate-limit",
            "operator=1/30",
        ],
        dir.path(),
    );
    let url = format!("{}/v1/query/solver", up.url);
    let send = |http: &reqwest::blocking::Client, token: &str| {
        http.get(&url).bearer_auth(token).send().unwrap()
    };
    let (flooded, calm_seen) = flood_and_calm((&flooder, &calm), (100, 30), &send, reply_code);
    check("gateway", &flooded, &calm_seen, 30, 30);
}

#[test]
fn on_the_worker_a_flooding_principal_is_limited_and_another_of_its_role_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let artifacts = dir.path().join("artifacts");
    model_init(&artifacts, "v1.0.0", 1);
    let (file, _) = tokens_file(dir.path());
    let flooder = add_token(&file, "flood", "inference");
    let calm = add_token(&file, "calm", "inference");
    // The limit from the config file, as a deployment would set it.
    let config = dir.path().join("worker.toml");
    let text = format!(
        "tokens_file = {:?}\n[rate_limits.inference]\nper_second = 1\nburst = 30\n",
        file.to_str().unwrap()
    );
    std::fs::write(&config, text).unwrap();
    let worker = Worker::start(&artifacts, &["--config", config.to_str().unwrap()], &[]);
    let url = format!("{}/predict", worker.url);
    let body = predict_body(1, true);
    let send = |http: &reqwest::blocking::Client, token: &str| {
        http.post(&url)
            .bearer_auth(token)
            .json(&body)
            .send()
            .unwrap()
    };
    let (flooded, calm_seen) = flood_and_calm((&flooder, &calm), (100, 30), &send, serving_code);
    check("worker", &flooded, &calm_seen, 30, 30);
}

#[test]
fn anonymous_callers_are_limited_by_address_when_configured() {
    let dir = tempfile::tempdir().unwrap();
    let up = FlotillaUp::start(&["--rate-limit", "anonymous=1/5"], dir.path());
    let http = http_client();
    let statuses: Vec<u16> = (0..40)
        .map(|_| {
            let r = http
                .get(format!("{}/v1/query/solver", up.url))
                .send()
                .unwrap();
            r.status().as_u16()
        })
        .collect();
    let limited = statuses.iter().filter(|s| **s == 429).count();
    assert!(limited >= 20, "{statuses:?}");
    assert!(
        statuses[..5].iter().all(|s| *s == 200),
        "the burst passes: {statuses:?}"
    );
    let (status, _) = up.get("/healthz");
    assert_eq!(status, 200, "probes are never limited");
    let r = http
        .post(format!("{}/v1/cmd/solver/x", up.url))
        .json(&json!({"type": "ask"}))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 429);
    assert!(r.headers().contains_key("retry-after"));
}
