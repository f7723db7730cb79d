//! Callers: who may call the data plane, with their scope and limits. The
//! key is generated here, returned once, and stored only as a keyed hash
//! (`switchyard_shared::caller_key`).

use std::collections::HashMap;

use chrono::{DateTime, Duration, Utc};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, IntoActiveModel, QueryFilter,
    QueryOrder, QuerySelect, Set,
};
use switchyard_shared::caller_key::{self, KeyHasher};
use switchyard_shared::change::{Action, Resource};
use uuid::Uuid;

use super::members::{limit_in, limit_out};
use super::{Change, Page, Store, WriteTxn, check_etag, etag, has, mask_paths, pb, timestamp};
use crate::entity::caller;
use crate::error::{ApiError, ApiResult};
use crate::validate;

const UPDATABLE: &[&str] = &[
    "name",
    "description",
    "enabled",
    "models",
    "allow_direct",
    "rpm_limit",
    "tpm_limit",
    "daily_token_budget",
    "monthly_token_budget",
    "expire_time",
    "labels",
    "certificate_subject",
];
const MAX_MODELS: usize = 256;
const MAX_LABELS: usize = 32;
const BUDGET_MAX: u64 = 1_000_000_000_000;
const GRACE_MAX_SECS: u32 = 30 * 24 * 3600;
/// Everything: the one scope entry that is not a name.
pub const ALL_MODELS: &str = "*";

fn when(t: Option<DateTime<Utc>>) -> Option<prost_types::Timestamp> {
    t.map(timestamp)
}

fn to_proto(m: &caller::Model) -> pb::Caller {
    pb::Caller {
        id: m.id.to_string(),
        name: m.name.clone(),
        description: m.description.clone(),
        enabled: Some(m.enabled),
        models: serde_json::from_value(m.models.clone()).unwrap_or_default(),
        allow_direct: m.allow_direct,
        rpm_limit: limit_out(m.rpm_limit),
        tpm_limit: limit_out(m.tpm_limit),
        daily_token_budget: limit_out(m.daily_token_budget),
        monthly_token_budget: limit_out(m.monthly_token_budget),
        expire_time: when(m.expires_at),
        labels: serde_json::from_value(m.labels.clone()).unwrap_or_default(),
        certificate_subject: m.certificate_subject.clone(),
        key_prefix: m.key_prefix.clone(),
        previous_key_expire_time: when(m.previous_key_expires_at),
        etag: etag(m.revision),
        create_time: Some(timestamp(m.created_at)),
        update_time: Some(timestamp(m.updated_at)),
    }
}

/// What a worker needs to check a caller: hashes, never keys (and not
/// even hashes in GetSnapshot).
pub(super) fn to_snapshot(m: caller::Model, with_hashes: bool) -> pb::SnapshotCaller {
    let ms = |t: Option<DateTime<Utc>>| t.map_or(0, |t| t.timestamp_millis());
    let hash = |h: Option<Vec<u8>>| {
        if with_hashes {
            h.unwrap_or_default()
        } else {
            Vec::new()
        }
    };
    pb::SnapshotCaller {
        id: m.id.to_string(),
        enabled: m.enabled,
        models: serde_json::from_value(m.models).unwrap_or_default(),
        allow_direct: m.allow_direct,
        rpm_limit: limit_out(m.rpm_limit),
        tpm_limit: limit_out(m.tpm_limit),
        daily_token_budget: limit_out(m.daily_token_budget),
        monthly_token_budget: limit_out(m.monthly_token_budget),
        expire_time_ms: ms(m.expires_at),
        certificate_subject: m.certificate_subject,
        key_hash: hash(m.key_hash),
        previous_key_hash: hash(m.previous_key_hash),
        previous_key_expire_time_ms: ms(m.previous_key_expires_at),
        name: m.name,
    }
}

fn models_in(models: &[String]) -> ApiResult<serde_json::Value> {
    if models.len() > MAX_MODELS {
        return Err(ApiError::invalid(format!(
            "caller.models has {} entries; at most {MAX_MODELS} (or [\"*\"] for all)",
            models.len()
        )));
    }
    for (i, m) in models.iter().enumerate() {
        if m != ALL_MODELS {
            validate::name(&format!("caller.models[{i}]"), m)?;
        }
    }
    let mut sorted = models.to_vec();
    sorted.sort();
    sorted.dedup();
    serde_json::to_value(sorted).map_err(|e| ApiError::Internal(e.to_string()))
}

