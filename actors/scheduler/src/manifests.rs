//! Kubernetes manifests as files: the YAML Flotilla writes and the checks
//! it makes before writing it.
//!
//! [`to_yaml`] writes a JSON value as PyYAML's `yaml.dump(..,
//! default_flow_style=False)` does — keys sorted, block style, sequences
//! not indented under their key, strings quoted only when they would read
//! back as something else (`'3'`, `'2025-11-16T18:21:45.906585'`) — so the
//! files D29's generator wrote and the ones `flotilla plan` writes are the
//! same bytes. [`check_quantity`], [`check_dns1123_label`] and
//! [`check_dns1123_subdomain`] are the API server's own rules for resource
//! quantities and object names, which schema validation alone does not
//! catch.
//!
//! [`ManifestsExecutor`] is the scheduler's `manifests` executor (D29's
//! mode): an attempt writes its Job — the one the `kubernetes` executor
//! would create — to `<dir>/<queue>/<job name>.yaml` and succeeds; nothing
//! touches a cluster.

use crate::executor::{Attempt, Executor, Launch};
use crate::kubernetes::{job_manifest, job_name};
use async_trait::async_trait;
use flotilla_messages::scheduler::check_dns1123_label;
use flotilla_messages::scheduler::{ExecutorHandle, ExecutorKind, JobOutputs, Outcome};
use futures::FutureExt;
use serde_json::Value;
use std::path::PathBuf;
use std::time::Duration;

/// Writes each attempt's Job manifest under a directory.
#[derive(Debug, Clone)]
pub struct ManifestsExecutor {
    dir: PathBuf,
    namespace: String,
}

impl ManifestsExecutor {
    /// Manifests go under `dir`, in `namespace` unless a spec names another.
    pub fn new(dir: impl Into<PathBuf>, namespace: impl Into<String>) -> Self {
        ManifestsExecutor {
            dir: dir.into(),
            namespace: namespace.into(),
        }
    }
}

#[async_trait]
impl Executor for ManifestsExecutor {
    fn kind(&self) -> ExecutorKind {
        ExecutorKind::Manifests
    }

    async fn launch(&self, attempt: &Attempt) -> Launch {
        let failed = |reason: String| {
            Launch::Ended(Outcome::Failed {
                exit_code: None,
                reason,
                outputs: JobOutputs::default(),
            })
        };
        if attempt.spec.kubernetes.is_none() {
            return failed("cannot write a manifest: the job has no kubernetes settings (spec.kubernetes.image)".into());
        }
        let dir = self.dir.join(&attempt.queue);
        let name = job_name(&attempt.queue, &attempt.job_id, attempt.attempt);
        let path = dir.join(format!("{name}.yaml"));
        let text = to_yaml(&job_manifest(attempt, &self.namespace));
        let tmp = dir.join(format!(".{name}.yaml.tmp"));
        let written = std::fs::create_dir_all(&dir)
            .and_then(|()| std::fs::write(&tmp, text))
            .and_then(|()| std::fs::rename(&tmp, &path));
        if let Err(e) = written {
            return failed(format!("cannot write {}: {e}", path.display()));
        }
        let shown = path.display().to_string();
        let outputs = JobOutputs {
            logs: Some(shown.clone()),
            ..JobOutputs::default()
        };
        Launch::Running {
            handle: ExecutorHandle::Manifests { path: shown },
            adopted: false,
            end: futures::future::ready(Outcome::Succeeded {
                value: None,
                outputs,
            })
            .boxed(),
        }
    }

    async fn stop(&self, _queue: &str, _job_id: &str, _attempt: u32, _grace: Duration) {}
}

/// A JSON value as PyYAML writes it (block style, sorted keys), ending in a
/// newline.
pub fn to_yaml(value: &Value) -> String {
    let mut out = String::new();
    match value {
        Value::Object(map) if !map.is_empty() => write_mapping(&mut out, map, 0),
        Value::Array(items) if !items.is_empty() => write_sequence(&mut out, items, 0),
        scalar => {
            out.push_str(&scalar_text(scalar));
            out.push('\n');
        }
    }
    out
}

fn is_block(value: &Value) -> bool {
    match value {
        Value::Object(m) => !m.is_empty(),
        Value::Array(a) => !a.is_empty(),
        _ => false,
    }
}

fn write_mapping(out: &mut String, map: &serde_json::Map<String, Value>, indent: usize) {
    for (i, (key, value)) in map.iter().enumerate() {
        // The first key of a mapping inside a sequence item follows "- ".
        if i > 0 || !out.ends_with("- ") {
            out.push_str(&" ".repeat(indent));
        }
        out.push_str(&string_text(key));
        out.push(':');
        write_value(out, value, indent, true);
    }
}

