//! Settings for `flotilla up` and the log readers.
//!
//! Precedence: flags > `FLOTILLA_*` environment variables > the config file
//! (`--config FILE`, TOML) > defaults. Clap already resolves flag over
//! environment; this module layers the file and the defaults underneath and
//! checks every value, naming the field when one is wrong.

use crate::cli::{HttpAuthArgs, LogSource, NatsAuthArgs, UpArgs};
use anyhow::{anyhow, bail, Context, Result};
use flotilla_bus::nats::{NatsAuth, SecretSource};
use flotilla_messages::{Actor, Subjects};
use flotilla_scheduler::AllowedCommands;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// The config file's fields (all optional).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Data directory of the embedded backend.
    pub data_dir: Option<PathBuf>,
    /// NATS server URL.
    pub nats: Option<String>,
    /// Gateway address or `off`.
    pub http: Option<String>,
    /// Subject prefix.
    pub prefix: Option<String>,
    /// Actors to run.
    pub only: Option<Vec<String>>,
    /// Snapshot interval in events.
    pub snapshot_every: Option<u64>,
    /// JetStream replicas.
    pub replicas: Option<usize>,
    /// Command ids remembered per aggregate.
    pub idempotency_window: Option<usize>,
    /// Idle time before an aggregate's actor stops (`10m`, `off`).
    pub passivate_after: Option<String>,
    /// The largest event one command may cause, in bytes.
    pub max_event_bytes: Option<usize>,
    /// The most bytes of events one command may cause.
    pub max_batch_bytes: Option<usize>,
    /// The control plane's signing key file.
    pub signing_key: Option<PathBuf>,
    /// The NATS principals file.
    pub principals_file: Option<PathBuf>,
    /// `accept` or `refuse` unsigned NATS commands.
    pub unsigned_commands: Option<crate::trust::UnsignedCommands>,
    /// The scheduler's settings (`[scheduler.local]`).
    pub scheduler: Option<SchedulerFileConfig>,
    /// HTTP bearer tokens file (`flotilla token create`).
    pub tokens_file: Option<PathBuf>,
    /// `/metrics`: `open` or `token`.
    pub metrics_auth: Option<String>,
    /// Listen beyond loopback without tokens.
    pub insecure_no_auth: Option<bool>,
    /// Rate limits per role (and `anonymous`): `{per_second, burst}` or `"off"`.
    pub rate_limits: Option<std::collections::BTreeMap<String, FileRateLimit>>,
    /// NATS `.creds` file.
    pub nats_creds: Option<PathBuf>,
    /// NATS nkey seed file.
    pub nats_nkey: Option<PathBuf>,
    /// NATS user name.
    pub nats_user: Option<String>,
    /// File holding the NATS user's password.
    pub nats_password_file: Option<PathBuf>,
    /// File holding the NATS token.
    pub nats_token_file: Option<PathBuf>,
    /// PEM file of the CAs of the NATS server's certificate.
    pub nats_ca: Option<PathBuf>,
    /// PEM client certificate (mutual TLS).
    pub nats_cert: Option<PathBuf>,
    /// PEM private key of `nats_cert`.
    pub nats_key: Option<PathBuf>,
}

/// The config file's `[scheduler]` table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchedulerFileConfig {
    /// The local executor's settings.
    pub local: Option<LocalExecutorFileConfig>,
}

/// The config file's `[scheduler.local]` table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalExecutorFileConfig {
    /// `scheduler.local.allowed_commands`: the programs the local executor
    /// may run (see [`AllowedCommands`]).
    pub allowed_commands: Option<Vec<String>>,
}

/// A rate limit in the config file: `[rate_limits.operator] per_second = 50,
/// burst = 100`, or `rate_limits.viewer = "off"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum FileRateLimit {
    /// A bucket.
    Limit(flotilla_gateway::auth::RateLimit),
    /// `off`: not limited.
    Word(String),
}

