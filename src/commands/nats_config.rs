//! `flotilla nats-config --out DIR [--prefix P] --agent n1 --worker w1
//! --operator alice --auditor audit1 --inference-client car1`: a
//! least-privilege nats-server configuration for a Flotilla deployment.
//!
//! It writes `DIR/nats-server.conf` (JetStream on, one nkey user per
//! principal, each allowed exactly the subjects its role needs; mode 0600
//! and replaced in one step, as it may hold the route password),
//! `DIR/<name>.nk` (each user's seed, mode 0600; an existing one is kept,
//! so running it again keeps every identity) and `DIR/principals.toml`
//! (name, role and public nkey of each, which command signatures are
//! checked against). The control plane is always the principal
//! `flotilla` (`flotilla_messages::auth::CONTROL_PLANE`).
//!
//! The subjects are those of `flotilla_messages::Subjects` and the
//! JetStream API calls of `flotilla_bus::nats` (`log.rs`, `read.rs`,
//! `snapshots.rs`: stream info and create, batched direct gets, message
//! deletes, KV info, get and put); `deploy/nats/README.md` says how to use
//! the files, and `tests/e2e/nats_permissions.rs` proves each rule against
//! a real nats-server.

use crate::cli::NatsConfigArgs;
use anyhow::{anyhow, bail, Context, Result};
use flotilla_bus::nats::{
    inbox_prefix, load_nkey_seed, LEASE_BUCKET, SNAPSHOT_BUCKET, STREAM_NAME,
};
use flotilla_messages::auth::{CONTROL_PLANE, RESERVED_PRINCIPALS};
use flotilla_messages::{validate_id, Subjects};
use nkeys::KeyPair;
use serde::Serialize;
use std::collections::BTreeSet;
use std::path::Path;
use std::process::ExitCode;

/// What a NATS user is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NatsRole {
    /// `flotilla up`: serves commands and queries, writes the log.
    ControlPlane,
    /// `flotilla agent --node-id N`.
    Agent,
    /// `flotilla worker --worker-id W`.
    Worker,
    /// Sends commands and queries (`flotilla send --nats`).
    Operator,
    /// Reads the event stream (`flotilla audit`, `events`, `replay`).
    Auditor,
    /// Requests predictions on `infer.>` (a program driving with a served
    /// policy over NATS).
    InferenceClient,
}

impl NatsRole {
    /// The role's name in `principals.toml` (a
    /// `flotilla_messages::auth::KeyRole`).
    pub fn as_str(self) -> &'static str {
        match self {
            NatsRole::ControlPlane => "control-plane",
            NatsRole::Agent => "agent",
            NatsRole::Worker => "worker",
            NatsRole::Operator => "operator",
            NatsRole::Auditor => "auditor",
            NatsRole::InferenceClient => "inference-client",
        }
    }
}

/// What one user may publish and subscribe to.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Permissions {
    /// Subjects it may publish on.
    pub publish: Vec<String>,
    /// Subjects it may subscribe to.
    pub subscribe: Vec<String>,
    /// Whether it may answer the requests it receives (publish once on
    /// their reply subjects).
    pub allow_responses: bool,
}

/// The JetStream API subjects that read the event stream: its info (the
/// log's open) and batched direct gets (every read), plus the snapshot
/// bucket's info (the log's open checks it exists).
fn event_reads() -> Vec<String> {
    let (s, kv) = (STREAM_NAME, format!("KV_{SNAPSHOT_BUCKET}"));
    vec![
        format!("$JS.API.STREAM.INFO.{s}"),
        format!("$JS.API.DIRECT.GET.{s}"),
        format!("$JS.API.DIRECT.GET.{s}.>"),
        format!("$JS.API.STREAM.INFO.{kv}"),
    ]
}

