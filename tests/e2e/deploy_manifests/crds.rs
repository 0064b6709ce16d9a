//! Minimal schemas, checked by hand, for the Prometheus Operator kinds
//! `kubernetes-validate` has no schema for (it warns "Couldn't find schema"
//! and passes them): PrometheusRule, PodMonitor and ServiceMonitor of
//! `monitoring.coreos.com/v1`. Each checks the fields Flotilla's manifests
//! may use: unknown fields, missing required ones and wrong types are
//! errors, as `--strict` makes them for built-in kinds.

use serde_json::Value;

/// The kinds checked here.
pub const KINDS: &[&str] = &["PrometheusRule", "PodMonitor", "ServiceMonitor"];

/// The API version of every kind checked here.
const API_VERSION: &str = "monitoring.coreos.com/v1";

/// What is wrong with `object` (one of [`KINDS`]), as `field: problem`.
pub fn problems(object: &Value) -> Vec<String> {
    let mut found = Vec::new();
    if object["apiVersion"] != API_VERSION {
        found.push(format!("apiVersion: must be {API_VERSION}"));
    }
    fields(
        object,
        "",
        &["apiVersion", "kind", "metadata", "spec"],
        &["metadata", "spec"],
        &mut found,
    );
    if !object["metadata"]["name"].is_string() {
        found.push("metadata.name: required".into());
    }
    let spec = &object["spec"];
    match object["kind"].as_str().unwrap_or_default() {
        "PrometheusRule" => prometheus_rule(spec, &mut found),
        "PodMonitor" => monitor(spec, "podMetricsEndpoints", &mut found),
        "ServiceMonitor" => monitor(spec, "endpoints", &mut found),
        other => found.push(format!("kind: {other} is not checked here")),
    }
    found
}

/// Checks that `value` is an object whose keys are within `allowed` and
/// hold every one of `required`.
fn fields(value: &Value, at: &str, allowed: &[&str], required: &[&str], found: &mut Vec<String>) {
    let Some(map) = value.as_object() else {
        found.push(format!("{at}: must be an object"));
        return;
    };
    for key in map.keys().filter(|k| !allowed.contains(&k.as_str())) {
        found.push(format!("{at}{}{key}: unknown field", dot(at)));
    }
    for key in required.iter().filter(|k| !map.contains_key(**k)) {
        found.push(format!("{at}{}{key}: required", dot(at)));
    }
}

fn dot(at: &str) -> &str {
    if at.is_empty() {
        ""
    } else {
        "."
    }
}

/// The items of the array at `value`, or a problem.
fn items<'a>(value: &'a Value, at: &str, found: &mut Vec<String>) -> &'a [Value] {
    match value.as_array() {
        Some(list) if !list.is_empty() => list,
        _ => {
            found.push(format!("{at}: must be a non-empty list"));
            &[]
        }
    }
}

/// Checks that the map at `value`, if any, maps strings to strings.
fn string_map(value: &Value, at: &str, found: &mut Vec<String>) {
    if value.is_null() {
        return;
    }
    let ok = value
        .as_object()
        .is_some_and(|m| m.values().all(Value::is_string));
    if !ok {
        found.push(format!("{at}: must map strings to strings"));
    }
}

/// Checks a Prometheus duration (`30s`, `1h30m`), if there is one.
fn duration(value: &Value, at: &str, found: &mut Vec<String>) {
    if value.is_null() {
        return;
    }
    let ok = value.as_str().is_some_and(is_duration);
    if !ok {
        found.push(format!("{at}: not a duration ({value})"));
    }
}

/// Whether `text` is `([0-9]+(ms|s|m|h|d|w|y))+`.
fn is_duration(text: &str) -> bool {
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        let after = &rest[digits..];
        let unit = ["ms", "s", "m", "h", "d", "w", "y"]
            .into_iter()
            .find(|u| after.starts_with(u));
        match unit {
            Some(unit) if digits > 0 => rest = &after[unit.len()..],
            _ => return false,
        }
    }
    !text.is_empty()
}

fn prometheus_rule(spec: &Value, found: &mut Vec<String>) {
    fields(spec, "spec", &["groups"], &["groups"], found);
    for (g, group) in items(&spec["groups"], "spec.groups", found)
        .iter()
        .enumerate()
    {
        let at = format!("spec.groups[{g}]");
        let allowed = [
            "name",
            "interval",
            "rules",
            "limit",
            "labels",
            "query_offset",
            "partial_response_strategy",
        ];
        fields(group, &at, &allowed, &["name", "rules"], found);
        duration(&group["interval"], &format!("{at}.interval"), found);
        for (r, rule) in items(&group["rules"], &format!("{at}.rules"), found)
            .iter()
            .enumerate()
        {
            alerting_rule(rule, &format!("{at}.rules[{r}]"), found);
        }
    }
}

