//! Wiring: config sync, shared health, the HTTP client and the gRPC server,
//! with one shutdown path.
//!
//! Shutdown (SIGTERM): NOT_SERVING → stop accepting → in-flight unary calls
//! and streams finish within the grace period → background tasks stop.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use switchyard_proto::v1 as pb;
use switchyard_proto::v1::inference_server::InferenceServer;
use switchyard_shared::credential_ref::ReferenceRules;
use switchyard_shared::keys::RedisKeys;
use switchyard_shared::redis_client::{Redis, RedisConfig};
use switchyard_shared::seal::MasterKeys;
use switchyard_shared::tls::{Incoming, ServerTls};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use switchyard_shared::auth::Authorizer;
use switchyard_shared::caller_key::KeyHasher;

use crate::access::Access;

use crate::catalog::Catalog;
use crate::credentials::{ProcessSecrets, Resolver, Secrets};
use crate::failover::{Engine, Parts, Rules};
use crate::fleet::memory::MemoryBackend;
use crate::fleet::redis::RedisBackend;
use crate::fleet::timed::Timed;
use crate::fleet::{Backend, Fleet, Link, LinkState};
use crate::gauges::Live;
use crate::observe::stats::{MemoryStore, Recorder, RedisStore, Store};
use crate::observe::{Metrics, Observer};
use crate::service::InferenceService;
use crate::sync::{Loader, SyncState};

/// Where config and shared state come from.
pub enum Source {
    /// Production: snapshot, changes, counters and health in Redis.
    Redis { redis: RedisConfig, prefix: String },
    /// The embedded default: the control plane's in-process bus, state in memory.
    Local(watch::Receiver<Option<Arc<pb::Snapshot>>>),
}

pub struct Settings {
    pub source: Source,
    /// The master key (and, while rotating, the previous one): opens inline
    /// credentials, verifies the snapshot, checks caller keys.
    pub master_keys: Option<MasterKeys>,
    /// Which credential references may be resolved.
    pub credential_rules: ReferenceRules,
    pub max_attempts: u32,
    /// Requests one pool's admission queue holds (waiting for a concurrency slot).
    pub admission_queue: usize,
    /// A rate-limited member without a Retry-After is benched this long.
    pub rate_limit_cooldown: Duration,
    /// A member whose credential or account is refused is benched this long.
    pub auth_cooldown: Duration,
    /// First backoff between retries of one member.
    pub retry_backoff: Duration,
    /// How many retries each pool may make, per first attempt and per second.
    pub retry_budget: crate::fleet::budget::BudgetPolicy,
    pub stream_idle: Duration,
    pub config_check_every: Duration,
    pub shutdown_grace: Duration,
    pub max_message_bytes: usize,
    pub secrets: Box<dyn Secrets>,
    /// The deprecated flat list of inference tokens (disabled = none).
    pub auth: Authorizer,
    /// Nobody is checked (`--no-auth`; logged as a warning). Without it and
    /// without tokens, callers need caller keys, which need the master key.
    pub no_auth: bool,
    /// Where this worker's metrics are registered (served by the caller).
    pub metrics: Arc<Metrics>,
    /// How often pool statistics are flushed to the fleet's store.
    pub stats_flush: Duration,
    /// Caller metadata keys copied into request spans.
    pub span_metadata: Vec<String>,
    /// Spans are exported over OTLP: RPCs and attempts get full spans.
    pub export_spans: bool,
    /// TLS (mTLS with a client CA) on the gRPC port; `None`: h2c.
    pub tls: Option<ServerTls>,
    /// The OpenAI-compatible HTTP door's listener (`None`: off). It uses
    /// the same TLS as the gRPC port.
    pub http: Option<TcpListener>,
    /// Largest request body the HTTP door takes.
    pub http_max_body: usize,
    /// How the HTTP door bounds its connections.
    pub http_limits: crate::door::Limits,
    /// Origins browsers may call the HTTP door from (none by default).
    pub http_origins: crate::door::Origins,
}

impl Settings {
    pub fn new(source: Source) -> Self {
        Self {
            source,
            master_keys: None,
            credential_rules: ReferenceRules::default(),
            max_attempts: 10,
            admission_queue: crate::fleet::slots::DEFAULT_QUEUE,
            rate_limit_cooldown: Duration::from_secs(5),
            auth_cooldown: Duration::from_secs(300),
            retry_backoff: Duration::from_millis(50),
            retry_budget: crate::fleet::budget::BudgetPolicy::default(),
            stream_idle: Duration::from_secs(30),
            config_check_every: Duration::from_secs(1),
            shutdown_grace: Duration::from_secs(30),
            max_message_bytes: 4 << 20,
            secrets: Box::new(ProcessSecrets),
            auth: Authorizer::disabled(),
            no_auth: false,
            metrics: Metrics::register(&mut prometheus_client::registry::Registry::default()),
            stats_flush: Duration::from_secs(5),
            span_metadata: Vec::new(),
            export_spans: false,
            tls: None,
            http: None,
            http_max_body: 32 << 20,
            http_limits: crate::door::Limits::default(),
            http_origins: crate::door::Origins::default(),
        }
    }
}

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

