//! The `kubernetes` provider (the seed's pattern 2): a pool's nodes are
//! Kubernetes Nodes, cordoned and drained through the API with kube-rs.
//!
//! Kubernetes makes Nodes itself (node groups, the cluster autoscaler), so
//! this provider never creates one. A node's id is its Node's name and a
//! pool's Nodes are those labelled `pool_label: <pool>`:
//!
//! - `list` lists Nodes by that label (`registered` = the Node is Ready);
//!   the provisioner adopts a listed Node named as the node it wants;
//! - `provision` is reached only when no such Node is listed and is refused
//!   with what to do (label the Node, or let the node group make it);
//! - `terminate` deletes the Node object (a gone Node is fine); the machine
//!   behind it belongs to the node group;
//! - `cordon`/`uncordon` merge-patch `spec.unschedulable`;
//! - `drain` evicts every pod on the Node except DaemonSet pods, mirror
//!   (static) pods and finished pods through the Eviction API (policy/v1),
//!   then waits for them to go. An eviction a PodDisruptionBudget refuses
//!   (429) is retried until the drain's deadline and then reported as a
//!   refusal naming the pod. `wait` mode never evicts: it waits for the pods
//!   to finish; `evict_after_timeout` waits until the deadline, then evicts.
//!
//! The client comes from the process's kubeconfig (`KUBECONFIG`,
//! `~/.kube/config`) or in-cluster service account on first use, so a pools
//! file naming this provider validates on a machine without a cluster.
//! Neighbours: [`super::provider`] (the trait), [`super::effects`] (callers).

use super::provider::{Instance, Provider, ProviderError, Provisioned};
use async_trait::async_trait;
use flotilla_host::unix_millis;
use flotilla_messages::fleet::{DrainMode, ProviderConfig, DEFAULT_POOL_LABEL};
use flotilla_messages::provisioner::NodeSpec;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::policy::v1::Eviction;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::Client;
use serde_json::json;
use std::time::Duration;
use tokio::sync::OnceCell;

/// The annotation the kubelet puts on a static pod's API mirror.
const MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";

/// How often a drain looks at the Node's pods again.
const DRAIN_POLL: Duration = Duration::from_secs(5);

/// Nodes of a Kubernetes cluster.
pub struct KubernetesProvider {
    client: OnceCell<Client>,
    namespace: Option<String>,
    pool_label: String,
    poll: Duration,
}

/// One eviction's result.
enum Evicted {
    /// The API server accepted it (or the pod is gone already).
    Done,
    /// A PodDisruptionBudget refused it for now (429).
    Blocked(String),
}

impl KubernetesProvider {
    /// A provider from its `providers:` entry; the client is made on first use.
    pub fn from_config(config: &ProviderConfig) -> Self {
        match config {
            ProviderConfig::Kubernetes {
                namespace,
                pool_label,
            } => KubernetesProvider {
                client: OnceCell::new(),
                namespace: namespace.clone(),
                pool_label: pool_label.clone(),
                poll: DRAIN_POLL,
            },
            _ => unreachable!("from_config is called with kubernetes entries only"),
        }
    }

    /// A provider over `client`, labelling pools with the default label.
    pub fn with_client(client: Client, namespace: Option<String>) -> Self {
        KubernetesProvider {
            client: OnceCell::new_with(Some(client)),
            namespace,
            pool_label: DEFAULT_POOL_LABEL.into(),
            poll: DRAIN_POLL,
        }
    }

    /// Sets how often a drain looks at the pods again.
    pub fn with_poll(mut self, poll: Duration) -> Self {
        self.poll = poll;
        self
    }

    async fn client(&self) -> Result<Client, ProviderError> {
        self.client
            .get_or_try_init(|| async {
                let config = kube::Config::infer().await.map_err(|e| {
                    ProviderError::Broken(format!("no Kubernetes cluster configured: {e}"))
                })?;
                Client::try_from(config).map_err(|e| {
                    ProviderError::Broken(format!("cannot build a Kubernetes client: {e}"))
                })
            })
            .await
            .cloned()
    }

    async fn nodes(&self) -> Result<Api<Node>, ProviderError> {
        Ok(Api::all(self.client().await?))
    }

