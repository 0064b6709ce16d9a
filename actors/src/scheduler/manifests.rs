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

use serde_json::Value;

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
            && whole
                .split(':')
                .all(|p| digits_underscores(p, 10)));
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

/// Checks a resource quantity (`500m`, `1Gi`, `2`, `1.5`, `1e3`) as the
/// API server parses it.
pub fn check_quantity(field: &str, text: &str) -> Result<(), String> {
    let bad = || {
        format!(
            "{field}: {text:?} is not a Kubernetes quantity \
             (a number with an optional suffix: m, k, M, G, Ki, Mi, Gi, ..., e.g. 500m or 1Gi)"
        )
    };
    let number_end = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(number_end);
    let unsigned = number.strip_prefix(['+', '-']).unwrap_or(number);
    let digits_ok = !unsigned.is_empty()
        && unsigned.chars().all(|c| c.is_ascii_digit() || c == '.')
        && unsigned.matches('.').count() <= 1
        && unsigned.chars().any(|c| c.is_ascii_digit());
    if !digits_ok {
        return Err(bad());
    }
    const SUFFIXES: [&str; 16] = [
        "", "n", "u", "m", "k", "M", "G", "T", "P", "E", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei",
    ];
    let exponent = suffix
        .strip_prefix(['e', 'E'])
        .map(|e| e.strip_prefix(['+', '-']).unwrap_or(e))
        .is_some_and(|d| !d.is_empty() && d.chars().all(|c| c.is_ascii_digit()));
    if SUFFIXES.contains(&suffix) || exponent {
        Ok(())
    } else {
        Err(bad())
    }
}

/// Checks a DNS-1123 label (namespaces, container names, Job names that
/// become pod labels): 1-63 lowercase alphanumerics or '-', starting and
/// ending alphanumeric.
pub fn check_dns1123_label(field: &str, name: &str) -> Result<(), String> {
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    let valid = (1..=63).contains(&name.len())
        && name.chars().all(|c| alnum(c) || c == '-')
        && name.starts_with(alnum)
        && name.ends_with(alnum);
    if valid {
        Ok(())
    } else {
        Err(format!(
            "{field}: {name:?} is not a valid Kubernetes name (DNS-1123 label: at most 63 \
             characters, lowercase letters, digits and '-', starting and ending with a letter \
             or digit)"
        ))
    }
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
    fn quantities_are_checked_like_the_api_server() {
        for good in ["500m", "1", "1Gi", "0.5", "2.5Gi", "1e3", "1E-2", "+1", "100Mi", "4"] {
            assert!(check_quantity("cpu", good).is_ok(), "{good}");
        }
        for bad in ["", "1zz", "Gi", "1.2.3", "abc", "1 Gi", "1gi", "--1", "1e"] {
            let e = check_quantity("resources.limits.cpu", bad).unwrap_err();
            assert!(e.starts_with("resources.limits.cpu:"), "{e}");
        }
    }

    #[test]
    fn names_are_checked_like_the_api_server() {
        assert!(check_dns1123_label("name", "arb-tuning-d29-k8s--worker-1-0").is_ok());
        for bad in ["", "Bad", "a_b", "-a", "a-", &"a".repeat(64)] {
            assert!(check_dns1123_label("name", bad).is_err(), "{bad}");
        }
        assert!(check_dns1123_subdomain("name", "a.b-c").is_ok());
        assert!(check_dns1123_subdomain("name", "a..b").is_err());
    }
}
