//! Crash tests: kill -9 at random moments loses no acknowledged command,
//! applies no command twice, duplicates no trial, and the state after a
//! restart equals a clean replay of the log.
//!
//! A driver (the test thread) sends a few hundred solver commands to
//! `flotilla up` over HTTP (two studies: create, ask/tell loops, a stop,
//! no-op re-tells, and deliberate repeats of already acknowledged keys),
//! every command with its own idempotency key. A chaos thread SIGKILLs
//! `flotilla up` at random moments (a seeded random number of acknowledged
//! commands apart, then a random few milliseconds after the next request
//! starts, so often in the middle of one) and restarts it, at least
//! [`MIN_KILLS`] times. A request that fails (connection refused or reset,
//! timeout, 5xx) is unacknowledged and is retried with the same key, as a
//! real client would; an acknowledged reply goes into a ledger.
//!
//! Afterwards the log (read with `flotilla events`) must hold every
//! acknowledged event exactly once and byte-for-byte as acknowledged, no
//! event of a command that was never acknowledged, gap-free seqs and an
//! unbroken hash chain per stream, and no trial twice; `flotilla audit`
//! must pass with the right counts, and the state `flotilla up` serves after
//! one more restart must equal `flotilla replay` (a clean replay from event
//! 1, without snapshots).
//!
//! The NATS variant runs the same driver against `flotilla up --nats` and
//! also restarts nats-server itself (SIGKILL, keeping its JetStream store)
//! a few times mid-run.
//!
//! Seeded: the seed is printed; rerun with `CRASH_SEED=<n>`. Kill timing
//! still depends on the machine, so a seed reproduces the command sequence
//! and the kill plan, not the exact instants.
//!
//! Run: `NATS_SERVER_BIN=/path/to/nats-server cargo test --test e2e crash:: --
//! --skip fleet_crash:: --skip scheduler_crash:: --skip study_run_crash::
//! --nocapture` (test filters match substrings).

use crate::support::{flotilla, json_lines, FlotillaUp};
use flotilla_bus::testing::NatsServer;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

/// The two studies the driver works on.
const STUDIES: [&str; 2] = ["crash-a", "crash-b"];
/// Each study's budget: the first is used up early (empty asks while trials
/// are out, then the tell that completes it); the second stays in ask/tell
/// loops until the driver stops it late in the run.
const BUDGETS: [u64; 2] = [60, 400];
/// Fresh commands the driver plans (deliberate repeats come on top).
const PLANNED_COMMANDS: usize = 270;
/// The requirement: at least this many SIGKILLs of `flotilla up`.
const MIN_KILLS: usize = 20;
/// What the chaos thread aims for (a margin over [`MIN_KILLS`]).
const TARGET_KILLS: usize = 24;
/// After the plan, commands the driver may add while kills are still due.
const MAX_EXTRA_COMMANDS: usize = 300;
/// How many nats-server restarts the NATS variant plans.
const NATS_RESTARTS: usize = 3;
/// How long one command may stay unacknowledged (retried) before the test fails.
const COMMAND_DEADLINE: Duration = Duration::from_secs(45);
/// The driving phase ends after this, whatever the counts.
const RUN_DEADLINE: Duration = Duration::from_secs(75);
/// Client timeout of one HTTP attempt; a timed-out attempt is retried.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(4);
/// Probability that a step repeats an already acknowledged command.
const REPEAT_PROBABILITY: f64 = 0.08;

/// The seed: `CRASH_SEED`, else from the clock.
fn seed() -> u64 {
    match std::env::var("CRASH_SEED") {
        Ok(s) => s.trim().parse().expect("CRASH_SEED must be a u64"),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(7),
    }
}

/// The objective the driver "measures" for a trial: deterministic, finite.
fn objective(number: u64) -> f64 {
    let n = number as f64;
    (n * 0.37).sin() * 3.0 + n / 100.0
}

/// The last `lines` lines of a file, without terminal colours (for failure messages).
fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut plain = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // Skip an ANSI sequence: ESC [ ... letter.
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            plain.push(c);
        }
    }
    let all: Vec<&str> = plain.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Where `list` first departs from 1, 2, 3, ..., described; `None` if it does not.
fn not_one_to_n(list: &[u64]) -> Option<String> {
    let i = (0..list.len()).find(|&i| list[i] != i as u64 + 1)?;
    let around = &list[i.saturating_sub(2)..(i + 3).min(list.len())];
    Some(format!(
        "position {} holds {} (around it: {around:?})",
        i + 1,
        list[i]
    ))
}

// ---------------------------------------------------------------------------
// Chaos: the thread that kills and restarts.
// ---------------------------------------------------------------------------

/// Counters shared by the driver and the chaos thread.
#[derive(Default)]
struct Shared {
    /// HTTP attempts started by the driver.
    sent: AtomicUsize,
    /// Replies acknowledged by the driver (new commands and repeats).
    acked: AtomicUsize,
    /// SIGKILLs of `flotilla up`.
    kills: AtomicUsize,
    /// nats-server restarts.
    nats_restarts: AtomicUsize,
    /// Set by the driver when it is done.
    stop: AtomicBool,
    /// Set if the chaos thread panicked.
    failed: AtomicBool,
}

