//! Memory stays bounded under ids that are only ever refused and queues
//! whose jobs keep finishing (issue 11, defect 4).
//!
//! Before: every refused id kept an actor (about 2 KiB each: 421 MiB after
//! 90k ids, still held when idle) and a queue kept every finished job. Now
//! an id without a stream holds nothing after its reply, and a queue keeps
//! its newest `retain_finished` finished jobs. The test drives a real
//! `flotilla up` (the debug build) over HTTP from 32 clients, reads its RSS
//! from `/proc` and its hosted actors from `/metrics`: 100k refused ids
//! (about 1,500 a second) and 100k jobs submitted and cancelled (two
//! durable appends each, about 750 a second), some five minutes.

use crate::support::{http_client, FlotillaUp};
use serde_json::{json, Value};

/// Ids refused, and jobs finished, in all.
const REFUSED: usize = 100_000;
const FINISHED: usize = 100_000;
/// Finished jobs each queue keeps.
const RETAINED: usize = 100;
/// Client threads (and queues): concurrent commands share the log's flushes.
const CLIENTS: usize = 32;
/// How much RSS may grow from the warmed-up process, in MiB. What may grow
/// is bounded by settings, not by the number of ids or jobs: sled's page
/// cache (at most 64 MiB) fills as the log grows; each of the 32 busy
/// queues remembers its last 10,000 command ids for idempotency (about
/// 45 MiB in all); retained state is 32 queues of 100 finished jobs. The old
/// growth (2 KiB per refused id) would be 200 MiB for the ids alone.
const GROWTH_BOUND_MIB: u64 = 160;

/// The `flotilla_aggregates` gauge: actors hosted now.
fn hosted(up: &FlotillaUp) -> u64 {
    let text = http_client()
        .get(format!("{}/metrics", up.url))
        .send()
        .and_then(|r| r.text())
        .expect("metrics");
    text.lines()
        .find_map(|l| l.strip_prefix("flotilla_aggregates "))
        .and_then(|v| v.trim().parse().ok())
        .expect("flotilla_aggregates")
}

/// Runs `work(client, thread)` on [`CLIENTS`] threads.
fn in_parallel(work: impl Fn(&reqwest::blocking::Client, usize) + Sync) {
    std::thread::scope(|scope| {
        for t in 0..CLIENTS {
            let work = &work;
            scope.spawn(move || work(&http_client(), t));
        }
    });
}

fn post(client: &reqwest::blocking::Client, url: &str, body: &Value) -> (u16, Value) {
    let r = client.post(url).json(body).send().expect("POST");
    (r.status().as_u16(), r.json().unwrap_or(Value::Null))
}

fn refuse_ids(up: &FlotillaUp, from: usize, count: usize) {
    in_parallel(|client, t| {
        for i in (from + t..from + count).step_by(CLIENTS) {
            let url = format!("{}/v1/cmd/solver/ghost-{i}", up.url);
            let (status, body) = post(client, &url, &json!({"type": "ask"}));
            assert_eq!(status, 404, "ghost-{i}: {body}");
            assert_eq!(body["error"]["code"], "NOT_FOUND");
        }
    });
}

/// Each thread's queue gets `count / CLIENTS` jobs submitted and cancelled
/// behind a blocker holding the one slot: finished jobs without processes.
fn finish_jobs(up: &FlotillaUp, from: usize, count: usize) {
    in_parallel(|client, t| {
        let url = format!("{}/v1/cmd/scheduler/mem-{t}", up.url);
        for i in (from + t..from + count).step_by(CLIENTS) {
            let job = format!("j{i}");
            let submit = json!({"type": "submit", "job_id": job, "spec": {"command": ["true"]}});
            let (status, body) = post(client, &url, &submit);
            assert_eq!(status, 200, "{job}: {body}");
            let (status, body) = post(client, &url, &json!({"type": "cancel", "job_id": job}));
            assert_eq!(status, 200, "{job}: {body}");
        }
    });
}

fn mib(kib: u64) -> u64 {
    kib / 1024
}

#[test]
fn refused_ids_hold_no_actor_and_finished_jobs_are_retained_by_count() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let up = FlotillaUp::start(&["--data-dir", data.to_str().unwrap()], dir.path());
    in_parallel(|client, t| {
        let url = format!("{}/v1/cmd/scheduler/mem-{t}", up.url);
        let retain = json!({"type": "configure_queue", "concurrency": 1,
                            "retain_finished": RETAINED});
        assert_eq!(post(client, &url, &retain).0, 200);
        let blocker = json!({"type": "submit", "job_id": "blocker",
                             "spec": {"command": ["sleep", "3600"]}});
        assert_eq!(post(client, &url, &blocker).0, 200);
    });
    // Warm up: the allocator, sled's cache and every queue past its retention.
    let warm_up = CLIENTS * RETAINED * 2;
    refuse_ids(&up, 0, warm_up);
    finish_jobs(&up, 0, warm_up);
    let warm = up.rss_kib();

    refuse_ids(&up, warm_up, REFUSED);
    let after_refused = up.rss_kib();
    assert_eq!(hosted(&up), CLIENTS as u64, "only the queues are hosted");
    finish_jobs(&up, warm_up, FINISHED);
    let after_finished = up.rss_kib();
    eprintln!(
        "RSS: warm {} MiB, after {REFUSED} refused ids {} MiB, after {FINISHED} finished jobs {} MiB",
        mib(warm),
        mib(after_refused),
        mib(after_finished)
    );

    let (status, body) = up.get("/v1/query/scheduler/mem-0?limit=10");
    assert_eq!(status, 200, "{body}");
    let view = &body["result"];
    assert_eq!(
        view["counts"]["cancelled"], RETAINED,
        "the newest are kept: {view}"
    );
    assert_eq!(view["jobs"].as_array().unwrap().len(), 10, "one page");
    assert!(view["next"].is_string(), "{view}");
    let page = serde_json::to_vec(&body).unwrap().len();
    assert!(page < 16 * 1024, "a page of 10 jobs is {page} bytes");

    let grown = mib(after_finished.saturating_sub(warm));
    assert!(
        grown <= GROWTH_BOUND_MIB,
        "RSS grew {grown} MiB (warm {} MiB, now {} MiB), bound {GROWTH_BOUND_MIB} MiB",
        mib(warm),
        mib(after_finished)
    );
    in_parallel(|client, t| {
        let url = format!("{}/v1/cmd/scheduler/mem-{t}", up.url);
        post(
            client,
            &url,
            &json!({"type": "cancel", "job_id": "blocker"}),
        );
    });
}
