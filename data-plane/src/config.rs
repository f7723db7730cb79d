//! Flags and environment for `switchyard-data-plane`, validated into [`Settings`].

use std::net::SocketAddr;
use std::time::Duration;

use switchyard_shared::args::{CredentialArgs, MasterKeyArgs, RedisArgs, TelemetryArgs, TlsArgs};
use switchyard_shared::auth::{Authorizer, Role};
use switchyard_shared::telemetry::TelemetryConfig;

use crate::server::defaults as d;
use crate::server::{Settings, Source};

/// `--version`: the package version, and whether the in-process mock
/// upstream (provider kind MOCK, the `mock` cargo feature) is built in.
pub const VERSION: &str = if crate::upstream::MOCK_BUILT {
    concat!(env!("CARGO_PKG_VERSION"), " (mock upstream built in)")
} else {
    env!("CARGO_PKG_VERSION")
};

/// switchyard-data-plane: a stateless inference worker. Loads its config
/// from Redis and shares counters and member health with every other worker.
#[derive(clap::Parser)]
#[command(version = VERSION, about)]
pub struct Args {
    /// Address to listen on (port 0 picks a free port; the bound address is logged).
    #[arg(long, env = "SWITCHYARD_LISTEN", default_value = "0.0.0.0:50052")]
    pub listen: SocketAddr,
    #[command(flatten)]
    pub redis: RedisArgs,
    #[command(flatten)]
    pub master_key: MasterKeyArgs,
    #[command(flatten)]
    pub credentials: CredentialArgs,
    /// Deprecated: comma-separated bearer tokens that may call every model, unlimited (use caller keys).
    #[arg(
        long,
        env = "SWITCHYARD_INFERENCE_TOKENS",
        value_delimiter = ',',
        hide_env_values = true,
        value_parser = switchyard_shared::args::secret
    )]
    pub inference_tokens: Vec<secrecy::SecretString>,
    /// Let anyone call every model, unchecked (a warning says so at start).
    /// Without it, callers present caller keys (CreateCaller; checked with
    /// the master key) or, deprecated, one of the inference tokens.
    #[arg(long, env = "SWITCHYARD_NO_AUTH")]
    pub no_auth: bool,
    /// Most attempts one request may make, across members and retries.
    #[arg(long, env = "SWITCHYARD_MAX_ATTEMPTS", default_value_t = d::MAX_ATTEMPTS)]
    pub max_attempts: u32,
    /// Requests one pool's admission queue holds on this worker: a request
    /// that finds every member at its `max_concurrency` waits there (FIFO,
    /// within its deadline) for a slot; beyond this it is refused at once
    /// (RESOURCE_EXHAUSTED / HTTP 429 with a retry hint). 0: never wait.
    #[arg(long, env = "SWITCHYARD_ADMISSION_QUEUE", default_value_t = d::ADMISSION_QUEUE)]
    pub admission_queue: usize,
    /// How long a member answering 429/529 without Retry-After (or rate-limit
    /// reset headers) is benched, fleet-wide, in milliseconds.
    #[arg(
        long,
        env = "SWITCHYARD_RATE_LIMIT_COOLDOWN_MS",
        default_value_t = d::RATE_LIMIT_COOLDOWN_MS
    )]
    pub rate_limit_cooldown_ms: u64,
    /// How long a member whose credential or account is refused (401, 402,
    /// 403, billing errors) is benched, fleet-wide, in milliseconds.
    #[arg(long, env = "SWITCHYARD_AUTH_COOLDOWN_MS", default_value_t = d::AUTH_COOLDOWN_MS)]
    pub auth_cooldown_ms: u64,
    /// First backoff between retries of one member, in milliseconds (doubled
    /// each retry, with full jitter, at most 1 s, within the caller's deadline).
    #[arg(long, env = "SWITCHYARD_RETRY_BACKOFF_MS", default_value_t = d::RETRY_BACKOFF_MS)]
    pub retry_backoff_ms: u64,
    /// Retries (attempts after a request's first, failovers included) a pool
    /// may make, in percent of its recent first attempts.
    #[arg(long, env = "SWITCHYARD_RETRY_BUDGET_PERCENT", default_value_t = d::RETRY_BUDGET_PERCENT)]
    pub retry_budget_percent: u32,
    /// Retries a pool may make per second whatever its traffic.
    #[arg(long, env = "SWITCHYARD_RETRY_BUDGET_MIN_PER_SEC", default_value_t = d::RETRY_BUDGET_MIN_PER_SEC)]
    pub retry_budget_min_per_sec: u32,
    /// Longest silence between chunks of a committed stream, in milliseconds.
    #[arg(long, env = "SWITCHYARD_STREAM_IDLE_MS", default_value_t = d::STREAM_IDLE_MS)]
    pub stream_idle_ms: u64,
    /// How often the stored config revision is checked (heals lost messages), in milliseconds.
    #[arg(long, env = "SWITCHYARD_CONFIG_CHECK_MS", default_value_t = d::CONFIG_CHECK_MS)]
    pub config_check_ms: u64,
    /// Seconds in-flight requests and streams get to finish after SIGTERM.
    #[arg(long, env = "SWITCHYARD_SHUTDOWN_GRACE_SECS", default_value_t = d::SHUTDOWN_GRACE_SECS)]
    pub shutdown_grace_secs: u64,
    #[arg(long, env = "SWITCHYARD_MAX_MESSAGE_BYTES", default_value_t = d::MAX_MESSAGE_BYTES)]
    pub max_message_bytes: usize,
    /// Where Prometheus scrapes `GET /metrics` (host:port, or `off`).
    #[arg(
        long,
        env = "SWITCHYARD_METRICS_LISTEN",
        default_value = "0.0.0.0:9102"
    )]
    pub metrics_listen: String,
    /// How often this worker flushes its pool statistics to Redis, in milliseconds.
    #[arg(long, env = "SWITCHYARD_STATS_FLUSH_MS", default_value_t = d::STATS_FLUSH_MS)]
    pub stats_flush_ms: u64,
    /// Keys of a request's `metadata` copied into its trace span and log
    /// lines (comma-separated); none by default, since metadata may hold personal data.
    #[arg(long, env = "SWITCHYARD_TRACE_METADATA_KEYS", value_delimiter = ',')]
    pub trace_metadata_keys: Vec<String>,
    /// Where the OpenAI-compatible HTTP door listens (host:port, or `off`):
    /// POST /v1/chat/completions, POST /v1/embeddings, GET /v1/models.
    /// Same callers, TLS and engine as the gRPC port.
    #[arg(long, env = "SWITCHYARD_HTTP_LISTEN", default_value = "off")]
    pub http_listen: String,
    /// Largest request body the HTTP door takes, in bytes (inline images
    /// and documents count).
    #[arg(long, env = "SWITCHYARD_HTTP_MAX_BODY_BYTES", default_value_t = d::HTTP_MAX_BODY_BYTES)]
    pub http_max_body_bytes: usize,
    /// Longest the HTTP door waits for a whole request head, in
    /// milliseconds, from the moment it waits for one: a client trickling
    /// its headers, and an HTTP/1 keep-alive connection with no next
    /// request, are closed when it runs out.
    #[arg(
        long,
        env = "SWITCHYARD_HTTP_HEADER_TIMEOUT_MS",
        default_value_t = d::HTTP_HEADER_TIMEOUT_MS
    )]
    pub http_header_timeout_ms: u64,
    /// An HTTP door connection with no request in flight for this long is
    /// closed, in milliseconds; a request's body must arrive within it too
    /// (408 otherwise).
    #[arg(
        long,
        env = "SWITCHYARD_HTTP_IDLE_TIMEOUT_MS",
        default_value_t = d::HTTP_IDLE_TIMEOUT_MS
    )]
    pub http_idle_timeout_ms: u64,
    /// Most connections the HTTP door keeps open; one more is closed as
    /// soon as it is accepted.
    #[arg(long, env = "SWITCHYARD_HTTP_MAX_CONNECTIONS", default_value_t = d::HTTP_MAX_CONNECTIONS)]
    pub http_max_connections: usize,
    /// Origins (`scheme://host[:port]`, comma-separated) whose web pages may
    /// call the HTTP door from a browser; a request with any other `Origin`
    /// is refused (403). None by default.
    #[arg(long, env = "SWITCHYARD_HTTP_CORS_ORIGIN", value_delimiter = ',')]
    pub http_cors_origin: Vec<String>,
    #[command(flatten)]
    pub tls: TlsArgs,
    #[command(flatten)]
    pub telemetry: TelemetryArgs,
}

