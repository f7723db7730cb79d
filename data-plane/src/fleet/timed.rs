//! A backend that times every call of the one it wraps, by operation and
//! result (`switchyard_redis_call_duration_seconds`).

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::family::Family;
use switchyard_shared::metrics::AtomicHistogram as Histogram;
use switchyard_shared::metrics::names::RedisCall;
use tokio::time::Instant;

use super::health::{Entry, Failure};
use super::{Backend, BackendError};
use crate::model::Limits;

pub struct Timed {
    inner: Arc<dyn Backend>,
    calls: Family<RedisCall, Histogram, fn() -> Histogram>,
}

impl Timed {
    pub fn new(
        inner: Arc<dyn Backend>,
        calls: Family<RedisCall, Histogram, fn() -> Histogram>,
    ) -> Self {
        Self { inner, calls }
    }

    async fn time<T>(
        &self,
        op: &'static str,
        call: impl Future<Output = Result<T, BackendError>>,
    ) -> Result<T, BackendError> {
        let start = Instant::now();
        let r = call.await;
        let result = if r.is_ok() { "ok" } else { "error" };
        self.calls
            .get_or_create(&RedisCall { op, result })
            .observe(start.elapsed().as_secs_f64());
        r
    }
}

#[async_trait::async_trait]
impl Backend for Timed {
    async fn fail(
        &self,
        member: &str,
        f: &Failure,
        probe_owner: Option<&str>,
    ) -> Result<Entry, BackendError> {
        self.time("fail", self.inner.fail(member, f, probe_owner))
            .await
    }
    async fn succeed(
        &self,
        member: &str,
        probe_owner: Option<&str>,
    ) -> Result<Entry, BackendError> {
        self.time("succeed", self.inner.succeed(member, probe_owner))
            .await
    }
    async fn claim(
        &self,
        member: &str,
        owner: &str,
        ttl: Duration,
        stale_after: Duration,
    ) -> Result<(bool, Entry), BackendError> {
        self.time("claim", self.inner.claim(member, owner, ttl, stale_after))
            .await
    }
    async fn release(&self, member: &str, owner: &str) -> Result<Entry, BackendError> {
        self.time("release", self.inner.release(member, owner))
            .await
    }
    async fn merge(&self, member: &str, local: &Entry) -> Result<Entry, BackendError> {
        self.time("merge", self.inner.merge(member, local)).await
    }
    async fn lease(&self, pool_id: &str, n: u64) -> Result<u64, BackendError> {
        self.time("lease", self.inner.lease(pool_id, n)).await
    }
    async fn charge(
        &self,
        member: &str,
        minutes_ago: i64,
        requests: i64,
        tokens: i64,
    ) -> Result<(), BackendError> {
        self.time(
            "charge",
            self.inner.charge(member, minutes_ago, requests, tokens),
        )
        .await
    }
    async fn permits(
        &self,
        key: &str,
        limits: Limits,
        want: super::permits::Want,
    ) -> Result<super::permits::Grant, BackendError> {
        self.time("permits", self.inner.permits(key, limits, want))
            .await
    }
    async fn usage(&self, member: &str) -> Result<(u64, u64), BackendError> {
        self.time("usage", self.inner.usage(member)).await
    }
    async fn budget(
        &self,
        key: &str,
        windows: &[(String, u64)],
        tokens: u64,
    ) -> Result<super::BudgetLease, BackendError> {
        self.time("budget", self.inner.budget(key, windows, tokens))
            .await
    }
    async fn budget_charge(
        &self,
        key: &str,
        fields: &[String],
        tokens: i64,
    ) -> Result<(), BackendError> {
        self.time(
            "budget_charge",
            self.inner.budget_charge(key, fields, tokens),
        )
        .await
    }
    async fn usage_many(&self, members: &[String]) -> Result<Vec<(u64, u64)>, BackendError> {
        self.time("usage", self.inner.usage_many(members)).await
    }
    async fn load(&self) -> Result<(HashMap<String, Entry>, u64), BackendError> {
        self.time("load", self.inner.load()).await
    }
}