fn labels_in(labels: &HashMap<String, String>) -> ApiResult<serde_json::Value> {
    if labels.len() > MAX_LABELS {
        return Err(ApiError::invalid(format!(
            "caller.labels has {} entries; at most {MAX_LABELS}",
            labels.len()
        )));
    }
    for (k, v) in labels {
        validate::name("caller.labels key", k)?;
        validate::plain("caller.labels value", v, validate::LOOKUP_MAX)?;
    }
    let sorted: std::collections::BTreeMap<_, _> = labels.iter().collect();
    serde_json::to_value(sorted).map_err(|e| ApiError::Internal(e.to_string()))
}

fn expiry_in(
    t: Option<&prost_types::Timestamp>,
    now: DateTime<Utc>,
) -> ApiResult<Option<DateTime<Utc>>> {
    let Some(t) = t else { return Ok(None) };
    let at = DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).unwrap_or(0))
        .ok_or_else(|| ApiError::invalid("caller.expire_time is not a valid time"))?;
    if at <= now {
        return Err(ApiError::invalid(format!(
            "caller.expire_time {at} is in the past; give a future time, or none for a key that does not expire"
        )));
    }
    Ok(Some(at))
}

/// The fields a create or an update sets, checked.
fn check(c: &pb::Caller) -> ApiResult<()> {
    validate::name("caller.name", &c.name)?;
    validate::description("caller.description", &c.description)?;
    subject_in(&c.certificate_subject)
}

/// A client certificate's identity as workers compare it: the CN (or first
/// SAN) alone, not a distinguished name.
fn subject_in(s: &str) -> ApiResult<()> {
    validate::plain("caller.certificate_subject", s, validate::LOOKUP_MAX)?;
    if s.contains('=') || s.contains(',') {
        return Err(ApiError::invalid(format!(
            "caller.certificate_subject '{}' looks like a distinguished name; give the \
             certificate's CN (or its first DNS/URI SAN) alone, e.g. billing.internal",
            validate::clip(s)
        )));
    }
    Ok(())
}

/// One certificate, one caller: a subject bound twice would give whichever
/// caller a worker met last.
async fn check_subject_free<C: ConnectionTrait>(
    c: &C,
    subject: &str,
    except: Option<Uuid>,
) -> ApiResult<()> {
    if subject.is_empty() {
        return Ok(());
    }
    let taken = caller::Entity::find()
        .filter(caller::Column::CertificateSubject.eq(subject))
        .one(c)
        .await?;
    match taken {
        Some(t) if Some(t.id) != except => Err(ApiError::AlreadyExists(format!(
            "caller.certificate_subject '{}' is already bound to caller '{}'",
            validate::clip(subject),
            t.name
        ))),
        _ => Ok(()),
    }
}

async fn find<C: ConnectionTrait>(c: &C, field: &str, key: &str) -> ApiResult<caller::Model> {
    let key = super::required(field, key)?;
    let found = match Uuid::parse_str(key) {
        Ok(id) => caller::Entity::find_by_id(id).one(c).await?,
        Err(_) => {
            caller::Entity::find()
                .filter(caller::Column::Name.eq(key))
                .one(c)
                .await?
        }
    };
    found.ok_or_else(|| ApiError::not_found(format!("caller '{}' not found", validate::clip(key))))
}

async fn check_name_free<C: ConnectionTrait>(
    c: &C,
    name: &str,
    except: Option<Uuid>,
) -> ApiResult<()> {
    let taken = caller::Entity::find()
        .filter(caller::Column::Name.eq(name))
        .one(c)
        .await?;
    match taken {
        Some(t) if Some(t.id) != except => Err(ApiError::AlreadyExists(format!(
            "caller '{}' already exists",
            validate::clip(name)
        ))),
        _ => Ok(()),
    }
}

impl Store {
    fn key_hasher(&self) -> ApiResult<KeyHasher> {
        let key = self.master_key.as_ref().ok_or_else(|| {
            ApiError::FailedPrecondition(
                "caller keys are hashed under the master key: start the control plane with \
                 SWITCHYARD_MASTER_KEY or --master-key-file (the data plane needs the same key)"
                    .into(),
            )
        })?;
        Ok(KeyHasher::new(key))
    }

