//! The in-process backend of the embedded default (and of unit tests on
//! paused time): the same rules as the Redis scripts, over a map.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use super::{Backend, BackendError, Entry, Failure, Reservation};
use crate::model::Limits;

#[derive(Default)]
struct State {
    version: u64,
    health: HashMap<String, Entry>,
    counters: HashMap<String, u64>,
    /// (member, minute) → (requests, tokens).
    usage: HashMap<(String, i64), (u64, u64)>,
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

    async fn succeed(&self, member: &str) -> Result<Entry, BackendError> {
        Ok(self
            .change(member, |e, now| {
                *e = Entry::new(now);
                true
            })
            .1)
    }

    async fn claim(
        &self,
        member: &str,
        owner: &str,
        ttl: Duration,
    ) -> Result<(bool, Entry), BackendError> {
        Ok(self.change(member, |e, now| e.claim(now, owner, ttl)))
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

    async fn reserve(
        &self,
        member: &str,
        limits: Limits,
        minute: i64,
    ) -> Result<Reservation, BackendError> {
        let mut s = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        s.usage.retain(|(_, m), _| *m >= minute - 1);
        let u = s.usage.entry((member.to_owned(), minute)).or_default();
        if limits.rpm.is_some_and(|l| u.0 >= l) || limits.tpm.is_some_and(|l| u.1 >= l) {
            return Ok(Reservation::Denied {
                requests: u.0,
                tokens: u.1,
            });
        }
        u.0 += 1;
        Ok(Reservation::Granted)
    }

    async fn charge(&self, member: &str, tokens: u64, minute: i64) -> Result<(), BackendError> {
        let mut s = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        s.usage.entry((member.to_owned(), minute)).or_default().1 += tokens;
        Ok(())
    }

    async fn usage(&self, member: &str, minute: i64) -> Result<(u64, u64), BackendError> {
        Ok(self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .usage
            .get(&(member.to_owned(), minute))
            .copied()
            .unwrap_or_default())
    }

    async fn load(&self) -> Result<HashMap<String, Entry>, BackendError> {
        Ok(self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .health
            .clone())
    }
}
