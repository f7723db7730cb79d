//! The in-process backend of the embedded default (and of unit tests on
//! paused time): the same rules as the Redis scripts, over a map.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use super::{Backend, BackendError, Entry, Failure};
use crate::model::Limits;

#[derive(Default)]
struct State {
    version: u64,
    health: HashMap<String, Entry>,
    counters: HashMap<String, u64>,
    /// (member, minute) → (requests, tokens).
    usage: HashMap<(String, i64), (u64, u64)>,
    /// (budget, window) → tokens used.
    budgets: HashMap<(String, String), i64>,
}

/// The current Unix minute and the weight of the previous one in the
/// sliding window (what is left of it), as the PERMITS script reckons it
/// (whole seconds).
fn window() -> (i64, f64) {
    let (m, into) = super::quota::wall_minute();
    (m, 1.0 - into.as_secs() as f64 / 60.0)
}

#[derive(Default)]
pub struct MemoryBackend {
    state: Mutex<State>,
}

impl MemoryBackend {
    fn change(&self, member: &str, f: impl FnOnce(&mut Entry, Instant) -> bool) -> (bool, Entry) {
        let mut s = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = Instant::now();
        let mut e = s
            .health
            .get(member)
            .cloned()
            .unwrap_or_else(|| Entry::new(now));
        let r = f(&mut e, now);
        s.version += 1;
        e.version = s.version;
        if e.is_clear() {
            s.health.remove(member);
        } else {
            s.health.insert(member.to_owned(), e.clone());
        }
        (r, e)
    }
}

#[async_trait::async_trait]
impl Backend for MemoryBackend {
    async fn fail(
        &self,
        member: &str,
        f: &Failure,
        probe_owner: Option<&str>,
    ) -> Result<Entry, BackendError> {
        Ok(self
            .change(member, |e, now| {
                e.fail(now, f, probe_owner);
                true
            })
            .1)
    }

    async fn succeed(
        &self,
        member: &str,
        probe_owner: Option<&str>,
    ) -> Result<Entry, BackendError> {
        Ok(self
            .change(member, |e, now| {
                e.succeed(now, probe_owner);
                true
            })
            .1)
    }

    async fn claim(
        &self,
        member: &str,
        owner: &str,
        ttl: Duration,
        stale_after: Duration,
    ) -> Result<(bool, Entry), BackendError> {
        Ok(self.change(member, |e, now| e.claim(now, owner, ttl, stale_after)))
    }

    async fn release(&self, member: &str, owner: &str) -> Result<Entry, BackendError> {
        Ok(self.change(member, |e, now| e.release(now, owner)).1)
    }

    async fn merge(&self, member: &str, local: &Entry) -> Result<Entry, BackendError> {
        Ok(self
            .change(member, |e, now| {
                e.merge(now, local);
                true
            })
            .1)
    }

    async fn lease(&self, pool_id: &str, n: u64) -> Result<u64, BackendError> {
        let mut s = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let c = s.counters.entry(pool_id.to_owned()).or_default();
        let first = *c + 1;
        *c += n;
        Ok(first)
    }

    async fn permits(
        &self,
        key: &str,
        limits: Limits,
        want: super::permits::Want,
    ) -> Result<super::permits::Grant, BackendError> {
        let (m, weight) = window();
        let left = Duration::from_secs(60).saturating_sub(super::quota::wall_minute().1);
        let mut s = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        s.usage.retain(|(_, minute), _| *minute >= m - 1);
        let prev = s
            .usage
            .get(&(key.to_owned(), m - 1))
            .copied()
            .unwrap_or_default();
        let cur = s.usage.entry((key.to_owned(), m)).or_default();
        // As the PERMITS script.
        let r = cur.0 as f64 + prev.0 as f64 * weight;
        let t = cur.1 as f64 + prev.1 as f64 * weight;
        let refused = super::permits::Grant {
            requests: 0,
            tokens: 0,
            used_requests: r as u64,
            used_tokens: t as u64,
            left,
        };
        if limits.rpm.is_some_and(|l| r >= l as f64) || limits.tpm.is_some_and(|l| t >= l as f64) {
            return Ok(refused);
        }
        let room = |l: Option<u64>, used: f64, want: u64| {
            l.map_or(want, |l| want.min((l as f64 - used).ceil() as u64))
        };
        let requests = room(limits.rpm, r, want.requests);
        let tokens = room(limits.tpm, t, want.tokens);
        cur.0 += requests;
        cur.1 += tokens;
        Ok(super::permits::Grant {
            requests,
            tokens,
            used_requests: r as u64 + requests,
            used_tokens: t as u64 + tokens,
            left,
        })
    }

    async fn budget(
        &self,
        key: &str,
        windows: &[(String, u64)],
        tokens: u64,
    ) -> Result<super::BudgetLease, BackendError> {
        let mut s = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut grant = tokens;
        for (i, (field, limit)) in windows.iter().enumerate() {
            let used = s
                .budgets
                .get(&(key.to_owned(), field.clone()))
                .copied()
                .unwrap_or(0);
            let used = u64::try_from(used).unwrap_or(0);
            if used >= *limit {
                return Ok(super::BudgetLease::Spent { window: i, used });
            }
            grant = grant.min(limit - used);
        }
        for (field, _) in windows {
            *s.budgets
                .entry((key.to_owned(), field.clone()))
                .or_default() += i64::try_from(grant).unwrap_or(i64::MAX);
        }
        Ok(super::BudgetLease::Granted(grant))
    }

    async fn budget_charge(
        &self,
        key: &str,
        fields: &[String],
        tokens: i64,
    ) -> Result<(), BackendError> {
        let mut s = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for field in fields {
            let v = s
                .budgets
                .entry((key.to_owned(), field.clone()))
                .or_default();
            *v = v.saturating_add(tokens).max(0);
        }
        Ok(())
    }

    async fn charge(
        &self,
        member: &str,
        minutes_ago: i64,
        requests: i64,
        tokens: i64,
    ) -> Result<(), BackendError> {
        if minutes_ago > 1 {
            return Ok(());
        }
        let (m, _) = window();
        let mut s = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let u = s
            .usage
            .entry((member.to_owned(), m - minutes_ago.max(0)))
            .or_default();
        u.0 = u.0.saturating_add_signed(requests);
        u.1 = u.1.saturating_add_signed(tokens);
        Ok(())
    }

    async fn usage(&self, member: &str) -> Result<(u64, u64), BackendError> {
        let (m, _) = window();
        Ok(self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .usage
            .get(&(member.to_owned(), m))
            .copied()
            .unwrap_or_default())
    }

    async fn load(&self) -> Result<(HashMap<String, Entry>, u64), BackendError> {
        let s = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Ok((s.health.clone(), s.version))
    }
}