    async fn pods(&self) -> Result<Api<Pod>, ProviderError> {
        let client = self.client().await?;
        Ok(match &self.namespace {
            Some(namespace) => Api::namespaced(client, namespace),
            None => Api::all(client),
        })
    }

    async fn set_unschedulable(&self, node_id: &str, value: bool) -> Result<(), ProviderError> {
        let patch = json!({"spec": {"unschedulable": value}});
        let answer = self
            .nodes()
            .await?
            .patch(node_id, &PatchParams::default(), &Patch::Merge(&patch))
            .await;
        // A gone Node takes no work.
        done_or_gone(answer, "patch node", node_id)
    }

    /// The pods a drain must move off `node_id`.
    async fn drainable_pods(&self, node_id: &str) -> Result<Vec<Pod>, ProviderError> {
        let params = ListParams::default().fields(&format!("spec.nodeName={node_id}"));
        let pods = self
            .pods()
            .await?
            .list(&params)
            .await
            .map_err(|e| api_error("list pods of", node_id, e))?;
        Ok(pods.items.into_iter().filter(must_move).collect())
    }

    /// Evicts `pod` through the policy/v1 Eviction API.
    async fn evict(&self, pod: &Pod) -> Result<Evicted, ProviderError> {
        let name = pod.metadata.name.clone().unwrap_or_default();
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let eviction = Eviction {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(namespace.clone()),
                ..Default::default()
            },
            delete_options: None,
        };
        let api: Api<Pod> = Api::namespaced(self.client().await?, &namespace);
        let answer: Result<serde_json::Value, _> = api
            .create_subresource("eviction", &name, &PostParams::default(), &eviction)
            .await;
        match answer {
            Ok(_) => Ok(Evicted::Done),
            Err(e) if is_status(&e, 404) => Ok(Evicted::Done),
            Err(kube::Error::Api(status)) if status.code == 429 => Ok(Evicted::Blocked(format!(
                "pod {namespace}/{name}: {}",
                status.message
            ))),
            Err(e) => Err(api_error("evict pod", &format!("{namespace}/{name}"), e)),
        }
    }
}

/// Whether a drain must move `pod`: not a DaemonSet's (it would come
/// straight back), not a mirror pod (the kubelet owns it), not finished.
fn must_move(pod: &Pod) -> bool {
    let daemon = pod
        .metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.kind == "DaemonSet");
    let mirror = pod
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(MIRROR_ANNOTATION));
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    let finished = matches!(phase, Some("Succeeded" | "Failed"));
    !(daemon || mirror || finished)
}

/// Whether a Node's Ready condition is True.
fn is_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True")
}

fn is_status(error: &kube::Error, code: u16) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == code)
}

/// An API answer as a provider error: a 4xx is a refusal, anything else
/// (unreachable server, 5xx, nonsense) is broken.
fn api_error(operation: &str, target: &str, error: kube::Error) -> ProviderError {
    match &error {
        kube::Error::Api(status) if (400..500).contains(&status.code) => ProviderError::Refused(
            format!("{operation} {target}: {} ({})", status.message, status.code),
        ),
        _ => ProviderError::Broken(format!("{operation} {target}: {error}")),
    }
}

/// A call's answer where the object being gone (404) counts as done.
fn done_or_gone<T>(
    answer: Result<T, kube::Error>,
    operation: &str,
    target: &str,
) -> Result<(), ProviderError> {
    match answer {
        Ok(_) => Ok(()),
        Err(e) if is_status(&e, 404) => Ok(()),
        Err(e) => Err(api_error(operation, target, e)),
    }
}

#[async_trait]
impl Provider for KubernetesProvider {
    async fn provision(
        &self,
        node_id: &str,
        spec: &NodeSpec,
    ) -> Result<Provisioned, ProviderError> {
        let label = &self.pool_label;
        let pool = &spec.pool;
        let found = self
            .nodes()
            .await?
            .get_opt(node_id)
            .await
            .map_err(|e| api_error("get node", node_id, e))?;
        let why = match found {
            None => format!(
                "Kubernetes makes Nodes through its node groups, not Flotilla: no Node {node_id:?} \
                 exists; create it in the pool's node group with label {label}={pool}"
            ),
            Some(_) => format!(
                "Node {node_id:?} exists but is not labelled {label}={pool}; \
                 `kubectl label node {node_id} {label}={pool}` to adopt it"
            ),
        };
        Err(ProviderError::Refused(why))
    }