/// What keeps the worker's config and fleet state live.
enum Follow {
    Redis {
        client: Box<Redis>,
        prefix: String,
        keys: RedisKeys,
        backend: Arc<RedisBackend>,
    },
    Local(watch::Receiver<Option<Arc<pb::Snapshot>>>),
}

/// Runs a data-plane worker on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    settings: Settings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    let background = CancellationToken::new();
    let tasks = TaskTracker::new();
    let catalog = Arc::new(ArcSwap::from_pointee(Catalog::default()));
    let access = access(&settings, &catalog)?;
    let (state_tx, state_rx) = watch::channel(SyncState::Loading);
    // Background loops, stopped by `background` and awaited at shutdown.
    let daemons = TaskTracker::new();
    let link = Arc::new(Link::default());
    // The pusher outlives in-flight requests: what they report at the end
    // (a probe's release above all) still reaches the fleet.
    let pusher_stop = CancellationToken::new();
    let mut workers = Vec::new();
    // The fleet first (its backend), then config sync, which tells it of new pools.
    let (backend, stats_store, follow): (Arc<dyn Backend>, Arc<dyn Store>, Follow) = match settings
        .source
    {
        Source::Redis { redis, prefix } => {
            let client = Redis::open(&redis).map_err(|e| StartError::RedisUrl(e.to_string()))?;
            let keys = RedisKeys::new(prefix.clone());
            let backend = Arc::new(RedisBackend::new(client.clone(), keys.clone()));
            let timed = Arc::new(Timed::new(backend.clone(), settings.metrics.redis.clone()));
            let stats = Arc::new(RedisStore {
                redis: client.clone(),
                keys: keys.clone(),
                conn: tokio::sync::OnceCell::new(),
            });
            (
                timed,
                stats,
                Follow::Redis {
                    client: Box::new(client),
                    prefix,
                    keys,
                    backend,
                },
            )
        }
        Source::Local(rx) => (
            Arc::new(MemoryBackend::default()),
            Arc::new(MemoryStore::default()),
            Follow::Local(rx),
        ),
    };
    let (fleet, pusher) = Fleet::new(
        backend,
        link.clone(),
        settings.retry_budget,
        pusher_stop.clone(),
    );
    workers.push(("fleet pusher", daemons.spawn(pusher)));
    let applied = Arc::new(ArcSwap::from_pointee(tokio::time::Instant::now()));
    let signals = Arc::new(crate::signals::Signals::default());
    // Concurrency caps are leased from the fleet when there is one.
    let slots = crate::fleet::slots::Slots::new(
        matches!(follow, Follow::Redis { .. }),
        settings.admission_queue,
    );
    settings.metrics.attach(Live {
        signals: signals.clone(),
        slots: slots.clone(),
        catalog: catalog.clone(),
        fleet: fleet.clone(),
        sync: state_rx.clone(),
        applied: applied.clone(),
    });
    let observer = Arc::new(Observer {
        metrics: settings.metrics.clone(),
        stats: Recorder::new(stats_store),
    });
    workers.push((
        "stats flusher",
        daemons.spawn(crate::observe::stats::flush_every(
            observer.clone(),
            settings.stats_flush,
            pusher_stop.clone(),
        )),
    ));
    let loader = Loader {
        applied,
        catalog: catalog.clone(),
        resolver: Resolver {
            keys: settings.master_keys.clone(),
            rules: settings.credential_rules,
            secrets: settings.secrets,
        },
        rejected: settings.metrics.config_rejected.clone(),
        last_rejected: std::sync::Mutex::new(None),
        state: state_tx,
        fleet: fleet.clone(),
    };
    match follow {
        Follow::Redis {
            client,
            prefix,
            keys,
            backend,
        } => {
            // Until in-flight requests are done (their load still counts).
            workers.push((
                "live signals",
                daemons.spawn(crate::signals::share::run(
                    signals.clone(),
                    crate::signals::share::Board::new((*client).clone(), &keys),
                    fleet.worker_id().to_owned(),
                    pusher_stop.clone(),
                )),
            ));
            if settings.master_keys.is_none() {
                tracing::warn!(
                    "no master key: the config snapshot in Redis is not authenticated; anyone who \
                     can write Redis can change what this worker serves (give SWITCHYARD_MASTER_KEY)"
                );
            }
            // Until in-flight requests are done (their slots are still held).
            workers.push((
                "slot leases",
                daemons.spawn(crate::fleet::slots::lease::run(
                    slots.clone(),
                    catalog.clone(),
                    crate::fleet::slots::lease::Lessor::new((*client).clone(), keys.clone()),
                    fleet.worker_id().to_owned(),
                    pusher_stop.clone(),
                )),
            ));
            workers.push((
                "fleet follower",
                daemons.spawn(crate::fleet::follow::follow(
                    (*client).clone(),
                    backend,
                    fleet.clone(),
                    settings.config_check_every,
                    background.clone(),
                )),
            ));
            workers.push((
                "headroom sharer",
                daemons.spawn(crate::fleet::headroom::share(
                    (*client).clone(),
                    keys.clone(),
                    fleet.headroom().clone(),
                    background.clone(),
                )),
            ));
            workers.push((
                "config sync",
                daemons.spawn(crate::sync::follow_redis(
                    *client,
                    prefix,
                    keys,
                    loader,
                    settings.config_check_every,
                    background.clone(),
                )),
            ));
        }
        Follow::Local(rx) => {
            workers.push((
                "config sync",
                daemons.spawn(crate::sync::follow_local(rx, loader, background.clone())),
            ));
        }
    }
    let engine = Arc::new(Engine::new(Parts {
        catalog: catalog.clone(),
        fleet,
        observer,
        signals,
        slots,
        rules: Rules {
            max_attempts: settings.max_attempts,
            rate_limit_cooldown: settings.rate_limit_cooldown,
            auth_cooldown: settings.auth_cooldown,
            retry_backoff: settings.retry_backoff,
        },
        export_spans: settings.export_spans,
    }));
    let export_spans = settings.export_spans;

    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_not_serving::<InferenceServer<InferenceService>>()
        .await;
    health
        .set_service_status("", tonic_health::ServingStatus::NotServing)
        .await;
    // Serving once a config is loaded; "switchyard.config" reports whether
    // config is live, "switchyard.fleet" whether shared state is.
    let reporter = {
        let health = health.clone();
        let mut rx = state_rx.clone();
        let mut fleet_rx = link.watch();
        let stop = background.clone();
        daemons.spawn(async move {
            loop {
                let fleet_state = match *fleet_rx.borrow_and_update() {
                    LinkState::Up => tonic_health::ServingStatus::Serving,
                    LinkState::Degraded => tonic_health::ServingStatus::NotServing,
                };
                health
                    .set_service_status("switchyard.fleet", fleet_state)
                    .await;
                let state = *rx.borrow_and_update();
                let (main, config) = match state {
                    SyncState::Loading => (
                        tonic_health::ServingStatus::NotServing,
                        tonic_health::ServingStatus::NotServing,
                    ),
                    SyncState::Live => (
                        tonic_health::ServingStatus::Serving,
                        tonic_health::ServingStatus::Serving,
                    ),
                    SyncState::Stale | SyncState::Degraded => (
                        tonic_health::ServingStatus::Serving,
                        tonic_health::ServingStatus::NotServing,
                    ),
                };
                health
                    .set_service_status("switchyard.v1.Inference", main)
                    .await;
                health.set_service_status("", main).await;
                health.set_service_status("switchyard.config", config).await;
                tokio::select! {
                    () = stop.cancelled() => return,
                    r = rx.changed() => if r.is_err() { return },
                    r = fleet_rx.changed() => if r.is_err() { return },
                }
            }
        })
    };

    let (reflection, reflection_alpha) =
        switchyard_proto::reflection_services("switchyard.v1.Inference")
            .map_err(|e| StartError::Reflection(e.to_string()))?;
    let service = Arc::new(InferenceService::new(
        engine,
        tasks.clone(),
        settings.stream_idle,
        settings.span_metadata,
    ));
    let inference = InferenceServer::from_arc(service.clone())
        .max_decoding_message_size(settings.max_message_bytes);
    let door = settings.http.map(|listener| {
        let door = Arc::new(crate::door::Door {
            service,
            access: access.clone(),
            max_body: settings.http_max_body,
            body_timeout: settings.http_limits.idle_timeout,
            export_spans,
            origins: settings.http_origins.clone(),
        });
        (listener, crate::door::router(door))
    });

    let signalled = CancellationToken::new();
    let on_signal = {
        let signalled = signalled.clone();
        let background = background.clone();
        let health = health.clone();
        async move {
            shutdown.await;
            tracing::info!("shutting down: not serving, draining in-flight requests and streams");
            background.cancel();
            health
                .set_service_status(
                    "switchyard.v1.Inference",
                    tonic_health::ServingStatus::NotServing,
                )
                .await;
            health
                .set_service_status("", tonic_health::ServingStatus::NotServing)
                .await;
            signalled.cancel();
        }
    };
    let addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    switchyard_shared::tls::log_mode(
        "data plane",
        listener.local_addr().ok(),
        settings.tls.as_ref(),
        !settings.no_auth,
    );
    if let Some(tls) = settings.tls.clone() {
        // New handshakes pick up a certificate rotated on disk.
        workers.push((
            "certificate watch",
            daemons.spawn(tls.watch(background.clone())),
        ));
    }
    if let Some((listener, router)) = door {
        workers.push((
            "http door",
            daemons.spawn(crate::door::serve(
                listener,
                router,
                settings.tls.clone(),
                settings.http_limits,
                crate::door::ConnMetrics {
                    closed: settings.metrics.http_closed.clone(),
                    open: settings.metrics.http_open.clone(),
                },
                signalled.clone(),
                settings.shutdown_grace,
            )),
        ));
    }
    let incoming = Incoming::new(listener, settings.tls.as_ref());
    let tls_mode = settings.tls.as_ref().map_or("off", ServerTls::mode);
    tracing::info!(addr = %addr, tls = tls_mode, "data plane listening");
    let router = tonic::transport::Server::builder()
        .trace_fn(move |req| {
            let span = if export_spans {
                // The server span of every RPC, continuing the caller's trace.
                let span = tracing::info_span!(
                    "rpc",
                    otel.name = %req.uri().path().trim_start_matches('/'),
                    otel.kind = "server",
                    method = %req.uri().path(),
                    client = tracing::field::Empty
                );
                crate::observe::trace::continue_caller(&span, req.headers());
                span
            } else {
                tracing::info_span!("rpc", method = %req.uri().path(), client = tracing::field::Empty)
            };
            switchyard_shared::tls::record_client(&span, req.extensions());
            span
        })
        .layer(switchyard_shared::grpc::front_layers(access))
        .add_service(health_service)
        .add_service(reflection)
        .add_service(reflection_alpha)
        .add_service(inference);
    // Boxed: either future is large, and only one of them runs.
    let server = match incoming {
        Incoming::Plain(tcp) => futures::future::Either::Left(Box::pin(
            router.serve_with_incoming_shutdown(tcp, on_signal),
        )),
        Incoming::Tls(tls) => futures::future::Either::Right(Box::pin(
            router.serve_with_incoming_shutdown(tls, on_signal),
        )),
    };
    let grace = settings.shutdown_grace;
    let result = switchyard_shared::shutdown::drain_within(server, signalled.cancelled(), grace)
        .await
        .map_err(StartError::from);
    background.cancel();
    tasks.close();
    if tokio::time::timeout(grace, tasks.wait()).await.is_err() {
        tracing::warn!("streams still open after the grace period");
    }
    pusher_stop.cancel();
    workers.push(("health reporter", reporter));
    for (name, h) in workers {
        if let Err(e) = h.await {
            tracing::error!(task = name, error = %e, "background task failed");
        }
    }
    tracing::info!("data plane stopped");
    result
}

/// The caller check in front of every service, and the start-up rule that
/// no worker runs open by accident.
fn access(settings: &Settings, catalog: &Arc<ArcSwap<Catalog>>) -> Result<Access, StartError> {
    let hashers: Vec<KeyHasher> = settings
        .master_keys
        .iter()
        .flat_map(MasterKeys::all)
        .map(KeyHasher::new)
        .collect();
    if settings.no_auth {
        tracing::warn!(
            "authentication is OFF (--no-auth): anyone who reaches this port may call every model"
        );
    } else {
        if !settings.auth.is_disabled() {
            tracing::warn!(
                "SWITCHYARD_INFERENCE_TOKENS is deprecated: give each service its own caller key \
                 (CreateCaller); the tokens keep working meanwhile, with every model and no limits"
            );
        }
        if settings.auth.is_disabled() && hashers.is_empty() {
            return Err(StartError::Open);
        }
    }
    Ok(Access::new(
        catalog.clone(),
        hashers,
        settings.auth.clone(),
        settings.no_auth,
        settings.metrics.auth_failures.clone(),
    ))
}
