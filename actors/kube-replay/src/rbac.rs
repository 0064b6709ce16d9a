//! What RBAC permission each recorded API request needs, and whether a
//! ServiceAccount's Roles grant exactly those.
//!
//! [`access`] maps a request (method, path, query) to the RBAC attributes
//! the API server authorizes it by: API group, resource (with its
//! subresource, as `pods/log`), verb and [`Scope`]. [`Grants::of`] reads the
//! Roles and ClusterRoles bound to a ServiceAccount from parsed manifests,
//! and [`Grants::check`] compares them with a component's needs in both
//! directions: every need is allowed, and every granted verb on every
//! granted resource is needed.

use serde_json::Value;
use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

/// The namespace of the recorded clients ([`crate::replaying`] and
/// [`crate::Cassette`] make their clients with it): in a deployment, the
/// namespace the component runs in.
pub const HOME_NAMESPACE: &str = "default";

/// Why a request, a rule or a recorded line cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RbacError {
    /// A path that is not a Kubernetes resource path.
    #[error("not a resource path: {0}")]
    Path(String),
    /// A method RBAC has no verb for.
    #[error("no RBAC verb for method {0}")]
    Method(String),
    /// A line of a needs file that is not `verb group/resource scope`.
    #[error("not an access line (verb group/resource scope): {0:?}")]
    Line(String),
    /// A Role, ClusterRole or binding this check cannot read.
    #[error("{object}: {reason}")]
    Object {
        /// `Kind/name`.
        object: String,
        /// What is wrong.
        reason: String,
    },
}

/// Where a request reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    /// The client's own namespace ([`HOME_NAMESPACE`]): a Role there allows it.
    Home,
    /// Another namespace: only a cluster-wide grant allows it.
    OtherNamespace,
    /// A cluster-scoped resource, or a namespaced one across every
    /// namespace: only a cluster-wide grant allows it.
    Cluster,
}

impl Scope {
    fn as_str(self) -> &'static str {
        match self {
            Scope::Home => "home",
            Scope::OtherNamespace => "other-namespace",
            Scope::Cluster => "cluster",
        }
    }

    /// Whether only a ClusterRole bound by a ClusterRoleBinding allows it.
    pub fn needs_cluster_grant(self) -> bool {
        self != Scope::Home
    }
}

