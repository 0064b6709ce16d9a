//! The pod specs of rendered manifests and what is wrong with them: the
//! restricted Pod Security Standard (plus a read-only root filesystem),
//! resources on every container, and `/healthz` / `/readyz` probes on every
//! long-running container that runs Flotilla ([`runs_flotilla`]; a user's
//! own container beside it, as the trainer of the sidecar example, has no
//! such routes and needs only resources). Each problem names its object and
//! field, so a test can list the exceptions it accepts.

use serde_json::Value;
use std::fmt;

/// One pod spec: a Pod, or the pod template of a workload.
pub struct PodSpec<'a> {
    /// `Kind/name` of the object holding it.
    pub object: String,
    /// The path of the pod spec in that object (`spec.template.spec`).
    pub path: &'static str,
    /// Whether its containers run until stopped (not a Job's or CronJob's).
    pub long_running: bool,
    /// The pod spec.
    pub spec: &'a Value,
}

/// A problem of one field of one object.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Violation {
    /// `Kind/name`.
    pub object: String,
    /// The field (`spec.template.spec.containers[agent].securityContext.privileged`).
    pub field: String,
    /// What is wrong.
    pub problem: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.object, self.field, self.problem)
    }
}

/// `Kind/name` of a manifest object.
pub fn object_id(object: &Value) -> String {
    let kind = object["kind"].as_str().unwrap_or("?");
    format!(
        "{kind}/{}",
        object["metadata"]["name"].as_str().unwrap_or("?")
    )
}

/// Every pod spec in `objects`.
pub fn pod_specs(objects: &[Value]) -> Vec<PodSpec<'_>> {
    objects
        .iter()
        .filter_map(|o| {
            let (path, long_running) = match o["kind"].as_str()? {
                "Pod" => ("spec", true),
                "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" => {
                    ("spec.template.spec", true)
                }
                "Job" => ("spec.template.spec", false),
                "CronJob" => ("spec.jobTemplate.spec.template.spec", false),
                _ => return None,
            };
            let spec = path.split('.').fold(o, |v, key| &v[key]);
            Some(PodSpec {
                object: object_id(o),
                path,
                long_running,
                spec,
            })
        })
        .collect()
}

/// Every container of a pod spec (init, regular and ephemeral), with the
/// path of its list.
fn containers<'a>(pod: &PodSpec<'a>) -> Vec<(String, &'a Value)> {
    ["initContainers", "containers", "ephemeralContainers"]
        .iter()
        .flat_map(|list| {
            pod.spec[*list]
                .as_array()
                .into_iter()
                .flatten()
                .map(move |c| (format!("{list}[{}]", c["name"].as_str().unwrap_or("?")), c))
        })
        .collect()
}

