//! Metrics: every server keeps its own Prometheus registry (no global state,
//! so the embedded `switchyard dev` runs both planes in one process) and
//! serves it on an admin port, apart from gRPC.
//!
//! Built on `prometheus-client`, the Prometheus project's own Rust client:
//! typed label sets checked at compile time, no global registry, and
//! handles that are plain atomics once created.

mod histogram;
pub mod names;

pub use histogram::AtomicHistogram;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use prometheus_client::registry::Registry;

/// The OpenMetrics text exposition (Prometheus scrapes it natively).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Buckets for durations, 1 ms to ~65 s (seconds).
pub fn duration_buckets() -> impl Iterator<Item = f64> {
    prometheus_client::metrics::histogram::exponential_buckets(0.001, 2.0, 17)
}

/// Buckets for token counts, 1 to ~1M.
pub fn token_buckets() -> impl Iterator<Item = f64> {
    prometheus_client::metrics::histogram::exponential_buckets(1.0, 4.0, 11)
}

/// A new duration histogram (a `Family` constructor).
pub fn durations() -> AtomicHistogram {
    static B: std::sync::OnceLock<Arc<[f64]>> = std::sync::OnceLock::new();
    AtomicHistogram::new(B.get_or_init(|| duration_buckets().collect()).clone())
}

/// A new token-count histogram (a `Family` constructor).
pub fn tokens() -> AtomicHistogram {
    static B: std::sync::OnceLock<Arc<[f64]>> = std::sync::OnceLock::new();
    AtomicHistogram::new(B.get_or_init(|| token_buckets().collect()).clone())
}

/// The registry as text.
pub fn render(registry: &Registry) -> String {
    let mut out = String::with_capacity(16 * 1024);
    if let Err(err) = prometheus_client::encoding::text::encode(&mut out, registry) {
        tracing::error!(error = %err, "cannot encode metrics");
    }
    out
}

/// Serves `GET /metrics` (and `GET /healthz`) on `listener`.
async fn serve<L>(listener: L, registry: Arc<Registry>) -> std::io::Result<()>
where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
{
    use axum::routing::get;
    let app = axum::Router::new()
        .route(
            "/metrics",
            get(move || {
                let registry = registry.clone();
                async move {
                    (
                        [(http::header::CONTENT_TYPE, CONTENT_TYPE)],
                        render(&registry),
                    )
                }
            }),
        )
        .route("/healthz", get(|| async { "ok" }));
    axum::serve(listener, app).await
}

/// Serves `registry` on `addr` (`None`: not served) for the rest of the
/// process's life: the port keeps answering while the gRPC server drains.
pub async fn start(addr: Option<SocketAddr>, registry: Registry) -> std::io::Result<()> {
    start_with(addr, registry, None).await
}

/// [`start`], over `tls` when given (`--metrics-tls`: the gRPC port's
/// certificate, reloaded with it, and its client CA if any).
pub async fn start_with(
    addr: Option<SocketAddr>,
    registry: Registry,
    tls: Option<crate::tls::ServerTls>,
) -> std::io::Result<()> {
    let Some(addr) = addr else {
        tracing::info!("metrics port off (--metrics-listen off)");
        return Ok(());
    };
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!(addr = %bound, scheme, "metrics listening");
    let registry = Arc::new(registry);
    // Lives as long as the process; nothing waits for it at shutdown.
    #[allow(clippy::disallowed_methods)]
    tokio::spawn(async move {
        let served = match tls {
            None => serve(listener, registry).await,
            Some(tls) => serve(crate::tls::TlsIncoming::http(listener, &tls), registry).await,
        };
        if let Err(err) = served {
            tracing::error!(error = %err, "metrics server failed");
        }
    });
    Ok(())
}

/// Caps the distinct values a caller-chosen label may take: the first
/// `max` values seen keep their name, later ones become `other`, so a caller
/// cannot blow up the series count.
#[derive(Debug)]
pub struct LabelCap {
    max: usize,
    seen: RwLock<HashSet<String>>,
}

/// What values past the cap are reported as.
pub const OTHER: &str = "other";

/// Longer caller-chosen values are reported as `other`.
pub const MAX_LABEL_BYTES: usize = 128;

impl LabelCap {
    pub fn new(max: usize) -> Self {
        Self {
            max,
            seen: RwLock::new(HashSet::new()),
        }
    }

    /// `value`, or `other` once `max` distinct values were seen (and for
    /// any value longer than [`MAX_LABEL_BYTES`]).
    pub fn label(&self, value: &str) -> String {
        if value.len() > MAX_LABEL_BYTES {
            return OTHER.to_owned();
        }
        {
            let seen = self
                .seen
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if seen.contains(value) {
                return value.to_owned();
            }
            if seen.len() >= self.max {
                return OTHER.to_owned();
            }
        }
        let mut seen = self
            .seen
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if seen.len() >= self.max && !seen.contains(value) {
            return OTHER.to_owned();
        }
        seen.insert(value.to_owned());
        value.to_owned()
    }
}

/// The label value of a gRPC status.
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code as C;
    match code {
        C::Ok => "ok",
        C::Cancelled => "cancelled",
        C::Unknown => "unknown",
        C::InvalidArgument => "invalid_argument",
        C::DeadlineExceeded => "deadline_exceeded",
        C::NotFound => "not_found",
        C::AlreadyExists => "already_exists",
        C::PermissionDenied => "permission_denied",
        C::ResourceExhausted => "resource_exhausted",
        C::FailedPrecondition => "failed_precondition",
        C::Aborted => "aborted",
        C::OutOfRange => "out_of_range",
        C::Unimplemented => "unimplemented",
        C::Internal => "internal",
        C::Unavailable => "unavailable",
        C::DataLoss => "data_loss",
        C::Unauthenticated => "unauthenticated",
    }
}

/// `--metrics-listen`: an address, or `off`.
pub fn parse_listen(s: &str) -> Result<Option<SocketAddr>, String> {
    parse_listen_flag("--metrics-listen", s)
}

/// `host:port`, or `off` (or empty) for nothing, for the flag `flag`.
pub fn parse_listen_flag(flag: &str, s: &str) -> Result<Option<SocketAddr>, String> {
    if s.eq_ignore_ascii_case("off") || s.is_empty() {
        return Ok(None);
    }
    s.parse()
        .map(Some)
        .map_err(|e| format!("{flag} '{s}': {e}; give host:port or 'off'"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_caller_cannot_grow_a_label_past_its_cap() {
        let cap = LabelCap::new(2);
        assert_eq!(cap.label("a"), "a");
        assert_eq!(cap.label("b"), "b");
        assert_eq!(cap.label("c"), OTHER);
        assert_eq!(
            cap.label("a"),
            "a",
            "values seen before the cap keep their name"
        );
        assert_eq!(cap.label("d"), OTHER);
        let long = "m".repeat(MAX_LABEL_BYTES + 1);
        assert_eq!(
            LabelCap::new(10).label(&long),
            OTHER,
            "a long value is not kept"
        );
    }

    #[test]
    fn metrics_listen_takes_an_address_or_off() {
        assert_eq!(parse_listen("off"), Ok(None));
        assert_eq!(
            parse_listen("127.0.0.1:9102"),
            Ok(Some("127.0.0.1:9102".parse().expect("addr")))
        );
        assert!(parse_listen("nine").is_err());
    }
}
