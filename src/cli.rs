//! The command-line grammar (clap). Every flag that configures `up` can also
//! come from a `FLOTILLA_*` environment variable or the config file; see
//! [`crate::config`] for the precedence.

use clap::builder::BoolishValueParser;
use clap::{ArgAction, Args, Parser, Subcommand, ValueEnum};
use std::net::SocketAddr;
use std::path::PathBuf;

/// Flotilla: an event-sourced control plane for GPU fleets that tune and serve models.
#[derive(Debug, Parser)]
#[command(name = "flotilla", version, about)]
pub struct Cli {
    /// Log format on stderr.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "text",
        env = "FLOTILLA_LOG_FORMAT"
    )]
    pub log_format: LogFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Log formats.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the actors and the HTTP gateway.
    Up(UpArgs),
    /// Send a command to an actor and print the reply.
    Send(SendArgs),
    /// Print events as JSON lines.
    Events(EventsArgs),
    /// Verify every checksum and hash chain and replay every stream.
    Audit(AuditArgs),
    /// Print an aggregate's state as it was at a seq or a time.
    Replay(ReplayArgs),
    /// Measure the event log.
    Bench(BenchArgs),
    /// Run a study ArqonHPO-style: evaluate a script on every trial, durably.
    Run(RunArgs),
    /// Ask a study for new trials and print them as JSON.
    Ask(AskArgs),
    /// Tell a study the results of trials.
    Tell(TellArgs),
    /// Report a running trial's intermediate result; exits 0 to continue,
    /// 3 when the study's pruner says prune.
    Report(ReportArgs),
    /// Inspect a study, or follow and steer its run in the control plane.
    Study(StudyArgs),
    /// Serve ArqonHPO's dashboard API (`/api/state`, `/api/summary`,
    /// `/api/events`, `/api/actions`) for a state file, as `arqonhpo
    /// dashboard` does.
    Dashboard(DashboardArgs),
    /// Plan a D28/D29 tuning session: write its Kubernetes Job manifests
    /// (and run it as local subprocesses with `--execute local`).
    Plan(PlanArgs),
    /// Check GPU node pool files.
    Pools(PoolsArgs),
    /// Run a node's health agent: sample the GPUs, evaluate the health
    /// policy, publish heartbeats and reports on `flotilla.health.<node>`.
    Agent(AgentArgs),
    /// Serve a driving policy (CarlaRL-compatible) over HTTP and NATS.
    Worker(WorkerArgs),
    /// Model artifacts: `model init DIR` writes a working example.
    Model(crate::commands::model::ModelArgs),
    /// HTTP bearer tokens: `token create --name N --role R` prints a new
    /// token once and stores only its hash; `token list`, `token revoke`.
    Token(TokenArgs),
    /// Write a least-privilege nats-server configuration: one nkey user per
    /// principal, their seed files and `principals.toml`.
    NatsConfig(NatsConfigArgs),
    /// Write a new Ed25519 signing key for the control plane to FILE (mode
    /// 0600; an existing key is kept) and its public key to FILE.pub, and
    /// print the public key's path and hex (`FILE.pub HEX`).
    SigningKey(SigningKeyArgs),
    /// GET a URL and exit 0 on a 2xx answer, 1 otherwise: the health check
    /// of images without curl (`flotilla probe http://127.0.0.1:8080/readyz`).
    Probe(ProbeArgs),
    /// Run a chaos scenario (Navarch's format) on virtual time, with the
    /// real pool, health policy and autoscalers; report and check it.
    Simulate(crate::commands::simulate::SimulateArgs),
}

/// `flotilla dashboard`.
#[derive(Debug, Args)]
pub struct DashboardArgs {
    /// The state file (ArqonHPO's, or `flotilla run --state`'s), read
    /// again on every request.
    #[arg(long, value_name = "FILE")]
    pub state: PathBuf,
    /// Where to listen; beyond loopback it needs `--tokens`.
    #[arg(long, default_value = "127.0.0.1:3030")]
    pub addr: SocketAddr,
    /// Events file (JSON lines) `/api/events` reads [default: none, no events].
    #[arg(long, value_name = "FILE")]
    pub events: Option<PathBuf>,
    /// Actions file (JSON lines) `POST /api/actions` appends to
    /// [default: STATE.actions.jsonl].
    #[arg(long, value_name = "FILE")]
    pub actions: Option<PathBuf>,
    /// `Host` names served, comma-separated (`*.domain`, `*`: any)
    /// [default: loopback names, plus the bound address if not loopback].
    #[arg(long, value_delimiter = ',')]
    pub allowed_hosts: Vec<String>,
    /// Origins (`https://ui.example`) allowed besides the dashboard's own, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub allowed_origins: Vec<String>,
    /// Config file (TOML, `up`'s format; its HTTP auth keys are read).
    #[arg(long, env = "FLOTILLA_CONFIG")]
    pub config: Option<PathBuf>,
    /// Bearer tokens, roles and rate limits: reads need `query`, actions `command`.
    #[command(flatten)]
    pub auth: HttpAuthArgs,
}

