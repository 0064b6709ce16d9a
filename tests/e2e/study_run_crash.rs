//! Study runs survive SIGKILL (issue 13, part 2): a study of [`BUDGET`]
//! trials run by the control plane, [`PARALLEL`] at a time, with a script
//! that logs every evaluation it starts, while `flotilla up` is SIGKILLed
//! at varied moments at least [`MIN_KILLS`] times and restarted on the same
//! log; on NATS the nats-server is restarted too, and with two replicas the
//! one that drives the run is killed and the other takes over.
//!
//! Afterwards:
//!
//! - the budget is reached exactly: the study told or failed `BUDGET`
//!   trials, the run completed or failed `BUDGET`, and it is `finished`;
//! - every trial was evaluated at most once per attempt (the script's log
//!   has no (trial, job, attempt) twice), each only by attempts the queue
//!   knows, never after the study took its result, and the value the study
//!   took is the one its evaluation printed;
//! - the queue started no attempt twice and none after its job ended;
//! - `flotilla audit` passes, and `flotilla replay` of `study_run/<s>`,
//!   `solver/<s>` and `scheduler/<s>` (with `up` stopped) equals what the
//!   live queries answered just before the stop, seq for seq.
//!
//! The kill moments cycle through: right after `up` is ready (re-driven
//! effects in flight), the moment an evaluation starts (a dispatch), the
//! moment the study records a result (a tell), the moment a job ends, and
//! a plain delay; `up` then stays down a varied short while (jobs end
//! unwatched). Twice, a running evaluation is SIGKILLed too while `up` is
//! down: its attempt is lost and must run again as the next attempt. The
//! schedule is a function of the kill's index, so a rerun kills at the
//! same kinds of moments.
//!
//! Run: `cargo test --test e2e study_run_crash:: -- --nocapture`.

use crate::support::{flotilla, http_client, json_lines, FlotillaUp};
use flotilla_bus::testing::NatsServer;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The study's budget.
const BUDGET: u64 = 60;
/// Trials the run keeps in flight.
const PARALLEL: u32 = 4;
/// The requirement: at least this many SIGKILLs of `up` while the run runs.
const MIN_KILLS: usize = 20;
/// How long the run may go without moving before the test gives up.
const STALL: Duration = Duration::from_secs(60);
/// How long the run may take to finish once the kills are over.
const FINISH: Duration = Duration::from_secs(120);
/// The kill (by index) after which the NATS variant restarts nats-server
/// under a running `up`.
const NATS_RESTART_LIVE: usize = 6;
/// The kill (by index) during which the NATS variant restarts nats-server
/// while `up` is down.
const NATS_RESTART_DOWN: usize = 13;
/// The kills (by index) during which one running evaluation is killed too
/// (its attempt is lost: the queue must run it again as the next attempt).
const LOSE_A_JOB: [usize; 2] = [6, 11];
/// The study of every test (each test has its own log).
const STUDY: &str = "crashrun";

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// One test's files (the script's log, the attempts' directory, `up.log`)
/// and the lease time of its replicas.
struct Bench {
    dir: tempfile::TempDir,
    /// `FLOTILLA_LEASE_SECONDS`: short, as a restarted replica waits out
    /// its dead predecessor's lease.
    lease_seconds: &'static str,
    /// One line per evaluation the script started.
    records: PathBuf,
    /// `FLOTILLA_JOBS_DIR` of every `up` of the test.
    jobs: PathBuf,
}

