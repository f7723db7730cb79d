//! Pool and caller statistics, fleet-wide: each worker adds up what its
//! requests did per pool and per member, and per caller and model asked
//! for, in 10-second buckets, and flushes them every few seconds (off the
//! request path) into the fleet's store, where every worker's counts add
//! up. `GetPoolStats` and `GetCallerStats` read a window of buckets back.
//!
//! A bucket is one hash of counters (`HINCRBY`), kept an hour. Latency and
//! time to first token are fixed histogram buckets, so they add up across
//! workers and percentiles come out of the sum.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use switchyard_proto::v1 as pb;

use super::Finished;
use super::metrics::{code_name, outcome_name};
pub use super::store::{MemoryStore, RedisStore, Store};
use crate::model::{is_direct, reached};

/// Seconds per bucket.
pub const BUCKET_SECS: i64 = 10;
/// How long buckets are kept (the longest window, plus a margin).
pub const KEEP: Duration = Duration::from_secs(3600 + 120);
/// Longest window a caller may ask for.
pub const MAX_WINDOW_SECS: u32 = 3600;

/// Upper bounds of the latency histogram, in microseconds: 250 µs × 1.5^i,
/// up to about 80 s; one more bucket holds everything above.
fn bounds() -> &'static [u64] {
    static B: std::sync::OnceLock<Vec<u64>> = std::sync::OnceLock::new();
    B.get_or_init(|| {
        let mut v = Vec::with_capacity(32);
        let mut b = 250.0_f64;
        for _ in 0..32 {
            // Rounded to whole microseconds; the bounds are small and positive.
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            v.push(b.round() as u64);
            b *= 1.5;
        }
        v
    })
}

fn bucket_of(us: u64) -> usize {
    bounds().partition_point(|b| *b < us)
}

/// A latency histogram (counts per bucket).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Hist(pub BTreeMap<usize, u64>);

impl Hist {
    fn add(&mut self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        *self.0.entry(bucket_of(us)).or_default() += 1;
    }

    pub fn count(&self) -> u64 {
        self.0.values().sum()
    }

