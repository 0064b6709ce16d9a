//! The `kubernetes` executor: each attempt is a `batch/v1` Job, created
//! with kube-rs, watched with a kube-runtime watcher until it completes or
//! fails, its result read from the pod's termination message (the last log
//! lines when there is none), then deleted or kept by the spec's policy.
//!
//! The Job is named `fl-<queue>-<job>-<attempt>` (made a valid DNS-1123
//! label) and labelled `app.kubernetes.io/managed-by: flotilla`,
//! `flotilla.dev/queue`, `flotilla.dev/job`, `flotilla.dev/study`,
//! `flotilla.dev/trial`, `flotilla.dev/attempt` and `flotilla.dev/attempt-key`
//! (the dispatch event's id). A restarted scheduler finds the Job of an
//! attempt by that last label and adopts it instead of creating another;
//! creating a name that exists adopts it too. `backoffLimit` is 0 (the
//! scheduler retries, with its own backoff), `activeDeadlineSeconds` is the
//! spec's timeout (a Job failed with `DeadlineExceeded` is timed out),
//! `ttlSecondsAfterFinished`, resources (with `nvidia.com/gpu` for GPUs),
//! node selector and tolerations come from the spec's `kubernetes` part.
//!
//! The executor works in one namespace, its own: it creates, finds, watches
//! and deletes Jobs (and reads their pods) there and nowhere else, so a Role
//! in that namespace is all it needs. A spec naming another namespace
//! cannot start (run a scheduler in that namespace instead), and stopping
//! an attempt never touches a Job outside it: another namespace's Jobs are
//! not this executor's, even with the same labels.
//!
//! [`job_manifest`] is also what the `manifests` executor writes (which
//! honours a spec's namespace: it only writes files).

use crate::executor::{Attempt, Executor, Launch, NODE_ENV};
use crate::process::{parse_result, success_outcome, tail};
use async_trait::async_trait;
use flotilla_messages::scheduler::{
    ExecutorHandle, ExecutorKind, JobOutputs, JobSpec, Outcome, TAIL_CHARS,
};
use futures::{FutureExt, StreamExt};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, LogParams, PostParams};
use kube::Client;
use serde_json::{json, Map, Value};
use std::time::Duration;

/// The label that names an attempt's Job uniquely.
pub const ATTEMPT_KEY_LABEL: &str = "flotilla.dev/attempt-key";

/// How many log lines are read when a pod left no termination message.
const LOG_LINES: i64 = 20;

/// A label value from any text: at most 63 of `[A-Za-z0-9._-]`, starting
/// and ending alphanumeric.
fn label_value(text: &str) -> String {
    let cleaned: String = text
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '-'
            }
        })
        .take(63)
        .collect();
    cleaned
        .trim_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_string()
}

/// FNV-1a: a short stable digest that keeps truncated names distinct.
fn digest(text: &str) -> String {
    let hash = text.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("{:08x}", hash & 0xffff_ffff)
}

/// The Job name of an attempt: `fl-<queue>-<job>-<attempt>` as a DNS-1123
/// label (lowercase, at most 63 characters; a long one ends in a digest).
pub fn job_name(queue: &str, job_id: &str, attempt: u32) -> String {
    let full = format!("fl-{queue}-{job_id}-{attempt}").to_ascii_lowercase();
    let cleaned: String = full
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let name = if cleaned.len() <= 63 {
        cleaned
    } else {
        format!("{}-{}", &cleaned[..54], digest(&full))
    };
    name.trim_matches('-').to_string()
}