fn write_sequence(out: &mut String, items: &[Value], indent: usize) {
    for (i, item) in items.iter().enumerate() {
        if i > 0 || !out.ends_with("- ") {
            out.push_str(&" ".repeat(indent));
        }
        out.push_str("- ");
        match item {
            Value::Object(m) if !m.is_empty() => write_mapping(out, m, indent + 2),
            Value::Array(a) if !a.is_empty() => write_sequence(out, a, indent + 2),
            scalar => {
                out.push_str(&scalar_text(scalar));
                out.push('\n');
            }
        }
    }
}

/// Writes what follows `key:` (`in_mapping`) at `indent`.
fn write_value(out: &mut String, value: &Value, indent: usize, in_mapping: bool) {
    debug_assert!(in_mapping);
    if !is_block(value) {
        out.push(' ');
        out.push_str(&scalar_text(value));
        out.push('\n');
        return;
    }
    out.push('\n');
    match value {
        Value::Object(m) => write_mapping(out, m, indent + 2),
        // PyYAML does not indent a sequence under its mapping key.
        Value::Array(a) => write_sequence(out, a, indent),
        _ => unreachable!("scalars are written inline"),
    }
}

fn scalar_text(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(b) => if *b { "true" } else { "false" }.into(),
        Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => i.to_string(),
            (None, Some(u), _) => u.to_string(),
            (None, None, Some(f)) => float_text(f),
            _ => n.to_string(),
        },
        Value::String(s) => string_text(s),
        Value::Object(_) => "{}".into(),
        Value::Array(_) => "[]".into(),
    }
}

/// A float as PyYAML's `repr` writes it (`1.0`, `0.5`, `.inf`).
fn float_text(f: f64) -> String {
    if f.is_nan() {
        return ".nan".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { ".inf" } else { "-.inf" }.into();
    }
    let text = format!("{f:?}");
    if text.contains(['.', 'e']) {
        text
    } else {
        format!("{text}.0")
    }
}

/// A string: plain when it reads back as the same string, else quoted
/// (single quotes, or double quotes with escapes for control characters).
fn string_text(s: &str) -> String {
    if can_be_plain(s) {
        return s.to_string();
    }
    if s.chars().any(|c| c.is_control()) {
        return serde_json::to_string(s).unwrap_or_default();
    }
    format!("'{}'", s.replace('\'', "''"))
}

fn can_be_plain(s: &str) -> bool {
    let Some(first) = s.chars().next() else {
        return false;
    };
    let last = s.chars().last().unwrap_or(first);
    if first.is_whitespace() || last.is_whitespace() || last == ':' {
        return false;
    }
    if "#,[]{}&*!|>'\"%@`".contains(first) {
        return false;
    }
    let second = s.chars().nth(1);
    if "-?:".contains(first) && second.is_none_or(char::is_whitespace) {
        return false;
    }
    if s.starts_with("---") || s.starts_with("...") {
        return false;
    }
    if s.contains(": ") || s.contains(" #") || s.chars().any(|c| c.is_control()) {
        return false;
    }
    !resolves_to_other_type(s)
}

/// Whether YAML 1.1 (PyYAML's resolver) reads `s` as a bool, null, int,
/// float, timestamp, merge key or value key rather than a string.
fn resolves_to_other_type(s: &str) -> bool {
    const WORDS: [&str; 21] = [
        "yes", "Yes", "YES", "no", "No", "NO", "true", "True", "TRUE", "false", "False", "FALSE",
        "on", "On", "ON", "off", "Off", "OFF", "null", "Null", "NULL",
    ];
    if WORDS.contains(&s) || s == "~" || s == "<<" || s == "=" {
        return true;
    }
    let unsigned = s.strip_prefix(['-', '+']).unwrap_or(s);
    let special = [".inf", ".Inf", ".INF", ".nan", ".NaN", ".NAN"];
    if special.contains(&unsigned) {
        return true;
    }
    is_int(unsigned) || is_float(unsigned) || is_timestamp(s)
}

fn digits_underscores(s: &str, radix: u32) -> bool {
    !s.is_empty() && s.chars().all(|c| c == '_' || c.is_digit(radix))
}

fn is_int(s: &str) -> bool {
    if let Some(bin) = s.strip_prefix("0b") {
        return digits_underscores(bin, 2);
    }
    if let Some(hex) = s.strip_prefix("0x") {
        return digits_underscores(hex, 16);
    }
    let sexagesimal = s.contains(':')
        && s.split(':').all(|p| digits_underscores(p, 10))
        && s.starts_with(|c: char| c.is_ascii_digit());
    sexagesimal || (s.starts_with(|c: char| c.is_ascii_digit()) && digits_underscores(s, 10))
}