/// The JetStream API subjects that get or create the lease bucket, read
/// its keys and compare-and-set them (the control plane's replicas elect
/// their driver with it; see `flotilla_bus::nats::NatsLeases`).
fn lease_use() -> Vec<String> {
    let kv = format!("KV_{LEASE_BUCKET}");
    vec![
        format!("$JS.API.STREAM.INFO.{kv}"),
        format!("$JS.API.STREAM.CREATE.{kv}"),
        format!("$JS.API.DIRECT.GET.{kv}.>"),
        format!("$JS.API.STREAM.MSG.GET.{kv}"),
        format!("$KV.{LEASE_BUCKET}.>"),
    ]
}

/// What `role` needs, `name` being its node or worker id for agents and
/// workers and `public_key` its nkey (its replies arrive under
/// [`inbox_prefix`] of it, and nobody else's).
pub fn permissions(
    subjects: &Subjects,
    role: NatsRole,
    name: &str,
    public_key: &str,
) -> Permissions {
    let p = subjects.prefix();
    let inboxes = format!("{}.>", inbox_prefix(public_key));
    let (s, kv, bucket) = (
        STREAM_NAME,
        format!("KV_{SNAPSHOT_BUCKET}"),
        SNAPSHOT_BUCKET,
    );
    let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    match role {
        NatsRole::ControlPlane => {
            let mut publish = strings(&[
                &format!("{p}.evt.>"),
                &format!("{p}.signal.>"),
                // The gateway forwards HTTP commands and queries over the bus.
                &format!("{p}.cmd.>"),
                &format!("{p}.query.>"),
                "$JS.API.INFO",
                &format!("$JS.API.STREAM.CREATE.{s}"),
                // Orphans of a batch a crashed writer left incomplete.
                &format!("$JS.API.STREAM.MSG.DELETE.{s}"),
                &format!("$JS.API.STREAM.CREATE.{kv}"),
                &format!("$JS.API.DIRECT.GET.{kv}.>"),
                &format!("$JS.API.STREAM.MSG.GET.{kv}"),
                &format!("$KV.{bucket}.>"),
            ]);
            publish.extend(event_reads());
            publish.extend(lease_use());
            Permissions {
                publish,
                subscribe: strings(&[
                    &format!("{p}.cmd.>"),
                    &format!("{p}.query.>"),
                    &format!("{p}.evt.>"),
                    &format!("{p}.health.>"),
                    &format!("{p}.signal.>"),
                    &inboxes,
                ]),
                allow_responses: true,
            }
        }
        NatsRole::Agent => Permissions {
            publish: vec![format!("{p}.health.{name}")],
            subscribe: vec![format!("{p}.faults.{name}")],
            allow_responses: false,
        },
        NatsRole::Worker => {
            // The worker's deployment aggregate `inference/<name>` lives in
            // the log: it appends to its own stream and snapshot key only.
            let key = format!("$KV.{bucket}.inference.{name}");
            let mut publish = vec![
                format!("{p}.evt.inference.{name}"),
                format!("$JS.API.DIRECT.GET.{kv}.{key}"),
                format!("$JS.API.DIRECT.GET.{kv}.{key}.>"),
                key.clone(),
                format!("{key}.>"),
            ];
            publish.extend(event_reads());
            Permissions {
                publish,
                subscribe: vec![
                    format!("{p}.infer.>"),
                    format!("{p}.cmd.inference.{name}"),
                    format!("{p}.query.inference.{name}"),
                    format!("{p}.query.inference"),
                    inboxes.clone(),
                ],
                allow_responses: true,
            }
        }
        // Requests predictions, hears its own replies: nothing else.
        NatsRole::InferenceClient => Permissions {
            publish: vec![format!("{p}.infer.>")],
            subscribe: vec![inboxes.clone()],
            allow_responses: false,
        },
        NatsRole::Operator => Permissions {
            publish: vec![format!("{p}.cmd.>"), format!("{p}.query.>")],
            subscribe: vec![inboxes.clone()],
            allow_responses: false,
        },
        NatsRole::Auditor => {
            let mut publish = event_reads();
            // A read-only (pull or ordered) consumer of the events stream,
            // for tools beside `flotilla audit`, which needs none.
            publish.extend([
                format!("$JS.API.CONSUMER.CREATE.{s}"),
                format!("$JS.API.CONSUMER.CREATE.{s}.>"),
                format!("$JS.API.CONSUMER.INFO.{s}.*"),
                format!("$JS.API.CONSUMER.MSG.NEXT.{s}.*"),
            ]);
            Permissions {
                publish,
                subscribe: vec![inboxes.clone()],
                allow_responses: false,
            }
        }
    }
}

