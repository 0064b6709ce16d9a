//! One module per subcommand, and what several of them share: a runtime
//! for those that host no actors ([`block_on`]), the wait for the shutdown
//! signal ([`wait_for_shutdown`]) and ids made of free text ([`id_chars`]).

pub mod agent;
pub mod audit;
pub mod bench;
pub mod bench_auth;
pub mod bench_inference;
pub mod events;
pub mod model;
pub mod nats_config;
pub mod plan;
pub mod pools;
pub mod replay;
pub mod run;
pub mod scheduler;
pub mod send;
pub mod study;
pub mod token;
pub mod up;
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
