//! Members: one candidate of a pool (a provider plus an upstream model id).

use std::collections::HashMap;

use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, IntoActiveModel, QueryFilter,
    QueryOrder, QuerySelect, Set,
};
use switchyard_shared::change::{Action, Resource};
use uuid::Uuid;

use super::{
    Change, Page, Store, WriteTxn, check_etag, etag, find_pool, find_provider, mask_paths, pb,
    proto_enum, timestamp,
};
use crate::entity::{member, pool, provider};
use crate::error::{ApiError, ApiResult};
use crate::validate;

const STATUS_NAMES: &[&str] = &[
    "MEMBER_STATUS_ACTIVE",
    "MEMBER_STATUS_INACTIVE",
    "MEMBER_STATUS_DRAINING",
];
const UPDATABLE: &[&str] = &[
    "upstream_model",
    "weight",
    "priority",
    "status",
    "rpm_limit",
    "tpm_limit",
    "max_output_tokens",
    "max_concurrency",
    "context_tokens",
    "key",
];

/// The largest default `max_output_tokens` a member may set.
const MAX_OUTPUT_TOKENS_MAX: u32 = 1_000_000;

pub(super) fn status_to_str(s: pb::MemberStatus) -> &'static str {
    match s {
        pb::MemberStatus::Unspecified | pb::MemberStatus::Active => "active",
        pb::MemberStatus::Inactive => "inactive",
        pb::MemberStatus::Draining => "draining",
    }
}

pub(crate) fn status_from_str(s: &str) -> pb::MemberStatus {
    match s {
        "inactive" => pb::MemberStatus::Inactive,
        "draining" => pb::MemberStatus::Draining,
        _ => pb::MemberStatus::Active,
    }
}

pub(crate) fn limit_out(v: Option<i64>) -> Option<u64> {
    v.and_then(|v| u64::try_from(v).ok())
}

/// An optional limit: unset, or `1..=max`.
pub(super) fn limit_in(field: &str, v: Option<u64>, max: u64) -> ApiResult<Option<i64>> {
    match v {
        None => Ok(None),
        Some(n) => {
            validate::range(field, n, 1, max)?;
            Ok(i64::try_from(n).ok())
        }
    }
}

/// A member's default max_tokens: unset, or `1..=1_000_000`.
pub(super) fn max_output_in(v: Option<u32>) -> ApiResult<Option<i32>> {
    match v {
        None => Ok(None),
        Some(n) => {
            validate::range("member.max_output_tokens", n, 1, MAX_OUTPUT_TOKENS_MAX)?;
            Ok(i32::try_from(n).ok())
        }
    }
}

pub(crate) fn max_output_out(v: Option<i32>) -> Option<u32> {
    v.and_then(|v| u32::try_from(v).ok())
}

/// A member's concurrency cap: unset, or `1..=100_000`.
pub(super) fn max_concurrency_in(v: Option<u32>) -> ApiResult<Option<i32>> {
    match v {
        None => Ok(None),
        Some(n) => {
            validate::range(
                "member.max_concurrency",
                n,
                1,
                validate::MAX_CONCURRENCY_MAX,
            )?;
            Ok(i32::try_from(n).ok())
        }
    }
}

pub(crate) fn max_concurrency_out(v: Option<i32>) -> Option<u32> {
    v.and_then(|v| u32::try_from(v).ok())
}

/// A member's context window: unset, or `1..=10_000_000` tokens.
pub(super) fn context_in(v: Option<u64>) -> ApiResult<Option<i64>> {
    limit_in("member.context_tokens", v, validate::CONTEXT_TOKENS_MAX)
}

fn weight_in(v: u32) -> ApiResult<i32> {
    let w = validate::range("member.weight", v, 1, 10_000)?;
    Ok(i32::try_from(w).unwrap_or(1))
}

/// The checks a create makes that need no database (offline validation).
pub(super) fn check_alone(m: &pb::Member) -> ApiResult<()> {
    validate::upstream_model("member.upstream_model", &m.upstream_model)?;
    weight_in(if m.weight == 0 { 1 } else { m.weight })?;
    validate::range("member.priority", m.priority, -1000, 1000)?;
    proto_enum::<pb::MemberStatus>("member.status", m.status, STATUS_NAMES)?;
    limit_in("member.rpm_limit", m.rpm_limit, validate::LIMIT_MAX)?;
    limit_in("member.tpm_limit", m.tpm_limit, validate::LIMIT_MAX)?;
    max_output_in(m.max_output_tokens)?;
    max_concurrency_in(m.max_concurrency)?;
    context_in(m.context_tokens)?;
    validate::member_key("member.key", &m.key)?;
    Ok(())
}

