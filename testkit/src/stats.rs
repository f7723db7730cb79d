//! Counters and the per-request guard that keeps them honest.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use axum::http::HeaderMap;
use serde_json::Value;

#[derive(Debug, Default)]
struct ModelStats {
    calls: u64,
    in_flight: usize,
    max_in_flight: usize,
    /// Answers by HTTP status.
    statuses: HashMap<u16, u64>,
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
    /// Calls per `model@credential` (see `server::with_credential`).
    credentials: Mutex<HashMap<String, u64>>,
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

    pub(crate) fn record_credential_call(&self, model_credential: &str) {
        let mut calls = self
            .credentials
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        *calls.entry(model_credential.to_owned()).or_default() += 1;
    }

    pub(crate) fn credential_calls(&self, model_credential: &str) -> u64 {
        let calls = self
            .credentials
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        calls.get(model_credential).copied().unwrap_or(0)
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

    /// Counts a request for `model` in flight until the guard drops; returns
    /// the guard and how many are in flight with it.
    pub(crate) fn enter(self: &Arc<Self>, model: &str) -> (ModelGuard, usize) {
        let mut models = self.models.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = models.entry(model.to_owned()).or_default();
        entry.in_flight += 1;
        entry.max_in_flight = entry.max_in_flight.max(entry.in_flight);
        let now = entry.in_flight;
        (
            ModelGuard {
                stats: Arc::clone(self),
                model: model.to_owned(),
            },
            now,
        )
    }

    pub(crate) fn record_status(&self, model: &str, status: u16) {
        let mut models = self.models.lock().unwrap_or_else(PoisonError::into_inner);
        *models
            .entry(model.to_owned())
            .or_default()
            .statuses
            .entry(status)
            .or_default() += 1;
    }

    /// Per model: calls, in flight now, most in flight at once, answers by status.
    pub(crate) fn snapshot(&self) -> Value {
        let models = self.models.lock().unwrap_or_else(PoisonError::into_inner);
        let per: serde_json::Map<String, Value> = models
            .iter()
            .map(|(name, m)| {
                let statuses: serde_json::Map<String, Value> = m
                    .statuses
                    .iter()
                    .map(|(code, n)| (code.to_string(), Value::from(*n)))
                    .collect();
                (
                    name.clone(),
                    serde_json::json!({
                        "calls": m.calls,
                        "in_flight": m.in_flight,
                        "max_in_flight": m.max_in_flight,
                        "statuses": statuses,
                    }),
                )
            })
            .collect();
        Value::Object(per)
    }

    /// Forgets the per-model counts (calls, peaks, statuses); requests in
    /// flight stay counted.
    pub(crate) fn reset(&self) {
        let mut models = self.models.lock().unwrap_or_else(PoisonError::into_inner);
        for m in models.values_mut() {
            m.calls = 0;
            m.max_in_flight = m.in_flight;
            m.statuses.clear();
        }
    }

    pub(crate) fn max_in_flight(&self, model: &str) -> usize {
        let models = self.models.lock().unwrap_or_else(PoisonError::into_inner);
        models.get(model).map_or(0, |m| m.max_in_flight)
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

/// One request for one model in flight, until dropped (the response sent,
/// its stream body ended or dropped).
#[derive(Debug)]
pub(crate) struct ModelGuard {
    stats: Arc<Stats>,
    model: String,
}

impl Drop for ModelGuard {
    fn drop(&mut self) {
        let mut models = self
            .stats
            .models
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(m) = models.get_mut(&self.model) {
            m.in_flight = m.in_flight.saturating_sub(1);
        }
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
    /// The model's own in-flight count, released with this guard.
    model: Option<ModelGuard>,
}

impl RequestGuard {
    pub(crate) fn new(stats: Arc<Stats>) -> Self {
        stats.in_flight.fetch_add(1, Ordering::SeqCst);
        Self {
            stats,
            outcome: Outcome::Pending,
            model: None,
        }
    }

    /// Also holds `model`'s in-flight count until this guard drops.
    pub(crate) fn holding(mut self, model: ModelGuard) -> Self {
        self.model = Some(model);
        self
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
