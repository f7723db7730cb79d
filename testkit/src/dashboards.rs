//! The metric sample names that the monitoring files under `deploy/` query.
//!
//! [`metrics_used`] reads the Grafana dashboards (`deploy/grafana/*.json`), the alert rules
//! (`deploy/prometheus/alerts.yml`) and the prometheus-adapter rules
//! (`deploy/prometheus/prometheus-adapter.yaml`), and returns every metric name their PromQL
//! uses that looks like `(switchyard|gen_ai)_[a-z0-9_]+`. A test that scrapes the real servers
//! can then check that each one is exported, so a renamed metric cannot silently empty a panel
//! or disarm an alert.
//!
//! Only query text is read: every `expr` in a dashboard (nested rows included) and the
//! template variables' `label_values(...)` queries; in the YAML files, the values of `expr`,
//! `seriesQuery` and `metricsQuery` (plain, quoted or block scalars). Within a query, label
//! names (inside `{...}`, in `by`/`without`/`on`/`ignoring`/`group_left`/`group_right`
//! lists and as the label argument of `label_values`), string literals, comments and Grafana
//! or prometheus-adapter variables (`$pool`, `$__rate_interval`, `<<.Series>>`) are skipped.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_json::Value;

/// The dashboards' folder, relative to the workspace root.
pub const GRAFANA_DIR: &str = "deploy/grafana";
/// The alert rules, relative to the workspace root.
pub const ALERTS_FILE: &str = "deploy/prometheus/alerts.yml";
/// The prometheus-adapter rules, relative to the workspace root.
pub const ADAPTER_FILE: &str = "deploy/prometheus/prometheus-adapter.yaml";

/// Keys of the YAML files whose values are PromQL (or a prometheus-adapter query template).
const YAML_QUERY_KEYS: &[&str] = &["expr", "seriesQuery", "metricsQuery"];

/// Label-list modifiers: the parenthesised list after them holds label names.
const LABEL_LIST_KEYWORDS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// The workspace root: the parent of this crate's directory.
pub fn workspace_root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    match manifest_dir.parent() {
        Some(root) => root.to_path_buf(),
        None => panic!("{} has no parent directory", manifest_dir.display()),
    }
}

/// Every Switchyard metric sample name (`switchyard_requests_total`,
/// `gen_ai_server_request_duration_seconds_bucket`, ...) that the dashboards, the alert rules
/// and the prometheus-adapter rules under the workspace's `deploy/` query.
///
/// # Panics
///
/// If `deploy/grafana` holds no `.json` file, if a file is missing or unreadable, or if a
/// dashboard is not valid JSON.
pub fn metrics_used() -> BTreeSet<String> {
    metrics_used_in(&workspace_root())
}

/// [`metrics_used`] for the `deploy/` folder under `root`.
///
/// # Panics
///
/// As [`metrics_used`].
pub fn metrics_used_in(root: &Path) -> BTreeSet<String> {
    let mut names = BTreeSet::new();

    let grafana = root.join(GRAFANA_DIR);
    let entries = std::fs::read_dir(&grafana).unwrap_or_else(|err| {
        panic!(
            "cannot list the Grafana dashboards in {}: {err}",
            grafana.display()
        )
    });
    let mut dashboards: Vec<PathBuf> = entries
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
        .collect();
    dashboards.sort();
    assert!(
        !dashboards.is_empty(),
        "no Grafana dashboard (*.json) in {}",
        grafana.display()
    );
    for path in &dashboards {
        let text = read(path);
        let dashboard: Value = serde_json::from_str(&text)
            .unwrap_or_else(|err| panic!("{} is not valid JSON: {err}", path.display()));
        for query in dashboard_queries(&dashboard) {
            scan_promql(&query, &mut names);
        }
    }

    for file in [ALERTS_FILE, ADAPTER_FILE] {
        let text = read(&root.join(file));
        for query in yaml_values(&text, YAML_QUERY_KEYS) {
            scan_promql(&query, &mut names);
        }
    }
    names
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|err| {
        panic!(
            "cannot read {} (the metric names of deploy/ are checked against the servers): {err}",
            path.display()
        )
    })
}

