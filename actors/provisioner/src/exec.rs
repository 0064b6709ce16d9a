//! The `exec` provider: the user's own commands provision, list and
//! terminate nodes, so any cloud CLI can be plugged in.
//!
//! Each command runs with `sh -c` and these environment variables:
//! `FLOTILLA_NODE_ID`, `FLOTILLA_POOL`, `FLOTILLA_INSTANCE_TYPE`,
//! `FLOTILLA_REGION`, `FLOTILLA_LABELS` (JSON), `FLOTILLA_SETUP_COMMANDS`
//! (JSON), `FLOTILLA_INSTANCE_ID` (terminate, when known),
//! `FLOTILLA_DRAIN_MODE` and `FLOTILLA_DRAIN_DEADLINE_MS` (drain).
//!
//! - `provision` prints `{"instance_id": "...", "registered": false}`
//!   (`registered` optional);
//! - `list` prints `[{"node_id": "...", "instance_id": "...", "registered": true}]`
//!   (`registered` optional);
//! - `terminate`, `cordon`, `uncordon` succeed with exit status 0;
//! - `drain` succeeds with exit status 0 and may print `{"forced": true}`.
//!
//! A non-zero exit is a refusal carrying the command's stderr; a command
//! running past `timeout` is killed.

use super::provider::{Instance, Provider, ProviderError, Provisioned};
use async_trait::async_trait;
use flotilla_messages::fleet::{DrainMode, ProviderConfig};
use flotilla_messages::provisioner::NodeSpec;
use serde::Deserialize;
use std::time::Duration;

/// Runs user commands.
pub struct ExecProvider {
    provision: String,
    list: String,
    terminate: String,
    cordon: Option<String>,
    drain: Option<String>,
    timeout: Duration,
}

#[derive(Deserialize)]
struct ProvisionOutput {
    instance_id: String,
    #[serde(default)]
    registered: bool,
}

#[derive(Deserialize, Default)]
struct DrainOutput {
    #[serde(default)]
    forced: bool,
}

impl ExecProvider {
    /// A provider from its `providers:` entry.
    pub fn from_config(config: &ProviderConfig) -> Self {
        match config {
            ProviderConfig::Exec {
                provision,
                list,
                terminate,
                cordon,
                drain,
                timeout,
            } => ExecProvider {
                provision: provision.clone(),
                list: list.clone(),
                terminate: terminate.clone(),
                cordon: cordon.clone(),
                drain: drain.clone(),
                timeout: Duration::from_secs(timeout.0.max(1)),
            },
            _ => unreachable!("ExecProvider::from_config takes an exec provider"),
        }
    }

    /// Runs `command` with `env`; returns its stdout.
    async fn run(
        &self,
        operation: &'static str,
        command: &str,
        env: &[(&str, String)],
    ) -> Result<String, ProviderError> {
        let mut cmd = tokio::process::Command::new("sh");
        cmd.arg("-c").arg(command).kill_on_drop(true);
        cmd.stdin(std::process::Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let output = tokio::time::timeout(self.timeout, cmd.output())
            .await
            .map_err(|_| ProviderError::Timeout {
                operation,
                seconds: self.timeout.as_secs(),
            })?
            .map_err(|e| {
                ProviderError::Broken(format!("{operation}: cannot run {command:?}: {e}"))
            })?;
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            return Err(ProviderError::Refused(format!(
                "{operation}: {command:?} exited with {}: {}",
                output.status,
                stderr.trim()
            )));
        }
        String::from_utf8(output.stdout)
            .map_err(|_| ProviderError::Broken(format!("{operation}: stdout is not UTF-8")))
    }
}

fn parse<T: serde::de::DeserializeOwned>(
    operation: &str,
    stdout: &str,
) -> Result<T, ProviderError> {
    serde_json::from_str(stdout.trim()).map_err(|e| {
        ProviderError::Broken(format!(
            "{operation}: stdout is not the expected JSON ({e}): {}",
            stdout.trim()
        ))
    })
}