/// Sets [`Shared::failed`] when the chaos thread unwinds.
struct FailFlag(Arc<Shared>);

impl Drop for FailFlag {
    fn drop(&mut self) {
        if thread::panicking() {
            self.0.failed.store(true, Ordering::SeqCst);
        }
    }
}

/// What the chaos thread owns.
struct Chaos {
    up: FlotillaUp,
    nats: Option<NatsServer>,
    rng: StdRng,
    /// Chaos event indices at which nats-server is restarted instead of `up`.
    nats_points: BTreeSet<usize>,
}

/// Waits (bounded) until `cond` holds or the driver stops; false if it stopped.
fn wait_until(shared: &Shared, deadline: Instant, cond: impl Fn() -> bool) -> bool {
    while !cond() {
        if shared.stop.load(Ordering::SeqCst) || Instant::now() > deadline {
            return false;
        }
        thread::sleep(Duration::from_micros(500));
    }
    true
}

/// Kills `flotilla up` (and, at planned points, nats-server) at random
/// moments until [`TARGET_KILLS`] or the driver stops; returns what it owns.
fn run_chaos(mut c: Chaos, shared: Arc<Shared>) -> Chaos {
    let _flag = FailFlag(shared.clone());
    let deadline = Instant::now() + RUN_DEADLINE + Duration::from_secs(10);
    let mut event = 0usize;
    while shared.kills.load(Ordering::SeqCst) < TARGET_KILLS {
        // A random number of acknowledged commands from now...
        let gap = c.rng.random_range(1..=9);
        let target = shared.acked.load(Ordering::SeqCst) + gap;
        if !wait_until(&shared, deadline, || {
            shared.acked.load(Ordering::SeqCst) >= target
        }) {
            break;
        }
        // ...once the next request has started...
        let sent = shared.sent.load(Ordering::SeqCst);
        if !wait_until(&shared, deadline, || {
            shared.sent.load(Ordering::SeqCst) > sent
        }) {
            break;
        }
        // ...a random moment into it: a debug-build command takes a millisecond
        // or two, so mostly within this request, sometimes a few later.
        let jitter = if c.rng.random_bool(0.7) {
            c.rng.random_range(0..=2_500)
        } else {
            c.rng.random_range(0..=12_000)
        };
        thread::sleep(Duration::from_micros(jitter));
        let nats_turn = c.nats.is_some() && c.nats_points.contains(&event);
        event += 1;
        if nats_turn {
            let down = Duration::from_millis(c.rng.random_range(0..=500));
            let nats = c.nats.as_mut().expect("nats");
            nats.kill();
            thread::sleep(down);
            nats.restart();
            let n = shared.nats_restarts.fetch_add(1, Ordering::SeqCst) + 1;
            eprintln!(
                "chaos: nats-server restart #{n} (down {down:?}) after {} acks",
                shared.acked.load(Ordering::SeqCst)
            );
            // flotilla up must survive its NATS server going away.
            c.up.wait_ready(Duration::from_secs(20));
        } else {
            c.up.kill();
            let k = shared.kills.fetch_add(1, Ordering::SeqCst) + 1;
            thread::sleep(Duration::from_millis(c.rng.random_range(0..=60)));
            let t = Instant::now();
            c.up.restart();
            eprintln!(
                "chaos: SIGKILL #{k} after {} acks; ready again in {:?}",
                shared.acked.load(Ordering::SeqCst),
                t.elapsed()
            );
        }
    }
    c
}

// ---------------------------------------------------------------------------
// The driver.
// ---------------------------------------------------------------------------

/// One acknowledged command: what was sent and the first reply.
#[derive(Clone)]
struct Acked {
    study: usize,
    key: String,
    body: Value,
    /// The key went in the body's `command_id` instead of the header.
    via_field: bool,
    reply: Value,
}

/// What the driver knows of a study from acknowledged replies.
#[derive(Default)]
struct StudyModel {
    created: bool,
    stopped: bool,
    completed: bool,
    /// The last seq acknowledged for the study.
    last_seq: u64,
    /// Every trial handed out, by number (the trial JSON as asked).
    trials: BTreeMap<u64, Value>,
    /// Trial numbers handed out and not yet told.
    untold: Vec<u64>,
    /// Told trial numbers.
    told: BTreeSet<u64>,
}

impl StudyModel {
    fn can_ask(&self) -> bool {
        self.created && !self.stopped && !self.completed
    }
}

/// How one HTTP attempt ended.
enum Attempt {
    /// `ok: true`: acknowledged.
    Acked(Value),
    /// No usable answer (connection error, timeout, 5xx): retry with the
    /// same key. (A category for the statistics, the details.)
    Unacked(String, String),
    /// A 4xx or a corruption error: the test's commands are always valid.
    Rejected(u16, Value),
}

#[derive(Default)]
struct DriverStats {
    fresh: usize,
    repeats: usize,
    retried_commands: usize,
    /// Retried commands whose reply came from the log: a killed process had
    /// applied them before it could answer.
    recalled: usize,
    failed_attempts: usize,
    /// Failed attempts by kind.
    failures: BTreeMap<String, usize>,
}

