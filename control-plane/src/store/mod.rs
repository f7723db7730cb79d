//! The config store: every read and write of providers, pools, members and
//! routes, in Postgres or SQLite through sea-orm.
//!
//! Every write runs in one transaction that first bumps the global revision
//! (`config_state`), then changes the rows, then appends the change to the
//! outbox. Bumping first takes the row lock, so concurrent writers — even on
//! two control-plane replicas — are serialised and revisions are handed out
//! in commit order (docs/adr/002-config-store-and-revisions.md).

mod apply;
mod apply_check;
mod callers;
mod credentials;
mod document;
mod members;
pub mod offline;
mod pools;
mod provider_keys;
mod provider_keys_write;
mod providers;
mod routes;
pub mod snapshot;

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use sea_orm::prelude::Expr;
use sea_orm::sea_query::ExprTrait as _;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseConnection, DatabaseTransaction,
    EntityTrait, QueryFilter, Set, TransactionTrait,
};
use switchyard_shared::change::{Action, ChangeMessage, Resource};
use switchyard_shared::credential_ref::ReferenceRules;
use switchyard_shared::seal::MasterKey;
use tokio::sync::Notify;
use uuid::Uuid;

use crate::entity::{change_outbox, config_state, pool, provider, route};
use crate::error::{ApiError, ApiResult};

tokio::task_local! {
    /// Who the write in progress is made by (set around each write RPC).
    pub static ACTOR: String;
}

/// Handle to the config store; cheap to clone.
#[derive(Clone)]
pub struct Store {
    db: DatabaseConnection,
    master_key: Option<MasterKey>,
    /// Which credential references a provider may store.
    credential_rules: ReferenceRules,
    committed: Arc<Notify>,
}

impl Store {
    pub fn new(
        db: DatabaseConnection,
        master_key: Option<MasterKey>,
        credential_rules: ReferenceRules,
    ) -> Self {
        Self {
            db,
            master_key,
            credential_rules,
            committed: Arc::new(Notify::new()),
        }
    }

    pub fn db(&self) -> &DatabaseConnection {
        &self.db
    }

    /// Wakes whenever a write commits (the publisher waits on it).
    pub fn committed(&self) -> Arc<Notify> {
        self.committed.clone()
    }

    /// The latest committed revision.
    pub async fn revision(&self) -> ApiResult<u64> {
        current_revision(&self.db).await
    }

    /// Starts a write: a transaction holding the bumped revision.
    async fn begin_write(&self) -> ApiResult<WriteTxn> {
        let txn = self.db.begin().await?;
        config_state::Entity::update_many()
            .col_expr(
                config_state::Column::Revision,
                Expr::col(config_state::Column::Revision).add(1),
            )
            .filter(config_state::Column::Id.eq(1))
            .exec(&txn)
            .await?;
        let revision = current_revision(&txn).await?;
        let revision =
            i64::try_from(revision).map_err(|_| ApiError::Internal("revision overflow".into()))?;
        Ok(WriteTxn {
            txn,
            revision,
            now: Utc::now(),
        })
    }

    /// Runs one write in its own transaction: begin (bumping the revision),
    /// `f`, then record its change and commit. An error rolls everything back.
    async fn write<T>(
        &self,
        f: impl AsyncFnOnce(&WriteTxn) -> ApiResult<(T, Change)>,
    ) -> ApiResult<T> {
        let w = self.begin_write().await?;
        let (out, change) = f(&w).await?;
        self.commit(w, change).await?;
        Ok(out)
    }

    /// Records the change in the outbox and commits the write.
    async fn commit(&self, w: WriteTxn, change: Change) -> ApiResult<()> {
        let msg = ChangeMessage {
            revision: u64::try_from(w.revision).unwrap_or_default(),
            resource: change.resource,
            action: change.action,
            id: change.id.to_string(),
            name: change.name,
            commit_time_ms: w.now.timestamp_millis(),
            actor: ACTOR
                .try_with(Clone::clone)
                .unwrap_or_else(|_| "system".to_owned()),
        };
        let event = serde_json::to_value(&msg).map_err(|e| ApiError::Internal(e.to_string()))?;
        change_outbox::ActiveModel {
            revision: Set(w.revision),
            event: Set(event),
            published: Set(false),
            created_at: Set(w.now),
        }
        .insert(&w.txn)
        .await?;
        w.txn.commit().await?;
        tracing::info!(
            revision = msg.revision,
            resource = ?msg.resource,
            action = ?msg.action,
            id = %msg.id,
            name = %msg.name,
            actor = %msg.actor,
            "config change committed"
        );
        self.committed.notify_one();
        Ok(())
    }

