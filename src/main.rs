//! `flotilla`: the command line of the Flotilla control plane.
//!
//! `flotilla up` runs the actors (embedded backend by default, NATS with
//! `--nats`) and the HTTP gateway; `send`, `events`, `audit` and `replay`
//! talk to a running instance or read its log; `bench` measures.

mod backend;
mod cli;
mod commands;
mod config;
mod http_auth;
mod secret_file;
mod signing;
mod trust;

use clap::Parser;
use cli::{Cli, Command, LogFormat};

/// sled and the codecs allocate many small buffers; mimalloc serves them
/// markedly faster than the system allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // A simulation's agents are simulated: their warnings are the scenario's
    // faults, not the operator's business (FLOTILLA_LOG still overrides).
    let quiet = matches!(&cli.command, Command::Simulate(_))
        || matches!(&cli.command, Command::Bench(b) if matches!(b.what, cli::BenchWhat::Fleet(_)));
    init_tracing(cli.log_format, if quiet { "error" } else { "info" });
    let outcome = match cli.command {
        Command::Up(args) => commands::up::run(args),
        Command::Send(args) => commands::send::run(args),
        Command::Events(args) => commands::events::run(args),
        Command::Audit(args) => commands::audit::run(args),
        Command::Replay(args) => commands::replay::run(args),
        Command::Bench(args) => commands::bench::run(args),
        Command::Run(args) => commands::run::run(args),
        Command::Ask(args) => commands::study::ask(args),
        Command::Tell(args) => commands::study::tell(args),
        Command::Report(args) => commands::study::report(args),
        Command::Study(args) => commands::study::study(args),
        Command::Dashboard(args) => commands::dashboard::run(args),
        Command::Plan(args) => commands::plan::run(args),
        Command::Pools(args) => commands::pools::run(args),
        Command::Agent(args) => commands::agent::run(args),
        Command::Worker(args) => commands::worker::run(args),
        Command::Model(args) => commands::model::run(args),
        Command::Token(args) => commands::token::run(args),
        Command::NatsConfig(args) => commands::nats_config::run(args),
        Command::SigningKey(args) => commands::signing_key::run(args),
        Command::Probe(args) => commands::probe::run(args),
        Command::Simulate(args) => commands::simulate::run(args),
    };
    match outcome {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}

fn init_tracing(format: LogFormat, default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("FLOTILLA_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}
