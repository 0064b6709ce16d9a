//! One module per subcommand, and what several of them share: a runtime
//! for those that host no actors ([`block_on`]) and an actix system for
//! those that do ([`run_system`]), the wait for the shutdown
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

/// Runs `fut` on a new actix system (for the commands that host actors),
/// then drops the system inside its Tokio runtime. Tasks still on the
/// system when `fut` ends (a command service left running when start-up
/// failed half way, say) are dropped with it, and an async-nats
/// `Subscriber` they hold spawns its unsubscribe on drop: outside the
/// runtime that panics ("there is no reactor running"), turning a clean
/// error exit into a crash.
pub fn run_system<T>(fut: impl std::future::Future<Output = T>) -> T {
    let system = actix_rt::System::new();
    let out = system.block_on(fut);
    let runtime = system.runtime().tokio_runtime().handle().clone();
    let _inside = runtime.enter();
    drop(system);
    out
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

#[cfg(test)]
mod tests {
    use super::run_system;
    use std::sync::atomic::{AtomicU8, Ordering};
    use std::sync::Arc;

    /// Not dropped yet.
    const ALIVE: u8 = 0;
    /// Dropped inside a Tokio runtime.
    const INSIDE: u8 = 1;
    /// Dropped outside any runtime, where an async-nats `Subscriber`'s
    /// drop (it spawns its unsubscribe) panics.
    const OUTSIDE: u8 = 2;

    /// Records where it is dropped.
    struct DropProbe(Arc<AtomicU8>);

    impl Drop for DropProbe {
        fn drop(&mut self) {
            let inside = tokio::runtime::Handle::try_current().is_ok();
            self.0
                .store(if inside { INSIDE } else { OUTSIDE }, Ordering::SeqCst);
        }
    }

    /// A task left on the system (holding a subscription, as a command
    /// service does when start-up fails half way) is dropped inside the
    /// runtime.
    #[test]
    fn a_task_left_running_is_dropped_inside_the_runtime() {
        let dropped = Arc::new(AtomicU8::new(ALIVE));
        let probe = DropProbe(dropped.clone());
        let out = run_system(async {
            actix_rt::spawn(async move {
                let _held = probe;
                std::future::pending::<()>().await;
            });
            tokio::task::yield_now().await;
            7
        });
        assert_eq!(out, 7);
        assert_eq!(dropped.load(Ordering::SeqCst), INSIDE);
    }
}