/// One user of the generated configuration.
#[derive(Debug, Serialize)]
pub struct Principal {
    /// Its name (the seed file is `<name>.nk`).
    pub name: String,
    /// Its role.
    pub role: &'static str,
    /// Its public nkey (`U…`).
    pub public_key: String,
}

/// `principals.toml`.
#[derive(Debug, Serialize)]
struct PrincipalsFile {
    principal: Vec<Principal>,
}

/// Runs `flotilla nats-config`.
pub fn run(args: NatsConfigArgs) -> Result<ExitCode> {
    let subjects = Subjects::new(&args.prefix).map_err(|e| anyhow!("prefix: {e}"))?;
    let wanted = principals_of(&args)?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("out: cannot create {}", args.out.display()))?;
    let mut users = Vec::new();
    let mut principals = Vec::new();
    for (role, name) in &wanted {
        let key = seed_for(&args.out, name)?;
        users.push(user_block(
            &key.public_key(),
            name,
            *role,
            &permissions(&subjects, *role, name, &key.public_key()),
        ));
        principals.push(Principal {
            name: name.clone(),
            role: role.as_str(),
            public_key: key.public_key(),
        });
    }
    let mut conf = server_config(&subjects, &users);
    if !args.routes.is_empty() {
        let password = route_password(&args.out)?;
        conf.push_str(&cluster_block(&args.cluster_name, &args.routes, &password)?);
    }
    // It may hold the route password: private, and never half-written.
    let conf_path = args.out.join("nats-server.conf");
    crate::secret_file::replace(&conf_path, conf.as_bytes())
        .with_context(|| format!("out: cannot write {}", conf_path.display()))?;
    let listing = toml::to_string(&PrincipalsFile {
        principal: principals,
    })?;
    let header = "# Written by `flotilla nats-config`: the NATS users and their public nkeys.\n";
    write_file(
        &args.out.join("principals.toml"),
        format!("{header}{listing}").as_bytes(),
    )?;
    println!("wrote {} users to {}", wanted.len(), conf_path.display());
    Ok(ExitCode::SUCCESS)
}

/// The control plane first, then every named principal; names are ids,
/// unique and not reserved.
fn principals_of(args: &NatsConfigArgs) -> Result<Vec<(NatsRole, String)>> {
    let mut all = vec![(NatsRole::ControlPlane, CONTROL_PLANE.to_string())];
    let named = [
        ("agent", NatsRole::Agent, &args.agents),
        ("worker", NatsRole::Worker, &args.workers),
        ("operator", NatsRole::Operator, &args.operators),
        ("auditor", NatsRole::Auditor, &args.auditors),
        (
            "inference-client",
            NatsRole::InferenceClient,
            &args.inference_clients,
        ),
    ];
    let mut seen = BTreeSet::from([CONTROL_PLANE.to_string()]);
    for (flag, role, names) in named {
        for name in names {
            validate_id(flag, name).map_err(|e| anyhow!("{flag}: {e}"))?;
            if RESERVED_PRINCIPALS.contains(&name.as_str()) {
                bail!("{flag}: {name:?} is a reserved principal name");
            }
            if !seen.insert(name.clone()) {
                bail!("{flag}: {name:?} is named twice (each principal needs its own name and seed file)");
            }
            all.push((role, name.clone()));
        }
    }
    Ok(all)
}

