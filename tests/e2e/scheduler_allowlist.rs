//! The local executor runs only allowed programs
//! (`scheduler.local.allowed_commands`), against a real `flotilla up` and
//! real subprocesses:
//!
//! - on NATS (a real nats-server) the default list is empty: a local job
//!   is refused at submit with 403 `COMMAND_NOT_ALLOWED`, naming the
//!   program and the setting, and nothing is recorded or run;
//! - with `--allowed-commands DIR/` a program under it runs (a real
//!   process writes its marker and reports its value), while `sh` and a
//!   `DIR/../` path are still refused;
//! - jobs accepted under that list and recovered by a scheduler restarted
//!   without it do not run: the adopted one is stopped and the waiting one
//!   fails, each naming its program;
//! - the embedded loopback default (the quick tour) still runs any program.
//!
//! Run: `NATS_SERVER_BIN=/path/to/nats-server cargo test --test e2e scheduler_allowlist::`.

use crate::support::{queue, wait_for_queue, FlotillaUp};
use flotilla_bus::testing::NatsServer;
use serde_json::{json, Value};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Writes an executable `sh` script `name` with `body` under `dir`.
fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn submit(job_id: &str, command: &[&str]) -> Value {
    json!({"type": "submit", "job_id": job_id, "spec": {"command": command}})
}

fn job<'a>(view: &'a Value, id: &str) -> &'a Value {
    view["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["job_id"] == id)
        .unwrap_or_else(|| panic!("no job {id}: {view:#}"))
}

/// Asserts a 403 `COMMAND_NOT_ALLOWED` reply naming `program` and the setting.
fn assert_not_allowed((status, reply): (u16, Value), program: &str) {
    assert_eq!(status, 403, "{reply}");
    assert_eq!(reply["error"]["code"], "COMMAND_NOT_ALLOWED", "{reply}");
    let message = reply["error"]["message"].as_str().unwrap();
    assert!(message.contains(&format!("{program:?}")), "{message}");
    assert!(
        message.contains("scheduler.local.allowed_commands"),
        "{message}"
    );
}

fn status_of(view: &Value, id: &str) -> String {
    job(view, id)["status"].as_str().unwrap().to_string()
}

#[test]
fn on_nats_local_jobs_run_only_when_allowed_and_never_after_the_list_drops_them() {
    let dir = tempfile::tempdir().unwrap();
    let nats = NatsServer::start();
    let url = nats.url();
    let bin = dir.path().join("jobs-bin");
    let marker = dir.path().join("marked");
    let mark = script(&bin, "mark.sh", "touch \"$1\"; echo RESULT=1");
    let hold = script(&bin, "hold.sh", "exec sleep 3600");
    let (mark, hold) = (mark.to_str().unwrap(), hold.to_str().unwrap());
    let jobs_dir = dir.path().join("jobs");
    let envs = [("FLOTILLA_JOBS_DIR", jobs_dir.as_os_str())];
    let marker_arg = marker.to_str().unwrap();

    // Given NATS and no list: every local job is refused at submit.
    let base = ["--nats", url.as_str(), "--only", "scheduler"];
    let mut up = FlotillaUp::start_with_env(&base, &envs, dir.path());
    assert_not_allowed(
        up.send("scheduler", "q", &submit("j1", &[mark, marker_arg])),
        mark,
    );
    let (status, reply) = up.get("/v1/query/scheduler/q");
    assert_eq!(status, 404, "nothing was recorded: {reply}");
    up.terminate();

    // Given a list naming the scripts' directory: a script there runs.
    let allowed = format!("{}/", bin.display());
    let mut with_list = base.to_vec();
    with_list.extend(["--allowed-commands", allowed.as_str()]);
    let mut up = FlotillaUp::start_with_env(&with_list, &envs, dir.path());
    let (status, reply) = up.send("scheduler", "q", &submit("j1", &[mark, marker_arg]));
    assert_eq!(status, 200, "{reply}");
    let view = wait_for_queue(&up, "q", "j1 to succeed", Duration::from_secs(30), |v| {
        status_of(v, "j1") == "succeeded"
    });
    assert_eq!(job(&view, "j1")["value"], 1.0);
    assert!(marker.exists(), "the allowed program really ran");
    // ...and what is outside it is still refused, `..` included.
    assert_not_allowed(
        up.send("scheduler", "q", &submit("j2", &["sh", "-c", "id"])),
        "sh",
    );
    let escape = format!("{}/../escape.sh", bin.display());
    assert_not_allowed(
        up.send("scheduler", "q", &submit("j3", &[&escape])),
        &escape,
    );

    // Jobs accepted under the list: one runs, one waits for the slot.
    let one = json!({"type": "configure_queue", "concurrency": 1});
    assert_eq!(up.send("scheduler", "later", &one).0, 200);
    for id in ["running", "waiting"] {
        let (status, reply) = up.send("scheduler", "later", &submit(id, &[hold]));
        assert_eq!(status, 200, "{reply}");
    }
    wait_for_queue(
        &up,
        "later",
        "an attempt running",
        Duration::from_secs(30),
        |v| status_of(v, "running") == "running",
    );
    up.kill();

    // When the scheduler restarts without the list, neither runs on: the
    // adopted process is stopped and the waiting job never starts.
    let mut up = FlotillaUp::start_with_env(&base, &envs, dir.path());
    let view = wait_for_queue(
        &up,
        "later",
        "both jobs failed",
        Duration::from_secs(60),
        |v| {
            ["running", "waiting"]
                .iter()
                .all(|id| status_of(v, id) == "failed")
        },
    );
    for (id, how) in [("running", "stopped"), ("waiting", "cannot start")] {
        let reason = job(&view, id)["reason"].as_str().unwrap().to_string();
        assert!(
            reason.starts_with(&format!("{how}: COMMAND_NOT_ALLOWED: program {hold:?}")),
            "{id}: {reason}"
        );
    }
    assert_eq!(queue(&up, "q")["counts"]["succeeded"], 1);
    up.terminate();
}

#[test]
fn the_embedded_loopback_default_runs_any_program() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let up = FlotillaUp::start(
        &["--data-dir", data.to_str().unwrap(), "--only", "scheduler"],
        dir.path(),
    );
    let (status, reply) = up.send(
        "scheduler",
        "tour",
        &submit("t1", &["sh", "-c", "echo RESULT=2"]),
    );
    assert_eq!(status, 200, "{reply}");
    let view = wait_for_queue(&up, "tour", "t1 to succeed", Duration::from_secs(30), |v| {
        status_of(v, "t1") == "succeeded"
    });
    assert_eq!(job(&view, "t1")["value"], 2.0);
}