impl Args {
    pub fn telemetry(&self) -> TelemetryConfig {
        self.telemetry.config("switchyard-data-plane")
    }

    pub fn settings(&self) -> Result<Settings, String> {
        let master_key = self.master_key.load()?;
        if self.max_attempts == 0 || self.max_attempts > 100 {
            return Err(format!(
                "--max-attempts {} is out of range; use 1-100",
                self.max_attempts
            ));
        }
        if self.stream_idle_ms < 100 {
            return Err("--stream-idle-ms must be at least 100".into());
        }
        let mut s = Settings::new(Source::Redis {
            redis: self.redis.config(),
            prefix: self.redis.prefix()?,
        });
        s.master_keys = master_key;
        s.credential_rules = self.credentials.rules()?;
        s.max_attempts = self.max_attempts;
        if self.admission_queue > 100_000 {
            return Err(format!(
                "--admission-queue {} is out of range; use 0-100000",
                self.admission_queue
            ));
        }
        s.admission_queue = self.admission_queue;
        const DAY_MS: u64 = 86_400_000;
        for (flag, v) in [
            ("--rate-limit-cooldown-ms", self.rate_limit_cooldown_ms),
            ("--auth-cooldown-ms", self.auth_cooldown_ms),
        ] {
            if v == 0 || v > DAY_MS {
                return Err(format!("{flag} is {v}; use 1 to {DAY_MS} (a day)"));
            }
        }
        if self.retry_backoff_ms > 60_000 {
            return Err("--retry-backoff-ms is at most 60000".into());
        }
        s.rate_limit_cooldown = Duration::from_millis(self.rate_limit_cooldown_ms);
        s.auth_cooldown = Duration::from_millis(self.auth_cooldown_ms);
        s.retry_backoff = Duration::from_millis(self.retry_backoff_ms);
        if self.retry_budget_percent > 1000 {
            return Err("--retry-budget-percent is at most 1000".into());
        }
        s.retry_budget = crate::fleet::budget::BudgetPolicy::new(
            self.retry_budget_percent,
            self.retry_budget_min_per_sec,
        );
        s.stream_idle = Duration::from_millis(self.stream_idle_ms);
        s.config_check_every = Duration::from_millis(self.config_check_ms.max(100));
        s.shutdown_grace = Duration::from_secs(self.shutdown_grace_secs);
        s.max_message_bytes = self.max_message_bytes;
        if !(100..=60_000).contains(&self.stats_flush_ms) {
            return Err(format!(
                "--stats-flush-ms is {}; use 100 to 60000",
                self.stats_flush_ms
            ));
        }
        s.stats_flush = Duration::from_millis(self.stats_flush_ms);
        s.export_spans = self.telemetry().otlp_endpoint.is_some();
        s.span_metadata = self
            .trace_metadata_keys
            .iter()
            .map(|k| k.trim().to_owned())
            .filter(|k| !k.is_empty())
            .collect();
        let tokens: Vec<_> = self
            .inference_tokens
            .iter()
            .map(|t| secrecy::ExposeSecret::expose_secret(t).trim())
            .filter(|t| !t.is_empty())
            .map(|t| (secrecy::SecretString::from(t.to_owned()), Role::Reader))
            .collect();
        if !tokens.is_empty() {
            s.auth = Authorizer::new(tokens);
        }
        s.no_auth = self.no_auth;
        s.tls = self.tls.load()?;
        s.http_max_body = self.http_max_body_bytes;
        s.http_limits = self.http_limits()?;
        s.http_origins = crate::door::Origins::parse(&self.http_cors_origin)?;
        Ok(s)
    }