/// The user routes authenticate as.
const ROUTE_USER: &str = "route";

/// The routes' password in `DIR/route.password`, kept if it exists, else
/// 32 random hex digits written there with mode 0600.
fn route_password(dir: &Path) -> Result<String> {
    let path = dir.join("route.password");
    if path.exists() {
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("out: cannot read {}", path.display()))?;
        return Ok(text.trim().to_string());
    }
    let password = hex::encode(rand::random::<[u8; 16]>());
    crate::secret_file::write_new(&path, &password)
        .with_context(|| format!("out: cannot write {}", path.display()))?;
    Ok(password)
}

/// The `cluster` block: listen on the routes' port, accept only routes
/// with the password, and connect to every route given (a server skips
/// itself). Each server still needs its own `--name`.
fn cluster_block(name: &str, routes: &[String], password: &str) -> Result<String> {
    validate_id("cluster_name", name).map_err(|e| anyhow!("cluster_name: {e}"))?;
    let mut port = None;
    let mut urls = Vec::new();
    for route in routes {
        let (host, route_port) = route
            .strip_prefix("nats://")
            .and_then(|rest| rest.rsplit_once(':'))
            .filter(|(host, p)| !host.is_empty() && !host.contains('@') && p.parse::<u16>().is_ok())
            .ok_or_else(|| anyhow!("route: {route:?} is not nats://HOST:PORT"))?;
        if port.is_some_and(|p| p != route_port) {
            bail!("route: every route must use one port, got {route:?}");
        }
        port = Some(route_port);
        urls.push(format!(
            "nats://{ROUTE_USER}:{password}@{host}:{route_port}"
        ));
    }
    Ok(format!(
        "\n# The cluster: only servers that know route.password may join.\n\
         cluster {{\n  name: {name:?}\n  listen: \"0.0.0.0:{}\"\n  \
         authorization {{ user: {ROUTE_USER:?}, password: {password:?} }}\n  routes: {}\n}}\n",
        port.unwrap_or("6222"),
        list(&urls)
    ))
}

/// The seed in `DIR/<name>.nk`, kept if it exists, else a new user key
/// written there with mode 0600.
fn seed_for(dir: &Path, name: &str) -> Result<KeyPair> {
    let path = dir.join(format!("{name}.nk"));
    if path.exists() {
        return Ok(load_nkey_seed("seed file", &path)?);
    }
    let key = KeyPair::new_user();
    let seed = key
        .seed()
        .map_err(|e| anyhow!("cannot encode a seed: {e}"))?;
    crate::secret_file::write_new(&path, &seed)
        .with_context(|| format!("out: cannot write {}", path.display()))?;
    Ok(key)
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes).with_context(|| format!("out: cannot write {}", path.display()))
}

/// A quoted list for the nats-server configuration (quoted, so `$JS…` is
/// not read as a variable).
fn list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| format!("{s:?}")).collect();
    format!("[{}]", quoted.join(", "))
}

fn user_block(public_key: &str, name: &str, role: NatsRole, p: &Permissions) -> String {
    let responses = if p.allow_responses {
        "\n        allow_responses: true"
    } else {
        ""
    };
    format!(
        "    # {name} ({role})\n    {{\n      nkey: {public_key:?}\n      permissions: {{\n        \
         publish: {{ allow: {} }}\n        subscribe: {{ allow: {} }}{responses}\n      }}\n    }}\n",
        list(&p.publish),
        list(&p.subscribe),
        role = role.as_str(),
    )
}

