//! Writing a provider's keys: the stored set replaced by a write's, each
//! credential kept, sealed or checked, and no key removed while a member is
//! pinned to it.

use std::collections::HashMap;

use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, Set};
use uuid::Uuid;

use super::provider_keys::{input, keys_by_provider};
use super::{Store, WriteTxn, pb};
use crate::entity::{member, provider, provider_key};
use crate::error::{ApiError, ApiResult};
use crate::validate::{self, clip};

fn missing_credential(i: usize, name: &str) -> ApiError {
    ApiError::invalid(format!(
        "provider.keys[{i}].credential is required for the new key '{}': \
         give an inline secret or a reference (env:NAME or file:/path)",
        clip(name)
    ))
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
