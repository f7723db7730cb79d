//! A provider's further named keys (issue 18): each stored like the
//! provider's own credential — an inline secret sealed with the master key
//! (bound to the provider's id, like the provider's own), or an `env:` /
//! `file:` reference — and each its own runtime target in the data plane.
//! The provider's own credential is the key named "default". Here: how
//! reads show them and the checks on them; a write replaces them in
//! `provider_keys_write`.

use std::collections::HashMap;

use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder};
use switchyard_shared::credential_ref::ReferenceRules;
use uuid::Uuid;

use super::pb;
use crate::entity::{provider, provider_key};
use crate::error::{ApiError, ApiResult};
use crate::validate::{self, DEFAULT_KEY, clip};

/// What reads show of a key: its name and credential info, never the secret.
pub(super) fn to_proto(k: &provider_key::Model) -> pb::ProviderKey {
    pb::ProviderKey {
        name: k.name.clone(),
        credential: None,
        credential_info: Some(super::credentials::info_of(
            &k.credential_source,
            k.credential_fingerprint.as_ref(),
            k.credential_reference.as_ref(),
        )),
    }
}

/// The keys of the given providers, in their given order, keyed by provider.
pub(super) async fn keys_by_provider<C: ConnectionTrait>(
    c: &C,
    provider_ids: Vec<Uuid>,
) -> ApiResult<HashMap<Uuid, Vec<provider_key::Model>>> {
    let rows = provider_key::Entity::find()
        .filter(provider_key::Column::ProviderId.is_in(provider_ids))
        .order_by_asc(provider_key::Column::ProviderId)
        .order_by_asc(provider_key::Column::Position)
        .all(c)
        .await?;
    let mut out: HashMap<Uuid, Vec<provider_key::Model>> = HashMap::new();
    for k in rows {
        out.entry(k.provider_id).or_default().push(k);
    }
    Ok(out)
}

pub(super) fn input(k: &pb::ProviderKey) -> Option<&pb::credential_input::Source> {
    k.credential.as_ref().and_then(|c| c.source.as_ref())
}

/// The checks on `provider.keys` that need no database. References are
/// checked against `rules` when given. A key without a credential passes
/// here (a document names a stored inline key that way); the write refuses
/// it if no stored key of that name has one.
pub(super) fn check_alone(
    keys: &[pb::ProviderKey],
    rules: Option<&ReferenceRules>,
) -> ApiResult<()> {
    use pb::credential_input::Source;
    validate::key_names("provider.keys", keys.iter().map(|k| k.name.as_str()))?;
    for (i, k) in keys.iter().enumerate() {
        let field = format!("provider.keys[{i}].credential");
        match input(k) {
            None => {}
            Some(Source::Inline(s)) => validate::inline_secret(&format!("{field}.inline"), s)?,
            Some(Source::Reference(r)) => {
                if let Some(rules) = rules {
                    validate::credential_reference(&format!("{field}.reference"), r, rules)?;
                }
            }
        }
    }
    Ok(())
}

/// A member's `key`, checked against its provider's keys: None (every
/// key), "default" (the provider's own credential), or one of its names.
pub(super) async fn member_key<C: ConnectionTrait>(
    c: &C,
    provider: &provider::Model,
    key: &str,
) -> ApiResult<Option<String>> {
    validate::member_key("member.key", key)?;
    if key.is_empty() {
        return Ok(None);
    }
    let names: Vec<String> = keys_by_provider(c, vec![provider.id])
        .await?
        .remove(&provider.id)
        .unwrap_or_default()
        .into_iter()
        .map(|k| k.name)
        .collect();
    let own = provider.credential_sealed.is_some() || provider.credential_reference.is_some();
    if key == DEFAULT_KEY && !own && !names.is_empty() {
        // Workers would refuse the member: the provider's named keys are
        // its only keys.
        return Err(ApiError::invalid(format!(
            "member.key 'default' is the provider's own credential, and provider '{}' has none; \
             use one of: {} (or leave it empty for every key)",
            provider.name,
            names.join(", ")
        )));
    }
    if key == DEFAULT_KEY || names.iter().any(|n| n == key) {
        return Ok(Some(key.to_owned()));
    }
    let mut choices = vec![DEFAULT_KEY.to_owned()];
    choices.extend(names);
    Err(ApiError::invalid(format!(
        "member.key '{}' is not a key of provider '{}'; use one of: {} (or leave it empty for every key)",
        clip(key),
        provider.name,
        choices.join(", ")
    )))
}
