//! Routes: a semantic name over ordered tiers of pools or direct provider/models.

use std::collections::HashMap;

use sea_orm::sea_query::SimpleExpr;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, IntoActiveModel, QueryFilter,
    QueryOrder, QuerySelect, Set,
};
use switchyard_shared::change::{Action, Resource};
use uuid::Uuid;

use super::{
    Change, Page, Store, WriteTxn, check_etag, check_virtual_name_free, etag, find_route, has,
    mask_paths, pb, timestamp,
};
use crate::entity::{pool, provider, route, route_tier};
use crate::error::{ApiError, ApiResult};
use crate::validate;

const UPDATABLE: &[&str] = &["name", "tiers", "enabled", "description"];

/// A tier resolved to ids, ready to store.
struct TierRow {
    pool_id: Option<Uuid>,
    provider_id: Option<Uuid>,
    upstream_model: Option<String>,
    backup: bool,
    when: pb::TierCondition,
}

/// The checks a create makes that need no database (offline validation).
pub(super) fn check_alone(r: &pb::Route) -> ApiResult<()> {
    validate::name("route.name", &r.name)?;
    validate::description("route.description", &r.description)?;
    check_tiers(&r.tiers).map(drop)
}

/// A direct tier's `provider/model`, checked.
fn split_direct<'a>(field: &str, spec: &'a str) -> ApiResult<(&'a str, &'a str)> {
    let Some((prov, model)) = spec.split_once('/') else {
        return Err(ApiError::invalid(format!(
            "{field}.direct '{}' must be provider/upstream-model, e.g. openai-main/gpt-4o",
            validate::clip(spec)
        )));
    };
    validate::upstream_model(&format!("{field}.direct model"), model)?;
    Ok((prov, model))
}

/// Tier count, a primary tier, and each tier's target shape.
fn check_tiers(tiers: &[pb::RouteTier]) -> ApiResult<()> {
    use pb::route_tier::Target;
    if tiers.is_empty() || tiers.len() > validate::MAX_TIERS {
        return Err(ApiError::invalid(format!(
            "route.tiers has {} entries; give 1-{} tiers",
            tiers.len(),
            validate::MAX_TIERS
        )));
    }
    if tiers.iter().all(|t| t.backup) {
        return Err(ApiError::invalid(
            "route.tiers needs at least one tier with backup=false",
        ));
    }
    for (i, t) in tiers.iter().enumerate() {
        let field = format!("route.tiers[{i}]");
        match &t.target {
            None => {
                return Err(ApiError::invalid(format!(
                    "{field} needs a target: set pool or direct"
                )));
            }
            Some(Target::Pool(name)) => validate::lookup(&format!("{field}.pool"), name)?,
            Some(Target::Direct(spec)) => {
                split_direct(&field, spec)?;
            }
        }
        if let Some(c) = &t.when {
            validate::range(
                &format!("{field}.when.min_prompt_tokens"),
                c.min_prompt_tokens,
                0,
                validate::CONTEXT_TOKENS_MAX,
            )?;
        }
    }
    Ok(())
}

/// A stored condition as the API shows it: None when it asks nothing.
fn condition_out(t: &route_tier::Model) -> Option<pb::TierCondition> {
    let c = pb::TierCondition {
        images: t.when_images,
        reasoning: t.when_reasoning,
        tools: t.when_tools,
        min_prompt_tokens: u64::try_from(t.when_min_prompt_tokens).unwrap_or(0),
    };
    (c != pb::TierCondition::default()).then_some(c)
}