impl FileConfig {
    /// Reads `path`, or nothing when no file was named.
    pub fn load(path: Option<&Path>) -> Result<Self> {
        let Some(path) = path else {
            return Ok(FileConfig::default());
        };
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("config file {}: cannot read", path.display()))?;
        toml::from_str(&text).map_err(|e| anyhow!("config file {}: {e}", path.display()))
    }
}

/// Which backend to use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendChoice {
    /// In-process bus and a sled log under this directory.
    Embedded(PathBuf),
    /// A NATS server (core + JetStream).
    Nats(Box<NatsTarget>),
}

/// A NATS server and how to connect to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsTarget {
    /// The server URL(s), `nats://` or `tls://`.
    pub url: String,
    /// Credentials and TLS.
    pub auth: NatsAuth,
}

impl BackendChoice {
    /// A NATS backend at `url` with no credentials (for tests).
    #[cfg(test)]
    pub fn nats_at(url: &str) -> BackendChoice {
        BackendChoice::Nats(Box::new(NatsTarget {
            url: url.to_string(),
            auth: NatsAuth::default(),
        }))
    }
}

/// The NATS credential and TLS settings: each from its flag, else its
/// `FLOTILLA_NATS_*` variable (both through clap), else the config file's
/// key. A password or token may also be the value of the env-only
/// `FLOTILLA_NATS_PASSWORD` / `FLOTILLA_NATS_TOKEN`; a file named by flag
/// or variable beats it, and it beats the config file's.
pub fn nats_auth(args: &NatsAuthArgs, env: &EnvBackend, file: &FileConfig) -> NatsAuth {
    let pick = |flag: &Option<PathBuf>, key: &Option<PathBuf>| flag.clone().or_else(|| key.clone());
    let secret = |flag: &Option<PathBuf>,
                  setting: &'static str,
                  var: &'static str,
                  value: &Option<String>,
                  key: &Option<PathBuf>| {
        let file_source = |path: PathBuf| SecretSource::File { setting, path };
        flag.clone()
            .map(file_source)
            .or_else(|| value.clone().map(|value| SecretSource::Env { var, value }))
            .or_else(|| key.clone().map(file_source))
    };
    NatsAuth {
        creds_file: pick(&args.nats_creds, &file.nats_creds),
        nkey_file: pick(&args.nats_nkey, &file.nats_nkey),
        user: args.nats_user.clone().or_else(|| file.nats_user.clone()),
        password: secret(
            &args.nats_password_file,
            "nats_password_file",
            "FLOTILLA_NATS_PASSWORD",
            &env.nats_password,
            &file.nats_password_file,
        ),
        token: secret(
            &args.nats_token_file,
            "nats_token_file",
            "FLOTILLA_NATS_TOKEN",
            &env.nats_token,
            &file.nats_token_file,
        ),
        ca_file: pick(&args.nats_ca, &file.nats_ca),
        client_cert: pick(&args.nats_cert, &file.nats_cert),
        client_key: pick(&args.nats_key, &file.nats_key),
    }
}

/// The NATS target of a command without a config file (`send`, `agent`,
/// `worker`, `bench`): `url` with the flags' and the environment's settings.
pub fn nats_target(url: &str, args: &NatsAuthArgs) -> Result<NatsTarget> {
    Ok(NatsTarget {
        url: check_url("nats", url)?,
        auth: nats_auth(args, &EnvBackend::from_process(), &FileConfig::default()),
    })
}

/// The default data directory.
pub const DEFAULT_DATA_DIR: &str = ".flotilla";
/// The default gateway address.
pub const DEFAULT_HTTP: &str = "127.0.0.1:8080";
/// The actors `flotilla up` hosts when `--only` is not given: the control
/// plane (inference workers and health agents are their own processes,
/// `flotilla worker` and `flotilla agent`).
pub const DEFAULT_ACTORS: &[&str] = &["solver", "scheduler", "provisioner", "study_run"];

