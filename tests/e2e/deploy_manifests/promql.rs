//! The metric names a PromQL expression (or a Grafana query) reads: a small
//! tokenizer that skips strings, label matchers (`{...}`), ranges and
//! subqueries (`[...]`), label lists (`by (...)`, `without (...)`, `on
//! (...)`, `ignoring (...)`, `group_left (...)`, `group_right (...)`),
//! numbers and durations, Grafana variables (`$pool`, `${pool}`), and
//! keeps every identifier that is not a function (followed by `(`) nor a
//! keyword.

use std::collections::BTreeSet;

/// Keywords and operators that look like identifiers but name no metric
/// (aggregations may take their label list before their argument, so are
/// not always followed by `(`).
const KEYWORDS: &[&str] = &[
    "sum",
    "avg",
    "min",
    "max",
    "count",
    "stddev",
    "stdvar",
    "topk",
    "bottomk",
    "quantile",
    "count_values",
    "group",
    "limitk",
    "limit_ratio",
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "atan2",
    "inf",
    "nan",
];

/// Keywords followed by a parenthesized list of label names.
const LABEL_LISTS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// The metric names `expr` reads.
pub fn metric_names(expr: &str) -> BTreeSet<String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        i = match c {
            '"' | '\'' | '`' => skip_string(&chars, i),
            '{' => skip_group(&chars, i, '{', '}'),
            '[' => skip_group(&chars, i, '[', ']'),
            '$' => skip_variable(&chars, i),
            c if c.is_ascii_digit() || c == '.' => skip_word(&chars, i),
            c if is_ident_start(c) => {
                let end = skip_word(&chars, i);
                let word: String = chars[i..end].iter().collect();
                let next = skip_spaces(&chars, end);
                let called = chars.get(next) == Some(&'(');
                let lowered = word.to_ascii_lowercase();
                if LABEL_LISTS.contains(&lowered.as_str()) && called {
                    skip_group(&chars, next, '(', ')')
                } else {
                    if !called && !KEYWORDS.contains(&lowered.as_str()) {
                        names.insert(word);
                    }
                    end
                }
            }
            _ => i + 1,
        };
    }
    names
}

/// The metric a Grafana template query reads: `label_values(metric{...},
/// label)` names `metric`; `label_values(label)` names none; anything else
/// is PromQL.
pub fn template_metric_names(query: &str) -> BTreeSet<String> {
    let query = query.trim();
    match query
        .strip_prefix("label_values(")
        .and_then(|q| q.strip_suffix(')'))
    {
        Some(args) => match args.rsplit_once(',') {
            Some((selector, _label)) => metric_names(selector),
            None => BTreeSet::new(),
        },
        None => metric_names(query),
    }
}

fn is_ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || c == ':'
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// The index after the identifier-like word (or number) at `i`.
fn skip_word(chars: &[char], mut i: usize) -> usize {
    while i < chars.len() && (is_ident(chars[i]) || chars[i] == '.') {
        i += 1;
    }
    i
}

fn skip_spaces(chars: &[char], mut i: usize) -> usize {
    while i < chars.len() && chars[i].is_whitespace() {
        i += 1;
    }
    i
}

/// The index after the string opening at `i` (backslash escapes).
fn skip_string(chars: &[char], i: usize) -> usize {
    let quote = chars[i];
    let mut j = i + 1;
    while j < chars.len() && chars[j] != quote {
        j += if chars[j] == '\\' { 2 } else { 1 };
    }
    j + 1
}

/// The index after the group opening at `i`, nested groups and strings
/// inside skipped whole.
fn skip_group(chars: &[char], i: usize, open: char, close: char) -> usize {
    let mut depth = 0;
    let mut j = i;
    while j < chars.len() {
        match chars[j] {
            '"' | '\'' | '`' => {
                j = skip_string(chars, j);
                continue;
            }
            c if c == open => depth += 1,
            c if c == close => {
                depth -= 1;
                if depth == 0 {
                    return j + 1;
                }
            }
            _ => {}
        }
        j += 1;
    }
    j
}

/// The index after a Grafana variable (`$name`, `${name}`, `$__interval`).
fn skip_variable(chars: &[char], i: usize) -> usize {
    if chars.get(i + 1) == Some(&'{') {
        skip_group(chars, i + 1, '{', '}')
    } else {
        skip_word(chars, i + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(expr: &str) -> Vec<String> {
        metric_names(expr).into_iter().collect()
    }

    #[test]
    fn metrics_are_found_and_functions_labels_and_keywords_are_not() {
        assert_eq!(names("up == 0"), ["up"]);
        assert_eq!(
            names("increase(flotilla_node_replacements_total{pool=~\"gpu.*\"}[15m]) > 3"),
            ["flotilla_node_replacements_total"]
        );
        assert_eq!(
            names(
                "histogram_quantile(0.95, sum by (le, model) (rate(flotilla_inference_request_duration_seconds_bucket[5m])))"
            ),
            ["flotilla_inference_request_duration_seconds_bucket"]
        );
        assert_eq!(
            names("sum(rate(a_total{code=~\"5..\"}[5m])) / sum(rate(a_total[5m])) > 0.05"),
            ["a_total"]
        );
        assert_eq!(
            names(
                "max without(instance) (b) and on (pool) c unless ignoring(node) group_left(x) d"
            ),
            ["b", "c", "d"]
        );
        assert_eq!(names("e offset 1h > bool 1e3"), ["e"]);
        assert_eq!(names("sum(f) by (pool) > 0"), ["f"]);
        assert_eq!(
            names("rate(g[$__rate_interval]) * on() h{pool=\"$pool\"}"),
            ["g", "h"]
        );
        assert_eq!(names("max_over_time(i[5m:1m]) > Inf"), ["i"]);
        assert_eq!(names("j{l=\"}\"} + k"), ["j", "k"]);
        assert_eq!(names("avg(l:recorded) > ${threshold}"), ["l:recorded"]);
    }

    #[test]
    fn grafana_template_queries_name_their_metric() {
        let names = |q: &str| -> Vec<String> { template_metric_names(q).into_iter().collect() };
        assert_eq!(
            names("label_values(flotilla_nodes_total, pool)"),
            ["flotilla_nodes_total"]
        );
        assert_eq!(names("label_values(m{pool=\"a,b\"}, node)"), ["m"]);
        assert!(names("label_values(pool)").is_empty());
        assert_eq!(names("query_result(count(x))"), ["x"]);
    }
}
