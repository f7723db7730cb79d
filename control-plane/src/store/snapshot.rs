//! The resolved snapshot (everything at one revision) and the change history
//! kept in the outbox.

use std::collections::HashMap;

use sea_orm::{
    AccessMode, ColumnTrait, DatabaseBackend, EntityTrait, IsolationLevel, QueryFilter, QueryOrder,
    QuerySelect, TransactionTrait,
};
use switchyard_shared::change::ChangeMessage;
use uuid::Uuid;

use super::{Store, current_revision, pb, timestamp};
use crate::entity::{caller, change_outbox, member, pool, provider, provider_key, route};
use crate::error::{ApiError, ApiResult};

/// Timeouts a provider gets when it sets none (milliseconds).
pub const DEFAULT_CONNECT_MS: u32 = 5_000;
pub const DEFAULT_FIRST_BYTE_MS: u32 = 30_000;
pub const DEFAULT_REQUEST_MS: u32 = 600_000;

fn or_default(v: i32, d: u32) -> u32 {
    match u32::try_from(v) {
        Ok(0) | Err(_) => d,
        Ok(n) => n,
    }
}

/// A stored credential as workers get it: info, and the sealed secret only
/// in their copy.
fn credential(
    info: pb::CredentialInfo,
    sealed: Option<Vec<u8>>,
    with_sealed: bool,
) -> pb::SnapshotCredential {
    pb::SnapshotCredential {
        info: Some(info),
        sealed: if with_sealed {
            sealed.unwrap_or_default()
        } else {
            Vec::new()
        },
    }
}

fn snapshot_provider(
    m: provider::Model,
    keys: Vec<provider_key::Model>,
    with_sealed: bool,
) -> pb::SnapshotProvider {
    let info = super::credentials::credential_info(&m);
    let headers = super::providers::headers(&m);
    pb::SnapshotProvider {
        id: m.id.to_string(),
        kind: super::providers::kind_from_str(&m.kind).into(),
        base_url: m.base_url,
        credential: Some(credential(info, m.credential_sealed, with_sealed)),
        extra_headers: headers,
        timeouts: Some(pb::Timeouts {
            connect_ms: or_default(m.connect_timeout_ms, DEFAULT_CONNECT_MS),
            first_byte_ms: or_default(m.first_byte_timeout_ms, DEFAULT_FIRST_BYTE_MS),
            request_ms: or_default(m.request_timeout_ms, DEFAULT_REQUEST_MS),
        }),
        enabled: m.enabled,
        name: m.name,
        // Sealed like the provider's own credential: with the provider's id.
        keys: keys
            .into_iter()
            .map(|k| {
                let info = super::credentials::info_of(
                    &k.credential_source,
                    k.credential_fingerprint.as_ref(),
                    k.credential_reference.as_ref(),
                );
                pb::SnapshotProviderKey {
                    name: k.name,
                    credential: Some(credential(info, k.credential_sealed, with_sealed)),
                }
            })
            .collect(),
    }
}

impl Store {
    /// A read-only transaction that sees one consistent state: Postgres
    /// needs REPEATABLE READ for that; SQLite transactions are already
    /// serialisable.
    pub(super) async fn read_txn(&self) -> ApiResult<sea_orm::DatabaseTransaction> {
        Ok(match self.db().get_database_backend() {
            DatabaseBackend::Postgres => {
                self.db()
                    .begin_with_config(
                        Some(IsolationLevel::RepeatableRead),
                        Some(AccessMode::ReadOnly),
                    )
                    .await?
            }
            _ => self.db().begin().await?,
        })
    }

