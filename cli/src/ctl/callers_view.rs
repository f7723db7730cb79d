//! How callers read: `get callers` (table, wide, JSON/YAML) and `describe
//! caller`. A key shows only as its first characters (`sy_AbCd1234…`).

use std::collections::BTreeMap;

use serde_json::{Value, json};
use switchyard_proto::v1 as pb;

use super::client::{Cp, get, one, pages};
use super::output::{self, Table, dash, field, on, stamps};

/// The shown start of a key, never more: `sy_AbCd1234…`.
pub fn key_prefix(c: &pb::Caller) -> String {
    let shown: String = c
        .key_prefix
        .chars()
        .take(switchyard_shared::caller_key::SHOWN)
        .collect();
    if shown.is_empty() {
        "-".into()
    } else {
        format!("{shown}…")
    }
}

pub(super) fn models(ms: &[String]) -> String {
    dash(&ms.join(",")).into()
}

pub(super) fn yes(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

pub(super) fn none_or(v: Option<u64>) -> String {
    v.map_or_else(|| "none".into(), |v| v.to_string())
}

fn labels(c: &pb::Caller, sep: &str) -> String {
    let sorted: BTreeMap<_, _> = c.labels.iter().collect();
    let all: Vec<String> = sorted.iter().map(|(k, v)| format!("{k}={v}")).collect();
    dash(&all.join(sep)).into()
}

pub(super) fn never(t: Option<&prost_types::Timestamp>) -> String {
    t.map_or_else(|| "never".into(), ToString::to_string)
}

/// `in 3d 4h`, `in 12m 5s`, or `passed`.
fn from_now(t: &prost_types::Timestamp, now_ms: i64) -> String {
    let secs = t.seconds.saturating_sub(now_ms / 1000);
    let (d, h, m, s) = (
        secs / 86400,
        secs % 86400 / 3600,
        secs % 3600 / 60,
        secs % 60,
    );
    match secs {
        ..=0 => "passed".into(),
        86400.. => format!("in {d}d {h}h"),
        3600.. => format!("in {h}h {m}m"),
        _ => format!("in {m}m {s}s"),
    }
}

pub async fn list(cp: &Cp, page_size: u32) -> anyhow::Result<Vec<pb::Caller>> {
    pages(|page_token| {
        let mut cp = cp.clone();
        async move {
            let r = cp
                .list_callers(pb::ListCallersRequest {
                    page_size,
                    page_token,
                })
                .await?
                .into_inner();
            Ok((r.callers, r.next_page_token))
        }
    })
    .await
}

pub fn table(cs: &[pb::Caller], wide: bool) -> Option<Table> {
    let mut cols = vec![
        "NAME", "MODELS", "DIRECT", "RPM", "TPM", "DAILY", "MONTHLY", "EXPIRES", "ENABLED", "KEY",
    ];
    if wide {
        cols.extend([
            "LABELS",
            "CERTIFICATE_SUBJECT",
            "PREVIOUS_KEY_UNTIL",
            "ETAG",
        ]);
    }
    let mut t = Table::new(&cols);
    for c in cs {
        let mut row = vec![
            c.name.clone(),
            models(&c.models),
            yes(c.allow_direct).into(),
            output::limit(c.rpm_limit),
            output::limit(c.tpm_limit),
            output::limit(c.daily_token_budget),
            output::limit(c.monthly_token_budget),
            never(c.expire_time.as_ref()),
            on(c.enabled).into(),
            key_prefix(c),
        ];
        if wide {
            row.extend([
                labels(c, ","),
                dash(&c.certificate_subject).into(),
                output::time(c.previous_key_expire_time.as_ref()),
                c.etag.clone(),
            ]);
        }
        t.row(row);
    }
    (!cs.is_empty()).then_some(t)
}

pub fn json(c: &pb::Caller) -> Value {
    let time = |t: Option<&prost_types::Timestamp>| t.map(ToString::to_string);
    json!({
        "id": c.id,
        "name": c.name,
        "description": c.description,
        "enabled": c.enabled.unwrap_or(true),
        "models": c.models,
        "allow_direct": c.allow_direct,
        "rpm_limit": c.rpm_limit,
        "tpm_limit": c.tpm_limit,
        "daily_token_budget": c.daily_token_budget,
        "monthly_token_budget": c.monthly_token_budget,
        "expire_time": time(c.expire_time.as_ref()),
        "labels": c.labels.iter().collect::<BTreeMap<_, _>>(),
        "certificate_subject": c.certificate_subject,
        "key_prefix": c.key_prefix.chars().take(switchyard_shared::caller_key::SHOWN).collect::<String>(),
        "previous_key_expire_time": time(c.previous_key_expire_time.as_ref()),
        "etag": c.etag,
        "create_time": time(c.create_time.as_ref()),
        "update_time": time(c.update_time.as_ref()),
    })
}

pub async fn describe(cp: &Cp, name: &str) -> anyhow::Result<String> {
    let c = one(cp.clone().get_caller(get(name)).await)?;
    let now = output::now_ms();
    let mut out = String::new();
    field(&mut out, "Name", &c.name);
    field(&mut out, "ID", &c.id);
    field(&mut out, "Description", dash(&c.description));
    field(&mut out, "Enabled", on(c.enabled));
    let scope = match &c.models[..] {
        [] => "none (it can only list models)".to_owned(),
        [all] if all == "*" => "* (every pool and route)".to_owned(),
        ms => ms.join(", "),
    };
    field(&mut out, "Models", scope);
    field(&mut out, "Direct", yes(c.allow_direct));
    let (rpm, tpm) = (none_or(c.rpm_limit), none_or(c.tpm_limit));
    field(&mut out, "Rate limits", format!("rpm {rpm}, tpm {tpm}"));
    let (day, month) = (
        none_or(c.daily_token_budget),
        none_or(c.monthly_token_budget),
    );
    field(
        &mut out,
        "Token budget",
        format!("daily {day}, monthly {month}"),
    );
    let expires = match &c.expire_time {
        Some(t) => format!("{t} ({})", from_now(t, now)),
        None => "never".into(),
    };
    field(&mut out, "Expires", expires);
    field(&mut out, "Key", key_prefix(&c));
    let previous = match &c.previous_key_expire_time {
        Some(t) if from_now(t, now) != "passed" => {
            format!("works until {t} ({})", from_now(t, now))
        }
        Some(t) => format!("refused since {t}"),
        None => "none".into(),
    };
    field(&mut out, "Previous key", previous);
    field(&mut out, "Cert subject", dash(&c.certificate_subject));
    field(&mut out, "Labels", labels(&c, ", "));
    stamps(
        &mut out,
        &c.etag,
        c.create_time.as_ref(),
        c.update_time.as_ref(),
    );
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_show_only_their_prefix() {
        let mut c = pb::Caller {
            key_prefix: "sy_AbCd1234".into(),
            ..Default::default()
        };
        assert_eq!(key_prefix(&c), "sy_AbCd1234…");
        // A server that sent more still shows no more.
        c.key_prefix = "sy_AbCd1234EfGh5678".into();
        assert_eq!(key_prefix(&c), "sy_AbCd1234…");
        c.key_prefix.clear();
        assert_eq!(key_prefix(&c), "-");
        let t = prost_types::Timestamp {
            seconds: 100_000,
            nanos: 0,
        };
        assert_eq!(from_now(&t, 0), "in 1d 3h");
        assert_eq!(from_now(&t, 100_000_000), "passed");
    }
}
