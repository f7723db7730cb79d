//! What statistics add up to (per pool and member, per caller and model),
//! and one bucket of them as the hash fields the fleet's store adds up.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use switchyard_proto::v1 as pb;

/// Upper bounds of the latency histogram, in microseconds: 250 µs × 1.5^i,
/// up to about 80 s; one more bucket holds everything above.
pub(super) fn bounds() -> &'static [u64] {
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

pub(super) fn bucket_of(us: u64) -> usize {
    bounds().partition_point(|b| *b < us)
}

/// A latency histogram (counts per bucket).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Hist(pub BTreeMap<usize, u64>);

impl Hist {
    pub(super) fn add(&mut self, d: Duration) {
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
                    "skipped_benched"
                        | "skipped_quota"
                        | "deadline"
                        | "budget_refused"
                        | "unsupported"
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

pub(super) const SEP: char = '\u{1f}';

/// A bucket's counters as hash fields: `p␟pool␟what`,
/// `m␟pool␟member␟what` and `c␟caller␟model␟what`.
pub(super) fn fields(totals: &Totals) -> Vec<(String, i64)> {
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
pub(super) fn bucket_index(field: &str, prefix: &str) -> Option<usize> {
    field
        .strip_prefix(prefix)
        .and_then(|i| i.parse().ok())
        .filter(|i| *i <= bounds().len())
}

/// Adds one bucket's hash fields into `totals`; unknown fields are ignored.
pub(super) fn add_fields(totals: &mut Totals, hash: &HashMap<String, i64>) {
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

/// A name as one part of a hash field: the separator never is in one (a
/// caller-chosen model name could hold it; it is then `other`).
pub(super) fn part(name: &str) -> &str {
    if name.contains(SEP) {
        switchyard_shared::metrics::OTHER
    } else {
        name
    }
}

/// `map[key]`, made if missing; the key is copied only then (this runs
/// for every request).
pub(super) fn slot<'m, V: Default>(map: &'m mut BTreeMap<String, V>, key: &str) -> &'m mut V {
    if !map.contains_key(key) {
        map.insert(key.to_owned(), V::default());
    }
    map.get_mut(key).expect("inserted above when missing")
}

pub(super) fn merge(into: &mut Totals, from: Totals) {
    let mut all: HashMap<String, i64> = fields(into).into_iter().collect();
    for (k, v) in fields(&from) {
        *all.entry(k).or_default() += v;
    }
    let mut merged = Totals::default();
    add_fields(&mut merged, &all);
    *into = merged;
}
