//! Providers: upstream endpoints and their write-only credentials.

use std::collections::HashMap;

use sea_orm::{
    ActiveModelTrait, ColumnTrait, EntityTrait, IntoActiveModel, QueryFilter, QueryOrder,
    QuerySelect, Set,
};
use switchyard_shared::change::{Action, Resource};
use switchyard_shared::credential_ref::ReferenceRules;
use uuid::Uuid;

use super::credentials::credential_info;
use super::{
    Change, Page, Store, WriteTxn, check_etag, etag, find_provider, has, mask_paths, pb,
    proto_enum, timestamp,
};
use crate::entity::{member, pool, provider, route_tier};
use crate::error::{ApiError, ApiResult};
use crate::validate;

const KIND_NAMES: &[&str] = &[
    "PROVIDER_KIND_OPENAI",
    "PROVIDER_KIND_ANTHROPIC",
    "PROVIDER_KIND_MOCK",
];
const UPDATABLE: &[&str] = &[
    "name",
    "kind",
    "base_url",
    "credential",
    "extra_headers",
    "timeouts",
    "timeouts.connect_ms",
    "timeouts.first_byte_ms",
    "timeouts.request_ms",
    "enabled",
    "keys",
];

pub(crate) fn kind_to_str(k: pb::ProviderKind) -> ApiResult<&'static str> {
    match k {
        pb::ProviderKind::Openai => Ok("openai"),
        pb::ProviderKind::Anthropic => Ok("anthropic"),
        pb::ProviderKind::Mock => Ok("mock"),
        pb::ProviderKind::Unspecified => Err(ApiError::invalid(format!(
            "provider.kind is required; use one of: {}",
            KIND_NAMES.join(", ")
        ))),
    }
}

pub(crate) fn kind_from_str(s: &str) -> pb::ProviderKind {
    match s {
        "openai" => pb::ProviderKind::Openai,
        "anthropic" => pb::ProviderKind::Anthropic,
        "mock" => pb::ProviderKind::Mock,
        _ => pb::ProviderKind::Unspecified,
    }
}

pub(crate) fn headers(m: &provider::Model) -> HashMap<String, String> {
    serde_json::from_value(m.extra_headers.clone()).unwrap_or_default()
}

pub(super) fn to_proto(m: &provider::Model) -> pb::Provider {
    pb::Provider {
        id: m.id.to_string(),
        name: m.name.clone(),
        kind: kind_from_str(&m.kind).into(),
        base_url: m.base_url.clone(),
        credential: None,
        credential_info: Some(credential_info(m)),
        extra_headers: headers(m),
        timeouts: Some(pb::Timeouts {
            connect_ms: u32::try_from(m.connect_timeout_ms).unwrap_or(0),
            first_byte_ms: u32::try_from(m.first_byte_timeout_ms).unwrap_or(0),
            request_ms: u32::try_from(m.request_timeout_ms).unwrap_or(0),
        }),
        enabled: Some(m.enabled),
        etag: etag(m.revision),
        create_time: Some(timestamp(m.created_at)),
        update_time: Some(timestamp(m.updated_at)),
        keys: Vec::new(),
    }
}

/// Providers as the API shows them, keys included (one batched look-up).
pub(super) async fn with_keys<C: sea_orm::ConnectionTrait>(
    c: &C,
    rows: &[provider::Model],
) -> ApiResult<Vec<pb::Provider>> {
    let mut keys =
        super::provider_keys::keys_by_provider(c, rows.iter().map(|p| p.id).collect()).await?;
    Ok(rows
        .iter()
        .map(|p| {
            let mut out = to_proto(p);
            out.keys = keys
                .remove(&p.id)
                .unwrap_or_default()
                .iter()
                .map(super::provider_keys::to_proto)
                .collect();
            out
        })
        .collect())
}

/// One provider as the API shows it, keys included.
async fn one_with_keys<C: sea_orm::ConnectionTrait>(
    c: &C,
    m: &provider::Model,
) -> ApiResult<pb::Provider> {
    with_keys(c, std::slice::from_ref(m))
        .await?
        .pop()
        .ok_or_else(|| ApiError::Internal("provider vanished".into()))
}