/// Resolved settings of `flotilla up`.
#[derive(Debug, Clone)]
pub struct UpSettings {
    /// The backend.
    pub backend: BackendChoice,
    /// Subjects under the prefix.
    pub subjects: Subjects,
    /// The gateway address, if enabled.
    pub http: Option<SocketAddr>,
    /// The actors to run.
    pub only: Vec<Actor>,
    /// Snapshot interval.
    pub snapshot_every: u64,
    /// JetStream replicas.
    pub replicas: usize,
    /// Command ids remembered per aggregate.
    pub idempotency_window: usize,
    /// Idle time before an aggregate's actor stops; `None`: never.
    pub passivate_after: Option<std::time::Duration>,
    /// The largest event one command may cause, in bytes.
    pub max_event_bytes: usize,
    /// The most bytes of events one command may cause.
    pub max_batch_bytes: usize,
    /// The signing key file, if named (else the backend's default).
    pub signing_key: Option<PathBuf>,
    /// The NATS principals file, if any.
    pub principals: Option<PathBuf>,
    /// Whether unsigned NATS commands are accepted, if set.
    pub unsigned_commands: Option<crate::trust::UnsignedCommands>,
    /// The programs the scheduler's local executor may run.
    pub allowed_commands: AllowedCommands,
    /// Who may call the gateway.
    pub auth: HttpAuthSettings,
}

/// A size limit in bytes: from the flag, the file or the default, at
/// least 1 KiB and at most 64 MiB.
fn byte_limit(
    field: &str,
    flag: Option<usize>,
    file: Option<usize>,
    default: usize,
) -> Result<usize> {
    let n = flag.or(file).unwrap_or(default);
    if !(1024..=64 * 1024 * 1024).contains(&n) {
        bail!("{field}: must be between 1024 and 67108864 bytes, got {n}");
    }
    Ok(n)
}

/// How long an aggregate's actor stays idle before it stops, by default.
pub const DEFAULT_PASSIVATE_AFTER: &str = "10m";

/// `off` or a duration like `90s`, `10m`.
fn parse_passivate_after(text: &str) -> Result<Option<std::time::Duration>> {
    if matches!(text.trim(), "off" | "never") {
        return Ok(None);
    }
    let ms = flotilla_messages::fleet::parse_millis(text)
        .map_err(|e| anyhow!("passivate_after: {e}"))?;
    if ms == 0 {
        bail!("passivate_after: must be positive or `off`, got {text:?}");
    }
    Ok(Some(std::time::Duration::from_millis(ms)))
}

/// The backend named by the environment (`FLOTILLA_NATS`, `FLOTILLA_DATA_DIR`).
///
/// Read here rather than by clap so that a flag always beats a variable:
/// clap would treat `--data-dir` given with `FLOTILLA_NATS` set as two
/// conflicting flags.
///
/// It also carries the env-only NATS secrets, so its `Debug` shows only
/// whether they are set.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct EnvBackend {
    /// `FLOTILLA_NATS`.
    pub nats: Option<String>,
    /// `FLOTILLA_DATA_DIR`.
    pub data_dir: Option<PathBuf>,
    /// `FLOTILLA_NATS_PASSWORD` (a secret).
    pub nats_password: Option<String>,
    /// `FLOTILLA_NATS_TOKEN` (a secret).
    pub nats_token: Option<String>,
}

impl std::fmt::Debug for EnvBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let set = |v: &Option<String>| v.as_ref().map(|_| "***");
        f.debug_struct("EnvBackend")
            .field(
                "nats",
                &self.nats.as_deref().map(flotilla_bus::nats::redacted),
            )
            .field("data_dir", &self.data_dir)
            .field("nats_password", &set(&self.nats_password))
            .field("nats_token", &set(&self.nats_token))
            .finish()
    }
}

impl EnvBackend {
    /// What this process's environment says.
    pub fn from_process() -> Self {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        EnvBackend {
            nats: var("FLOTILLA_NATS"),
            data_dir: var("FLOTILLA_DATA_DIR").map(PathBuf::from),
            nats_password: var("FLOTILLA_NATS_PASSWORD"),
            nats_token: var("FLOTILLA_NATS_TOKEN"),
        }
    }
}