    /// Everything at one revision. `with_sealed` includes sealed inline
    /// credentials (only for the copy workers load from Redis).
    pub async fn snapshot(&self, with_sealed: bool) -> ApiResult<pb::Snapshot> {
        let txn = self.read_txn().await?;
        let revision = current_revision(&txn).await?;
        let providers = provider::Entity::find()
            .order_by_asc(provider::Column::Name)
            .all(&txn)
            .await?;
        let mut keys =
            super::provider_keys::keys_by_provider(&txn, providers.iter().map(|p| p.id).collect())
                .await?;
        let pools = pool::Entity::find()
            .order_by_asc(pool::Column::Name)
            .all(&txn)
            .await?;
        let members = member::Entity::find()
            .order_by_asc(member::Column::Id)
            .all(&txn)
            .await?;
        let routes = route::Entity::find()
            .order_by_asc(route::Column::Name)
            .all(&txn)
            .await?;
        let mut tiers =
            super::routes::tiers_by_route(&txn, routes.iter().map(|r| r.id).collect()).await?;
        let callers = caller::Entity::find()
            .order_by_asc(caller::Column::Name)
            .all(&txn)
            .await?;
        txn.commit().await?;

        let provider_names: HashMap<Uuid, String> =
            providers.iter().map(|p| (p.id, p.name.clone())).collect();
        let mut by_pool: HashMap<Uuid, Vec<pb::SnapshotMember>> = HashMap::new();
        for m in members {
            by_pool
                .entry(m.pool_id)
                .or_default()
                .push(pb::SnapshotMember {
                    id: m.id.to_string(),
                    provider_id: m.provider_id.to_string(),
                    provider_name: provider_names
                        .get(&m.provider_id)
                        .cloned()
                        .unwrap_or_default(),
                    upstream_model: m.upstream_model,
                    weight: u32::try_from(m.weight).unwrap_or(1),
                    priority: m.priority,
                    status: super::members::status_from_str(&m.status).into(),
                    rpm_limit: super::members::limit_out(m.rpm_limit),
                    tpm_limit: super::members::limit_out(m.tpm_limit),
                    max_output_tokens: super::members::max_output_out(m.max_output_tokens),
                    max_concurrency: super::members::max_concurrency_out(m.max_concurrency),
                    context_tokens: super::members::limit_out(m.context_tokens),
                    key: m.key.unwrap_or_default(),
                });
        }
        Ok(pb::Snapshot {
            revision,
            generated_at: Some(timestamp(chrono::Utc::now())),
            providers: providers
                .into_iter()
                .map(|p| {
                    let k = keys.remove(&p.id).unwrap_or_default();
                    snapshot_provider(p, k, with_sealed)
                })
                .collect(),
            pools: pools
                .into_iter()
                .map(|p| pb::SnapshotPool {
                    id: p.id.to_string(),
                    strategy: super::pools::strategy_from_str(&p.strategy).into(),
                    failover: Some(super::pools::failover(&p)),
                    enabled: p.enabled,
                    members: by_pool.remove(&p.id).unwrap_or_default(),
                    allow_request_extra: Some(p.allow_request_extra),
                    name: p.name,
                })
                .collect(),
            routes: routes
                .into_iter()
                .map(|r| pb::SnapshotRoute {
                    id: r.id.to_string(),
                    tiers: tiers.remove(&r.id).unwrap_or_default(),
                    enabled: r.enabled,
                    name: r.name,
                })
                .collect(),
            // Key hashes go only where sealed credentials go: to workers.
            callers: callers
                .into_iter()
                .map(|c| super::callers::to_snapshot(c, with_sealed))
                .collect(),
        })
    }

    /// Retained changes with a revision above `since`, oldest first.
    pub async fn changes_after(&self, since: u64, limit: u64) -> ApiResult<Vec<ChangeMessage>> {
        let since = i64::try_from(since).unwrap_or(i64::MAX);
        let rows = change_outbox::Entity::find()
            .filter(change_outbox::Column::Revision.gt(since))
            .order_by_asc(change_outbox::Column::Revision)
            .limit(limit)
            .all(self.db())
            .await?;
        rows.into_iter().map(|r| decode(&r.event)).collect()
    }

    /// Publishes what the outbox holds unpublished, oldest first, through
    /// `publish` (which gets the events and a fresh snapshot). Rows are
    /// locked while publishing so two replicas never publish out of order.
    /// Returns how many events went out.
    pub async fn drain_outbox<F, Fut>(&self, batch: u64, publish: F) -> Result<usize, DrainError>
    where
        F: FnOnce(Vec<ChangeMessage>, pb::Snapshot) -> Fut,
        Fut: std::future::Future<Output = Result<(), String>>,
    {
        let txn = self.db().begin().await.map_err(ApiError::from)?;
        let rows = change_outbox::Entity::find()
            .filter(change_outbox::Column::Published.eq(false))
            .order_by_asc(change_outbox::Column::Revision)
            .limit(batch)
            .lock_exclusive()
            .all(&txn)
            .await
            .map_err(ApiError::from)?;
        if rows.is_empty() {
            return Ok(0);
        }
        let events = rows
            .iter()
            .map(|r| decode(&r.event))
            .collect::<ApiResult<Vec<_>>>()?;
        let snapshot = self.snapshot(true).await?;
        let n = events.len();
        publish(events, snapshot)
            .await
            .map_err(DrainError::Publish)?;
        let revisions: Vec<i64> = rows.iter().map(|r| r.revision).collect();
        change_outbox::Entity::update_many()
            .col_expr(
                change_outbox::Column::Published,
                sea_orm::prelude::Expr::value(true),
            )
            .filter(change_outbox::Column::Revision.is_in(revisions))
            .exec(&txn)
            .await
            .map_err(ApiError::from)?;
        txn.commit().await.map_err(ApiError::from)?;
        Ok(n)
    }

    /// Deletes published history older than the newest `keep` revisions.
    pub async fn prune_outbox(&self, keep: u64) -> ApiResult<u64> {
        let latest = i64::try_from(self.revision().await?).unwrap_or(i64::MAX);
        let floor = latest.saturating_sub(i64::try_from(keep).unwrap_or(i64::MAX));
        let res = change_outbox::Entity::delete_many()
            .filter(change_outbox::Column::Published.eq(true))
            .filter(change_outbox::Column::Revision.lte(floor))
            .exec(self.db())
            .await?;
        Ok(res.rows_affected)
    }
}

fn decode(v: &serde_json::Value) -> ApiResult<ChangeMessage> {
    serde_json::from_value(v.clone())
        .map_err(|e| ApiError::Internal(format!("bad outbox event: {e}")))
}

/// Why a drain stopped.
#[derive(Debug, thiserror::Error)]
pub enum DrainError {
    #[error(transparent)]
    Store(#[from] ApiError),
    #[error("publish: {0}")]
    Publish(String),
}
