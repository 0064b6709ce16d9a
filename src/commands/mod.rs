//! One module per subcommand, and what several of them share: a runtime
//! for those that host no actors ([`block_on`]), the wait for the shutdown
//! signal ([`wait_for_shutdown`]) and ids made of free text ([`id_chars`]).

pub mod agent;
pub mod audit;
pub mod bench;
pub mod bench_auth;
pub mod bench_fleet;
pub mod bench_inference;
pub mod bench_run;
pub mod dashboard;
pub mod events;
pub mod leadership;
pub mod model;
pub mod nats_config;
pub mod plan;
pub mod pools;
pub mod probe;
pub mod remote;
pub mod replay;
pub mod run;
pub mod scheduler;
pub mod send;
pub mod signing_key;
pub mod simulate;
pub mod study;
pub mod study_runs;
pub mod token;
pub mod up;
pub mod watch;
pub mod worker;

use anyhow::Result;

/// Runs `fut` on a fresh single-threaded tokio runtime (for the commands
/// that do not host actors).
pub fn block_on<T>(fut: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(fut)
}

/// What an id allows of `text`, at most `max` characters: ASCII letters,
/// digits, `_` and `-` as they are, any other character as `-`.
pub(crate) fn id_chars(text: &str, max: usize) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .take(max)
        .collect()
}

/// Waits for SIGINT (Ctrl-C) or SIGTERM: how a serving command (`up`,
/// `worker`, `agent`) is told to shut down.
pub async fn wait_for_shutdown() -> Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r?,
        _ = term.recv() => {}
    }
    Ok(())
}

/// The `p` quantile (0 to 1) of `sorted` latencies, in milliseconds; NaN
/// when there are none. The benches' one percentile.
pub(crate) fn percentile_ms(sorted: &[std::time::Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e3
}

/// Waits up to 60 s until `http://addr/readyz` answers 200; `what` (the
/// child serving it) exiting first is an error at once.
pub(crate) fn wait_ready(
    what: &str,
    addr: std::net::SocketAddr,
    child: &mut std::process::Child,
) -> Result<()> {
    use std::time::{Duration, Instant};
    let deadline = Instant::now() + Duration::from_secs(60);
    let client = reqwest::blocking::Client::new();
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait()? {
            anyhow::bail!("{what} exited ({status}) before it was ready");
        }
        let ready = client
            .get(format!("http://{addr}/readyz"))
            .send()
            .is_ok_and(|r| r.status().is_success());
        if ready {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    anyhow::bail!("{what} did not become ready on {addr} within 60 s")
}

/// A positive number of seconds from `name`, if set.
pub fn seconds_env(name: &str) -> Result<Option<std::time::Duration>> {
    match std::env::var(name) {
        Err(_) => Ok(None),
        Ok(text) => text
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|s| s.is_finite() && *s > 0.0)
            .map(|s| Some(std::time::Duration::from_secs_f64(s)))
            .ok_or_else(|| anyhow::anyhow!("{name}: {text:?} is not a positive number of seconds")),
    }
}