/// Resolves the backend and prefix of a log reader or of `up`:
/// flags, then the environment, then the file, then the embedded default.
pub fn resolve_source(
    src: &LogSource,
    env: &EnvBackend,
    file: &FileConfig,
) -> Result<(BackendChoice, Subjects)> {
    let layers = [
        (&src.nats, &src.data_dir),
        (&env.nats, &env.data_dir),
        (&file.nats, &file.data_dir),
    ];
    let backend = layers
        .iter()
        .find_map(|(nats, dir)| match (nats, dir) {
            (Some(url), _) => Some(check_url("nats", url).map(|url| {
                BackendChoice::Nats(Box::new(NatsTarget {
                    url,
                    auth: nats_auth(&src.nats_auth, env, file),
                }))
            })),
            (None, Some(dir)) => Some(Ok(BackendChoice::Embedded(dir.clone()))),
            (None, None) => None,
        })
        .unwrap_or_else(|| Ok(BackendChoice::Embedded(PathBuf::from(DEFAULT_DATA_DIR))))?;
    let prefix = src
        .prefix
        .clone()
        .or_else(|| file.prefix.clone())
        .unwrap_or_else(|| flotilla_messages::subjects::DEFAULT_PREFIX.to_string());
    let subjects = Subjects::new(&prefix).map_err(|e| anyhow!("prefix: {e}"))?;
    Ok((backend, subjects))
}

/// Loads the config file named by `src` and resolves its backend.
pub fn resolve_reader(src: &LogSource) -> Result<(BackendChoice, Subjects)> {
    let file = FileConfig::load(src.config.as_deref())?;
    resolve_source(src, &EnvBackend::from_process(), &file)
}

fn check_url(field: &str, url: &str) -> Result<String> {
    let ok = url.starts_with("nats://") || url.starts_with("tls://") || url.contains(':');
    if !ok || url.contains(char::is_whitespace) {
        bail!(
            "{field}: invalid NATS URL {:?} (expected e.g. nats://127.0.0.1:4222)",
            flotilla_bus::nats::redacted(url)
        );
    }
    Ok(url.to_string())
}

/// The programs the scheduler's local executor may run
/// (`scheduler.local.allowed_commands`): the flag or its variable, else the
/// file, else the default. A local job runs code on this machine, so only
/// the quick tour's setup — the embedded backend, its gateway on loopback
/// or off, so that only this machine's users can submit — allows every
/// program; a NATS backend or a gateway others can reach allows none until
/// the setting names some.
fn resolve_allowed_commands(
    flag: Option<&[String]>,
    file: &FileConfig,
    backend: &BackendChoice,
    http: Option<SocketAddr>,
) -> Result<AllowedCommands> {
    let configured = flag.or_else(|| {
        file.scheduler
            .as_ref()
            .and_then(|s| s.local.as_ref())
            .and_then(|l| l.allowed_commands.as_deref())
    });
    if let Some(entries) = configured {
        return Ok(AllowedCommands::parse(entries)?);
    }
    let private = matches!(backend, BackendChoice::Embedded(_))
        && http.is_none_or(|addr| addr.ip().is_loopback());
    Ok(if private {
        AllowedCommands::any()
    } else {
        AllowedCommands::none()
    })
}

/// Requests per second per address without a valid token, when a tokens
/// file is set and `rate_limits.anonymous` is not.
pub const DEFAULT_UNAUTHENTICATED_PER_SECOND: u32 = 20;

/// The HTTP auth settings of `up`, `worker` or `agent`, resolved.
#[derive(Debug, Clone)]
pub struct HttpAuthSettings {
    /// The tokens file; `None`: no auth.
    pub tokens_file: Option<PathBuf>,
    /// Whether `/metrics` needs a token.
    pub metrics: flotilla_gateway::auth::MetricsAuth,
    /// Listen beyond loopback without tokens.
    pub insecure_no_auth: bool,
    /// The rate limits.
    pub rate_limits: flotilla_gateway::auth::RateLimitTable,
}

