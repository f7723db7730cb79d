//! Pool and caller statistics, fleet-wide: each worker adds up what its
//! requests did per pool and per member, and per caller and model asked
//! for, in 10-second buckets, and flushes them every few seconds (off the
//! request path) into the fleet's store, where every worker's counts add
//! up. `GetPoolStats` and `GetCallerStats` read a window of buckets back.
//!
//! A bucket is one hash of counters (`HINCRBY`), kept an hour. Latency and
//! time to first token are fixed histogram buckets, so they add up across
//! workers and percentiles come out of the sum.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use switchyard_proto::v1 as pb;

use super::Finished;
use super::metrics::{code_name, outcome_name};
pub use super::store::{MemoryStore, RedisStore, Store};
pub use super::totals::{Hist, MemberAgg, PoolAgg, Totals, Use};
use super::totals::{add_fields, fields, merge, part, slot};
use crate::model::{is_direct, reached};

/// Seconds per bucket.
pub const BUCKET_SECS: i64 = 10;
/// How long buckets are kept (the longest window, plus a margin).
pub const KEEP: Duration = Duration::from_secs(3600 + 120);
/// Longest window a caller may ask for.
pub const MAX_WINDOW_SECS: u32 = 3600;

pub(crate) fn unix_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0))
}

/// Buckets not yet flushed, by bucket start.
type Pending = BTreeMap<i64, Totals>;

/// Shards of the pending statistics: each runtime thread keeps to one, so
/// requests on different threads do not queue on one lock.
const SHARDS: usize = 8;

/// One worker's statistics not yet flushed, and the store they go to.
pub struct Recorder {
    pending: Box<[Mutex<Pending>]>,
    store: Arc<dyn Store>,
}