fn is_float(s: &str) -> bool {
    let (mantissa, exponent) = match s.find(['e', 'E']) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    let Some((whole, fraction)) = mantissa.split_once('.') else {
        return false;
    };
    let whole_ok = whole.is_empty()
        || (whole.starts_with(|c: char| c.is_ascii_digit())
            && whole.split(':').all(|p| digits_underscores(p, 10)));
    let fraction_ok = fraction.chars().all(|c| c == '_' || c.is_ascii_digit())
        && (!whole.is_empty() || !fraction.is_empty());
    let exponent_ok = exponent.is_none_or(|e| {
        e.strip_prefix(['-', '+'])
            .is_some_and(|d| !d.is_empty() && d.chars().all(|c| c.is_ascii_digit()))
    });
    whole_ok && fraction_ok && exponent_ok
}

fn is_timestamp(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() >= 8 && b[..4].iter().all(u8::is_ascii_digit) && b[4] == b'-'
}

/// Checks a DNS-1123 subdomain (most object names): at most 253
/// characters, dot-separated DNS-1123 labels.
pub fn check_dns1123_subdomain(field: &str, name: &str) -> Result<(), String> {
    let valid = (1..=253).contains(&name.len())
        && name
            .split('.')
            .all(|part| check_dns1123_label(field, part).is_ok());
    if valid {
        Ok(())
    } else {
        Err(format!(
            "{field}: {name:?} is not a valid Kubernetes name (DNS-1123 subdomain: at most 253 \
             characters of lowercase letters, digits, '-' and '.')"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn yaml_is_written_the_way_pyyaml_writes_it() {
        let value = json!({
            "kind": "Job",
            "apiVersion": "batch/v1",
            "spec": {"backoffLimit": 0, "list": [{"name": "A", "value": "6379"}, "x"],
                     "empty": {}, "none": []},
            "args": ["--config", "3", "1.5", "true", "2025-11-16T18:21:45.906585", "", "a: b",
                     "it's", "-", "1Gi", "500m", ".5", "1e3", "0x1F", "1_000", "#c"],
        });
        let expected = "\
apiVersion: batch/v1
args:
- --config
- '3'
- '1.5'
- 'true'
- '2025-11-16T18:21:45.906585'
- ''
- 'a: b'
- it's
- '-'
- 1Gi
- 500m
- '.5'
- 1e3
- '0x1F'
- '1_000'
- '#c'
kind: Job
spec:
  backoffLimit: 0
  empty: {}
  list:
  - name: A
    value: '6379'
  - x
  none: []
";
        assert_eq!(to_yaml(&value), expected);
    }

    #[test]
    fn subdomains_are_checked_like_the_api_server() {
        assert!(check_dns1123_subdomain("name", "a.b-c").is_ok());
        assert!(check_dns1123_subdomain("name", "a..b").is_err());
    }

    /// The executor conformance suite on a temp manifests directory.
    mod conformance {
        use super::*;
        use crate::conformance::{self as suite, ExecutorCase, ExecutorHarness, QUEUE};
        use flotilla_messages::scheduler::KubernetesSpec;
        use std::sync::Arc;

        struct ManifestsHarness {
            case: ExecutorCase,
            dir: tempfile::TempDir,
        }

        #[async_trait]
        impl ExecutorHarness for ManifestsHarness {
            fn skip(case: ExecutorCase) -> Option<&'static str> {
                match case {
                    ExecutorCase::Runs | ExecutorCase::StopsEnded => None,
                    ExecutorCase::Fails => {
                        Some("a manifest is written, not run: no script exits with a status")
                    }
                    ExecutorCase::Adopts => {
                        Some("nothing runs to adopt: every launch writes the same manifest again")
                    }
                    ExecutorCase::Collects => Some(
                        "nothing runs to end: every launch writes the manifest again and succeeds",
                    ),
                    ExecutorCase::StopsRunning => Some("nothing runs to stop: stop does nothing"),
                }
            }

            fn start(case: ExecutorCase) -> Self {
                let dir = tempfile::tempdir().expect("a manifests directory");
                ManifestsHarness { case, dir }
            }

            fn runs(&self) -> bool {
                false
            }

            fn executor(&self) -> Arc<dyn Executor> {
                Arc::new(ManifestsExecutor::new(self.dir.path(), "default"))
            }

            fn attempt(&self, case: ExecutorCase) -> Attempt {
                let mut attempt = suite::attempt(case);
                attempt.spec.kubernetes = Some(KubernetesSpec {
                    image: "trainer:1".into(),
                    ..KubernetesSpec::default()
                });
                attempt
            }

            /// The queue's directory holds the case's Job manifest, alone.
            async fn finish(self) {
                let name = job_name(QUEUE, self.case.job_id(), 1);
                let written: Vec<_> = std::fs::read_dir(self.dir.path().join(QUEUE))
                    .expect("the queue's manifests")
                    .map(|e| {
                        e.expect("an entry")
                            .file_name()
                            .to_string_lossy()
                            .into_owned()
                    })
                    .collect();
                assert_eq!(written, vec![format!("{name}.yaml")]);
            }
        }

        crate::executor_conformance_tests!(ManifestsHarness);
    }
}