#[async_trait]
impl Provider for ExecProvider {
    async fn provision(
        &self,
        node_id: &str,
        spec: &NodeSpec,
    ) -> Result<Provisioned, ProviderError> {
        let env = [
            ("FLOTILLA_NODE_ID", node_id.to_string()),
            ("FLOTILLA_POOL", spec.pool.clone()),
            (
                "FLOTILLA_INSTANCE_TYPE",
                spec.instance_type.clone().unwrap_or_default(),
            ),
            ("FLOTILLA_REGION", spec.region.clone().unwrap_or_default()),
            (
                "FLOTILLA_LABELS",
                serde_json::to_string(&spec.labels).unwrap_or_default(),
            ),
            (
                "FLOTILLA_SETUP_COMMANDS",
                serde_json::to_string(&spec.setup_commands).unwrap_or_default(),
            ),
        ];
        let out: ProvisionOutput = parse(
            "provision",
            &self.run("provision", &self.provision, &env).await?,
        )?;
        Ok(Provisioned {
            instance_id: out.instance_id,
            registered: out.registered,
        })
    }

    async fn list(&self, pool: &str) -> Result<Vec<Instance>, ProviderError> {
        let env = [("FLOTILLA_POOL", pool.to_string())];
        parse("list", &self.run("list", &self.list, &env).await?)
    }

    async fn terminate(
        &self,
        node_id: &str,
        instance_id: Option<&str>,
    ) -> Result<(), ProviderError> {
        let env = [
            ("FLOTILLA_NODE_ID", node_id.to_string()),
            (
                "FLOTILLA_INSTANCE_ID",
                instance_id.unwrap_or_default().to_string(),
            ),
        ];
        self.run("terminate", &self.terminate, &env).await.map(drop)
    }

    async fn cordon(&self, node_id: &str) -> Result<(), ProviderError> {
        let Some(command) = &self.cordon else {
            return Ok(());
        };
        let env = [("FLOTILLA_NODE_ID", node_id.to_string())];
        self.run("cordon", command, &env).await.map(drop)
    }