impl Recorder {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self {
            pending: (0..SHARDS).map(|_| Mutex::new(Pending::new())).collect(),
            store,
        }
    }

    /// This thread's shard.
    fn shard(&self) -> std::sync::MutexGuard<'_, Pending> {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        thread_local! {
            static SHARD: usize = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        let i = SHARD.with(|s| *s) % self.pending.len().max(1);
        self.pending[i]
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Adds a finished request to the current bucket: to its caller's
    /// counts under `model` (the model asked for, as the metrics label it),
    /// every request; to its pool's, those whose first attempt was in a
    /// configured pool (direct `provider/model` calls are not kept there).
    pub fn record(&self, f: &Finished<'_>, model: &str) {
        let bucket = unix_secs().div_euclid(BUCKET_SECS) * BUCKET_SECS;
        let mut pending = self.shard();
        let totals = pending.entry(bucket).or_default();
        let used = slot(slot(&mut totals.callers, part(f.caller)), part(model));
        used.requests += 1;
        if f.code != tonic::Code::Ok {
            *slot(&mut used.failures, code_name(f.code)) += 1;
        }
        if let Some(u) = f.usage {
            used.input += u64::from(u.input_tokens);
            used.output += u64::from(u.output_tokens);
        }
        let Some(first) = f.attempts.first() else {
            return;
        };
        if is_direct(&first.pool) {
            return;
        }
        let totals = &mut totals.pools;
        let pool = slot(totals, &first.pool);
        pool.requests += 1;
        pool.latency.add(f.elapsed);
        if let Some(t) = f.ttft {
            pool.ttft.add(t);
        }
        if f.code != tonic::Code::Ok {
            *slot(&mut pool.failures, code_name(f.code)) += 1;
        }
        // Served by another member than one that failed (as the metric counts it).
        if let Some(s) = f.served
            && f.attempts.iter().any(|a| {
                reached(a.outcome)
                    && a.outcome != pb::AttemptOutcome::Ok as i32
                    && a.member_id != s.member_id
            })
        {
            pool.failovers += 1;
        }
        for a in f.attempts {
            if is_direct(&a.pool) {
                continue;
            }
            let m = slot(&mut slot(totals, &a.pool).members, &a.member_id);
            *slot(&mut m.outcomes, outcome_name(a.outcome)) += 1;
            if reached(a.outcome) {
                m.latency.add(Duration::from_micros(a.duration_us));
            }
        }
        if let (Some(s), Some(u)) = (f.served, f.usage) {
            let p = slot(totals, &s.pool);
            p.input += u64::from(u.input_tokens);
            p.output += u64::from(u.output_tokens);
            let m = slot(&mut p.members, &s.member_id);
            m.input += u64::from(u.input_tokens);
            m.output += u64::from(u.output_tokens);
        }
    }

    /// Sends what is pending to the store; what fails to go is kept for the
    /// next flush (buckets older than the keep time are dropped).
    pub async fn flush(&self) -> Result<(), String> {
        let mut result = Ok(());
        for shard in &self.pending {
            let taken = std::mem::take(
                &mut *shard
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner),
            );
            if taken.is_empty() {
                continue;
            }
            if let Err(e) = self.flush_shard(shard, taken).await {
                result = Err(e);
            }
        }
        result
    }

    /// Sends one shard's buckets; what fails to go goes back into it.
    async fn flush_shard(&self, shard: &Mutex<Pending>, taken: Pending) -> Result<(), String> {
        let mut result = Ok(());
        let mut failed = BTreeMap::new();
        for (bucket, totals) in taken {
            if result.is_ok() {
                match self.store.add(bucket, fields(&totals)).await {
                    Ok(()) => continue,
                    Err(e) => result = Err(e),
                }
            }
            failed.insert(bucket, totals);
        }
        if !failed.is_empty() {
            let oldest = unix_secs() - i64::try_from(KEEP.as_secs()).unwrap_or(i64::MAX);
            let mut pending = shard
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            for (bucket, totals) in failed.into_iter().filter(|(b, _)| *b >= oldest) {
                match pending.entry(bucket) {
                    std::collections::btree_map::Entry::Vacant(e) => {
                        e.insert(totals);
                    }
                    std::collections::btree_map::Entry::Occupied(mut e) => {
                        merge(e.get_mut(), totals);
                    }
                }
            }
        }
        result
    }

    /// Everything flushed over the last `window`, fleet-wide; and the
    /// window's bounds (Unix seconds).
    pub async fn read(&self, window: Duration) -> Result<(Totals, i64, i64), String> {
        let now = unix_secs();
        let from = now - i64::try_from(window.as_secs()).unwrap_or(0);
        // Whole buckets that start inside the window, up to the current one.
        let first = (from + BUCKET_SECS - 1).div_euclid(BUCKET_SECS) * BUCKET_SECS;
        let buckets: Vec<i64> = (first..=now)
            .step_by(usize::try_from(BUCKET_SECS).unwrap_or(10))
            .collect();
        let hashes = self.store.read(&buckets).await?;
        let mut totals = Totals::default();
        for h in &hashes {
            add_fields(&mut totals, h);
        }
        Ok((totals, first, now))
    }
}

