//! Between HTTP headers and gRPC metadata: what the door passes to the
//! engine (deadline, trace context) and what it hands back
//! (`x-switchyard-*`).

use std::time::Duration;

use axum::http::HeaderMap;
#[cfg(test)]
use axum::http::HeaderValue;
use tonic::metadata::{MetadataMap, MetadataValue};

/// Copies the answer's `x-switchyard-*` metadata into HTTP headers `to`
/// (metadata is a header map underneath: nothing is parsed again).
pub fn copy_switchyard(md: &MetadataMap, to: &mut HeaderMap) {
    for (name, value) in md.as_ref() {
        if name.as_str().starts_with("x-switchyard-") {
            to.insert(name.clone(), value.clone());
        }
    }
}

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

/// The gRPC metadata the engine reads: the deadline as `grpc-timeout`, and
/// the W3C trace context.
pub fn to_metadata(h: &HeaderMap) -> MetadataMap {
    let mut md = MetadataMap::new();
    if let Some(d) = timeout(h) {
        let ms = u64::try_from(d.as_millis())
            .unwrap_or(u64::MAX)
            .clamp(1, 99_999_999);
        if let Ok(v) = MetadataValue::try_from(format!("{ms}m")) {
            md.insert("grpc-timeout", v);
        }
    }
    for name in ["traceparent", "tracestate"] {
        if let Some(v) = h.get(name).and_then(|v| v.to_str().ok())
            && let Ok(v) = MetadataValue::try_from(v)
        {
            md.insert(name, v);
        }
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadline_and_trace_reach_the_engine() {
        let mut h = HeaderMap::new();
        h.insert("x-stainless-timeout", HeaderValue::from_static("2.5"));
        h.insert("traceparent", HeaderValue::from_static("00-abc-def-01"));
        let md = to_metadata(&h);
        assert_eq!(
            md.get("grpc-timeout").and_then(|v| v.to_str().ok()),
            Some("2500m")
        );
        assert_eq!(
            md.get("traceparent").and_then(|v| v.to_str().ok()),
            Some("00-abc-def-01")
        );
        h.insert("x-switchyard-timeout-ms", HeaderValue::from_static("300"));
        assert_eq!(timeout(&h), Some(Duration::from_millis(300)));
        h.insert("x-switchyard-timeout-ms", HeaderValue::from_static("soon"));
        assert_eq!(timeout(&h), Some(Duration::from_millis(2500)));
    }
}