    async fn list(&self, pool: &str) -> Result<Vec<Instance>, ProviderError> {
        let params = ListParams::default().labels(&format!("{}={pool}", self.pool_label));
        let nodes = self
            .nodes()
            .await?
            .list(&params)
            .await
            .map_err(|e| api_error("list nodes of pool", pool, e))?;
        Ok(nodes
            .items
            .iter()
            .map(|node| {
                let name = node.metadata.name.clone().unwrap_or_default();
                let provider_id = node.spec.as_ref().and_then(|s| s.provider_id.clone());
                Instance {
                    instance_id: provider_id.unwrap_or_else(|| name.clone()),
                    node_id: name,
                    registered: is_ready(node),
                }
            })
            .collect())
    }

    async fn terminate(
        &self,
        node_id: &str,
        _instance_id: Option<&str>,
    ) -> Result<(), ProviderError> {
        let answer = self
            .nodes()
            .await?
            .delete(node_id, &DeleteParams::default())
            .await;
        done_or_gone(answer, "delete node", node_id)
    }

    async fn cordon(&self, node_id: &str) -> Result<(), ProviderError> {
        self.set_unschedulable(node_id, true).await
    }

    async fn uncordon(&self, node_id: &str) -> Result<(), ProviderError> {
        self.set_unschedulable(node_id, false).await
    }

