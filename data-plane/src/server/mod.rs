//! The worker: [`Worker::build`] connects, loads and binds what a worker
//! needs from its [`Settings`]; [`Worker::run`] serves until shutdown, then
//! drains.
//!
//! Shutdown (SIGTERM): NOT_SERVING → stop accepting → in-flight unary calls
//! and streams finish within the grace period → background tasks stop.
//!
//! - `settings` and [`defaults`]: what a worker is given, and every
//!   default in one place (the flags read them too).
//! - `auth`: who may call, and no worker open by accident.
//! - `follow`: the fleet's backend and the loops that keep config and
//!   fleet state live.
//! - `health`: the gRPC health statuses, NOT_SERVING first at shutdown.
//! - `grpc`: the gRPC server (caller check, a span per RPC, h2c or TLS).

mod auth;
pub mod defaults;
mod follow;
mod grpc;
mod health;
mod settings;

pub use settings::{Settings, Source};

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use switchyard_proto::v1::inference_server::InferenceServer;
use switchyard_shared::tls::{Incoming, ServerTls};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::service::Routes;

use crate::access::Access;
use crate::catalog::Catalog;
use crate::credentials::Resolver;
use crate::failover::{Engine, Parts, Rules};
use crate::fleet::{Fleet, Link};
use crate::gauges::Live;
use crate::observe::Observer;
use crate::observe::stats::Recorder;
use crate::service::InferenceService;
use crate::sync::{Loader, SyncState};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("invalid REDIS_URL: {0}")]
    RedisUrl(String),
    #[error(
        "nothing would check who calls: give SWITCHYARD_MASTER_KEY (to check caller keys \
         made with CreateCaller), or, deprecated, SWITCHYARD_INFERENCE_TOKENS; or pass --no-auth \
         to run open on purpose"
    )]
    Open,
    #[error("reflection: {0}")]
    Reflection(String),
    #[error("server: {0}")]
    Serve(#[from] tonic::transport::Error),
}