    fn master_key(&self) -> ApiResult<&MasterKey> {
        self.master_key.as_ref().ok_or_else(|| {
            ApiError::FailedPrecondition(
                "inline credentials need a master key: start the control plane with SWITCHYARD_MASTER_KEY \
                 or --master-key-file, or give a reference such as env:SWITCHYARD_CRED_OPENAI"
                    .into(),
            )
        })
    }
}

/// One write in progress. Dropping it without `Store::commit` rolls back.
struct WriteTxn {
    txn: DatabaseTransaction,
    revision: i64,
    now: DateTime<Utc>,
}

/// What a committed write changed, for the change event.
struct Change {
    resource: Resource,
    action: Action,
    id: Uuid,
    name: String,
}

impl Change {
    fn new(resource: Resource, action: Action, id: Uuid, name: impl Into<String>) -> Self {
        Self {
            resource,
            action,
            id,
            name: name.into(),
        }
    }
}

async fn current_revision<C: ConnectionTrait>(c: &C) -> ApiResult<u64> {
    let state = config_state::Entity::find_by_id(1)
        .one(c)
        .await?
        .ok_or_else(|| {
            ApiError::Internal("config_state row missing; run `switchyard migrate`".into())
        })?;
    u64::try_from(state.revision).map_err(|_| ApiError::Internal("negative revision".into()))
}

/// The etag of a resource is the revision that last changed it.
fn etag(revision: i64) -> String {
    revision.to_string()
}

/// An empty etag skips the check; any other must match.
fn check_etag(kind: &str, name: &str, given: &str, current: i64) -> ApiResult<()> {
    if given.is_empty() || given == etag(current) {
        return Ok(());
    }
    // Etags are revisions: anything else was never one this server gave.
    if given.parse::<u64>().is_err() {
        return Err(ApiError::invalid(format!(
            "etag '{}' is not one this server issued; pass the etag from a read, or none",
            crate::validate::clip(given)
        )));
    }
    Err(ApiError::Aborted(format!(
        "{kind} '{name}' was changed since etag '{}' (current etag '{current}'); read it again and retry",
        crate::validate::clip(given)
    )))
}

/// A LIKE pattern matching names that start with `prefix` (its `%`, `_`
/// and `\\` taken literally).
fn prefix_pattern(prefix: &str) -> sea_orm::sea_query::LikeExpr {
    let escaped = prefix
        .replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_");
    sea_orm::sea_query::LikeExpr::new(format!("{escaped}%")).escape('\\')
}

fn required<'a>(field: &str, value: &'a str) -> ApiResult<&'a str> {
    if value.is_empty() {
        return Err(ApiError::invalid(format!("{field} is required")));
    }
    crate::validate::lookup(field, value)?;
    Ok(value)
}

/// Provider by id or name.
async fn find_provider<C: ConnectionTrait>(
    c: &C,
    field: &str,
    key: &str,
) -> ApiResult<provider::Model> {
    let key = required(field, key)?;
    let found = match Uuid::parse_str(key) {
        Ok(id) => provider::Entity::find_by_id(id).one(c).await?,
        Err(_) => {
            provider::Entity::find()
                .filter(provider::Column::Name.eq(key))
                .one(c)
                .await?
        }
    };
    found.ok_or_else(|| {
        ApiError::not_found(format!(
            "provider '{}' not found",
            crate::validate::clip(key)
        ))
    })
}

/// Pool by id or name.
async fn find_pool<C: ConnectionTrait>(c: &C, field: &str, key: &str) -> ApiResult<pool::Model> {
    let key = required(field, key)?;
    let found = match Uuid::parse_str(key) {
        Ok(id) => pool::Entity::find_by_id(id).one(c).await?,
        Err(_) => {
            pool::Entity::find()
                .filter(pool::Column::Name.eq(key))
                .one(c)
                .await?
        }
    };
    found.ok_or_else(|| {
        ApiError::not_found(format!("pool '{}' not found", crate::validate::clip(key)))
    })
}

/// Route by id or name.
async fn find_route<C: ConnectionTrait>(c: &C, field: &str, key: &str) -> ApiResult<route::Model> {
    let key = required(field, key)?;
    let found = match Uuid::parse_str(key) {
        Ok(id) => route::Entity::find_by_id(id).one(c).await?,
        Err(_) => {
            route::Entity::find()
                .filter(route::Column::Name.eq(key))
                .one(c)
                .await?
        }
    };
    found.ok_or_else(|| {
        ApiError::not_found(format!("route '{}' not found", crate::validate::clip(key)))
    })
}

