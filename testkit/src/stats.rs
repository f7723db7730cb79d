//! Counters and the per-request guard that keeps them honest.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use axum::http::HeaderMap;
use serde_json::Value;

#[derive(Debug, Default)]
struct ModelStats {
    calls: u64,
    last_headers: Option<HeaderMap>,
    last_body: Option<Value>,
}

/// Server-wide counters.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    total_calls: AtomicU64,
    in_flight: AtomicI64,
    cancelled: AtomicU64,
    models: Mutex<HashMap<String, ModelStats>>,
}

impl Stats {
    /// Counts a request that could not be attributed to a model.
    pub(crate) fn record_anonymous(&self) {
        self.total_calls.fetch_add(1, Ordering::SeqCst);
    }

    pub(crate) fn record_call(&self, model: &str, headers: &HeaderMap, body: &Value) {
        let mut models = self.models.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = models.entry(model.to_owned()).or_default();
        entry.calls += 1;
        entry.last_headers = Some(headers.clone());
        entry.last_body = Some(body.clone());
        self.total_calls.fetch_add(1, Ordering::SeqCst);
    }

    pub(crate) fn calls(&self, model: &str) -> u64 {
        let models = self.models.lock().unwrap_or_else(PoisonError::into_inner);
        models.get(model).map_or(0, |m| m.calls)
    }

    pub(crate) fn last_headers(&self, model: &str) -> Option<HeaderMap> {
        let models = self.models.lock().unwrap_or_else(PoisonError::into_inner);
        models.get(model).and_then(|m| m.last_headers.clone())
    }

    pub(crate) fn last_body(&self, model: &str) -> Option<Value> {
        let models = self.models.lock().unwrap_or_else(PoisonError::into_inner);
        models.get(model).and_then(|m| m.last_body.clone())
    }

    pub(crate) fn total_calls(&self) -> u64 {
        self.total_calls.load(Ordering::SeqCst)
    }

    pub(crate) fn in_flight(&self) -> i64 {
        self.in_flight.load(Ordering::SeqCst)
    }

    pub(crate) fn cancelled(&self) -> u64 {
        self.cancelled.load(Ordering::SeqCst)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Pending,
    Finished,
}

/// Counts one request as in flight until dropped. Dropped while still pending means the
/// client went away first (hyper dropped the handler future or the response body), which is
/// counted as a cancellation.
#[derive(Debug)]
pub(crate) struct RequestGuard {
    stats: Arc<Stats>,
    outcome: Outcome,
}

impl RequestGuard {
    pub(crate) fn new(stats: Arc<Stats>) -> Self {
        stats.in_flight.fetch_add(1, Ordering::SeqCst);
        Self {
            stats,
            outcome: Outcome::Pending,
        }
    }

    /// The server finished the response (or aborted it on purpose): not a cancellation.
    pub(crate) fn finish(&mut self) {
        self.outcome = Outcome::Finished;
    }
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        if self.outcome == Outcome::Pending {
            self.stats.cancelled.fetch_add(1, Ordering::SeqCst);
        }
        self.stats.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}
