//! What the door reads from a request's headers for the call layer: how
//! long the caller waits.

use std::time::Duration;

use axum::http::HeaderMap;
#[cfg(test)]
use axum::http::HeaderValue;
use tokio::time::Instant;

use crate::service::deadline_after;

/// How long the caller will wait: `x-switchyard-timeout-ms`, else the
/// OpenAI SDKs' `x-stainless-timeout` (seconds).
pub fn timeout(h: &HeaderMap) -> Option<Duration> {
    let get = |n: &str| h.get(n).and_then(|v| v.to_str().ok()).map(str::trim);
    if let Some(ms) = get("x-switchyard-timeout-ms").and_then(|v| v.parse::<u64>().ok()) {
        return Some(Duration::from_millis(ms));
    }
    get("x-stainless-timeout")
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0 && *s < 1e9)
        .map(Duration::from_secs_f64)
}

/// When the caller stops waiting, from `timeout` (1 ms to ~27 hours).
pub fn deadline(h: &HeaderMap) -> Option<Instant> {
    let d = timeout(h)?;
    let ms = u64::try_from(d.as_millis())
        .unwrap_or(u64::MAX)
        .clamp(1, 99_999_999);
    deadline_after(Duration::from_millis(ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_deadline_comes_from_the_timeout_headers() {
        let mut h = HeaderMap::new();
        assert_eq!(deadline(&h), None);
        h.insert("x-stainless-timeout", HeaderValue::from_static("2.5"));
        assert_eq!(timeout(&h), Some(Duration::from_millis(2500)));
        let left = deadline(&h).map(|d| d.saturating_duration_since(Instant::now()));
        // 50 ms early, so the caller gets our DEADLINE_EXCEEDED first.
        assert!(
            left.is_some_and(|l| l <= Duration::from_millis(2450)),
            "{left:?}"
        );
        assert!(
            left.is_some_and(|l| l > Duration::from_millis(2000)),
            "{left:?}"
        );
        h.insert("x-switchyard-timeout-ms", HeaderValue::from_static("300"));
        assert_eq!(timeout(&h), Some(Duration::from_millis(300)));
        h.insert("x-switchyard-timeout-ms", HeaderValue::from_static("soon"));
        assert_eq!(timeout(&h), Some(Duration::from_millis(2500)));
    }
}
