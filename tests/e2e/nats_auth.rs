//! NATS URLs with credentials (issue 11, defect 7): `nats://user:pass@host`
//! and `nats://token@host` connect to a nats-server that requires them, and
//! a wrong password fails naming the authorization failure, never printing
//! the password. Before, the credentials in the URL were ignored, so every
//! connection to such a server failed with `authorization violation`.

use crate::support::{flotilla, FlotillaUp};
use flotilla_bus::testing::NatsServer;
use serde_json::json;
use std::process::Output;

/// `nats://<userinfo>@127.0.0.1:<port>` for `server`.
fn with_userinfo(server: &NatsServer, userinfo: &str) -> String {
    server
        .url()
        .replacen("nats://", &format!("nats://{userinfo}@"), 1)
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

#[test]
fn a_user_and_password_in_the_url_connect() {
    let dir = tempfile::tempdir().unwrap();
    let nats = NatsServer::start_with_args(&["--user", "alice", "--pass", "s3cret"]);
    let up = FlotillaUp::start(
        &["--nats", &with_userinfo(&nats, "alice:s3cret")],
        dir.path(),
    );
    let create = json!({"type": "create_study", "seed": 1, "budget": 5, "bounds": {"x": {"min": 0, "max": 1}}});
    let (status, reply) = up.send("solver", "auth", &create);
    assert_eq!(status, 200, "{reply}");

    let wrong = flotilla(&["audit", "--nats", &with_userinfo(&nats, "alice:WRONGpass")]);
    assert!(!wrong.status.success(), "a wrong password is refused");
    let message = stderr(&wrong);
    assert!(
        message.contains("authorization violation"),
        "names the failure: {message}"
    );
    assert!(
        !message.contains("WRONGpass"),
        "never prints the password: {message}"
    );
}

#[test]
fn a_token_in_the_url_connects() {
    let nats = NatsServer::start_with_args(&["--auth", "t0kenXYZ"]);
    let audit = flotilla(&["audit", "--nats", &with_userinfo(&nats, "t0kenXYZ")]);
    assert!(audit.status.success(), "{}", stderr(&audit));

    let wrong = flotilla(&["audit", "--nats", &with_userinfo(&nats, "n0tIt")]);
    let message = stderr(&wrong);
    assert!(
        !wrong.status.success() && message.contains("authorization violation"),
        "{message}"
    );
    assert!(
        !message.contains("n0tIt"),
        "never prints the token: {message}"
    );
}