/// `flotilla probe`.
#[derive(Debug, Args)]
pub struct ProbeArgs {
    /// The URL to GET (`/healthz`, `/readyz` of `up`, `worker` or `agent`).
    pub url: String,
    /// How long to wait for the answer (`2s`, `500ms`).
    #[arg(long, default_value = "2s", value_parser = parse_timeout)]
    pub timeout: std::time::Duration,
}

fn parse_timeout(text: &str) -> Result<std::time::Duration, String> {
    flotilla_messages::fleet::parse_millis(text).map(std::time::Duration::from_millis)
}

/// Who may call a Flotilla HTTP server (`up`, `worker`, `agent`): bearer
/// tokens, `/metrics`, rate limits, and the refusal to listen beyond
/// loopback without them.
#[derive(Debug, Clone, Args)]
pub struct HttpAuthArgs {
    /// Tokens file (from `flotilla token create`): every route but
    /// /healthz and /readyz then needs `Authorization: Bearer <token>`
    /// [env: FLOTILLA_TOKENS_FILE; file key: tokens_file; default: no auth].
    #[arg(long = "tokens", env = "FLOTILLA_TOKENS_FILE", value_name = "FILE")]
    pub tokens: Option<PathBuf>,
    /// Whether /metrics is `open` or needs a `token` (of any role)
    /// [env: FLOTILLA_METRICS_AUTH; file key: metrics_auth; default: open].
    #[arg(long, env = "FLOTILLA_METRICS_AUTH", value_name = "open|token")]
    pub metrics_auth: Option<String>,
    /// Listen beyond loopback without a tokens file (logs a warning on
    /// every start) [env: FLOTILLA_INSECURE_NO_AUTH; file key: insecure_no_auth].
    #[arg(
        long,
        env = "FLOTILLA_INSECURE_NO_AUTH",
        action = ArgAction::SetTrue,
        value_parser = BoolishValueParser::new()
    )]
    pub insecure_no_auth: bool,
    /// Rate limits per role, `ROLE=PER_SECOND/BURST` or `ROLE=off`,
    /// comma-separated; `anonymous` is callers without a token, by IP
    /// [env: FLOTILLA_RATE_LIMITS; file table: rate_limits.ROLE; default:
    /// 100/200 per role, inference 1000/2000, anonymous off].
    #[arg(
        long = "rate-limit",
        env = "FLOTILLA_RATE_LIMITS",
        value_delimiter = ','
    )]
    pub rate_limits: Vec<String>,
}

/// `flotilla token`.
#[derive(Debug, Args)]
pub struct TokenArgs {
    /// What to do.
    #[command(subcommand)]
    pub what: TokenWhat,
    /// The tokens file [env: FLOTILLA_TOKENS_FILE; default: .flotilla/tokens.json].
    #[arg(
        long = "tokens",
        env = "FLOTILLA_TOKENS_FILE",
        global = true,
        value_name = "FILE"
    )]
    pub tokens: Option<PathBuf>,
}

/// Token subcommands.
#[derive(Debug, Subcommand)]
pub enum TokenWhat {
    /// Create a token: prints it once on stdout; the file keeps its SHA-256.
    Create {
        /// The principal (1-64 of `[A-Za-z0-9._-]`; not anonymous, unsigned, flotilla).
        #[arg(long)]
        name: String,
        /// admin, operator, viewer, auditor or inference.
        #[arg(long)]
        role: String,
    },
    /// List the tokens' names and roles.
    List,
    /// Revoke a token (servers read the file at start: restart them).
    Revoke {
        /// The token's name.
        #[arg(long)]
        name: String,
    },
}

/// Who a process that serves NATS commands (`up`, `worker`) believes.
#[derive(Debug, Clone, Args)]
pub struct CommandTrustArgs {
    /// The NATS principals whose signed commands are accepted (TOML, as
    /// `flotilla nats-config` writes it).
    #[arg(long, env = "FLOTILLA_PRINCIPALS_FILE")]
    pub principals: Option<PathBuf>,
    /// Whether unsigned NATS commands are accepted (recorded as `unsigned`)
    /// [default: accept when the NATS server is on loopback, else refuse].
    #[arg(long, env = "FLOTILLA_UNSIGNED_COMMANDS", value_enum)]
    pub unsigned_commands: Option<crate::trust::UnsignedCommands>,
}

/// `flotilla signing-key`.
#[derive(Debug, Args)]
pub struct SigningKeyArgs {
    /// The key file (what `up --signing-key` takes); its public key goes
    /// to FILE.pub (what `audit --verify-key` takes).
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
}

/// `flotilla nats-config`.
#[derive(Debug, Args)]
pub struct NatsConfigArgs {
    /// Where `nats-server.conf`, `principals.toml` and the `<name>.nk` seed
    /// files go (existing seed files are kept).
    #[arg(long)]
    pub out: PathBuf,
    /// Subject prefix the deployment uses.
    #[arg(long, default_value = "flotilla")]
    pub prefix: String,
    /// A node's health agent (its node id); repeatable.
    #[arg(long = "agent", value_name = "NODE_ID")]
    pub agents: Vec<String>,
    /// An inference worker (its `--worker-id`); repeatable.
    #[arg(long = "worker", value_name = "WORKER_ID")]
    pub workers: Vec<String>,
    /// A person or tool that sends commands and queries; repeatable.
    #[arg(long = "operator", value_name = "NAME")]
    pub operators: Vec<String>,
    /// A reader of the event stream (`flotilla audit`); repeatable.
    #[arg(long = "auditor", value_name = "NAME")]
    pub auditors: Vec<String>,
    /// A program that requests predictions on `infer.>` and nothing else
    /// (hears only its own replies); repeatable.
    #[arg(long = "inference-client", value_name = "NAME")]
    pub inference_clients: Vec<String>,
    /// A cluster route, `nats://HOST:PORT` of every node (its own included)
    /// of a NATS cluster; repeatable. With any, the configuration gets a
    /// `cluster` block whose routes need a password (kept in
    /// `route.password`), so only the cluster's own servers can join it.
    #[arg(long = "route", value_name = "URL")]
    pub routes: Vec<String>,
    /// The cluster's name (with `--route`).
    #[arg(long, default_value = "flotilla")]
    pub cluster_name: String,
}

