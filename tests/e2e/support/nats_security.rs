//! What the NATS security tests need of a secured server: decentralized
//! JWT auth (an operator, an account with JetStream, user `.creds` files,
//! made with nkeys as `nsc` would), a PKI for TLS and mutual TLS (made with
//! rcgen), and [`UpOverNats`], a `flotilla up --http off` that is ready
//! when it logs so.

use super::flotilla_bin;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use nkeys::KeyPair;
use serde_json::{json, Value};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A NATS JWT of `claims` issued (`iss`) and signed by `issuer`, about
/// `subject`: `{"typ":"JWT","alg":"ed25519-nkey"}` header, base64url
/// parts, the Ed25519 signature of `header.claims`.
pub fn jwt(issuer: &KeyPair, subject: &str, name: &str, nats: Value) -> String {
    let header = json!({"typ": "JWT", "alg": "ed25519-nkey"});
    let claims = json!({
        "jti": uuid::Uuid::new_v4().simple().to_string().to_uppercase(),
        "iat": chrono::Utc::now().timestamp(),
        "iss": issuer.public_key(),
        "name": name,
        "sub": subject,
        "nats": nats,
    });
    let encode = |v: &Value| URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap());
    let signed = format!("{}.{}", encode(&header), encode(&claims));
    let signature = issuer.sign(signed.as_bytes()).expect("sign the JWT");
    format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature))
}

/// An operator, its system account and one account (with JetStream) for
/// a nats-server in operator mode with the memory resolver.
pub struct Operator {
    operator: KeyPair,
    system: KeyPair,
    account: KeyPair,
}

impl Operator {
    /// Fresh keys.
    pub fn new() -> Operator {
        Operator {
            operator: KeyPair::new_operator(),
            system: KeyPair::new_account(),
            account: KeyPair::new_account(),
        }
    }

    /// The nats-server configuration: `operator`, `resolver: MEMORY` and
    /// the accounts' JWTs preloaded (JetStream needs the system account).
    pub fn server_config(&self) -> String {
        let operator_jwt = jwt(
            &self.operator,
            &self.operator.public_key(),
            "flotilla-test",
            json!({"type": "operator", "version": 2,
                   "system_account": self.system.public_key()}),
        );
        let system_jwt = jwt(
            &self.operator,
            &self.system.public_key(),
            "SYS",
            json!({"type": "account", "version": 2}),
        );
        let unlimited = json!({
            "subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
            "wildcards": true, "conn": -1, "leaf": -1,
            "mem_storage": -1, "disk_storage": -1, "streams": -1, "consumer": -1,
        });
        let account_jwt = jwt(
            &self.operator,
            &self.account.public_key(),
            "flotilla",
            json!({"limits": unlimited, "type": "account", "version": 2}),
        );
        format!(
            "operator: {operator_jwt}\nsystem_account: {sys}\nresolver: MEMORY\n\
             resolver_preload: {{\n  {sys}: {system_jwt}\n  {}: {account_jwt}\n}}\n",
            self.account.public_key(),
            sys = self.system.public_key(),
        )
    }

    /// A `.creds` file's text for a new user of the account, as `nsc` writes it.
    pub fn user_creds(&self, name: &str) -> String {
        creds(&self.account, name)
    }
}

/// A `.creds` text for a new user issued by `account` (which the server
/// may or may not know).
pub fn creds(account: &KeyPair, name: &str) -> String {
    let user = KeyPair::new_user();
    let user_jwt = jwt(
        account,
        &user.public_key(),
        name,
        json!({"pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1,
               "type": "user", "version": 2}),
    );
    format!(
        "-----BEGIN NATS USER JWT-----\n{user_jwt}\n------END NATS USER JWT------\n\n\
         ************************* IMPORTANT *************************\n\
         NKEY Seed printed below can be used to sign and prove identity.\n\n\
         -----BEGIN USER NKEY SEED-----\n{}\n------END USER NKEY SEED------\n",
        user.seed().unwrap()
    )
}

/// A CA, a server certificate for 127.0.0.1 and localhost, and a client
/// certificate, as PEM files in a directory.
pub struct Pki {
    /// The CA's certificate.
    pub ca: PathBuf,
    /// The server's certificate and key.
    pub server_cert: PathBuf,
    /// The server's key.
    pub server_key: PathBuf,
    /// A client certificate signed by the CA.
    pub client_cert: PathBuf,
    /// Its key.
    pub client_key: PathBuf,
}

impl Pki {
    /// Generates it all into `dir`.
    pub fn generate(dir: &Path) -> Pki {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
        };
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "flotilla test CA");
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let leaf = |names: Vec<String>, usage: ExtendedKeyUsagePurpose| {
            let key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::new(names).unwrap();
            params.extended_key_usages = vec![usage];
            let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
            (cert.pem(), key.serialize_pem())
        };
        let server = leaf(
            vec!["127.0.0.1".into(), "localhost".into()],
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        let client = leaf(
            vec!["flotilla-client".into()],
            ExtendedKeyUsagePurpose::ClientAuth,
        );
        let write = |name: &str, text: &str| {
            let path = dir.join(name);
            std::fs::write(&path, text).unwrap();
            path
        };
        Pki {
            ca: write("ca.pem", &ca.pem()),
            server_cert: write("server.pem", &server.0),
            server_key: write("server-key.pem", &server.1),
            client_cert: write("client.pem", &client.0),
            client_key: write("client-key.pem", &client.1),
        }
    }
}

/// Runs `flotilla <args>` with `envs` added (nothing else of the test
/// process's NATS settings leaks in).
pub fn flotilla_env(args: &[&str], envs: &[(&str, &OsStr)]) -> Output {
    Command::new(flotilla_bin())
        .args(args)
        .env_remove("FLOTILLA_NATS")
        .env_remove("FLOTILLA_DATA_DIR")
        .envs(envs.iter().copied())
        .output()
        .expect("run flotilla")
}

/// A running `flotilla up --http off <args>`, ready once it logs
/// `flotilla is ready`; killed on drop.
pub struct UpOverNats {
    child: Child,
    log: PathBuf,
}

impl UpOverNats {
    /// Starts it with stderr in `dir/up.log` and waits until it is ready;
    /// panics with its log if it exits first.
    pub fn start(args: &[&str], envs: &[(&str, &OsStr)], dir: &Path) -> UpOverNats {
        let log = dir.join("up.log");
        let child = Command::new(flotilla_bin())
            .args(["up", "--http", "off"])
            .args(args)
            .env_remove("FLOTILLA_NATS")
            .env_remove("FLOTILLA_DATA_DIR")
            .envs(envs.iter().copied())
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn flotilla up");
        let mut up = UpOverNats { child, log };
        up.wait_ready();
        up
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(120);
        while Instant::now() < deadline {
            if self.log().contains("flotilla is ready") {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("flotilla up exited with {status}:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("flotilla up not ready:\n{}", self.log());
    }

    /// What it logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for UpOverNats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
