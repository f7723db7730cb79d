//! A config document checked without a database (`switchyard validate`):
//! every rule a create makes that needs no stored state, plus the
//! document's own consistency (unique names, references it declares). The
//! rules themselves live with each resource; this only walks the document.

use std::collections::HashSet;

use super::{document::member_key, members, pb, pools, providers, routes};
use switchyard_shared::credential_ref::ReferenceRules;

use crate::validate::{DEFAULT_KEY, clip};

/// Where in the document a problem is (indexes into its lists; members
/// index the flat `members` list).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum At {
    Provider(usize),
    Pool(usize),
    Member(usize),
    Route(usize),
}

/// Every problem found, in document order.
/// Credential references are checked against `rules` when given.
pub fn check_document(
    doc: &pb::ConfigDocument,
    rules: Option<&ReferenceRules>,
) -> Vec<(At, String)> {
    let mut out = Vec::new();
    let mut names = HashSet::new();
    for (i, p) in doc.providers.iter().enumerate() {
        if let Err(e) = providers::check_alone(p, rules) {
            out.push((At::Provider(i), e.to_string()));
        }
        let inline = |c: Option<&pb::CredentialInput>| {
            matches!(
                c.and_then(|c| c.source.as_ref()),
                Some(pb::credential_input::Source::Inline(_))
            )
        };
        if inline(p.credential.as_ref()) {
            out.push((
                At::Provider(i),
                "credential: a config file takes references only (env:SWITCHYARD_CRED_NAME or file:/path)".into(),
            ));
        }
        for k in p.keys.iter().filter(|k| inline(k.credential.as_ref())) {
            out.push((
                At::Provider(i),
                format!(
                    "keys: '{}': a config file takes references only (env:SWITCHYARD_CRED_NAME or file:/path)",
                    clip(&k.name)
                ),
            ));
        }
        if !names.insert(p.name.as_str()) {
            out.push((
                At::Provider(i),
                format!("provider '{}' is declared twice", clip(&p.name)),
            ));
        }
    }
    let providers: HashSet<&str> = names;
    let mut virtual_names = HashSet::new();
    for (i, p) in doc.pools.iter().enumerate() {
        if let Err(e) = pools::check_alone(p) {
            out.push((At::Pool(i), e.to_string()));
        }
        if !virtual_names.insert(p.name.as_str()) {
            out.push((
                At::Pool(i),
                format!("pool '{}' is declared twice", clip(&p.name)),
            ));
        }
    }
    let pools: HashSet<&str> = doc.pools.iter().map(|p| p.name.as_str()).collect();
    let mut keys = HashSet::new();
    for (i, m) in doc.members.iter().enumerate() {
        if let Err(e) = members::check_alone(m) {
            out.push((At::Member(i), e.to_string()));
        }
        if !pools.contains(m.pool.as_str()) {
            out.push((
                At::Member(i),
                format!("pool '{}' is not declared in the file", clip(&m.pool)),
            ));
        }
        if !providers.contains(m.provider.as_str()) {
            out.push((
                At::Member(i),
                format!(
                    "provider '{}' is not declared in the file",
                    clip(&m.provider)
                ),
            ));
        }
        if let Some(p) = doc.providers.iter().find(|p| p.name == m.provider)
            && !m.key.is_empty()
            && m.key != DEFAULT_KEY
            && !p.keys.iter().any(|k| k.name == m.key)
        {
            out.push((
                At::Member(i),
                format!(
                    "key '{}' is not a key of provider '{}' in the file; use default or one of its keys",
                    clip(&m.key),
                    clip(&m.provider)
                ),
            ));
        }
        let key = member_key(&m.pool, &m.provider, &m.upstream_model);
        if !keys.insert(key.clone()) {
            out.push((
                At::Member(i),
                format!("member {} is declared twice", clip(&key)),
            ));
        }
    }
    for (i, r) in doc.routes.iter().enumerate() {
        if let Err(e) = routes::check_alone(r) {
            out.push((At::Route(i), e.to_string()));
        }
        if !virtual_names.insert(r.name.as_str()) {
            out.push((
                At::Route(i),
                format!(
                    "route '{}': a pool or route of that name is already declared (pools and routes share one namespace)",
                    clip(&r.name)
                ),
            ));
        }
        for (t, tier) in r.tiers.iter().enumerate() {
            use pb::route_tier::Target;
            let missing = match &tier.target {
                Some(Target::Pool(p)) if !pools.contains(p.as_str()) => Some(("pool", p.as_str())),
                Some(Target::Direct(d)) => {
                    let provider = d.split_once('/').map_or(d.as_str(), |(p, _)| p);
                    (!providers.contains(provider)).then_some(("provider", provider))
                }
                _ => None,
            };
            if let Some((kind, name)) = missing {
                out.push((
                    At::Route(i),
                    format!(
                        "route.tiers[{t}]: {kind} '{}' is not declared in the file",
                        clip(name)
                    ),
                ));
            }
        }
    }
    out
}