/// Where the log lives: a data dir (embedded) or a NATS server.
#[derive(Debug, Clone, Args)]
pub struct LogSource {
    /// Data directory of the embedded backend [env: FLOTILLA_DATA_DIR].
    #[arg(long, conflicts_with = "nats")]
    pub data_dir: Option<PathBuf>,
    /// NATS server URL (JetStream log) [env: FLOTILLA_NATS].
    #[arg(long)]
    pub nats: Option<String>,
    /// Subject prefix.
    #[arg(long, env = "FLOTILLA_PREFIX")]
    pub prefix: Option<String>,
    /// Config file (TOML).
    #[arg(long, env = "FLOTILLA_CONFIG")]
    pub config: Option<PathBuf>,
    /// NATS credentials and TLS.
    #[command(flatten)]
    pub nats_auth: NatsAuthArgs,
}

/// How a NATS connection authenticates and encrypts, wherever a NATS URL
/// is accepted. Secrets are files (or the env-only `FLOTILLA_NATS_PASSWORD`
/// and `FLOTILLA_NATS_TOKEN`), never flag values, which `ps` would show.
/// Precedence: flag > `FLOTILLA_NATS_*` variable > config-file key
/// (`nats_creds`, …); see `crate::config::nats_auth`.
#[derive(Debug, Clone, Default, Args)]
pub struct NatsAuthArgs {
    /// NATS `.creds` file (user JWT + nkey seed), as `nsc` writes it.
    #[arg(long, env = "FLOTILLA_NATS_CREDS", value_name = "FILE")]
    pub nats_creds: Option<PathBuf>,
    /// File holding the NATS user's nkey seed (`SU…`).
    #[arg(long, env = "FLOTILLA_NATS_NKEY", value_name = "FILE")]
    pub nats_nkey: Option<PathBuf>,
    /// NATS user name (its password: --nats-password-file or FLOTILLA_NATS_PASSWORD).
    #[arg(long, env = "FLOTILLA_NATS_USER", value_name = "NAME")]
    pub nats_user: Option<String>,
    /// File holding the NATS user's password.
    #[arg(long, env = "FLOTILLA_NATS_PASSWORD_FILE", value_name = "FILE")]
    pub nats_password_file: Option<PathBuf>,
    /// File holding the NATS token (or the env-only FLOTILLA_NATS_TOKEN).
    #[arg(long, env = "FLOTILLA_NATS_TOKEN_FILE", value_name = "FILE")]
    pub nats_token_file: Option<PathBuf>,
    /// PEM file of the CA certificates that sign the NATS server's; TLS is required.
    #[arg(long, env = "FLOTILLA_NATS_CA", value_name = "FILE")]
    pub nats_ca: Option<PathBuf>,
    /// PEM client certificate for mutual TLS (with --nats-key).
    #[arg(long, env = "FLOTILLA_NATS_CERT", value_name = "FILE")]
    pub nats_cert: Option<PathBuf>,
    /// PEM private key of --nats-cert.
    #[arg(long, env = "FLOTILLA_NATS_KEY", value_name = "FILE")]
    pub nats_key: Option<PathBuf>,
}

