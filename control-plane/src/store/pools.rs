//! Pools: virtual model names with a selection strategy and a failover policy.

use sea_orm::{
    ActiveModelTrait, ColumnTrait, EntityTrait, IntoActiveModel, QueryFilter, QueryOrder,
    QuerySelect, Set,
};
use switchyard_shared::change::{Action, Resource};
use uuid::Uuid;

use super::{
    Change, Page, Store, WriteTxn, check_etag, check_virtual_name_free, etag, find_pool, has,
    mask_paths, pb, proto_enum, timestamp,
};
use crate::entity::{pool, route_tier};
use crate::error::{ApiError, ApiResult};
use crate::validate;

const STRATEGY_NAMES: &[&str] = &[
    "STRATEGY_ROUND_ROBIN",
    "STRATEGY_WEIGHTED",
    "STRATEGY_PRIORITY",
    "STRATEGY_RANDOM",
];
const UPDATABLE: &[&str] = &[
    "name",
    "strategy",
    "failover",
    "failover.transient_retries",
    "failover.failure_threshold",
    "failover.cooldown_base_ms",
    "failover.cooldown_max_ms",
    "failover.advance_on_permanent",
    "enabled",
    "description",
    "allow_request_extra",
];

pub(crate) const DEFAULT_RETRIES: u32 = 1;
pub(crate) const DEFAULT_THRESHOLD: u32 = 3;
pub(crate) const DEFAULT_COOLDOWN_BASE_MS: u32 = 1_000;
pub(crate) const DEFAULT_COOLDOWN_MAX_MS: u32 = 300_000;

pub(super) fn strategy_to_str(s: pb::Strategy) -> &'static str {
    match s {
        pb::Strategy::Unspecified | pb::Strategy::RoundRobin => "round_robin",
        pb::Strategy::Weighted => "weighted",
        pb::Strategy::Priority => "priority",
        pb::Strategy::Random => "random",
        pb::Strategy::LeastBusy => "least_busy",
        pb::Strategy::Latency => "latency",
        pb::Strategy::QuotaAware => "quota_aware",
    }
}

pub(crate) fn strategy_from_str(s: &str) -> pb::Strategy {
    match s {
        "weighted" => pb::Strategy::Weighted,
        "priority" => pb::Strategy::Priority,
        "random" => pb::Strategy::Random,
        "least_busy" => pb::Strategy::LeastBusy,
        "latency" => pb::Strategy::Latency,
        "quota_aware" => pb::Strategy::QuotaAware,
        _ => pb::Strategy::RoundRobin,
    }
}

pub(crate) fn failover(m: &pool::Model) -> pb::FailoverPolicy {
    pb::FailoverPolicy {
        transient_retries: u32::try_from(m.transient_retries).unwrap_or(DEFAULT_RETRIES),
        failure_threshold: u32::try_from(m.failure_threshold).unwrap_or(DEFAULT_THRESHOLD),
        cooldown_base_ms: u32::try_from(m.cooldown_base_ms).unwrap_or(DEFAULT_COOLDOWN_BASE_MS),
        cooldown_max_ms: u32::try_from(m.cooldown_max_ms).unwrap_or(DEFAULT_COOLDOWN_MAX_MS),
        advance_on_permanent: m.advance_on_permanent,
    }
}

pub(super) fn to_proto(m: &pool::Model) -> pb::Pool {
    pb::Pool {
        id: m.id.to_string(),
        name: m.name.clone(),
        strategy: strategy_from_str(&m.strategy).into(),
        failover: Some(failover(m)),
        enabled: Some(m.enabled),
        description: m.description.clone(),
        etag: etag(m.revision),
        create_time: Some(timestamp(m.created_at)),
        update_time: Some(timestamp(m.updated_at)),
        allow_request_extra: Some(m.allow_request_extra),
    }
}

/// Applies defaults (0 = default for threshold and cooldowns) and checks ranges.
pub(super) fn normalize_failover(f: pb::FailoverPolicy) -> ApiResult<pb::FailoverPolicy> {
    let or = |v: u32, d: u32| if v == 0 { d } else { v };
    let f = pb::FailoverPolicy {
        transient_retries: f.transient_retries,
        failure_threshold: or(f.failure_threshold, DEFAULT_THRESHOLD),
        cooldown_base_ms: or(f.cooldown_base_ms, DEFAULT_COOLDOWN_BASE_MS),
        cooldown_max_ms: or(f.cooldown_max_ms, DEFAULT_COOLDOWN_MAX_MS),
        advance_on_permanent: f.advance_on_permanent,
    };
    validate::range(
        "pool.failover.transient_retries",
        f.transient_retries,
        0,
        10,
    )?;
    validate::range(
        "pool.failover.failure_threshold",
        f.failure_threshold,
        1,
        100,
    )?;
    validate::range(
        "pool.failover.cooldown_base_ms",
        f.cooldown_base_ms,
        100,
        3_600_000,
    )?;
    validate::range(
        "pool.failover.cooldown_max_ms",
        f.cooldown_max_ms,
        100,
        86_400_000,
    )?;
    if f.cooldown_max_ms < f.cooldown_base_ms {
        return Err(ApiError::invalid(format!(
            "pool.failover.cooldown_max_ms ({}) must be at least cooldown_base_ms ({})",
            f.cooldown_max_ms, f.cooldown_base_ms
        )));
    }
    Ok(f)
}

