//! `flotilla bench auth`: what auth costs a command, over HTTP (bearer
//! tokens) and over NATS (signed commands).
//!
//! It starts two real `flotilla up` processes on 127.0.0.1, each with its
//! own embedded log: one without auth, one with a tokens file (of
//! `--tokens-in-file` tokens, the caller's last, so the lookup compares
//! against all of them as it always does) and the default rate limits. On
//! each it creates a study, then sends `ask` commands one at a time over a
//! keep-alive connection, alternating between the two servers request by
//! request so that drift (the other helpers on the machine, sled's cache
//! warming) falls on both alike. It prints p50/p99/mean per mode and the
//! difference at p50, and, since a loaded machine's noise is larger than
//! the difference, the in-process cost of the check itself: one token
//! lookup (hash + constant-time compare with every stored hash) and one
//! rate-limit bucket check, averaged over many calls.
//!
//! Over NATS it starts two nats-servers, each with its `flotilla up`: one
//! accepting unsigned commands, one accepting only commands signed by a key
//! of its principals file. The client sends `ask` as NATS requests,
//! alternating between the two, signing each one for the second (the
//! signature is computed inside the timed span, as a real client does), and
//! prints the same table.

use anyhow::{bail, Context, Result};
use clap::Args;
use flotilla_gateway::auth::TokenFile;
use flotilla_messages::auth::{CommandSigner, Role};
use serde_json::json;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

/// `flotilla bench auth`.
#[derive(Debug, Args)]
pub struct BenchAuthArgs {
    /// Timed commands per mode (after `--warmup` untimed ones).
    #[arg(long, default_value_t = 2000)]
    pub commands: usize,
    /// Untimed commands per mode first.
    #[arg(long, default_value_t = 100)]
    pub warmup: usize,
    /// Tokens in the secured server's file (the lookup compares with each).
    #[arg(long, default_value_t = 10)]
    pub tokens_in_file: usize,
    /// Measure only HTTP (skip the NATS part, which needs a nats-server on
    /// PATH or in NATS_SERVER_BIN).
    #[arg(long)]
    pub http_only: bool,
}

/// A `flotilla up` child, killed by its pid on drop (its directory removed).
pub(crate) struct Up {
    pub(crate) child: Child,
    /// Its gateway, `http://127.0.0.1:<port>`.
    pub(crate) url: String,
    dir: PathBuf,
}

impl Drop for Up {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn start_up(dir: PathBuf, tokens: Option<&Path>) -> Result<Up> {
    let extra: Vec<String> = tokens
        .map(|f| vec!["--tokens".to_string(), f.display().to_string()])
        .unwrap_or_default();
    start_up_with(dir, &extra)
}

/// Starts `flotilla up` (data under `dir`, HTTP on a free loopback port)
/// with `extra` arguments and waits for `/readyz`.
pub(crate) fn start_up_with(dir: PathBuf, extra: &[String]) -> Result<Up> {
    std::fs::create_dir_all(&dir)?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let http: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.args(["up", "--http", &http.to_string()]);
    if !extra.iter().any(|a| a == "--nats") {
        cmd.arg("--data-dir").arg(dir.join("data"));
    }
    cmd.env("FLOTILLA_LOG", "warn")
        .env_remove("FLOTILLA_NATS")
        .env_remove("FLOTILLA_TOKENS_FILE")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    cmd.args(extra);
    let child = cmd.spawn().context("cannot start flotilla up")?;
    let mut up = Up {
        child,
        url: format!("http://{http}"),
        dir,
    };
    super::wait_ready("flotilla up", http, &mut up.child)?;
    Ok(up)
}

/// One mode's server and the caller's token.
struct Mode {
    label: &'static str,
    up: Up,
    token: Option<String>,
    latencies: Vec<Duration>,
}

impl Mode {
    fn send(
        &self,
        client: &reqwest::blocking::Client,
        body: &serde_json::Value,
    ) -> Result<Duration> {
        let mut req = client
            .post(format!("{}/v1/cmd/solver/bench", self.up.url))
            .json(body);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        let started = Instant::now();
        let r = req.send()?;
        let status = r.status();
        let text = r.text()?;
        let took = started.elapsed();
        if !status.is_success() {
            bail!("{}: {status} {text}", self.label);
        }
        Ok(took)
    }