    async fn drain(
        &self,
        node_id: &str,
        mode: DrainMode,
        deadline_ms: u64,
    ) -> Result<bool, ProviderError> {
        let evict_from = match mode {
            DrainMode::Evict => 0,
            DrainMode::Wait => u64::MAX,
            DrainMode::EvictAfterTimeout => deadline_ms,
        };
        let mut evicted = false;
        loop {
            let pods = self.drainable_pods(node_id).await?;
            if pods.is_empty() {
                return Ok(evicted);
            }
            if unix_millis() >= evict_from {
                let mut blocked = Vec::new();
                // A pod already being deleted needs only waiting for.
                for pod in pods
                    .iter()
                    .filter(|p| p.metadata.deletion_timestamp.is_none())
                {
                    match self.evict(pod).await? {
                        Evicted::Done => evicted = true,
                        Evicted::Blocked(why) => blocked.push(why),
                    }
                }
                if !blocked.is_empty() && unix_millis() >= deadline_ms {
                    return Err(ProviderError::Refused(format!(
                        "drain of node {node_id}: a PodDisruptionBudget blocks eviction (429, \
                         retry later): {}",
                        blocked.join("; ")
                    )));
                }
            }
            tokio::time::sleep(self.poll).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_kube_replay::{exchange, list, replaying, status};
    use serde_json::Value;

    const NODES: &str = "/api/v1/nodes";
    const PODS: &str = "/api/v1/pods";

    fn node(name: &str, ready: &str) -> Value {
        node_in("train", name, ready)
    }

    /// Node `name` of `pool`, its Ready condition `ready`.
    fn node_in(pool: &str, name: &str, ready: &str) -> Value {
        json!({"metadata": {"name": name, "labels": {"flotilla.dev/pool": pool}},
            "spec": {"providerID": format!("aws:///us-east-1a/i-{name}")},
            "status": {"conditions": [{"type": "Ready", "status": ready}]}})
    }

    fn pod(name: &str, owner: Option<&str>, annotations: Value) -> Value {
        let owners: Vec<Value> = owner
            .map(|kind| {
                json!({"apiVersion": "apps/v1", "kind": kind, "name": "x", "uid": "u1",
                    "controller": true})
            })
            .into_iter()
            .collect();
        json!({"metadata": {"name": name, "namespace": "ml", "ownerReferences": owners,
                "annotations": annotations},
            "spec": {"nodeName": "gpu-1", "containers": [{"name": "c"}]},
            "status": {"phase": "Running"}})
    }

    fn eviction(name: &str) -> Value {
        json!({"apiVersion": "policy/v1", "kind": "Eviction",
            "metadata": {"name": name, "namespace": "ml"}})
    }

    fn evict(name: &str, code: u16) -> flotilla_kube_replay::Exchange {
        let answer = if code == 201 {
            json!({"kind": "Status", "apiVersion": "v1", "status": "Success"})
        } else {
            status(
                code,
                "TooManyRequests",
                "Cannot evict pod as it would violate the pod's disruption budget.",
            )
        };
        exchange(
            "POST",
            &format!("/api/v1/namespaces/ml/pods/{name}/eviction"),
            vec![],
            code,
            answer,
        )
        .expecting(eviction(name))
    }

    fn pods_on_node(items: Vec<Value>) -> flotilla_kube_replay::Exchange {
        exchange(
            "GET",
            PODS,
            vec!["fieldSelector=spec.nodeName%3Dgpu-1"],
            200,
            list("PodList", items),
        )
    }

    fn provider(client: Client) -> KubernetesProvider {
        KubernetesProvider::with_client(client, None).with_poll(Duration::from_millis(1))
    }

    #[tokio::test]
    async fn list_finds_the_pools_nodes_by_label() {
        let (client, server) = replaying(vec![exchange(
            "GET",
            NODES,
            vec!["labelSelector=flotilla.dev%2Fpool%3Dtrain"],
            200,
            list(
                "NodeList",
                vec![node("gpu-1", "True"), node("gpu-2", "False")],
            ),
        )]);
        let listed = provider(client).list("train").await.unwrap();
        assert_eq!(
            listed,
            vec![
                Instance {
                    node_id: "gpu-1".into(),
                    instance_id: "aws:///us-east-1a/i-gpu-1".into(),
                    registered: true,
                },
                Instance {
                    node_id: "gpu-2".into(),
                    instance_id: "aws:///us-east-1a/i-gpu-2".into(),
                    registered: false,
                },
            ]
        );
        server.await.unwrap();
    }

    #[tokio::test]
    async fn cordon_and_uncordon_patch_spec_unschedulable() {
        let patched = node("gpu-1", "True");
        let (client, server) = replaying(vec![
            exchange(
                "PATCH",
                &format!("{NODES}/gpu-1"),
                vec![],
                200,
                patched.clone(),
            )
            .expecting(json!({"spec": {"unschedulable": true}})),
            exchange("PATCH", &format!("{NODES}/gpu-1"), vec![], 200, patched)
                .expecting(json!({"spec": {"unschedulable": false}})),
        ]);
        let provider = provider(client);
        provider.cordon("gpu-1").await.unwrap();
        provider.uncordon("gpu-1").await.unwrap();
        server.await.unwrap();
    }

    #[tokio::test]
    async fn drain_evicts_workload_pods_but_not_daemonset_or_mirror_pods() {
        let mirror = json!({"kubernetes.io/config.mirror": "abc"});
        let (client, server) = replaying(vec![
            pods_on_node(vec![
                pod("trainer-0", Some("StatefulSet"), json!({})),
                pod("dcgm-exporter-x1", Some("DaemonSet"), json!({})),
                pod("kube-proxy-gpu-1", None, mirror),
                pod("notebook", None, json!({})),
            ]),
            evict("trainer-0", 201),
            evict("notebook", 201),
            pods_on_node(vec![]),
        ]);
        let forced = provider(client)
            .drain("gpu-1", DrainMode::Evict, unix_millis() + 60_000)
            .await
            .unwrap();
        assert!(forced, "pods were evicted");
        let seen = server.await.unwrap();
        assert!(seen
            .iter()
            .all(|l| !l.contains("dcgm") && !l.contains("kube-proxy")));
    }

    #[tokio::test]
    async fn a_pdb_429_is_retried_and_reported_once_the_deadline_passes() {
        // Before the deadline: blocked, retried, then allowed.
        let (client, server) = replaying(vec![
            pods_on_node(vec![pod("trainer-0", None, json!({}))]),
            evict("trainer-0", 429),
            pods_on_node(vec![pod("trainer-0", None, json!({}))]),
            evict("trainer-0", 201),
            pods_on_node(vec![]),
        ]);
        let drained = provider(client)
            .drain("gpu-1", DrainMode::Evict, unix_millis() + 60_000)
            .await;
        assert_eq!(drained, Ok(true));
        server.await.unwrap();
        // At the deadline: the refusal names the pod and the budget.
        let (client, server) = replaying(vec![
            pods_on_node(vec![pod("trainer-0", None, json!({}))]),
            evict("trainer-0", 429),
        ]);
        let Err(ProviderError::Refused(why)) = provider(client)
            .drain("gpu-1", DrainMode::Evict, unix_millis())
            .await
        else {
            panic!("a blocked eviction past the deadline is a refusal")
        };
        assert!(why.contains("PodDisruptionBudget"), "{why}");
        assert!(why.contains("ml/trainer-0"), "{why}");
        server.await.unwrap();
    }

    #[tokio::test]
    async fn wait_mode_never_evicts_it_waits_for_pods_to_finish() {
        let mut done = pod("trainer-0", None, json!({}));
        done["status"]["phase"] = json!("Succeeded");
        let (client, server) = replaying(vec![
            pods_on_node(vec![pod("trainer-0", None, json!({}))]),
            pods_on_node(vec![done]),
        ]);
        let drained = provider(client).drain("gpu-1", DrainMode::Wait, 0).await;
        assert_eq!(drained, Ok(false));
        server.await.unwrap();
    }

    #[tokio::test]
    async fn evict_after_timeout_waits_until_the_deadline_then_evicts_once() {
        // Before the deadline the pods are left to finish.
        let (client, server) = replaying(vec![
            pods_on_node(vec![pod("trainer-0", None, json!({}))]),
            pods_on_node(vec![]),
        ]);
        let drained = provider(client)
            .drain(
                "gpu-1",
                DrainMode::EvictAfterTimeout,
                unix_millis() + 60_000,
            )
            .await;
        assert_eq!(drained, Ok(false));
        server.await.unwrap();
        // Past it they are evicted; a pod already terminating is waited for.
        let mut terminating = pod("trainer-0", None, json!({}));
        terminating["metadata"]["deletionTimestamp"] = json!("2026-11-22T10:00:00Z");
        let (client, server) = replaying(vec![
            pods_on_node(vec![pod("trainer-0", None, json!({}))]),
            evict("trainer-0", 201),
            pods_on_node(vec![terminating]),
            pods_on_node(vec![]),
        ]);
        let drained = provider(client)
            .drain("gpu-1", DrainMode::EvictAfterTimeout, unix_millis())
            .await;
        assert_eq!(drained, Ok(true));
        let seen = server.await.unwrap();
        assert_eq!(seen.iter().filter(|l| l.contains("eviction")).count(), 1);
    }

    #[tokio::test]
    async fn terminate_deletes_the_node_and_a_gone_node_is_fine() {
        let gone = status(404, "NotFound", "nodes \"gpu-1\" not found");
        let (client, server) = replaying(vec![
            exchange(
                "DELETE",
                &format!("{NODES}/gpu-1"),
                vec![],
                200,
                node("gpu-1", "True"),
            ),
            exchange("DELETE", &format!("{NODES}/gpu-1"), vec![], 404, gone),
        ]);
        let provider = provider(client);
        provider.terminate("gpu-1", None).await.unwrap();
        provider.terminate("gpu-1", None).await.unwrap();
        assert_eq!(server.await.unwrap().len(), 2);
    }

    #[tokio::test]
    async fn provision_is_refused_with_what_to_do() {
        let spec = NodeSpec {
            pool: "train".into(),
            provider: "k8s".into(),
            instance_type: None,
            region: None,
            labels: Default::default(),
            setup_commands: vec![],
        };
        let gone = status(404, "NotFound", "nodes \"gpu-9\" not found");
        let (client, server) = replaying(vec![
            exchange("GET", &format!("{NODES}/gpu-9"), vec![], 404, gone),
            exchange(
                "GET",
                &format!("{NODES}/gpu-1"),
                vec![],
                200,
                node("gpu-1", "True"),
            ),
        ]);
        let provider = provider(client);
        let Err(ProviderError::Refused(why)) = provider.provision("gpu-9", &spec).await else {
            panic!("Kubernetes makes Nodes itself")
        };
        assert!(why.contains("node group"), "{why}");
        let Err(ProviderError::Refused(why)) = provider.provision("gpu-1", &spec).await else {
            panic!("an unlabelled Node is not adopted silently")
        };
        assert!(
            why.contains("kubectl label node gpu-1 flotilla.dev/pool=train"),
            "{why}"
        );
        server.await.unwrap();
    }

    #[test]
    fn a_pools_file_may_name_the_kubernetes_provider() {
        let config: ProviderConfig =
            serde_yaml::from_str("type: kubernetes\nnamespace: ml\n").unwrap();
        assert_eq!(
            config,
            ProviderConfig::Kubernetes {
                namespace: Some("ml".into()),
                pool_label: DEFAULT_POOL_LABEL.into(),
            }
        );
        let defined = [("k8s".to_string(), config)].into_iter().collect();
        let set = super::super::provider::ProviderSet::from_config(&defined).unwrap();
        assert!(set.get("k8s").is_some());
    }

    /// Every request these tests make, as the RBAC permission it needs, is
    /// what `actors/provisioner/kube-needs.txt` lists; the deploy checks hold the control plane's
    /// Roles to that file (see `flotilla_kube_replay::record`).
    #[test]
    fn the_recorded_requests_are_the_needs_file() {
        flotilla_kube_replay::record::assert_crate_needs(
            env!("CARGO_MANIFEST_DIR"),
            "provisioner",
            "flotilla-provisioner",
        );
    }

    /// The provider conformance suite against a recorded API server whose
    /// cluster has the cases' Nodes already: each case's exchanges as the
    /// cluster would answer them.
    mod conformance {
        use super::*;
        use crate::conformance::{
            ProviderCase, ProviderHarness, NEVER_MADE, NODE, OTHER_NODE, OTHER_POOL, POOL,
        };
        use flotilla_kube_replay::{Exchange, Replay};
        use std::sync::Arc;

        struct KubernetesHarness(Replay);

        /// The list of `pool`'s Nodes, finding `nodes` (names).
        fn pool_holds(pool: &str, nodes: &[&str]) -> Exchange {
            let selector = format!("labelSelector=flotilla.dev%2Fpool%3D{pool}");
            let items = nodes.iter().map(|n| node_in(pool, n, "True")).collect();
            exchange("GET", NODES, vec![&selector], 200, list("NodeList", items))
        }

        fn node_call(method: &'static str, name: &str, code: u16) -> Exchange {
            let answer = match code {
                404 => status(404, "NotFound", &format!("nodes \"{name}\" not found")),
                _ => node(name, "True"),
            };
            exchange(method, &format!("{NODES}/{name}"), vec![], code, answer)
        }

        fn unschedulable(value: bool) -> Exchange {
            node_call("PATCH", NODE, 200).expecting(json!({"spec": {"unschedulable": value}}))
        }

        /// What the API server answers in `case`, in order.
        fn recording(case: ProviderCase) -> Vec<Exchange> {
            let train = || pool_holds(POOL, &[NODE]);
            match case {
                // Nothing to adopt: provision looks the Node up, refuses.
                ProviderCase::Provisions => {
                    vec![node_call("GET", NODE, 404), pool_holds(POOL, &[])]
                }
                ProviderCase::Adopts => vec![train(), train(), train()],
                ProviderCase::Lists => {
                    let infer = || pool_holds(OTHER_POOL, &[OTHER_NODE]);
                    vec![train(), infer(), train(), infer()]
                }
                ProviderCase::Terminates => vec![
                    train(),
                    node_call("DELETE", NODE, 200),
                    pool_holds(POOL, &[]),
                    node_call("DELETE", NODE, 404),
                    node_call("DELETE", NEVER_MADE, 404),
                ],
                ProviderCase::Cordons => vec![
                    train(),
                    unschedulable(true),
                    unschedulable(true),
                    unschedulable(false),
                    unschedulable(false),
                    train(),
                ],
                ProviderCase::Drains => vec![
                    train(),
                    pods_on_node(vec![pod("trainer-0", None, json!({}))]),
                    evict("trainer-0", 201),
                    pods_on_node(vec![]),
                    // Wait mode: nothing left to wait for.
                    pods_on_node(vec![]),
                ],
            }
        }

        #[async_trait]
        impl ProviderHarness for KubernetesHarness {
            fn skip(_: ProviderCase) -> Option<&'static str> {
                None
            }

            fn start(case: ProviderCase) -> Self {
                KubernetesHarness(Replay::new(recording(case)))
            }

            fn makes_nodes(&self) -> bool {
                false
            }

            fn provider(&self) -> Arc<dyn Provider> {
                Arc::new(provider(self.0.client()))
            }

            /// Every recorded exchange was made, in order.
            async fn finish(self) {
                self.0.finish().await;
            }
        }

        crate::provider_conformance_tests!(KubernetesHarness);
    }
}
