//! Latency estimates of one member: a peak-EWMA (a slower sample replaces
//! the estimate at once, faster ones pull it down with time constant
//! [`TAU`], by the time elapsed, not by the number of samples) and a p90
//! over a small ring of recent samples (docs/adr/005-live-signals.md).

use std::time::Duration;

use tokio::time::Instant;

/// The decay's time constant: a faster answer `TAU` after the last sample
/// moves the estimate 63 % of the way to it.
pub const TAU: Duration = Duration::from_secs(10);
/// An estimate with no sample for this long is no longer data: the member is
/// tried again as if new (a slow member that lost every choice gets a chance
/// to show it recovered).
pub const STALE: Duration = Duration::from_secs(60);
/// Recent samples the p90 is taken over.
const RING: usize = 32;

/// A peak-sensitive, time-decayed moving average.
#[derive(Clone, Copy, Debug, Default)]
pub struct PeakEwma {
    /// Seconds; meaningful once `at` is set.
    value: f64,
    at: Option<Instant>,
}

impl PeakEwma {
    /// Folds in a measured sample.
    pub fn observe(&mut self, sample: Duration, now: Instant) {
        let s = sample.as_secs_f64();
        self.value = match self.at {
            Some(at) if s <= self.value => {
                let w =
                    (-now.saturating_duration_since(at).as_secs_f64() / TAU.as_secs_f64()).exp();
                self.value * w + s * (1.0 - w)
            }
            _ => s,
        };
        self.at = Some(now);
    }

    /// Folds in a lower bound (an attempt cut by a timeout took at least
    /// this long): raises the estimate when above it, never lowers it.
    pub fn at_least(&mut self, bound: Duration, now: Instant) {
        let s = bound.as_secs_f64();
        if self.at.is_none() || s > self.value {
            self.value = s;
            self.at = Some(now);
        }
    }

    /// The estimate, if there is a recent one.
    pub fn get(&self, now: Instant) -> Option<Duration> {
        let at = self.at?;
        (now.saturating_duration_since(at) < STALE).then(|| Duration::from_secs_f64(self.value))
    }
}

/// The last [`RING`] samples and their 90th percentile.
#[derive(Clone, Debug, Default)]
pub struct Recent {
    samples: Vec<Duration>,
    next: usize,
    p90: Duration,
    at: Option<Instant>,
}

impl Recent {
    pub fn push(&mut self, sample: Duration, now: Instant) {
        if self.samples.len() < RING {
            self.samples.push(sample);
        } else {
            self.samples[self.next] = sample;
        }
        self.next = (self.next + 1) % RING;
        let mut sorted = self.samples.clone();
        sorted.sort_unstable();
        // Nearest rank: the smallest sample at or above 90 % of them.
        let rank = (sorted.len() * 9).div_ceil(10).max(1);
        self.p90 = sorted[rank - 1];
        self.at = Some(now);
    }

    /// The p90, if the last sample is recent.
    pub fn p90(&self, now: Instant) -> Option<Duration> {
        let at = self.at?;
        (now.saturating_duration_since(at) < STALE).then_some(self.p90)
    }

    pub fn count(&self) -> usize {
        self.samples.len()
    }
}

/// What a member's attempts measured on this worker.
#[derive(Clone, Debug, Default)]
pub struct Estimates {
    pub ttft: PeakEwma,
    pub latency: PeakEwma,
    pub recent_ttft: Recent,
    /// Recent unary answers, whole (a unary caller's deadline reads their p90).
    pub recent_answer: Recent,
    /// Samples taken (reports weigh nothing by it; shown for debugging).
    pub samples: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[tokio::test(start_paused = true)]
    async fn a_slower_sample_replaces_the_estimate_at_once() {
        let mut e = PeakEwma::default();
        assert_eq!(e.get(Instant::now()), None, "no data yet");
        e.observe(MS(100), Instant::now());
        assert_eq!(e.get(Instant::now()), Some(MS(100)));
        e.observe(MS(900), Instant::now());
        assert_eq!(e.get(Instant::now()), Some(MS(900)), "peak taken at once");
    }

    #[tokio::test(start_paused = true)]
    async fn faster_samples_decay_it_by_elapsed_time_with_tau() {
        let mut e = PeakEwma::default();
        e.observe(MS(1000), Instant::now());
        // A faster sample right away barely moves it: decay is by time.
        e.observe(MS(0), Instant::now());
        assert_eq!(e.get(Instant::now()), Some(MS(1000)));
        tokio::time::advance(TAU).await;
        e.observe(MS(0), Instant::now());
        let v = e.get(Instant::now()).unwrap().as_secs_f64();
        assert!(
            (v - (-1f64).exp()).abs() < 1e-3,
            "1/e of the way after τ: {v}"
        );
        tokio::time::advance(TAU * 3).await;
        e.observe(MS(0), Instant::now());
        let v = e.get(Instant::now()).unwrap().as_secs_f64();
        assert!(v < 0.02, "about e^-4 after 4τ: {v}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_timeout_raises_the_estimate_but_never_lowers_it() {
        let mut e = PeakEwma::default();
        e.observe(MS(500), Instant::now());
        tokio::time::advance(TAU).await;
        e.at_least(MS(100), Instant::now());
        assert_eq!(e.get(Instant::now()), Some(MS(500)));
        e.at_least(MS(2000), Instant::now());
        assert_eq!(e.get(Instant::now()), Some(MS(2000)));
    }

    #[tokio::test(start_paused = true)]
    async fn an_old_estimate_is_no_longer_data() {
        let mut e = PeakEwma::default();
        let mut r = Recent::default();
        e.observe(MS(500), Instant::now());
        r.push(MS(500), Instant::now());
        tokio::time::advance(STALE).await;
        assert_eq!(e.get(Instant::now()), None);
        assert_eq!(r.p90(Instant::now()), None);
    }

    #[tokio::test(start_paused = true)]
    async fn p90_is_over_the_recent_ring() {
        let mut r = Recent::default();
        for ms in 1..=10 {
            r.push(MS(ms * 100), Instant::now());
        }
        assert_eq!(r.p90(Instant::now()), Some(MS(900)));
        // The ring keeps the last 32: old slow samples leave it.
        let mut r = Recent::default();
        for _ in 0..32 {
            r.push(MS(5000), Instant::now());
        }
        for _ in 0..32 {
            r.push(MS(10), Instant::now());
        }
        assert_eq!(r.count(), 32);
        assert_eq!(r.p90(Instant::now()), Some(MS(10)));
        let mut r = Recent::default();
        r.push(MS(7), Instant::now());
        assert_eq!(
            r.p90(Instant::now()),
            Some(MS(7)),
            "one sample is its own p90"
        );
    }
}