/// The Job of one attempt, as JSON (the `kubernetes` executor creates it,
/// the `manifests` executor writes it).
pub fn job_manifest(attempt: &Attempt, default_namespace: &str) -> Value {
    let spec = &attempt.spec;
    let kube = spec.kubernetes.clone().unwrap_or_default();
    let name = job_name(&attempt.queue, &attempt.job_id, attempt.attempt);
    let mut labels = Map::new();
    labels.insert("app.kubernetes.io/managed-by".into(), json!("flotilla"));
    labels.insert(
        "flotilla.dev/queue".into(),
        json!(label_value(&attempt.queue)),
    );
    labels.insert(
        "flotilla.dev/job".into(),
        json!(label_value(&attempt.job_id)),
    );
    labels.insert(
        "flotilla.dev/attempt".into(),
        json!(attempt.attempt.to_string()),
    );
    labels.insert(ATTEMPT_KEY_LABEL.into(), json!(label_value(&attempt.key)));
    if let Some(study) = &spec.study {
        labels.insert("flotilla.dev/study".into(), json!(label_value(study)));
    }
    if let Some(trial) = &spec.trial_id {
        labels.insert("flotilla.dev/trial".into(), json!(label_value(trial)));
    }
    let mut env: Vec<Value> = spec
        .environment()
        .into_iter()
        .map(|(name, value)| json!({"name": name, "value": value}))
        .collect();
    env.push(json!({"name": "FLOTILLA_JOB_ID", "value": attempt.job_id}));
    env.push(json!({"name": "FLOTILLA_ATTEMPT_NUMBER", "value": attempt.attempt.to_string()}));
    if let Some(node) = &attempt.node {
        env.push(json!({"name": NODE_ENV, "value": node}));
    }
    let mut limits: Map<String, Value> = kube
        .limits
        .iter()
        .map(|(k, v)| (k.clone(), json!(v)))
        .collect();
    let mut requests: Map<String, Value> = kube
        .requests
        .iter()
        .map(|(k, v)| (k.clone(), json!(v)))
        .collect();
    if kube.gpus > 0 {
        limits.insert("nvidia.com/gpu".into(), json!(kube.gpus.to_string()));
        requests.insert("nvidia.com/gpu".into(), json!(kube.gpus.to_string()));
    }
    let mut container = json!({
        "name": "job",
        "image": kube.image,
        "command": spec.command,
        "env": env,
        "terminationMessagePolicy": "FallbackToLogsOnError",
    });
    if !limits.is_empty() || !requests.is_empty() {
        let mut resources = Map::new();
        if !limits.is_empty() {
            resources.insert("limits".into(), Value::Object(limits));
        }
        if !requests.is_empty() {
            resources.insert("requests".into(), Value::Object(requests));
        }
        container["resources"] = Value::Object(resources);
    }
    if let Some(dir) = &spec.workdir {
        container["workingDir"] = json!(dir);
    }
    let mut pod = json!({"containers": [container], "restartPolicy": "Never"});
    if !kube.node_selector.is_empty() {
        pod["nodeSelector"] = json!(kube.node_selector);
    }
    if !kube.tolerations.is_empty() {
        pod["tolerations"] = json!(kube.tolerations);
    }
    let mut job_spec = json!({
        "backoffLimit": 0,
        "template": {"metadata": {"labels": labels}, "spec": pod},
    });
    if let Some(timeout) = spec.timeout_seconds {
        job_spec["activeDeadlineSeconds"] = json!(timeout.ceil() as i64);
    }
    if let Some(ttl) = kube.ttl_seconds_after_finished {
        job_spec["ttlSecondsAfterFinished"] = json!(ttl);
    }
    json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": kube.namespace.unwrap_or_else(|| default_namespace.to_string()),
            "labels": labels,
        },
        "spec": job_spec,
    })
}

/// Attempts as Kubernetes Jobs.
#[derive(Clone)]
pub struct KubernetesExecutor {
    client: Client,
    namespace: String,
}

impl KubernetesExecutor {
    /// Jobs through `client`, in `namespace` only.
    pub fn new(client: Client, namespace: impl Into<String>) -> Self {
        KubernetesExecutor {
            client,
            namespace: namespace.into(),
        }
    }

    fn jobs(&self, namespace: &str) -> Api<Job> {
        Api::namespaced(self.client.clone(), namespace)
    }

    /// The Job already made for this attempt, if any.
    async fn find(&self, api: &Api<Job>, key: &str) -> kube::Result<Option<Job>> {
        let selector = format!("{ATTEMPT_KEY_LABEL}={}", label_value(key));
        let list = api.list(&ListParams::default().labels(&selector)).await?;
        Ok(list.items.into_iter().next())
    }

    async fn create_or_adopt(
        &self,
        api: &Api<Job>,
        manifest: Value,
    ) -> Result<(Job, bool), String> {
        let job: Job = serde_json::from_value(manifest).map_err(|e| format!("bad Job: {e}"))?;
        let name = job.metadata.name.clone().unwrap_or_default();
        match api.create(&PostParams::default(), &job).await {
            Ok(created) => Ok((created, false)),
            Err(kube::Error::Api(status)) if status.code == 409 => api
                .get(&name)
                .await
                .map(|j| (j, true))
                .map_err(|e| format!("Job {name} exists but cannot be read: {e}")),
            Err(e) => Err(format!("cannot create Job {name}: {e}")),
        }
    }

    async fn delete(&self, api: &Api<Job>, name: &str) {
        if let Err(e) = api.delete(name, &DeleteParams::background()).await {
            tracing::warn!(job = name, error = %e, "finished Job not deleted");
        }
    }
}

