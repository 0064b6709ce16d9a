//! NATS credentials and TLS for every process that connects (issue 12,
//! item 1), against a real nats-server: a token file (and the env-only
//! `FLOTILLA_NATS_TOKEN`), a user with a password file (and
//! `FLOTILLA_NATS_PASSWORD`), an nkey seed file, a `.creds` file (the
//! server in operator mode with JWTs made here), `tls://` with a CA file,
//! and mutual TLS. Each: `flotilla up --nats … --http off` plus `flotilla
//! send --nats …` (create and ask a study), and `flotilla audit --nats …`;
//! a wrong credential exits 2 naming the setting without printing the
//! secret; a missing file names the setting.

use crate::support::nats_security::{creds, flotilla_env, Operator, Pki, UpOverNats};
use flotilla_bus::testing::NatsServer;
use serde_json::Value;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Output;

const CREATE: &str =
    r#"{"type": "create_study", "seed": 1, "budget": 5, "bounds": {"x": {"min": 0, "max": 1}}}"#;
const ASK: &str = r#"{"type": "ask", "n": 1}"#;

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn arg(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// `flotilla up` on `url` with `auth`, then a study created and asked over
/// NATS with `auth`, then an audit of the log with `auth`.
fn round_trip(url: &str, auth: &[&str], envs: &[(&str, &OsStr)], dir: &Path) {
    let up = UpOverNats::start(&[&["--nats", url], auth].concat(), envs, dir);
    for (command, what) in [(CREATE, "create"), (ASK, "ask")] {
        let out = flotilla_env(
            &[&["send", "solver", "creds", command, "--nats", url], auth].concat(),
            envs,
        );
        assert!(
            out.status.success(),
            "{what}: {}\n{}\nup:\n{}",
            String::from_utf8_lossy(&out.stdout),
            stderr(&out),
            up.log()
        );
        let reply: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(reply["ok"], true, "{what}: {reply}");
    }
    let audit = flotilla_env(&[&["audit", "--nats", url], auth].concat(), envs);
    assert!(audit.status.success(), "audit: {}", stderr(&audit));
    let summary: Value = serde_json::from_slice(&audit.stdout).unwrap();
    assert_eq!(summary["ok"], true, "{summary}");
    assert!(summary["events"].as_u64().unwrap() >= 2, "{summary}");
}

/// Exit 2, naming `setting` and `why`, never printing `secret`.
fn assert_fails(out: &Output, setting: &str, why: &str, secret: &str) {
    let message = stderr(out);
    assert_eq!(out.status.code(), Some(2), "{message}");
    assert!(message.contains(setting), "names {setting}: {message}");
    assert!(message.contains(why), "says {why}: {message}");
    assert!(
        secret.is_empty() || !message.contains(secret),
        "never prints the secret: {message}"
    );
}

#[test]
fn a_token_file_or_the_token_variable_connects_and_a_wrong_token_names_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let nats = NatsServer::start_with_args(&["--auth", "t0ken-right-4242"]);
    let url = nats.url();
    let token = write(dir.path(), "token", "t0ken-right-4242\n");
    round_trip(&url, &["--nats-token-file", arg(&token)], &[], dir.path());
    let by_env = [("FLOTILLA_NATS_TOKEN", OsStr::new("t0ken-right-4242"))];
    let audit = flotilla_env(&["audit", "--nats", &url], &by_env);
    assert!(audit.status.success(), "{}", stderr(&audit));

    let config = write(
        dir.path(),
        "flotilla.toml",
        &format!("nats = {url:?}\nnats_token_file = {:?}\n", arg(&token)),
    );
    let audit = flotilla_env(&["audit", "--config", arg(&config)], &[]);
    assert!(
        audit.status.success(),
        "from the config file: {}",
        stderr(&audit)
    );

    let wrong = write(dir.path(), "wrong", "t0ken-WRONG-9999");
    for command in ["audit", "up"] {
        let out = flotilla_env(
            &[command, "--nats", &url, "--nats-token-file", arg(&wrong)],
            &[],
        );
        assert_fails(
            &out,
            "nats_token_file",
            "authorization violation",
            "t0ken-WRONG",
        );
    }
    let out = flotilla_env(
        &["audit", "--nats", &url],
        &[("FLOTILLA_NATS_TOKEN", OsStr::new("t0ken-WRONG-9999"))],
    );
    assert_fails(
        &out,
        "FLOTILLA_NATS_TOKEN",
        "authorization violation",
        "t0ken-WRONG",
    );
    let missing = dir.path().join("no-such-token");
    let out = flotilla_env(
        &[
            "send",
            "solver",
            "x",
            ASK,
            "--nats",
            &url,
            "--nats-token-file",
            arg(&missing),
        ],
        &[],
    );
    assert_fails(&out, "nats_token_file: cannot read", "no-such-token", "");
}

#[test]
fn a_user_with_a_password_file_or_variable_connects_and_a_wrong_one_names_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let nats = NatsServer::start_with_args(&["--user", "alice", "--pass", "pa55-right-77"]);
    let url = nats.url();
    let password = write(dir.path(), "pw", "pa55-right-77\n");
    let auth = [
        "--nats-user",
        "alice",
        "--nats-password-file",
        arg(&password),
    ];
    round_trip(&url, &auth, &[], dir.path());
    let by_env = [
        ("FLOTILLA_NATS_USER", OsStr::new("alice")),
        ("FLOTILLA_NATS_PASSWORD", OsStr::new("pa55-right-77")),
    ];
    let audit = flotilla_env(&["audit", "--nats", &url], &by_env);
    assert!(audit.status.success(), "{}", stderr(&audit));

    let wrong = write(dir.path(), "wrong", "pa55-WRONG-00");
    let out = flotilla_env(
        &[
            "audit",
            "--nats",
            &url,
            "--nats-user",
            "alice",
            "--nats-password-file",
            arg(&wrong),
        ],
        &[],
    );
    assert_fails(
        &out,
        "nats_password_file",
        "authorization violation",
        "pa55-WRONG",
    );
    let out = flotilla_env(&["audit", "--nats", &url, "--nats-user", "alice"], &[]);
    assert_fails(&out, "nats_user", "needs a password", "");
}