    pub async fn create_caller(&self, c: Option<pb::Caller>) -> ApiResult<pb::CallerWithKey> {
        self.write(async |w| self.create_caller_in(w, c).await)
            .await
    }

    async fn create_caller_in(
        &self,
        w: &WriteTxn,
        c: Option<pb::Caller>,
    ) -> ApiResult<(pb::CallerWithKey, Change)> {
        let c = c.ok_or_else(|| ApiError::invalid("caller is required"))?;
        check(&c)?;
        let hasher = self.key_hasher()?;
        check_name_free(&w.txn, &c.name, None).await?;
        check_subject_free(&w.txn, &c.certificate_subject, None).await?;
        let (key, shown) = caller_key::generate();
        let id = Uuid::now_v7();
        let model = caller::ActiveModel {
            id: Set(id),
            name: Set(c.name.clone()),
            description: Set(c.description.clone()),
            enabled: Set(c.enabled.unwrap_or(true)),
            models: Set(models_in(&c.models)?),
            allow_direct: Set(c.allow_direct),
            rpm_limit: Set(limit_in(
                "caller.rpm_limit",
                c.rpm_limit,
                validate::LIMIT_MAX,
            )?),
            tpm_limit: Set(limit_in(
                "caller.tpm_limit",
                c.tpm_limit,
                validate::LIMIT_MAX,
            )?),
            daily_token_budget: Set(limit_in(
                "caller.daily_token_budget",
                c.daily_token_budget,
                BUDGET_MAX,
            )?),
            monthly_token_budget: Set(limit_in(
                "caller.monthly_token_budget",
                c.monthly_token_budget,
                BUDGET_MAX,
            )?),
            expires_at: Set(expiry_in(c.expire_time.as_ref(), w.now)?),
            labels: Set(labels_in(&c.labels)?),
            certificate_subject: Set(c.certificate_subject.clone()),
            key_hash: Set(Some(hasher.hash(caller_key::expose(&key)).to_vec())),
            key_prefix: Set(shown),
            previous_key_hash: Set(None),
            previous_key_expires_at: Set(None),
            revision: Set(w.revision),
            created_at: Set(w.now),
            updated_at: Set(w.now),
        }
        .insert(&w.txn)
        .await?;
        let change = Change::new(Resource::Caller, Action::Created, id, &model.name);
        let out = pb::CallerWithKey {
            caller: Some(to_proto(&model)),
            key: caller_key::expose(&key).to_owned(),
        };
        Ok((out, change))
    }

    pub async fn get_caller(&self, key: &str) -> ApiResult<pb::Caller> {
        Ok(to_proto(&find(self.db(), "id_or_name", key).await?))
    }

    pub async fn list_callers(
        &self,
        r: &pb::ListCallersRequest,
    ) -> ApiResult<pb::ListCallersResponse> {
        let page = Page::parse(r.page_size, &r.page_token)?;
        let mut q = caller::Entity::find()
            .order_by_asc(caller::Column::Name)
            .limit(page.fetch());
        if let Some(after) = &page.after {
            q = q.filter(caller::Column::Name.gt(after.as_str()));
        }
        let mut rows = q.all(self.db()).await?;
        let next_page_token = page.finish(&mut rows, |r| r.name.clone());
        Ok(pb::ListCallersResponse {
            callers: rows.iter().map(to_proto).collect(),
            next_page_token,
        })
    }

    pub async fn update_caller(
        &self,
        c: Option<pb::Caller>,
        mask: Option<prost_types::FieldMask>,
    ) -> ApiResult<pb::Caller> {
        self.write(async |w| self.update_caller_in(w, c, mask).await)
            .await
    }