/// Pools and routes share one namespace: the virtual model names callers use.
async fn check_virtual_name_free<C: ConnectionTrait>(
    c: &C,
    field: &str,
    name: &str,
    except: Option<Uuid>,
) -> ApiResult<()> {
    let pool = pool::Entity::find()
        .filter(pool::Column::Name.eq(name))
        .one(c)
        .await?;
    if let Some(p) = pool
        && Some(p.id) != except
    {
        return Err(ApiError::AlreadyExists(format!(
            "{field}: a pool named '{}' already exists",
            crate::validate::clip(name)
        )));
    }
    let route = route::Entity::find()
        .filter(route::Column::Name.eq(name))
        .one(c)
        .await?;
    if let Some(r) = route
        && Some(r.id) != except
    {
        return Err(ApiError::AlreadyExists(format!(
            "{field}: a route named '{}' already exists",
            crate::validate::clip(name)
        )));
    }
    Ok(())
}

/// A page request, decoded.
struct Page {
    size: u64,
    after: Option<String>,
}

const PAGE_DEFAULT: u32 = 100;
const PAGE_MAX: u32 = 1000;

impl Page {
    fn parse(page_size: u32, token: &str) -> ApiResult<Self> {
        let size = match page_size {
            0 => PAGE_DEFAULT,
            n if n > PAGE_MAX => {
                return Err(ApiError::invalid(format!(
                    "page_size is {n}; the maximum is {PAGE_MAX}"
                )));
            }
            n => n,
        };
        let after = if token.is_empty() {
            None
        } else {
            let bytes = URL_SAFE_NO_PAD.decode(token).ok();
            let text = bytes.and_then(|b| String::from_utf8(b).ok());
            match text
                .as_deref()
                .and_then(|t| t.strip_prefix("after:"))
                .filter(|k| !k.chars().any(char::is_control))
            {
                Some(key) => Some(key.to_owned()),
                None => {
                    return Err(ApiError::invalid(
                        "page_token is not one this server issued; pass the next_page_token of the previous response",
                    ));
                }
            }
        };
        Ok(Self {
            size: u64::from(size),
            after,
        })
    }

    /// Rows to fetch: one more than the page, to know whether another follows.
    fn fetch(&self) -> u64 {
        self.size + 1
    }

    /// Trims the extra row and returns the token for the next page.
    fn finish<T>(&self, rows: &mut Vec<T>, key: impl Fn(&T) -> String) -> String {
        let size = usize::try_from(self.size).unwrap_or(usize::MAX);
        if rows.len() <= size {
            return String::new();
        }
        rows.truncate(size);
        rows.last()
            .map(|r| URL_SAFE_NO_PAD.encode(format!("after:{}", key(r))))
            .unwrap_or_default()
    }
}

/// The validated, de-duplicated paths of an update mask.
fn mask_paths(
    kind: &str,
    mask: Option<prost_types::FieldMask>,
    allowed: &[&str],
) -> ApiResult<Vec<String>> {
    let paths = mask.map(|m| m.paths).unwrap_or_default();
    if paths.is_empty() {
        return Err(ApiError::invalid(format!(
            "update_mask is required: list the {kind} fields to change, from: {}",
            allowed.join(", ")
        )));
    }
    let mut out: Vec<String> = Vec::with_capacity(paths.len());
    for p in paths {
        if !allowed.contains(&p.as_str()) {
            return Err(ApiError::invalid(format!(
                "update_mask path '{}' is not an updatable {kind} field; use: {}",
                crate::validate::clip(&p),
                allowed.join(", ")
            )));
        }
        if !out.contains(&p) {
            out.push(p);
        }
    }
    Ok(out)
}

fn has(paths: &[String], p: &str) -> bool {
    paths.iter().any(|x| x == p)
}

fn timestamp(t: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: i32::try_from(t.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

/// Decodes a proto enum field, naming the field and the accepted values when it is unknown.
fn proto_enum<E: TryFrom<i32> + Copy>(field: &str, value: i32, names: &[&str]) -> ApiResult<E> {
    E::try_from(value).map_err(|_| {
        ApiError::invalid(format!(
            "{field} {value} is not a known value; use one of: {}",
            names.join(", ")
        ))
    })
}

pub use callers::ALL_MODELS;
pub use document::condition_text;
pub(crate) use switchyard_proto::v1 as pb;