struct Driver {
    label: &'static str,
    url: String,
    client: reqwest::blocking::Client,
    rng: StdRng,
    shared: Arc<Shared>,
    key_prefix: String,
    next_key: usize,
    ledger: Vec<Acked>,
    studies: Vec<StudyModel>,
    stats: DriverStats,
    /// Logs to show when something fails.
    logs: Vec<PathBuf>,
}

impl Driver {
    fn fail(&self, msg: String) -> ! {
        let mut text = format!("[{}] {msg}", self.label);
        for log in &self.logs {
            text.push_str(&format!(
                "\n--- last lines of {} ---\n{}",
                log.display(),
                tail(log, 40)
            ));
        }
        panic!("{text}");
    }

    fn post(&self, study: usize, body: &Value, key: &str, via_field: bool) -> Attempt {
        let url = format!("{}/v1/cmd/solver/{}", self.url, STUDIES[study]);
        let mut req = self.client.post(url);
        if via_field {
            let mut b = body.clone();
            b["command_id"] = json!(key);
            req = req.json(&b);
        } else {
            req = req.json(body).header("Idempotency-Key", key);
        }
        let resp = match req.send() {
            Ok(r) => r,
            Err(e) => {
                let kind = if e.is_timeout() {
                    "timeout"
                } else if e.is_connect() {
                    "connect failed"
                } else {
                    "broken mid-request"
                };
                return Attempt::Unacked(kind.into(), format!("request failed: {e:?}"));
            }
        };
        let status = resp.status().as_u16();
        let text = match resp.text() {
            Ok(t) => t,
            Err(e) => {
                return Attempt::Unacked(
                    "broken mid-request".into(),
                    format!("HTTP {status}, body unreadable: {e:?}"),
                )
            }
        };
        let reply: Value = match serde_json::from_str(&text) {
            Ok(v) => v,
            Err(_) => {
                return Attempt::Unacked(
                    "garbled reply".into(),
                    format!("HTTP {status}, not JSON: {text:?}"),
                )
            }
        };
        let code = reply["error"]["code"].as_str().unwrap_or("");
        if status == 200 && reply["ok"] == json!(true) {
            Attempt::Acked(reply)
        } else if status >= 500 && code != "CORRUPT" {
            Attempt::Unacked(
                format!("HTTP {status} {code}"),
                format!("HTTP {status}: {reply}"),
            )
        } else {
            Attempt::Rejected(status, reply)
        }
    }

