//! The whole configuration as one document: what ExportConfig gives and
//! ApplyConfig compares against, and each resource's fields as text, with
//! defaults applied, so a desired and a stored resource compare field by
//! field.

use std::collections::BTreeMap;

use sea_orm::{ConnectionTrait, EntityTrait, QueryOrder};

use super::{Store, current_revision, members, pb, pools, providers, routes};
use crate::entity::{member, pool, provider, route};
use crate::error::{ApiError, ApiResult};

/// The stored configuration, as the API shows it (ids included).
pub(super) struct Stored {
    pub providers: Vec<pb::Provider>,
    pub pools: Vec<pb::Pool>,
    /// With `pool_name` and `provider_name` filled in.
    pub members: Vec<pb::Member>,
    pub routes: Vec<pb::Route>,
}

/// Reads every resource (inside the caller's transaction).
pub(super) async fn load<C: ConnectionTrait>(c: &C) -> ApiResult<Stored> {
    let providers = provider::Entity::find()
        .order_by_asc(provider::Column::Name)
        .all(c)
        .await?;
    let pools = pool::Entity::find()
        .order_by_asc(pool::Column::Name)
        .all(c)
        .await?;
    let member_rows = member::Entity::find()
        .order_by_asc(member::Column::Id)
        .all(c)
        .await?;
    let route_rows = route::Entity::find()
        .order_by_asc(route::Column::Name)
        .all(c)
        .await?;
    Ok(Stored {
        providers: providers::with_keys(c, &providers).await?,
        pools: pools.iter().map(pools::to_proto).collect(),
        members: members::with_names(c, &member_rows).await?,
        routes: routes::with_tiers(c, &route_rows).await?,
    })
}

/// A member's identity in a document: pool, provider and upstream model.
pub(super) fn member_key(pool: &str, provider: &str, model: &str) -> String {
    format!("{pool}/{provider}/{model}")
}

impl Store {
    /// The whole config at one revision, in the shape ApplyConfig takes.
    pub async fn export_config(&self) -> ApiResult<pb::ExportConfigResponse> {
        // One consistent read, so the document and its revision agree.
        let txn = self.read_txn().await?;
        let revision = current_revision(&txn).await?;
        let stored = load(&txn).await?;
        txn.commit().await?;
        Ok(pb::ExportConfigResponse {
            config: Some(export(stored)),
            revision,
        })
    }
}

/// A stored reference as a document gives it; None for an inline secret.
fn reference_input(c: &pb::CredentialInfo) -> Option<pb::CredentialInput> {
    use pb::credential_info::Source;
    (c.source == Source::Reference as i32).then(|| pb::CredentialInput {
        source: Some(pb::credential_input::Source::Reference(c.reference.clone())),
    })
}

/// Strips what a document does not carry: ids, etags, times, output-only
/// fields and inline credentials (apply keeps a credential left out).
fn export(s: Stored) -> pb::ConfigDocument {
    let providers = s
        .providers
        .into_iter()
        .map(|p| {
            let credential = p.credential_info.as_ref().and_then(reference_input);
            // Keys by name, with their reference; an inline key by name only.
            let keys = p
                .keys
                .into_iter()
                .map(|k| pb::ProviderKey {
                    credential: k.credential_info.as_ref().and_then(reference_input),
                    name: k.name,
                    credential_info: None,
                })
                .collect();
            pb::Provider {
                name: p.name,
                kind: p.kind,
                base_url: p.base_url,
                credential,
                extra_headers: p.extra_headers,
                timeouts: p.timeouts,
                enabled: p.enabled,
                keys,
                ..Default::default()
            }
        })
        .collect();
    let pools = s
        .pools
        .into_iter()
        .map(|p| pb::Pool {
            name: p.name,
            strategy: p.strategy,
            failover: p.failover,
            enabled: p.enabled,
            description: p.description,
            allow_request_extra: p.allow_request_extra,
            ..Default::default()
        })
        .collect();
    let mut members: Vec<pb::Member> = s
        .members
        .into_iter()
        .map(|m| pb::Member {
            pool: m.pool_name,
            provider: m.provider_name,
            upstream_model: m.upstream_model,
            weight: m.weight,
            priority: m.priority,
            status: m.status,
            rpm_limit: m.rpm_limit,
            tpm_limit: m.tpm_limit,
            max_output_tokens: m.max_output_tokens,
            max_concurrency: m.max_concurrency,
            context_tokens: m.context_tokens,
            key: m.key,
            ..Default::default()
        })
        .collect();
    members.sort_by(|a, b| {
        (&a.pool, &a.provider, &a.upstream_model).cmp(&(&b.pool, &b.provider, &b.upstream_model))
    });
    let routes = s
        .routes
        .into_iter()
        .map(|r| pb::Route {
            name: r.name,
            tiers: r.tiers,
            enabled: r.enabled,
            description: r.description,
            ..Default::default()
        })
        .collect();
    pb::ConfigDocument {
        providers,
        pools,
        members,
        routes,
    }
}

