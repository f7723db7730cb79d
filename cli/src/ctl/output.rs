//! How the commands print: aligned tables for people, and the API objects
//! as JSON or YAML for scripts (built by hand: prost types derive no serde).
//! Enum values are taken and shown as the config file writes them
//! (`round_robin`).

use clap::ValueEnum;
use serde_json::{Value, json};
use switchyard_proto::v1 as pb;

/// `--status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum StatusArg {
    Active,
    Inactive,
    Draining,
}

impl From<StatusArg> for pb::MemberStatus {
    fn from(s: StatusArg) -> Self {
        match s {
            StatusArg::Active => Self::Active,
            StatusArg::Inactive => Self::Inactive,
            StatusArg::Draining => Self::Draining,
        }
    }
}

/// `--strategy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum StrategyArg {
    // Spelled as the config file and `get` spell it.
    #[value(name = "round_robin", alias = "round-robin")]
    RoundRobin,
    Weighted,
    Priority,
    Random,
    #[value(name = "least_busy", alias = "least-busy")]
    LeastBusy,
    Latency,
    #[value(name = "quota_aware", alias = "quota-aware")]
    QuotaAware,
}

impl From<StrategyArg> for pb::Strategy {
    fn from(s: StrategyArg) -> Self {
        match s {
            StrategyArg::RoundRobin => Self::RoundRobin,
            StrategyArg::Weighted => Self::Weighted,
            StrategyArg::Priority => Self::Priority,
            StrategyArg::Random => Self::Random,
            StrategyArg::LeastBusy => Self::LeastBusy,
            StrategyArg::Latency => Self::Latency,
            StrategyArg::QuotaAware => Self::QuotaAware,
        }
    }
}

/// `--kind`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum KindArg {
    Openai,
    Anthropic,
    Mock,
}

impl From<KindArg> for pb::ProviderKind {
    fn from(k: KindArg) -> Self {
        match k {
            KindArg::Openai => Self::Openai,
            KindArg::Anthropic => Self::Anthropic,
            KindArg::Mock => Self::Mock,
        }
    }
}

/// `-o`: how `get` prints.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Aligned columns.
    #[default]
    Table,
    /// The table with more columns (etag, limits, timeouts).
    Wide,
    /// The API objects as YAML.
    Yaml,
    /// The API objects as JSON.
    Json,
}

impl Output {
    pub fn is_table(self) -> bool {
        matches!(self, Self::Table | Self::Wide)
    }
}

/// Columns padded to their widest cell, kubectl style: no borders, two
/// spaces between columns, no trailing spaces.
pub struct Table(comfy_table::Table);

