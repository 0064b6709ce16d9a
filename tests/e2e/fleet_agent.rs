//! `flotilla agent` on this machine, which has no GPU and no NVML: it must
//! say so once, clearly, keep heartbeating, serve /healthz, and never
//! crash. A bad policy rule is refused with the rule's name.

use crate::support::{flotilla, flotilla_bin, free_port, http_client, json_lines};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn without_nvml_the_agent_says_so_once_and_keeps_heartbeating() {
    if std::path::Path::new("/dev/nvidiactl").exists() {
        eprintln!("skipped: this machine has an NVIDIA driver");
        return;
    }
    let port = free_port();
    let child = Command::new(flotilla_bin())
        .args([
            "agent",
            "--node-id",
            "n1",
            "--source",
            "nvml",
            "--interval",
            "100ms",
        ])
        .args(["--http", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn agent");
    let client = http_client();
    let deadline = Instant::now() + Duration::from_secs(20);
    let health = loop {
        if let Ok(r) = client
            .get(format!("http://127.0.0.1:{port}/healthz"))
            .send()
        {
            let v: serde_json::Value = r.json().unwrap();
            if v["steps"].as_u64().unwrap_or(0) >= 10 {
                break v;
            }
        }
        assert!(Instant::now() < deadline, "agent not serving /healthz");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(health["source"], "nvml");
    assert_eq!(health["source_available"], false);
    assert!(
        health["reason"]
            .as_str()
            .unwrap()
            .contains("libnvidia-ml.so.1"),
        "{health}"
    );
    let metrics = client
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .send()
        .unwrap();
    assert_eq!(metrics.status(), 200);
    // SAFETY: kill(2) on our own child's pid.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "clean exit on SIGTERM");
    let messages = json_lines(&out.stdout);
    let unavailable: Vec<_> = messages
        .iter()
        .filter(|m| m["type"] == "health_source_unavailable")
        .collect();
    assert_eq!(unavailable.len(), 1, "said once");
    assert!(unavailable[0]["reason"]
        .as_str()
        .unwrap()
        .contains("is the NVIDIA driver installed"));
    let heartbeats = messages.iter().filter(|m| m["type"] == "heartbeat").count();
    assert!(heartbeats >= 10, "{heartbeats} heartbeats");
    assert!(
        messages.iter().all(|m| m["type"] != "report"),
        "no verdict without data"
    );
}

#[test]
fn a_bad_policy_rule_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.yaml");
    std::fs::write(
        &policy,
        "rules:\n  - name: too-hot\n    condition: event.metrics.temp >= 90\n    result: unhealthy\n",
    )
    .unwrap();
    let out = flotilla(&[
        "agent",
        "--node-id",
        "n1",
        "--policy",
        policy.to_str().unwrap(),
        "--http",
        "off",
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("rules[0] (too-hot)") && stderr.contains("event.metrics.temp"),
        "{stderr}"
    );
}