/// Checks the tiers and resolves the names they give.
async fn resolve_tiers<C: ConnectionTrait>(
    c: &C,
    tiers: &[pb::RouteTier],
) -> ApiResult<Vec<TierRow>> {
    use pb::route_tier::Target;
    check_tiers(tiers)?;
    let mut out = Vec::with_capacity(tiers.len());
    for (i, t) in tiers.iter().enumerate() {
        let field = format!("route.tiers[{i}]");
        let row = match &t.target {
            None => continue, // refused by check_tiers
            Some(Target::Pool(name)) => {
                let p = super::find_pool(c, &format!("{field}.pool"), name).await?;
                TierRow {
                    pool_id: Some(p.id),
                    provider_id: None,
                    upstream_model: None,
                    backup: t.backup,
                    when: t.when.unwrap_or_default(),
                }
            }
            Some(Target::Direct(spec)) => {
                let (prov, model) = split_direct(&field, spec)?;
                let p = super::find_provider(c, &format!("{field}.direct provider"), prov).await?;
                TierRow {
                    pool_id: None,
                    provider_id: Some(p.id),
                    upstream_model: Some(model.to_owned()),
                    backup: t.backup,
                    when: t.when.unwrap_or_default(),
                }
            }
        };
        out.push(row);
    }
    Ok(out)
}

async fn write_tiers<C: ConnectionTrait>(
    c: &C,
    route_id: Uuid,
    rows: Vec<TierRow>,
) -> ApiResult<()> {
    route_tier::Entity::delete_many()
        .filter(route_tier::Column::RouteId.eq(route_id))
        .exec(c)
        .await?;
    for (i, r) in rows.into_iter().enumerate() {
        route_tier::ActiveModel {
            id: Set(Uuid::now_v7()),
            route_id: Set(route_id),
            position: Set(i32::try_from(i).unwrap_or(i32::MAX)),
            pool_id: Set(r.pool_id),
            provider_id: Set(r.provider_id),
            upstream_model: Set(r.upstream_model),
            backup: Set(r.backup),
            when_images: Set(r.when.images),
            when_reasoning: Set(r.when.reasoning),
            when_tools: Set(r.when.tools),
            // Checked against CONTEXT_TOKENS_MAX by check_tiers.
            when_min_prompt_tokens: Set(i64::try_from(r.when.min_prompt_tokens).unwrap_or(i64::MAX)),
        }
        .insert(c)
        .await?;
    }
    Ok(())
}

/// The tiers of the given routes as the API shows them (names, not ids), keyed by route.
pub(crate) async fn tiers_by_route<C: ConnectionTrait>(
    c: &C,
    route_ids: Vec<Uuid>,
) -> ApiResult<HashMap<Uuid, Vec<pb::RouteTier>>> {
    use pb::route_tier::Target;
    let tiers = route_tier::Entity::find()
        .filter(route_tier::Column::RouteId.is_in(route_ids))
        .order_by_asc(route_tier::Column::RouteId)
        .order_by_asc(route_tier::Column::Position)
        .all(c)
        .await?;
    let pool_names: HashMap<Uuid, String> = pool::Entity::find()
        .filter(pool::Column::Id.is_in(tiers.iter().filter_map(|t| t.pool_id).collect::<Vec<_>>()))
        .all(c)
        .await?
        .into_iter()
        .map(|p| (p.id, p.name))
        .collect();
    let provider_names: HashMap<Uuid, String> = provider::Entity::find()
        .filter(
            provider::Column::Id.is_in(
                tiers
                    .iter()
                    .filter_map(|t| t.provider_id)
                    .collect::<Vec<_>>(),
            ),
        )
        .all(c)
        .await?
        .into_iter()
        .map(|p| (p.id, p.name))
        .collect();
    let mut out: HashMap<Uuid, Vec<pb::RouteTier>> = HashMap::new();
    for t in tiers {
        let when = condition_out(&t);
        let target = match (t.pool_id, t.provider_id) {
            (Some(p), _) => pool_names.get(&p).cloned().map(Target::Pool),
            (None, Some(p)) => provider_names.get(&p).map(|name| {
                Target::Direct(format!(
                    "{name}/{}",
                    t.upstream_model.as_deref().unwrap_or_default()
                ))
            }),
            (None, None) => None,
        };
        out.entry(t.route_id).or_default().push(pb::RouteTier {
            target,
            backup: t.backup,
            when,
        });
    }
    Ok(out)
}