/// A resource's compared fields as `(field, value)`, defaults applied.
pub(super) type Fields = Vec<(&'static str, String)>;

fn on(v: Option<bool>) -> String {
    v.unwrap_or(true).to_string()
}

fn limit(v: Option<u64>) -> String {
    v.map_or_else(|| "none".to_owned(), |n| n.to_string())
}

pub(super) fn provider_fields(p: &pb::Provider) -> ApiResult<Fields> {
    let kind = pb::ProviderKind::try_from(p.kind).unwrap_or(pb::ProviderKind::Unspecified);
    let kind = providers::kind_to_str(kind)?;
    let headers: BTreeMap<&String, &String> = p.extra_headers.iter().collect();
    let headers = headers
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ");
    let t = p.timeouts.unwrap_or_default();
    Ok(vec![
        ("kind", kind.to_owned()),
        ("base_url", p.base_url.clone()),
        ("extra_headers", headers),
        ("timeouts.connect_ms", t.connect_ms.to_string()),
        ("timeouts.first_byte_ms", t.first_byte_ms.to_string()),
        ("timeouts.request_ms", t.request_ms.to_string()),
        ("enabled", on(p.enabled)),
    ])
}

/// What a stored provider's credential looks like in a diff (never the secret).
pub(super) fn stored_credential(p: &pb::Provider) -> String {
    info_text(p.credential_info.as_ref())
}

fn info_text(c: Option<&pb::CredentialInfo>) -> String {
    use pb::credential_info::Source;
    match c {
        Some(c) if c.source == Source::Reference as i32 => c.reference.clone(),
        Some(c) if c.source == Source::Inline as i32 => format!("inline {}", c.fingerprint),
        _ => "none".to_owned(),
    }
}

/// A provider's keys in a diff: `a=env:X, b=inline ...abcd` (never a
/// secret). A key given without a credential shows the stored key's of
/// that name (the write keeps it).
pub(super) fn keys_text(keys: &[pb::ProviderKey], stored: &[pb::ProviderKey]) -> String {
    use pb::credential_input::Source;
    keys.iter()
        .map(|k| {
            let cred = match k.credential.as_ref().and_then(|c| c.source.as_ref()) {
                Some(Source::Reference(r)) => r.clone(),
                Some(Source::Inline(_)) => "inline".to_owned(),
                // A stored key shows its own info; a desired one without
                // a credential, the stored key's of that name.
                None => info_text(k.credential_info.as_ref().or_else(|| {
                    stored
                        .iter()
                        .find(|s| s.name == k.name)
                        .and_then(|s| s.credential_info.as_ref())
                })),
            };
            format!("{}={cred}", k.name)
        })
        .collect::<Vec<_>>()
        .join(", ")
}

pub(super) fn pool_fields(p: &pb::Pool) -> ApiResult<Fields> {
    let strategy = pb::Strategy::try_from(p.strategy).map_err(|_| {
        ApiError::invalid(format!("pool.strategy {} is not a strategy", p.strategy))
    })?;
    let f = match p.failover {
        Some(f) => pools::normalize_failover(f)?,
        None => pools::default_failover(),
    };
    Ok(vec![
        ("strategy", pools::strategy_to_str(strategy).to_owned()),
        (
            "failover.transient_retries",
            f.transient_retries.to_string(),
        ),
        (
            "failover.failure_threshold",
            f.failure_threshold.to_string(),
        ),
        ("failover.cooldown_base_ms", f.cooldown_base_ms.to_string()),
        ("failover.cooldown_max_ms", f.cooldown_max_ms.to_string()),
        (
            "failover.advance_on_permanent",
            f.advance_on_permanent.to_string(),
        ),
        ("enabled", on(p.enabled)),
        ("description", p.description.clone()),
        ("allow_request_extra", on(p.allow_request_extra)),
    ])
}

pub(super) fn member_fields(m: &pb::Member) -> ApiResult<Fields> {
    let status = pb::MemberStatus::try_from(m.status).map_err(|_| {
        ApiError::invalid(format!("member.status {} is not a member status", m.status))
    })?;
    Ok(vec![
        (
            "weight",
            (if m.weight == 0 { 1 } else { m.weight }).to_string(),
        ),
        ("priority", m.priority.to_string()),
        ("status", members::status_to_str(status).to_owned()),
        ("rpm_limit", limit(m.rpm_limit)),
        ("tpm_limit", limit(m.tpm_limit)),
        (
            "max_output_tokens",
            limit(m.max_output_tokens.map(u64::from)),
        ),
        ("max_concurrency", limit(m.max_concurrency.map(u64::from))),
        ("context_tokens", limit(m.context_tokens)),
        (
            "key",
            if m.key.is_empty() {
                "every".to_owned()
            } else {
                m.key.clone()
            },
        ),
    ])
}

/// A tier as text: `pool:coding`, `direct:openai/gpt-4o (backup)`,
/// `pool:vision when images`.
pub(super) fn tier_text(t: &pb::RouteTier) -> String {
    use pb::route_tier::Target;
    let mut out = match &t.target {
        Some(Target::Pool(p)) => format!("pool:{p}"),
        Some(Target::Direct(d)) => format!("direct:{d}"),
        None => "none".to_owned(),
    };
    if t.backup {
        out.push_str(" (backup)");
    }
    let when = condition_text(t.when.as_ref());
    if !when.is_empty() {
        out.push_str(" when ");
        out.push_str(&when);
    }
    out
}

/// A tier's condition as text: `images+tools+prompt>=32000`; empty when it
/// asks nothing (the tier takes every request).
pub fn condition_text(c: Option<&pb::TierCondition>) -> String {
    let Some(c) = c else {
        return String::new();
    };
    let mut parts = Vec::new();
    if c.images {
        parts.push("images".to_owned());
    }
    if c.reasoning {
        parts.push("reasoning".to_owned());
    }
    if c.tools {
        parts.push("tools".to_owned());
    }
    if c.min_prompt_tokens > 0 {
        parts.push(format!("prompt>={}", c.min_prompt_tokens));
    }
    parts.join("+")
}

pub(super) fn route_fields(r: &pb::Route) -> Fields {
    let tiers = r.tiers.iter().map(tier_text).collect::<Vec<_>>().join(", ");
    vec![
        ("tiers", tiers),
        ("enabled", on(r.enabled)),
        ("description", r.description.clone()),
    ]
}
