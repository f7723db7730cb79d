//! Who the callers are, as a worker holds them: built from the snapshot's
//! callers with the catalog, looked up by key hash or certificate subject,
//! and the grant a call was let in with (scope checks).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use switchyard_proto::v1 as pb;

use crate::error::DpError;
use crate::model::Limits;

/// A caller as a worker checks it.
#[derive(Debug)]
pub struct CallerEntry {
    pub id: String,
    pub name: String,
    /// The name as a response header value, made once per config load.
    pub(crate) header: Option<http::HeaderValue>,
    pub(crate) enabled: bool,
    pub(crate) all_models: bool,
    pub(crate) models: HashSet<String>,
    pub(crate) allow_direct: bool,
    pub limits: Limits,
    pub daily_budget: Option<u64>,
    pub monthly_budget: Option<u64>,
    /// Unix ms; 0 = never.
    pub(crate) expires_ms: i64,
}

impl CallerEntry {
    /// The key every fleet-wide count of this caller is kept under.
    pub fn quota_key(&self) -> String {
        format!("caller:{}", self.id)
    }
}

/// Every caller of a snapshot, by key hash and by certificate subject.
#[derive(Debug, Default)]
pub struct Callers {
    /// Hash → caller and until when that key works (Unix ms; 0 = while the caller does).
    pub(crate) by_hash: HashMap<[u8; 32], (Arc<CallerEntry>, i64)>,
    pub(crate) by_subject: HashMap<String, Arc<CallerEntry>>,
}

impl Callers {
    pub fn build(snap: &[pb::SnapshotCaller]) -> Self {
        let mut out = Self::default();
        let mut ambiguous = Vec::new();
        for c in snap {
            let entry = Arc::new(CallerEntry {
                id: c.id.clone(),
                name: c.name.clone(),
                header: http::HeaderValue::from_str(&c.name).ok(),
                enabled: c.enabled,
                all_models: c.models.iter().any(|m| m == "*"),
                models: c.models.iter().cloned().collect(),
                allow_direct: c.allow_direct,
                limits: Limits {
                    rpm: c.rpm_limit,
                    tpm: c.tpm_limit,
                },
                daily_budget: c.daily_token_budget,
                monthly_budget: c.monthly_token_budget,
                expires_ms: c.expire_time_ms,
            });
            if let Ok(h) = <[u8; 32]>::try_from(c.key_hash.as_slice()) {
                out.by_hash.insert(h, (entry.clone(), 0));
            }
            if let Ok(h) = <[u8; 32]>::try_from(c.previous_key_hash.as_slice()) {
                out.by_hash
                    .insert(h, (entry.clone(), c.previous_key_expire_time_ms.max(1)));
            }
            if !c.certificate_subject.is_empty()
                && out
                    .by_subject
                    .insert(c.certificate_subject.clone(), entry.clone())
                    .is_some()
            {
                // The control plane refuses this; an older one might not.
                ambiguous.push(c.certificate_subject.clone());
            }
        }
        for subject in ambiguous {
            out.by_subject.remove(&subject);
            tracing::warn!(subject = %subject, "certificate subject bound to several callers: refused for all");
        }
        out
    }

    pub fn is_empty(&self) -> bool {
        self.by_hash.is_empty() && self.by_subject.is_empty()
    }
}

/// The names calls without a caller key go by.
pub const ANONYMOUS: &str = "anonymous";
pub const TOKEN: &str = "token";

/// Who a call was let in as; in the request's extensions.
#[derive(Clone, Debug)]
pub enum Grant {
    /// `--no-auth`: nobody is checked.
    Open,
    /// A token of the deprecated flat list: every model, no limits.
    Token,
    Caller(Arc<CallerEntry>),
}

impl Grant {
    /// `x-switchyard-caller`'s value: the caller's name (never a key).
    pub fn header(&self) -> Option<http::HeaderValue> {
        match self {
            Self::Caller(c) => c.header.clone(),
            Self::Open => Some(http::HeaderValue::from_static(ANONYMOUS)),
            Self::Token => Some(http::HeaderValue::from_static(TOKEN)),
        }
    }

    /// The name logs, metrics and traces carry (never a key).
    pub fn name(&self) -> &str {
        match self {
            Self::Open => ANONYMOUS,
            Self::Token => TOKEN,
            Self::Caller(c) => &c.name,
        }
    }

    /// Whether this caller may use `model` (a route or pool, or a direct
    /// `provider/model` when `direct`).
    pub fn permit(&self, model: &str, direct: bool) -> Result<(), DpError> {
        let Self::Caller(c) = self else {
            return Ok(());
        };
        if direct {
            if c.allow_direct {
                return Ok(());
            }
            return Err(DpError::Forbidden(format!(
                "caller '{}' may not address provider/model '{model}' directly; \
                 call a pool or route, or set allow_direct on the caller",
                c.name
            )));
        }
        if c.all_models || c.models.contains(model) {
            return Ok(());
        }
        let mut allowed: Vec<&str> = c.models.iter().map(String::as_str).collect();
        allowed.sort_unstable();
        Err(DpError::Forbidden(format!(
            "caller '{}' may not use model '{model}'; its models are: {}",
            c.name,
            if allowed.is_empty() {
                "none".to_owned()
            } else {
                allowed.join(", ")
            }
        )))
    }

    /// Whether ListModels shows `model` to this caller.
    pub fn sees(&self, model: &str) -> bool {
        match self {
            Self::Caller(c) => c.all_models || c.models.contains(model),
            _ => true,
        }
    }
}