/// The checks a create makes that need no database (offline validation).
pub(super) fn check_alone(p: &pb::Pool) -> ApiResult<()> {
    validate::name("pool.name", &p.name)?;
    validate::description("pool.description", &p.description)?;
    proto_enum::<pb::Strategy>("pool.strategy", p.strategy, STRATEGY_NAMES)?;
    if let Some(f) = p.failover {
        normalize_failover(f)?;
    }
    Ok(())
}

pub(super) fn default_failover() -> pb::FailoverPolicy {
    pb::FailoverPolicy {
        transient_retries: DEFAULT_RETRIES,
        failure_threshold: DEFAULT_THRESHOLD,
        cooldown_base_ms: DEFAULT_COOLDOWN_BASE_MS,
        cooldown_max_ms: DEFAULT_COOLDOWN_MAX_MS,
        advance_on_permanent: false,
    }
}

fn set_failover(am: &mut pool::ActiveModel, f: &pb::FailoverPolicy) {
    am.transient_retries = Set(i32::try_from(f.transient_retries).unwrap_or(i32::MAX));
    am.failure_threshold = Set(i32::try_from(f.failure_threshold).unwrap_or(i32::MAX));
    am.cooldown_base_ms = Set(i64::from(f.cooldown_base_ms));
    am.cooldown_max_ms = Set(i64::from(f.cooldown_max_ms));
    am.advance_on_permanent = Set(f.advance_on_permanent);
}

impl Store {
    pub async fn create_pool(&self, p: Option<pb::Pool>) -> ApiResult<pb::Pool> {
        self.write(async |w| self.create_pool_in(w, p).await).await
    }

    pub(super) async fn create_pool_in(
        &self,
        w: &WriteTxn,
        p: Option<pb::Pool>,
    ) -> ApiResult<(pb::Pool, Change)> {
        let p = p.ok_or_else(|| ApiError::invalid("pool is required"))?;
        validate::name("pool.name", &p.name)?;
        validate::description("pool.description", &p.description)?;
        let strategy = strategy_to_str(proto_enum("pool.strategy", p.strategy, STRATEGY_NAMES)?);
        let policy = match p.failover {
            Some(f) => normalize_failover(f)?,
            None => default_failover(),
        };
        let id = Uuid::now_v7();
        check_virtual_name_free(&w.txn, "pool.name", &p.name, None).await?;
        let mut am = pool::ActiveModel {
            id: Set(id),
            name: Set(p.name.clone()),
            strategy: Set(strategy.to_owned()),
            enabled: Set(p.enabled.unwrap_or(true)),
            description: Set(p.description),
            allow_request_extra: Set(p.allow_request_extra.unwrap_or(true)),
            revision: Set(w.revision),
            created_at: Set(w.now),
            updated_at: Set(w.now),
            ..Default::default()
        };
        set_failover(&mut am, &policy);
        let model = am.insert(&w.txn).await?;
        let change = Change::new(Resource::Pool, Action::Created, id, &model.name);
        Ok((to_proto(&model), change))
    }

    pub async fn get_pool(&self, key: &str) -> ApiResult<pb::Pool> {
        Ok(to_proto(&find_pool(self.db(), "id_or_name", key).await?))
    }

    pub async fn list_pools(&self, r: &pb::ListPoolsRequest) -> ApiResult<pb::ListPoolsResponse> {
        let page = Page::parse(r.page_size, &r.page_token)?;
        let mut q = pool::Entity::find()
            .order_by_asc(pool::Column::Name)
            .limit(page.fetch());
        if !r.name_prefix.is_empty() {
            validate::plain("name_prefix", &r.name_prefix, validate::NAME_MAX)?;
            q = q.filter(pool::Column::Name.like(super::prefix_pattern(&r.name_prefix)));
        }
        if let Some(after) = &page.after {
            q = q.filter(pool::Column::Name.gt(after.as_str()));
        }
        let mut rows = q.all(self.db()).await?;
        let next_page_token = page.finish(&mut rows, |r| r.name.clone());
        Ok(pb::ListPoolsResponse {
            pools: rows.iter().map(to_proto).collect(),
            next_page_token,
        })
    }