/// The provider fields a write sets, validated together.
struct Fields {
    name: String,
    kind: &'static str,
    base_url: String,
    headers: HashMap<String, String>,
    timeouts: [i32; 3],
}

fn check_fields(f: &Fields) -> ApiResult<()> {
    validate::name("provider.name", &f.name)?;
    if f.kind != "mock" || !f.base_url.is_empty() {
        validate::base_url("provider.base_url", &f.base_url)?;
    }
    validate::extra_headers("provider.extra_headers", &f.headers)?;
    let [connect, first, total] = f.timeouts;
    validate::range("provider.timeouts.connect_ms", connect, 0, 60_000)?;
    validate::range("provider.timeouts.first_byte_ms", first, 0, 600_000)?;
    validate::range("provider.timeouts.request_ms", total, 0, 3_600_000)?;
    if total > 0 && first > total {
        return Err(ApiError::invalid(format!(
            "provider.timeouts.first_byte_ms ({first}) must not exceed timeouts.request_ms ({total})"
        )));
    }
    Ok(())
}

/// The checks a create makes that need no database (offline validation).
/// References are checked against `rules` when given (`switchyard
/// validate`); without, the server that receives the document checks them.
pub(super) fn check_alone(p: &pb::Provider, rules: Option<&ReferenceRules>) -> ApiResult<()> {
    use pb::credential_input::Source;
    let kind = kind_to_str(proto_enum("provider.kind", p.kind, KIND_NAMES)?)?;
    check_fields(&Fields {
        name: p.name.clone(),
        kind,
        base_url: p.base_url.clone(),
        headers: p.extra_headers.clone(),
        timeouts: timeouts(p.timeouts.as_ref())?,
    })?;
    match p.credential.as_ref().and_then(|c| c.source.as_ref()) {
        Some(Source::Reference(r)) => match rules {
            Some(rules) => {
                validate::credential_reference("provider.credential.reference", r, rules)
            }
            None => Ok(()),
        },
        Some(Source::Inline(s)) => validate::inline_secret("provider.credential.inline", s),
        None => Ok(()),
    }?;
    super::provider_keys::check_alone(&p.keys, rules)
}

fn timeouts(t: Option<&pb::Timeouts>) -> ApiResult<[i32; 3]> {
    let t = t.cloned().unwrap_or_default();
    let conv = |field: &str, v: u32| {
        i32::try_from(v)
            .map_err(|_| ApiError::invalid(format!("provider.timeouts.{field} is out of range")))
    };
    Ok([
        conv("connect_ms", t.connect_ms)?,
        conv("first_byte_ms", t.first_byte_ms)?,
        conv("request_ms", t.request_ms)?,
    ])
}

async fn check_name_free<C: sea_orm::ConnectionTrait>(c: &C, name: &str) -> ApiResult<()> {
    let taken = provider::Entity::find()
        .filter(provider::Column::Name.eq(name))
        .one(c)
        .await?;
    match taken {
        Some(_) => Err(ApiError::AlreadyExists(format!(
            "provider '{}' already exists",
            validate::clip(name)
        ))),
        None => Ok(()),
    }
}

impl Store {
    pub async fn create_provider(&self, p: Option<pb::Provider>) -> ApiResult<pb::Provider> {
        self.write(async |w| self.create_provider_in(w, p).await)
            .await
    }

