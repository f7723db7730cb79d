//! The backend's contract: what a worker asks of the fleet's shared state
//! (Redis in production, memory in the embedded default) and what it
//! answers.

use std::collections::HashMap;
use std::time::Duration;

use super::{Entry, Failure, permits};
use crate::model::Limits;

#[derive(Debug, thiserror::Error)]
#[error("fleet state unavailable: {0}")]
pub struct BackendError(pub String);

/// A quota reservation's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reservation {
    Granted,
    /// Over a limit; the window has room again in about `retry_after`.
    Denied {
        requests: u64,
        tokens: u64,
        retry_after: Duration,
    },
}

/// A lease of a caller's token budgets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BudgetLease {
    /// Tokens taken from every window.
    Granted(u64),
    /// Window `window` is spent (`used` tokens).
    Spent { window: usize, used: u64 },
}

/// The authority over shared state. Every change returns the member's entry
/// as the fleet now has it (with the fleet's change counter).
#[async_trait::async_trait]
pub trait Backend: Send + Sync {
    async fn fail(
        &self,
        member: &str,
        f: &Failure,
        probe_owner: Option<&str>,
    ) -> Result<Entry, BackendError>;
    /// A success (`Entry::succeed`); `probe_owner` when it was the caller's probe.
    async fn succeed(&self, member: &str, probe_owner: Option<&str>)
    -> Result<Entry, BackendError>;
    /// Takes the member's probe if its bench is over and nobody holds it.
    async fn claim(
        &self,
        member: &str,
        owner: &str,
        ttl: Duration,
        stale_after: Duration,
    ) -> Result<(bool, Entry), BackendError>;
    async fn release(&self, member: &str, owner: &str) -> Result<Entry, BackendError>;
    /// Folds in failures a worker saw while it could not report them.
    async fn merge(&self, member: &str, local: &Entry) -> Result<Entry, BackendError>;
    /// Leases `n` round-robin tickets of a pool; returns the first.
    async fn lease(&self, pool_id: &str, n: u64) -> Result<u64, BackendError>;
    /// Settles a limited member's minute `minutes_ago` (0: the current one,
    /// 1: the one before, on the backend's clock): `requests` more (counted
    /// locally while the backend was away) and `tokens` more (the real count
    /// beyond the estimate) or fewer (an estimate given back).
    async fn charge(
        &self,
        member: &str,
        minutes_ago: i64,
        requests: i64,
        tokens: i64,
    ) -> Result<(), BackendError>;
    /// Leases a block of a limited member's (or caller's) sliding minute:
    /// at most what is left under each limit, counted as used at once.
    async fn permits(
        &self,
        key: &str,
        limits: Limits,
        want: permits::Want,
    ) -> Result<permits::Grant, BackendError>;
    /// A limited member's usage this minute: (requests, tokens).
    async fn usage(&self, member: &str) -> Result<(u64, u64), BackendError>;
    /// Leases up to `tokens` from a caller's token budgets — `windows`: a
    /// hash field per window (`d:<day>`, `m:<month>`) and its limit — at
    /// most what every window has left, unless one is already spent.
    async fn budget(
        &self,
        _key: &str,
        _windows: &[(String, u64)],
        _tokens: u64,
    ) -> Result<BudgetLease, BackendError> {
        Err(BackendError("this backend keeps no budgets".into()))
    }
    /// Adds `tokens` (negative: gives back) to each window of a budget.
    async fn budget_charge(
        &self,
        _key: &str,
        _fields: &[String],
        _tokens: i64,
    ) -> Result<(), BackendError> {
        Err(BackendError("this backend keeps no budgets".into()))
    }
    /// Several members' usage at once, in order (a backend that can
    /// pipelines them into one round trip).
    async fn usage_many(&self, members: &[String]) -> Result<Vec<(u64, u64)>, BackendError> {
        futures::future::try_join_all(members.iter().map(|m| self.usage(m))).await
    }
    /// The whole health table and the change counter it is at.
    async fn load(&self) -> Result<(HashMap<String, Entry>, u64), BackendError>;
}
