//! Attribution (issue 12, item 4): every event records who caused it.
//! On the embedded default an HTTP command without auth is `anonymous` and
//! what the control plane does by itself is `flotilla`. On NATS a command
//! names its sender only by an Ed25519 signature from a key in the
//! principals file: a forged `Flotilla-Principal` header is recorded as
//! `unsigned` (where unsigned commands are allowed at all), as is a command
//! signed by a key nobody listed; a listed key speaking for someone else, or
//! one whose role sends no commands, is refused and changes nothing; and
//! `--unsigned-commands refuse` refuses unsigned and unknown ones. `flotilla events
//! --principal` and `flotilla audit` show it.

use crate::support::{flotilla, json_lines, FlotillaUp};
use flotilla_bus::nats::NatsBus;
use flotilla_bus::testing::NatsServer;
use flotilla_bus::{Bus, Message};
use flotilla_messages::auth::CommandSigner;
use serde_json::{json, Value};
use std::path::Path;
use std::time::Duration;

fn create(seed: u64) -> Value {
    json!({"type": "create_study", "seed": seed, "budget": 10, "bounds": {"x": {"min": 0, "max": 1}}})
}

/// A NATS user key: its signer and its public nkey.
fn user_key() -> (CommandSigner, String) {
    let pair = nkeys::KeyPair::new_user();
    let signer = CommandSigner::from_nkey_seed(&pair.seed().unwrap()).unwrap();
    (signer, pair.public_key())
}

fn write_principals(dir: &Path, entries: &[(&str, &str, &str)]) -> String {
    let text: String = entries
        .iter()
        .map(|(name, role, key)| {
            format!(
                "[[principal]]\nname = \"{name}\"\nrole = \"{role}\"\npublic_key = \"{key}\"\n\n"
            )
        })
        .collect();
    let path = dir.join("principals.toml");
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

/// Sends `body` to `subject`, signed by `signer` (for `principal`, or its
/// own) or unsigned with a forged `Flotilla-Principal`; returns the reply.
fn send(
    url: &str,
    subject: &str,
    body: &Value,
    signer: Option<(&CommandSigner, Option<&str>)>,
) -> Value {
    let body = serde_json::to_vec(body).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let bus = NatsBus::connect(url).await.unwrap();
        let msg = Message::new(subject, body.clone());
        let msg = match signer {
            Some((signer, principal)) => msg.signed_by(signer, principal),
            None => msg.with_header("Flotilla-Principal", "alice"),
        };
        let reply = bus.request(msg, Duration::from_secs(10)).await.unwrap();
        serde_json::from_slice(&reply.payload).unwrap()
    })
}

fn events(args: &[&str]) -> Vec<Value> {
    let mut all = vec!["events"];
    all.extend_from_slice(args);
    let out = flotilla(&all);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    json_lines(&out.stdout)
}

/// `flotilla up --nats url` with a tokens file holding one operator token
/// for `name` and the control plane's signing key (so its gateway signs
/// what it forwards); returns it, the token and the key file.
fn secured_up(dir: &Path, url: &str, name: &str, extra: &[&str]) -> (FlotillaUp, String, String) {
    let tokens = dir.join("tokens.json").display().to_string();
    let created = flotilla(&[
        "token", "create", "--tokens", &tokens, "--name", name, "--role", "operator",
    ]);
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    let token = String::from_utf8_lossy(&created.stdout).trim().to_string();
    let key = dir.join("signing.key").display().to_string();
    let mut args = vec!["--nats", url, "--tokens", &tokens, "--signing-key", &key];
    args.extend_from_slice(extra);
    (FlotillaUp::start(&args, dir), token, key)
}

/// POSTs `body` to the gateway's `/v1/cmd/<stream>` with `token`; expects 200.
fn post_as(up: &FlotillaUp, token: &str, stream: &str, body: &Value) {
    let reply = crate::support::http_client()
        .post(format!("{}/v1/cmd/{stream}", up.url))
        .bearer_auth(token)
        .json(body)
        .send()
        .unwrap();
    let status = reply.status().as_u16();
    assert_eq!(status, 200, "{}", reply.text().unwrap_or_default());
}

#[test]
fn embedded_commands_are_anonymous_and_effects_are_the_control_planes() {
    let dir = tempfile::tempdir().unwrap();
    let up = FlotillaUp::start(&["--data-dir", "d"], dir.path());
    let (status, reply) = up.send("solver", "s1", &create(1));
    assert_eq!(status, 200, "{reply}");
    let lines = events(&["--http", &up.url, "--stream", "solver/s1"]);
    assert!(!lines.is_empty());
    assert!(
        lines.iter().all(|e| e["principal"] == "anonymous"),
        "{lines:?}"
    );
    let filtered = events(&["--http", &up.url, "--principal", "somebody-else"]);
    assert!(filtered.is_empty(), "{filtered:?}");
}

