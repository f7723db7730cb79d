//! ApplyConfig's checks of a document on its own, before any write: names
//! present and unique, credentials (the provider's and its keys') as
//! references only, and — with prune — every reference declared.

use std::collections::HashSet;

use super::document::member_key;
use super::pb;
use crate::error::{ApiError, ApiResult};
use crate::validate::clip;

/// Checks a document on its own: names present and unique, members and
/// tiers naming something, credentials as references only, and — with
/// prune — every reference declared in the document itself.
pub(super) fn check_document(doc: &pb::ConfigDocument, prune: bool) -> ApiResult<()> {
    fn unique<'a>(kind: &str, names: impl Iterator<Item = &'a str>) -> ApiResult<()> {
        let mut seen = HashSet::new();
        for (i, n) in names.enumerate() {
            if n.is_empty() {
                return Err(ApiError::invalid(format!("{kind}[{i}] needs a name")));
            }
            if !seen.insert(n) {
                return Err(ApiError::invalid(format!(
                    "{kind}: '{}' appears more than once",
                    clip(n)
                )));
            }
        }
        Ok(())
    }
    unique("providers", doc.providers.iter().map(|p| p.name.as_str()))?;
    unique(
        "pools and routes",
        doc.pools
            .iter()
            .map(|p| p.name.as_str())
            .chain(doc.routes.iter().map(|r| r.name.as_str())),
    )?;
    for p in &doc.providers {
        let inline = |c: Option<&pb::CredentialInput>| {
            matches!(
                c.and_then(|c| c.source.as_ref()),
                Some(pb::credential_input::Source::Inline(_))
            )
        };
        if inline(p.credential.as_ref()) || p.keys.iter().any(|k| inline(k.credential.as_ref())) {
            return Err(ApiError::invalid(format!(
                "provider '{}': a config document takes credential references only \
                 (env:NAME or file:/path); set an inline secret with UpdateProvider, \
                 or leave credential out to keep the stored one",
                clip(&p.name)
            )));
        }
    }
    let mut keys = HashSet::new();
    for (i, m) in doc.members.iter().enumerate() {
        if m.pool.is_empty() || m.provider.is_empty() || m.upstream_model.is_empty() {
            return Err(ApiError::invalid(format!(
                "members[{i}] needs pool, provider and upstream_model"
            )));
        }
        if !keys.insert(member_key(&m.pool, &m.provider, &m.upstream_model)) {
            return Err(ApiError::invalid(format!(
                "member {}: appears more than once",
                clip(&member_key(&m.pool, &m.provider, &m.upstream_model))
            )));
        }
    }
    if prune {
        let providers: HashSet<&str> = doc.providers.iter().map(|p| p.name.as_str()).collect();
        let pools: HashSet<&str> = doc.pools.iter().map(|p| p.name.as_str()).collect();
        let undeclared = |kind: &str, name: &str, by: &str| {
            ApiError::invalid(format!(
                "{by} names {kind} '{}', which the document does not declare; \
                 with prune it would be deleted: declare it, or apply without prune",
                clip(name)
            ))
        };
        for m in &doc.members {
            let by = format!(
                "member {}",
                clip(&member_key(&m.pool, &m.provider, &m.upstream_model))
            );
            if !pools.contains(m.pool.as_str()) {
                return Err(undeclared("pool", &m.pool, &by));
            }
            if !providers.contains(m.provider.as_str()) {
                return Err(undeclared("provider", &m.provider, &by));
            }
        }
        for r in &doc.routes {
            let by = format!("route '{}'", clip(&r.name));
            for t in &r.tiers {
                match &t.target {
                    Some(pb::route_tier::Target::Pool(p)) if !pools.contains(p.as_str()) => {
                        return Err(undeclared("pool", p, &by));
                    }
                    Some(pb::route_tier::Target::Direct(d)) => {
                        let provider = d.split_once('/').map_or(d.as_str(), |(p, _)| p);
                        if !providers.contains(provider) {
                            return Err(undeclared("provider", provider, &by));
                        }
                    }
                    _ => {}
                }
            }
        }
    }
    Ok(())
}