/// Sorted, de-duplicated names of the given routes (for error messages).
pub(crate) async fn route_names<C: ConnectionTrait>(
    c: &C,
    ids: impl Iterator<Item = Uuid>,
) -> ApiResult<Vec<String>> {
    let ids: Vec<Uuid> = ids.collect();
    let rows = route::Entity::find()
        .filter(route::Column::Id.is_in(ids))
        .order_by_asc(route::Column::Name)
        .all(c)
        .await?;
    Ok(rows.into_iter().map(|r| r.name).collect())
}

/// Removes the tiers matching `filter`: a route that keeps tiers gets the
/// write's revision (its etag changes with its tiers), a route left with
/// no tier is deleted.
pub(crate) async fn remove_tiers(w: &super::WriteTxn, filter: SimpleExpr) -> ApiResult<()> {
    let doomed = route_tier::Entity::find()
        .filter(filter.clone())
        .all(&w.txn)
        .await?;
    if doomed.is_empty() {
        return Ok(());
    }
    route_tier::Entity::delete_many()
        .filter(filter)
        .exec(&w.txn)
        .await?;
    let mut routes: Vec<Uuid> = doomed.iter().map(|t| t.route_id).collect();
    routes.sort();
    routes.dedup();
    for route_id in routes {
        let left = route_tier::Entity::find()
            .filter(route_tier::Column::RouteId.eq(route_id))
            .one(&w.txn)
            .await?;
        if left.is_none() {
            route::Entity::delete_by_id(route_id).exec(&w.txn).await?;
        } else {
            route::ActiveModel {
                id: Set(route_id),
                revision: Set(w.revision),
                updated_at: Set(w.now),
                ..Default::default()
            }
            .update(&w.txn)
            .await?;
        }
    }
    Ok(())
}

pub(super) fn to_proto(m: &route::Model, tiers: Vec<pb::RouteTier>) -> pb::Route {
    pb::Route {
        id: m.id.to_string(),
        name: m.name.clone(),
        tiers,
        enabled: Some(m.enabled),
        description: m.description.clone(),
        etag: etag(m.revision),
        create_time: Some(timestamp(m.created_at)),
        update_time: Some(timestamp(m.updated_at)),
    }
}

pub(super) async fn with_tiers<C: ConnectionTrait>(
    c: &C,
    rows: &[route::Model],
) -> ApiResult<Vec<pb::Route>> {
    let mut tiers = tiers_by_route(c, rows.iter().map(|r| r.id).collect()).await?;
    Ok(rows
        .iter()
        .map(|r| to_proto(r, tiers.remove(&r.id).unwrap_or_default()))
        .collect())
}

impl Store {
    pub async fn create_route(&self, r: Option<pb::Route>) -> ApiResult<pb::Route> {
        self.write(async |w| self.create_route_in(w, r).await).await
    }

    pub(super) async fn create_route_in(
        &self,
        w: &WriteTxn,
        r: Option<pb::Route>,
    ) -> ApiResult<(pb::Route, Change)> {
        let r = r.ok_or_else(|| ApiError::invalid("route is required"))?;
        validate::name("route.name", &r.name)?;
        validate::description("route.description", &r.description)?;
        let id = Uuid::now_v7();
        check_virtual_name_free(&w.txn, "route.name", &r.name, None).await?;
        let tiers = resolve_tiers(&w.txn, &r.tiers).await?;
        let model = route::ActiveModel {
            id: Set(id),
            name: Set(r.name.clone()),
            enabled: Set(r.enabled.unwrap_or(true)),
            description: Set(r.description.clone()),
            revision: Set(w.revision),
            created_at: Set(w.now),
            updated_at: Set(w.now),
        }
        .insert(&w.txn)
        .await?;
        write_tiers(&w.txn, id, tiers).await?;
        let out = with_tiers(&w.txn, std::slice::from_ref(&model)).await?;
        let out = out
            .into_iter()
            .next()
            .ok_or_else(|| ApiError::Internal("route vanished".into()))?;
        let change = Change::new(Resource::Route, Action::Created, id, &model.name);
        Ok((out, change))
    }

    pub async fn get_route(&self, key: &str) -> ApiResult<pb::Route> {
        let r = find_route(self.db(), "id_or_name", key).await?;
        let out = with_tiers(self.db(), std::slice::from_ref(&r)).await?;
        out.into_iter()
            .next()
            .ok_or_else(|| ApiError::Internal("route vanished".into()))
    }