/// `flotilla up`.
#[derive(Debug, Args)]
pub struct UpArgs {
    /// Backend and config file.
    #[command(flatten)]
    pub source: LogSource,
    /// HTTP address of the gateway (`off` to disable).
    #[arg(long, env = "FLOTILLA_HTTP")]
    pub http: Option<String>,
    /// Run only these actors (comma-separated), e.g. `--only solver`.
    #[arg(long, env = "FLOTILLA_ONLY", value_delimiter = ',')]
    pub only: Option<Vec<String>>,
    /// Save a snapshot every this many events per aggregate (0: never).
    #[arg(long, env = "FLOTILLA_SNAPSHOT_EVERY")]
    pub snapshot_every: Option<u64>,
    /// JetStream replicas of the event stream.
    #[arg(long, env = "FLOTILLA_REPLICAS")]
    pub replicas: Option<usize>,
    /// Stop an aggregate's actor after this long without a command (`10m`,
    /// `off`); its next command recovers it [default: 10m].
    #[arg(long, env = "FLOTILLA_PASSIVATE_AFTER")]
    pub passivate_after: Option<String>,
    /// The largest event one command may cause, in bytes [default: 262144].
    #[arg(long, env = "FLOTILLA_MAX_EVENT_BYTES")]
    pub max_event_bytes: Option<usize>,
    /// The most bytes of events one command may cause [default: 524288;
    /// on NATS also below half the server's max_payload].
    #[arg(long, env = "FLOTILLA_MAX_BATCH_BYTES")]
    pub max_batch_bytes: Option<usize>,
    /// The control plane's Ed25519 key file (generated if missing; its public
    /// key is written beside it as FILE.pub) [default: DATA_DIR/signing.key
    /// on the embedded backend; none on NATS: events unsigned].
    #[arg(long, env = "FLOTILLA_SIGNING_KEY_FILE")]
    pub signing_key: Option<PathBuf>,
    /// Whose signed NATS commands count, and whether unsigned ones do.
    #[command(flatten)]
    pub trust: CommandTrustArgs,
    /// Pools file (YAML) the provisioner applies at start.
    #[arg(long, env = "FLOTILLA_POOLS")]
    pub pools: Option<PathBuf>,
    /// How often the provisioner ticks its pools (`1s`, `500ms`).
    #[arg(long, env = "FLOTILLA_TICK", default_value = "1s")]
    pub tick: String,
    /// `Host` names the gateway serves, comma-separated (`*.domain`, `*`: any)
    /// [default: loopback names, plus the bound address if not loopback].
    #[arg(long, env = "FLOTILLA_ALLOWED_HOSTS", value_delimiter = ',')]
    pub allowed_hosts: Vec<String>,
    /// Origins (`https://ui.example`) allowed besides the gateway's own, comma-separated.
    #[arg(long, env = "FLOTILLA_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,
    /// An inference worker's base URL (`http://host:8000`) whose `/metrics`
    /// the dashboard shows as requests/s and latency; repeatable or
    /// comma-separated.
    #[arg(
        long = "inference-worker",
        value_name = "URL",
        env = "FLOTILLA_INFERENCE_WORKERS",
        value_delimiter = ','
    )]
    pub inference_workers: Vec<String>,
    /// Programs the scheduler's local executor may run, comma-separated: an
    /// absolute path (exactly), a bare name (as found on PATH), a directory
    /// ending in `/` (anything under it), a prefix ending in `*`, or `*`
    /// (all); empty allows none [default: `*` on the embedded backend with
    /// the gateway on loopback or off; none otherwise].
    #[arg(long, env = "FLOTILLA_ALLOWED_COMMANDS", value_delimiter = ',')]
    pub allowed_commands: Option<Vec<String>>,
    /// Bearer tokens, roles and rate limits of the gateway.
    #[command(flatten)]
    pub auth: HttpAuthArgs,
}

/// `flotilla send`.
#[derive(Debug, Args)]
pub struct SendArgs {
    /// The actor, e.g. `solver`.
    pub actor: String,
    /// The aggregate id, e.g. a study name.
    pub id: String,
    /// The command as JSON, e.g. `{"type": "ask", "n": 2}`.
    pub command: String,
    /// Send over NATS instead of HTTP [env: FLOTILLA_NATS].
    #[arg(long, conflicts_with = "http")]
    pub nats: Option<String>,
    /// NATS credentials and TLS.
    #[command(flatten)]
    pub nats_auth: NatsAuthArgs,
    /// The gateway's URL [env: FLOTILLA_URL; default: http://127.0.0.1:8080].
    #[arg(long)]
    pub http: Option<String>,
    /// Subject prefix (NATS).
    #[arg(long, env = "FLOTILLA_PREFIX", default_value = "flotilla")]
    pub prefix: String,
    /// Idempotency key (sent as `Nats-Msg-Id` / `Idempotency-Key`).
    #[arg(long)]
    pub id_key: Option<String>,
    /// Seconds to wait for the reply.
    #[arg(long, default_value_t = 10.0)]
    pub timeout: f64,
}

/// `flotilla events`.
#[derive(Debug, Args)]
pub struct EventsArgs {
    /// Backend.
    #[command(flatten)]
    pub source: LogSource,
    /// Read from a running `flotilla up` over HTTP instead.
    #[arg(long, conflicts_with_all = ["data_dir", "nats"])]
    pub http: Option<String>,
    /// Only this stream (`<actor>/<id>`).
    #[arg(long)]
    pub stream: Option<String>,
    /// First seq (with --stream) or global position.
    #[arg(long, default_value_t = 1)]
    pub from: u64,
    /// Keep printing new events.
    #[arg(long)]
    pub follow: bool,
    /// Only events caused by this principal (a token or key name,
    /// `anonymous`, `unsigned`, or `flotilla` for the control plane's own).
    #[arg(long)]
    pub principal: Option<String>,
}

/// `flotilla audit`.
#[derive(Debug, Args)]
pub struct AuditArgs {
    /// Backend.
    #[command(flatten)]
    pub source: LogSource,
    /// The control plane's public key file (`signing.key.pub`), to check
    /// every signature [default: DATA_DIR/signing.key.pub on the embedded
    /// backend].
    #[arg(long, env = "FLOTILLA_VERIFY_KEY_FILE")]
    pub verify_key: Option<PathBuf>,
}

