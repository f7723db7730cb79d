//! Retry budgets: per pool, the attempts after a request's first (retries
//! and failovers) may not exceed a share of the pool's recent first
//! attempts, with a small floor per second so a quiet pool can still retry
//! (Finagle's RetryBudget, Envoy's retry_budget). Each worker keeps its own
//! buckets: the fleet's retries are then bounded by the same share of the
//! fleet's first attempts, with no Redis call.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::time::Instant;

/// Most retries a quiet pool can save up (a short burst after a quiet spell).
const CAP: f64 = 10.0;
/// A busy pool can save up its share of this long's first attempts, so when
/// a member dies with many requests in flight they can all fail over.
const WINDOW_SECS: f64 = 10.0;

#[derive(Clone, Copy, Debug)]
pub struct BudgetPolicy {
    /// Retries earned per first attempt (0.2: retries ≤ 20 % of first attempts).
    pub ratio: f64,
    /// Retries earned per second regardless of traffic.
    pub floor_per_sec: f64,
}

/// Retries a pool may make by default, in percent of its recent first attempts.
pub const DEFAULT_PERCENT: u32 = 20;
/// Retries a pool may make per second by default, whatever its traffic.
pub const DEFAULT_MIN_PER_SEC: u32 = 3;

impl BudgetPolicy {
    /// The policy of `percent` % of first attempts, at least `min_per_sec`.
    pub fn new(percent: u32, min_per_sec: u32) -> Self {
        Self {
            ratio: f64::from(percent) / 100.0,
            floor_per_sec: f64::from(min_per_sec),
        }
    }
}

impl Default for BudgetPolicy {
    fn default() -> Self {
        Self::new(DEFAULT_PERCENT, DEFAULT_MIN_PER_SEC)
    }
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    /// First attempts over about the last `WINDOW_SECS` (decaying).
    recent_firsts: f64,
    last: Instant,
}

impl Bucket {
    fn cap(&self, ratio: f64) -> f64 {
        CAP.max(ratio * self.recent_firsts)
    }
}

#[derive(Default)]
pub struct RetryBudgets {
    policy: BudgetPolicy,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl RetryBudgets {
    pub fn new(policy: BudgetPolicy) -> Self {
        Self {
            policy,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    fn with<R>(&self, pool: &str, f: impl FnOnce(&mut Bucket, f64) -> R) -> R {
        let mut b = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = Instant::now();
        let ratio = self.policy.ratio;
        if let Some(bucket) = b.get_mut(pool) {
            let dt = now.duration_since(bucket.last).as_secs_f64();
            bucket.recent_firsts *= (-dt / WINDOW_SECS).exp();
            bucket.tokens = (bucket.tokens + dt * self.policy.floor_per_sec).min(bucket.cap(ratio));
            bucket.last = now;
            return f(bucket, ratio);
        }
        // A pool seen for the first time starts with the quiet burst.
        let mut bucket = Bucket {
            tokens: CAP,
            recent_firsts: 0.0,
            last: now,
        };
        let r = f(&mut bucket, ratio);
        b.insert(pool.to_owned(), bucket);
        r
    }

    /// Forgets pools that are gone from the config.
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        self.buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .retain(|k, _| keep(k));
    }

    /// A request's first attempt on `pool`: it earns a share of a retry.
    pub fn first_attempt(&self, pool: &str) {
        self.with(pool, |b, ratio| {
            b.recent_firsts += 1.0;
            b.tokens = (b.tokens + ratio).min(b.cap(ratio));
        });
    }

    /// Gives back a retry that was not made after all.
    pub fn refund(&self, pool: &str) {
        self.with(pool, |b, ratio| {
            b.tokens = (b.tokens + 1.0).min(b.cap(ratio))
        });
    }

    /// Whether `pool` may make one more retry now (and spends it).
    pub fn try_retry(&self, pool: &str) -> bool {
        self.with(pool, |b, _| {
            if b.tokens >= 1.0 {
                b.tokens -= 1.0;
                true
            } else {
                false
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn retries_are_a_share_of_first_attempts_plus_a_floor() {
        let b = RetryBudgets::new(BudgetPolicy::default());
        // A total outage: every first attempt fails and wants a retry, 100/s for 10 s.
        let mut first = 0u32;
        let mut retries = 0u32;
        for _ in 0..1000 {
            b.first_attempt("p");
            first += 1;
            if b.try_retry("p") {
                retries += 1;
            }
            tokio::time::advance(Duration::from_millis(10)).await;
        }
        let bound = f64::from(first) * 0.2 + 3.0 * 10.0 + CAP;
        assert!(
            f64::from(retries) <= bound,
            "{retries} retries for {first} first attempts (bound {bound})"
        );
        assert!(
            f64::from(retries) >= f64::from(first) * 0.2,
            "the share is usable"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_quiet_pool_can_still_retry() {
        let b = RetryBudgets::new(BudgetPolicy::default());
        for _ in 0..10 {
            assert!(b.try_retry("quiet"));
        }
        assert!(!b.try_retry("quiet"), "the saved-up burst is spent");
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(b.try_retry("quiet"), "the floor refills it");
    }

    #[tokio::test(start_paused = true)]
    async fn a_busy_pool_saves_up_its_share_so_a_dying_member_can_fail_over() {
        let b = RetryBudgets::new(BudgetPolicy::default());
        // 100 first attempts a second for 10 s, all fine.
        for _ in 0..1000 {
            b.first_attempt("busy");
            tokio::time::advance(Duration::from_millis(10)).await;
        }
        // Then a member dies with 100 requests in flight: they all fail over.
        let allowed = (0..100).filter(|_| b.try_retry("busy")).count();
        assert_eq!(
            allowed, 100,
            "20 % of ~630 recent first attempts is room for them"
        );
        let more = (0..200).filter(|_| b.try_retry("busy")).count();
        assert!(more < 100, "but not without bound: {more}");
    }
}