/// The PromQL of a dashboard: every string under an `expr` key at any depth (panel targets,
/// rows' nested panels, library panels inlined) and the queries of its template variables.
fn dashboard_queries(dashboard: &Value) -> Vec<String> {
    fn exprs(value: &Value, out: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                for (key, child) in map {
                    match (key.as_str(), child) {
                        ("expr", Value::String(expr)) => out.push(expr.clone()),
                        _ => exprs(child, out),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|item| exprs(item, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    exprs(dashboard, &mut out);

    let variables = dashboard
        .pointer("/templating/list")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    for variable in variables {
        if variable.get("type").and_then(Value::as_str) != Some("query") {
            continue;
        }
        // Grafana stores the query as a string (older dashboards) or as {"query": "..."}.
        let query = variable.get("query").and_then(|query| match query {
            Value::String(query) => Some(query.as_str()),
            Value::Object(_) => query.get("query").and_then(Value::as_str),
            _ => None,
        });
        out.extend(query.map(str::to_owned));
    }
    out
}

/// The values of `keys` in a YAML text, found line by line at any depth (also inside a
/// block scalar such as a ConfigMap's embedded file): `key: value`, `- key: value`, quoted
/// values and block scalars (`key: |` / `key: >-` and the more-indented lines after them).
fn yaml_values(text: &str, keys: &[&str]) -> Vec<String> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        i += 1;
        let mut rest = line.trim_start();
        while let Some(item) = rest.strip_prefix("- ") {
            rest = item.trim_start();
        }
        if rest.starts_with('#') {
            continue;
        }
        let key_column = line.len() - rest.len();
        let Some(value) = keys.iter().find_map(|key| {
            rest.strip_prefix(key)
                .and_then(|after| after.strip_prefix(':'))
                .filter(|value| value.is_empty() || value.starts_with([' ', '\t']))
        }) else {
            continue;
        };
        let value = value.trim();

        // Lines that belong to this value: more indented than its key (blank lines included).
        let continuation = |i: &mut usize| {
            let mut body = Vec::new();
            while *i < lines.len() {
                let next = lines[*i];
                let indent = next.len() - next.trim_start().len();
                if !next.trim().is_empty() && indent <= key_column {
                    break;
                }
                body.push(next);
                *i += 1;
            }
            body
        };

        if value.starts_with('|') || value.starts_with('>') {
            out.push(continuation(&mut i).join("\n"));
        } else if let Some(quote @ ('"' | '\'')) = value.chars().next() {
            // A quoted scalar may run over several lines until its closing quote.
            let mut scalar = value.to_owned();
            while !quoted_closed(&scalar, quote) && i < lines.len() {
                scalar.push('\n');
                scalar.push_str(lines[i]);
                i += 1;
            }
            out.push(unquote(&scalar, quote));
        } else {
            // A plain scalar, possibly continued on more-indented lines; " #" starts a comment.
            let mut scalar = strip_yaml_comment(value).to_owned();
            for next in continuation(&mut i) {
                scalar.push('\n');
                scalar.push_str(strip_yaml_comment(next));
            }
            out.push(scalar);
        }
    }
    out
}

/// Whether a scalar that starts with `quote` has its closing quote.
fn quoted_closed(scalar: &str, quote: char) -> bool {
    let mut chars = scalar.chars().skip(1).peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if quote == '"' => {
                chars.next();
            }
            c if c == quote => {
                if quote == '\'' && chars.peek() == Some(&'\'') {
                    chars.next();
                } else {
                    return true;
                }
            }
            _ => {}
        }
    }
    false
}

/// The content of a quoted scalar (escapes resolved well enough for scanning names).
fn unquote(scalar: &str, quote: char) -> String {
    let mut out = String::new();
    let mut chars = scalar.chars().skip(1).peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if quote == '"' => match chars.next() {
                Some('n') => out.push('\n'),
                Some('t') => out.push('\t'),
                Some(other) => out.push(other),
                None => {}
            },
            c if c == quote => {
                if quote == '\'' && chars.peek() == Some(&'\'') {
                    chars.next();
                    out.push('\'');
                } else {
                    break;
                }
            }
            c => out.push(c),
        }
    }
    out
}

fn strip_yaml_comment(text: &str) -> &str {
    match text.find(" #") {
        Some(at) => &text[..at],
        None => text,
    }
}

fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// Whether a whole identifier is a Switchyard metric name: `(switchyard|gen_ai)_[a-z0-9_]+`.
fn is_switchyard_name(ident: &str) -> bool {
    let rest = ident
        .strip_prefix("switchyard_")
        .or_else(|| ident.strip_prefix("gen_ai_"));
    rest.is_some_and(|rest| {
        !rest.is_empty()
            && rest
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    })
}

/// Adds the metric names of one PromQL expression to `out`.
fn scan_promql(expr: &str, out: &mut BTreeSet<String>) {
    let chars: Vec<char> = expr.chars().collect();
    scan_range(&chars, 0, chars.len(), out);
}

