//! Trace context (W3C `traceparent`/`tracestate`): read from the caller's
//! gRPC metadata, and sent on to the upstream so one trace spans caller →
//! Switchyard → provider.
//!
//! With OTLP export on, the RPC's server span continues the caller's trace
//! and each attempt's span is the parent the upstream sees. With it off, no
//! spans are exported and the caller's headers are passed on as they came.

use http::header::{HeaderName, HeaderValue};
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator as _};
use opentelemetry::trace::TraceContextExt as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

pub use crate::upstream::TraceHeaders;

const TRACEPARENT: &str = "traceparent";
const TRACESTATE: &str = "tracestate";

struct Http<'a>(&'a http::HeaderMap);

impl Extractor for Http<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        [TRACEPARENT, TRACESTATE]
            .into_iter()
            .filter(|k| self.0.contains_key(*k))
            .collect()
    }
}

/// Makes an RPC's server span continue the caller's trace (when spans are
/// exported and the caller sent a valid `traceparent`).
pub fn continue_caller(span: &tracing::Span, headers: &http::HeaderMap) {
    if !headers.contains_key(TRACEPARENT) {
        return;
    }
    let cx = TraceContextPropagator::new().extract(&Http(headers));
    if cx.span().span_context().is_valid() && span.set_parent(cx).is_err() {
        // No OpenTelemetry layer: export is off; nothing to continue.
    }
}

struct Headers<'a>(&'a mut TraceHeaders);

impl Injector for Headers<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(k), Ok(v)) = (
            HeaderName::from_bytes(key.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            self.0.push(k, v);
        }
    }
}

/// The caller's trace headers, when it sent valid ones.
#[derive(Clone, Debug, Default)]
pub struct Incoming {
    /// Checked, to pass on when no span is exported.
    headers: TraceHeaders,
}

impl Incoming {
    /// The trace context of a request's headers (HTTP or gRPC).
    pub fn from_headers(h: &http::HeaderMap) -> Self {
        if !h.contains_key(TRACEPARENT) {
            return Self::default();
        }
        let cx = TraceContextPropagator::new().extract(&Http(h));
        if !cx.span().span_context().is_valid() {
            return Self::default();
        }
        // The propagator writes back exactly what it accepted.
        let mut headers = TraceHeaders::default();
        TraceContextPropagator::new().inject_context(&cx, &mut Headers(&mut headers));
        Self { headers }
    }

    /// The headers for an upstream request made inside `span`: the span's
    /// own context when it is exported, else the caller's headers unchanged.
    pub fn outgoing(&self, span: &tracing::Span) -> TraceHeaders {
        let cx = span.context();
        if cx.span().span_context().is_valid() {
            let mut headers = TraceHeaders::default();
            TraceContextPropagator::new().inject_context(&cx, &mut Headers(&mut headers));
            headers
        } else {
            self.headers.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::metadata::MetadataMap;

    fn md(pairs: &[(&'static str, &'static str)]) -> MetadataMap {
        let mut m = MetadataMap::new();
        for (k, v) in pairs {
            m.insert(*k, v.parse().expect("value"));
        }
        m
    }

    #[test]
    fn a_valid_traceparent_is_passed_on_when_no_span_is_exported() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let inc = Incoming::from_headers(
            md(&[("traceparent", tp), ("tracestate", "vendor=value")]).as_ref(),
        );
        let out = inc.outgoing(&tracing::Span::none());
        assert_eq!(out.get("traceparent"), Some(tp));
        assert_eq!(out.get("tracestate"), Some("vendor=value"));
    }

    #[test]
    fn a_malformed_or_missing_traceparent_sends_nothing() {
        for bad in [
            "garbage",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        ] {
            let inc = Incoming::from_headers(md(&[("traceparent", bad)]).as_ref());
            assert!(
                inc.outgoing(&tracing::Span::none())
                    .get("traceparent")
                    .is_none(),
                "{bad}"
            );
        }
        let inc = Incoming::from_headers(md(&[]).as_ref());
        assert!(inc.outgoing(&tracing::Span::none()).is_empty());
    }
}