/// The RBAC attributes of one request.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Access {
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`,
    /// `deletecollection`.
    pub verb: String,
    /// The API group (`""` for the core group).
    pub group: String,
    /// The resource, with its subresource after a `/` (`pods/eviction`).
    pub resource: String,
    /// Where it reaches.
    pub scope: Scope,
}

impl fmt::Display for Access {
    /// `verb group/resource scope`, the core group written `core`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let group = if self.group.is_empty() {
            "core"
        } else {
            &self.group
        };
        let (verb, resource) = (&self.verb, &self.resource);
        write!(f, "{verb} {group}/{resource} {}", self.scope.as_str())
    }
}

impl FromStr for Access {
    type Err = RbacError;

    /// Reads what [`Access`]'s `Display` writes.
    fn from_str(line: &str) -> Result<Self, RbacError> {
        let bad = || RbacError::Line(line.to_string());
        let words: Vec<&str> = line.split_whitespace().collect();
        let [verb, target, scope] = words[..] else {
            return Err(bad());
        };
        let (group, resource) = target.split_once('/').ok_or_else(bad)?;
        let scope = [Scope::Home, Scope::OtherNamespace, Scope::Cluster]
            .into_iter()
            .find(|s| s.as_str() == scope)
            .ok_or_else(bad)?;
        Ok(Access {
            verb: verb.into(),
            group: if group == "core" { "" } else { group }.into(),
            resource: resource.into(),
            scope,
        })
    }
}

/// The RBAC attributes of a request: `GET` on a collection is `list` (or
/// `watch` with `watch=true`), on a named object `get`; `POST` is `create`,
/// `PUT` `update`, `PATCH` `patch`, `DELETE` `delete` (`deletecollection`
/// on a collection).
pub fn access(method: &str, path: &str, query: &str) -> Result<Access, RbacError> {
    let (group, rest) = split_group(path)?;
    let (namespace, rest) = match rest[..] {
        ["namespaces", ns, _, ..] => (Some(ns), &rest[2..]),
        _ => (None, &rest[..]),
    };
    let (resource, named) = match *rest {
        [resource] => (resource.to_string(), false),
        [resource, _name] => (resource.to_string(), true),
        [resource, _name, sub] => (format!("{resource}/{sub}"), true),
        _ => return Err(RbacError::Path(path.into())),
    };
    let watch = query
        .split('&')
        .any(|kv| kv == "watch=true" || kv == "watch=1");
    let verb = match (method, named) {
        ("GET" | "HEAD", _) if watch => "watch",
        ("GET" | "HEAD", true) => "get",
        ("GET" | "HEAD", false) => "list",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", true) => "delete",
        ("DELETE", false) => "deletecollection",
        _ => return Err(RbacError::Method(method.into())),
    };
    let scope = match namespace {
        Some(HOME_NAMESPACE) => Scope::Home,
        Some(_) => Scope::OtherNamespace,
        None => Scope::Cluster,
    };
    Ok(Access {
        verb: verb.into(),
        group: group.into(),
        resource,
        scope,
    })
}

/// The API group of `path` and the segments after its version.
fn split_group(path: &str) -> Result<(&str, Vec<&str>), RbacError> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match segments[..] {
        ["api", _version, ref rest @ ..] if !rest.is_empty() => Ok(("", rest.to_vec())),
        ["apis", group, _version, ref rest @ ..] if !rest.is_empty() => Ok((group, rest.to_vec())),
        _ => Err(RbacError::Path(path.into())),
    }
}

/// The access of a recorded line (`METHOD path?query`, as
/// [`crate::Seen::line`] and the recording sink write it).
pub fn access_of_line(line: &str) -> Result<Access, RbacError> {
    let (method, target) = line
        .split_once(' ')
        .ok_or_else(|| RbacError::Line(line.into()))?;
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    access(method, path, query)
}

/// One rule of a Role or ClusterRole, and how far its binding reaches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The role granting it (`ClusterRole/name`).
    pub role: String,
    /// Its API groups.
    pub groups: Vec<String>,
    /// Its resources (with subresources).
    pub resources: Vec<String>,
    /// Its verbs.
    pub verbs: Vec<String>,
    /// Whether it holds in every namespace (a ClusterRole bound by a
    /// ClusterRoleBinding) rather than in one.
    pub cluster_wide: bool,
}

impl Grant {
    /// Whether this rule allows `access`.
    pub fn allows(&self, access: &Access) -> bool {
        let has = |list: &[String], want: &str| list.iter().any(|x| x == "*" || x == want);
        (self.cluster_wide || !access.scope.needs_cluster_grant())
            && has(&self.groups, &access.group)
            && has(&self.resources, &access.resource)
            && has(&self.verbs, &access.verb)
    }
}

/// The rules bound to one ServiceAccount.
#[derive(Debug, Clone, Default)]
pub struct Grants(pub Vec<Grant>);

impl Grants {
    /// The rules of every Role and ClusterRole in `objects` that a
    /// RoleBinding or ClusterRoleBinding there binds to ServiceAccount
    /// `service_account`. A rule with `resourceNames` or
    /// `nonResourceURLs`, or a binding to a role that is not there, is an
    /// error (this check does not model them).
    pub fn of(objects: &[Value], service_account: &str) -> Result<Grants, RbacError> {
        let mut grants = Vec::new();
        for binding in objects.iter().filter(|o| binds(o, service_account)) {
            let cluster_wide = kind(binding) == "ClusterRoleBinding";
            let role_kind = binding["roleRef"]["kind"].as_str().unwrap_or_default();
            let role_name = binding["roleRef"]["name"].as_str().unwrap_or_default();
            let role = objects
                .iter()
                .find(|o| {
                    kind(o) == role_kind
                        && name(o) == role_name
                        && same_namespace(o, binding, role_kind)
                })
                .ok_or_else(|| RbacError::Object {
                    object: id(binding),
                    reason: format!("binds {role_kind}/{role_name}, which is not there"),
                })?;
            for rule in role["rules"].as_array().into_iter().flatten() {
                grants.push(grant(role, rule, cluster_wide)?);
            }
        }
        Ok(Grants(grants))
    }

    /// Whether some rule allows `access`.
    pub fn allows(&self, access: &Access) -> bool {
        self.0.iter().any(|g| g.allows(access))
    }

    /// What is wrong, both ways: each need no rule allows, and each verb on
    /// a resource a rule grants that no need uses (a `*` grants more than
    /// any need). Empty when the grants are exactly the needs.
    pub fn check(&self, needs: &BTreeSet<Access>) -> Vec<String> {
        let mut problems: Vec<String> = needs
            .iter()
            .filter(|need| !self.allows(need))
            .map(|need| format!("not allowed: {need}"))
            .collect();
        for grant in &self.0 {
            for (group, resource, verb) in triples(grant) {
                let used = needs
                    .iter()
                    .any(|n| n.group == group && n.resource == resource && n.verb == verb);
                if !used {
                    let group = if group.is_empty() { "core" } else { &group };
                    problems.push(format!(
                        "{} grants {verb} on {group}/{resource}, which no recorded request uses",
                        grant.role
                    ));
                }
            }
        }
        problems
    }
}

/// Every (group, resource, verb) a rule names.
fn triples(grant: &Grant) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for group in &grant.groups {
        for resource in &grant.resources {
            for verb in &grant.verbs {
                out.push((group.clone(), resource.clone(), verb.clone()));
            }
        }
    }
    out
}

fn kind(object: &Value) -> &str {
    object["kind"].as_str().unwrap_or_default()
}

fn name(object: &Value) -> &str {
    object["metadata"]["name"].as_str().unwrap_or_default()
}

/// `Kind/name`.
fn id(object: &Value) -> String {
    format!("{}/{}", kind(object), name(object))
}

/// Whether a Role is in its RoleBinding's namespace (a ClusterRole is in
/// none).
fn same_namespace(role: &Value, binding: &Value, role_kind: &str) -> bool {
    role_kind != "Role" || role["metadata"]["namespace"] == binding["metadata"]["namespace"]
}

/// Whether `object` is a binding with ServiceAccount `service_account` among
/// its subjects.
fn binds(object: &Value, service_account: &str) -> bool {
    matches!(kind(object), "RoleBinding" | "ClusterRoleBinding")
        && object["subjects"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|s| s["kind"] == "ServiceAccount" && s["name"] == service_account)
}

/// One rule of `role` as a [`Grant`].
fn grant(role: &Value, rule: &Value, cluster_wide: bool) -> Result<Grant, RbacError> {
    let unsupported = |field: &str| RbacError::Object {
        object: id(role),
        reason: format!("a rule with {field} (not modelled by this check)"),
    };
    if rule.get("resourceNames").is_some() {
        return Err(unsupported("resourceNames"));
    }
    if rule.get("nonResourceURLs").is_some() {
        return Err(unsupported("nonResourceURLs"));
    }
    let strings = |field: &str| -> Vec<String> {
        rule[field]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect()
    };
    Ok(Grant {
        role: id(role),
        groups: strings("apiGroups"),
        resources: strings("resources"),
        verbs: strings("verbs"),
        cluster_wide: cluster_wide && kind(role) == "ClusterRole",
    })
}

/// Reads a needs file: one [`Access`] a line; blank lines and `#` comments
/// are skipped.
pub fn parse_needs(text: &str) -> Result<BTreeSet<Access>, RbacError> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::parse)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn at(method: &str, path: &str, query: &str) -> String {
        access(method, path, query).unwrap().to_string()
    }

    #[test]
    fn methods_and_paths_map_to_verbs_resources_and_scopes() {
        let jobs = "/apis/batch/v1/namespaces/default/jobs";
        assert_eq!(at("GET", jobs, "labelSelector=a"), "list batch/jobs home");
        assert_eq!(at("GET", jobs, "watch=true&x=1"), "watch batch/jobs home");
        assert_eq!(at("GET", jobs, "watchx=true"), "list batch/jobs home");
        assert_eq!(at("POST", jobs, ""), "create batch/jobs home");
        assert_eq!(at("DELETE", jobs, ""), "deletecollection batch/jobs home");
        assert_eq!(
            at("DELETE", &format!("{jobs}/j1"), ""),
            "delete batch/jobs home"
        );
        assert_eq!(
            at("PUT", &format!("{jobs}/j1"), ""),
            "update batch/jobs home"
        );
        assert_eq!(
            at("GET", "/apis/batch/v1/jobs", "a=b"),
            "list batch/jobs cluster"
        );
        let other = "/apis/batch/v1/namespaces/tuning/jobs/j1";
        assert_eq!(at("DELETE", other, ""), "delete batch/jobs other-namespace");
        assert_eq!(at("GET", "/api/v1/nodes/n1", ""), "get core/nodes cluster");
        assert_eq!(
            at("PATCH", "/api/v1/nodes/n1", ""),
            "patch core/nodes cluster"
        );
        let log = "/api/v1/namespaces/default/pods/p1/log";
        assert_eq!(at("GET", log, "tailLines=20"), "get core/pods/log home");
        let evict = "/api/v1/namespaces/ml/pods/p1/eviction";
        assert_eq!(
            at("POST", evict, ""),
            "create core/pods/eviction other-namespace"
        );
        assert_eq!(
            at("GET", "/api/v1/namespaces/ml", ""),
            "get core/namespaces cluster"
        );
    }

    #[test]
    fn bad_requests_and_lines_are_errors() {
        assert!(matches!(
            access("GET", "/healthz", ""),
            Err(RbacError::Path(_))
        ));
        assert!(matches!(
            access("GET", "/api/v1", ""),
            Err(RbacError::Path(_))
        ));
        assert!(matches!(
            access("TRACE", "/api/v1/nodes", ""),
            Err(RbacError::Method(_))
        ));
        assert!("list nodes".parse::<Access>().is_err());
        assert!("list core/nodes galaxy".parse::<Access>().is_err());
    }

    #[test]
    fn lines_round_trip() {
        let line = "GET /api/v1/namespaces/default/pods/p/log?tailLines=20";
        let access = access_of_line(line).unwrap();
        assert_eq!(access.to_string().parse::<Access>().unwrap(), access);
        let needs = parse_needs("# c\n\nlist core/pods home\nget core/nodes cluster\n").unwrap();
        assert_eq!(needs.len(), 2);
    }

    fn manifests() -> Vec<Value> {
        vec![
            json!({"kind": "ClusterRole", "metadata": {"name": "nodes"},
                "rules": [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list"]}]}),
            json!({"kind": "Role", "metadata": {"name": "jobs", "namespace": "fl"},
                "rules": [{"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["create"]}]}),
            json!({"kind": "ClusterRoleBinding", "metadata": {"name": "b1"},
                "roleRef": {"kind": "ClusterRole", "name": "nodes"},
                "subjects": [{"kind": "ServiceAccount", "name": "cp", "namespace": "fl"}]}),
            json!({"kind": "RoleBinding", "metadata": {"name": "b2", "namespace": "fl"},
                "roleRef": {"kind": "Role", "name": "jobs"},
                "subjects": [{"kind": "ServiceAccount", "name": "cp"}]}),
        ]
    }

    fn needs(lines: &str) -> BTreeSet<Access> {
        parse_needs(lines).unwrap()
    }

    #[test]
    fn exact_grants_pass_and_both_directions_are_reported() {
        let grants = Grants::of(&manifests(), "cp").unwrap();
        let exact =
            needs("get core/nodes cluster\nlist core/nodes cluster\ncreate batch/jobs home\n");
        assert_eq!(grants.check(&exact), Vec::<String>::new());
        // A Role holds in its namespace only.
        let elsewhere = needs(
            "get core/nodes cluster\nlist core/nodes cluster\ncreate batch/jobs other-namespace\n",
        );
        assert_eq!(
            grants.check(&elsewhere),
            ["not allowed: create batch/jobs other-namespace"]
        );
        // A grant nothing uses is reported with its role.
        let fewer = needs("get core/nodes cluster\ncreate batch/jobs home\n");
        assert_eq!(
            grants.check(&fewer),
            ["ClusterRole/nodes grants list on core/nodes, which no recorded request uses"]
        );
        // Another ServiceAccount has nothing.
        assert!(Grants::of(&manifests(), "agent").unwrap().0.is_empty());
    }

    #[test]
    fn wildcards_and_unmodelled_rules_are_refused() {
        let mut objects = manifests();
        objects[0]["rules"][0]["verbs"] = json!(["*"]);
        let grants = Grants::of(&objects, "cp").unwrap();
        let problems = grants.check(&needs("get core/nodes cluster\ncreate batch/jobs home\n"));
        assert_eq!(
            problems,
            ["ClusterRole/nodes grants * on core/nodes, which no recorded request uses"]
        );
        objects[0]["rules"][0]["resourceNames"] = json!(["n1"]);
        assert!(Grants::of(&objects, "cp").is_err());
        objects.remove(0);
        let err = Grants::of(&objects, "cp").unwrap_err();
        assert!(
            err.to_string()
                .contains("ClusterRole/nodes, which is not there"),
            "{err}"
        );
    }
}
