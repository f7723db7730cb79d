//! Where pool and caller statistics are kept: one hash of counters per
//! 10-second bucket, in Redis for a fleet (expiring after the keep time) or
//! in memory for `switchyard dev`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use super::stats::{KEEP, unix_secs};

/// Where the buckets are kept: Redis for a fleet, memory for `switchyard dev`.
#[async_trait::async_trait]
pub trait Store: Send + Sync {
    /// Adds `fields` to bucket `bucket`'s counters.
    async fn add(&self, bucket: i64, fields: Vec<(String, i64)>) -> Result<(), String>;
    /// The counters of each bucket.
    async fn read(&self, buckets: &[i64]) -> Result<Vec<HashMap<String, i64>>, String>;
}

/// Buckets in this process (the embedded `switchyard dev`).
#[derive(Default)]
pub struct MemoryStore {
    buckets: Mutex<BTreeMap<i64, HashMap<String, i64>>>,
}

#[async_trait::async_trait]
impl Store for MemoryStore {
    async fn add(&self, bucket: i64, fields: Vec<(String, i64)>) -> Result<(), String> {
        let mut b = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let oldest = unix_secs() - i64::try_from(KEEP.as_secs()).unwrap_or(i64::MAX);
        b.retain(|k, _| *k >= oldest);
        let h = b.entry(bucket).or_default();
        for (k, v) in fields {
            *h.entry(k).or_default() += v;
        }
        Ok(())
    }

    async fn read(&self, buckets: &[i64]) -> Result<Vec<HashMap<String, i64>>, String> {
        let b = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Ok(buckets.iter().filter_map(|k| b.get(k).cloned()).collect())
    }
}

/// Buckets in Redis: one hash per bucket, expiring after the keep time.
pub struct RedisStore {
    pub redis: switchyard_shared::redis_client::Redis,
    pub keys: switchyard_shared::keys::RedisKeys,
    pub conn: tokio::sync::OnceCell<switchyard_shared::redis_client::Conn>,
}

impl RedisStore {
    async fn conn(&self) -> Result<switchyard_shared::redis_client::Conn, String> {
        let timeouts = switchyard_shared::redis_client::Timeouts {
            connect: Duration::from_secs(1),
            response: Duration::from_secs(2),
        };
        self.conn
            .get_or_try_init(|| self.redis.connect(timeouts))
            .await
            .cloned()
            .map_err(|e| e.to_string())
    }
}

#[async_trait::async_trait]
impl Store for RedisStore {
    async fn add(&self, bucket: i64, fields: Vec<(String, i64)>) -> Result<(), String> {
        if fields.is_empty() {
            return Ok(());
        }
        let key = self.keys.stats_bucket(bucket);
        let mut pipe = redis::pipe();
        pipe.atomic();
        for (f, v) in &fields {
            pipe.hincr(&key, f, *v).ignore();
        }
        pipe.expire(&key, i64::try_from(KEEP.as_secs()).unwrap_or(3720))
            .ignore();
        let mut conn = self.conn().await?;
        pipe.query_async::<()>(&mut conn)
            .await
            .map_err(|e| e.to_string())
    }

    async fn read(&self, buckets: &[i64]) -> Result<Vec<HashMap<String, i64>>, String> {
        let mut pipe = redis::pipe();
        for b in buckets {
            pipe.hgetall(self.keys.stats_bucket(*b));
        }
        let mut conn = self.conn().await?;
        pipe.query_async(&mut conn).await.map_err(|e| e.to_string())
    }
}