impl Table {
    pub fn new(headers: &[&str]) -> Self {
        let mut t = comfy_table::Table::new();
        t.load_style(comfy_table::presets::NOTHING)
            .set_content_arrangement(comfy_table::ContentArrangement::Disabled)
            .set_header(headers.iter().copied());
        for c in t.column_iter_mut() {
            c.set_padding((0, 2));
        }
        Self(t)
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.0.add_row(cells);
        // Columns added by the first row get the same padding.
        for c in self.0.column_iter_mut() {
            c.set_padding((0, 2));
        }
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        for line in self.0.lines() {
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// Prints `value` as JSON or YAML (`Table`/`Wide` are not for this).
pub fn print_value(output: Output, value: &Value) -> anyhow::Result<()> {
    match output {
        Output::Yaml => {
            let text = serde_saphyr::to_string(value)?;
            print!("{}", text);
            if !text.ends_with('\n') {
                println!();
            }
        }
        _ => println!("{}", serde_json::to_string_pretty(value)?),
    }
    Ok(())
}

/// `PROVIDER_KIND_OPENAI` → `openai`: a proto enum name without its prefix.
pub fn short(name: &str, prefix: &str) -> String {
    name.strip_prefix(prefix)
        .unwrap_or(name)
        .to_ascii_lowercase()
}

pub fn kind(v: i32) -> String {
    pb::ProviderKind::try_from(v)
        .map_or(v.to_string(), |k| short(k.as_str_name(), "PROVIDER_KIND_"))
}

pub fn strategy(v: i32) -> String {
    pb::Strategy::try_from(v).map_or(v.to_string(), |s| short(s.as_str_name(), "STRATEGY_"))
}

pub fn status(v: i32) -> String {
    pb::MemberStatus::try_from(v)
        .map_or(v.to_string(), |s| short(s.as_str_name(), "MEMBER_STATUS_"))
}

/// A member status as tables show it: `ACTIVE`, `DRAINING`.
pub fn status_upper(v: i32) -> String {
    status(v).to_ascii_uppercase()
}

pub fn on(enabled: Option<bool>) -> &'static str {
    if enabled.unwrap_or(true) {
        "true"
    } else {
        "false"
    }
}

pub fn dash(s: &str) -> &str {
    if s.is_empty() { "-" } else { s }
}

pub fn time(t: Option<&prost_types::Timestamp>) -> String {
    t.map_or_else(|| "-".into(), |t| t.to_string())
}

fn time_json(t: Option<&prost_types::Timestamp>) -> Value {
    t.map_or(Value::Null, |t| Value::String(t.to_string()))
}

/// What reads show of a credential: its reference, `inline …abcd`, or `-`.
pub fn credential(c: Option<&pb::CredentialInfo>) -> String {
    use pb::credential_info::Source;
    match c.map(|c| (Source::try_from(c.source).unwrap_or(Source::None), c)) {
        Some((Source::Reference, c)) => c.reference.clone(),
        Some((Source::Inline, c)) => {
            format!("inline …{}", c.fingerprint.trim_start_matches(['.', '…']))
        }
        _ => "-".into(),
    }
}

pub use super::tiers::{parse_tier, tier, tiers};

/// A provider's named keys: `batch (env:SWITCHYARD_CRED_B), spare (inline …abcd)`.
pub fn keys(ks: &[pb::ProviderKey]) -> String {
    if ks.is_empty() {
        return "-".into();
    }
    ks.iter()
        .map(|k| format!("{} ({})", k.name, credential(k.credential_info.as_ref())))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `connect/first-byte/request` in ms, `default` for 0.
pub fn timeouts(t: Option<&pb::Timeouts>) -> String {
    let ms = |v: u32| {
        if v == 0 {
            "default".into()
        } else {
            format!("{v}ms")
        }
    };
    t.map_or_else(
        || "default".into(),
        |t| {
            format!(
                "{}/{}/{}",
                ms(t.connect_ms),
                ms(t.first_byte_ms),
                ms(t.request_ms)
            )
        },
    )
}

pub fn failover(f: Option<&pb::FailoverPolicy>) -> String {
    match f {
        None => "defaults".into(),
        Some(f) => format!(
            "retries={} threshold={} cooldown={}..{}ms advance_on_permanent={}",
            f.transient_retries,
            f.failure_threshold,
            f.cooldown_base_ms,
            f.cooldown_max_ms,
            f.advance_on_permanent
        ),
    }
}

/// A pool's `allow_request_extra`: whether callers may send `extra_json`.
pub fn extra(v: Option<bool>) -> &'static str {
    if v.unwrap_or(true) {
        "allowed"
    } else {
        "refused"
    }
}

pub fn limit(v: Option<u64>) -> String {
    v.map_or_else(|| "-".into(), |v| v.to_string())
}

fn credential_json(c: Option<&pb::CredentialInfo>) -> Value {
    use pb::credential_info::Source;
    match c {
        Some(c) => match Source::try_from(c.source).unwrap_or(Source::None) {
            Source::Reference => json!({"source": "reference", "reference": c.reference}),
            Source::Inline => json!({"source": "inline", "fingerprint": c.fingerprint}),
            Source::None => json!({"source": "none"}),
        },
        None => json!({"source": "none"}),
    }
}

pub fn provider_json(p: &pb::Provider) -> Value {
    let credential = credential_json(p.credential_info.as_ref());
    let t = p.timeouts.unwrap_or_default();
    json!({
        "id": p.id,
        "name": p.name,
        "kind": kind(p.kind),
        "base_url": p.base_url,
        "credential": credential,
        "keys": p.keys.iter().map(|k| json!({
            "name": k.name,
            "credential": credential_json(k.credential_info.as_ref()),
        })).collect::<Vec<_>>(),
        "extra_headers": p.extra_headers,
        "timeouts": {
            "connect_ms": t.connect_ms,
            "first_byte_ms": t.first_byte_ms,
            "request_ms": t.request_ms,
        },
        "enabled": p.enabled.unwrap_or(true),
        "etag": p.etag,
        "create_time": time_json(p.create_time.as_ref()),
        "update_time": time_json(p.update_time.as_ref()),
    })
}

pub fn pool_json(p: &pb::Pool) -> Value {
    let failover = p.failover.as_ref().map_or(Value::Null, |f| {
        json!({
            "transient_retries": f.transient_retries,
            "failure_threshold": f.failure_threshold,
            "cooldown_base_ms": f.cooldown_base_ms,
            "cooldown_max_ms": f.cooldown_max_ms,
            "advance_on_permanent": f.advance_on_permanent,
        })
    });
    json!({
        "id": p.id,
        "name": p.name,
        "strategy": strategy(p.strategy),
        "failover": failover,
        "enabled": p.enabled.unwrap_or(true),
        "description": p.description,
        "allow_request_extra": p.allow_request_extra.unwrap_or(true),
        "etag": p.etag,
        "create_time": time_json(p.create_time.as_ref()),
        "update_time": time_json(p.update_time.as_ref()),
    })
}

pub fn member_json(m: &pb::Member) -> Value {
    json!({
        "id": m.id,
        "pool": m.pool_name,
        "pool_id": m.pool,
        "provider": m.provider_name,
        "provider_id": m.provider,
        "upstream_model": m.upstream_model,
        "weight": m.weight,
        "priority": m.priority,
        "status": status(m.status),
        "rpm_limit": m.rpm_limit,
        "tpm_limit": m.tpm_limit,
        "max_output_tokens": m.max_output_tokens,
        "max_concurrency": m.max_concurrency,
        "context_tokens": m.context_tokens,
        "key": (!m.key.is_empty()).then_some(&m.key),
        "etag": m.etag,
        "create_time": time_json(m.create_time.as_ref()),
        "update_time": time_json(m.update_time.as_ref()),
    })
}

pub fn route_json(r: &pb::Route) -> Value {
    let tiers: Vec<Value> = r
        .tiers
        .iter()
        .map(|t| {
            let mut v = match &t.target {
                Some(pb::route_tier::Target::Pool(p)) => json!({"pool": p, "backup": t.backup}),
                Some(pb::route_tier::Target::Direct(d)) => {
                    json!({"direct": d, "backup": t.backup})
                }
                None => json!({"backup": t.backup}),
            };
            if let Some(c) = &t.when {
                v["when"] = json!({
                    "images": c.images,
                    "reasoning": c.reasoning,
                    "tools": c.tools,
                    "min_prompt_tokens": c.min_prompt_tokens,
                });
            }
            v
        })
        .collect();
    json!({
        "id": r.id,
        "name": r.name,
        "tiers": tiers,
        "enabled": r.enabled.unwrap_or(true),
        "description": r.description,
        "etag": r.etag,
        "create_time": time_json(r.create_time.as_ref()),
        "update_time": time_json(r.update_time.as_ref()),
    })
}

/// A member's health as the data plane holds it: `ok`, `ok (2 failures)`,
/// `benched 12s`, or `-` when unknown.
pub fn health(h: Option<&pb::MemberHealth>, now_ms: i64) -> String {
    match h {
        None => "-".into(),
        Some(h) if h.available && h.consecutive_failures > 0 => {
            format!("ok ({} failures)", h.consecutive_failures)
        }
        Some(h) if h.available => "ok".into(),
        Some(h) if h.benched_until_ms > now_ms => {
            let secs = (h.benched_until_ms - now_ms + 999) / 1000;
            format!("benched {secs}s")
        }
        Some(_) => "benched".into(),
    }
}

/// Unix milliseconds now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// One `Key:          value` line of a describe block.
pub fn field(out: &mut String, key: &str, value: impl std::fmt::Display) {
    use std::fmt::Write as _;
    let _ = writeln!(out, "{:<14}{value}", format!("{key}:"));
}

/// A resource's etag and times, as the last lines of its describe block.
pub fn stamps(
    out: &mut String,
    etag: &str,
    c: Option<&prost_types::Timestamp>,
    u: Option<&prost_types::Timestamp>,
) {
    field(out, "Etag", etag);
    field(out, "Created", time(c));
    field(out, "Updated", time(u));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_without_trailing_spaces() {
        let mut t = Table::new(&["NAME", "STRATEGY"]);
        t.row(vec!["demo".into(), "round_robin".into()]);
        t.row(vec!["a-longer-name".into(), "weighted".into()]);
        let out = t.render();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "NAME           STRATEGY");
        assert_eq!(lines[1], "demo           round_robin");
        assert_eq!(lines[2], "a-longer-name  weighted");
    }

    #[test]
    fn credentials_never_show_more_than_the_fingerprint() {
        let inline = pb::CredentialInfo {
            source: pb::credential_info::Source::Inline.into(),
            fingerprint: "...abcd".into(),
            reference: String::new(),
        };
        assert_eq!(credential(Some(&inline)), "inline …abcd");
        assert_eq!(credential(None), "-");
        assert_eq!(strategy(pb::Strategy::RoundRobin.into()), "round_robin");
        assert_eq!(status_upper(pb::MemberStatus::Draining.into()), "DRAINING");
    }

    #[test]
    fn keys_show_names_and_references_only() {
        let k = |name: &str, info: pb::CredentialInfo| pb::ProviderKey {
            name: name.into(),
            credential: None,
            credential_info: Some(info),
        };
        let shown = keys(&[
            k(
                "batch",
                pb::CredentialInfo {
                    source: pb::credential_info::Source::Reference.into(),
                    fingerprint: String::new(),
                    reference: "env:SWITCHYARD_CRED_B".into(),
                },
            ),
            k(
                "sealed",
                pb::CredentialInfo {
                    source: pb::credential_info::Source::Inline.into(),
                    fingerprint: "...wxyz".into(),
                    reference: String::new(),
                },
            ),
        ]);
        assert_eq!(
            shown,
            "batch (env:SWITCHYARD_CRED_B), sealed (inline …wxyz)"
        );
        assert_eq!(keys(&[]), "-");
    }
}