    fn http_limits(&self) -> Result<crate::door::Limits, String> {
        const HOUR_MS: u64 = 3_600_000;
        for (flag, v) in [
            ("--http-header-timeout-ms", self.http_header_timeout_ms),
            ("--http-idle-timeout-ms", self.http_idle_timeout_ms),
        ] {
            if !(100..=HOUR_MS).contains(&v) {
                return Err(format!("{flag} is {v}; use 100 to {HOUR_MS} (an hour)"));
            }
        }
        if !(1..=1_000_000).contains(&self.http_max_connections) {
            return Err(format!(
                "--http-max-connections is {}; use 1 to 1000000",
                self.http_max_connections
            ));
        }
        Ok(crate::door::Limits {
            header_timeout: Duration::from_millis(self.http_header_timeout_ms),
            idle_timeout: Duration::from_millis(self.http_idle_timeout_ms),
            max_connections: self.http_max_connections,
        })
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    #[test]
    fn a_worker_started_without_flags_gets_the_settings_defaults() {
        let args =
            Args::try_parse_from(["switchyard-data-plane", "--no-auth"]).map_err(|e| e.to_string());
        let from_flags = args.and_then(|a| a.settings());
        let Ok(flags) = from_flags else {
            panic!("settings: {:?}", from_flags.err());
        };
        let (tx, _rx) = tokio::sync::watch::channel(None);
        let plain = Settings::new(Source::Local(tx.subscribe()));
        assert_eq!(flags.max_attempts, plain.max_attempts);
        assert_eq!(flags.admission_queue, plain.admission_queue);
        assert_eq!(flags.rate_limit_cooldown, plain.rate_limit_cooldown);
        assert_eq!(flags.auth_cooldown, plain.auth_cooldown);
        assert_eq!(flags.retry_backoff, plain.retry_backoff);
        assert_eq!(flags.retry_budget.ratio, plain.retry_budget.ratio);
        assert_eq!(
            flags.retry_budget.floor_per_sec,
            plain.retry_budget.floor_per_sec
        );
        assert_eq!(flags.stream_idle, plain.stream_idle);
        assert_eq!(flags.config_check_every, plain.config_check_every);
        assert_eq!(flags.shutdown_grace, plain.shutdown_grace);
        assert_eq!(flags.max_message_bytes, plain.max_message_bytes);
        assert_eq!(flags.stats_flush, plain.stats_flush);
        assert_eq!(flags.http_max_body, plain.http_max_body);
        assert_eq!(
            format!("{:?}", flags.http_limits),
            format!("{:?}", plain.http_limits)
        );
    }
}