/// `flotilla replay`.
#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// Backend.
    #[command(flatten)]
    pub source: LogSource,
    /// The stream, `<actor>/<id>`.
    #[arg(long)]
    pub stream: String,
    /// Stop after this seq.
    #[arg(long, conflicts_with = "until_time")]
    pub until_seq: Option<u64>,
    /// Stop after the last event at or before this time (RFC 3339).
    #[arg(long)]
    pub until_time: Option<String>,
}

/// `flotilla bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// What to measure.
    #[command(subcommand)]
    pub what: BenchWhat,
}

/// Benchmarks.
#[derive(Debug, Subcommand)]
pub enum BenchWhat {
    /// Durable appends/s (batch 1 and 100) and replay events/s.
    Log(BenchLogArgs),
    /// Solver quality (regret per function × budget × sampler) and ask+tell
    /// overhead on large studies.
    Solver(BenchSolverArgs),
    /// Inference worker: requests/s and latency over HTTP and NATS.
    Inference(crate::commands::bench_inference::BenchInferenceArgs),
    /// HTTP command latency (p50/p99) with and without bearer-token auth.
    Auth(crate::commands::bench_auth::BenchAuthArgs),
    /// A study run in the control plane (`flotilla up`, `start_run`) beside
    /// `flotilla run`: wall time, their ratio, CPU ms per trial.
    Run(crate::commands::bench_run::BenchRunArgs),
    /// Chaos simulation: Navarch's stress scenarios and a scale series
    /// (1k, 5k, 50k nodes) on virtual time; wall time and peak RSS.
    Fleet(crate::commands::bench_fleet::BenchFleetArgs),
}

/// `flotilla bench solver`.
#[derive(Debug, Args)]
pub struct BenchSolverArgs {
    /// Seeds per function × budget × sampler (seeds 0, 1, ...).
    #[arg(long, default_value_t = 20)]
    pub seeds: u64,
    /// Trial budgets, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "50,100,200")]
    pub budgets: Vec<u64>,
    /// Samplers: random, sobol, grid, tpe, tpe-uni (TPE, univariate),
    /// cmaes, gp, nsga2, auto; knobs after colons, e.g.
    /// tpe:gamma=0.2:n_ei_candidates=64. `--suite mo` leaves out those that
    /// run a single objective (cmaes, gp).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "random,sobol,grid,tpe,tpe-uni,cmaes,auto"
    )]
    pub samplers: Vec<String>,
    /// Functions (default: the suite's): branin, hartmann6, rosenbrock10,
    /// rastrigin10, ackley10, levy10, lr_batch; any of rosenbrock, rastrigin,
    /// ackley, levy with a dimension (levy5); any of these with -off (the
    /// domain shifted off centre).
    #[arg(long, value_delimiter = ',')]
    pub functions: Vec<String>,
    /// The function suite when --functions is not given: goal (the seven
    /// functions of the quality goal), shifted (the same seven with their
    /// domains shifted off centre) or auto (the suite that measures the
    /// auto sampler's rule: the scalable functions in 2, 5, 10 and 20
    /// dimensions, centred and off centre, plus branin, hartmann6, lr_batch,
    /// each also off centre) or mo (multi-objective: zdt1, zdt2, dtlz2,
    /// scored by hypervolume gap; e.g. --suite mo --samplers
    /// random,tpe,nsga2,auto).
    #[arg(long, default_value = "goal")]
    pub suite: String,
    /// Also run Optuna (the --optuna-samplers) through
    /// benches/optuna_compare.py and show its results beside Flotilla's.
    #[arg(long)]
    pub compare: bool,
    /// Optuna's samplers for --compare: optuna-tpe (Optuna's default,
    /// multivariate TPE), optuna-tpe-uni, optuna-random, optuna-gp
    /// (GPSampler; needs PyTorch in the Python's environment), optuna-nsga2
    /// [default: optuna-tpe,optuna-gp; optuna-nsga2,optuna-tpe,optuna-random
    /// for --suite mo].
    #[arg(long, value_delimiter = ',')]
    pub optuna_samplers: Vec<String>,
    /// With --compare: read Optuna's cells from this file (the output of
    /// `benches/optuna_compare.py --json`, e.g. kept from a long run)
    /// instead of running Python.
    #[arg(long)]
    pub optuna_json: Option<PathBuf>,
    /// The Python with Optuna for --compare [default: target/optuna-venv/bin/python].
    #[arg(long, env = "FLOTILLA_OPTUNA_PYTHON")]
    pub python: Option<PathBuf>,
    /// Study sizes at which ask+tell is timed, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1000,10000")]
    pub overhead_trials: Vec<u64>,
    /// Parameter counts at which ask+tell is timed, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "2,8,16")]
    pub overhead_params: Vec<usize>,
    /// Timed ask+tell rounds per overhead case (after 20 untimed ones).
    #[arg(long, default_value_t = 500)]
    pub window: usize,
    /// Skip the quality table.
    #[arg(long)]
    pub no_quality: bool,
    /// Skip the overhead table.
    #[arg(long)]
    pub no_overhead: bool,
    /// Threads for the quality runs (0: one per core).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
}

