//! The door's sockets: each connection is served by hyper's HTTP/1.1
//! server under three bounds, so that no client holds the worker's
//! connections (and open files) for nothing:
//!
//! - a header-read timeout (hyper's own `header_read_timeout`): hyper
//!   counts from the moment it waits for a request head, so a connection
//!   that sends nothing, a client trickling a head (slowloris) and a
//!   keep-alive connection waiting for its next request are all closed
//!   when it runs out;
//! - an idle timeout: a connection with no request in flight for this long
//!   is shut down gracefully. A request counts as in flight until its
//!   answer (a stream too) is written, so a slow upstream is never cut;
//!   between requests hyper's header timer runs as well, and the shorter
//!   of the two closes an idle keep-alive connection;
//! - a cap on open connections: one over it is closed as soon as accepted.
//!
//! Each close is counted in `switchyard_http_connections_closed{reason}`.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request};
use http_body_util::BodyExt as _;
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use switchyard_shared::metrics::names as n;
use switchyard_shared::tls::Identified;
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt as _;

/// How the door bounds its connections.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Longest wait for a whole request head.
    pub header_timeout: Duration,
    /// Longest time a connection may stay open with no request in flight.
    pub idle_timeout: Duration,
    /// Most connections open at once.
    pub max_connections: usize,
}

/// The door's connection counters.
#[derive(Clone)]
pub struct ConnMetrics {
    pub closed: Family<n::Reason, Counter>,
    pub open: Gauge,
}

impl ConnMetrics {
    fn closed(&self, reason: &'static str) {
        self.closed.get_or_create(&n::Reason { reason }).inc();
    }
}

/// Requests in flight on one connection, and a wake-up when that changes.
#[derive(Default)]
struct Activity {
    in_flight: AtomicUsize,
    changed: Notify,
}

/// One request in flight: held by the response body until it is written.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn hold(&self) {}
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.0.changed.notify_waiters();
    }
}

impl Activity {
    fn enter(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.changed.notify_waiters();
        InFlight(self.clone())
    }

    /// Resolves once no request has been in flight for `idle`.
    async fn idle_for(&self, idle: Duration) {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if self.in_flight.load(Ordering::Acquire) > 0 {
                changed.await;
            } else if tokio::time::timeout(idle, changed).await.is_err() {
                return;
            }
        }
    }
}

/// Serves the door on `listener` (plain TCP or TLS) until `stop`; requests
/// and streams in flight then get `grace` to finish.
pub async fn serve<L>(
    mut listener: L,
    router: Router,
    limits: Limits,
    metrics: ConnMetrics,
    stop: CancellationToken,
    grace: Duration,
) where
    L: axum::serve::Listener,
    L::Io: Identified,
{
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let connections = TaskTracker::new();
    loop {
        let (io, _) = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            metrics.closed("limit");
            tracing::debug!("http door: connection over --http-max-connections closed");
            drop(io);
            continue;
        };
        let peer = ConnectInfo(io.peer_identity());
        let activity = Arc::new(Activity::default());
        let router = router.clone();
        let counting = activity.clone();
        let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
            let mut req = req.map(Body::new);
            req.extensions_mut().insert(peer.clone());
            let request = counting.enter();
            let router = router.clone();
            async move {
                let resp = router.oneshot(req).await?;
                Ok::<_, Infallible>(resp.map(|body| {
                    Body::new(body.map_frame(move |frame| {
                        request.hold();
                        frame
                    }))
                }))
            }
        });
        let builder = builder.clone();
        let (stop, metrics) = (stop.clone(), metrics.clone());
        connections.spawn(async move {
            let _permit = permit;
            metrics.open.inc();
            let conn = builder.serve_connection(TokioIo::new(io), service);
            tokio::pin!(conn);
            let mut closing = false;
            loop {
                tokio::select! {
                    served = conn.as_mut() => {
                        if let Err(err) = served {
                            if err.is_timeout() {
                                metrics.closed("header_timeout");
                            }
                            tracing::debug!(error = %err, "http door connection ended");
                        }
                        break;
                    }
                    () = stop.cancelled(), if !closing => {
                        closing = true;
                        conn.as_mut().graceful_shutdown();
                    }
                    () = activity.idle_for(limits.idle_timeout), if !closing => {
                        closing = true;
                        metrics.closed("idle");
                        conn.as_mut().graceful_shutdown();
                    }
                }
            }
            metrics.open.dec();
        });
    }
    connections.close();
    if tokio::time::timeout(grace, connections.wait())
        .await
        .is_err()
    {
        tracing::warn!("HTTP door: connections still open after the grace period");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_connection_is_idle_only_with_no_request_in_flight() {
        let a = Arc::new(Activity::default());
        let idle = Duration::from_secs(60);
        let start = tokio::time::Instant::now();
        a.idle_for(idle).await;
        assert_eq!(start.elapsed(), idle, "idle from the start");

        // A request in flight for 5 minutes: not idle until 60 s after it ends.
        let request = a.enter();
        let start = tokio::time::Instant::now();
        tokio::join!(a.idle_for(idle), async {
            tokio::time::sleep(Duration::from_secs(300)).await;
            drop(request);
        });
        assert_eq!(
            start.elapsed(),
            Duration::from_secs(360),
            "busy is not idle"
        );

        // A request that comes and goes restarts the clock.
        let start = tokio::time::Instant::now();
        tokio::join!(a.idle_for(idle), async {
            tokio::time::sleep(Duration::from_secs(30)).await;
            drop(a.enter());
        });
        assert_eq!(start.elapsed(), Duration::from_secs(90));
    }
}