    /// Sends until acknowledged, retrying with the same key.
    fn send_until_acked(
        &mut self,
        study: usize,
        body: &Value,
        key: &str,
        via_field: bool,
    ) -> Value {
        let deadline = Instant::now() + COMMAND_DEADLINE;
        let mut failures = 0usize;
        let mut timeouts = 0usize;
        let first_attempt = Instant::now();
        let mut last_error = String::new();
        loop {
            if self.shared.failed.load(Ordering::SeqCst) {
                self.fail("the chaos thread failed (see its panic above)".into());
            }
            let attempt_at = chrono::Utc::now();
            self.shared.sent.fetch_add(1, Ordering::SeqCst);
            match self.post(study, body, key, via_field) {
                Attempt::Acked(reply) => {
                    self.shared.acked.fetch_add(1, Ordering::SeqCst);
                    if timeouts > 0 {
                        eprintln!(
                            "[{}] {key}: acknowledged {:?} after its first attempt ({failures} failed attempts)",
                            self.label,
                            first_attempt.elapsed()
                        );
                    }
                    if failures > 0 {
                        self.stats.retried_commands += 1;
                        let at = reply["events"][0]["at"]
                            .as_str()
                            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok());
                        if at.is_some_and(|at| at < attempt_at) {
                            self.stats.recalled += 1;
                        }
                    }
                    return reply;
                }
                Attempt::Rejected(status, reply) => self.fail(format!(
                    "command {key} on {} ({body}) was rejected after {failures} failed \
                     attempts (last: {last_error}): HTTP {status} {reply}",
                    STUDIES[study]
                )),
                Attempt::Unacked(kind, why) => {
                    failures += 1;
                    self.stats.failed_attempts += 1;
                    if kind == "timeout" {
                        timeouts += 1;
                        eprintln!(
                            "[{}] {key}: no reply within {ATTEMPT_TIMEOUT:?} to the attempt sent at {attempt_at}; retrying",
                            self.label
                        );
                    }
                    *self.stats.failures.entry(kind).or_default() += 1;
                    last_error = why;
                    if Instant::now() > deadline {
                        self.fail(format!(
                            "command {key} on {} ({body}) unacknowledged for {COMMAND_DEADLINE:?} \
                             ({failures} attempts); last: {last_error}",
                            STUDIES[study]
                        ));
                    }
                    let pause = self.rng.random_range(10..=60);
                    thread::sleep(Duration::from_millis(pause));
                }
            }
        }
    }

    /// Sends a fresh command under a new key; checks and records the reply.
    fn command(&mut self, study: usize, body: Value) -> Value {
        self.next_key += 1;
        let key = format!("{}-{:04}", self.key_prefix, self.next_key);
        let via_field = self.rng.random_bool(0.2);
        let reply = self.send_until_acked(study, &body, &key, via_field);
        self.stats.fresh += 1;
        self.check_fresh_reply(study, &key, &body, &reply);
        self.ledger.push(Acked {
            study,
            key,
            body,
            via_field,
            reply: reply.clone(),
        });
        reply
    }

    /// A fresh reply continues the study exactly where the last one left off.
    fn check_fresh_reply(&self, study: usize, key: &str, body: &Value, reply: &Value) {
        let stream = format!("solver/{}", STUDIES[study]);
        let events = reply["events"].as_array().cloned().unwrap_or_default();
        let model = &self.studies[study];
        let seq = reply["seq"].as_u64();
        let mut problems = Vec::new();
        if reply["stream"] != json!(stream) {
            problems.push(format!("stream is {} not {stream}", reply["stream"]));
        }
        for (i, e) in events.iter().enumerate() {
            let want_seq = model.last_seq + 1 + i as u64;
            if e["seq"].as_u64() != Some(want_seq) {
                problems.push(format!(
                    "event {i} has seq {} but the study was acknowledged up to {} \
                     (an acknowledged event lost or an event applied twice)",
                    e["seq"], model.last_seq
                ));
            }
            if e["causation_id"] != json!(key) {
                problems.push(format!("event {i} has causation_id {}", e["causation_id"]));
            }
            if e["stream"] != json!(stream) {
                problems.push(format!("event {i} is on stream {}", e["stream"]));
            }
        }
        if let Some(last) = events.last() {
            if seq != last["seq"].as_u64() {
                problems.push(format!("reply seq {seq:?} is not its last event's seq"));
            }
        } else if seq != Some(model.last_seq) {
            problems.push(format!(
                "an event-less reply has seq {seq:?}, the study is at {}",
                model.last_seq
            ));
        }
        if !problems.is_empty() {
            self.fail(format!(
                "reply to {key} ({body}) is inconsistent: {}\nreply: {reply}",
                problems.join("; ")
            ));
        }
    }

    fn event_types(reply: &Value) -> Vec<String> {
        reply["events"]
            .as_array()
            .map(|es| {
                es.iter()
                    .map(|e| e["type"].as_str().unwrap_or("?").to_string())
                    .collect()
            })
            .unwrap_or_default()
    }

    fn create(&mut self, study: usize) {
        let body = json!({
            "type": "create_study",
            "seed": 42 + study as u64,
            "budget": BUDGETS[study],
            "bounds": {
                "x": {"min": -5, "max": 10},
                "lr": {"min": 0.0001, "max": 0.1, "scale": "log"}
            }
        });
        let reply = self.command(study, body);
        if Self::event_types(&reply) != ["study_created"] {
            self.fail(format!("create replied {reply}"));
        }
        let m = &mut self.studies[study];
        m.created = true;
        m.last_seq = reply["seq"].as_u64().unwrap_or(0);
    }

    fn ask(&mut self, study: usize) {
        let n: u64 = self.rng.random_range(1..=4);
        let reply = self.command(study, json!({"type": "ask", "n": n}));
        if Self::event_types(&reply) != ["trials_asked"] {
            self.fail(format!("ask replied {reply}"));
        }
        let trials = reply["result"]["trials"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let m = &self.studies[study];
        let asked = m.trials.len() as u64;
        let expected = n.min(BUDGETS[study] - asked);
        let mut problems = Vec::new();
        if trials.len() as u64 != expected {
            problems.push(format!("{} trials, expected {expected}", trials.len()));
        }
        for (i, t) in trials.iter().enumerate() {
            let want = asked + 1 + i as u64;
            if t["number"].as_u64() != Some(want) || t["trial_id"] != json!(format!("t{want}")) {
                problems.push(format!(
                    "trial {i} is {} / {}, expected t{want} (a trial handed out twice or skipped)",
                    t["trial_id"], t["number"]
                ));
            }
        }
        if reply["events"][0]["payload"]["trials"] != reply["result"]["trials"] {
            problems.push("result trials differ from the event's".into());
        }
        if !problems.is_empty() {
            self.fail(format!(
                "ask on {}: {}\nreply: {reply}",
                STUDIES[study],
                problems.join("; ")
            ));
        }
        let m = &mut self.studies[study];
        for t in trials {
            let number = t["number"].as_u64().expect("number");
            m.untold.push(number);
            m.trials.insert(number, t);
        }
        if reply["result"]["done"] == json!(true) {
            m.completed = true;
        }
        m.last_seq = reply["seq"].as_u64().unwrap_or(m.last_seq);
    }

    fn tell(&mut self, study: usize) {
        let m = &mut self.studies[study];
        let k = self.rng.random_range(1..=3).min(m.untold.len());
        let mut numbers = Vec::new();
        for _ in 0..k {
            let i = self.rng.random_range(0..m.untold.len());
            numbers.push(m.untold.swap_remove(i));
        }
        let results: Vec<Value> = numbers
            .iter()
            .map(|&n| json!({"trial_id": format!("t{n}"), "value": objective(n)}))
            .collect();
        let reply = self.command(study, json!({"type": "tell", "results": results}));
        if Self::event_types(&reply) != ["trials_told"] {
            self.fail(format!("tell of fresh trials replied {reply}"));
        }
        let m = &mut self.studies[study];
        m.told.extend(numbers);
        if reply["events"][0]["payload"]["completes_study"] == json!(true) {
            m.completed = true;
        }
        m.last_seq = reply["seq"].as_u64().unwrap_or(m.last_seq);
    }

    /// Tells an already told trial its same value under a new key: a no-op.
    fn retell(&mut self, study: usize) -> bool {
        let m = &self.studies[study];
        if m.told.is_empty() {
            return false;
        }
        let i = self.rng.random_range(0..m.told.len());
        let n = *m.told.iter().nth(i).expect("told");
        let body = json!({"type": "tell", "trial_id": format!("t{n}"), "value": objective(n)});
        let reply = self.command(study, body);
        if !Self::event_types(&reply).is_empty() {
            self.fail(format!("repeating a told outcome recorded events: {reply}"));
        }
        true
    }

    fn stop(&mut self, study: usize) {
        let reply = self.command(study, json!({"type": "stop", "reason": "crash test"}));
        if Self::event_types(&reply) != ["study_stopped"] {
            self.fail(format!("stop replied {reply}"));
        }
        let m = &mut self.studies[study];
        m.stopped = true;
        m.last_seq = reply["seq"].as_u64().unwrap_or(m.last_seq);
    }

    /// Repeats an acknowledged command (same key, same body): the reply must
    /// be the first one, and nothing may be appended.
    fn repeat(&mut self) {
        let i = self.rng.random_range(0..self.ledger.len());
        let a = self.ledger[i].clone();
        let reply = self.send_until_acked(a.study, &a.body, &a.key, a.via_field);
        self.stats.repeats += 1;
        let first = &a.reply;
        let mut problems = Vec::new();
        if reply["events"] != first["events"] {
            problems.push("different events");
        }
        if reply["result"] != first["result"] {
            problems.push("different result");
        }
        if reply["stream"] != first["stream"] {
            problems.push("different stream");
        }
        let has_events = first["events"].as_array().is_some_and(|e| !e.is_empty());
        if has_events && reply["seq"] != first["seq"] {
            problems.push("different seq");
        }
        if !has_events && reply["seq"].as_u64() != Some(self.studies[a.study].last_seq) {
            problems.push("an event-less repeat moved the study's seq");
        }
        if !problems.is_empty() {
            self.fail(format!(
                "repeating key {} ({}) is not idempotent: {}\nfirst reply: {first}\nrepeat reply: {reply}",
                a.key,
                a.body,
                problems.join(", ")
            ));
        }
    }

    /// One random step: a repeat, or a fresh command on a study with work left.
    fn step(&mut self) {
        if !self.ledger.is_empty() && self.rng.random_bool(REPEAT_PROBABILITY) {
            self.repeat();
            return;
        }
        let active: Vec<usize> = (0..STUDIES.len())
            .filter(|&s| self.studies[s].can_ask() || !self.studies[s].untold.is_empty())
            .collect();
        if active.is_empty() {
            let s = self.rng.random_range(0..STUDIES.len());
            if !self.retell(s) {
                self.repeat();
            }
            return;
        }
        let s = active[self.rng.random_range(0..active.len())];
        let roll: f64 = self.rng.random();
        if roll < 0.04 && self.retell(s) {
            return;
        }
        let m = &self.studies[s];
        if !m.untold.is_empty() && (roll < 0.5 || !m.can_ask()) {
            self.tell(s);
        } else {
            self.ask(s);
        }
    }

    /// The whole driving phase.
    fn run(&mut self, started: Instant) {
        for s in 0..STUDIES.len() {
            self.create(s);
        }
        let stop_at = PLANNED_COMMANDS * 9 / 10;
        for i in 0..PLANNED_COMMANDS {
            if started.elapsed() > RUN_DEADLINE {
                eprintln!(
                    "[{}] run deadline reached after {i} planned steps",
                    self.label
                );
                break;
            }
            if i == stop_at && self.studies[1].can_ask() {
                self.stop(1);
            } else {
                self.step();
            }
        }
        let mut extra = 0;
        while self.shared.kills.load(Ordering::SeqCst) < TARGET_KILLS
            && extra < MAX_EXTRA_COMMANDS
            && started.elapsed() < RUN_DEADLINE
            && !self.shared.failed.load(Ordering::SeqCst)
        {
            self.step();
            extra += 1;
        }
        if extra > 0 {
            eprintln!("[{}] {extra} extra steps to reach the kills", self.label);
        }
    }
}