pub(super) fn to_proto(m: &member::Model, pool_name: &str, provider_name: &str) -> pb::Member {
    pb::Member {
        id: m.id.to_string(),
        pool: m.pool_id.to_string(),
        provider: m.provider_id.to_string(),
        upstream_model: m.upstream_model.clone(),
        weight: u32::try_from(m.weight).unwrap_or(1),
        priority: m.priority,
        status: status_from_str(&m.status).into(),
        rpm_limit: limit_out(m.rpm_limit),
        tpm_limit: limit_out(m.tpm_limit),
        etag: etag(m.revision),
        pool_name: pool_name.to_owned(),
        provider_name: provider_name.to_owned(),
        create_time: Some(timestamp(m.created_at)),
        update_time: Some(timestamp(m.updated_at)),
        max_output_tokens: max_output_out(m.max_output_tokens),
        max_concurrency: max_concurrency_out(m.max_concurrency),
        context_tokens: limit_out(m.context_tokens),
        key: m.key.clone().unwrap_or_default(),
    }
}

/// Members with their pool and provider names, in two batched look-ups.
pub(super) async fn with_names<C: ConnectionTrait>(
    c: &C,
    rows: &[member::Model],
) -> ApiResult<Vec<pb::Member>> {
    let pool_ids: Vec<Uuid> = rows.iter().map(|m| m.pool_id).collect();
    let provider_ids: Vec<Uuid> = rows.iter().map(|m| m.provider_id).collect();
    let pools: HashMap<Uuid, String> = pool::Entity::find()
        .filter(pool::Column::Id.is_in(pool_ids))
        .all(c)
        .await?
        .into_iter()
        .map(|p| (p.id, p.name))
        .collect();
    let providers: HashMap<Uuid, String> = provider::Entity::find()
        .filter(provider::Column::Id.is_in(provider_ids))
        .all(c)
        .await?
        .into_iter()
        .map(|p| (p.id, p.name))
        .collect();
    Ok(rows
        .iter()
        .map(|m| {
            let pool = pools.get(&m.pool_id).map_or("", String::as_str);
            let provider = providers.get(&m.provider_id).map_or("", String::as_str);
            to_proto(m, pool, provider)
        })
        .collect())
}

async fn find_member<C: ConnectionTrait>(c: &C, field: &str, id: &str) -> ApiResult<member::Model> {
    if id.is_empty() {
        return Err(ApiError::invalid(format!("{field} is required")));
    }
    validate::lookup(field, id)?;
    let uuid = Uuid::parse_str(id).map_err(|_| {
        ApiError::invalid(format!(
            "{field} '{}' is not a member id (a UUID)",
            validate::clip(id)
        ))
    })?;
    member::Entity::find_by_id(uuid)
        .one(c)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("member '{uuid}' not found")))
}

async fn check_unique<C: ConnectionTrait>(
    c: &C,
    pool: &pool::Model,
    provider: &provider::Model,
    model: &str,
    except: Option<Uuid>,
) -> ApiResult<()> {
    let existing = member::Entity::find()
        .filter(member::Column::PoolId.eq(pool.id))
        .filter(member::Column::ProviderId.eq(provider.id))
        .filter(member::Column::UpstreamModel.eq(model))
        .one(c)
        .await?;
    match existing {
        Some(m) if Some(m.id) != except => Err(ApiError::AlreadyExists(format!(
            "pool '{}' already has a member for provider '{}' and upstream model '{}' (member {})",
            pool.name,
            provider.name,
            validate::clip(model),
            m.id
        ))),
        _ => Ok(()),
    }
}

impl Store {
    pub async fn create_member(&self, m: Option<pb::Member>) -> ApiResult<pb::Member> {
        self.write(async |w| self.create_member_in(w, m).await)
            .await
    }