/// Flushes the worker's statistics every `every` until `stop`, and once more then.
pub async fn flush_every(
    observer: Arc<super::Observer>,
    every: Duration,
    stop: tokio_util::sync::CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let last = tokio::select! {
            () = stop.cancelled() => true,
            _ = tick.tick() => false,
        };
        let result = observer.stats.flush().await;
        let label = if result.is_ok() { "ok" } else { "error" };
        observer
            .metrics
            .stats_flushes
            .get_or_create(&switchyard_shared::metrics::names::Outcome { result: label })
            .inc();
        if let Err(e) = result {
            tracing::debug!(error = %e, "statistics not flushed; kept for the next flush");
        }
        if last {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn percentiles_come_from_the_buckets() {
        let mut h = Hist::default();
        for ms in 1..=100u64 {
            h.add(Duration::from_millis(ms));
        }
        let p = h.percentiles();
        assert_eq!(p.count, 100);
        // Buckets grow by 1.5×: a quantile is within its bucket's width.
        assert!((p.p50_ms - 50.0).abs() < 50.0 * 0.5, "{p:?}");
        assert!((p.p99_ms - 99.0).abs() < 99.0 * 0.5, "{p:?}");
        assert!(p.p50_ms < p.p95_ms && p.p95_ms <= p.p99_ms, "{p:?}");
        assert_eq!(Hist::default().quantile_ms(0.5), 0.0);
    }

    #[test]
    fn fields_round_trip_and_add_up() {
        let mut t = Totals::default();
        let p = t.pools.entry("coding".into()).or_default();
        p.requests = 3;
        p.failures.insert("unavailable".into(), 1);
        p.latency.add(Duration::from_millis(5));
        let m = p.members.entry("m1".into()).or_default();
        m.outcomes.insert("ok".into(), 2);
        m.outcomes.insert("transient".into(), 1);
        m.outcomes.insert("skipped_benched".into(), 4);
        m.input = 10;
        let u = t
            .callers
            .entry("billing-svc".into())
            .or_default()
            .entry("coding".into())
            .or_default();
        u.requests = 5;
        u.failures.insert("permission_denied".into(), 2);
        (u.input, u.output) = (30, 40);
        let f: HashMap<String, i64> = fields(&t).into_iter().collect();
        let mut back = Totals::default();
        add_fields(&mut back, &f);
        assert_eq!(back, t);
        add_fields(&mut back, &f);
        let u = &back.callers["billing-svc"]["coding"];
        assert_eq!((u.requests, u.failed(), u.input, u.output), (10, 4, 60, 80));
        let p = &back.pools["coding"];
        assert_eq!(p.requests, 6);
        assert_eq!(p.members["m1"].attempts(), 6, "skips are not attempts");
        assert_eq!(p.members["m1"].served(), 4);
        assert_eq!(p.latency.count(), 2);
    }

    fn finished<'a>(
        caller: &'a str,
        code: tonic::Code,
        usage: Option<crate::upstream::Usage>,
        attempts: &'a [pb::Attempt],
    ) -> Finished<'a> {
        Finished {
            operation: crate::observe::Operation::Chat,
            model: "ignored: record takes the label",
            caller,
            code,
            elapsed: Duration::from_millis(3),
            ttft: None,
            served: None,
            usage,
            attempts,
        }
    }

    #[tokio::test]
    async fn every_request_counts_for_its_caller_and_pools_keep_their_own() {
        let r = Recorder::new(Arc::new(MemoryStore::default()));
        let usage = Some(crate::upstream::Usage::new(7, 11));
        let pooled = [pb::Attempt {
            pool: "coding".into(),
            member_id: "coding-a".into(),
            outcome: pb::AttemptOutcome::Ok.into(),
            ..Default::default()
        }];
        let direct = [pb::Attempt {
            pool: "up/m".into(),
            member_id: "up/m".into(),
            outcome: pb::AttemptOutcome::Ok.into(),
            ..Default::default()
        }];
        r.record(&finished("a", tonic::Code::Ok, usage, &pooled), "coding");
        r.record(&finished("a", tonic::Code::Ok, usage, &pooled), "coding");
        // Refused before any attempt: the caller's, not the pool's.
        r.record(
            &finished("a", tonic::Code::PermissionDenied, None, &[]),
            "secret",
        );
        // A direct call: the caller's only.
        r.record(&finished("b", tonic::Code::Ok, usage, &direct), "up/m");
        // A caller-chosen name holding the field separator.
        r.record(&finished("b", tonic::Code::NotFound, None, &[]), "x\u{1f}y");
        r.flush().await.expect("memory");
        let (t, ..) = r.read(Duration::from_secs(60)).await.expect("memory");
        assert_eq!(t.pools.len(), 1);
        assert_eq!(t.pools["coding"].requests, 2);
        let a = &t.callers["a"];
        assert_eq!(
            (a["coding"].requests, a["coding"].input, a["coding"].output),
            (2, 14, 22)
        );
        assert_eq!(a["secret"].failures["permission_denied"], 1);
        let b = &t.callers["b"];
        assert_eq!((b["up/m"].requests, b["up/m"].failed()), (1, 0));
        assert_eq!(b["other"].failures["not_found"], 1);
        let mut total = Use::default();
        a.values().for_each(|u| total.add(u));
        assert_eq!((total.requests, total.failed(), total.input), (3, 1, 14));
    }
}