/// `flotilla bench log`.
#[derive(Debug, Args)]
pub struct BenchLogArgs {
    /// Also measure the NATS backend on this server.
    #[arg(long)]
    pub nats: Option<String>,
    /// NATS credentials and TLS.
    #[command(flatten)]
    pub nats_auth: NatsAuthArgs,
    /// Events appended per measurement.
    #[arg(long, default_value_t = 20_000)]
    pub events: u64,
    /// Events replayed.
    #[arg(long, default_value_t = 1_000_000)]
    pub replay_events: u64,
    /// Concurrent writers (on distinct streams) for the group-commit case.
    #[arg(long, default_value_t = 8)]
    pub writers: u64,
    /// Each case runs this many times; the table shows the best run.
    #[arg(long, default_value_t = 3)]
    pub rounds: u64,
}

/// `flotilla run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The study's config (ArqonHPO JSON: `seed`, `budget`, `bounds`, ...).
    #[arg(long)]
    pub config: PathBuf,
    /// What evaluates one trial: an executable file, a file run with `sh`,
    /// or a shell command line. Parameters arrive as `ARQON_<name>` and
    /// `FLOTILLA_PARAM_<name>`; the result is a stdout line `RESULT=<float>`
    /// or the last stdout line that is a number.
    #[arg(long)]
    pub script: String,
    /// State file (ArqonHPO's shape), rewritten atomically after every
    /// result; running again with it resumes the study.
    #[arg(long)]
    pub state: Option<PathBuf>,
    /// How many trials are evaluated at once.
    #[arg(long, default_value_t = 1)]
    pub parallel: usize,
    /// Fail a trial whose script runs longer (`90`, `60s`, `500ms`, `5m`, `1h`).
    #[arg(long)]
    pub timeout: Option<String>,
    /// Data directory of the embedded log [default: .flotilla].
    #[arg(long, env = "FLOTILLA_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// The study's id [default: from the state file, else the config file's name].
    #[arg(long)]
    pub study: Option<String>,
    /// Run the trials as scheduler jobs on this executor (`local` or
    /// `kubernetes`): each trial is a job of queue `<study>` whose
    /// concurrency is `--parallel`; running jobs renew their trials'
    /// leases, and a killed run resumes by adopting the jobs that still run.
    /// With `--remote`/`--nats`: the control plane's executor (`local`, the
    /// default, `kubernetes` or `manifests`).
    #[arg(long)]
    pub executor: Option<String>,
    /// The container image of the trials (`--executor kubernetes`, and
    /// `manifests` with `--remote`/`--nats`); the script is the
    /// container's command.
    #[arg(long)]
    pub image: Option<String>,
    /// Run the study in the control plane of a running `flotilla up`,
    /// through its gateway (`http://host:8080`; `FLOTILLA_TOKEN` as with
    /// `send`): the study is created there, the run started (`start_run`)
    /// and followed here. Ctrl-C detaches; the run goes on
    /// (`flotilla study watch`, `flotilla study stop`).
    #[arg(long, conflicts_with = "nats", value_name = "URL")]
    pub remote: Option<String>,
    /// Like `--remote`, over NATS (this server URL).
    #[arg(long, value_name = "URL")]
    pub nats: Option<String>,
    /// NATS credentials and TLS (with `--nats`).
    #[command(flatten)]
    pub nats_auth: NatsAuthArgs,
    /// Subject prefix (with `--nats`).
    #[arg(long, env = "FLOTILLA_PREFIX", default_value = "flotilla")]
    pub prefix: String,
}

/// Where `ask`, `tell` and `study show` reach a study.
#[derive(Debug, Clone, Args)]
pub struct StudyTarget {
    /// Data directory of the embedded log [default: .flotilla].
    #[arg(long, env = "FLOTILLA_DATA_DIR", conflicts_with = "http")]
    pub data_dir: Option<PathBuf>,
    /// The gateway of a running `flotilla up`, e.g. `http://127.0.0.1:8080`
    /// (while it runs, it holds the embedded log).
    #[arg(long)]
    pub http: Option<String>,
}

/// `flotilla ask`.
#[derive(Debug, Args)]
pub struct AskArgs {
    /// The study's id.
    #[arg(long)]
    pub study: String,
    /// How many trials.
    #[arg(long, default_value_t = 1)]
    pub n: u32,
    /// Where the study lives.
    #[command(flatten)]
    pub target: StudyTarget,
}

/// `flotilla tell`.
#[derive(Debug, Args)]
pub struct TellArgs {
    /// The study's id.
    #[arg(long)]
    pub study: String,
    /// JSON file (`-`: stdin): `[{"trial_id", "value", "cost"?}]`;
    /// ArqonHPO's `eval_id` (a trial id or number) and `params` are accepted.
    #[arg(long)]
    pub results: String,
    /// Where the study lives.
    #[command(flatten)]
    pub target: StudyTarget,
}

/// `flotilla report`.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// The study's id.
    #[arg(long)]
    pub study: String,
    /// The trial, as `ask` named it (`t3`).
    #[arg(long)]
    pub trial: String,
    /// Where the trial is (an epoch, a round).
    #[arg(long)]
    pub step: u64,
    /// The objective at that step.
    #[arg(long, allow_negative_numbers = true)]
    pub value: f64,
    /// Where the study lives.
    #[command(flatten)]
    pub target: StudyTarget,
}

/// `flotilla study`.
#[derive(Debug, Args)]
pub struct StudyArgs {
    /// What to do.
    #[command(subcommand)]
    pub what: StudyWhat,
}

