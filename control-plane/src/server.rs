//! Wiring: database, bus, publisher and the gRPC server, with one shutdown path.
//!
//! Shutdown order (SIGTERM): health NOT_SERVING → stop accepting → end
//! WatchChanges streams and let unary calls finish within the grace period →
//! stop the publisher after one last drain → return (telemetry flushes last,
//! in `main`).

use std::future::Future;
use std::str::FromStr as _;
use std::sync::Arc;
use std::time::Duration;

use sea_orm::sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use sea_orm::{
    ConnectOptions, ConnectionTrait as _, Database, DatabaseConnection, SqlxSqliteConnector,
    TransactionTrait as _,
};
use sea_orm_migration::MigratorTrait as _;
use switchyard_migrations::Migrator;
use switchyard_proto::v1::control_plane_server::ControlPlaneServer;
use switchyard_shared::change::ChangeMessage;
use switchyard_shared::credential_ref::ReferenceRules;
use switchyard_shared::keys::RedisKeys;
use switchyard_shared::redis_client::Redis;
use switchyard_shared::seal::MasterKeys;
use switchyard_shared::tls::{Incoming, ServerTls};
use tokio::net::TcpListener;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::metrics::CpMetrics;
use crate::publish::{LocalBus, Publisher, RedisSink, Sink};
use crate::service::ControlPlaneService;
use crate::store::Store;
use switchyard_shared::auth::Authorizer;

/// Where changes are published.
#[derive(Clone, Debug)]
pub enum BusSettings {
    /// Production: Redis pub/sub plus the snapshot in Redis.
    Redis {
        redis: switchyard_shared::redis_client::RedisConfig,
        prefix: String,
    },
    /// The embedded default: in-process only.
    Local,
}

/// Everything `run` needs, resolved and validated.
pub struct Settings {
    pub database_url: String,
    pub bus: BusSettings,
    pub auth: Authorizer,
    /// The master key (seals inline credentials, signs the snapshot,
    /// hashes caller keys); the previous one, while rotating, is only
    /// passed on to nothing here: workers use it.
    pub master_keys: Option<MasterKeys>,
    /// Which credential references a provider may store (the same values
    /// as the workers', whose check is the authority).
    pub credential_rules: ReferenceRules,
    pub max_message_bytes: usize,
    pub run_migrations: bool,
    pub shutdown_grace: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot open the config database: {0}")]
    Database(String),
    #[error("migrations failed: {0}")]
    Migrate(String),
    #[error("invalid REDIS_URL: {0}")]
    RedisUrl(String),
    #[error("reflection: {0}")]
    Reflection(String),
    #[error("server: {0}")]
    Serve(#[from] tonic::transport::Error),
}

/// Opens the config database: Postgres, or SQLite (created if missing, WAL,
/// foreign keys on).
pub async fn connect_database(url: &str) -> Result<DatabaseConnection, StartError> {
    if url.starts_with("sqlite:") {
        let opts = SqliteConnectOptions::from_str(url)
            .map_err(|e| StartError::Database(e.to_string()))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(opts)
            .await
            .map_err(|e| StartError::Database(e.to_string()))?;
        return Ok(SqlxSqliteConnector::from_sqlx_sqlite_pool(pool));
    }
    let mut opts = ConnectOptions::new(url.to_owned());
    opts.max_connections(16)
        .connect_timeout(Duration::from_secs(5))
        .acquire_timeout(Duration::from_secs(5))
        .sqlx_logging(false);
    // The URL may hold a password: report the error kind, not the URL.
    Database::connect(opts)
        .await
        .map_err(|e| StartError::Database(redact_db_error(&e.to_string(), url)))
}

fn redact_db_error(msg: &str, url: &str) -> String {
    match url::Url::parse(url)
        .ok()
        .and_then(|u| u.password().map(str::to_owned))
    {
        Some(pw) if !pw.is_empty() => msg.replace(&pw, "*****"),
        _ => msg.to_owned(),
    }
}

/// Applies pending migrations. On Postgres they run in one transaction
/// holding an advisory lock, so replicas starting together migrate once.
pub async fn migrate(db: &DatabaseConnection) -> Result<(), StartError> {
    let err = |e: sea_orm::DbErr| StartError::Migrate(e.to_string());
    if db.get_database_backend() != sea_orm::DatabaseBackend::Postgres {
        return Migrator::up(db, None).await.map_err(err);
    }
    let txn = db.begin().await.map_err(err)?;
    txn.execute_unprepared(&format!("SELECT pg_advisory_xact_lock({MIGRATION_LOCK})"))
        .await
        .map_err(err)?;
    Migrator::up(&txn, None).await.map_err(err)?;
    txn.commit().await.map_err(err)
}

/// Advisory lock id for migrations ("swyd" in ASCII).
const MIGRATION_LOCK: i64 = 0x7377_7964;

/// A built control plane, ready to serve.
pub struct ControlPlane {
    store: Store,
    feed: broadcast::Sender<ChangeMessage>,
    sink: Sink,
    redis: Option<(Redis, RedisKeys)>,
    auth: Authorizer,
    max_message_bytes: usize,
    shutdown_grace: Duration,
    local_bus: Option<LocalBus>,
    metrics: Arc<CpMetrics>,
    tls: Option<ServerTls>,
}

impl ControlPlane {
    /// Registers the control plane's metrics in `registry` (served by the
    /// caller); without it they are kept but not served.
    pub fn register_metrics(&mut self, registry: &mut prometheus_client::registry::Registry) {
        self.metrics = CpMetrics::register(registry);
    }