/// Resolves the HTTP auth settings: flag > env (clap) > file > defaults;
/// a bad value names its setting.
pub fn resolve_http_auth(args: &HttpAuthArgs, file: &FileConfig) -> Result<HttpAuthSettings> {
    use flotilla_gateway::auth::{MetricsAuth, RateLimitTable};
    let metrics = match args
        .metrics_auth
        .as_deref()
        .or(file.metrics_auth.as_deref())
    {
        Some(text) => MetricsAuth::parse(text).map_err(|e| anyhow!("metrics_auth: {e}"))?,
        None => MetricsAuth::Open,
    };
    let tokens_file = args.tokens.clone().or_else(|| file.tokens_file.clone());
    let mut rate_limits = RateLimitTable::default();
    if tokens_file.is_some() {
        // With tokens, a caller without a valid one is refused; its
        // refusals still cost: bound them per address (the file and the
        // flags below may say otherwise).
        let limit = flotilla_gateway::auth::RateLimit {
            per_second: DEFAULT_UNAUTHENTICATED_PER_SECOND,
            burst: 2 * DEFAULT_UNAUTHENTICATED_PER_SECOND,
        };
        rate_limits.set("anonymous", Some(limit))?;
    }
    for (who, limit) in file.rate_limits.iter().flatten() {
        let limit = match limit {
            FileRateLimit::Limit(l) => Some(*l),
            FileRateLimit::Word(w) if w == "off" => None,
            FileRateLimit::Word(w) => bail!("rate_limits.{who}: {w:?} is not a table or \"off\""),
        };
        rate_limits.set(who, limit)?;
    }
    for spec in args.rate_limits.iter().filter(|s| !s.trim().is_empty()) {
        rate_limits.apply_spec(spec)?;
    }
    Ok(HttpAuthSettings {
        tokens_file,
        metrics,
        insecure_no_auth: args.insecure_no_auth || file.insecure_no_auth.unwrap_or(false),
        rate_limits,
    })
}

