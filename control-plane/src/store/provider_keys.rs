//! A provider's further named keys (issue 18): each stored like the
//! provider's own credential — an inline secret sealed with the master key
//! (bound to the provider's id, like the provider's own), or an `env:` /
//! `file:` reference — and each its own runtime target in the data plane.
//! The provider's own credential is the key named "default".

use std::collections::HashMap;

use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, Set,
};
use switchyard_shared::credential_ref::ReferenceRules;
use uuid::Uuid;

use super::{Store, WriteTxn, pb};
use crate::entity::{member, provider, provider_key};
use crate::error::{ApiError, ApiResult};
use crate::validate::{self, DEFAULT_KEY, clip};

/// What reads show of a key: its name and credential info, never the secret.
pub(super) fn to_proto(k: &provider_key::Model) -> pb::ProviderKey {
    pb::ProviderKey {
        name: k.name.clone(),
        credential: None,
        credential_info: Some(super::providers::info_of(
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

/// Providers as the API shows them, keys included (one batched look-up).
pub(super) async fn with_keys<C: ConnectionTrait>(
    c: &C,
    rows: &[provider::Model],
) -> ApiResult<Vec<pb::Provider>> {
    let mut keys = keys_by_provider(c, rows.iter().map(|p| p.id).collect()).await?;
    Ok(rows
        .iter()
        .map(|p| {
            let mut out = super::providers::to_proto(p);
            out.keys = keys
                .remove(&p.id)
                .unwrap_or_default()
                .iter()
                .map(to_proto)
                .collect();
            out
        })
        .collect())
}

fn input(k: &pb::ProviderKey) -> Option<&pb::credential_input::Source> {
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

fn missing_credential(i: usize, name: &str) -> ApiError {
    ApiError::invalid(format!(
        "provider.keys[{i}].credential is required for the new key '{}': \
         give an inline secret or a reference (env:NAME or file:/path)",
        clip(name)
    ))
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
    if key == DEFAULT_KEY {
        return Ok(Some(key.to_owned()));
    }
    let names: Vec<String> = keys_by_provider(c, vec![provider.id])
        .await?
        .remove(&provider.id)
        .unwrap_or_default()
        .into_iter()
        .map(|k| k.name)
        .collect();
    if names.iter().any(|n| n == key) {
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

impl Store {
    /// Replaces a provider's keys with `keys` (in the write's transaction).
    /// A key named again with no credential keeps its stored one; a new
    /// key needs one. A key a member is pinned to cannot go.
    pub(super) async fn replace_keys(
        &self,
        w: &WriteTxn,
        provider: &provider::Model,
        keys: &[pb::ProviderKey],
    ) -> ApiResult<()> {
        validate::key_names("provider.keys", keys.iter().map(|k| k.name.as_str()))?;
        let mut stored: HashMap<String, provider_key::Model> =
            keys_by_provider(&w.txn, vec![provider.id])
                .await?
                .remove(&provider.id)
                .unwrap_or_default()
                .into_iter()
                .map(|k| (k.name.clone(), k))
                .collect();
        let mut rows = Vec::with_capacity(keys.len());
        for (i, k) in keys.iter().enumerate() {
            let field = format!("provider.keys[{i}].credential");
            let kept = stored.remove(&k.name);
            let row = match (input(k), kept) {
                (Some(_), kept) => {
                    let cred = self.store_credential(&field, provider.id, k.credential.as_ref())?;
                    provider_key::Model {
                        id: kept.map_or_else(Uuid::now_v7, |m| m.id),
                        provider_id: provider.id,
                        name: k.name.clone(),
                        position: 0,
                        credential_source: cred.source.to_owned(),
                        credential_sealed: cred.sealed,
                        credential_reference: cred.reference,
                        credential_fingerprint: cred.fingerprint,
                    }
                }
                (None, Some(kept)) => kept,
                (None, None) => return Err(missing_credential(i, &k.name)),
            };
            rows.push(provider_key::Model {
                position: i32::try_from(i).unwrap_or(i32::MAX),
                ..row
            });
        }
        // What is left in `stored` goes: refuse while a member is pinned to it.
        if !stored.is_empty() {
            let gone: Vec<String> = stored.into_keys().collect();
            let pinned = member::Entity::find()
                .filter(member::Column::ProviderId.eq(provider.id))
                .filter(member::Column::Key.is_in(gone))
                .order_by_asc(member::Column::Id)
                .all(&w.txn)
                .await?;
            if !pinned.is_empty() {
                let users = super::members::with_names(&w.txn, &pinned)
                    .await?
                    .into_iter()
                    .map(|m| {
                        format!(
                            "member {}/{}/{} ({}) uses key '{}'",
                            m.pool_name, m.provider_name, m.upstream_model, m.id, m.key
                        )
                    })
                    .collect::<Vec<_>>();
                return Err(ApiError::FailedPrecondition(format!(
                    "provider '{}': cannot remove a key still in use: {}; \
                     point those members at another key (member.key) or delete them first",
                    provider.name,
                    users.join("; ")
                )));
            }
        }
        provider_key::Entity::delete_many()
            .filter(provider_key::Column::ProviderId.eq(provider.id))
            .exec(&w.txn)
            .await?;
        for r in rows {
            provider_key::ActiveModel {
                id: Set(r.id),
                provider_id: Set(r.provider_id),
                name: Set(r.name),
                position: Set(r.position),
                credential_source: Set(r.credential_source),
                credential_sealed: Set(r.credential_sealed),
                credential_reference: Set(r.credential_reference),
                credential_fingerprint: Set(r.credential_fingerprint),
            }
            .insert(&w.txn)
            .await?;
        }
        Ok(())
    }
}