    pub async fn list_routes(
        &self,
        r: &pb::ListRoutesRequest,
    ) -> ApiResult<pb::ListRoutesResponse> {
        let page = Page::parse(r.page_size, &r.page_token)?;
        let mut q = route::Entity::find()
            .order_by_asc(route::Column::Name)
            .limit(page.fetch());
        if !r.pool.is_empty() {
            let p = super::find_pool(self.db(), "pool", &r.pool).await?;
            let using = route_tier::Entity::find()
                .filter(route_tier::Column::PoolId.eq(p.id))
                .all(self.db())
                .await?;
            let ids: Vec<Uuid> = using.iter().map(|t| t.route_id).collect();
            q = q.filter(route::Column::Id.is_in(ids));
        }
        if let Some(after) = &page.after {
            q = q.filter(route::Column::Name.gt(after.as_str()));
        }
        let mut rows = q.all(self.db()).await?;
        let next_page_token = page.finish(&mut rows, |r| r.name.clone());
        Ok(pb::ListRoutesResponse {
            routes: with_tiers(self.db(), &rows).await?,
            next_page_token,
        })
    }

    pub async fn update_route(
        &self,
        r: Option<pb::Route>,
        mask: Option<prost_types::FieldMask>,
    ) -> ApiResult<pb::Route> {
        self.write(async |w| self.update_route_in(w, r, mask).await)
            .await
    }

    pub(super) async fn update_route_in(
        &self,
        w: &WriteTxn,
        r: Option<pb::Route>,
        mask: Option<prost_types::FieldMask>,
    ) -> ApiResult<(pb::Route, Change)> {
        let r = r.ok_or_else(|| ApiError::invalid("route is required"))?;
        let paths = mask_paths("route", mask, UPDATABLE)?;
        let key = if r.id.is_empty() {
            if has(&paths, "name") {
                return Err(ApiError::invalid(
                    "route.id is required when the update renames the route",
                ));
            }
            r.name.clone()
        } else {
            r.id.clone()
        };
        let cur = find_route(&w.txn, "route.id", &key).await?;
        check_etag("route", &cur.name, &r.etag, cur.revision)?;
        let mut am = cur.clone().into_active_model();
        for path in &paths {
            match path.as_str() {
                "name" => {
                    validate::name("route.name", &r.name)?;
                    check_virtual_name_free(&w.txn, "route.name", &r.name, Some(cur.id)).await?;
                    am.name = Set(r.name.clone());
                }
                "tiers" => {
                    let tiers = resolve_tiers(&w.txn, &r.tiers).await?;
                    write_tiers(&w.txn, cur.id, tiers).await?;
                }
                "enabled" => am.enabled = Set(r.enabled.unwrap_or(true)),
                "description" => {
                    validate::description("route.description", &r.description)?;
                    am.description = Set(r.description.clone());
                }
                _ => {}
            }
        }
        am.revision = Set(w.revision);
        am.updated_at = Set(w.now);
        let model = am.update(&w.txn).await?;
        let out = with_tiers(&w.txn, std::slice::from_ref(&model)).await?;
        let out = out
            .into_iter()
            .next()
            .ok_or_else(|| ApiError::Internal("route vanished".into()))?;
        let change = Change::new(Resource::Route, Action::Updated, model.id, &model.name);
        Ok((out, change))
    }

    pub async fn delete_route(&self, key: &str, given_etag: &str) -> ApiResult<()> {
        self.write(async |w| self.delete_route_in(w, key, given_etag).await)
            .await
    }

    pub(super) async fn delete_route_in(
        &self,
        w: &WriteTxn,
        key: &str,
        given_etag: &str,
    ) -> ApiResult<((), Change)> {
        let cur = find_route(&w.txn, "id_or_name", key).await?;
        check_etag("route", &cur.name, given_etag, cur.revision)?;
        route::Entity::delete_by_id(cur.id).exec(&w.txn).await?;
        Ok((
            (),
            Change::new(Resource::Route, Action::Deleted, cur.id, &cur.name),
        ))
    }
}
