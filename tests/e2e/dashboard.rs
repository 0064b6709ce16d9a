//! The web dashboard in a real browser: one `flotilla up --nats` holds a
//! study with told trials, a study run with its queue of jobs, and a
//! simulated pool whose nodes run real `flotilla agent --source sim`
//! processes (their heartbeats give the GPU gauges), and an inference
//! worker on the same NATS whose `/metrics` the gateway reads
//! (`--inference-worker`). Headless Chromium,
//! driven over the DevTools protocol ([`crate::support::devtools`]), opens
//! every page and checks its charts (SVG points and bars) and tables hold
//! the real data; a trial told while the study's page is open appears
//! without a reload, and so does a new event on the events page. With a
//! tokens file, the page asks for a token, a viewer sees the data, and a
//! viewer's pause is refused with a clear message. Screenshots of every page
//! go to `target/dashboard-screenshots/`.

use crate::http_auth::{call, tokens_file};
use crate::support::devtools::Browser;
use crate::support::inference::{model_init, predict_body, Worker};
use crate::support::{node_statuses, pools_file, wait_until, Agents, FlotillaUp};
use flotilla_bus::testing::NatsServer;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How long a page may take to show what it should.
const WITHIN: Duration = Duration::from_secs(60);

/// A trial job: says hello, takes a moment, scores `x`.
const SCRIPT: &str = r#"#!/bin/sh
echo "hello from $FLOTILLA_TRIAL_ID"
sleep 1
awk -v x="$ARQON_x" 'BEGIN { printf "RESULT=%f\n", (x - 1) * (x - 1) }'
"#;

/// Pool `gpu`: two simulated nodes, each with its own agent.
const POOLS: &str = "providers:\n  cloud: {type: sim, auto_register: false}\npools:\n  gpu:\n    provider: cloud\n    min_nodes: 2\n    max_nodes: 2\n    cooldown: 0s\n    health: {unhealthy_threshold: 2, boot_grace: 0s, heartbeat_timeout: 30s}\n    replacement: {drain_mode: evict, circuit_breaker: {max_replaced_percent: 100}}\n";

/// Where the screenshots go: `target/dashboard-screenshots/`.
fn screenshots() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/dashboard-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn result(up: &FlotillaUp, path: &str) -> Value {
    let (status, body) = up.get(path);
    assert_eq!(status, 200, "{path}: {body}");
    body["result"].clone()
}

fn send_ok(up: &FlotillaUp, actor: &str, id: &str, body: Value) -> Value {
    let (status, reply) = up.send(actor, id, &body);
    assert_eq!(status, 200, "{body}: {reply}");
    reply
}

/// The study `demo`: `n` trials asked and told with `value = x² + y`.
fn told_study(up: &FlotillaUp, n: u64) {
    let create = json!({"type": "create_study", "seed": 5, "budget": 20, "sampler": "random",
        "bounds": {"x": {"min": -3.0, "max": 3.0}, "y": {"min": 0.0, "max": 1.0}}});
    send_ok(up, "solver", "demo", create);
    ask_and_tell(up, n);
}

/// Asks `n` trials of `demo` and tells each its value; their ids.
fn ask_and_tell(up: &FlotillaUp, n: u64) -> Vec<String> {
    let reply = send_ok(up, "solver", "demo", json!({"type": "ask", "n": n}));
    let trials = reply["result"]["trials"].as_array().unwrap().clone();
    let results: Vec<Value> = trials
        .iter()
        .map(|t| {
            let (x, y) = (
                t["params"]["x"].as_f64().unwrap(),
                t["params"]["y"].as_f64().unwrap(),
            );
            json!({"trial_id": t["trial_id"], "value": x * x + y})
        })
        .collect();
    send_ok(
        up,
        "solver",
        "demo",
        json!({"type": "tell", "results": results}),
    );
    trials
        .iter()
        .map(|t| t["trial_id"].as_str().unwrap().to_string())
        .collect()
}