fn alerting_rule(rule: &Value, at: &str, found: &mut Vec<String>) {
    let allowed = [
        "alert",
        "record",
        "expr",
        "for",
        "keep_firing_for",
        "labels",
        "annotations",
    ];
    fields(rule, at, &allowed, &["expr"], found);
    if rule["alert"].is_string() == rule["record"].is_string() {
        found.push(format!("{at}: needs exactly one of alert and record"));
    }
    if rule["expr"].as_str().is_none_or(|e| e.trim().is_empty()) {
        found.push(format!("{at}.expr: must be a non-empty string"));
    }
    duration(&rule["for"], &format!("{at}.for"), found);
    duration(
        &rule["keep_firing_for"],
        &format!("{at}.keep_firing_for"),
        found,
    );
    string_map(&rule["labels"], &format!("{at}.labels"), found);
    string_map(&rule["annotations"], &format!("{at}.annotations"), found);
}

/// A PodMonitor's or ServiceMonitor's spec, its endpoints under `list`.
fn monitor(spec: &Value, list: &str, found: &mut Vec<String>) {
    let allowed = [
        list,
        "selector",
        "namespaceSelector",
        "jobLabel",
        "podTargetLabels",
        "targetLabels",
        "sampleLimit",
    ];
    fields(spec, "spec", &allowed, &[list, "selector"], found);
    let selector_keys = ["matchLabels", "matchExpressions"];
    fields(
        &spec["selector"],
        "spec.selector",
        &selector_keys,
        &[],
        found,
    );
    string_map(
        &spec["selector"]["matchLabels"],
        "spec.selector.matchLabels",
        found,
    );
    let endpoint_keys = [
        "port",
        "portNumber",
        "targetPort",
        "path",
        "scheme",
        "interval",
        "scrapeTimeout",
        "honorLabels",
        "honorTimestamps",
        "relabelings",
        "metricRelabelings",
        "authorization",
        "bearerTokenSecret",
        "basicAuth",
        "tlsConfig",
        "params",
        "followRedirects",
        "enableHttp2",
        "filterRunning",
        "proxyUrl",
    ];
    let at = format!("spec.{list}");
    for (e, endpoint) in items(&spec[list], &at, found).iter().enumerate() {
        let at = format!("{at}[{e}]");
        fields(endpoint, &at, &endpoint_keys, &[], found);
        duration(&endpoint["interval"], &format!("{at}.interval"), found);
        duration(
            &endpoint["scrapeTimeout"],
            &format!("{at}.scrapeTimeout"),
            found,
        );
        if endpoint["port"].is_null()
            && endpoint["portNumber"].is_null()
            && endpoint["targetPort"].is_null()
        {
            found.push(format!("{at}: names no port"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_good_rule_and_monitor_pass_and_mistakes_are_named() {
        let rule = json!({"apiVersion": API_VERSION, "kind": "PrometheusRule", "metadata": {"name": "r"},
            "spec": {"groups": [{"name": "g", "rules": [{"alert": "A", "expr": "x > 1", "for": "5m",
                "labels": {"severity": "page"}, "annotations": {"summary": "s"}}]}]}});
        assert_eq!(problems(&rule), Vec::<String>::new());
        let mut bad = rule.clone();
        bad["spec"]["groups"][0]["rules"][0]["for"] = json!("5 minutes");
        bad["spec"]["groups"][0]["rules"][0]["record"] = json!("r");
        bad["spec"]["groups"][0]["rules"][0]["severity"] = json!("page");
        assert_eq!(
            problems(&bad),
            [
                "spec.groups[0].rules[0].severity: unknown field",
                "spec.groups[0].rules[0]: needs exactly one of alert and record",
                "spec.groups[0].rules[0].for: not a duration (\"5 minutes\")",
            ]
        );
        let monitor = json!({"apiVersion": API_VERSION, "kind": "PodMonitor", "metadata": {"name": "m"},
            "spec": {"selector": {"matchLabels": {"app": "x"}},
                "podMetricsEndpoints": [{"port": "http", "path": "/metrics", "interval": "30s"}]}});
        assert_eq!(problems(&monitor), Vec::<String>::new());
        let mut bad = monitor;
        bad["spec"]["podMetricsEndpoints"][0] =
            json!({"path": "/metrics", "interval": "1h30m", "tls": true});
        assert!(
            is_duration("500ms") && is_duration("1h30m") && !is_duration("m") && !is_duration("")
        );
        assert_eq!(
            problems(&bad),
            [
                "spec.podMetricsEndpoints[0].tls: unknown field",
                "spec.podMetricsEndpoints[0]: names no port"
            ]
        );
    }
}
