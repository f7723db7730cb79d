//! A fake upstream LLM server for Switchyard's tests and benchmarks.
//!
//! It speaks the OpenAI Chat Completions (`POST /v1/chat/completions`) and Anthropic Messages
//! (`POST /v1/messages`) wire formats, unary JSON and SSE, and can misbehave per model
//! ([`Fault`]). Answers are deterministic: `"<model> says hello"` split into
//! [`FakeConfig::chunks`] chunks (padded with `" w1"`, `" w2"`, ...).
//!
//! ```no_run
//! # async fn demo() {
//! use switchyard_testkit::{FakeConfig, FakeUpstream, Fault};
//! let upstream = FakeUpstream::start(FakeConfig::default()).await;
//! upstream.set_fault("bad-model", Fault::Status { code: 429, retry_after_secs: Some(3), body: None });
//! let base = upstream.base_url(); // "http://127.0.0.1:PORT/v1"
//! # let _ = base;
//! # }
//! ```
// Test plumbing: spawns freely, reads its env overrides, blocks in setup.
#![allow(clippy::disallowed_methods)]

pub mod certs;
pub mod dashboards;
pub mod db;
mod fault;
pub mod harness;
mod ratelimit;
pub mod redis_servers;
mod server;
mod stats;
pub mod tools;
mod wire;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::http::HeaderMap;
use serde_json::Value;
use tokio::net::{TcpListener, ToSocketAddrs};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use crate::fault::Fault;
pub use crate::redis_servers::{RedisCluster, TlsRedis};
use crate::server::Shared;

/// How long [`FakeUpstream::shutdown`] waits for the server task.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// Server-wide behaviour.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeConfig {
    /// Content chunks per answer (at least one is always sent).
    pub chunks: usize,
    /// Sleep before each streamed content chunk; unary answers sleep `chunks * chunk_delay`.
    pub chunk_delay: Duration,
}

impl Default for FakeConfig {
    fn default() -> Self {
        Self {
            chunks: 5,
            chunk_delay: Duration::ZERO,
        }
    }
}

/// A running fake upstream. Dropping it (or [`FakeUpstream::shutdown`]) stops the server and
/// aborts any stream still open, stalled ones included.
#[derive(Debug)]
pub struct FakeUpstream {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: Option<JoinHandle<io::Result<()>>>,
}

impl FakeUpstream {
    /// Starts a server on `127.0.0.1:0`.
    ///
    /// # Panics
    ///
    /// If no loopback port can be bound (use [`FakeUpstream::bind`] to handle that).
    pub async fn start(config: FakeConfig) -> FakeUpstream {
        match Self::bind("127.0.0.1:0", config).await {
            Ok(upstream) => upstream,
            Err(err) => panic!("fake upstream could not bind 127.0.0.1:0: {err}"),
        }
    }

    /// Starts a server on `addr`, serving on a spawned task.
    pub async fn bind(addr: impl ToSocketAddrs, config: FakeConfig) -> io::Result<FakeUpstream> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shutdown = CancellationToken::new();
        let shared = Arc::new(Shared::new(config, shutdown.clone()));
        let app = server::router(Arc::clone(&shared));
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(shutdown.cancelled_owned())
                .await
        });
        Ok(FakeUpstream {
            addr,
            shared,
            task: Some(task),
        })
    }

    /// The bound socket address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT/v1`, the base URL both providers' clients expect.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Makes every call for `model` misbehave until [`FakeUpstream::clear_fault`].
    pub fn set_fault(&self, model: &str, fault: Fault) {
        self.shared.faults.set(model, fault);
    }

    /// Makes the next `times` calls for `model` misbehave; afterwards the model answers as it
    /// did before (healthy, or its [`FakeUpstream::set_fault`] fault). `times == 0` removes a
    /// pending counted fault.
    pub fn set_fault_times(&self, model: &str, fault: Fault, times: usize) {
        self.shared.faults.set_times(model, fault, times);
    }

    /// Makes every call for `model` that carries credential `credential`
    /// (its `Authorization: Bearer` or `x-api-key` value) misbehave; calls
    /// with other credentials answer as `model` does. Cleared by
    /// [`FakeUpstream::clear_credential_fault`].
    pub fn set_credential_fault(&self, model: &str, credential: &str, fault: Fault) {
        self.shared
            .faults
            .set(&server::with_credential(model, credential), fault);
    }

    /// Removes the fault [`FakeUpstream::set_credential_fault`] set.
    pub fn clear_credential_fault(&self, model: &str, credential: &str) {
        self.shared
            .faults
            .clear(&server::with_credential(model, credential));
    }

    /// Requests received for `model` with credential `credential`.
    pub fn credential_calls(&self, model: &str, credential: &str) -> u64 {
        self.shared
            .stats
            .credential_calls(&server::with_credential(model, credential))
    }

    /// Removes every fault (persistent and counted) of `model`.
    pub fn clear_fault(&self, model: &str) {
        self.shared.faults.clear(model);
    }

    /// Requests received for `model` (faulted ones included).
    pub fn calls(&self, model: &str) -> u64 {
        self.shared.stats.calls(model)
    }

    /// The most requests for `model` in flight at once since the start (or
    /// the last reset of the counts).
    pub fn max_in_flight(&self, model: &str) -> usize {
        self.shared.stats.max_in_flight(model)
    }

    /// Requests received on the completion routes, including ones without a usable model.
    pub fn total_calls(&self) -> u64 {
        self.shared.stats.total_calls()
    }

    /// Requests currently being served: from arrival until the response (or its stream body)
    /// is finished or dropped.
    pub fn in_flight(&self) -> i64 {
        self.shared.stats.in_flight()
    }

    /// Requests whose client went away before the server finished them: streams dropped
    /// mid-body (stalled ones included) and requests abandoned while waiting for headers
    /// (e.g. during [`Fault::DelayFirstByte`]). Aborts done on purpose by a fault or by
    /// shutdown are not counted.
    pub fn cancelled(&self) -> u64 {
        self.shared.stats.cancelled()
    }

    /// Requests answered 429 by [`Fault::RateLimit`].
    pub fn rate_limited(&self) -> u64 {
        self.shared
            .rate
            .refused
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Headers of the latest request for `model` (check `authorization` / `x-api-key`).
    pub fn last_headers(&self, model: &str) -> Option<HeaderMap> {
        self.shared.stats.last_headers(model)
    }

    /// JSON body of the latest request for `model`.
    pub fn last_body(&self, model: &str) -> Option<Value> {
        self.shared.stats.last_body(model)
    }

    /// Stops accepting, aborts open streams and waits (up to 5 s) for the server task.
    pub async fn shutdown(mut self) {
        self.shared.shutdown.cancel();
        if let Some(task) = self.task.take() {
            match tokio::time::timeout(SHUTDOWN_TIMEOUT, task).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(err))) => tracing::warn!(%err, "fake upstream server failed"),
                Ok(Err(err)) => tracing::warn!(%err, "fake upstream task failed"),
                Err(_) => tracing::warn!("fake upstream did not stop within 5 s"),
            }
        }
    }
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        self.shared.shutdown.cancel();
    }
}