fn server_config(subjects: &Subjects, users: &[String]) -> String {
    format!(
        "# Written by `flotilla nats-config` for subject prefix {:?}: one nkey user per\n\
         # principal, each allowed only what its role needs (see deploy/nats/README.md).\n\
         # Clients without a listed nkey are refused.\n\n\
         jetstream: enabled\n\n\
         authorization {{\n  users = [\n{}  ]\n}}\n",
        subjects.prefix(),
        users.concat()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every role.
    const ALL_ROLES: [NatsRole; 6] = [
        NatsRole::ControlPlane,
        NatsRole::Agent,
        NatsRole::Worker,
        NatsRole::Operator,
        NatsRole::Auditor,
        NatsRole::InferenceClient,
    ];

    fn args(out: &Path, agents: &[&str], operators: &[&str]) -> NatsConfigArgs {
        let own = |v: &[&str]| v.iter().map(|s| s.to_string()).collect();
        NatsConfigArgs {
            out: out.to_path_buf(),
            prefix: "flotilla".into(),
            agents: own(agents),
            workers: Vec::new(),
            operators: own(operators),
            auditors: Vec::new(),
            inference_clients: Vec::new(),
            routes: Vec::new(),
            cluster_name: "flotilla".into(),
        }
    }

    #[test]
    fn names_are_unique_ids_and_not_reserved() {
        let dir = tempfile::tempdir().unwrap();
        let e = principals_of(&args(dir.path(), &["n1"], &["n1"])).unwrap_err();
        assert!(
            e.to_string().starts_with("operator: \"n1\" is named twice"),
            "{e}"
        );
        let e = principals_of(&args(dir.path(), &[], &["anonymous"])).unwrap_err();
        assert!(e.to_string().contains("reserved"), "{e}");
        let e = principals_of(&args(dir.path(), &["a b"], &[])).unwrap_err();
        assert!(e.to_string().starts_with("agent: "), "{e}");
    }

    #[test]
    fn running_again_keeps_every_seed_and_seeds_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        run(args(dir.path(), &["n1"], &["alice"])).unwrap();
        let first = std::fs::read_to_string(dir.path().join("principals.toml")).unwrap();
        run(args(dir.path(), &["n1"], &["alice"])).unwrap();
        let again = std::fs::read_to_string(dir.path().join("principals.toml")).unwrap();
        assert_eq!(first, again);
        let mode = std::fs::metadata(dir.path().join("alice.nk"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(first
            .contains("[[principal]]\nname = \"alice\"\nrole = \"operator\"\npublic_key = \"U"));
    }

    #[test]
    fn an_agent_may_publish_only_its_own_health_and_hear_only_its_own_faults() {
        let p = permissions(&Subjects::default(), NatsRole::Agent, "n1", "UN1");
        assert_eq!(p.publish, vec!["flotilla.health.n1"]);
        assert_eq!(p.subscribe, vec!["flotilla.faults.n1"]);
        assert!(!p.allow_responses);
    }

    #[test]
    fn only_the_control_plane_may_append_to_every_stream() {
        let s = Subjects::new("prod.fl").unwrap();
        for role in [
            NatsRole::Agent,
            NatsRole::Operator,
            NatsRole::Auditor,
            NatsRole::InferenceClient,
        ] {
            let p = permissions(&s, role, "x", "UX");
            assert!(
                p.publish.iter().all(|s| !s.contains(".evt.")),
                "{role:?}: {:?}",
                p.publish
            );
        }
        let worker = permissions(&s, NatsRole::Worker, "w1", "UW1");
        let appends: Vec<_> = worker
            .publish
            .iter()
            .filter(|s| s.contains(".evt."))
            .collect();
        assert_eq!(appends, ["prod.fl.evt.inference.w1"]);
        let cp = permissions(&s, NatsRole::ControlPlane, "flotilla", "UCP");
        assert!(cp.subscribe.contains(&"_INBOX.UCP.>".to_string()));
        assert!(cp.publish.contains(&"prod.fl.evt.>".to_string()));
    }

    #[test]
    fn only_the_control_plane_may_take_leases() {
        let s = Subjects::default();
        let cp = permissions(&s, NatsRole::ControlPlane, "flotilla", "UCP");
        assert!(cp.publish.contains(&"$KV.FLOTILLA_LEASES.>".to_string()));
        for role in ALL_ROLES.into_iter().skip(1) {
            let p = permissions(&s, role, "x", "UX");
            assert!(
                p.publish.iter().all(|s| !s.contains("LEASES")),
                "{role:?}: {:?}",
                p.publish
            );
        }
    }

    #[test]
    fn routes_get_a_password_protected_cluster_block() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let mut a = args(dir.path(), &["n1"], &[]);
        a.routes = vec!["nats://nats-1:6222".into(), "nats://nats-2:6222".into()];
        run(a).unwrap();
        let conf = std::fs::read_to_string(dir.path().join("nats-server.conf")).unwrap();
        let password = std::fs::read_to_string(dir.path().join("route.password")).unwrap();
        let password = password.trim();
        assert_eq!(password.len(), 32);
        let mode = std::fs::metadata(dir.path().join("nats-server.conf"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "the configuration holds the password");
        assert!(conf.contains("listen: \"0.0.0.0:6222\""), "{conf}");
        assert!(
            conf.contains(&format!(
                "authorization {{ user: \"route\", password: \"{password}\" }}"
            )),
            "{conf}"
        );
        assert!(
            conf.contains(&format!("\"nats://route:{password}@nats-2:6222\"")),
            "{conf}"
        );
        // Running again keeps the password.
        let mut again = args(dir.path(), &["n1"], &[]);
        again.routes = vec!["nats://nats-1:6222".into()];
        run(again).unwrap();
        let kept = std::fs::read_to_string(dir.path().join("route.password")).unwrap();
        assert_eq!(password, kept.trim());
    }

    #[test]
    fn an_inference_client_may_only_request_predictions_and_hear_its_replies() {
        let s = Subjects::new("prod.fl").unwrap();
        let p = permissions(&s, NatsRole::InferenceClient, "car1", "UCAR1");
        assert_eq!(p.publish, ["prod.fl.infer.>"]);
        assert_eq!(p.subscribe, ["_INBOX.UCAR1.>"]);
        assert!(!p.allow_responses);
    }

    #[test]
    fn every_role_is_a_principals_role_and_an_inference_client_is_listed() {
        for role in ALL_ROLES {
            let parsed: flotilla_messages::auth::KeyRole =
                serde_json::from_str(&format!("{:?}", role.as_str())).unwrap();
            assert_eq!(parsed.as_str(), role.as_str());
        }
        let dir = tempfile::tempdir().unwrap();
        let mut a = args(dir.path(), &[], &["alice"]);
        a.inference_clients = vec!["car1".into()];
        run(a).unwrap();
        let listed = std::fs::read_to_string(dir.path().join("principals.toml")).unwrap();
        assert!(
            listed.contains("name = \"car1\"\nrole = \"inference-client\""),
            "{listed}"
        );
        let conf = std::fs::read_to_string(dir.path().join("nats-server.conf")).unwrap();
        assert!(conf.contains("# car1 (inference-client)"), "{conf}");
        crate::trust::load_principals(&dir.path().join("principals.toml")).unwrap();
        let mut twice = args(dir.path(), &[], &["alice"]);
        twice.inference_clients = vec!["alice".into()];
        let e = principals_of(&twice).unwrap_err();
        assert!(e.to_string().starts_with("inference-client: "), "{e}");
    }

    #[test]
    fn a_route_must_be_a_nats_url_with_one_port() {
        for bad in [
            "nats-1:6222",
            "nats://nats-1",
            "nats://u:p@nats-1:6222",
            "tls://a:1",
        ] {
            let e = cluster_block("flotilla", &[bad.into()], "pw").unwrap_err();
            assert!(e.to_string().starts_with("route: "), "{bad}: {e}");
        }
        let e = cluster_block(
            "flotilla",
            &["nats://a:1".into(), "nats://b:2".into()],
            "pw",
        )
        .unwrap_err();
        assert!(e.to_string().contains("one port"), "{e}");
    }
}