/// How a Job ended, from its status; `None` while it runs.
fn job_end(job: &Job) -> Option<Result<(), String>> {
    let status = job.status.as_ref()?;
    for condition in status.conditions.iter().flatten() {
        if condition.status != "True" {
            continue;
        }
        match condition.type_.as_str() {
            "Complete" | "SuccessCriteriaMet" => return Some(Ok(())),
            "Failed" | "FailureTarget" => {
                return Some(Err(condition
                    .reason
                    .clone()
                    .unwrap_or_else(|| "Failed".into())))
            }
            _ => {}
        }
    }
    None
}

/// What the pod's container said when it terminated: exit code and message.
async fn termination(pods: &Api<Pod>, job: &str) -> (Option<String>, Option<i32>, String) {
    let selector = format!("batch.kubernetes.io/job-name={job}");
    let Ok(list) = pods.list(&ListParams::default().labels(&selector)).await else {
        return (None, None, String::new());
    };
    let Some(pod) = list.items.into_iter().last() else {
        return (None, None, String::new());
    };
    let name = pod.metadata.name.clone();
    let terminated = pod
        .status
        .and_then(|s| s.container_statuses)
        .and_then(|c| c.into_iter().next())
        .and_then(|c| c.state)
        .and_then(|s| s.terminated);
    let code = terminated.as_ref().map(|t| t.exit_code);
    let message = terminated.and_then(|t| t.message).unwrap_or_default();
    (name, code, message)
}

#[async_trait]
impl Executor for KubernetesExecutor {
    fn kind(&self) -> ExecutorKind {
        ExecutorKind::Kubernetes
    }

    async fn launch(&self, attempt: &Attempt) -> Launch {
        if attempt.spec.kubernetes.is_none() {
            return Launch::Ended(Outcome::Failed {
                exit_code: None,
                reason: "cannot start: the job has no kubernetes settings (spec.kubernetes.image)"
                    .into(),
                outputs: JobOutputs::default(),
            });
        }
        let named = attempt
            .spec
            .kubernetes
            .as_ref()
            .and_then(|k| k.namespace.as_ref());
        if let Some(other) = named.filter(|ns| **ns != self.namespace) {
            return Launch::Ended(cannot_start(format!(
                "the job names namespace {other}, but this scheduler runs Jobs in {} only \
                 (FLOTILLA_K8S_NAMESPACE); run a scheduler in {other} for it",
                self.namespace
            )));
        }
        let manifest = job_manifest(attempt, &self.namespace);
        let namespace = self.namespace.clone();
        let api = self.jobs(&namespace);
        let found = match self.find(&api, &attempt.key).await {
            Ok(found) => found,
            Err(e) => return Launch::Ended(cannot_start(format!("cannot list Jobs: {e}"))),
        };
        let (job, adopted) = match found {
            Some(job) => (job, true),
            None => match self.create_or_adopt(&api, manifest).await {
                Ok(made) => made,
                Err(reason) => return Launch::Ended(cannot_start(reason)),
            },
        };
        let name = job.metadata.name.clone().unwrap_or_default();
        let handle = ExecutorHandle::Kubernetes {
            namespace: namespace.clone(),
            name: name.clone(),
            uid: job.metadata.uid.clone().unwrap_or_default(),
        };
        let me = self.clone();
        let spec = attempt.spec.clone();
        let end = async move { me.watch(namespace, name, spec).await };
        Launch::Running {
            handle,
            adopted,
            end: end.boxed(),
        }
    }

    /// Deletes the attempt's Job, found by its labels in the executor's
    /// namespace, the only one it creates Jobs in (a Job with the same
    /// labels elsewhere is another scheduler's).
    async fn stop(&self, queue: &str, job_id: &str, attempt: u32, _grace: Duration) {
        let selector = format!(
            "flotilla.dev/queue={},flotilla.dev/job={},flotilla.dev/attempt={attempt}",
            label_value(queue),
            label_value(job_id)
        );
        let api = self.jobs(&self.namespace);
        let found = match api.list(&ListParams::default().labels(&selector)).await {
            Ok(list) => list.items,
            Err(e) => {
                tracing::warn!(queue, job_id, attempt, error = %e, "cannot find the Job to stop");
                return;
            }
        };
        for name in found.into_iter().filter_map(|job| job.metadata.name) {
            self.delete(&api, &name).await;
        }
    }
}

fn cannot_start(reason: String) -> Outcome {
    Outcome::Failed {
        exit_code: None,
        reason: format!("cannot start: {reason}"),
        outputs: JobOutputs::default(),
    }
}