    pub(super) async fn create_provider_in(
        &self,
        w: &WriteTxn,
        p: Option<pb::Provider>,
    ) -> ApiResult<(pb::Provider, Change)> {
        let p = p.ok_or_else(|| ApiError::invalid("provider is required"))?;
        let kind = kind_to_str(proto_enum("provider.kind", p.kind, KIND_NAMES)?)?;
        validate::key_names("provider.keys", p.keys.iter().map(|k| k.name.as_str()))?;
        let fields = Fields {
            name: p.name.clone(),
            kind,
            base_url: p.base_url.clone(),
            headers: p.extra_headers.clone(),
            timeouts: timeouts(p.timeouts.as_ref())?,
        };
        check_fields(&fields)?;
        let id = Uuid::now_v7();
        let cred = self.store_credential("provider.credential", id, p.credential.as_ref())?;
        check_name_free(&w.txn, &fields.name).await?;
        let [connect, first, total] = fields.timeouts;
        let model = provider::ActiveModel {
            id: Set(id),
            name: Set(fields.name),
            kind: Set(kind.to_owned()),
            base_url: Set(fields.base_url),
            credential_source: Set(cred.source.to_owned()),
            credential_sealed: Set(cred.sealed),
            credential_reference: Set(cred.reference),
            credential_fingerprint: Set(cred.fingerprint),
            extra_headers: Set(serde_json::to_value(&fields.headers)
                .map_err(|e| ApiError::Internal(e.to_string()))?),
            connect_timeout_ms: Set(connect),
            first_byte_timeout_ms: Set(first),
            request_timeout_ms: Set(total),
            enabled: Set(p.enabled.unwrap_or(true)),
            revision: Set(w.revision),
            created_at: Set(w.now),
            updated_at: Set(w.now),
        }
        .insert(&w.txn)
        .await?;
        self.replace_keys(w, &model, &p.keys).await?;
        let change = Change::new(Resource::Provider, Action::Created, id, &model.name);
        Ok((one_with_keys(&w.txn, &model).await?, change))
    }

    pub async fn get_provider(&self, key: &str) -> ApiResult<pb::Provider> {
        let p = find_provider(self.db(), "id_or_name", key).await?;
        one_with_keys(self.db(), &p).await
    }

    pub async fn list_providers(
        &self,
        r: &pb::ListProvidersRequest,
    ) -> ApiResult<pb::ListProvidersResponse> {
        let page = Page::parse(r.page_size, &r.page_token)?;
        let mut q = provider::Entity::find()
            .order_by_asc(provider::Column::Name)
            .limit(page.fetch());
        if r.kind != 0 {
            let kind = pb::ProviderKind::try_from(r.kind).map_err(|_| {
                ApiError::invalid(format!(
                    "kind {} is not a provider kind; use one of: {}",
                    r.kind,
                    KIND_NAMES.join(", ")
                ))
            })?;
            q = q.filter(provider::Column::Kind.eq(kind_to_str(kind)?));
        }
        if let Some(after) = &page.after {
            q = q.filter(provider::Column::Name.gt(after.as_str()));
        }
        let mut rows = q.all(self.db()).await?;
        let next_page_token = page.finish(&mut rows, |r| r.name.clone());
        Ok(pb::ListProvidersResponse {
            providers: with_keys(self.db(), &rows).await?,
            next_page_token,
        })
    }

    pub async fn update_provider(
        &self,
        p: Option<pb::Provider>,
        mask: Option<prost_types::FieldMask>,
    ) -> ApiResult<pb::Provider> {
        self.write(async |w| self.update_provider_in(w, p, mask).await)
            .await
    }