    pub(super) async fn create_member_in(
        &self,
        w: &WriteTxn,
        m: Option<pb::Member>,
    ) -> ApiResult<(pb::Member, Change)> {
        let m = m.ok_or_else(|| ApiError::invalid("member is required"))?;
        validate::upstream_model("member.upstream_model", &m.upstream_model)?;
        let weight = weight_in(if m.weight == 0 { 1 } else { m.weight })?;
        validate::range("member.priority", m.priority, -1000, 1000)?;
        let status = status_to_str(proto_enum("member.status", m.status, STATUS_NAMES)?);
        let rpm = limit_in("member.rpm_limit", m.rpm_limit, validate::LIMIT_MAX)?;
        let tpm = limit_in("member.tpm_limit", m.tpm_limit, validate::LIMIT_MAX)?;
        let max_output = max_output_in(m.max_output_tokens)?;
        let max_concurrency = max_concurrency_in(m.max_concurrency)?;
        let context = context_in(m.context_tokens)?;
        let id = Uuid::now_v7();
        let pool = find_pool(&w.txn, "member.pool", &m.pool).await?;
        let provider = find_provider(&w.txn, "member.provider", &m.provider).await?;
        let key = super::provider_keys::member_key(&w.txn, &provider, &m.key).await?;
        check_unique(&w.txn, &pool, &provider, &m.upstream_model, None).await?;
        let model = member::ActiveModel {
            id: Set(id),
            pool_id: Set(pool.id),
            provider_id: Set(provider.id),
            upstream_model: Set(m.upstream_model.clone()),
            weight: Set(weight),
            priority: Set(m.priority),
            status: Set(status.to_owned()),
            rpm_limit: Set(rpm),
            tpm_limit: Set(tpm),
            max_output_tokens: Set(max_output),
            max_concurrency: Set(max_concurrency),
            context_tokens: Set(context),
            key: Set(key),
            revision: Set(w.revision),
            created_at: Set(w.now),
            updated_at: Set(w.now),
        }
        .insert(&w.txn)
        .await?;
        let out = to_proto(&model, &pool.name, &provider.name);
        let label = format!("{}/{}/{}", pool.name, provider.name, model.upstream_model);
        Ok((
            out,
            Change::new(Resource::Member, Action::Created, id, label),
        ))
    }

    pub async fn get_member(&self, id: &str) -> ApiResult<pb::Member> {
        let m = find_member(self.db(), "id_or_name", id).await?;
        let mut out = with_names(self.db(), std::slice::from_ref(&m)).await?;
        out.pop()
            .ok_or_else(|| ApiError::Internal("member vanished".into()))
    }

    pub async fn list_members(
        &self,
        r: &pb::ListMembersRequest,
    ) -> ApiResult<pb::ListMembersResponse> {
        let (pool_key, provider_key) = (r.pool.as_str(), r.provider.as_str());
        let page = Page::parse(r.page_size, &r.page_token)?;
        // Member ids are UUIDv7: ordering by id is creation order.
        let mut q = member::Entity::find()
            .order_by_asc(member::Column::Id)
            .limit(page.fetch());
        if let Some(after) = &page.after {
            let after = Uuid::parse_str(after)
                .map_err(|_| ApiError::invalid("page_token is not one this server issued"))?;
            q = q.filter(member::Column::Id.gt(after));
        }
        if !pool_key.is_empty() {
            let p = find_pool(self.db(), "pool", pool_key).await?;
            q = q.filter(member::Column::PoolId.eq(p.id));
        }
        if !provider_key.is_empty() {
            let p = find_provider(self.db(), "provider", provider_key).await?;
            q = q.filter(member::Column::ProviderId.eq(p.id));
        }
        if r.status != 0 {
            let status = pb::MemberStatus::try_from(r.status).map_err(|_| {
                ApiError::invalid(format!(
                    "status {} is not a member status; use MEMBER_STATUS_ACTIVE, MEMBER_STATUS_INACTIVE or MEMBER_STATUS_DRAINING",
                    r.status
                ))
            })?;
            q = q.filter(member::Column::Status.eq(status_to_str(status)));
        }
        let mut rows = q.all(self.db()).await?;
        let next_page_token = page.finish(&mut rows, |r| r.id.to_string());
        Ok(pb::ListMembersResponse {
            members: with_names(self.db(), &rows).await?,
            next_page_token,
        })
    }

    pub async fn update_member(
        &self,
        m: Option<pb::Member>,
        mask: Option<prost_types::FieldMask>,
    ) -> ApiResult<pb::Member> {
        self.write(async |w| self.update_member_in(w, m, mask).await)
            .await
    }

