//! `cargo bench -p flotilla-simulations --bench fleet [-- NODES MINUTES RATE]`:
//! the fleet chaos scenario on virtual time, as a table.

use flotilla_simulations::fleet_bench::{run_chaos, ChaosSettings};

fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` does not,
    // and then a small fleet checks that the scenario runs, in a second.
    let benching = std::env::args().any(|a| a == "--bench");
    let args: Vec<f64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let (default_nodes, default_minutes) = if benching {
        (5000.0, 30.0)
    } else {
        (100.0, 5.0)
    };
    let nodes = args.first().copied().unwrap_or(default_nodes) as u32;
    let minutes = args.get(1).copied().unwrap_or(default_minutes) as u64;
    let rate = args.get(2).copied().unwrap_or(50.0);
    let r = run_chaos(ChaosSettings {
        nodes,
        minutes,
        failure_rate: rate,
        seed: 1,
    });
    println!("| nodes | virtual | failures/min/1000 | faults | replacements | wrongly replaced | breaker trips | detect p50/p99 s | replace p50/p99 s | serving at end | events | wall s | peak RSS MB |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    println!(
        "| {nodes} | {minutes} min | {rate} | {} | {} | {} | {} | {:.0}/{:.0} | {:.0}/{:.0} | {} | {} | {:.2} | {:.0} |",
        r.injected.values().sum::<u32>(),
        r.replacements,
        r.wrongly_replaced,
        r.breaker_trips,
        r.detect_s.0,
        r.detect_s.1,
        r.replace_s.0,
        r.replace_s.1,
        r.serving_at_end,
        r.events,
        r.wall.as_secs_f64(),
        peak_rss_mb()
    );
    println!("faults by kind: {:?}", r.injected);
}