    pub(super) async fn update_provider_in(
        &self,
        w: &WriteTxn,
        p: Option<pb::Provider>,
        mask: Option<prost_types::FieldMask>,
    ) -> ApiResult<(pb::Provider, Change)> {
        let p = p.ok_or_else(|| ApiError::invalid("provider is required"))?;
        let paths = mask_paths("provider", mask, UPDATABLE)?;
        let key = if p.id.is_empty() {
            if has(&paths, "name") {
                return Err(ApiError::invalid(
                    "provider.id is required when the update renames the provider",
                ));
            }
            p.name.clone()
        } else {
            p.id.clone()
        };
        let cur = find_provider(&w.txn, "provider.id", &key).await?;
        check_etag("provider", &cur.name, &p.etag, cur.revision)?;

        let mut fields = Fields {
            name: cur.name.clone(),
            kind: kind_to_str(kind_from_str(&cur.kind))?,
            base_url: cur.base_url.clone(),
            headers: headers(&cur),
            timeouts: [
                cur.connect_timeout_ms,
                cur.first_byte_timeout_ms,
                cur.request_timeout_ms,
            ],
        };
        let new_t = timeouts(p.timeouts.as_ref())?;
        for path in &paths {
            match path.as_str() {
                "name" => fields.name = p.name.clone(),
                "kind" => {
                    fields.kind = kind_to_str(proto_enum("provider.kind", p.kind, KIND_NAMES)?)?
                }
                "base_url" => fields.base_url = p.base_url.clone(),
                "extra_headers" => fields.headers = p.extra_headers.clone(),
                "timeouts" => fields.timeouts = new_t,
                "timeouts.connect_ms" => fields.timeouts[0] = new_t[0],
                "timeouts.first_byte_ms" => fields.timeouts[1] = new_t[1],
                "timeouts.request_ms" => fields.timeouts[2] = new_t[2],
                _ => {}
            }
        }
        check_fields(&fields)?;
        if fields.name != cur.name {
            check_name_free(&w.txn, &fields.name).await?;
        }

        let id = cur.id;
        let enabled = cur.enabled;
        let mut am = cur.into_active_model();
        if has(&paths, "credential") {
            let cred = self.store_credential("provider.credential", id, p.credential.as_ref())?;
            am.credential_source = Set(cred.source.to_owned());
            am.credential_sealed = Set(cred.sealed);
            am.credential_reference = Set(cred.reference);
            am.credential_fingerprint = Set(cred.fingerprint);
        }
        let [connect, first, total] = fields.timeouts;
        am.name = Set(fields.name);
        am.kind = Set(fields.kind.to_owned());
        am.base_url = Set(fields.base_url);
        am.extra_headers =
            Set(serde_json::to_value(&fields.headers)
                .map_err(|e| ApiError::Internal(e.to_string()))?);
        am.connect_timeout_ms = Set(connect);
        am.first_byte_timeout_ms = Set(first);
        am.request_timeout_ms = Set(total);
        am.enabled = Set(if has(&paths, "enabled") {
            p.enabled.unwrap_or(true)
        } else {
            enabled
        });
        am.revision = Set(w.revision);
        am.updated_at = Set(w.now);
        let model = am.update(&w.txn).await?;
        if has(&paths, "keys") {
            self.replace_keys(w, &model, &p.keys).await?;
        }
        let change = Change::new(Resource::Provider, Action::Updated, id, &model.name);
        Ok((one_with_keys(&w.txn, &model).await?, change))
    }

    pub async fn delete_provider(&self, key: &str, force: bool, given_etag: &str) -> ApiResult<()> {
        self.write(async |w| self.delete_provider_in(w, key, force, given_etag).await)
            .await
    }

    pub(super) async fn delete_provider_in(
        &self,
        w: &WriteTxn,
        key: &str,
        force: bool,
        given_etag: &str,
    ) -> ApiResult<((), Change)> {
        let cur = find_provider(&w.txn, "id_or_name", key).await?;
        check_etag("provider", &cur.name, given_etag, cur.revision)?;

        let members = member::Entity::find()
            .filter(member::Column::ProviderId.eq(cur.id))
            .all(&w.txn)
            .await?;
        let tiers = route_tier::Entity::find()
            .filter(route_tier::Column::ProviderId.eq(cur.id))
            .all(&w.txn)
            .await?;
        if !force && (!members.is_empty() || !tiers.is_empty()) {
            let mut pool_ids: Vec<Uuid> = members.iter().map(|m| m.pool_id).collect();
            pool_ids.sort();
            pool_ids.dedup();
            let pools = pool::Entity::find()
                .filter(pool::Column::Id.is_in(pool_ids))
                .order_by_asc(pool::Column::Name)
                .all(&w.txn)
                .await?;
            let pool_names: Vec<String> = pools.into_iter().map(|p| p.name).collect();
            let route_names =
                super::routes::route_names(&w.txn, tiers.iter().map(|t| t.route_id)).await?;
            let mut users = Vec::new();
            if !pool_names.is_empty() {
                users.push(format!("members of pools: {}", pool_names.join(", ")));
            }
            if !route_names.is_empty() {
                users.push(format!("routes: {}", route_names.join(", ")));
            }
            return Err(ApiError::FailedPrecondition(format!(
                "provider '{}' is still used by {}; remove those first or delete with force=true",
                cur.name,
                users.join("; ")
            )));
        }
        member::Entity::delete_many()
            .filter(member::Column::ProviderId.eq(cur.id))
            .exec(&w.txn)
            .await?;
        super::routes::remove_tiers(w, route_tier::Column::ProviderId.eq(cur.id)).await?;
        provider::Entity::delete_by_id(cur.id).exec(&w.txn).await?;
        Ok((
            (),
            Change::new(Resource::Provider, Action::Deleted, cur.id, &cur.name),
        ))
    }
}