    pub async fn update_pool(
        &self,
        p: Option<pb::Pool>,
        mask: Option<prost_types::FieldMask>,
    ) -> ApiResult<pb::Pool> {
        self.write(async |w| self.update_pool_in(w, p, mask).await)
            .await
    }

    pub(super) async fn update_pool_in(
        &self,
        w: &WriteTxn,
        p: Option<pb::Pool>,
        mask: Option<prost_types::FieldMask>,
    ) -> ApiResult<(pb::Pool, Change)> {
        let p = p.ok_or_else(|| ApiError::invalid("pool is required"))?;
        let paths = mask_paths("pool", mask, UPDATABLE)?;
        let key = if p.id.is_empty() {
            if has(&paths, "name") {
                return Err(ApiError::invalid(
                    "pool.id is required when the update renames the pool",
                ));
            }
            p.name.clone()
        } else {
            p.id.clone()
        };
        let cur = find_pool(&w.txn, "pool.id", &key).await?;
        check_etag("pool", &cur.name, &p.etag, cur.revision)?;
        let mut policy = failover(&cur);
        let given = p.failover.unwrap_or_default();
        let mut am = cur.clone().into_active_model();
        for path in &paths {
            match path.as_str() {
                "name" => {
                    validate::name("pool.name", &p.name)?;
                    check_virtual_name_free(&w.txn, "pool.name", &p.name, Some(cur.id)).await?;
                    am.name = Set(p.name.clone());
                }
                "strategy" => {
                    am.strategy = Set(strategy_to_str(proto_enum(
                        "pool.strategy",
                        p.strategy,
                        STRATEGY_NAMES,
                    )?)
                    .to_owned());
                }
                "failover" => policy = given,
                "failover.transient_retries" => policy.transient_retries = given.transient_retries,
                "failover.failure_threshold" => policy.failure_threshold = given.failure_threshold,
                "failover.cooldown_base_ms" => policy.cooldown_base_ms = given.cooldown_base_ms,
                "failover.cooldown_max_ms" => policy.cooldown_max_ms = given.cooldown_max_ms,
                "failover.advance_on_permanent" => {
                    policy.advance_on_permanent = given.advance_on_permanent
                }
                "enabled" => am.enabled = Set(p.enabled.unwrap_or(true)),
                "description" => {
                    validate::description("pool.description", &p.description)?;
                    am.description = Set(p.description.clone());
                }
                "allow_request_extra" => {
                    am.allow_request_extra = Set(p.allow_request_extra.unwrap_or(true))
                }
                _ => {}
            }
        }
        set_failover(&mut am, &normalize_failover(policy)?);
        am.revision = Set(w.revision);
        am.updated_at = Set(w.now);
        let model = am.update(&w.txn).await?;
        let change = Change::new(Resource::Pool, Action::Updated, model.id, &model.name);
        Ok((to_proto(&model), change))
    }

    pub async fn delete_pool(&self, key: &str, force: bool, given_etag: &str) -> ApiResult<()> {
        self.write(async |w| self.delete_pool_in(w, key, force, given_etag).await)
            .await
    }

    pub(super) async fn delete_pool_in(
        &self,
        w: &WriteTxn,
        key: &str,
        force: bool,
        given_etag: &str,
    ) -> ApiResult<((), Change)> {
        let cur = find_pool(&w.txn, "id_or_name", key).await?;
        check_etag("pool", &cur.name, given_etag, cur.revision)?;
        let tiers = route_tier::Entity::find()
            .filter(route_tier::Column::PoolId.eq(cur.id))
            .all(&w.txn)
            .await?;
        if !tiers.is_empty() && !force {
            let names =
                super::routes::route_names(&w.txn, tiers.iter().map(|t| t.route_id)).await?;
            return Err(ApiError::FailedPrecondition(format!(
                "pool '{}' is used by routes: {}; remove it from those routes first or delete with force=true",
                cur.name,
                names.join(", ")
            )));
        }
        super::routes::remove_tiers(w, route_tier::Column::PoolId.eq(cur.id)).await?;
        // Members go with the pool (ON DELETE CASCADE).
        pool::Entity::delete_by_id(cur.id).exec(&w.txn).await?;
        Ok((
            (),
            Change::new(Resource::Pool, Action::Deleted, cur.id, &cur.name),
        ))
    }
}