impl KubernetesExecutor {
    /// Watches Job `name` until it ends, reads its result, applies the
    /// delete/keep policy.
    async fn watch(&self, namespace: String, name: String, spec: JobSpec) -> Outcome {
        let api = self.jobs(&namespace);
        let mut updates = kube::runtime::watcher::watch_object(api.clone(), &name).boxed();
        let end = loop {
            match updates.next().await {
                Some(Ok(Some(job))) => {
                    if let Some(end) = job_end(&job) {
                        break end;
                    }
                }
                Some(Ok(None)) => {
                    return Outcome::Lost {
                        reason: format!("Job {namespace}/{name} was deleted before it finished"),
                    }
                }
                Some(Err(e)) => {
                    tracing::warn!(job = %name, error = %e, "watching the Job failed; watching again");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                None => {
                    updates = kube::runtime::watcher::watch_object(api.clone(), &name).boxed();
                }
            }
        };
        drop(updates);
        let outcome = self.outcome(&namespace, &name, &spec, end).await;
        let keep = spec.kubernetes.as_ref().is_some_and(|k| k.keep_finished);
        if !keep {
            self.delete(&api, &name).await;
        }
        outcome
    }

    async fn outcome(
        &self,
        namespace: &str,
        name: &str,
        spec: &JobSpec,
        end: Result<(), String>,
    ) -> Outcome {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let (pod, exit_code, message) = termination(&pods, name).await;
        let mut text = message.clone();
        if parse_result(&text).is_err() {
            if let Some(pod) = &pod {
                let lp = LogParams {
                    tail_lines: Some(LOG_LINES),
                    ..LogParams::default()
                };
                if let Ok(logs) = pods.logs(pod, &lp).await {
                    text = logs;
                }
            }
        }
        let outputs = JobOutputs {
            stdout_tail: tail(&text, TAIL_CHARS),
            stderr_tail: String::new(),
            logs: Some(format!("kubernetes://{namespace}/jobs/{name}")),
        };
        match end {
            Ok(()) => success_outcome(&text, spec.expects_value, exit_code, outputs, ""),
            Err(reason) if reason == "DeadlineExceeded" => Outcome::TimedOut {
                after_seconds: spec.timeout_seconds.unwrap_or_default(),
                outputs,
            },
            Err(reason) => {
                let how = exit_code.map_or_else(
                    || format!("Job {name} failed ({reason})"),
                    |c| format!("exited with status {c}"),
                );
                let said = tail(message.trim(), 300);
                let reason = if said.is_empty() {
                    how
                } else {
                    format!("{how}; {said}")
                };
                Outcome::Failed {
                    exit_code,
                    reason,
                    outputs,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_kube_replay::{exchange, list, replaying, Exchange};
    use flotilla_messages::scheduler::KubernetesSpec;

    fn attempt() -> Attempt {
        let mut spec = JobSpec::new(vec!["python".into(), "train.py".into()]);
        spec.study = Some("lr-search".into());
        spec.trial_id = Some("t7".into());
        spec.timeout_seconds = Some(90.5);
        spec.params.insert("lr".into(), json!(0.01));
        spec.kubernetes = Some(KubernetesSpec {
            image: "trainer:1".into(),
            gpus: 2,
            ..Default::default()
        });
        Attempt {
            queue: "lr-search".into(),
            job_id: "t7".into(),
            attempt: 2,
            spec,
            key: "01a2024f-2dcf-700b-accf-fd30ec885ae6".into(),
            node: None,
        }
    }

    #[test]
    fn job_names_are_valid_labels_and_stay_distinct() {
        assert_eq!(job_name("lr-search", "t7", 2), "fl-lr-search-t7-2");
        assert_eq!(job_name("Q_1", "Job_A", 1), "fl-q-1-job-a-1");
        let long = job_name(&"q".repeat(64), &"j".repeat(64), 3);
        assert!(long.len() <= 63);
        assert_ne!(long, job_name(&"q".repeat(64), &"j".repeat(64), 4));
    }

    #[test]
    fn the_manifest_carries_labels_limits_deadline_and_env() {
        let job = job_manifest(&attempt(), "default");
        let labels = &job["metadata"]["labels"];
        assert_eq!(labels["app.kubernetes.io/managed-by"], "flotilla");
        assert_eq!(labels["flotilla.dev/study"], "lr-search");
        assert_eq!(labels["flotilla.dev/trial"], "t7");
        assert_eq!(labels["flotilla.dev/attempt"], "2");
        assert_eq!(job["spec"]["backoffLimit"], 0);
        assert_eq!(job["spec"]["activeDeadlineSeconds"], 91);
        let container = &job["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(container["resources"]["limits"]["nvidia.com/gpu"], "2");
        let env = container["env"].as_array().unwrap();
        assert!(env.contains(&json!({"name": "ARQON_lr", "value": "0.01"})));
        // It is a valid Job for the API types.
        let typed: Job = serde_json::from_value(job).unwrap();
        assert_eq!(typed.metadata.name.as_deref(), Some("fl-lr-search-t7-2"));
    }

    const JOBS: &str = "/apis/batch/v1/namespaces/default/jobs";

    /// The API server's answer to deleting the attempt's Job.
    /// The lookup of the attempt's Job by its key label, answering `jobs`.
    fn looked_up(jobs: Vec<Value>) -> Exchange {
        exchange(
            "GET",
            JOBS,
            vec!["labelSelector=flotilla.dev%2Fattempt-key%3D01a2024f"],
            200,
            list("JobList", jobs),
        )
    }

    fn deleted() -> Exchange {
        deleted_job("fl-lr-search-t7-2")
    }

    /// The Job completes, its pod's log is read (ending in `log`), and the
    /// finished Job is deleted.
    fn completes_printing(log: &str) -> Vec<Exchange> {
        let mut script = watched(condition("Complete", "CompletionsReached"));
        script.push(exchange(
            "GET",
            "/api/v1/namespaces/default/pods",
            vec!["labelSelector=batch.kubernetes.io%2Fjob-name%3Dfl-lr-search-t7-2"],
            200,
            list("PodList", vec![pod(0, log)]),
        ));
        script.push(deleted());
        script
    }

    /// The API server's answer to deleting Job `name`.
    fn deleted_job(name: &str) -> Exchange {
        exchange(
            "DELETE",
            &format!("{JOBS}/{name}"),
            vec![],
            200,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Success"}),
        )
    }

    fn job(status: Value) -> Value {
        job_of(&attempt(), status)
    }

    /// The Job of `attempt` as the API server holds it, with `status`.
    fn job_of(attempt: &Attempt, status: Value) -> Value {
        let mut job = job_manifest(attempt, "default");
        job["metadata"]["uid"] = json!("9f1c-uid");
        job["metadata"]["resourceVersion"] = json!("11");
        job["status"] = status;
        job
    }

    fn condition(kind: &str, reason: &str) -> Value {
        json!({"conditions": [{"type": kind, "status": "True", "reason": reason}]})
    }

    fn pod(exit_code: i32, message: &str) -> Value {
        pod_of("fl-lr-search-t7-2", exit_code, message)
    }

    /// The pod of Job `job`, terminated with `exit_code` and `message`.
    fn pod_of(job: &str, exit_code: i32, message: &str) -> Value {
        json!({"metadata": {"name": format!("{job}-abcde")},
            "status": {"containerStatuses": [{"name": "job", "image": "trainer:1", "imageID": "",
                "ready": false, "restartCount": 0,
                "state": {"terminated": {"exitCode": exit_code, "message": message}}}]}})
    }

    /// The watcher's list and watch of the Job, ending in `end`.
    fn watched(end: Value) -> Vec<Exchange> {
        watched_job(&attempt(), end)
    }

    /// The watcher's list (`attempt`'s Job running) and watch (it ends in
    /// `end`).
    fn watched_job(attempt: &Attempt, end: Value) -> Vec<Exchange> {
        let name = job_name(&attempt.queue, &attempt.job_id, attempt.attempt);
        let by_name = format!("metadata.name%3D{name}");
        let mut watch = exchange("GET", JOBS, vec!["watch=true", &by_name], 200, json!(null));
        let event = json!({"type": "MODIFIED", "object": job_of(attempt, end)});
        watch.body = format!("{}\n", serde_json::to_string(&event).unwrap()).into_bytes();
        vec![
            exchange(
                "GET",
                JOBS,
                vec![&by_name],
                200,
                list("JobList", vec![job_of(attempt, json!({"active": 1}))]),
            ),
            watch,
        ]
    }

    async fn run(executor: &KubernetesExecutor, attempt: &Attempt) -> (Outcome, bool) {
        match executor.launch(attempt).await {
            Launch::Running { end, adopted, .. } => (end.await, adopted),
            Launch::Ended(outcome) => (outcome, false),
        }
    }

    #[tokio::test]
    async fn a_job_is_created_watched_read_from_its_termination_message_and_deleted() {
        let mut script = vec![
            looked_up(vec![]),
            exchange("POST", JOBS, vec![], 201, job(json!({}))),
        ];
        script.extend(completes_printing("epoch 3\nRESULT=0.125\n"));
        let (client, server) = replaying(script);
        let executor = KubernetesExecutor::new(client, "default");
        let (outcome, adopted) = run(&executor, &attempt()).await;
        assert!(!adopted);
        let Outcome::Succeeded { value, outputs } = outcome else {
            panic!("not a success: {outcome:?}")
        };
        assert_eq!(value, Some(0.125));
        assert_eq!(
            outputs.logs.as_deref(),
            Some("kubernetes://default/jobs/fl-lr-search-t7-2")
        );
        assert_eq!(server.await.unwrap().len(), 6);
    }

    #[tokio::test]
    async fn after_a_restart_the_job_is_adopted_by_label_and_a_deadline_is_a_timeout() {
        let mut script = vec![looked_up(vec![job(json!({"active": 1}))])];
        script.extend(watched(condition("Failed", "DeadlineExceeded")));
        script.push(exchange(
            "GET",
            "/api/v1/namespaces/default/pods",
            vec![],
            200,
            list("PodList", vec![pod(137, "")]),
        ));
        // No termination message: the last log lines are read instead.
        let mut logs = exchange(
            "GET",
            "/api/v1/namespaces/default/pods/fl-lr-search-t7-2-abcde/log",
            vec!["tailLines=20"],
            200,
            json!(null),
        );
        logs.body = b"epoch 1\nepoch 2\n".to_vec();
        script.push(logs);
        let (client, server) = replaying(script);
        let mut kept = attempt();
        kept.spec.kubernetes.as_mut().unwrap().keep_finished = true;
        let executor = KubernetesExecutor::new(client, "default");
        let (outcome, adopted) = run(&executor, &kept).await;
        assert!(adopted, "the running Job was adopted, not created again");
        let Outcome::TimedOut {
            after_seconds,
            outputs,
        } = outcome
        else {
            panic!("not a timeout: {outcome:?}")
        };
        assert_eq!(after_seconds, 90.5);
        assert_eq!(outputs.stdout_tail, "epoch 1\nepoch 2\n");
        // keep_finished: no DELETE was made.
        let seen = server.await.unwrap();
        assert!(seen.iter().all(|l| !l.starts_with("DELETE")), "{seen:?}");
    }

    #[tokio::test]
    async fn a_failed_job_reports_its_exit_code_and_message() {
        let mut script = vec![
            exchange("GET", JOBS, vec![], 200, list("JobList", vec![])),
            exchange("POST", JOBS, vec![], 201, job(json!({}))),
        ];
        script.extend(watched(condition("Failed", "BackoffLimitExceeded")));
        script.push(exchange(
            "GET",
            "/api/v1/namespaces/default/pods",
            vec![],
            200,
            list("PodList", vec![pod(3, "Traceback: CUDA out of memory")]),
        ));
        let mut logs = exchange(
            "GET",
            "/api/v1/namespaces/default/pods/fl-lr-search-t7-2-abcde/log",
            vec![],
            200,
            json!(null),
        );
        logs.body = b"Traceback: CUDA out of memory\n".to_vec();
        script.push(logs);
        script.push(deleted());
        let (client, server) = replaying(script);
        let executor = KubernetesExecutor::new(client, "default");
        let (outcome, _) = run(&executor, &attempt()).await;
        let Outcome::Failed {
            exit_code, reason, ..
        } = outcome
        else {
            panic!("not a failure: {outcome:?}")
        };
        assert_eq!(exit_code, Some(3));
        assert_eq!(
            reason,
            "exited with status 3; Traceback: CUDA out of memory"
        );
        server.await.unwrap();
    }

    #[tokio::test]
    async fn a_refused_create_fails_the_attempt_with_the_api_servers_reason() {
        let script = vec![
            exchange("GET", JOBS, vec![], 200, list("JobList", vec![])),
            exchange(
                "POST",
                JOBS,
                vec![],
                422,
                json!({"kind": "Status", "apiVersion": "v1",
                "status": "Failure", "reason": "Invalid", "code": 422,
                "message": "Job.batch \"fl-lr-search-t7-2\" is invalid: spec.template.spec.containers[0].resources.limits[cpu]: Invalid value"}),
            ),
        ];
        let (client, server) = replaying(script);
        let executor = KubernetesExecutor::new(client, "default");
        let (outcome, _) = run(&executor, &attempt()).await;
        let Outcome::Failed {
            reason,
            exit_code: None,
            ..
        } = outcome
        else {
            panic!("not a failure: {outcome:?}")
        };
        assert!(
            reason.starts_with("cannot start: cannot create Job fl-lr-search-t7-2"),
            "{reason}"
        );
        assert!(reason.contains("Invalid value"), "{reason}");
        server.await.unwrap();
    }

    #[tokio::test]
    async fn a_job_created_before_a_crash_is_adopted_when_its_create_conflicts() {
        // The scheduler died after its POST reached the API server but
        // before the Job showed in a list: the lookup by key finds nothing,
        // the create answers 409 AlreadyExists, and the executor reads the
        // Job by name and adopts it instead of creating another.
        let name = "fl-lr-search-t7-2";
        let mut script = vec![
            looked_up(vec![]),
            exchange(
                "POST",
                JOBS,
                vec![],
                409,
                json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                    "reason": "AlreadyExists", "code": 409,
                    "details": {"name": name, "group": "batch", "kind": "jobs"},
                    "message": format!("jobs.batch \"{name}\" already exists")}),
            )
            .containing(json!({"metadata": {"name": name}})),
            exchange(
                "GET",
                &format!("{JOBS}/{name}"),
                vec![],
                200,
                job(json!({"active": 1})),
            ),
        ];
        script.extend(completes_printing("RESULT=0.25\n"));
        let (client, server) = replaying(script);
        let executor = KubernetesExecutor::new(client, "default");
        let Launch::Running {
            handle,
            adopted,
            end,
        } = executor.launch(&attempt()).await
        else {
            panic!("the conflicting Job was not adopted")
        };
        assert!(
            adopted,
            "a Job that exists is adopted, not reported as made"
        );
        assert_eq!(
            handle,
            ExecutorHandle::Kubernetes {
                namespace: "default".into(),
                name: name.into(),
                uid: "9f1c-uid".into(),
            }
        );
        let Outcome::Succeeded { value, .. } = end.await else {
            panic!("the adopted Job's result was not read")
        };
        assert_eq!(value, Some(0.25));
        let seen = server.await.unwrap();
        let posts = seen.iter().filter(|l| l.starts_with("POST")).count();
        assert_eq!(posts, 1, "created once, never again: {seen:?}");
        assert!(
            seen.contains(&format!("GET {JOBS}/{name}?")),
            "the Job was read by name: {seen:?}"
        );
    }

    #[tokio::test]
    async fn a_job_naming_another_namespace_cannot_start_and_makes_no_request() {
        let mut elsewhere = attempt();
        elsewhere.spec.kubernetes.as_mut().unwrap().namespace = Some("tuning".into());
        let (client, server) = replaying(vec![]);
        let executor = KubernetesExecutor::new(client, "default");
        let (outcome, _) = run(&executor, &elsewhere).await;
        let Outcome::Failed { reason, .. } = outcome else {
            panic!("not refused: {outcome:?}")
        };
        assert!(
            reason.starts_with("cannot start: the job names namespace tuning"),
            "{reason}"
        );
        assert!(reason.contains("in default only"), "{reason}");
        assert!(server.await.unwrap().is_empty());
        // Its own namespace, named, is fine: the manifest is the same.
        let mut home = attempt();
        home.spec.kubernetes.as_mut().unwrap().namespace = Some("default".into());
        assert_eq!(
            job_manifest(&home, "default"),
            job_manifest(&attempt(), "default")
        );
    }

    #[tokio::test]
    async fn stop_deletes_the_attempts_job_in_its_own_namespace_only() {
        let script = vec![
            exchange(
                "GET",
                JOBS,
                vec![
                    "flotilla.dev%2Fqueue%3Dlr-search",
                    "flotilla.dev%2Fattempt%3D2",
                ],
                200,
                list("JobList", vec![job(json!({"active": 1}))]),
            ),
            deleted(),
        ];
        let (client, server) = replaying(script);
        let executor = KubernetesExecutor::new(client, "default");
        executor
            .stop("lr-search", "t7", 2, Duration::from_secs(1))
            .await;
        let seen = server.await.unwrap();
        assert_eq!(seen.len(), 2, "{seen:?}");
        assert!(
            seen.iter().all(|l| l.contains("/namespaces/default/")),
            "stop reached beyond its namespace: {seen:?}"
        );
    }

    /// Every request these tests make, as the RBAC permission it needs, is
    /// what `actors/scheduler/kube-needs.txt` lists; the deploy checks hold the control plane's
    /// Roles to that file (see `flotilla_kube_replay::record`).
    #[test]
    fn the_recorded_requests_are_the_needs_file() {
        flotilla_kube_replay::record::assert_crate_needs(
            env!("CARGO_MANIFEST_DIR"),
            "scheduler",
            "flotilla-scheduler",
        );
    }

    /// The executor conformance suite against a recorded API server: each
    /// case's exchanges as a cluster would answer them.
    mod conformance {
        use super::*;
        use crate::conformance::{self as suite, ExecutorCase, ExecutorHarness, NEVER_LAUNCHED};
        use flotilla_kube_replay::Replay;
        use std::sync::Arc;

        struct KubernetesHarness(Replay);

        /// The case's attempt as a Job: an image, and the Job kept where
        /// the case needs to find it after its end (the attempt of a
        /// deleted Job would be started again).
        fn kube_attempt(case: ExecutorCase) -> Attempt {
            let mut attempt = suite::attempt(case);
            attempt.spec.kubernetes = Some(KubernetesSpec {
                image: "trainer:1".into(),
                keep_finished: case == ExecutorCase::Collects,
                ..Default::default()
            });
            attempt
        }

        /// The launch's lookup of the attempt's Job by its key, finding `jobs`.
        fn by_key(jobs: Vec<Value>) -> Exchange {
            let selector = "labelSelector=flotilla.dev%2Fattempt-key";
            exchange("GET", JOBS, vec![selector], 200, list("JobList", jobs))
        }

        /// Stop's lookup of job `job_id`'s Jobs in the executor's namespace.
        fn stop_finds(job_id: &str, jobs: Vec<Value>) -> Exchange {
            let selector = format!("flotilla.dev%2Fjob%3D{job_id}");
            exchange("GET", JOBS, vec![&selector], 200, list("JobList", jobs))
        }

        /// The watcher's list of Job `name`, finding `jobs`.
        fn named(name: &str, jobs: Vec<Value>) -> Exchange {
            let selector = format!("metadata.name%3D{name}");
            exchange("GET", JOBS, vec![&selector], 200, list("JobList", jobs))
        }

        /// The pods of Job `name`: one, terminated as given.
        fn pods(name: &str, exit_code: i32, message: &str) -> Exchange {
            let selector = format!("batch.kubernetes.io%2Fjob-name%3D{name}");
            let pods = list("PodList", vec![pod_of(name, exit_code, message)]);
            let path = "/api/v1/namespaces/default/pods";
            exchange("GET", path, vec![&selector], 200, pods)
        }

        /// What the API server answers in `case`, in order.
        fn recording(case: ExecutorCase, attempt: &Attempt) -> Vec<Exchange> {
            let name = job_name(&attempt.queue, &attempt.job_id, attempt.attempt);
            let complete = || condition("Complete", "CompletionsReached");
            let succeeded = || pods(&name, 0, "RESULT=0.5\n");
            let mut script = vec![
                by_key(vec![]),
                exchange("POST", JOBS, vec![], 201, job_of(attempt, json!({}))),
            ];
            match case {
                ExecutorCase::Runs | ExecutorCase::StopsEnded => {
                    script.extend(watched_job(attempt, complete()));
                    script.extend([succeeded(), deleted_job(&name)]);
                    if case == ExecutorCase::StopsEnded {
                        script.push(stop_finds(&attempt.job_id, vec![]));
                        script.push(stop_finds(NEVER_LAUNCHED, vec![]));
                    }
                }
                ExecutorCase::Fails => {
                    script.extend(watched_job(
                        attempt,
                        condition("Failed", "BackoffLimitExceeded"),
                    ));
                    let log = format!("/api/v1/namespaces/default/pods/{name}-abcde/log");
                    let mut logs = exchange("GET", &log, vec![], 200, json!(null));
                    logs.body = b"boom\n".to_vec();
                    script.extend([pods(&name, 3, "boom"), logs, deleted_job(&name)]);
                }
                ExecutorCase::Adopts => {
                    // The restarted executor finds the running Job by its key.
                    script.push(by_key(vec![job_of(attempt, json!({"active": 1}))]));
                    script.extend(watched_job(attempt, complete()));
                    script.extend([succeeded(), deleted_job(&name)]);
                }
                ExecutorCase::Collects => {
                    script.extend(watched_job(attempt, complete()));
                    // Kept: no DELETE. The relaunch finds the finished Job,
                    // whose watch ends at its first list.
                    let finished = || job_of(attempt, complete());
                    script.extend([succeeded(), by_key(vec![finished()])]);
                    script.extend([named(&name, vec![finished()]), succeeded()]);
                }
                ExecutorCase::StopsRunning => {
                    let running = job_of(attempt, json!({"active": 1}));
                    script.push(stop_finds(&attempt.job_id, vec![running]));
                    // Deleted: the watch finds no Job and reports it lost.
                    script.extend([deleted_job(&name), named(&name, vec![])]);
                }
            }
            script
        }

        #[async_trait]
        impl ExecutorHarness for KubernetesHarness {
            fn skip(_: ExecutorCase) -> Option<&'static str> {
                None
            }

            fn start(case: ExecutorCase) -> Self {
                KubernetesHarness(Replay::new(recording(case, &kube_attempt(case))))
            }

            fn runs(&self) -> bool {
                true
            }

            fn executor(&self) -> Arc<dyn Executor> {
                Arc::new(KubernetesExecutor::new(self.0.client(), "default"))
            }

            fn attempt(&self, case: ExecutorCase) -> Attempt {
                kube_attempt(case)
            }

            /// Every recorded exchange was made, in order.
            async fn finish(self) {
                self.0.finish().await;
            }
        }

        crate::executor_conformance_tests!(KubernetesHarness);
    }
}