impl PodSpec<'_> {
    fn violation(&self, field: &str, problem: impl Into<String>) -> Violation {
        Violation {
            object: self.object.clone(),
            field: format!("{}.{field}", self.path),
            problem: problem.into(),
        }
    }

    /// What breaks the restricted Pod Security Standard, or a read-only root
    /// filesystem.
    pub fn security_violations(&self) -> Vec<Violation> {
        let mut found = Vec::new();
        for host in ["hostNetwork", "hostPID", "hostIPC"] {
            if self.spec[host] == true {
                found.push(self.violation(host, "host namespaces are not allowed"));
            }
        }
        for volume in self.spec["volumes"].as_array().into_iter().flatten() {
            if volume.get("hostPath").is_some() {
                let name = volume["name"].as_str().unwrap_or("?");
                found.push(self.violation(
                    &format!("volumes[{name}].hostPath"),
                    "hostPath volumes are not allowed",
                ));
            }
        }
        let pod_context = &self.spec["securityContext"];
        for (at, container) in containers(self) {
            found.extend(self.container_violations(&at, container, pod_context));
        }
        found
    }

    fn container_violations(&self, at: &str, c: &Value, pod_context: &Value) -> Vec<Violation> {
        let context = &c["securityContext"];
        let field = |name: &str| format!("{at}.securityContext.{name}");
        // The container's setting, else the pod's.
        let effective = |path: &[&str]| {
            let get = |root: &Value| path.iter().fold(root.clone(), |v, k| v[*k].clone());
            Some(get(context))
                .filter(|v| !v.is_null())
                .unwrap_or_else(|| get(pod_context))
        };
        let mut found = Vec::new();
        let mut require = |ok: bool, name: &str, problem: &str| {
            if !ok {
                found.push(self.violation(&field(name), problem));
            }
        };
        require(
            effective(&["runAsNonRoot"]) == true,
            "runAsNonRoot",
            "must be true (here or in the pod's securityContext)",
        );
        require(
            effective(&["runAsUser"]) != 0,
            "runAsUser",
            "must not be 0 (root)",
        );
        require(
            effective(&["seccompProfile", "type"]) == "RuntimeDefault",
            "seccompProfile.type",
            "must be RuntimeDefault (here or in the pod's securityContext)",
        );
        require(
            context["allowPrivilegeEscalation"] == false,
            "allowPrivilegeEscalation",
            "must be false",
        );
        require(
            context["privileged"] != true,
            "privileged",
            "must not be true",
        );
        require(
            context["readOnlyRootFilesystem"] == true,
            "readOnlyRootFilesystem",
            "must be true",
        );
        let caps = &context["capabilities"];
        let names = |key: &str| -> Vec<String> {
            caps[key]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        };
        require(
            names("drop").iter().any(|c| c == "ALL"),
            "capabilities.drop",
            "must hold ALL",
        );
        let added: Vec<String> = names("add")
            .into_iter()
            .filter(|c| c != "NET_BIND_SERVICE")
            .collect();
        require(
            added.is_empty(),
            "capabilities.add",
            &format!("may add NET_BIND_SERVICE only, not {added:?}"),
        );
        for port in c["ports"].as_array().into_iter().flatten() {
            if port["hostPort"].as_u64().is_some_and(|p| p != 0) {
                found.push(self.violation(
                    &format!("{at}.ports.hostPort"),
                    "host ports are not allowed",
                ));
            }
        }
        found
    }

    /// Containers without resource requests and limits, and long-running
    /// Flotilla containers ([`runs_flotilla`]) without an `httpGet`
    /// liveness probe on `/healthz` and readiness probe on `/readyz`.
    pub fn operational_violations(&self) -> Vec<Violation> {
        let mut found = Vec::new();
        for (at, c) in containers(self) {
            for kind in ["requests", "limits"] {
                let set = c["resources"][kind]
                    .as_object()
                    .is_some_and(|m| !m.is_empty());
                if !set {
                    found.push(self.violation(&format!("{at}.resources.{kind}"), "must be set"));
                }
            }
        }
        for (at, c) in self.flotilla_servers() {
            found.extend(self.probe_violations(&at, c));
        }
        found
    }

    fn probe_violations(&self, at: &str, c: &Value) -> Vec<Violation> {
        let mut found = Vec::new();
        for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
            let field = format!("{at}.{probe}");
            let got = &c[probe];
            if got.is_null() {
                found.push(self.violation(
                    &field,
                    format!("a long-running Flotilla container needs it (httpGet on {path})"),
                ));
            } else if got["httpGet"]["path"] != path {
                found.push(self.violation(
                    &format!("{field}.httpGet.path"),
                    format!(
                        "must be an httpGet on {path} (Flotilla's), not {}",
                        got["httpGet"]["path"]
                    ),
                ));
            }
        }
        found
    }
}

impl<'a> PodSpec<'a> {
    /// The containers that run Flotilla as long as the pod ([`runs_flotilla`],
    /// regular or sidecar, in a workload that is not a Job), with their
    /// paths (`containers[name]`): the ones that must probe.
    pub fn flotilla_servers(&self) -> Vec<(String, &'a Value)> {
        if !self.long_running {
            return Vec::new();
        }
        containers(self)
            .into_iter()
            .filter(|(at, c)| (at.starts_with("containers[") || is_sidecar(c)) && runs_flotilla(c))
            .collect()
    }
}