    fn percentile_ms(&self, p: f64) -> f64 {
        super::percentile_ms(&self.latencies, p)
    }

    fn mean_ms(&self) -> f64 {
        let total: Duration = self.latencies.iter().sum();
        total.as_secs_f64() * 1e3 / self.latencies.len().max(1) as f64
    }
}

/// Runs `flotilla bench auth`.
pub fn run(args: BenchAuthArgs) -> Result<ExitCode> {
    let root = std::env::temp_dir().join(format!("flotilla-bench-auth-{}", std::process::id()));
    std::fs::create_dir_all(&root)?;
    let outcome = measure(&args, &root);
    let _ = std::fs::remove_dir_all(&root);
    let modes = outcome?;
    print_table(&args, &modes);
    print_check_cost(args.tokens_in_file.max(1));
    if !args.http_only {
        let root = root.with_extension("nats");
        std::fs::create_dir_all(&root)?;
        let outcome = measure_nats(&args, &root);
        let _ = std::fs::remove_dir_all(&root);
        print_nats_table(&args, &outcome?);
        print_signature_cost();
    }
    Ok(ExitCode::SUCCESS)
}

/// One NATS mode: its server, its `up`, the subject and the signer.
struct NatsMode {
    label: &'static str,
    _server: flotilla_bus::nats::server::NatsServer,
    _up: Up,
    url: String,
    signer: Option<CommandSigner>,
    latencies: Vec<Duration>,
}

fn nats_mode(label: &'static str, root: &Path, signed: bool) -> Result<NatsMode> {
    let server = flotilla_bus::nats::server::NatsServer::start()
        .map_err(|e| anyhow::anyhow!("nats-server: {e}"))?;
    let url = server.url();
    let dir = root.join(label.split_whitespace().next().unwrap_or("m"));
    std::fs::create_dir_all(&dir)?;
    let mut extra = vec!["--nats".to_string(), url.clone()];
    let mut signer = None;
    if signed {
        let pair = nkeys::KeyPair::new_user();
        let principals = dir.join("principals.toml");
        std::fs::write(
            &principals,
            format!(
                "[[principal]]\nname = \"bench\"\nrole = \"operator\"\npublic_key = \"{}\"\n",
                pair.public_key()
            ),
        )?;
        extra.extend(["--principals".into(), principals.display().to_string()]);
        extra.extend(["--unsigned-commands".into(), "refuse".into()]);
        let seed = pair.seed().map_err(|e| anyhow::anyhow!("nkey: {e}"))?;
        signer = Some(CommandSigner::from_nkey_seed(&seed).map_err(anyhow::Error::msg)?);
    }
    let up = start_up_with(dir, &extra)?;
    Ok(NatsMode {
        label,
        _server: server,
        _up: up,
        url,
        signer,
        latencies: Vec::new(),
    })
}

/// The time of signing a command and of checking it, in-process.
fn print_signature_cost() {
    use flotilla_messages::auth::{KeyRing, KeyRole, KnownKey};
    // Curve arithmetic is ~100x slower unoptimised: fewer calls in debug.
    const CALLS: u32 = if cfg!(debug_assertions) { 200 } else { 20_000 };
    let pair = nkeys::KeyPair::new_user();
    let seed = pair.seed().unwrap_or_default();
    let Ok(signer) = CommandSigner::from_nkey_seed(&seed) else {
        return;
    };
    let mut ring = KeyRing::default();
    if let Some(key) = flotilla_messages::auth::signature::decode_public_key(&pair.public_key())
        .and_then(|raw| flotilla_messages::VerifyingKey::from_bytes(&raw).ok())
    {
        let (name, role) = ("bench".to_string(), KeyRole::Operator);
        ring.insert(key, KnownKey { name, role });
    }
    let (subject, body) = ("flotilla.cmd.solver.bench", br#"{"type":"ask","n":1}"#);
    let now = chrono::Utc::now().timestamp_micros();
    let started = Instant::now();
    let mut headers = Vec::new();
    for _ in 0..CALLS {
        headers = signer.headers(subject, None, now, None, std::hint::black_box(body));
    }
    let sign = started.elapsed() / CALLS;
    let find = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    };
    let started = Instant::now();
    let mut ok = 0;
    for _ in 0..CALLS {
        ok += usize::from(matches!(ring.verify(subject, body, find, now), Ok(Some(_))));
    }
    let verify = started.elapsed() / CALLS;
    println!(
        "per command, in-process: sign {:.1} µs (client), verify {:.1} µs (host; {ok} verified)",
        sign.as_secs_f64() * 1e6,
        verify.as_secs_f64() * 1e6
    );
}

fn measure_nats(args: &BenchAuthArgs, root: &Path) -> Result<Vec<NatsMode>> {
    use flotilla_bus::{Bus, Message};
    let mut modes = vec![
        nats_mode("unsigned", root, false)?,
        nats_mode("signed (Ed25519 nkey)", root, true)?,
    ];
    crate::commands::block_on(async {
        let mut buses = Vec::new();
        for m in &modes {
            buses.push(flotilla_bus::nats::NatsBus::connect(&m.url).await?);
        }
        let subject = "flotilla.cmd.solver.bench";
        let create = serde_json::to_vec(&json!({"type": "create_study", "seed": 1,
            "budget": 1_000_000_000u64, "sampler": "random", "bounds": {"x": {"min": 0, "max": 1}}}))?;
        let ask = serde_json::to_vec(&json!({"type": "ask", "n": 1}))?;
        let total = args.warmup + args.commands;
        for i in 0..=total {
            for (m, bus) in modes.iter_mut().zip(&buses) {
                let body = if i == 0 { &create } else { &ask };
                let started = Instant::now();
                let mut msg = Message::new(subject, body.clone());
                if let Some(signer) = &m.signer {
                    msg = msg.signed_by(signer, None);
                }
                let reply = bus.request(msg, Duration::from_secs(30)).await?;
                let took = started.elapsed();
                let answer: serde_json::Value = serde_json::from_slice(&reply.payload)?;
                if answer["ok"] != true {
                    bail!("{}: {answer}", m.label);
                }
                if i > args.warmup {
                    m.latencies.push(took);
                }
            }
        }
        anyhow::Ok(())
    })?;
    for m in modes.iter_mut() {
        m.latencies.sort();
    }
    Ok(modes)
}

fn print_nats_table(args: &BenchAuthArgs, modes: &[NatsMode]) {
    let pct = |m: &NatsMode, p: f64| super::percentile_ms(&m.latencies, p);
    println!();
    println!(
        "command latency over NATS (request on flotilla.cmd.solver, ask n=1, JetStream log, {} \
         commands per mode, interleaved)",
        args.commands
    );
    println!("| mode | p50 ms | p99 ms |");
    println!("|---|---|---|");
    for m in modes {
        println!("| {} | {:.3} | {:.3} |", m.label, pct(m, 0.5), pct(m, 0.99));
    }
    if let [open, signed] = modes {
        let p50 = (pct(signed, 0.5) / pct(open, 0.5) - 1.0) * 100.0;
        let p99 = (pct(signed, 0.99) / pct(open, 0.99) - 1.0) * 100.0;
        println!("signing adds {p50:+.1}% at p50, {p99:+.1}% at p99");
    }
}

/// The time of one authentication decision's parts, in-process.
fn print_check_cost(tokens_in_file: usize) {
    use flotilla_gateway::auth::{RateLimitTable, RateLimiters, TokenStore};
    const CALLS: u32 = 100_000;
    let mut file = TokenFile::default();
    let mut token = String::new();
    for i in 0..tokens_in_file {
        token = file
            .create(&format!("t{i}"), Role::Operator)
            .unwrap_or_default();
    }
    let store = TokenStore::new(&file);
    let started = Instant::now();
    let mut found = 0;
    for _ in 0..CALLS {
        found += usize::from(store.lookup(std::hint::black_box(&token)).is_some());
    }
    let lookup = started.elapsed() / CALLS;
    let mut table = RateLimitTable::default();
    // A bucket that never runs dry, so every check takes the same path.
    let _ = table.apply_spec("operator=1000000000/1000000000");
    let limits = RateLimiters::new(&table);
    let principal = store.lookup(&token).cloned();
    let started = Instant::now();
    for _ in 0..CALLS {
        std::hint::black_box(limits.check(principal.as_ref(), None));
    }
    let bucket = started.elapsed() / CALLS;
    println!(
        "per request, in-process: token lookup among {tokens_in_file} {:.1} µs ({found} found), \
         rate-limit check {:.1} µs",
        lookup.as_secs_f64() * 1e6,
        bucket.as_secs_f64() * 1e6
    );
}

fn measure(args: &BenchAuthArgs, root: &Path) -> Result<Vec<Mode>> {
    let file_path = root.join("tokens.json");
    let mut file = TokenFile::default();
    for i in 1..args.tokens_in_file.max(1) {
        file.create(&format!("other-{i}"), Role::Viewer)?;
    }
    let token = file.create("bench", Role::Operator)?;
    file.save(&file_path)?;
    let mut modes = vec![
        Mode {
            label: "no auth (anonymous)",
            up: start_up(root.join("open"), None)?,
            token: None,
            latencies: Vec::new(),
        },
        Mode {
            label: "bearer token + rate limit",
            up: start_up(root.join("secured"), Some(&file_path))?,
            token: Some(token),
            latencies: Vec::new(),
        },
    ];
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    let create = json!({"type": "create_study", "seed": 1, "budget": 1_000_000_000u64,
        "sampler": "random", "bounds": {"x": {"min": 0, "max": 1}}});
    let ask = json!({"type": "ask", "n": 1});
    for m in &modes {
        m.send(&client, &create)?;
        for _ in 0..args.warmup {
            m.send(&client, &ask)?;
        }
    }
    // The default operator limit is 100/s: pace so neither mode is limited.
    let pace = Duration::from_millis(6);
    for _ in 0..args.commands {
        for m in modes.iter_mut() {
            let started = Instant::now();
            let took = m.send(&client, &ask)?;
            m.latencies.push(took);
            if let Some(rest) = pace.checked_sub(started.elapsed()) {
                std::thread::sleep(rest);
            }
        }
    }
    for m in modes.iter_mut() {
        m.latencies.sort();
    }
    Ok(modes)
}

fn print_table(args: &BenchAuthArgs, modes: &[Mode]) {
    let build = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    println!(
        "command latency over HTTP (POST /v1/cmd/solver, ask n=1, embedded, {} commands per mode, \
         interleaved; {} tokens in the file; {build} build)",
        args.commands, args.tokens_in_file
    );
    println!("| mode | p50 ms | p99 ms | mean ms |");
    println!("|---|---|---|---|");
    for m in modes {
        println!(
            "| {} | {:.3} | {:.3} | {:.3} |",
            m.label,
            m.percentile_ms(0.5),
            m.percentile_ms(0.99),
            m.mean_ms()
        );
    }
    if let [open, secured] = modes {
        let p50 = (secured.percentile_ms(0.5) / open.percentile_ms(0.5) - 1.0) * 100.0;
        let p99 = (secured.percentile_ms(0.99) / open.percentile_ms(0.99) - 1.0) * 100.0;
        println!("auth adds {p50:+.1}% at p50, {p99:+.1}% at p99");
    }
}