/// Scans `chars[start..end]`.
fn scan_range(chars: &[char], start: usize, end: usize, out: &mut BTreeSet<String>) {
    let mut braces = 0usize;
    let mut i = start;
    while i < end {
        let c = chars[i];
        match c {
            '"' | '\'' | '`' => i = skip_string(chars, i, end),
            '#' => {
                while i < end && chars[i] != '\n' {
                    i += 1;
                }
            }
            '{' => {
                braces += 1;
                i += 1;
            }
            '}' => {
                braces = braces.saturating_sub(1);
                i += 1;
            }
            // A Grafana variable ($pool, ${pool}, $__rate_interval) or a template field
            // (<<.Series>>): never a metric name.
            '$' | '.' => {
                i += 1;
                if i < end && chars[i] == '{' && c == '$' {
                    while i < end && chars[i] != '}' {
                        i += 1;
                    }
                    i += 1;
                } else {
                    while i < end && is_ident_char(chars[i]) {
                        i += 1;
                    }
                }
            }
            c if is_ident_char(c) => {
                let begin = i;
                while i < end && is_ident_char(chars[i]) {
                    i += 1;
                }
                // Numbers and durations (0.95, 5m, 1e3) start with a digit.
                if c.is_ascii_digit() || braces > 0 {
                    continue;
                }
                let ident: String = chars[begin..i].iter().collect();
                let open = next_non_space(chars, i, end).filter(|&at| chars[at] == '(');
                if let Some(open) = open {
                    if LABEL_LIST_KEYWORDS.contains(&ident.as_str()) {
                        i = matching_paren(chars, open, end);
                        continue;
                    }
                    if ident == "label_values" {
                        // label_values(metric, label) or label_values(label): only the
                        // first of two arguments can name a metric.
                        let close = matching_paren(chars, open, end);
                        if let Some(comma) = top_level_comma(chars, open + 1, close) {
                            scan_range(chars, open + 1, comma, out);
                        }
                        i = close;
                        continue;
                    }
                }
                if is_switchyard_name(&ident) {
                    out.insert(ident);
                }
            }
            _ => i += 1,
        }
    }
}

/// The index after the string literal that opens at `at`.
fn skip_string(chars: &[char], at: usize, end: usize) -> usize {
    let quote = chars[at];
    let mut i = at + 1;
    while i < end {
        match chars[i] {
            '\\' if quote != '`' => i += 2,
            c if c == quote => return i + 1,
            _ => i += 1,
        }
    }
    end
}

fn next_non_space(chars: &[char], from: usize, end: usize) -> Option<usize> {
    (from..end).find(|&at| !chars[at].is_whitespace())
}

/// The index after the `)` that closes the `(` at `open` (or `end` if it is not closed).
fn matching_paren(chars: &[char], open: usize, end: usize) -> usize {
    let mut depth = 0usize;
    let mut i = open;
    while i < end {
        match chars[i] {
            '"' | '\'' | '`' => {
                i = skip_string(chars, i, end);
                continue;
            }
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth == 0 {
                    return i + 1;
                }
            }
            _ => {}
        }
        i += 1;
    }
    end
}