/// The worker's background loops, each named and tied to shutdown.
#[derive(Default)]
struct Loops {
    /// Stops the loops that follow config and fleet: the first to stop.
    background: CancellationToken,
    /// Stops the loops in-flight requests report through, once they are
    /// done: what they report at the end (a probe's release above all)
    /// still reaches the fleet.
    pusher_stop: CancellationToken,
    tracker: TaskTracker,
    /// Awaited at the end, in this order.
    running: Vec<(&'static str, JoinHandle<()>)>,
}

impl Loops {
    fn spawn(&mut self, name: &'static str, task: impl Future<Output = ()> + Send + 'static) {
        self.running.push((name, self.tracker.spawn(task)));
    }
}

/// The OpenAI-compatible HTTP door, bound, not yet serving.
struct HttpDoor {
    listener: TcpListener,
    router: axum::Router,
    limits: crate::door::Limits,
    metrics: crate::door::ConnMetrics,
}

/// A worker built from its settings: config sync and fleet loops running,
/// services assembled, listeners bound; [`Worker::run`] serves it.
pub struct Worker {
    listener: TcpListener,
    routes: Routes,
    access: Access,
    health: health::Health,
    door: Option<HttpDoor>,
    loops: Loops,
    /// In-flight unary calls and streams, drained at shutdown.
    calls: TaskTracker,
    tls: Option<ServerTls>,
    no_auth: bool,
    grace: Duration,
    export_spans: bool,
}

impl Worker {
    /// Checks who may call, opens the fleet's backend, starts config sync
    /// and the fleet's loops (the fleet first, then config sync, which
    /// tells it of new pools), and assembles the gRPC services and the
    /// HTTP door on `listener` and `settings.http`. Health says
    /// NOT_SERVING until a config is loaded.
    pub async fn build(listener: TcpListener, settings: Settings) -> Result<Self, StartError> {
        crate::upstream::client::warn_about_proxy_env();
        let catalog = Arc::new(ArcSwap::from_pointee(Catalog::default()));
        let access = auth::access(&settings, &catalog)?;
        let Settings {
            source,
            master_keys,
            credential_rules,
            max_attempts,
            admission_queue,
            rate_limit_cooldown,
            auth_cooldown,
            retry_backoff,
            retry_budget,
            stream_idle,
            config_check_every,
            shutdown_grace,
            max_message_bytes,
            secrets,
            auth: _,
            no_auth,
            metrics,
            stats_flush,
            span_metadata,
            export_spans,
            tls,
            http,
            http_max_body,
            http_limits,
            http_origins,
        } = settings;
        let (state_tx, state_rx) = watch::channel(SyncState::Loading);
        let mut loops = Loops::default();
        let link = Arc::new(Link::default());
        let follow::Opened {
            backend,
            stats,
            follow,
        } = follow::open(source, &metrics)?;
        let (fleet, pusher) = Fleet::new(
            backend,
            link.clone(),
            retry_budget,
            loops.pusher_stop.clone(),
        );
        loops.spawn("fleet pusher", pusher);
        let applied = Arc::new(ArcSwap::from_pointee(tokio::time::Instant::now()));
        let signals = Arc::new(crate::signals::Signals::default());
        // Concurrency caps are leased from the fleet when there is one.
        let slots = crate::fleet::slots::Slots::new(follow.is_shared(), admission_queue);
        metrics.attach(Live {
            signals: signals.clone(),
            slots: slots.clone(),
            catalog: catalog.clone(),
            fleet: fleet.clone(),
            sync: state_rx.clone(),
            applied: applied.clone(),
        });
        let observer = Arc::new(Observer {
            metrics: metrics.clone(),
            stats: Recorder::new(stats),
        });
        let flush = crate::observe::stats::flush_every(
            observer.clone(),
            stats_flush,
            loops.pusher_stop.clone(),
        );
        loops.spawn("stats flusher", flush);
        let loader = Loader {
            applied,
            catalog: catalog.clone(),
            resolver: Resolver {
                keys: master_keys.clone(),
                rules: credential_rules,
                secrets,
            },
            rejected: metrics.config_rejected.clone(),
            last_rejected: std::sync::Mutex::new(None),
            state: state_tx,
            fleet: fleet.clone(),
        };
        let shared = follow::Shared {
            catalog: &catalog,
            fleet: &fleet,
            signals: &signals,
            slots: &slots,
        };
        let authenticated = master_keys.is_some();
        follow.start(
            shared,
            loader,
            config_check_every,
            authenticated,
            &mut loops,
        );
        let engine = Arc::new(Engine::new(Parts {
            catalog,
            fleet,
            observer,
            signals,
            slots,
            rules: Rules {
                max_attempts,
                rate_limit_cooldown,
                auth_cooldown,
                retry_backoff,
            },
            export_spans,
        }));

        let stop = loops.background.clone();
        let (health, routes) = health::start(state_rx, link.watch(), stop, &loops.tracker).await;
        let (reflection, reflection_alpha) =
            switchyard_proto::reflection_services("switchyard.v1.Inference")
                .map_err(|e| StartError::Reflection(e.to_string()))?;
        let calls = TaskTracker::new();
        let service = Arc::new(InferenceService::new(
            engine,
            calls.clone(),
            stream_idle,
            span_metadata,
        ));
        let inference =
            InferenceServer::from_arc(service.clone()).max_decoding_message_size(max_message_bytes);
        let routes = routes
            .add_service(reflection)
            .add_service(reflection_alpha)
            .add_service(inference);
        let door = http.map(|listener| HttpDoor {
            listener,
            router: crate::door::router(Arc::new(crate::door::Door {
                service,
                access: access.clone(),
                max_body: http_max_body,
                body_timeout: http_limits.idle_timeout,
                export_spans,
                origins: http_origins,
            })),
            limits: http_limits,
            metrics: crate::door::ConnMetrics {
                closed: metrics.http_closed.clone(),
                open: metrics.http_open.clone(),
            },
        });
        if let Some(tls) = tls.clone() {
            // New handshakes pick up a certificate rotated on disk.
            let watch = tls.watch(loops.background.clone());
            loops.spawn("certificate watch", watch);
        }
        Ok(Self {
            listener,
            routes,
            access,
            health,
            door,
            loops,
            calls,
            tls,
            no_auth,
            grace: shutdown_grace,
            export_spans,
        })
    }

    /// Serves gRPC (and the HTTP door) until `shutdown` resolves; then says
    /// NOT_SERVING, stops accepting, lets in-flight calls and streams finish
    /// within the grace period, and stops every background loop.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), StartError> {
        let Self {
            listener,
            routes,
            access,
            health,
            door,
            mut loops,
            calls,
            tls,
            no_auth,
            grace,
            export_spans,
        } = self;
        let signalled = CancellationToken::new();
        let on_signal = health.on_shutdown(shutdown, loops.background.clone(), signalled.clone());
        let addr = listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        switchyard_shared::tls::log_mode(
            "data plane",
            listener.local_addr().ok(),
            tls.as_ref(),
            !no_auth,
        );
        if let Some(door) = door {
            let serve = crate::door::serve(
                door.listener,
                door.router,
                tls.clone(),
                door.limits,
                door.metrics,
                signalled.clone(),
                grace,
            );
            loops.spawn("http door", serve);
        }
        let incoming = Incoming::new(listener, tls.as_ref());
        let tls_mode = tls.as_ref().map_or("off", ServerTls::mode);
        tracing::info!(addr = %addr, tls = tls_mode, "data plane listening");
        let server = grpc::serve(incoming, routes, access, export_spans, on_signal);
        let result =
            switchyard_shared::shutdown::drain_within(server, signalled.cancelled(), grace)
                .await
                .map_err(StartError::from);
        loops.background.cancel();
        calls.close();
        if tokio::time::timeout(grace, calls.wait()).await.is_err() {
            tracing::warn!("streams still open after the grace period");
        }
        loops.pusher_stop.cancel();
        loops.running.push(("health reporter", health.task));
        for (name, h) in loops.running {
            if let Err(e) = h.await {
                tracing::error!(task = name, error = %e, "background task failed");
            }
        }
        tracing::info!("data plane stopped");
        result
    }
}