/// Study subcommands.
#[derive(Debug, Subcommand)]
pub enum StudyWhat {
    /// Print a study's state: status, counts, best trial, trials.
    Show(StudyShowArgs),
    /// Follow a study's run in the control plane (progress on stderr, the
    /// summary on stdout at its end), as `flotilla run --remote` does;
    /// Ctrl-C detaches again.
    Watch(StudyRunArgs),
    /// Stop a study's run: its running jobs are cancelled, no new trial starts.
    Stop(StudyStopArgs),
    /// Pause a study's run: running jobs go on, no new trial starts.
    Pause(StudyRunArgs),
    /// Resume a paused run.
    Resume(StudyRunArgs),
}

/// Where a study's run is reached: a running control plane's gateway or
/// its NATS server.
#[derive(Debug, Clone, Args)]
pub struct ControlPlaneArgs {
    /// The gateway's URL [env: FLOTILLA_URL; default: http://127.0.0.1:8080].
    #[arg(long, conflicts_with = "nats", value_name = "URL")]
    pub http: Option<String>,
    /// Over NATS instead of HTTP [env: FLOTILLA_NATS].
    #[arg(long, value_name = "URL")]
    pub nats: Option<String>,
    /// NATS credentials and TLS.
    #[command(flatten)]
    pub nats_auth: NatsAuthArgs,
    /// Subject prefix (NATS).
    #[arg(long, env = "FLOTILLA_PREFIX", default_value = "flotilla")]
    pub prefix: String,
}

/// `flotilla study watch|pause|resume`.
#[derive(Debug, Args)]
pub struct StudyRunArgs {
    /// The study's id.
    pub study: String,
    /// Where its run is.
    #[command(flatten)]
    pub target: ControlPlaneArgs,
}

/// `flotilla study stop`.
#[derive(Debug, Args)]
pub struct StudyStopArgs {
    /// The study's id.
    pub study: String,
    /// Why, for the record (the run's `reason`).
    #[arg(long)]
    pub reason: Option<String>,
    /// Where its run is.
    #[command(flatten)]
    pub target: ControlPlaneArgs,
}

/// `flotilla study show`.
#[derive(Debug, Args)]
pub struct StudyShowArgs {
    /// The study's id.
    pub study: String,
    /// Print the study's result as a table instead of its JSON view: the
    /// Pareto front (every feasible non-dominated trial with its values)
    /// of a multi-objective study, the best trial of a single-objective one.
    #[arg(long)]
    pub front: bool,
    /// Where the study lives.
    #[command(flatten)]
    pub target: StudyTarget,
}

/// `flotilla plan`.
#[derive(Debug, Args)]
pub struct PlanArgs {
    /// D28's orchestrator config (YAML); its `total_iterations` and
    /// `workers` win over the k8s config's.
    #[arg(long)]
    pub orchestrator_config: PathBuf,
    /// D29's k8s config (YAML): session_id, k8s_namespace, image, mode,
    /// env, total_iterations, workers, optimizer, config_path, extra_env,
    /// resources.
    #[arg(long)]
    pub k8s_config: PathBuf,
    /// Where the `job-NN-<name>.yaml` files go.
    #[arg(long)]
    pub output_dir: PathBuf,
    /// Refuse what D29 lets through: names Kubernetes rejects, invalid
    /// label values, jobs with zero iterations.
    #[arg(long)]
    pub strict: bool,
    /// Also run the plan: `local` runs each job as a subprocess (D28).
    #[arg(long)]
    pub execute: Option<String>,
    /// The Python that runs the jobs with `--execute local`.
    #[arg(long, default_value = "python")]
    pub python: String,
    /// The `created_at` annotation [default: now, local time, ISO 8601].
    #[arg(long)]
    pub created_at: Option<String>,
    /// Data directory of the embedded log for `--execute local` [default: .flotilla].
    #[arg(long, env = "FLOTILLA_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
}

/// `flotilla pools`.
#[derive(Debug, Args)]
pub struct PoolsArgs {
    /// What to do.
    #[command(subcommand)]
    pub what: PoolsWhat,
}

/// Pools subcommands.
#[derive(Debug, Subcommand)]
pub enum PoolsWhat {
    /// Check a pools file (either Navarch spelling); errors name the field.
    Validate {
        /// The YAML file.
        file: PathBuf,
    },
}

/// Where an agent reads GPU health from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum HealthSourceKind {
    /// NVIDIA's management library (libnvidia-ml.so.1).
    Nvml,
    /// Simulated GPUs with injected faults (`--faults`, or NATS commands on
    /// `<prefix>.health.<node>.inject`).
    Sim,
}