    async fn update_caller_in(
        &self,
        w: &WriteTxn,
        c: Option<pb::Caller>,
        mask: Option<prost_types::FieldMask>,
    ) -> ApiResult<(pb::Caller, Change)> {
        let c = c.ok_or_else(|| ApiError::invalid("caller is required"))?;
        let paths = mask_paths("caller", mask, UPDATABLE)?;
        let key = if c.id.is_empty() {
            if has(&paths, "name") {
                return Err(ApiError::invalid(
                    "caller.id is required when the update renames the caller",
                ));
            }
            c.name.clone()
        } else {
            c.id.clone()
        };
        let cur = find(&w.txn, "caller.id", &key).await?;
        check_etag("caller", &cur.name, &c.etag, cur.revision)?;
        let mut am = cur.clone().into_active_model();
        for path in &paths {
            match path.as_str() {
                "name" => {
                    validate::name("caller.name", &c.name)?;
                    check_name_free(&w.txn, &c.name, Some(cur.id)).await?;
                    am.name = Set(c.name.clone());
                }
                "description" => {
                    validate::description("caller.description", &c.description)?;
                    am.description = Set(c.description.clone());
                }
                "enabled" => am.enabled = Set(c.enabled.unwrap_or(true)),
                "models" => am.models = Set(models_in(&c.models)?),
                "allow_direct" => am.allow_direct = Set(c.allow_direct),
                "rpm_limit" => {
                    am.rpm_limit = Set(limit_in(
                        "caller.rpm_limit",
                        c.rpm_limit,
                        validate::LIMIT_MAX,
                    )?)
                }
                "tpm_limit" => {
                    am.tpm_limit = Set(limit_in(
                        "caller.tpm_limit",
                        c.tpm_limit,
                        validate::LIMIT_MAX,
                    )?)
                }
                "daily_token_budget" => {
                    am.daily_token_budget = Set(limit_in(
                        "caller.daily_token_budget",
                        c.daily_token_budget,
                        BUDGET_MAX,
                    )?)
                }
                "monthly_token_budget" => {
                    am.monthly_token_budget = Set(limit_in(
                        "caller.monthly_token_budget",
                        c.monthly_token_budget,
                        BUDGET_MAX,
                    )?)
                }
                "expire_time" => am.expires_at = Set(expiry_in(c.expire_time.as_ref(), w.now)?),
                "labels" => am.labels = Set(labels_in(&c.labels)?),
                "certificate_subject" => {
                    subject_in(&c.certificate_subject)?;
                    check_subject_free(&w.txn, &c.certificate_subject, Some(cur.id)).await?;
                    am.certificate_subject = Set(c.certificate_subject.clone());
                }
                _ => {}
            }
        }
        am.revision = Set(w.revision);
        am.updated_at = Set(w.now);
        let model = am.update(&w.txn).await?;
        let change = Change::new(Resource::Caller, Action::Updated, model.id, &model.name);
        Ok((to_proto(&model), change))
    }

    pub async fn delete_caller(&self, key: &str, given_etag: &str) -> ApiResult<()> {
        self.write(async |w| {
            let cur = find(&w.txn, "id_or_name", key).await?;
            check_etag("caller", &cur.name, given_etag, cur.revision)?;
            caller::Entity::delete_by_id(cur.id).exec(&w.txn).await?;
            Ok((
                (),
                Change::new(Resource::Caller, Action::Deleted, cur.id, &cur.name),
            ))
        })
        .await
    }

    /// A new key; the current one keeps working for `grace_seconds`.
    pub async fn rotate_caller_key(
        &self,
        r: &pb::RotateCallerKeyRequest,
    ) -> ApiResult<pb::CallerWithKey> {
        validate::range("grace_seconds", r.grace_seconds, 0, GRACE_MAX_SECS)?;
        let hasher = self.key_hasher()?;
        self.write(async |w| {
            let cur = find(&w.txn, "id_or_name", &r.id_or_name).await?;
            check_etag("caller", &cur.name, &r.etag, cur.revision)?;
            let (key, shown) = caller_key::generate();
            let mut am = cur.clone().into_active_model();
            if r.grace_seconds > 0 {
                am.previous_key_hash = Set(cur.key_hash.clone());
                am.previous_key_expires_at =
                    Set(Some(w.now + Duration::seconds(i64::from(r.grace_seconds))));
            } else {
                am.previous_key_hash = Set(None);
                am.previous_key_expires_at = Set(None);
            }
            am.key_hash = Set(Some(hasher.hash(caller_key::expose(&key)).to_vec()));
            am.key_prefix = Set(shown);
            am.revision = Set(w.revision);
            am.updated_at = Set(w.now);
            let model = am.update(&w.txn).await?;
            let change = Change::new(Resource::Caller, Action::Updated, model.id, &model.name);
            let out = pb::CallerWithKey {
                caller: Some(to_proto(&model)),
                key: caller_key::expose(&key).to_owned(),
            };
            Ok((out, change))
        })
        .await
    }
}
