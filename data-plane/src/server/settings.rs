//! What a worker is given: where config and shared state come from, and
//! every knob, each starting from its value in [`defaults`](super::defaults).

use std::sync::Arc;
use std::time::Duration;

use switchyard_proto::v1 as pb;
use switchyard_shared::auth::Authorizer;
use switchyard_shared::credential_ref::ReferenceRules;
use switchyard_shared::redis_client::RedisConfig;
use switchyard_shared::seal::MasterKeys;
use switchyard_shared::tls::ServerTls;
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::defaults as d;
use crate::credentials::{ProcessSecrets, Secrets};
use crate::observe::Metrics;

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
    /// Every knob at its default, config and state from `source`.
    pub fn new(source: Source) -> Self {
        Self {
            source,
            master_keys: None,
            credential_rules: ReferenceRules::default(),
            max_attempts: d::MAX_ATTEMPTS,
            admission_queue: d::ADMISSION_QUEUE,
            rate_limit_cooldown: Duration::from_millis(d::RATE_LIMIT_COOLDOWN_MS),
            auth_cooldown: Duration::from_millis(d::AUTH_COOLDOWN_MS),
            retry_backoff: Duration::from_millis(d::RETRY_BACKOFF_MS),
            retry_budget: crate::fleet::budget::BudgetPolicy::default(),
            stream_idle: Duration::from_millis(d::STREAM_IDLE_MS),
            config_check_every: Duration::from_millis(d::CONFIG_CHECK_MS),
            shutdown_grace: Duration::from_secs(d::SHUTDOWN_GRACE_SECS),
            max_message_bytes: d::MAX_MESSAGE_BYTES,
            secrets: Box::new(ProcessSecrets),
            auth: Authorizer::disabled(),
            no_auth: false,
            metrics: Metrics::register(&mut prometheus_client::registry::Registry::default()),
            stats_flush: Duration::from_millis(d::STATS_FLUSH_MS),
            span_metadata: Vec::new(),
            export_spans: false,
            tls: None,
            http: None,
            http_max_body: d::HTTP_MAX_BODY_BYTES,
            http_limits: d::http_limits(),
            http_origins: crate::door::Origins::default(),
        }
    }
}