/// `flotilla agent`.
#[derive(Debug, Args)]
pub struct AgentArgs {
    /// This node's id (as the provisioner named it).
    #[arg(long, env = "FLOTILLA_NODE_ID")]
    pub node_id: String,
    /// NATS server to publish on; without it, messages are printed as JSON lines.
    #[arg(long, env = "FLOTILLA_NATS")]
    pub nats: Option<String>,
    /// NATS credentials and TLS.
    #[command(flatten)]
    pub nats_auth: NatsAuthArgs,
    /// Subject prefix.
    #[arg(long, env = "FLOTILLA_PREFIX", default_value = "flotilla")]
    pub prefix: String,
    /// Where health comes from.
    #[arg(long, value_enum, default_value = "nvml")]
    pub source: HealthSourceKind,
    /// Health policy (YAML); NVIDIA's XID catalog rules when absent.
    #[arg(long, env = "FLOTILLA_HEALTH_POLICY")]
    pub policy: Option<PathBuf>,
    /// Faults for `--source sim` (YAML or JSON list of `{at, gpu, kind, ...}`).
    #[arg(long)]
    pub faults: Option<PathBuf>,
    /// Address of /healthz, /readyz and /metrics (`off` to disable).
    #[arg(long, env = "FLOTILLA_AGENT_HTTP", default_value = "127.0.0.1:9400")]
    pub http: String,
    /// How often to sample, evaluate and heartbeat (`10s`, `500ms`).
    #[arg(long, default_value = "10s")]
    pub interval: String,
    /// Config file (TOML, `up`'s format; the agent reads its HTTP auth keys).
    #[arg(long, env = "FLOTILLA_CONFIG")]
    pub config: Option<PathBuf>,
    /// Bearer tokens of the agent's HTTP routes.
    #[command(flatten)]
    pub auth: HttpAuthArgs,
}

/// `flotilla worker`.
#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// The artifact folder holding `vX.Y.Z/` version folders.
    #[arg(long, env = "ARTIFACT_DIR", default_value = "artifacts")]
    pub artifacts: PathBuf,
    /// HTTP address (default 127.0.0.1 on PORT, else 8080).
    #[arg(long)]
    pub http: Option<SocketAddr>,
    /// HTTP port when --http is not given.
    #[arg(long, env = "PORT", default_value_t = 8080)]
    pub port: u16,
    /// NATS server: serve `<prefix>.infer.<model>` and the deployment's commands.
    #[arg(long, env = "FLOTILLA_NATS")]
    pub nats: Option<String>,
    /// NATS credentials and TLS.
    #[command(flatten)]
    pub nats_auth: NatsAuthArgs,
    /// Whose signed version commands count, and whether unsigned ones do.
    #[command(flatten)]
    pub trust: CommandTrustArgs,
    /// The control plane's public key (`signing.key.pub`): commands its
    /// gateway forwards, signed for the HTTP caller it authenticated, are
    /// then recorded under that caller's name.
    #[arg(long, env = "FLOTILLA_CONTROL_PLANE_KEY_FILE")]
    pub control_plane_key: Option<PathBuf>,
    /// Subject prefix.
    #[arg(long, env = "FLOTILLA_PREFIX", default_value = "flotilla")]
    pub prefix: String,
    /// The version to serve (else the newest stable vX.Y.Z).
    #[arg(long, env = "MODEL_VERSION")]
    pub model_version: Option<String>,
    /// The model's subject token (default: the card's model_name).
    #[arg(long)]
    pub model: Option<String>,
    /// This worker's deployment id (default `worker-<pid>-<start time>`).
    #[arg(long)]
    pub worker_id: Option<String>,
    /// Embedded log directory (default: a temporary one).
    #[arg(long, env = "FLOTILLA_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Run on CUDA device 0 (build with --features cuda).
    #[arg(long, env = "USE_GPU", value_parser = BoolishValueParser::new(), default_value = "false")]
    pub use_gpu: bool,
    /// HTTP worker threads (default: one per CPU core).
    #[arg(long, env = "WORKERS")]
    pub workers: Option<usize>,
    /// Allowed CORS origins, comma-separated (`*`: any).
    #[arg(long, env = "CORS_ORIGINS", value_delimiter = ',', default_value = "*")]
    pub cors_origins: Vec<String>,
    /// Allowed Host names, comma-separated (`*`: any).
    #[arg(
        long,
        env = "ALLOWED_HOSTS",
        value_delimiter = ',',
        default_value = "*"
    )]
    pub allowed_hosts: Vec<String>,
    /// Largest request body in bytes.
    #[arg(long, env = "MAX_BODY_BYTES", default_value_t = 8 * 1024 * 1024)]
    pub max_body_bytes: usize,
    /// Most observations per forward pass.
    #[arg(long, env = "MAX_BATCH_SIZE", default_value_t = 256)]
    pub max_batch_size: usize,
    /// How long a batch waits for more requests, in microseconds.
    #[arg(long, env = "MAX_QUEUE_DELAY_US", default_value_t = 0)]
    pub max_queue_delay_us: u64,
    /// Most requests waiting for a batch; beyond it 429.
    #[arg(long, env = "QUEUE_CAPACITY", default_value_t = 1024)]
    pub queue_capacity: usize,
    /// Batch threads.
    #[arg(long, env = "INFERENCE_THREADS", default_value_t = 1)]
    pub inference_threads: usize,
    /// Seed of the samples of requests that bring none.
    #[arg(long, env = "INFERENCE_SEED", default_value_t = 0)]
    pub seed: u64,
    /// Config file (TOML, `up`'s format; the worker reads its HTTP auth keys).
    #[arg(long, env = "FLOTILLA_CONFIG")]
    pub config: Option<PathBuf>,
    /// Bearer tokens, roles and rate limits of the worker's routes.
    #[command(flatten)]
    pub auth: HttpAuthArgs,
}