    /// Serves gRPC over TLS (mTLS with a client CA) instead of h2c. Kept
    /// apart from [`Settings`] so code building `Settings` by hand (the
    /// embedded `switchyard dev`) need not change.
    pub fn set_tls(&mut self, tls: Option<ServerTls>) {
        self.tls = tls;
    }

    pub async fn build(settings: Settings) -> Result<Self, StartError> {
        let db = connect_database(&settings.database_url).await?;
        if settings.run_migrations {
            migrate(&db).await?;
        }
        let master_key = settings.master_keys.map(|k| k.current);
        let store = Store::new(db, master_key.clone(), settings.credential_rules);
        let feed = crate::feed::channel();
        let (sink, redis, local_bus) = match settings.bus {
            BusSettings::Redis { redis, prefix } => {
                let client =
                    Redis::open(&redis).map_err(|e| StartError::RedisUrl(e.to_string()))?;
                let keys = RedisKeys::new(prefix.clone());
                if master_key.is_none() {
                    tracing::warn!(
                        "no master key: the config snapshot is stored in Redis unsigned, and \
                         workers with a master key refuse it (give SWITCHYARD_MASTER_KEY)"
                    );
                }
                let signer = master_key.map(|key| (key, prefix));
                (
                    Sink::Redis(Box::new(RedisSink::new(
                        client.clone(),
                        keys.clone(),
                        signer,
                    ))),
                    Some((client, keys)),
                    None,
                )
            }
            BusSettings::Local => {
                let bus = LocalBus::new(feed.clone());
                (Sink::Local(bus.clone()), None, Some(bus))
            }
        };
        if settings.auth.is_disabled() {
            tracing::warn!(
                "authentication is DISABLED: every caller may read and write the configuration"
            );
        }
        Ok(Self {
            store,
            feed,
            sink,
            redis,
            auth: settings.auth,
            max_message_bytes: settings.max_message_bytes,
            shutdown_grace: settings.shutdown_grace,
            local_bus,
            metrics: CpMetrics::unregistered(),
            tls: None,
        })
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The in-process bus (embedded default only), for in-process subscribers.
    pub fn local_bus(&self) -> Option<LocalBus> {
        self.local_bus.clone()
    }

    /// Serves on `listener` until `shutdown` resolves, then drains.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), StartError> {
        let background = CancellationToken::new();
        let streams = CancellationToken::new();
        let tasks = TaskTracker::new();
        // Background loops, stopped by `background` and awaited last.
        let daemons = TaskTracker::new();

        let publisher = daemons.spawn(
            Publisher::new(self.store.clone(), self.sink, self.metrics.clone())
                .run(background.clone()),
        );
        let follower = self.redis.map(|(client, keys)| {
            daemons.spawn(crate::feed::follow_redis(
                client,
                keys,
                self.feed.clone(),
                background.clone(),
            ))
        });

        let (health, health_service) = tonic_health::server::health_reporter();
        health
            .set_serving::<ControlPlaneServer<ControlPlaneService>>()
            .await;
        let (reflection, reflection_alpha) =
            switchyard_proto::reflection_services("switchyard.v1.ControlPlane")
                .map_err(|e| StartError::Reflection(e.to_string()))?;

        let service = ControlPlaneService::new(
            self.store.clone(),
            self.feed.clone(),
            streams.clone(),
            tasks.clone(),
            self.metrics.clone(),
        );
        let control_plane =
            ControlPlaneServer::new(service).max_decoding_message_size(self.max_message_bytes);

        let signalled = CancellationToken::new();
        let on_signal = {
            let signalled = signalled.clone();
            let streams = streams.clone();
            async move {
                shutdown.await;
                tracing::info!("shutting down: not serving, draining in-flight calls");
                health
                    .set_not_serving::<ControlPlaneServer<ControlPlaneService>>()
                    .await;
                // The whole server too: probes that name no service ask for "".
                health
                    .set_service_status("", tonic_health::ServingStatus::NotServing)
                    .await;
                streams.cancel();
                signalled.cancel();
            }
        };

        let addr = listener.local_addr().ok();
        switchyard_shared::tls::log_mode(
            "control plane",
            addr,
            self.tls.as_ref(),
            !self.auth.is_disabled(),
        );
        // New handshakes pick up a certificate rotated on disk.
        let cert_watch = self
            .tls
            .clone()
            .map(|tls| daemons.spawn(tls.watch(background.clone())));
        let incoming = Incoming::new(listener, self.tls.as_ref());
        tracing::info!(
            addr = %addr.map(|a| a.to_string()).unwrap_or_default(),
            tls = self.tls.as_ref().map_or("off", ServerTls::mode),
            "control plane listening"
        );
        let router = tonic::transport::Server::builder()
            .trace_fn(|req| {
                let span = tracing::info_span!(
                    "rpc",
                    method = %req.uri().path(),
                    client = tracing::field::Empty
                );
                switchyard_shared::tls::record_client(&span, req.extensions());
                span
            })
            .layer(switchyard_shared::grpc::front_layers(self.auth))
            .add_service(health_service)
            .add_service(reflection)
            .add_service(reflection_alpha)
            .add_service(control_plane);
        // Boxed: either future is large, and only one of them runs.
        let server = match incoming {
            Incoming::Plain(tcp) => futures::future::Either::Left(Box::pin(
                router.serve_with_incoming_shutdown(tcp, on_signal),
            )),
            Incoming::Tls(tls) => futures::future::Either::Right(Box::pin(
                router.serve_with_incoming_shutdown(tls, on_signal),
            )),
        };

        let grace = self.shutdown_grace;
        let result =
            switchyard_shared::shutdown::drain_within(server, signalled.cancelled(), grace)
                .await
                .map_err(StartError::from);
        tasks.close();
        tasks.wait().await;
        background.cancel();
        daemons.close();
        if let Err(err) = publisher.await {
            tracing::error!(error = %err, "publisher task failed");
        }
        if let Some(f) = follower
            && let Err(err) = f.await
        {
            tracing::error!(error = %err, "change follower task failed");
        }
        if let Some(w) = cert_watch
            && let Err(err) = w.await
        {
            tracing::error!(error = %err, "certificate watch task failed");
        }
        tracing::info!("control plane stopped");
        result
    }
}