#[test]
fn an_nkey_seed_file_connects_and_a_wrong_or_bad_seed_names_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let user = nkeys::KeyPair::new_user();
    let config = write(
        dir.path(),
        "nats.conf",
        &format!(
            "authorization {{ users = [ {{ nkey: {} }} ] }}\n",
            user.public_key()
        ),
    );
    let nats = NatsServer::start_with_args(&["-c", arg(&config)]);
    let url = nats.url();
    let seed = write(dir.path(), "alice.nk", &user.seed().unwrap());
    round_trip(&url, &["--nats-nkey", arg(&seed)], &[], dir.path());

    let stranger = nkeys::KeyPair::new_user();
    let stranger_seed = stranger.seed().unwrap();
    let other = write(dir.path(), "other.nk", &stranger_seed);
    let out = flotilla_env(&["audit", "--nats", &url, "--nats-nkey", arg(&other)], &[]);
    assert_fails(&out, "nats_nkey", "authorization violation", &stranger_seed);
    assert!(
        stderr(&out).contains(&stranger.public_key()),
        "names the key by its public key: {}",
        stderr(&out)
    );
    let bad = write(dir.path(), "bad.nk", "SUxNOTAxSEEDx");
    let out = flotilla_env(&["audit", "--nats", &url, "--nats-nkey", arg(&bad)], &[]);
    assert_fails(&out, "nats_nkey:", "not a valid nkey seed", "SUxNOTAxSEEDx");
    let out = flotilla_env(
        &["audit", "--nats", &url],
        &[("FLOTILLA_NATS_NKEY", dir.path().join("gone.nk").as_os_str())],
    );
    assert_fails(&out, "nats_nkey: cannot read", "gone.nk", "");
}

#[test]
fn a_creds_file_connects_in_operator_mode_and_a_stranger_or_malformed_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let operator = Operator::new();
    let config = write(dir.path(), "nats.conf", &operator.server_config());
    let nats = NatsServer::start_with_args(&["-c", arg(&config)]);
    let url = nats.url();
    let user = write(
        dir.path(),
        "flotilla.creds",
        &operator.user_creds("flotilla"),
    );
    let by_env = [("FLOTILLA_NATS_CREDS", user.as_os_str())];
    round_trip(&url, &[], &by_env, dir.path());

    let text = creds(&nkeys::KeyPair::new_account(), "stranger");
    let seed = text.lines().find(|l| l.starts_with("SU")).unwrap();
    let stranger = write(dir.path(), "stranger.creds", &text);
    let out = flotilla_env(
        &["audit", "--nats", &url, "--nats-creds", arg(&stranger)],
        &[],
    );
    assert_fails(&out, "nats_creds", "authorization violation", seed);
    let malformed = write(
        dir.path(),
        "bad.creds",
        "-----BEGIN NATS USER JWT-----\nnot-a-jwt\n",
    );
    let out = flotilla_env(
        &["audit", "--nats", &url, "--nats-creds", arg(&malformed)],
        &[],
    );
    assert_fails(&out, "nats_creds:", "not a valid .creds file", "");
}

/// `tls://127.0.0.1:<port>` of `nats`.
fn tls_url(nats: &NatsServer) -> String {
    nats.url().replacen("nats://", "tls://", 1)
}

#[test]
fn tls_with_a_ca_file_connects_and_without_it_the_server_is_not_trusted() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::generate(dir.path());
    let nats = NatsServer::start_with_args(&[
        "--tls",
        "--tlscert",
        arg(&pki.server_cert),
        "--tlskey",
        arg(&pki.server_key),
    ]);
    let url = tls_url(&nats);
    round_trip(&url, &["--nats-ca", arg(&pki.ca)], &[], dir.path());

    let out = flotilla_env(&["audit", "--nats", &url], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("cannot connect"), "{}", stderr(&out));
    let not_pem = write(dir.path(), "not.pem", "hello");
    let out = flotilla_env(&["audit", "--nats", &url, "--nats-ca", arg(&not_pem)], &[]);
    assert_fails(&out, "nats_ca:", "holds no PEM certificate", "");
}

#[test]
fn mutual_tls_connects_with_the_client_certificate_and_not_without() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::generate(dir.path());
    let nats = NatsServer::start_with_args(&[
        "--tlsverify",
        "--tlscert",
        arg(&pki.server_cert),
        "--tlskey",
        arg(&pki.server_key),
        "--tlscacert",
        arg(&pki.ca),
    ]);
    let url = tls_url(&nats);
    let envs = [
        ("FLOTILLA_NATS_CA", pki.ca.as_os_str()),
        ("FLOTILLA_NATS_CERT", pki.client_cert.as_os_str()),
        ("FLOTILLA_NATS_KEY", pki.client_key.as_os_str()),
    ];
    round_trip(&url, &[], &envs, dir.path());

    let out = flotilla_env(&["audit", "--nats", &url, "--nats-ca", arg(&pki.ca)], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("cannot connect"), "{}", stderr(&out));
    let out = flotilla_env(
        &[
            "audit",
            "--nats",
            &url,
            "--nats-ca",
            arg(&pki.ca),
            "--nats-cert",
            arg(&pki.client_cert),
        ],
        &[],
    );
    assert_fails(&out, "nats_cert:", "needs nats_key", "");
}