    pub(super) async fn update_member_in(
        &self,
        w: &WriteTxn,
        m: Option<pb::Member>,
        mask: Option<prost_types::FieldMask>,
    ) -> ApiResult<(pb::Member, Change)> {
        let m = m.ok_or_else(|| ApiError::invalid("member is required"))?;
        if let Some(p) = mask
            .as_ref()
            .and_then(|mk| mk.paths.iter().find(|p| *p == "pool" || *p == "provider"))
        {
            return Err(ApiError::invalid(format!(
                "member.{p} cannot change; create a new member and delete this one"
            )));
        }
        let paths = mask_paths("member", mask, UPDATABLE)?;
        let cur = find_member(&w.txn, "member.id", &m.id).await?;
        let pool = pool::Entity::find_by_id(cur.pool_id).one(&w.txn).await?;
        let provider = provider::Entity::find_by_id(cur.provider_id)
            .one(&w.txn)
            .await?;
        let (Some(pool), Some(provider)) = (pool, provider) else {
            return Err(ApiError::Internal("member without pool or provider".into()));
        };
        check_etag("member", &cur.id.to_string(), &m.etag, cur.revision)?;
        let mut am = cur.clone().into_active_model();
        for path in &paths {
            match path.as_str() {
                "upstream_model" => {
                    validate::upstream_model("member.upstream_model", &m.upstream_model)?;
                    check_unique(&w.txn, &pool, &provider, &m.upstream_model, Some(cur.id)).await?;
                    am.upstream_model = Set(m.upstream_model.clone());
                }
                "weight" => am.weight = Set(weight_in(m.weight)?),
                "priority" => {
                    am.priority = Set(validate::range("member.priority", m.priority, -1000, 1000)?)
                }
                "status" => {
                    if m.status == 0 {
                        return Err(ApiError::invalid(format!(
                            "member.status is required; use one of: {}",
                            STATUS_NAMES.join(", ")
                        )));
                    }
                    am.status =
                        Set(
                            status_to_str(proto_enum("member.status", m.status, STATUS_NAMES)?)
                                .to_owned(),
                        );
                }
                "rpm_limit" => {
                    am.rpm_limit = Set(limit_in(
                        "member.rpm_limit",
                        m.rpm_limit,
                        validate::LIMIT_MAX,
                    )?)
                }
                "tpm_limit" => {
                    am.tpm_limit = Set(limit_in(
                        "member.tpm_limit",
                        m.tpm_limit,
                        validate::LIMIT_MAX,
                    )?)
                }
                // Unset in the request with the path named: cleared.
                "max_output_tokens" => {
                    am.max_output_tokens = Set(max_output_in(m.max_output_tokens)?)
                }
                "max_concurrency" => {
                    am.max_concurrency = Set(max_concurrency_in(m.max_concurrency)?)
                }
                "context_tokens" => am.context_tokens = Set(context_in(m.context_tokens)?),
                // Empty with the path named: every key again.
                "key" => {
                    am.key = Set(super::provider_keys::member_key(&w.txn, &provider, &m.key).await?)
                }
                _ => {}
            }
        }
        am.revision = Set(w.revision);
        am.updated_at = Set(w.now);
        let model = am.update(&w.txn).await?;
        let out = to_proto(&model, &pool.name, &provider.name);
        let label = format!("{}/{}/{}", pool.name, provider.name, model.upstream_model);
        Ok((
            out,
            Change::new(Resource::Member, Action::Updated, model.id, label),
        ))
    }

    pub async fn delete_member(&self, id: &str, given_etag: &str) -> ApiResult<()> {
        self.write(async |w| self.delete_member_in(w, id, given_etag).await)
            .await
    }

    pub(super) async fn delete_member_in(
        &self,
        w: &WriteTxn,
        id: &str,
        given_etag: &str,
    ) -> ApiResult<((), Change)> {
        let cur = find_member(&w.txn, "id", id).await?;
        check_etag("member", &cur.id.to_string(), given_etag, cur.revision)?;
        // Named as on create and update: pool/provider/upstream_model.
        let label = with_names(&w.txn, std::slice::from_ref(&cur))
            .await?
            .pop()
            .map_or_else(
                || cur.upstream_model.clone(),
                |m| format!("{}/{}/{}", m.pool_name, m.provider_name, m.upstream_model),
            );
        member::Entity::delete_by_id(cur.id).exec(&w.txn).await?;
        Ok((
            (),
            Change::new(Resource::Member, Action::Deleted, cur.id, label),
        ))
    }
}