/// Resolves every setting of `flotilla up`.
pub fn resolve_up(args: &UpArgs) -> Result<UpSettings> {
    let file = FileConfig::load(args.source.config.as_deref())?;
    let (backend, subjects) = resolve_source(&args.source, &EnvBackend::from_process(), &file)?;
    let http = args
        .http
        .clone()
        .or_else(|| file.http.clone())
        .unwrap_or_else(|| DEFAULT_HTTP.to_string());
    let http =
        match http.as_str() {
            "off" | "none" => None,
            addr => Some(addr.parse().map_err(|_| {
                anyhow!("http: invalid address {addr:?} (expected HOST:PORT or off)")
            })?),
        };
    let only = args
        .only
        .clone()
        .or_else(|| file.only.clone())
        .unwrap_or_else(|| DEFAULT_ACTORS.iter().map(|a| a.to_string()).collect());
    let only = only
        .iter()
        .map(|a| a.trim().parse::<Actor>().map_err(|e| anyhow!("only: {e}")))
        .collect::<Result<Vec<_>>>()?;
    let allowed_commands =
        resolve_allowed_commands(args.allowed_commands.as_deref(), &file, &backend, http)?;
    let replicas = args.replicas.or(file.replicas).unwrap_or(1);
    if !(1..=5).contains(&replicas) {
        bail!("replicas: {replicas} is out of range 1..=5");
    }
    Ok(UpSettings {
        backend,
        subjects,
        http,
        only,
        snapshot_every: args.snapshot_every.or(file.snapshot_every).unwrap_or(1000),
        replicas,
        idempotency_window: file.idempotency_window.unwrap_or(10_000),
        passivate_after: parse_passivate_after(
            args.passivate_after
                .as_deref()
                .or(file.passivate_after.as_deref())
                .unwrap_or(DEFAULT_PASSIVATE_AFTER),
        )?,
        max_event_bytes: byte_limit(
            "max_event_bytes",
            args.max_event_bytes,
            file.max_event_bytes,
            flotilla_host::DEFAULT_MAX_EVENT_BYTES,
        )?,
        max_batch_bytes: byte_limit(
            "max_batch_bytes",
            args.max_batch_bytes,
            file.max_batch_bytes,
            flotilla_host::DEFAULT_MAX_BATCH_BYTES,
        )?,
        auth: resolve_http_auth(&args.auth, &file)?,
        signing_key: args.signing_key.clone().or(file.signing_key),
        principals: args.trust.principals.clone().or(file.principals_file),
        unsigned_commands: args.trust.unsigned_commands.or(file.unsigned_commands),
        allowed_commands,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source() -> LogSource {
        LogSource {
            data_dir: None,
            nats: None,
            prefix: None,
            config: None,
            nats_auth: NatsAuthArgs::default(),
        }
    }

    #[test]
    fn flags_beat_the_file_and_the_file_beats_defaults() {
        let file = FileConfig {
            nats: Some("nats://127.0.0.1:4222".into()),
            prefix: Some("filep".into()),
            ..Default::default()
        };
        let no_env = EnvBackend::default();
        let (b, s) = resolve_source(&source(), &no_env, &file).unwrap();
        let BackendChoice::Nats(target) = b else {
            panic!("{b:?}")
        };
        assert_eq!(target.url, "nats://127.0.0.1:4222");
        assert_eq!(s.prefix(), "filep");
        let env = EnvBackend {
            data_dir: Some("envdir".into()),
            ..EnvBackend::default()
        };
        let (b, _) = resolve_source(&source(), &env, &file).unwrap();
        assert_eq!(
            b,
            BackendChoice::Embedded("envdir".into()),
            "env beats the file"
        );
        let mut flags = source();
        flags.data_dir = Some("d".into());
        flags.prefix = Some("flagp".into());
        let nats_env = EnvBackend {
            nats: Some("nats://127.0.0.1:1".into()),
            ..EnvBackend::default()
        };
        let (b, s) = resolve_source(&flags, &nats_env, &file).unwrap();
        assert_eq!(
            b,
            BackendChoice::Embedded("d".into()),
            "a flag beats the env"
        );
        assert_eq!(s.prefix(), "flagp");
        let (b, _) = resolve_source(&source(), &no_env, &FileConfig::default()).unwrap();
        assert_eq!(b, BackendChoice::Embedded(DEFAULT_DATA_DIR.into()));
    }

    #[test]
    fn nats_settings_come_from_the_flag_then_the_env_then_the_file() {
        let file = FileConfig {
            nats_nkey: Some("file.nk".into()),
            nats_ca: Some("file-ca.pem".into()),
            nats_user: Some("fileuser".into()),
            nats_password_file: Some("file-pw".into()),
            nats_token_file: Some("file-token".into()),
            ..FileConfig::default()
        };
        let flags = NatsAuthArgs {
            nats_ca: Some("flag-ca.pem".into()),
            ..NatsAuthArgs::default()
        };
        let env = EnvBackend {
            nats_password: Some("from-env".into()),
            ..EnvBackend::default()
        };
        let auth = nats_auth(&flags, &env, &file);
        assert_eq!(
            auth.ca_file,
            Some("flag-ca.pem".into()),
            "a flag beats the file"
        );
        assert_eq!(auth.nkey_file, Some("file.nk".into()));
        assert_eq!(auth.user.as_deref(), Some("fileuser"));
        assert_eq!(
            auth.password,
            Some(SecretSource::Env {
                var: "FLOTILLA_NATS_PASSWORD",
                value: "from-env".into()
            }),
            "the env-only secret beats the file's"
        );
        assert!(
            !format!("{env:?} {auth:?}").contains("from-env"),
            "secrets never shown"
        );
        let with_file_flag = NatsAuthArgs {
            nats_password_file: Some("flag-pw".into()),
            ..NatsAuthArgs::default()
        };
        let auth = nats_auth(&with_file_flag, &env, &file);
        assert_eq!(
            auth.password,
            Some(SecretSource::File {
                setting: "nats_password_file",
                path: "flag-pw".into()
            })
        );
        let auth = nats_auth(&NatsAuthArgs::default(), &EnvBackend::default(), &file);
        assert_eq!(
            auth.token,
            Some(SecretSource::File {
                setting: "nats_token_file",
                path: "file-token".into()
            })
        );
    }

    #[test]
    fn bad_values_name_the_field() {
        let mut flags = source();
        flags.prefix = Some("a..b".into());
        let e = resolve_source(&flags, &EnvBackend::default(), &FileConfig::default()).unwrap_err();
        assert!(e.to_string().starts_with("prefix:"), "{e}");
        let dir = std::env::temp_dir().join(format!("flotilla-cfg-{}", std::process::id()));
        std::fs::write(&dir, "snapshot_evry = 3\n").unwrap();
        let e = FileConfig::load(Some(&dir)).unwrap_err();
        assert!(e.to_string().contains("snapshot_evry"), "{e}");
        std::fs::remove_file(dir).ok();
    }

    #[test]
    fn only_the_embedded_loopback_default_allows_every_local_program() {
        let embedded = BackendChoice::Embedded(DEFAULT_DATA_DIR.into());
        let nats = BackendChoice::nats_at("nats://127.0.0.1:4222");
        let loopback: SocketAddr = DEFAULT_HTTP.parse().unwrap();
        let public: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        let none = FileConfig::default();
        let default = |backend, http| resolve_allowed_commands(None, &none, backend, http).unwrap();
        assert!(default(&embedded, Some(loopback)).allows_all());
        assert!(default(&embedded, None).allows_all());
        assert!(default(&embedded, Some(public)).is_empty());
        assert!(default(&nats, Some(loopback)).is_empty());
        assert!(default(&nats, None).is_empty());
    }

    #[test]
    fn allowed_commands_come_from_the_flag_then_the_file() {
        let nats = BackendChoice::nats_at("nats://127.0.0.1:4222");
        let file: FileConfig =
            toml::from_str("[scheduler.local]\nallowed_commands = [\"/opt/jobs/\", \"python3\"]\n")
                .unwrap();
        let from_file = resolve_allowed_commands(None, &file, &nats, None).unwrap();
        assert_eq!(from_file.to_string(), "/opt/jobs/,python3");
        let flag = vec!["sh".to_string()];
        let from_flag = resolve_allowed_commands(Some(&flag), &file, &nats, None).unwrap();
        assert_eq!(from_flag.to_string(), "sh");
        // Set but empty: nothing, even where the default would allow all.
        let embedded = BackendChoice::Embedded(DEFAULT_DATA_DIR.into());
        let empty = vec![String::new()];
        let off = resolve_allowed_commands(Some(&empty), &file, &embedded, None).unwrap();
        assert!(off.is_empty());
        let bad = vec!["bin/x".to_string()];
        let e = resolve_allowed_commands(Some(&bad), &file, &nats, None).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("scheduler.local.allowed_commands: entry \"bin/x\""),
            "{e}"
        );
        let typo: Result<FileConfig, _> =
            toml::from_str("[scheduler.local]\nallowed_command = []\n");
        assert!(typo.unwrap_err().to_string().contains("allowed_command"));
    }

    #[test]
    fn passivation_is_a_duration_or_off_and_a_bad_one_names_the_field() {
        use std::time::Duration;
        assert_eq!(
            parse_passivate_after("10m").unwrap(),
            Some(Duration::from_secs(600))
        );
        assert_eq!(
            parse_passivate_after("250ms").unwrap(),
            Some(Duration::from_millis(250))
        );
        assert_eq!(parse_passivate_after("off").unwrap(), None);
        for bad in ["0", "soon", "-1s"] {
            let e = parse_passivate_after(bad).unwrap_err().to_string();
            assert!(e.starts_with("passivate_after:"), "{bad}: {e}");
        }
    }

    fn auth_args() -> HttpAuthArgs {
        HttpAuthArgs {
            tokens: None,
            metrics_auth: None,
            insecure_no_auth: false,
            rate_limits: Vec::new(),
        }
    }

    #[test]
    fn http_auth_comes_from_flags_over_the_file_and_bad_values_name_the_setting() {
        use flotilla_gateway::auth::{MetricsAuth, RateLimit};
        use flotilla_messages::auth::Role;
        let file: FileConfig = toml::from_str(
            "tokens_file = \"t.json\"\nmetrics_auth = \"token\"\ninsecure_no_auth = true\n\
             [rate_limits]\nviewer = \"off\"\n[rate_limits.operator]\nper_second = 5\nburst = 9\n",
        )
        .unwrap();
        let s = resolve_http_auth(&auth_args(), &file).unwrap();
        assert_eq!(s.tokens_file, Some(PathBuf::from("t.json")));
        assert_eq!(s.metrics, MetricsAuth::Token);
        assert!(s.insecure_no_auth);
        let five_nine = RateLimit {
            per_second: 5,
            burst: 9,
        };
        assert_eq!(s.rate_limits.roles.get(&Role::Operator), Some(&five_nine));
        assert!(!s.rate_limits.roles.contains_key(&Role::Viewer));
        let mut flags = auth_args();
        flags.tokens = Some("flag.json".into());
        flags.metrics_auth = Some("open".into());
        flags.rate_limits = vec!["operator=1/2".into()];
        let s = resolve_http_auth(&flags, &file).unwrap();
        assert_eq!(s.tokens_file, Some(PathBuf::from("flag.json")));
        assert_eq!(s.metrics, MetricsAuth::Open);
        let one_two = RateLimit {
            per_second: 1,
            burst: 2,
        };
        assert_eq!(s.rate_limits.roles.get(&Role::Operator), Some(&one_two));
        flags.metrics_auth = Some("maybe".into());
        let e = resolve_http_auth(&flags, &file).unwrap_err().to_string();
        assert!(e.starts_with("metrics_auth:"), "{e}");
        let bad: FileConfig = toml::from_str("[rate_limits]\nroot = \"off\"\n").unwrap();
        let e = resolve_http_auth(&auth_args(), &bad)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("rate_limits:") && e.contains("root"), "{e}");
    }

    #[test]
    fn with_tokens_callers_without_one_are_limited_unless_a_setting_says_otherwise() {
        use flotilla_gateway::auth::RateLimit;
        let none = resolve_http_auth(&auth_args(), &FileConfig::default()).unwrap();
        assert_eq!(
            none.rate_limits.anonymous, None,
            "no tokens: the loopback default"
        );
        let mut flags = auth_args();
        flags.tokens = Some("t.json".into());
        let limited = resolve_http_auth(&flags, &FileConfig::default()).unwrap();
        let default = RateLimit {
            per_second: DEFAULT_UNAUTHENTICATED_PER_SECOND,
            burst: 2 * DEFAULT_UNAUTHENTICATED_PER_SECOND,
        };
        assert_eq!(limited.rate_limits.anonymous, Some(default));
        for spec in ["anonymous=off", "anonymous = off"] {
            flags.rate_limits = vec![spec.into()];
            let off = resolve_http_auth(&flags, &FileConfig::default()).unwrap();
            assert_eq!(off.rate_limits.anonymous, None, "{spec:?} is obeyed");
        }
        flags.rate_limits = vec![];
        let file: FileConfig = toml::from_str("[rate_limits]\nanonymous = \"off\"\n").unwrap();
        let off = resolve_http_auth(&flags, &file).unwrap();
        assert_eq!(off.rate_limits.anonymous, None, "the file is obeyed");
    }
}
