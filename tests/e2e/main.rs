//! The end-to-end tests of the `flotilla` binary, in one test binary (one
//! link of the workspace instead of one per area). Each area is a module:
//! `cargo test --test e2e cli_run::` runs one (filters match substrings, so
//! `crash::` also selects `fleet_crash::`, `scheduler_crash::` and
//! `study_run_crash::`; add `-- --skip fleet_crash:: --skip
//! scheduler_crash:: --skip study_run_crash::`). The shared harness is
//! [`support`]; golden files are under `tests/e2e/golden`.
//!
//! Tests run in parallel threads of one process, so none changes the
//! process's environment or working directory: a child's environment and
//! directory are set on its `Command`.

mod attribution;
mod support;

mod arqon_dashboard;
mod cli_bench;
mod cli_embedded;
mod cli_nats;
mod cli_plan;
mod cli_run;
mod cli_run_scheduled;
mod compose_fleet;
mod corrupt_isolation;
mod crash;
mod dashboard;
mod deploy_manifests;
mod fleet_agent;
mod fleet_crash;
mod fleet_loop;
mod fleet_nats;
mod forgery;
mod gateway_openapi;
mod gateway_origin;
mod http_auth;
mod images;
mod inference_carla;
mod inference_http;
mod inference_nats;
mod limits;
mod memory_bound;
mod nats_auth;
mod nats_credentials;
mod nats_permissions;
mod nats_two_hosts;
mod placement;
mod rate_limit;
mod readyz_nats;
mod scheduler_allowlist;
mod scheduler_crash;
mod simulate_cli;
mod simulate_report;
mod sled_damage;
mod study_run;
mod study_run_cli;
mod study_run_crash;
mod up_nats_start;
mod worker_openapi;