// ---------------------------------------------------------------------------
// Verification of the log against the ledger.
// ---------------------------------------------------------------------------

/// Checks the whole log (as `flotilla events` printed it) against the
/// ledger and the driver's model. Returns each stream's last seq.
fn verify_log(label: &str, driver: &Driver, events: &[Value]) -> BTreeMap<String, u64> {
    let mut problems: Vec<String> = Vec::new();

    // Every event once; per stream seqs 1..n and an unbroken hash chain.
    let mut by_id: HashMap<&str, &Value> = HashMap::new();
    let mut by_stream: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
    for e in events {
        let id = e["id"].as_str().unwrap_or("");
        if by_id.insert(id, e).is_some() {
            problems.push(format!("event id {id} appears more than once in the log"));
        }
        let stream = e["stream"].as_str().unwrap_or("?").to_string();
        by_stream.entry(stream).or_default().push(e);
    }
    let mut heads = BTreeMap::new();
    for (stream, list) in &by_stream {
        let mut list = list.clone();
        list.sort_by_key(|e| e["seq"].as_u64().unwrap_or(0));
        let seqs: Vec<u64> = list
            .iter()
            .map(|e| e["seq"].as_u64().unwrap_or(0))
            .collect();
        if let Some(gap) = not_one_to_n(&seqs) {
            problems.push(format!("{stream}: seqs are not 1..={}: {gap}", seqs.len()));
        }
        let mut prev = "0".repeat(64);
        for e in &list {
            if e["prev_hash"] != json!(prev) {
                problems.push(format!(
                    "{stream} seq {}: prev_hash {} is not the previous checksum {prev}",
                    e["seq"], e["prev_hash"]
                ));
            }
            prev = e["checksum"].as_str().unwrap_or("").to_string();
        }
        heads.insert(stream.clone(), list.len() as u64);
    }
    let want_streams: BTreeSet<String> = STUDIES.iter().map(|s| format!("solver/{s}")).collect();
    let got_streams: BTreeSet<String> = by_stream.keys().cloned().collect();
    if got_streams != want_streams {
        problems.push(format!(
            "streams in the log: {got_streams:?}, expected {want_streams:?}"
        ));
    }

    // Every acknowledged event is in the log exactly as acknowledged, and
    // each key's events are exactly its acknowledged group.
    let mut by_cause: HashMap<&str, Vec<&Value>> = HashMap::new();
    for e in events {
        by_cause
            .entry(e["causation_id"].as_str().unwrap_or(""))
            .or_default()
            .push(e);
    }
    let mut keys = HashSet::new();
    let mut acked_events = 0usize;
    for a in &driver.ledger {
        keys.insert(a.key.as_str());
        let acked = a.reply["events"].as_array().cloned().unwrap_or_default();
        acked_events += acked.len();
        for e in &acked {
            let id = e["id"].as_str().unwrap_or("");
            match by_id.get(id) {
                None => problems.push(format!(
                    "acknowledged event {id} (key {}, {} seq {}) is missing from the log",
                    a.key, e["stream"], e["seq"]
                )),
                Some(stored) if **stored != *e => problems.push(format!(
                    "acknowledged event {id} (key {}) differs in the log:\n acked:  {e}\n stored: {stored}",
                    a.key
                )),
                Some(_) => {}
            }
        }
        let stored_ids: BTreeSet<&str> = by_cause
            .get(a.key.as_str())
            .map(|v| v.iter().map(|e| e["id"].as_str().unwrap_or("")).collect())
            .unwrap_or_default();
        let acked_ids: BTreeSet<&str> = acked
            .iter()
            .map(|e| e["id"].as_str().unwrap_or(""))
            .collect();
        let count = by_cause.get(a.key.as_str()).map_or(0, Vec::len);
        if stored_ids != acked_ids || count != acked.len() {
            problems.push(format!(
                "key {} ({}): the log holds {count} events {stored_ids:?} caused by it, \
                 the acknowledged reply had {acked_ids:?} (a command applied twice or lost)",
                a.key, a.body
            ));
        }
    }
    for (cause, list) in &by_cause {
        if !keys.contains(cause) {
            let seqs: Vec<String> = list
                .iter()
                .map(|e| format!("{} seq {}", e["stream"], e["seq"]))
                .collect();
            problems.push(format!(
                "events caused by {cause:?}, a key never acknowledged: {seqs:?}"
            ));
        }
    }
    if acked_events != events.len() {
        problems.push(format!(
            "the log holds {} events, the acknowledged replies {acked_events}",
            events.len()
        ));
    }

    // No trial twice: per stream, the asked trials are t1..tk once each and
    // are exactly the trials the driver was handed.
    for (s, name) in STUDIES.iter().enumerate() {
        let stream = format!("solver/{name}");
        let mut numbers = Vec::new();
        let mut ids = HashSet::new();
        let mut trials = BTreeMap::new();
        for e in by_stream.get(&stream).into_iter().flatten() {
            if e["type"] != json!("trials_asked") {
                continue;
            }
            for t in e["payload"]["trials"].as_array().into_iter().flatten() {
                let n = t["number"].as_u64().unwrap_or(0);
                let id = t["trial_id"].as_str().unwrap_or("").to_string();
                if !ids.insert(id.clone()) {
                    problems.push(format!("{stream}: trial {id} asked twice"));
                }
                if id != format!("t{n}") {
                    problems.push(format!("{stream}: trial {id} has number {n}"));
                }
                numbers.push(n);
                trials.insert(n, t.clone());
            }
        }
        if let Some(gap) = not_one_to_n(&numbers) {
            problems.push(format!(
                "{stream}: trial numbers in log order are not 1..={}: {gap}",
                numbers.len()
            ));
        }
        if trials != driver.studies[s].trials {
            problems.push(format!(
                "{stream}: the log's trials ({}) differ from those acknowledged to the driver ({})",
                trials.len(),
                driver.studies[s].trials.len()
            ));
        }
    }

    if !problems.is_empty() {
        let shown: Vec<&String> = problems.iter().take(30).collect();
        driver.fail(format!(
            "{label}: the log does not match the acknowledged commands ({} problems):\n{}",
            problems.len(),
            shown
                .iter()
                .map(|p| format!("- {p}"))
                .collect::<Vec<_>>()
                .join("\n")
        ));
    }
    heads
}

