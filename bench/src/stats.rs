//! What one measured run produced: a latency histogram in microseconds, the
//! error count with a few samples, its duration and (open loop) the send lag.

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use hdrhistogram::Histogram;

/// Outcome of one scenario: a histogram of microseconds plus error samples.
pub struct Run {
    pub hist: Histogram<u64>,
    pub ok: u64,
    pub errors: u64,
    pub samples: Vec<String>,
    pub secs: f64,
    /// Open loop only: p99 of how late requests were sent versus their schedule, in microseconds.
    pub lag_p99_us: u64,
}

/// Keeps the first three distinct error texts.
pub fn note(samples: &mut Vec<String>, e: String) {
    if samples.len() < 3 && !samples.contains(&e) {
        samples.push(e);
    }
}

impl Run {
    pub fn new() -> Self {
        let hist = Histogram::new_with_bounds(1, 120_000_000, 3).expect("valid histogram bounds");
        Self { hist, ok: 0, errors: 0, samples: Vec::new(), secs: 0.0, lag_p99_us: 0 }
    }
    pub fn record(&mut self, r: Result<u64, String>) {
        match r {
            Ok(us) => {
                self.ok += 1;
                self.hist.saturating_record(us.max(1));
            }
            Err(e) => {
                self.errors += 1;
                note(&mut self.samples, e);
            }
        }
    }
    pub fn merge(&mut self, other: Run) {
        if let Err(e) = self.hist.add(&other.hist) {
            eprintln!("histogram merge failed: {e}");
        }
        self.ok += other.ok;
        self.errors += other.errors;
        other.samples.into_iter().for_each(|s| note(&mut self.samples, s));
    }
    /// Quantile `q` in microseconds (0 when nothing succeeded).
    pub fn p(&self, q: f64) -> u64 {
        if self.ok == 0 { 0 } else { self.hist.value_at_quantile(q) }
    }
    /// Quantile `q` in milliseconds.
    pub fn p_ms(&self, q: f64) -> f64 {
        self.p(q) as f64 / 1000.0
    }
    pub fn rps(&self) -> f64 {
        if self.secs > 0.0 { self.ok as f64 / self.secs } else { 0.0 }
    }
}

pub fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Locks `m`, ignoring poisoning (a panicked recorder leaves a usable histogram).
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