impl Bench {
    fn new(prefix: &str, lease_seconds: &'static str) -> Bench {
        let keep = std::env::var_os("CRASH_KEEP").is_some();
        let dir = tempfile::Builder::new()
            .prefix(prefix)
            .disable_cleanup(keep)
            .tempdir()
            .expect("tempdir");
        eprintln!("work dir {}", dir.path().display());
        let records = dir.path().join("evaluations.log");
        let jobs = dir.path().join("jobs");
        Bench {
            dir,
            lease_seconds,
            records,
            jobs,
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The environment of `up`: short lease and reconcile times, one jobs
    /// directory.
    fn envs(&self) -> Vec<(&'static str, OsString)> {
        vec![
            ("FLOTILLA_LEASE_SECONDS", self.lease_seconds.into()),
            ("FLOTILLA_RECONCILE_SECONDS", "1".into()),
            ("FLOTILLA_JOBS_DIR", self.jobs.clone().into_os_string()),
        ]
    }

    /// Starts `up <args>` with [`Self::envs`], its log in `log_dir`.
    fn start(&self, args: &[&str], log_dir: &Path) -> FlotillaUp {
        std::fs::create_dir_all(log_dir).unwrap();
        let envs = self.envs();
        let envs: Vec<(&str, &OsStr)> = envs.iter().map(|(k, v)| (*k, v.as_os_str())).collect();
        FlotillaUp::start_with_env(args, &envs, log_dir)
    }

    /// The evaluation: logs `<trial> <attempt> <pid> <job> <start ms>
    /// <pid of the process that started the job>`, sleeps 0.4–1.0 s (a
    /// function of the trial), and reports the trial's `x` as its value.
    fn script(&self) -> Vec<String> {
        let line = format!(
            "read -r _ _ _ spawner _ < /proc/$PPID/stat; \
             echo \"$FLOTILLA_TRIAL_ID $FLOTILLA_ATTEMPT_NUMBER $$ $FLOTILLA_JOB_ID \
             $(($(date +%s%N) / 1000000)) $spawner\" >> {records}; \
             h=$(printf %s \"$FLOTILLA_TRIAL_ID\" | cksum | cut -d' ' -f1); \
             t=$((h % 7 + 4)); sleep $((t / 10)).$((t % 10)); \
             echo RESULT=$FLOTILLA_PARAM_x",
            records = self.records.display()
        );
        vec!["sh".into(), "-c".into(), line]
    }

    fn evaluations(&self) -> Vec<Evaluation> {
        std::fs::read_to_string(&self.records)
            .unwrap_or_default()
            .lines()
            .map(Evaluation::parse)
            .collect()
    }

    fn evaluations_started(&self) -> usize {
        std::fs::read_to_string(&self.records)
            .map(|t| t.lines().count())
            .unwrap_or(0)
    }
}

/// One line of the script's log.
#[derive(Debug, Clone)]
struct Evaluation {
    trial: String,
    attempt: u64,
    job: String,
    started_ms: u64,
    /// The pid of the wrapper's parent: the `up` whose scheduler started it
    /// (1 or a reaper if that `up` died before the line was written).
    spawner: u32,
}

impl Evaluation {
    fn parse(line: &str) -> Evaluation {
        let parts: Vec<&str> = line.split_whitespace().collect();
        let [trial, attempt, _pid, job, started, spawner] = parts[..] else {
            panic!("bad evaluation line {line:?}")
        };
        let number = |s: &str| s.parse::<u64>().unwrap_or_else(|_| panic!("{line:?}"));
        Evaluation {
            trial: trial.to_string(),
            attempt: number(attempt),
            job: job.to_string(),
            started_ms: number(started),
            spawner: number(spawner) as u32,
        }
    }
}

/// A query's reply when it was answered: (result, seq).
fn answered(up: &FlotillaUp, actor: &str) -> Option<(Value, Value)> {
    let r = http_client()
        .get(format!("{}/v1/query/{actor}/{STUDY}", up.url))
        .send()
        .ok()?;
    if !r.status().is_success() {
        return None;
    }
    let body: Value = r.json().ok()?;
    (body["ok"] == json!(true)).then(|| (body["result"].clone(), body["seq"].clone()))
}

fn result(up: &FlotillaUp, actor: &str) -> Option<Value> {
    answered(up, actor).map(|(r, _)| r)
}

/// The trials the study told or failed (`None` while it does not answer).
fn results_recorded(up: &FlotillaUp) -> Option<u64> {
    let counts = result(up, "solver")?["counts"].clone();
    Some(counts["told"].as_u64()? + counts["failed"].as_u64()?)
}

/// Jobs of the queue that ended.
fn jobs_ended(up: &FlotillaUp) -> Option<u64> {
    let counts = result(up, "scheduler")?["counts"].clone();
    ["succeeded", "failed", "timed_out", "cancelled"]
        .iter()
        .map(|s| counts[*s].as_u64())
        .sum()
}

fn command(up: &FlotillaUp, actor: &str, body: Value) {
    let (status, reply) = up.send(actor, STUDY, &body);
    assert_eq!(status, 200, "{actor} {body}: {reply}\n{}", up.log());
}

/// Creates the study and starts its run.
fn start_run(up: &FlotillaUp, bench: &Bench) {
    command(
        up,
        "solver",
        json!({"type": "create_study", "seed": 1, "budget": BUDGET,
               "bounds": {"x": {"min": -5, "max": 10}}}),
    );
    command(
        up,
        "study_run",
        json!({"type": "start_run", "command": bench.script(), "parallel": PARALLEL}),
    );
}

/// When a kill comes.
#[derive(Debug, Clone, Copy)]
enum Moment {
    /// This long after `up` was ready.
    Delay(Duration),
    /// When the next evaluation starts.
    EvaluationStarts,
    /// When the study records the next result.
    ResultRecorded,
    /// When the next job ends.
    JobEnds,
}

impl Moment {
    /// The `i`-th kill's moment; only short delays once the results left
    /// are few for the kills left (so the run outlasts the kills: a kill
    /// soon after a restart lets little happen).
    fn nth(i: usize, results_left: u64, kills_left: usize) -> Moment {
        let ms = |n: usize| Duration::from_millis(n as u64);
        if results_left <= kills_left as u64 + u64::from(PARALLEL) {
            return Moment::Delay(ms((i * 13) % 40));
        }
        match i % 5 {
            0 => Moment::Delay(ms((i * 13) % 40)),
            1 => Moment::EvaluationStarts,
            2 => Moment::ResultRecorded,
            3 => Moment::Delay(ms(150 + (i * 137) % 600)),
            _ => Moment::JobEnds,
        }
    }
}

/// Waits for `moment`; whether the study is still short of its budget
/// then. Panics when the run stalls.
fn wait_for(up: &FlotillaUp, bench: &Bench, moment: Moment, label: &str) -> bool {
    if let Moment::Delay(d) = moment {
        std::thread::sleep(d);
        return results_recorded(up).is_none_or(|n| n < BUDGET);
    }
    // What the moment counts, when `up` answers (a replica that has not yet
    // taken the lease does not answer for the queue).
    let count = || match moment {
        Moment::EvaluationStarts => Some(bench.evaluations_started() as u64),
        Moment::ResultRecorded => results_recorded(up),
        Moment::JobEnds => jobs_ended(up),
        Moment::Delay(_) => unreachable!(),
    };
    let deadline = Instant::now() + STALL;
    let mut before = None;
    loop {
        if results_recorded(up).is_some_and(|n| n >= BUDGET) {
            return false;
        }
        match (before, count()) {
            (Some(b), Some(n)) if n > b => return true,
            (None, now) => before = now,
            _ => {}
        }
        if Instant::now() > deadline {
            panic!(
                "[{label}] {moment:?} did not come in {STALL:?}; run: {:#}\n{}",
                result(up, "study_run").unwrap_or_default(),
                up.log()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// An attempt whose processes the test killed while `up` was down.
#[derive(Debug)]
struct Lost {
    job: String,
    attempt: u64,
}

/// A running attempt of the queue, by the view `up` answers: (job,
/// attempt, pid of its process group).
fn a_running_attempt(up: &FlotillaUp) -> Option<(String, u64, i32)> {
    let queue = result(up, "scheduler")?;
    queue["jobs"].as_array()?.iter().find_map(|j| {
        let pid = j["handle"]["pid"]
            .as_i64()
            .filter(|_| j["status"] == "running")?;
        Some((
            j["job_id"].as_str()?.to_string(),
            j["attempt"].as_u64()?,
            i32::try_from(pid).ok()?,
        ))
    })
}

/// SIGKILLs the process group of `(job, attempt)` (its wrapper's pid, read
/// from the job's handle, checked to still be that wrapper); the attempt
/// is lost if it left no exit status.
fn lose(bench: &Bench, (job, attempt, pid): (String, u64, i32)) -> Option<Lost> {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let wrapper = String::from_utf8_lossy(&cmdline).contains("flotilla-job");
    if wrapper {
        // SAFETY: kill(2) on the process group the scheduler created for
        // this attempt (a descendant of our `up`).
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
        }
    }
    // The killed wrapper writes no exit file; one there means it ended first.
    std::thread::sleep(Duration::from_millis(100));
    let exit = bench
        .jobs
        .join(STUDY)
        .join(&job)
        .join(attempt.to_string())
        .join("exit");
    let reaped = wrapper && !exit.exists();
    reaped.then_some(Lost { job, attempt })
}

/// How the chaos goes on the NATS backend.
struct NatsChaos<'a> {
    server: &'a mut NatsServer,
    restarts: usize,
}

impl NatsChaos<'_> {
    fn restart(&mut self, down: Duration) {
        self.server.kill();
        std::thread::sleep(down);
        self.server.restart();
        self.restarts += 1;
    }
}

/// SIGKILLs `up` at [`Moment::nth`] moments until [`MIN_KILLS`] kills hit
/// the running study, losing a running evaluation at [`LOSE_A_JOB`]; returns
/// how many kills hit and the attempts lost.
fn kill_while_running(
    up: &mut FlotillaUp,
    bench: &Bench,
    mut nats: Option<&mut NatsChaos<'_>>,
    label: &str,
) -> (usize, Vec<Lost>) {
    let mut kills = 0;
    let mut lost = Vec::new();
    let mut left = BUDGET;
    for i in 0.. {
        if kills >= MIN_KILLS {
            break;
        }
        if let Some(n) = results_recorded(up) {
            left = BUDGET - n.min(BUDGET);
        }
        let moment = Moment::nth(i, left, MIN_KILLS - kills);
        if !wait_for(up, bench, moment, label) {
            eprintln!("[{label}] the study reached its budget after {kills} kills");
            break;
        }
        // A few milliseconds into what the moment started.
        std::thread::sleep(Duration::from_millis(((i * 7) % 25) as u64));
        let victim = LOSE_A_JOB
            .contains(&i)
            .then(|| a_running_attempt(up))
            .flatten();
        let recorded = results_recorded(up);
        up.kill();
        kills += 1;
        if let Some(l) = victim.and_then(|v| lose(bench, v)) {
            eprintln!("[{label}] killed the evaluation of {l:?} while up was down");
            lost.push(l);
        }
        let down = Duration::from_millis(((i * 53) % 300) as u64);
        if let Some(chaos) = nats.as_deref_mut().filter(|_| i == NATS_RESTART_DOWN) {
            chaos.restart(down);
            eprintln!("[{label}] nats-server restarted while up was down");
        } else {
            std::thread::sleep(down);
        }
        up.restart();
        eprintln!(
            "[{label}] SIGKILL #{kills} at {moment:?}: {} evaluations started, {recorded:?} results",
            bench.evaluations_started()
        );
        if let Some(chaos) = nats.as_deref_mut().filter(|_| i == NATS_RESTART_LIVE) {
            // `up` must ride out its NATS server going away.
            chaos.restart(Duration::from_millis(300));
            up.wait_ready(Duration::from_secs(60));
            eprintln!("[{label}] nats-server restarted under a running up");
        }
    }
    (kills, lost)
}

/// Waits until the run is `finished`; panics if it ends otherwise.
fn wait_finished(up: &FlotillaUp, label: &str) -> Value {
    let deadline = Instant::now() + FINISH;
    loop {
        if let Some(run) = result(up, "study_run") {
            match run["status"].as_str() {
                Some("finished") => return run,
                Some("failed" | "stopped") => panic!("[{label}] the run ended: {run:#}"),
                _ => {}
            }
        }
        if Instant::now() > deadline {
            panic!(
                "[{label}] the run did not finish in {FINISH:?}: {:#}\n{}",
                result(up, "study_run").unwrap_or_default(),
                up.log()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// What `up` answers for the three streams, once two reads a moment apart
/// agree (a finished run appends nothing more).
fn settled_views(up: &FlotillaUp, label: &str) -> BTreeMap<&'static str, (Value, Value)> {
    let read = || -> Option<BTreeMap<&'static str, (Value, Value)>> {
        ["study_run", "solver", "scheduler"]
            .into_iter()
            .map(|actor| Some((actor, answered(up, actor)?)))
            .collect()
    };
    let mut last = None;
    for _ in 0..50 {
        let now = read();
        if let Some(views) = now.as_ref().filter(|_| now == last) {
            return views.clone();
        }
        last = now;
        std::thread::sleep(Duration::from_millis(300));
    }
    panic!("[{label}] the finished run's state kept changing: {last:#?}");
}

/// `flotilla <args> <source>`, which must succeed.
fn cli_ok(args: &[&str], source: &[&str], label: &str) -> Vec<u8> {
    let out = flotilla(&[args, source].concat());
    assert!(
        out.status.success(),
        "[{label}] flotilla {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn events(stream: &str, source: &[&str], label: &str) -> Vec<Value> {
    json_lines(&cli_ok(&["events", "--stream", stream], source, label))
}

/// The budget is reached exactly.
fn check_budget(views: &BTreeMap<&str, (Value, Value)>, label: &str) {
    let (run, _) = &views["study_run"];
    let (study, _) = &views["solver"];
    assert_eq!(run["status"], "finished", "[{label}] {run:#}");
    let n = |v: &Value| v.as_u64().unwrap_or_else(|| panic!("[{label}] {v}"));
    let c = &study["counts"];
    assert_eq!(n(&c["told"]) + n(&c["failed"]), BUDGET, "[{label}] {c}");
    let c = &run["counts"];
    assert_eq!(
        n(&c["completed"]) + n(&c["failed"]),
        BUDGET,
        "[{label}] {c}"
    );
    assert_eq!(
        run["trials"].as_array().map(Vec::len),
        Some(BUDGET as usize)
    );
}

/// Every trial evaluated at most once per attempt, by attempts the queue
/// knows, none after the study took its result; the queue started each
/// attempt once and none after its job ended.
fn check_evaluations(
    bench: &Bench,
    views: &BTreeMap<&str, (Value, Value)>,
    source: &[&str],
    label: &str,
) -> Vec<Evaluation> {
    let evaluations = bench.evaluations();
    let (run, _) = &views["study_run"];
    let (queue, _) = &views["scheduler"];
    let trials: BTreeMap<&str, &Value> = run["trials"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["trial_id"].as_str().unwrap(), t))
        .collect();
    let jobs: BTreeMap<&str, &Value> = queue["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| (j["job_id"].as_str().unwrap(), j))
        .collect();

    // When the study took each trial's outcome.
    let mut taken_at: BTreeMap<String, u64> = BTreeMap::new();
    for e in events(&format!("solver/{STUDY}"), source, label) {
        let at = chrono::DateTime::parse_from_rfc3339(e["at"].as_str().unwrap())
            .unwrap()
            .timestamp_millis() as u64;
        let ids: Vec<&str> = match e["type"].as_str().unwrap() {
            "trials_told" => e["payload"]["results"].as_array().unwrap().iter(),
            "trials_failed" => e["payload"]["failures"].as_array().unwrap().iter(),
            _ => continue,
        }
        .filter_map(|r| r["trial_id"].as_str())
        .collect();
        for id in ids {
            assert!(
                taken_at.insert(id.to_string(), at).is_none(),
                "[{label}] the study took {id} twice"
            );
        }
    }
    assert_eq!(taken_at.len(), BUDGET as usize, "[{label}] {taken_at:?}");

    let mut seen = BTreeSet::new();
    for e in &evaluations {
        let what = format!("[{label}] evaluation {e:?}");
        assert!(
            seen.insert((e.trial.clone(), e.job.clone(), e.attempt)),
            "{what}: the same attempt ran twice"
        );
        let trial = trials.get(e.trial.as_str()).unwrap_or_else(|| {
            panic!("{what}: not a trial of the run");
        });
        assert_eq!(trial["job_id"], json!(e.job), "{what}: a second job");
        let job = jobs
            .get(e.job.as_str())
            .unwrap_or_else(|| panic!("{what}: no such job in the queue"));
        assert_eq!(job["trial_id"], json!(e.trial), "{what}: {job}");
        assert!(
            e.attempt >= 1 && e.attempt <= job["attempt"].as_u64().unwrap(),
            "{what}: an attempt the queue does not know: {job}"
        );
        let taken = taken_at[&e.trial];
        assert!(
            e.started_ms <= taken,
            "{what}: started after the study took its result (at {taken} ms)"
        );
    }
    for (id, trial) in &trials {
        let runs = evaluations.iter().filter(|e| e.trial == *id).count();
        match trial["state"].as_str() {
            Some("completed") => {
                assert!(runs >= 1, "[{label}] {id} completed unevaluated");
                // The value the study took is the one the script printed.
                let x = trial["params"]["x"].as_f64().unwrap();
                let value = trial["value"].as_f64().unwrap();
                assert!((value - x).abs() <= 1e-9 * x.abs().max(1.0), "{trial}");
            }
            Some("failed") => {}
            other => panic!("[{label}] trial {id} is {other:?}: {trial}"),
        }
    }

    // The queue's own log: one start per attempt, none after the end.
    let mut started: BTreeSet<(String, u64)> = BTreeSet::new();
    let mut ended: BTreeSet<String> = BTreeSet::new();
    for e in events(&format!("scheduler/{STUDY}"), source, label) {
        let p = &e["payload"];
        let job = p["job_id"].as_str().unwrap_or_default().to_string();
        match e["type"].as_str().unwrap() {
            "job_started" => {
                assert!(
                    !ended.contains(&job),
                    "[{label}] {job} started after it ended"
                );
                let attempt = p["attempt"].as_u64().unwrap();
                assert!(
                    started.insert((job.clone(), attempt)),
                    "[{label}] {job} attempt {attempt} started twice"
                );
            }
            "job_succeeded" | "job_cancelled" => {
                assert!(ended.insert(job.clone()), "[{label}] {job} ended twice");
            }
            "job_failed" | "job_timed_out" if p["will_retry"] != true => {
                assert!(ended.insert(job.clone()), "[{label}] {job} ended twice");
            }
            _ => {}
        }
    }
    assert_eq!(ended.len(), BUDGET as usize, "[{label}] {ended:?}");
    evaluations
}

/// Checks the log (with `up` stopped) with `flotilla audit`, and that a
/// clean replay of each stream equals what `up` answered.
fn check_replay(views: &BTreeMap<&str, (Value, Value)>, source: &[&str], label: &str) {
    let audit: Value = serde_json::from_slice(&cli_ok(&["audit"], source, label)).unwrap();
    assert_eq!(audit["ok"], json!(true), "[{label}] {audit}");
    for (actor, (state, seq)) in views {
        let stream = format!("{actor}/{STUDY}");
        let out = cli_ok(&["replay", "--stream", &stream], source, label);
        let replay: Value = serde_json::from_slice(&out).unwrap();
        // Nothing is ignored: the views are pure functions of the events.
        assert_eq!(&replay["seq"], seq, "[{label}] {stream}: seq");
        assert_eq!(
            &replay["state"], state,
            "[{label}] {stream}: the served state differs from a clean replay"
        );
    }
}

/// Each lost attempt ran again as the next attempt of its job.
fn check_lost_ran_again(lost: &[Lost], evaluations: &[Evaluation], label: &str) {
    for l in lost {
        assert!(
            evaluations
                .iter()
                .any(|e| e.job == l.job && e.attempt == l.attempt + 1),
            "[{label}] {l:?} was not run again: {evaluations:?}"
        );
    }
}

fn check_no_panic(log: &str, label: &str) {
    if let Some(at) = log.find("panicked at") {
        panic!(
            "[{label}] flotilla up panicked:\n{}",
            &log[at..(at + 2000).min(log.len())]
        );
    }
}

/// The single-replica scenario on `backend`: start, kill ≥ 20 times (and
/// restart nats-server when `nats` is given), finish, check.
fn single_replica(
    label: &str,
    bench: &Bench,
    args: &[&str],
    source: &[&str],
    nats: Option<&mut NatsServer>,
) {
    let started = Instant::now();
    let mut up = bench.start(args, bench.path());
    start_run(&up, bench);
    let mut chaos = nats.map(|server| NatsChaos {
        server,
        restarts: 0,
    });
    let (kills, lost) = kill_while_running(&mut up, bench, chaos.as_mut(), label);
    assert!(
        kills >= MIN_KILLS,
        "[{label}] the study finished after only {kills} SIGKILLs (the test needs a longer run)"
    );
    if let Some(chaos) = &chaos {
        assert_eq!(chaos.restarts, 2, "[{label}] nats-server restarts");
    }
    wait_finished(&up, label);
    let views = settled_views(&up, label);
    // The embedded log is this process's alone: read it with `up` stopped.
    up.kill();
    check_budget(&views, label);
    check_replay(&views, source, label);
    let evaluations = check_evaluations(bench, &views, source, label);
    check_lost_ran_again(&lost, &evaluations, label);
    check_no_panic(&up.log(), label);
    eprintln!(
        "[{label}] {kills} SIGKILLs, {} attempts lost, {} evaluations for {BUDGET} trials, in {:?}",
        lost.len(),
        evaluations.len(),
        started.elapsed()
    );
}

#[test]
fn sigkill_embedded_twenty_times_the_run_reaches_its_budget_exactly_once_each() {
    let bench = Bench::new("flotilla-run-crash-embedded-", "1");
    let data = bench.path().join("data").display().to_string();
    let source = ["--data-dir", data.as_str()];
    single_replica("embedded", &bench, &source, &source, None);
}

#[test]
fn sigkill_nats_twenty_times_and_a_nats_restart_the_run_reaches_its_budget_exactly_once_each() {
    let bench = Bench::new("flotilla-run-crash-nats-", "1");
    let mut nats = NatsServer::start();
    let url = nats.url();
    // NATS allows no local program until told: the evaluation is `sh`.
    let args = ["--nats", url.as_str(), "--allowed-commands", "sh"];
    let source = ["--nats", url.as_str()];
    single_replica("nats", &bench, &args, &source, Some(&mut nats));
}

/// Whether `up`'s `/metrics` has the study's trial gauges (set only by the
/// driver of its run).
fn drives(up: &FlotillaUp) -> bool {
    let text = http_client()
        .get(format!("{}/metrics", up.url))
        .send()
        .and_then(|r| r.text())
        .unwrap_or_default();
    text.lines().any(|l| {
        l.starts_with("flotilla_study_trials{") && l.contains(&format!("study=\"{STUDY}\""))
    })
}

#[test]
fn two_replicas_one_drives_and_the_other_takes_over_when_it_is_killed() {
    let label = "two-replicas";
    // A lease long enough that a busy machine does not move it by itself:
    // only the kill does.
    let bench = Bench::new("flotilla-run-crash-replicas-", "3");
    let nats = NatsServer::start();
    let url = nats.url();
    let args = ["--nats", url.as_str(), "--allowed-commands", "sh"];
    let source = ["--nats", url.as_str()];
    let (dir_a, dir_b) = (bench.path().join("a"), bench.path().join("b"));
    let mut a = bench.start(&args, &dir_a);
    let mut b = bench.start(&args, &dir_b);
    let pid_a = a.pid().unwrap();
    let pid_b = b.pid().unwrap();
    start_run(&b, &bench);

    // A took the lease first: it drives, B only serves.
    let deadline = Instant::now() + STALL;
    while bench.evaluations_started() < 12 || !drives(&a) {
        assert!(!drives(&b), "[{label}] the standby drives too");
        assert!(
            Instant::now() < deadline,
            "[{label}] no progress:\n{}",
            a.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!drives(&b), "[{label}] the standby drives too");
    assert!(
        results_recorded(&b).is_some_and(|n| n < BUDGET),
        "[{label}] the run ended before the kill"
    );
    a.kill();
    let killed_at = now_ms();

    // B takes over; A, back, waits as the standby.
    let deadline = Instant::now() + STALL;
    while !drives(&b) {
        assert!(
            Instant::now() < deadline,
            "[{label}] no takeover:\n{}",
            b.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        b.log().contains("took the control-plane lease"),
        "{}",
        b.log()
    );
    a.restart();
    let pid_a2 = a.pid().unwrap();
    wait_finished(&b, label);
    assert!(!drives(&a), "[{label}] the restarted replica drives too");

    let views = settled_views(&b, label);
    a.kill();
    b.kill();
    check_budget(&views, label);
    check_replay(&views, &source, label);
    let evaluations = check_evaluations(&bench, &views, &source, label);
    // Which replica started what: A only before its death, B only after
    // its takeover, the restarted A nothing.
    let mut by_b = 0;
    for e in &evaluations {
        if e.spawner == pid_a {
            assert!(
                e.started_ms <= killed_at,
                "[{label}] {e:?}: A after its death"
            );
        } else if e.spawner == pid_b {
            assert!(
                e.started_ms >= killed_at,
                "[{label}] {e:?}: B before the takeover"
            );
            by_b += 1;
        } else {
            assert_ne!(e.spawner, pid_a2, "[{label}] {e:?}: the restarted A drives");
        }
    }
    assert!(by_b > 0, "[{label}] B ran nothing: {evaluations:?}");
    check_no_panic(&a.log(), label);
    check_no_panic(&b.log(), label);
}