/// Runs a CLI command; fails with its output unless it exits 0.
fn cli_ok(driver: &Driver, args: &[&str]) -> Vec<u8> {
    let out = flotilla(args);
    if !out.status.success() {
        driver.fail(format!(
            "`flotilla {}` exited {}:\nstdout: {}\nstderr: {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    out.stdout
}

// ---------------------------------------------------------------------------
// The scenario.
// ---------------------------------------------------------------------------

fn run_scenario(
    label: &'static str,
    seed: u64,
    up: FlotillaUp,
    nats: Option<NatsServer>,
    source: Vec<String>,
    logs: Vec<PathBuf>,
) {
    let started = Instant::now();
    let shared = Arc::new(Shared::default());
    let mut chaos_rng = StdRng::seed_from_u64(seed ^ 0x5eed_c4a0_5eed_c4a0);
    let mut nats_points = BTreeSet::new();
    if nats.is_some() {
        while nats_points.len() < NATS_RESTARTS {
            nats_points.insert(chaos_rng.random_range(3..=TARGET_KILLS));
        }
    }
    eprintln!(
        "[{label}] seed {seed} (rerun with CRASH_SEED={seed}); nats restarts at chaos events {nats_points:?}"
    );
    let url = up.url.clone();
    let chaos = Chaos {
        up,
        nats,
        rng: chaos_rng,
        nats_points,
    };
    let chaos_shared = shared.clone();
    let handle = thread::spawn(move || run_chaos(chaos, chaos_shared));

    let mut driver = Driver {
        label,
        url,
        client: reqwest::blocking::Client::builder()
            .timeout(ATTEMPT_TIMEOUT)
            .pool_max_idle_per_host(0)
            .build()
            .expect("client"),
        rng: StdRng::seed_from_u64(seed),
        shared: shared.clone(),
        key_prefix: format!("k{:x}", seed & 0xffff_ffff),
        next_key: 0,
        ledger: Vec::new(),
        studies: (0..STUDIES.len()).map(|_| StudyModel::default()).collect(),
        stats: DriverStats::default(),
        logs,
    };
    driver.run(started);
    shared.stop.store(true, Ordering::SeqCst);
    let chaos = match handle.join() {
        Ok(c) => c,
        Err(_) => driver.fail("the chaos thread panicked (see above)".into()),
    };
    let drive_time = started.elapsed();
    let kills = shared.kills.load(Ordering::SeqCst);
    let nats_restarts = shared.nats_restarts.load(Ordering::SeqCst);
    eprintln!(
        "[{label}] drove {} fresh commands + {} repeats, {kills} SIGKILLs, {nats_restarts} \
         nats-server restarts, in {drive_time:?}; {} commands needed retries ({} of them had \
         been applied before the crash and were answered from the log); failed attempts: {:?}",
        driver.stats.fresh,
        driver.stats.repeats,
        driver.stats.retried_commands,
        driver.stats.recalled,
        driver.stats.failures
    );
    assert!(
        kills >= MIN_KILLS,
        "[{label}] only {kills} SIGKILLs of flotilla up (need {MIN_KILLS})"
    );
    if chaos.nats.is_some() {
        assert!(
            nats_restarts >= 2,
            "[{label}] only {nats_restarts} nats-server restarts"
        );
    }
    assert!(
        driver.stats.fresh >= 200,
        "[{label}] only {} commands acknowledged",
        driver.stats.fresh
    );
    let Chaos { mut up, nats, .. } = chaos;
    let _nats = nats; // keep nats-server running until the end

    // One last crash, then read the log from outside.
    up.kill();
    let src: Vec<&str> = source.iter().map(String::as_str).collect();
    let events = json_lines(&cli_ok(&driver, &[&["events"][..], &src].concat()));
    let heads = verify_log(label, &driver, &events);

    let audit_out = flotilla(&[&["audit"][..], &src].concat());
    let audit: Value = serde_json::from_slice(&audit_out.stdout).unwrap_or(Value::Null);
    if !audit_out.status.success()
        || audit["ok"] != json!(true)
        || audit["streams"] != json!(STUDIES.len())
        || audit["events"] != json!(events.len())
    {
        driver.fail(format!(
            "flotilla audit exited {} with {audit} (expected {} streams, {} events); stderr: {}",
            audit_out.status,
            STUDIES.len(),
            events.len(),
            String::from_utf8_lossy(&audit_out.stderr)
        ));
    }

    let mut replays = Vec::new();
    for name in STUDIES {
        let stream = format!("solver/{name}");
        let out = cli_ok(
            &driver,
            &[&["replay", "--stream", &stream][..], &src].concat(),
        );
        let replay: Value = serde_json::from_slice(&out).unwrap_or_else(|e| {
            driver.fail(format!(
                "replay output is not JSON ({e}): {}",
                String::from_utf8_lossy(&out)
            ))
        });
        if replay["seq"].as_u64() != heads.get(&stream).copied() {
            driver.fail(format!(
                "replay of {stream} ends at seq {}, the log at {:?}",
                replay["seq"],
                heads.get(&stream)
            ));
        }
        replays.push(replay);
    }

    // Recover once more and compare what it serves with the clean replay.
    let up_log = driver.logs[0].clone();
    let before_last_start = std::fs::read_to_string(&up_log).unwrap_or_default().len();
    up.restart();
    for (s, name) in STUDIES.iter().enumerate() {
        let (status, q) = up.get(&format!("/v1/query/solver/{name}"));
        let replay = &replays[s];
        if status != 200 || q["ok"] != json!(true) {
            driver.fail(format!("query of {name} after recovery: HTTP {status} {q}"));
        }
        if q["seq"] != replay["seq"] || q["result"] != replay["state"] {
            driver.fail(format!(
                "{name}: the recovered state differs from a clean replay\nrecovered (seq {}): {}\nreplayed  (seq {}): {}",
                q["seq"], q["result"], replay["seq"], replay["state"]
            ));
        }
        let m = &driver.studies[s];
        let counts = &q["result"]["counts"];
        let status_want = if m.stopped {
            "stopped"
        } else if m.completed {
            "completed"
        } else {
            "running"
        };
        if counts["asked"].as_u64() != Some(m.trials.len() as u64)
            || counts["told"].as_u64() != Some(m.told.len() as u64)
            || q["result"]["status"] != json!(status_want)
        {
            driver.fail(format!(
                "{name}: the recovered state ({} asked, {} told, {}) is not what was acknowledged \
                 ({} asked, {} told, {status_want})",
                counts["asked"],
                counts["told"],
                q["result"]["status"],
                m.trials.len(),
                m.told.len()
            ));
        }
    }
    // No panic anywhere in the run (SIGKILL leaves no trace in the log, a
    // panicking task would).
    let log = std::fs::read_to_string(&up_log).unwrap_or_default();
    if let Some(at) = log.find("panicked at") {
        driver.fail(format!(
            "flotilla up panicked during the run:\n{}",
            &log[at..(at + 2000).min(log.len())]
        ));
    }
    up.terminate();
    // Not asserted (graceful shutdown is not what this test is about), but
    // reported: with the NATS backend, SIGTERM currently makes async-nats
    // Subscriber drops panic ("there is no reactor running") while the actix
    // runtime tears down.
    let log = std::fs::read_to_string(&up_log).unwrap_or_default();
    if log
        .get(before_last_start..)
        .is_some_and(|l| l.contains("panicked at"))
    {
        eprintln!(
            "[{label}] NOTE: flotilla up panicked while shutting down on SIGTERM \
             (known issue, not asserted; CRASH_KEEP=1 keeps up.log)"
        );
    }
    eprintln!(
        "[{label}] verified {} events in {} streams against {} acknowledged commands; total {:?}",
        events.len(),
        heads.len(),
        driver.ledger.len(),
        started.elapsed()
    );
}

/// A temporary directory for the data and `up.log`; kept when `CRASH_KEEP` is set.
fn work_dir(prefix: &str) -> tempfile::TempDir {
    let keep = std::env::var_os("CRASH_KEEP").is_some();
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .disable_cleanup(keep)
        .tempdir()
        .expect("tempdir");
    eprintln!(
        "work dir {}{}",
        dir.path().display(),
        if keep { " (kept)" } else { "" }
    );
    dir
}

/// Embedded backend (sled), snapshots every 25 events.
#[test]
fn sigkill_embedded_loses_nothing_and_duplicates_nothing() {
    let seed = seed();
    let dir = work_dir("flotilla-crash-embedded-");
    let data = dir.path().join("data");
    let data = data.to_str().expect("utf-8 path").to_string();
    let up = FlotillaUp::start(&["--data-dir", &data, "--snapshot-every", "25"], dir.path());
    run_scenario(
        "embedded",
        seed,
        up,
        None,
        vec!["--data-dir".into(), data],
        vec![dir.path().join("up.log")],
    );
}

/// NATS backend (JetStream log, KV snapshots every 10 events), with
/// nats-server itself restarted mid-run.
#[test]
fn sigkill_nats_with_server_restarts_loses_nothing_and_duplicates_nothing() {
    let seed = seed();
    let dir = work_dir("flotilla-crash-nats-");
    let nats = NatsServer::start();
    let url = nats.url();
    let nats_log = nats.store_dir().join("nats-server.log");
    let up = FlotillaUp::start(&["--nats", &url, "--snapshot-every", "10"], dir.path());
    run_scenario(
        "nats",
        seed,
        up,
        Some(nats),
        vec!["--nats".into(), url],
        vec![dir.path().join("up.log"), nats_log],
    );
}