/// The first comma in `chars[start..end]` outside nested parentheses, braces and strings.
fn top_level_comma(chars: &[char], start: usize, end: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut i = start;
    while i < end {
        match chars[i] {
            '"' | '\'' | '`' => {
                i = skip_string(chars, i, end);
                continue;
            }
            '(' | '{' | '[' => depth += 1,
            ')' | '}' | ']' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => return Some(i),
            _ => {}
        }
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(expr: &str) -> Vec<String> {
        let mut out = BTreeSet::new();
        scan_promql(expr, &mut out);
        out.into_iter().collect()
    }

    #[test]
    fn finds_the_names_the_deploy_files_use() {
        let used = metrics_used();
        for name in [
            // requests, errors, latency, time to first token
            "switchyard_requests_total",
            "gen_ai_server_request_duration_seconds_bucket",
            "gen_ai_server_time_to_first_token_seconds_bucket",
            // attempts, upstream latency, member state, benches, probes, failovers
            "switchyard_attempts_total",
            "gen_ai_client_operation_duration_seconds_bucket",
            "switchyard_member_state",
            "switchyard_member_benches_total",
            "switchyard_probes_total",
            "switchyard_failovers_total",
            // tokens
            "gen_ai_client_token_usage_sum",
            // workers: in flight (dashboard and prometheus-adapter), config, fleet state
            "switchyard_inflight_requests",
            "switchyard_config_revision",
            "switchyard_config_age_seconds",
            "switchyard_config_live",
            "switchyard_fleet_state_up",
            // control plane
            "switchyard_control_plane_revision",
            "switchyard_control_plane_writes_total",
            "switchyard_control_plane_outbox_backlog",
            "switchyard_control_plane_publish_lag_seconds_bucket",
        ] {
            assert!(used.contains(name), "{name} not found in {used:?}");
        }
    }

    #[test]
    fn returns_no_label_names_or_partial_names() {
        let used = metrics_used();
        let labels = [
            "gen_ai_operation_name",
            "gen_ai_request_model",
            "gen_ai_response_model",
            "gen_ai_provider_name",
            "gen_ai_token_type",
        ];
        for name in &used {
            assert!(is_switchyard_name(name), "{name} is not a metric name");
            assert!(!name.ends_with('_'), "partial name {name}");
            assert!(!labels.contains(&name.as_str()), "label name {name}");
            // No name is a prefix cut out of another one (`gen_ai_server` of
            // `gen_ai_server_request_duration_seconds_bucket`) unless both are real samples.
            assert!(
                !matches!(
                    name.as_str(),
                    "switchyard_" | "gen_ai_" | "gen_ai_server" | "gen_ai_client"
                ),
                "partial name {name}"
            );
        }
    }

    #[test]
    fn skips_labels_strings_variables_and_comments() {
        assert_eq!(
            names(
                r#"sum by (pool, gen_ai_token_type) (rate(gen_ai_client_token_usage_sum{pool=~"$pool",gen_ai_provider_name="switchyard_fake"}[$__rate_interval]))"#
            ),
            ["gen_ai_client_token_usage_sum"]
        );
        assert_eq!(
            names(
                "histogram_quantile(0.95, sum by (le, gen_ai_request_model) (rate(gen_ai_server_request_duration_seconds_bucket[5m])))"
            ),
            ["gen_ai_server_request_duration_seconds_bucket"]
        );
        assert_eq!(
            names(
                "switchyard_a_total / on (gen_ai_request_model) group_left (gen_ai_response_model) switchyard_b # switchyard_comment"
            ),
            ["switchyard_a_total", "switchyard_b"]
        );
        assert_eq!(
            names(
                "sum(switchyard_x) without(gen_ai_token_type) > bool 1e3 and ignoring(x) switchyard_y offset 5m"
            ),
            ["switchyard_x", "switchyard_y"]
        );
        assert_eq!(
            names("sum(<<.Series>>{<<.LabelMatchers>>}) by (<<.GroupBy>>) + ${switchyard_var}"),
            Vec::<String>::new()
        );
        // Whole identifiers only; recording-rule names and other prefixes do not count.
        assert_eq!(
            names("my_switchyard_x + switchyard:rate5m + Switchyard_X + switchyard_ok_1"),
            ["switchyard_ok_1"]
        );
        assert_eq!(
            names("label_values(switchyard_requests_total, gen_ai_request_model)"),
            ["switchyard_requests_total"]
        );
        assert_eq!(
            names("label_values(gen_ai_request_model)"),
            Vec::<String>::new()
        );
    }

    #[test]
    fn reads_yaml_values_of_every_form() {
        let text = r#"
groups:
  - name: switchyard.rules
    rules:
      - alert: A
        expr: switchyard_one == 0  # switchyard_in_comment
        annotations:
          description: switchyard_in_text_total is not a query
      - alert: B
        expr: |
          sum by (gen_ai_token_type) (rate(switchyard_two_total[5m]))

          / switchyard_three
        for: 5m
      - expr: >-
          switchyard_four
      - record: x
        expr: "switchyard_five{a=\"b\"}"
data:
  config.yaml: |
    rules:
      - seriesQuery: 'switchyard_six{namespace!="",pod!=""}'
        metricsQuery: 'sum(<<.Series>>{<<.LabelMatchers>>}) by (<<.GroupBy>>)'
"#;
        let mut out = BTreeSet::new();
        for value in yaml_values(text, YAML_QUERY_KEYS) {
            scan_promql(&value, &mut out);
        }
        let found: Vec<&str> = out.iter().map(String::as_str).collect();
        assert_eq!(
            found,
            [
                "switchyard_five",
                "switchyard_four",
                "switchyard_one",
                "switchyard_six",
                "switchyard_three",
                "switchyard_two_total",
            ]
        );
    }

    #[test]
    fn reads_nested_panels_and_template_variables() {
        let dashboard = serde_json::json!({
            "panels": [
                {"type": "row", "panels": [{"targets": [{"expr": "switchyard_nested"}]}]},
                {"targets": [{"expr": "rate(switchyard_top_total[5m])"}]}
            ],
            "templating": {"list": [
                {"type": "datasource", "query": "prometheus"},
                {"type": "query", "query": {"query": "label_values(switchyard_var_a, pool)"}},
                {"type": "query", "query": "label_values(switchyard_var_b, model)"}
            ]}
        });
        let mut out = BTreeSet::new();
        for query in dashboard_queries(&dashboard) {
            scan_promql(&query, &mut out);
        }
        let found: Vec<&str> = out.iter().map(String::as_str).collect();
        assert_eq!(
            found,
            [
                "switchyard_nested",
                "switchyard_top_total",
                "switchyard_var_a",
                "switchyard_var_b"
            ]
        );
    }

    #[test]
    #[should_panic(expected = "deploy/grafana")]
    fn panics_clearly_when_the_files_are_missing() {
        let empty = tempfile::tempdir().expect("temp dir");
        metrics_used_in(empty.path());
    }
}