    async fn drain(
        &self,
        node_id: &str,
        mode: DrainMode,
        deadline_ms: u64,
    ) -> Result<bool, ProviderError> {
        let Some(command) = &self.drain else {
            return Ok(false);
        };
        let mode = serde_json::to_value(mode)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string));
        let env = [
            ("FLOTILLA_NODE_ID", node_id.to_string()),
            ("FLOTILLA_DRAIN_MODE", mode.unwrap_or_default()),
            ("FLOTILLA_DRAIN_DEADLINE_MS", deadline_ms.to_string()),
        ];
        let stdout = self.run("drain", command, &env).await?;
        let out: DrainOutput = if stdout.trim().is_empty() {
            DrainOutput::default()
        } else {
            parse("drain", &stdout)?
        };
        Ok(out.forced)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// A fake cloud as shell scripts over a directory of files.
    fn provider(dir: &std::path::Path, timeout: u64) -> ExecProvider {
        let d = dir.display();
        ExecProvider::from_config(&ProviderConfig::Exec {
            provision: format!(
                "echo \"$FLOTILLA_POOL $FLOTILLA_INSTANCE_TYPE\" > {d}/$FLOTILLA_NODE_ID; \
                 printf '{{\"instance_id\": \"vm-%s\"}}' \"$FLOTILLA_NODE_ID\""
            ),
            list: format!(
                "cd {d}; printf '['; sep=''; for f in *; do [ -e \"$f\" ] || continue; \
                 printf '%s{{\"node_id\":\"%s\",\"instance_id\":\"vm-%s\"}}' \"$sep\" \"$f\" \"$f\"; sep=','; done; printf ']'"
            ),
            terminate: format!("rm -f {d}/$FLOTILLA_NODE_ID"),
            cordon: Some("test -n \"$FLOTILLA_NODE_ID\"".into()),
            drain: Some("echo '{\"forced\": true}'".into()),
            timeout: flotilla_messages::fleet::Seconds(timeout),
        })
    }

    fn spec() -> NodeSpec {
        NodeSpec {
            pool: "p".into(),
            provider: "cloud".into(),
            instance_type: Some("h100".into()),
            region: None,
            labels: BTreeMap::new(),
            setup_commands: vec![],
        }
    }

    #[tokio::test]
    async fn user_commands_provision_list_and_terminate() {
        let dir = tempfile::tempdir().unwrap();
        let p = provider(dir.path(), 10);
        let out = p.provision("p-1", &spec()).await.unwrap();
        assert_eq!(out.instance_id, "vm-p-1");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("p-1"))
                .unwrap()
                .trim(),
            "p h100"
        );
        let listed = p.list("p").await.unwrap();
        assert_eq!(
            listed,
            vec![Instance {
                node_id: "p-1".into(),
                instance_id: "vm-p-1".into(),
                registered: false,
            }]
        );
        p.cordon("p-1").await.unwrap();
        assert!(p.drain("p-1", DrainMode::Evict, 0).await.unwrap());
        p.terminate("p-1", Some("vm-p-1")).await.unwrap();
        assert!(p.list("p").await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn failures_and_bad_output_are_errors() {
        let bad = ExecProvider::from_config(&ProviderConfig::Exec {
            provision: "echo not json".into(),
            list: "echo oops >&2; exit 3".into(),
            terminate: "sleep 5".into(),
            cordon: None,
            drain: None,
            timeout: flotilla_messages::fleet::Seconds(1),
        });
        let e = bad.provision("p-1", &spec()).await.unwrap_err();
        assert!(
            matches!(e, ProviderError::Broken(ref m) if m.contains("not the expected JSON")),
            "{e}"
        );
        let e = bad.list("p").await.unwrap_err();
        assert!(
            matches!(e, ProviderError::Refused(ref m) if m.contains("oops")),
            "{e}"
        );
        let e = bad.terminate("p-1", None).await.unwrap_err();
        assert!(matches!(e, ProviderError::Timeout { .. }), "{e}");
    }

    /// The provider conformance suite on a cloud of shell scripts: a node
    /// is a file `nodes/<pool>/<node id>` next to them.
    mod conformance {
        use super::*;
        use crate::conformance::{ProviderCase, ProviderHarness};
        use std::path::Path;
        use std::sync::Arc;

        /// Each instance made gets an id of its own (the shell's pid), so
        /// a node made twice would show.
        const PROVISION: &str = r#"mkdir -p "$FLOTILLA_POOL"
id="vm-$FLOTILLA_NODE_ID-$$"
echo "$id" > "$FLOTILLA_POOL/$FLOTILLA_NODE_ID"
printf '{"instance_id": "%s"}' "$id""#;

        const LIST: &str = r#"printf '['
sep=''
for node in "$FLOTILLA_POOL"/*; do
    [ -e "$node" ] || continue
    printf '%s{"node_id": "%s", "instance_id": "%s"}' "$sep" "$(basename "$node")" "$(cat "$node")"
    sep=','
done
printf ']'"#;

        const TERMINATE: &str = r#"rm -f ./*/"$FLOTILLA_NODE_ID""#;

        /// Refuses a node that does not exist.
        const CORDON: &str = r#"ls ./*/"$FLOTILLA_NODE_ID" > /dev/null"#;

        const DRAIN: &str = r#"[ "$FLOTILLA_DRAIN_MODE" = wait ] || echo '{"forced": true}'"#;

        /// Writes the cloud's command `name`, run in `nodes`, as a script
        /// in `cloud`; returns how to run it.
        fn command(cloud: &Path, nodes: &Path, name: &str, body: &str) -> String {
            let script = cloud.join(format!("{name}.sh"));
            let text = format!("cd {}\n{body}\n", nodes.display());
            std::fs::write(&script, text).expect("a script");
            format!("sh {}", script.display())
        }

        struct ExecHarness {
            config: ProviderConfig,
            _cloud: tempfile::TempDir,
        }

        #[async_trait]
        impl ProviderHarness for ExecHarness {
            fn skip(_: ProviderCase) -> Option<&'static str> {
                None
            }

            fn start(_: ProviderCase) -> Self {
                let cloud = tempfile::tempdir().expect("a directory for the cloud");
                let nodes = cloud.path().join("nodes");
                std::fs::create_dir(&nodes).expect("the nodes directory");
                let command = |name, body| command(cloud.path(), &nodes, name, body);
                let config = ProviderConfig::Exec {
                    provision: command("provision", PROVISION),
                    list: command("list", LIST),
                    terminate: command("terminate", TERMINATE),
                    cordon: Some(command("cordon", CORDON)),
                    drain: Some(command("drain", DRAIN)),
                    timeout: flotilla_messages::fleet::Seconds(10),
                };
                ExecHarness {
                    config,
                    _cloud: cloud,
                }
            }

            fn makes_nodes(&self) -> bool {
                true
            }

            fn provider(&self) -> Arc<dyn Provider> {
                Arc::new(ExecProvider::from_config(&self.config))
            }

            async fn finish(self) {}
        }

        crate::provider_conformance_tests!(ExecHarness);
    }
}