/// Whether a container runs Flotilla, as the RBAC check finds a component:
/// its image is Flotilla's ([`is_flotilla_image`]) or its command's program
/// is a `flotilla` binary (`/usr/local/bin/flotilla` in another image).
pub fn runs_flotilla(c: &Value) -> bool {
    let image = c["image"].as_str().is_some_and(is_flotilla_image);
    let program = c["command"][0]
        .as_str()
        .is_some_and(|p| p.rsplit('/').next() == Some("flotilla"));
    image || program
}

/// Whether an init container is a sidecar (runs as long as the pod).
fn is_sidecar(c: &Value) -> bool {
    c["restartPolicy"] == "Always"
}

/// Whether `image` is Flotilla's own (its repository's last segment is
/// `flotilla`: `flotilla:dev`, `registry:5000/flotilla/flotilla:1`, not
/// `flotilla/nats-server`).
fn is_flotilla_image(image: &str) -> bool {
    image_repository(image).rsplit('/').next() == Some("flotilla")
}

/// An image reference without its tag or digest.
fn image_repository(image: &str) -> &str {
    let image = image.split('@').next().unwrap_or(image);
    match image.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => repo,
        _ => image,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployment(container: Value, pod: Value) -> Value {
        let mut spec = json!({"containers": [container]});
        spec.as_object_mut()
            .unwrap()
            .extend(pod.as_object().unwrap().clone());
        json!({"kind": "Deployment", "metadata": {"name": "d"},
            "spec": {"template": {"spec": spec}}})
    }

    fn good_container() -> Value {
        json!({"name": "c", "image": "flotilla:dev",
            "securityContext": {"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true,
                "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}},
            "resources": {"requests": {"cpu": "10m"}, "limits": {"memory": "1Gi"}},
            "livenessProbe": {"httpGet": {"path": "/healthz", "port": 8080}},
            "readinessProbe": {"httpGet": {"path": "/readyz", "port": 8080}}})
    }

    fn good_pod() -> Value {
        json!({"securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}}})
    }

    fn problems(objects: &[Value]) -> Vec<String> {
        pod_specs(objects)
            .iter()
            .flat_map(|p| [p.security_violations(), p.operational_violations()].concat())
            .map(|v| format!("{} {}", v.object, v.field))
            .collect()
    }

    #[test]
    fn a_restricted_pod_passes_and_each_breach_is_named() {
        assert!(problems(&[deployment(good_container(), good_pod())]).is_empty());
        let mut bad = good_container();
        bad["securityContext"]["runAsNonRoot"] = json!(false);
        bad["securityContext"]["privileged"] = json!(true);
        bad["securityContext"]["capabilities"]["add"] = json!(["SYS_ADMIN"]);
        bad["readinessProbe"]["httpGet"]["path"] = json!("/healthz");
        let mut pod = good_pod();
        pod["hostPID"] = json!(true);
        pod["volumes"] = json!([{"name": "dev", "hostPath": {"path": "/dev"}}]);
        let at = "Deployment/d spec.template.spec";
        assert_eq!(
            problems(&[deployment(bad, pod)]),
            [
                format!("{at}.hostPID"),
                format!("{at}.volumes[dev].hostPath"),
                format!("{at}.containers[c].securityContext.runAsNonRoot"),
                format!("{at}.containers[c].securityContext.privileged"),
                format!("{at}.containers[c].securityContext.capabilities.add"),
                format!("{at}.containers[c].readinessProbe.httpGet.path"),
            ]
        );
    }

    fn without_probes(mut c: Value) -> Value {
        let fields = c.as_object_mut().unwrap();
        fields.remove("livenessProbe");
        fields.remove("readinessProbe");
        c
    }

    #[test]
    fn flotillas_long_running_containers_need_both_probes_and_others_only_resources() {
        let at = "Deployment/d spec.template.spec";
        // A Flotilla container that lost its probes is named, for both.
        let lost = without_probes(good_container());
        assert_eq!(
            problems(&[deployment(lost.clone(), good_pod())]),
            [
                format!("{at}.containers[c].livenessProbe"),
                format!("{at}.containers[c].readinessProbe"),
            ]
        );
        // Flotilla found by its command in another image; a probe that is
        // not an httpGet on the route does not count.
        let mut by_command = good_container();
        by_command["image"] = json!("registry.example.com/platform/base:3");
        by_command["command"] = json!(["/usr/local/bin/flotilla", "worker"]);
        by_command["livenessProbe"] = json!({"exec": {"command": ["true"]}});
        assert_eq!(
            problems(&[deployment(by_command, good_pod())]),
            [format!("{at}.containers[c].livenessProbe.httpGet.path")]
        );
        // A user's own container (the sidecar example's trainer) has no
        // such routes: no probes needed, but resources are.
        let mut trainer = without_probes(good_container());
        trainer["name"] = json!("trainer");
        trainer["image"] = json!("registry.example.com/my-trainer:1.0");
        assert!(problems(&[deployment(trainer.clone(), good_pod())]).is_empty());
        let mut unbounded = trainer.clone();
        unbounded.as_object_mut().unwrap().remove("resources");
        assert_eq!(
            problems(&[deployment(unbounded, good_pod())]),
            [
                format!("{at}.containers[trainer].resources.requests"),
                format!("{at}.containers[trainer].resources.limits"),
            ]
        );
        // A Flotilla native sidecar probes like a regular container; a
        // plain init container (it ends) does not.
        let mut sidecar = lost.clone();
        sidecar["name"] = json!("flotilla");
        sidecar["restartPolicy"] = json!("Always");
        let mut pod = good_pod();
        pod["initContainers"] = json!([sidecar]);
        assert_eq!(
            problems(&[deployment(trainer.clone(), pod.clone())]),
            [
                format!("{at}.initContainers[flotilla].livenessProbe"),
                format!("{at}.initContainers[flotilla].readinessProbe"),
            ]
        );
        pod["initContainers"][0]
            .as_object_mut()
            .unwrap()
            .remove("restartPolicy");
        assert!(problems(&[deployment(trainer, pod)]).is_empty());
    }

    #[test]
    fn containers_run_flotilla_by_image_or_command() {
        assert!(runs_flotilla(&json!({"image": "flotilla/flotilla:0.1.0"})));
        assert!(runs_flotilla(
            &json!({"image": "base:1", "command": ["/usr/local/bin/flotilla", "up"]})
        ));
        assert!(!runs_flotilla(
            &json!({"image": "flotilla/nats-server:2.14.6", "command": ["nats-server"]})
        ));
        assert!(!runs_flotilla(
            &json!({"image": "my-trainer:1.0", "args": ["flotilla"]})
        ));
    }

    #[test]
    fn jobs_need_no_probes_but_resources_and_a_cronjobs_template_is_found() {
        let mut c = good_container();
        c.as_object_mut().unwrap().remove("livenessProbe");
        c.as_object_mut().unwrap().remove("resources");
        let mut spec = good_pod();
        spec["containers"] = json!([c]);
        let cron = json!({"kind": "CronJob", "metadata": {"name": "t"},
            "spec": {"jobTemplate": {"spec": {"template": {"spec": spec}}}}});
        let at = "CronJob/t spec.jobTemplate.spec.template.spec.containers[c]";
        assert_eq!(
            problems(&[cron]),
            [
                format!("{at}.resources.requests"),
                format!("{at}.resources.limits")
            ]
        );
    }

    #[test]
    fn image_repositories_drop_tags_and_digests_and_flotillas_is_known() {
        assert_eq!(
            image_repository("reg:5000/flotilla:1.2"),
            "reg:5000/flotilla"
        );
        assert_eq!(image_repository("reg:5000/nats"), "reg:5000/nats");
        assert_eq!(image_repository("nats@sha256:ab"), "nats");
        assert!(is_flotilla_image("registry:5000/flotilla/flotilla:0.1.0"));
        assert!(!is_flotilla_image("flotilla/nats-server:2.14.6"));
    }
}