#[test]
fn nats_commands_are_attributed_by_signature_only() {
    let dir = tempfile::tempdir().unwrap();
    let nats = NatsServer::start();
    let url = nats.url();
    let (alice, alice_key) = user_key();
    let (auditor, auditor_key) = user_key();
    let (stranger, _) = user_key();
    let principals = write_principals(
        dir.path(),
        &[
            ("alice", "operator", &alice_key),
            ("audit1", "auditor", &auditor_key),
        ],
    );
    let mut up = FlotillaUp::start(&["--nats", &url, "--principals", &principals], dir.path());

    let signed = send(
        &url,
        "flotilla.cmd.solver.a",
        &create(1),
        Some((&alice, None)),
    );
    assert_eq!(signed["ok"], true, "{signed}");
    let forged = send(&url, "flotilla.cmd.solver.u", &create(2), None);
    assert_eq!(
        forged["ok"], true,
        "unsigned commands are allowed on loopback: {forged}"
    );

    let strange = send(
        &url,
        "flotilla.cmd.solver.s",
        &create(2),
        Some((&stranger, None)),
    );
    assert_eq!(
        strange["ok"], true,
        "an unknown key counts as unsigned here: {strange}"
    );

    let refusals = [
        (Some((&alice, Some("bob"))), "FORBIDDEN", "c"),
        (Some((&auditor, None)), "FORBIDDEN", "d"),
    ];
    for (signer, code, id) in refusals {
        let reply = send(
            &url,
            &format!("flotilla.cmd.solver.{id}"),
            &create(3),
            signer,
        );
        assert_eq!(reply["error"]["code"], code, "{reply}");
    }

    let by_alice = events(&["--nats", &url, "--principal", "alice"]);
    assert!(!by_alice.is_empty());
    assert!(
        by_alice.iter().all(|e| e["stream"] == "solver/a"),
        "{by_alice:?}"
    );
    let mut unsigned = events(&["--nats", &url, "--stream", "solver/u"]);
    unsigned.extend(events(&["--nats", &url, "--stream", "solver/s"]));
    assert!(
        unsigned.iter().all(|e| e["principal"] == "unsigned"),
        "a forged header is not believed: {unsigned:?}"
    );
    let all = events(&["--nats", &url]);
    let refused: Vec<_> = all
        .iter()
        .filter(|e| ["solver/c", "solver/d"].contains(&e["stream"].as_str().unwrap_or("")))
        .collect();
    assert!(
        refused.is_empty(),
        "refused commands change nothing: {refused:?}"
    );

    let audit = flotilla(&["audit", "--nats", &url]);
    let summary: Value = serde_json::from_slice(&audit.stdout).unwrap();
    assert_eq!(summary["principals"]["alice"], by_alice.len(), "{summary}");
    assert!(
        summary["principals"]["unsigned"].as_u64().unwrap() >= 1,
        "{summary}"
    );

    up.kill();
    let _strict = FlotillaUp::start(
        &[
            "--nats",
            &url,
            "--principals",
            &principals,
            "--unsigned-commands",
            "refuse",
        ],
        dir.path(),
    );
    let refused = send(&url, "flotilla.cmd.solver.e", &create(4), None);
    assert_eq!(refused["error"]["code"], "UNAUTHENTICATED", "{refused}");
    let strange = send(
        &url,
        "flotilla.cmd.solver.e",
        &create(4),
        Some((&stranger, None)),
    );
    assert_eq!(strange["error"]["code"], "UNAUTHENTICATED", "{strange}");
    let accepted = send(
        &url,
        "flotilla.cmd.solver.e",
        &create(4),
        Some((&alice, None)),
    );
    assert_eq!(accepted["ok"], true, "{accepted}");
}

#[test]
fn on_nats_the_gateway_signs_for_the_token_it_checked() {
    let dir = tempfile::tempdir().unwrap();
    let nats = NatsServer::start();
    let url = nats.url();
    let (up, token, _) = secured_up(dir.path(), &url, "ops1", &["--unsigned-commands", "refuse"]);
    post_as(&up, &token, "solver/h1", &create(7));
    let lines = events(&["--nats", &url, "--stream", "solver/h1"]);
    assert!(!lines.is_empty());
    assert!(lines.iter().all(|e| e["principal"] == "ops1"), "{lines:?}");

    // A bare header on NATS names nobody: refused here, where unsigned commands are.
    let forged = send(&url, "flotilla.cmd.solver.h2", &create(8), None);
    assert_eq!(forged["error"]["code"], "UNAUTHENTICATED", "{forged}");
}

#[test]
fn a_worker_that_knows_the_control_planes_key_records_the_gateways_caller() {
    use crate::support::inference::{model_init, Worker};
    let dir = tempfile::tempdir().unwrap();
    let artifacts = dir.path().join("artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    model_init(&artifacts, "v0.1.0", 0);
    model_init(&artifacts, "v0.2.0", 1);
    let nats = NatsServer::start();
    let url = nats.url();
    let (up, token, key) = secured_up(dir.path(), &url, "ops2", &[]);
    let public = format!("{key}.pub");
    let _worker = Worker::start(
        &artifacts,
        &[
            "--nats",
            &url,
            "--worker-id",
            "w1",
            "--control-plane-key",
            &public,
            "--unsigned-commands",
            "refuse",
        ],
        &[("MODEL_VERSION", "v0.1.0")],
    );
    let load = json!({"type": "load_version", "version": "v0.2.0"});
    post_as(&up, &token, "inference/w1", &load);
    let theirs = events(&[
        "--nats",
        &url,
        "--stream",
        "inference/w1",
        "--principal",
        "ops2",
    ]);
    assert!(!theirs.is_empty(), "the load is recorded as ops2's");
    // Unsigned, the same command is refused: the worker believes only signatures.
    let forged = send(
        &url,
        "flotilla.cmd.inference.w1",
        &json!({"type": "load_version", "version": "v0.2.0"}),
        None,
    );
    assert_eq!(forged["error"]["code"], "UNAUTHENTICATED", "{forged}");
}
