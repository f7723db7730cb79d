//! The fakes' rate-limit mode ([`crate::Fault::RateLimit`]): a budget of
//! requests and tokens per minute per model, told on every answer in the
//! provider's own headers (OpenAI `x-ratelimit-*`, Anthropic
//! `anthropic-ratelimit-*`), and a 429 with `retry-after` once it is spent.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;

use crate::wire::Wire;

const WINDOW: Duration = Duration::from_secs(60);

/// Per model: the window's start, requests and tokens taken in it.
#[derive(Debug, Default)]
pub(crate) struct Windows {
    models: Mutex<HashMap<String, (Instant, u64, u64)>>,
    /// Requests answered 429, across models.
    pub(crate) refused: std::sync::atomic::AtomicU64,
}

/// What one request is charged: its body at four characters a token plus
/// its `max_tokens`.
pub(crate) fn tokens_of(body: &Value) -> u64 {
    let chars = u64::try_from(body.to_string().len()).unwrap_or(u64::MAX);
    chars.div_ceil(4) + body["max_tokens"].as_u64().unwrap_or(0)
}

impl Windows {
    /// Takes one request of `tokens` from `model`'s minute: the headers to
    /// send, and whether it is over (answer 429, nothing taken).
    pub(crate) fn take(
        &self,
        wire: Wire,
        model: &str,
        rpm: u64,
        tpm: u64,
        tokens: u64,
    ) -> (HeaderMap, Option<Duration>) {
        let now = Instant::now();
        let mut models = self.models.lock().unwrap_or_else(PoisonError::into_inner);
        let w = models.entry(model.to_owned()).or_insert((now, 0, 0));
        if now.duration_since(w.0) >= WINDOW {
            *w = (now, 0, 0);
        }
        let reset = WINDOW.saturating_sub(now.duration_since(w.0));
        let over = w.1 >= rpm || w.2.saturating_add(tokens) > tpm;
        if over {
            self.refused
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        } else {
            w.1 += 1;
            w.2 += tokens;
        }
        let left = (rpm.saturating_sub(w.1), tpm.saturating_sub(w.2));
        (
            headers(wire, (rpm, tpm), left, reset),
            over.then_some(reset),
        )
    }
}

fn headers(wire: Wire, limit: (u64, u64), left: (u64, u64), reset: Duration) -> HeaderMap {
    let mut h = HeaderMap::new();
    let mut put = |name: &str, value: String| {
        if let (Ok(n), Ok(v)) = (HeaderName::try_from(name), HeaderValue::try_from(value)) {
            h.insert(n, v);
        }
    };
    match wire {
        Wire::OpenAi => {
            let d = format!("{}ms", reset.as_millis());
            put("x-ratelimit-limit-requests", limit.0.to_string());
            put("x-ratelimit-limit-tokens", limit.1.to_string());
            put("x-ratelimit-remaining-requests", left.0.to_string());
            put("x-ratelimit-remaining-tokens", left.1.to_string());
            put("x-ratelimit-reset-requests", d.clone());
            put("x-ratelimit-reset-tokens", d);
        }
        Wire::Anthropic => {
            let at = humantime::format_rfc3339_seconds(
                SystemTime::now() + reset + Duration::from_secs(1),
            )
            .to_string();
            put("anthropic-ratelimit-requests-limit", limit.0.to_string());
            put("anthropic-ratelimit-tokens-limit", limit.1.to_string());
            put("anthropic-ratelimit-requests-remaining", left.0.to_string());
            put("anthropic-ratelimit-tokens-remaining", left.1.to_string());
            put("anthropic-ratelimit-requests-reset", at.clone());
            put("anthropic-ratelimit-tokens-reset", at);
        }
    }
    h
}