/// Posts predictions to `worker` until the returned guard is dropped.
fn predictions(worker: &Worker) -> impl Drop {
    struct Stop(Arc<AtomicBool>, Option<std::thread::JoinHandle<()>>);
    impl Drop for Stop {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Relaxed);
            if let Some(thread) = self.1.take() {
                let _ = thread.join();
            }
        }
    }
    let stop = Arc::new(AtomicBool::new(false));
    let stopping = stop.clone();
    let url = format!("{}/predict", worker.url);
    let thread = std::thread::spawn(move || {
        let client = crate::support::http_client();
        while !stopping.load(Ordering::Relaxed) {
            let _ = client.post(&url).json(&predict_body(1, true)).send();
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    Stop(stop, Some(thread))
}

/// How many elements match `selector`.
fn count(browser: &mut Browser, selector: &str) -> u64 {
    browser
        .eval(&format!("document.querySelectorAll({selector:?}).length"))
        .as_u64()
        .unwrap()
}

/// Waits until at least `n` elements match `selector`.
fn wait_count(browser: &mut Browser, what: &str, selector: &str, n: u64) {
    let expression = format!("document.querySelectorAll({selector:?}).length >= {n}");
    browser.wait_for(what, &expression, WITHIN);
}

/// Waits until the text of `selector` contains every one of `texts`.
fn wait_text(browser: &mut Browser, what: &str, selector: &str, texts: &[&str]) {
    let wanted = serde_json::to_string(texts).unwrap();
    let expression = format!(
        "(() => {{ const e = document.querySelector({selector:?}); \
         return !!e && {wanted}.every((t) => e.textContent.includes(t)); }})()"
    );
    browser.wait_for(what, &expression, WITHIN);
}

#[test]
fn every_page_shows_the_real_data_and_live_events_arrive_without_a_reload() {
    let dir = tempfile::tempdir().unwrap();
    let nats = NatsServer::start();
    let script = dir.path().join("trial.sh");
    std::fs::write(&script, SCRIPT).unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let pools = pools_file(dir.path(), POOLS);
    let models = dir.path().join("models");
    model_init(&models, "v1.0.0", 1);
    let worker = Worker::start(&models, &["--nats", &nats.url(), "--worker-id", "w1"], &[]);
    let up = FlotillaUp::start_with_env(
        &[
            "--nats",
            &nats.url(),
            "--pools",
            &pools,
            "--tick",
            "200ms",
            "--inference-worker",
            &worker.url,
        ],
        &[
            ("FLOTILLA_ALLOWED_COMMANDS", script.as_os_str()),
            ("FLOTILLA_RECONCILE_SECONDS", "1".as_ref()),
            ("FLOTILLA_JOBS_DIR", dir.path().join("jobs").as_os_str()),
        ],
        dir.path(),
    );
    let _agents = Agents::follow(up.url.clone(), nats.url(), dir.path().to_path_buf());
    let nodes: Vec<String> = wait_until(WITHIN, || {
        let statuses = node_statuses(&result(&up, "/v1/query/provisioner/gpu"));
        let active: Vec<String> = statuses
            .into_iter()
            .filter(|(_, s)| s == "active")
            .map(|(n, _)| n)
            .collect();
        (active.len() == 2).then_some(active)
    })
    .unwrap_or_else(|| panic!("the pool never had two active nodes:\n{}", up.log()));

    told_study(&up, 8);
    let run = json!({"type": "create_study", "seed": 2, "budget": 40,
        "bounds": {"x": {"min": -4.0, "max": 4.0}},
        "runner": {"command": [script.to_str().unwrap()], "parallel": 2, "pool": "gpu"}});
    send_ok(&up, "solver", "tuned", run);
    wait_until(WITHIN, || {
        let (_, queue) = up.get("/v1/query/scheduler/tuned");
        (queue["result"]["counts"]["succeeded"].as_u64()? >= 2).then_some(())
    })
    .unwrap_or_else(|| panic!("no job of the run succeeded:\n{}", up.log()));

    let shots = screenshots();
    let mut browser = Browser::launch();

    // Studies: the list.
    browser.navigate(&format!("{}/#/studies", up.url));
    wait_text(
        &mut browser,
        "the studies table",
        "#studies",
        &["demo", "tuned"],
    );
    browser.screenshot(&shots.join("studies.png"));

    // One study: a point per told trial, the best-so-far line, a scatter
    // per parameter, and the trials with their values.
    browser.navigate(&format!("{}/#/studies/demo", up.url));
    wait_count(
        &mut browser,
        "a point per trial",
        "section svg circle.pt.s1",
        8 + 2 * 8,
    );
    assert_eq!(
        count(&mut browser, "figure.param svg"),
        2,
        "a scatter per parameter"
    );
    assert_eq!(
        count(&mut browser, "polyline.line.s2"),
        1,
        "the best-so-far line"
    );
    assert_eq!(count(&mut browser, "#trials tbody tr"), 8);
    let study = result(&up, "/v1/query/solver/demo");
    let best = study["best"]["trial_id"].as_str().unwrap();
    wait_text(
        &mut browser,
        "the best trial",
        "#trials",
        &[best, "t8", "completed"],
    );
    // Durations come from the study's events (asked → told).
    browser.wait_for(
        "the trials' durations",
        "[...document.querySelectorAll('#trials tbody tr td:nth-child(6)')].every((td) => td.textContent.endsWith('ms'))",
        WITHIN,
    );
    browser.screenshot(&shots.join("study.png"));
    // Live: a trial told now shows up without a reload.
    let marker = browser.eval("window.dashboardMarker = 'same page'; 1");
    assert_eq!(marker, json!(1));
    let new = ask_and_tell(&up, 1);
    wait_text(&mut browser, "the trial told live", "#trials", &[&new[0]]);
    wait_count(
        &mut browser,
        "its point",
        "section svg circle.pt.s1",
        9 + 2 * 9,
    );
    assert_eq!(
        browser.eval("window.dashboardMarker"),
        json!("same page"),
        "reloaded"
    );

    // The study run: its live jobs and a pause, then a resume, from the page.
    browser.navigate(&format!("{}/#/studies/tuned", up.url));
    wait_count(&mut browser, "the run's jobs table", "#run-jobs", 1);
    browser.eval("document.querySelector('[data-action=pause_run]').click(); 1");
    wait_text(&mut browser, "the paused run", "main", &["paused"]);
    assert_eq!(result(&up, "/v1/query/study_run/tuned")["status"], "paused");
    browser.eval("document.querySelector('[data-action=resume_run]').click(); 1");
    browser.wait_for(
        "the resumed run",
        "!document.querySelector('main').textContent.includes('paused')",
        WITHIN,
    );
    browser.screenshot(&shots.join("study-run.png"));

    // Queues: the depth chart and the jobs with their output tails.
    browser.navigate(&format!("{}/#/queues/tuned", up.url));
    wait_count(
        &mut browser,
        "the depth samples",
        "section svg circle.pt.s2",
        2,
    );
    wait_text(
        &mut browser,
        "the jobs",
        "#jobs",
        &["succeeded", "hello from t1", "RESULT="],
    );
    browser.screenshot(&shots.join("queue.png"));

    // Pools: nodes by state, the GPU gauges of every node, the nodes.
    browser.navigate(&format!("{}/#/pools/gpu", up.url));
    let node_refs: Vec<&str> = nodes.iter().map(String::as_str).collect();
    wait_text(&mut browser, "the nodes", "#nodes", &node_refs);
    wait_count(&mut browser, "nodes-by-state bars", "rect.bar.st-active", 1);
    wait_count(
        &mut browser,
        "a temperature and a utilisation bar per node",
        "rect.bar.s1",
        4,
    );
    wait_text(
        &mut browser,
        "the GPUs of the nodes",
        "#nodes",
        &["gpu0", "°C"],
    );
    wait_text(
        &mut browser,
        "the pool's events",
        "#pool-events",
        &["node_", &nodes[0]],
    );
    browser.screenshot(&shots.join("pool.png"));
    // An operator's action from the page: cordon a node (the pool keeps it
    // cordoned through healthy heartbeats; its unit tests check that).
    let node = &nodes[0];
    browser.eval(&format!(
        "document.querySelector('[data-action=cordon_node][data-node={node:?}]').click(); 1"
    ));
    wait_text(
        &mut browser,
        "the answer",
        "#notice",
        &["cordon_node: done"],
    );
    wait_text(
        &mut browser,
        "the cordon",
        "#pool-events",
        &["node_cordoned", "reason=operator"],
    );

    // Inference: the worker's deployment, and its requests/s and latency
    // while requests arrive.
    browser.navigate(&format!("{}/#/inference", up.url));
    wait_text(
        &mut browser,
        "the deployment",
        "#versions-w1",
        &["v1.0.0", "loaded"],
    );
    wait_text(&mut browser, "the worker", "#workers", &[&worker.url]);
    let load = predictions(&worker);
    browser.wait_for(
        "the worker's rate",
        "Number(document.querySelector('#workers [data-rate]')?.dataset.rate) > 0",
        WITHIN,
    );
    wait_count(
        &mut browser,
        "rate and latency points",
        "section svg circle.pt.s1",
        2,
    );
    drop(load);
    browser.screenshot(&shots.join("inference.png"));

    // Events: the log, a filter, a live event, and a replay link.
    browser.navigate(&format!("{}/#/events", up.url));
    wait_text(
        &mut browser,
        "the log",
        "#events",
        &["solver/demo", "trials_told", "provisioner/gpu"],
    );
    browser.eval(
        "const f = document.getElementById('filter-stream'); f.value = 'solver/demo'; \
         f.dispatchEvent(new Event('input')); 1",
    );
    browser.wait_for(
        "only solver/demo",
        "[...document.querySelectorAll('#events tbody tr td:nth-child(2)')].every((td) => td.textContent === 'solver/demo')",
        WITHIN,
    );
    let rows = count(&mut browser, "#events tbody tr");
    let new = ask_and_tell(&up, 1);
    wait_count(
        &mut browser,
        "the live events",
        "#events tbody tr",
        rows + 2,
    );
    browser.screenshot(&shots.join("events.png"));
    browser.eval("document.querySelector('#events a[href^=\"#/replay/solver/demo/\"]').click(); 1");
    wait_text(
        &mut browser,
        "the replayed state",
        "#replayed",
        &[&new[0], "\"trials\""],
    );
    browser.screenshot(&shots.join("replay.png"));
}

#[test]
fn the_replay_route_refuses_what_it_cannot_replay() {
    let dir = tempfile::tempdir().unwrap();
    let up = FlotillaUp::start(
        &["--data-dir", dir.path().join("data").to_str().unwrap()],
        dir.path(),
    );
    told_study(&up, 2);
    let at = result(&up, "/v1/replay/solver/demo?seq=2");
    assert_eq!(at["seq"], 2, "{at}");
    assert_eq!(at["state"]["counts"]["asked"], 2, "{at}");
    assert_eq!(
        at["state"]["counts"]["told"], 0,
        "the tell came after seq 2: {at}"
    );
    for (path, status, code) in [
        ("/v1/replay/solver/demo?seq=99", 404, "NOT_FOUND"),
        ("/v1/replay/solver/nothing", 404, "NOT_FOUND"),
        ("/v1/replay/health/node-1", 400, "INVALID_FIELD"),
        ("/v1/replay/solver/demo?seq=x", 400, "INVALID_FIELD"),
        ("/v1/replay/nobody/demo", 404, "UNKNOWN_ACTOR"),
    ] {
        let (got, body) = up.get(path);
        assert_eq!(
            (got, body["error"]["code"].as_str()),
            (status, Some(code)),
            "{path}: {body}"
        );
    }
}

#[test]
fn with_tokens_the_page_asks_for_one_and_a_viewer_cannot_act() {
    let dir = tempfile::tempdir().unwrap();
    let (file, tokens) = tokens_file(dir.path());
    let up = FlotillaUp::start(
        &[
            "--tokens",
            file.to_str().unwrap(),
            "--data-dir",
            dir.path().join("data").to_str().unwrap(),
        ],
        dir.path(),
    );
    let create = json!({"type": "create_study", "seed": 1, "budget": 2,
        "bounds": {"x": {"min": 0.0, "max": 1.0}},
        "runner": {"command": ["true"], "parallel": 1}});
    let url = format!("{}/v1/cmd/solver/guarded", up.url);
    let (status, reply, _) = call("POST", &url, Some(&tokens["operator"]), Some(&create));
    assert_eq!(status, 200, "{reply}");

    let mut browser = Browser::launch();
    browser.navigate(&format!("{}/#/studies/guarded", up.url));
    browser.wait_for(
        "the token form",
        "!document.getElementById('login').hidden",
        WITHIN,
    );
    browser.eval(&format!(
        "document.getElementById('token').value = {:?}; \
         document.getElementById('login').requestSubmit(); 1",
        tokens["viewer"]
    ));
    wait_count(
        &mut browser,
        "the run's section",
        "[data-action=pause_run]",
        1,
    );
    wait_text(
        &mut browser,
        "the study, read with the token",
        "main",
        &["Study guarded"],
    );
    browser.eval("document.querySelector('[data-action=pause_run]').click(); 1");
    wait_text(
        &mut browser,
        "the refusal",
        "#notice",
        &["pause_run refused", "FORBIDDEN"],
    );
    let url = format!("{}/v1/query/study_run/guarded", up.url);
    let (_, run, _) = call("GET", &url, Some(&tokens["viewer"]), None);
    assert_ne!(run["result"]["status"], "paused", "{run}");
}
