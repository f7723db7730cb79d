//! Who may call: caller keys (from the snapshot, as keyed hashes), a
//! client certificate bound to a caller, the deprecated flat token list, or
//! nobody checked at all (`--no-auth`). Checked in a tower filter in front of
//! every service, from memory only: no Redis, no Postgres.

use std::sync::Arc;

use arc_swap::ArcSwap;
use switchyard_shared::auth::Authorizer;
use switchyard_shared::caller_key::KeyHasher;
use tonic::Status;
use tower::BoxError;

use crate::callers::{CallerEntry, Grant};
use crate::catalog::Catalog;
use crate::error::DpError;

/// The filter in front of the data plane's services.
#[derive(Clone)]
pub struct Access {
    catalog: Arc<ArcSwap<Catalog>>,
    /// The current master key's hasher, then the previous one's (a key
    /// made before a rotation still matches).
    hashers: Vec<KeyHasher>,
    /// The deprecated flat token list (disabled when empty).
    tokens: Authorizer,
    open: bool,
    /// Refused authentications (`switchyard_auth_failures_total`).
    refused: prometheus_client::metrics::counter::Counter,
}

impl Access {
    pub fn new(
        catalog: Arc<ArcSwap<Catalog>>,
        hashers: Vec<KeyHasher>,
        tokens: Authorizer,
        open: bool,
        refused: prometheus_client::metrics::counter::Counter,
    ) -> Self {
        Self {
            catalog,
            hashers,
            tokens,
            open,
            refused,
        }
    }