    /// The `q` quantile in milliseconds, interpolated inside its bucket.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        let total = self.count();
        if total == 0 {
            return 0.0;
        }
        #[allow(clippy::cast_precision_loss)]
        let rank = q * total as f64;
        let mut seen = 0u64;
        for (&i, &c) in &self.0 {
            #[allow(clippy::cast_precision_loss)]
            if (seen + c) as f64 >= rank {
                let b = bounds();
                let lo = if i == 0 { 0 } else { b[i - 1] };
                let hi = b.get(i).copied().unwrap_or(lo * 2);
                #[allow(clippy::cast_precision_loss)]
                let within = ((rank - seen as f64) / c as f64).clamp(0.0, 1.0);
                #[allow(clippy::cast_precision_loss)]
                return (lo as f64 + within * (hi - lo) as f64) / 1000.0;
            }
            seen += c;
        }
        0.0
    }

    pub fn percentiles(&self) -> pb::Percentiles {
        pb::Percentiles {
            count: self.count(),
            p50_ms: self.quantile_ms(0.50),
            p95_ms: self.quantile_ms(0.95),
            p99_ms: self.quantile_ms(0.99),
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct MemberAgg {
    /// Attempts and skips by outcome name.
    pub outcomes: BTreeMap<String, u64>,
    pub latency: Hist,
    pub input: u64,
    pub output: u64,
}

impl MemberAgg {
    /// Attempts that reached the upstream.
    pub fn attempts(&self) -> u64 {
        self.outcomes
            .iter()
            .filter(|(o, _)| {
                !matches!(
                    o.as_str(),
                    "skipped_benched" | "skipped_quota" | "deadline" | "budget_refused"
                )
            })
            .map(|(_, c)| c)
            .sum()
    }

    pub fn served(&self) -> u64 {
        self.outcomes.get("ok").copied().unwrap_or(0)
    }
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct PoolAgg {
    pub requests: u64,
    /// Failed requests by final status.
    pub failures: BTreeMap<String, u64>,
    pub failovers: u64,
    pub latency: Hist,
    pub ttft: Hist,
    pub input: u64,
    pub output: u64,
    pub members: BTreeMap<String, MemberAgg>,
}

/// What one caller did with one model it asked for.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Use {
    /// Every request that ended (also those refused before any attempt).
    pub requests: u64,
    /// Failed requests by final status.
    pub failures: BTreeMap<String, u64>,
    pub input: u64,
    pub output: u64,
}

impl Use {
    pub fn failed(&self) -> u64 {
        self.failures.values().sum()
    }

    /// Adds `other` into this one (a caller's models into its total).
    pub fn add(&mut self, other: &Self) {
        self.requests += other.requests;
        for (code, c) in &other.failures {
            *slot(&mut self.failures, code) += c;
        }
        self.input += other.input;
        self.output += other.output;
    }
}

/// What a window (or a bucket) adds up to.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Totals {
    /// Pool name → what it did.
    pub pools: BTreeMap<String, PoolAgg>,
    /// Caller name → model asked for → what it did.
    pub callers: BTreeMap<String, BTreeMap<String, Use>>,
}

const SEP: char = '\u{1f}';

/// A bucket's counters as hash fields: `p␟pool␟what`,
/// `m␟pool␟member␟what` and `c␟caller␟model␟what`.
fn fields(totals: &Totals) -> Vec<(String, i64)> {
    let mut out = Vec::new();
    let mut put = |k: String, v: u64| {
        if v > 0 {
            out.push((k, i64::try_from(v).unwrap_or(i64::MAX)));
        }
    };
    for (pool, p) in &totals.pools {
        let pk = |what: &str| format!("p{SEP}{pool}{SEP}{what}");
        put(pk("req"), p.requests);
        put(pk("fo"), p.failovers);
        put(pk("in"), p.input);
        put(pk("out"), p.output);
        for (code, c) in &p.failures {
            put(pk(&format!("fail:{code}")), *c);
        }
        for (i, c) in &p.latency.0 {
            put(pk(&format!("lat:{i}")), *c);
        }
        for (i, c) in &p.ttft.0 {
            put(pk(&format!("ttft:{i}")), *c);
        }
        for (member, m) in &p.members {
            let mk = |what: &str| format!("m{SEP}{pool}{SEP}{member}{SEP}{what}");
            put(mk("in"), m.input);
            put(mk("out"), m.output);
            for (o, c) in &m.outcomes {
                put(mk(&format!("o:{o}")), *c);
            }
            for (i, c) in &m.latency.0 {
                put(mk(&format!("lat:{i}")), *c);
            }
        }
    }
    for (caller, models) in &totals.callers {
        for (model, u) in models {
            let ck = |what: &str| format!("c{SEP}{caller}{SEP}{model}{SEP}{what}");
            put(ck("req"), u.requests);
            put(ck("in"), u.input);
            put(ck("out"), u.output);
            for (code, c) in &u.failures {
                put(ck(&format!("fail:{code}")), *c);
            }
        }
    }
    out
}

/// The histogram bucket a field names, if it is one this version knows
/// (one past the last bound holds everything above it).
fn bucket_index(field: &str, prefix: &str) -> Option<usize> {
    field
        .strip_prefix(prefix)
        .and_then(|i| i.parse().ok())
        .filter(|i| *i <= bounds().len())
}

/// Adds one bucket's hash fields into `totals`; unknown fields are ignored.
fn add_fields(totals: &mut Totals, hash: &HashMap<String, i64>) {
    for (k, v) in hash {
        let v = u64::try_from(*v).unwrap_or(0);
        let parts: Vec<&str> = k.split(SEP).collect();
        match parts.as_slice() {
            ["p", pool, what] => {
                let p = totals.pools.entry((*pool).to_owned()).or_default();
                match *what {
                    "req" => p.requests += v,
                    "fo" => p.failovers += v,
                    "in" => p.input += v,
                    "out" => p.output += v,
                    w => {
                        if let Some(code) = w.strip_prefix("fail:") {
                            *p.failures.entry(code.to_owned()).or_default() += v;
                        } else if let Some(i) = bucket_index(w, "lat:") {
                            *p.latency.0.entry(i).or_default() += v;
                        } else if let Some(i) = bucket_index(w, "ttft:") {
                            *p.ttft.0.entry(i).or_default() += v;
                        }
                    }
                }
            }
            ["m", pool, member, what] => {
                let m = totals
                    .pools
                    .entry((*pool).to_owned())
                    .or_default()
                    .members
                    .entry((*member).to_owned())
                    .or_default();
                match *what {
                    "in" => m.input += v,
                    "out" => m.output += v,
                    w => {
                        if let Some(o) = w.strip_prefix("o:") {
                            *m.outcomes.entry(o.to_owned()).or_default() += v;
                        } else if let Some(i) = bucket_index(w, "lat:") {
                            *m.latency.0.entry(i).or_default() += v;
                        }
                    }
                }
            }
            ["c", caller, model, what] => {
                let u = totals
                    .callers
                    .entry((*caller).to_owned())
                    .or_default()
                    .entry((*model).to_owned())
                    .or_default();
                match *what {
                    "req" => u.requests += v,
                    "in" => u.input += v,
                    "out" => u.output += v,
                    w => {
                        if let Some(code) = w.strip_prefix("fail:") {
                            *u.failures.entry(code.to_owned()).or_default() += v;
                        }
                    }
                }
            }
            _ => {}
        }
    }
}

pub(super) fn unix_secs() -> i64 {
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

/// A name as one part of a hash field: the separator never is in one (a
/// caller-chosen model name could hold it; it is then `other`).
fn part(name: &str) -> &str {
    if name.contains(SEP) {
        switchyard_shared::metrics::OTHER
    } else {
        name
    }
}

/// `map[key]`, made if missing; the key is copied only then (this runs
/// for every request).
fn slot<'m, V: Default>(map: &'m mut BTreeMap<String, V>, key: &str) -> &'m mut V {
    if !map.contains_key(key) {
        map.insert(key.to_owned(), V::default());
    }
    map.get_mut(key).expect("inserted above when missing")
}

fn merge(into: &mut Totals, from: Totals) {
    let mut all: HashMap<String, i64> = fields(into).into_iter().collect();
    for (k, v) in fields(&from) {
        *all.entry(k).or_default() += v;
    }
    let mut merged = Totals::default();
    add_fields(&mut merged, &all);
    *into = merged;
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let usage = Some(crate::upstream::Usage {
            input_tokens: 7,
            output_tokens: 11,
        });
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