    fn decide(
        &self,
        path: &str,
        req: &http::Extensions,
        headers: &http::HeaderMap,
    ) -> Result<Option<Grant>, DpError> {
        if !path.starts_with("/switchyard.") && !path.starts_with("/v1/") {
            return Ok(None); // health and reflection stay open
        }
        if self.open {
            return Ok(Some(Grant::Open));
        }
        let catalog = self.catalog.load();
        if !catalog.loaded {
            // Not the caller's fault: its key may be fine, we cannot tell yet.
            return Err(DpError::NotReady);
        }
        if let Some(subject) = switchyard_shared::tls::client_identity(req)
            && let Some(c) = catalog.callers.by_subject.get(&subject)
        {
            return usable(c, 0).map(|()| Some(Grant::Caller(c.clone())));
        }
        let Some(header) = headers.get(http::header::AUTHORIZATION) else {
            return Err(DpError::Unauthenticated(
                "missing 'authorization: Bearer <key>' metadata; ask an operator for a caller key",
            ));
        };
        let key = header
            .to_str()
            .ok()
            .and_then(|h| {
                h.strip_prefix("Bearer ")
                    .or_else(|| h.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .ok_or(DpError::Unauthenticated(
                "authorization metadata must be 'Bearer <key>'",
            ))?;
        // The key itself, not `Authorizer::authorize`: that one decides the
        // control plane's RPCs by role (a reader may only read them).
        if self.tokens.knows(key) {
            return Ok(Some(Grant::Token));
        }
        for hasher in &self.hashers {
            if let Some((c, until)) = catalog.callers.by_hash.get(&hasher.hash(key)) {
                return usable(c, *until).map(|()| Some(Grant::Caller(c.clone())));
            }
        }
        Err(DpError::Unauthenticated(UNKNOWN_KEY))
    }
}

/// What an unknown, disabled, expired or rotated-out key is told: all look
/// alike to the caller.
const UNKNOWN_KEY: &str = "unknown or revoked key";

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// A known key may still be refused: disabled, expired, or a rotated-out
/// key past its grace period. All look alike to the caller.
fn usable(c: &CallerEntry, until: i64) -> Result<(), DpError> {
    let now = now_ms();
    let expired = (c.expires_ms > 0 && now >= c.expires_ms) || (until > 0 && now >= until);
    if !c.enabled || expired {
        return Err(DpError::Unauthenticated(UNKNOWN_KEY));
    }
    Ok(())
}

impl Access {
    /// Who is calling `path`: a grant, nobody needed (health, reflection),
    /// or the refusal (counted and logged).
    pub fn check(
        &self,
        path: &str,
        ext: &http::Extensions,
        headers: &http::HeaderMap,
    ) -> Result<Option<Grant>, DpError> {
        self.decide(path, ext, headers).inspect_err(|e| {
            self.refused.inc();
            tracing::info!(path = %path, "call refused: {e}");
        })
    }
}

impl<B> tower::filter::Predicate<http::Request<B>> for Access {
    type Request = http::Request<B>;

    fn check(&mut self, mut req: http::Request<B>) -> Result<Self::Request, BoxError> {
        match Access::check(self, req.uri().path(), req.extensions(), req.headers()) {
            Ok(grant) => {
                if let Some(g) = grant {
                    req.extensions_mut().insert(g);
                }
                Ok(req)
            }
            Err(e) => Err(Box::new(Status::from(e))),
        }
    }
}

/// A caller's own request and token estimate, reserved fleet-wide like a
/// limited member's (rpm/tpm), and taken from its daily and monthly token
/// budgets. Settled on the real count (`settle`), kept as estimated when the
/// answer reported no usage (`keep`), and given back when dropped without
/// either: nothing was served, or the caller left first.
pub struct Admission {
    fleet: crate::fleet::Fleet,
    key: String,
    estimate: u64,
    /// Counted against the caller's sliding minute.
    limited: bool,
    /// The budget windows to charge, and how much was taken from them ahead.
    budget: Vec<String>,
    budget_taken: u64,
    done: bool,
}

/// A caller's budget windows now: hash field, limit, what to call it, and
/// how long until it resets (UTC day and calendar month).
fn budget_windows(
    c: &CallerEntry,
    now: chrono::DateTime<chrono::Utc>,
) -> Vec<(String, u64, &'static str, std::time::Duration)> {
    use chrono::{Datelike as _, TimeZone as _};
    let mut out = Vec::new();
    let until = |t: Option<chrono::DateTime<chrono::Utc>>| {
        t.and_then(|t| (t - now).to_std().ok())
            .unwrap_or(std::time::Duration::from_secs(60))
    };
    if let Some(limit) = c.daily_budget {
        let next = now
            .date_naive()
            .succ_opt()
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .map(|d| chrono::Utc.from_utc_datetime(&d));
        out.push((
            format!("d:{}", now.format("%Y-%m-%d")),
            limit,
            "daily",
            until(next),
        ));
    }
    if let Some(limit) = c.monthly_budget {
        let (y, m) = if now.month() == 12 {
            (now.year() + 1, 1)
        } else {
            (now.year(), now.month() + 1)
        };
        let next = chrono::Utc.with_ymd_and_hms(y, m, 1, 0, 0, 0).single();
        out.push((
            format!("m:{}", now.format("%Y-%m")),
            limit,
            "monthly",
            until(next),
        ));
    }
    out
}

/// Admits one request of a caller with limits or budgets: one bounded
/// round trip for each (none for a caller without them).
pub async fn admit(
    fleet: &crate::fleet::Fleet,
    grant: Option<&Grant>,
    estimate: u64,
) -> Result<Option<Admission>, DpError> {
    let Some(Grant::Caller(c)) = grant else {
        return Ok(None);
    };
    let windows = budget_windows(c, chrono::Utc::now());
    if !c.limits.any() && windows.is_empty() {
        return Ok(None);
    }
    let mut admission = Admission {
        fleet: fleet.clone(),
        key: c.quota_key(),
        estimate,
        limited: false,
        budget: Vec::new(),
        budget_taken: 0,
        done: false,
    };
    if c.limits.any() {
        if let crate::fleet::Reservation::Denied {
            requests,
            tokens,
            retry_after,
        } = fleet.reserve(&admission.key, c.limits, estimate).await
        {
            admission.done = true;
            let mut over = Vec::new();
            if let Some(l) = c.limits.rpm.filter(|l| requests >= *l) {
                over.push(format!("{requests} of {l} requests"));
            }
            if let Some(l) = c.limits.tpm.filter(|l| tokens >= *l) {
                over.push(format!("{tokens} of {l} tokens"));
            }
            return Err(DpError::CallerLimit {
                message: format!(
                    "caller '{}' used its limit for this minute ({}); it resets in {} s",
                    c.name,
                    over.join(", "),
                    retry_after.as_secs().max(1)
                ),
                retry_after,
            });
        }
        admission.limited = true;
    }
    if !windows.is_empty() {
        let asked: Vec<(String, u64)> = windows.iter().map(|(f, l, ..)| (f.clone(), *l)).collect();
        // The first window to reset ends the budget block.
        let left = windows
            .iter()
            .map(|(.., resets)| *resets)
            .min()
            .unwrap_or_default();
        match fleet.budget(&admission.key, &asked, left, estimate).await {
            crate::fleet::Budget::Spent { window, used } => {
                // Dropping the admission gives the minute's estimate back.
                let (_, limit, which, resets) = &windows[window.min(windows.len() - 1)];
                return Err(DpError::CallerLimit {
                    message: format!(
                        "caller '{}' spent its {which} token budget ({used} of {limit} tokens); \
                         it resets in {} min",
                        c.name,
                        resets.as_secs().div_ceil(60)
                    ),
                    retry_after: *resets,
                });
            }
            crate::fleet::Budget::Taken => admission.budget_taken = estimate,
            crate::fleet::Budget::Unchecked => admission.budget_taken = 0,
        }
        admission.budget = asked.into_iter().map(|(f, _)| f).collect();
    }
    Ok(Some(admission))
}

fn signed(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl Admission {
    /// The answer's real token count replaces the estimate.
    pub fn settle(mut self, used: u64) {
        self.charge(used);
    }

    fn charge(&mut self, used: u64) {
        self.done = true;
        if self.limited {
            self.fleet.settle(&self.key, used, self.estimate);
        }
        let diff = signed(used).saturating_sub(signed(self.budget_taken));
        self.fleet
            .budget_charge(&self.key, std::mem::take(&mut self.budget), diff);
    }
}

impl Drop for Admission {
    /// Nothing was served (or the caller left): the estimate goes back; the
    /// request still counts against the minute.
    fn drop(&mut self) {
        if !self.done {
            self.charge(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Limits;
    use chrono::TimeZone as _;

    fn caller(daily: Option<u64>, monthly: Option<u64>) -> CallerEntry {
        CallerEntry {
            id: "c1".into(),
            name: "svc".into(),
            header: None,
            enabled: true,
            all_models: false,
            models: ["coding".to_owned()].into(),
            allow_direct: false,
            limits: Limits::default(),
            daily_budget: daily,
            monthly_budget: monthly,
            expires_ms: 0,
        }
    }

    #[test]
    fn budget_windows_are_the_utc_day_and_month_and_say_when_they_reset() {
        let now = chrono::Utc
            .with_ymd_and_hms(2026, 12, 31, 23, 30, 0)
            .single()
            .expect("time");
        let w = budget_windows(&caller(Some(100), Some(1000)), now);
        assert_eq!(w[0].0, "d:2026-12-31");
        assert_eq!(w[0].3, std::time::Duration::from_secs(30 * 60));
        assert_eq!(w[1].0, "m:2026-12");
        assert_eq!(
            w[1].3,
            std::time::Duration::from_secs(30 * 60),
            "the year rolls over"
        );
        assert!(budget_windows(&caller(None, None), now).is_empty());
    }

    #[test]
    fn scope_names_the_model_and_what_the_caller_may_use() {
        let g = Grant::Caller(Arc::new(caller(None, None)));
        assert!(g.permit("coding", false).is_ok());
        let e = g
            .permit("chat", false)
            .expect_err("out of scope")
            .to_string();
        assert!(
            e.contains("may not use model 'chat'") && e.contains("coding"),
            "{e}"
        );
        assert!(g.permit("openai/gpt-4o", true).is_err());
        assert!(g.sees("coding") && !g.sees("chat"));
        assert!(Grant::Open.permit("anything", true).is_ok());
    }
}
