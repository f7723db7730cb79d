//! Command-line flags and environment for `switchyard-control-plane`,
//! validated into [`Settings`] at start-up.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;
use switchyard_shared::seal::MasterKey;
use switchyard_shared::telemetry::{LogFormat, TelemetryConfig};

use crate::server::{BusSettings, Settings};
use switchyard_shared::auth::{Authorizer, Role, parse_tokens_file};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum BusKind {
    Redis,
    Local,
}

/// Flags shared by the servers for logs and traces.
#[derive(clap::Args, Clone, Debug)]
pub struct TelemetryArgs {
    /// Log format: text or json.
    #[arg(long, env = "SWITCHYARD_LOG_FORMAT", default_value = "text")]
    pub log_format: LogFormat,
    /// Log filter, RUST_LOG syntax.
    #[arg(long, env = "RUST_LOG", default_value = "info")]
    pub log: String,
    /// OTLP/gRPC endpoint for traces (e.g. http://127.0.0.1:4317); export is off when unset.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
}

impl TelemetryArgs {
    pub fn config(&self, service_name: &'static str) -> TelemetryConfig {
        TelemetryConfig {
            service_name,
            log_format: self.log_format,
            log_filter: self.log.clone(),
            otlp_endpoint: self.otlp_endpoint.clone().filter(|s| !s.is_empty()),
        }
    }
}

/// switchyard-control-plane: gRPC CRUD for providers, pools, members and
/// routes; every change is published over Redis.
#[derive(clap::Parser)]
#[command(version, about)]
pub struct Args {
    /// Address to listen on (port 0 picks a free port; the bound address is logged).
    #[arg(long, env = "SWITCHYARD_LISTEN", default_value = "0.0.0.0:50051")]
    pub listen: SocketAddr,
    /// Config database: postgres://… or sqlite://path?mode=rwc.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/switchyard",
        hide_env_values = true
    )]
    pub database_url: String,
    /// Where changes are published: redis (production) or local (in-process; no data plane can follow).
    #[arg(long, env = "SWITCHYARD_BUS", value_enum, default_value = "redis")]
    pub bus: BusKind,
    #[arg(
        long,
        env = "REDIS_URL",
        default_value = "redis://127.0.0.1:6379",
        hide_env_values = true
    )]
    pub redis_url: String,
    /// Prefix of every Redis key and channel.
    #[arg(long, env = "SWITCHYARD_REDIS_PREFIX", default_value = "switchyard")]
    pub redis_prefix: String,
    /// Comma-separated admin tokens (read and write).
    #[arg(
        long,
        env = "SWITCHYARD_ADMIN_TOKENS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub admin_tokens: Vec<String>,
    /// Comma-separated reader tokens (read only).
    #[arg(
        long,
        env = "SWITCHYARD_READER_TOKENS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub reader_tokens: Vec<String>,
    /// File of `admin TOKEN` / `reader TOKEN` lines.
    #[arg(long, env = "SWITCHYARD_TOKENS_FILE")]
    pub tokens_file: Option<PathBuf>,
    /// Accept every caller without a token. For local development only.
    #[arg(long, env = "SWITCHYARD_NO_AUTH")]
    pub no_auth: bool,
    /// Base64 32-byte key sealing inline credentials (generate: `switchyard keygen`).
    #[arg(long, env = "SWITCHYARD_MASTER_KEY", hide_env_values = true)]
    pub master_key: Option<String>,
    /// File holding the master key.
    #[arg(long, env = "SWITCHYARD_MASTER_KEY_FILE")]
    pub master_key_file: Option<PathBuf>,
    /// Largest request message accepted, in bytes (larger: RESOURCE_EXHAUSTED).
    #[arg(long, env = "SWITCHYARD_MAX_MESSAGE_BYTES", default_value_t = 1 << 20)]
    pub max_message_bytes: usize,
    /// Do not run migrations at start-up (run `switchyard migrate` instead).
    #[arg(long, env = "SWITCHYARD_SKIP_MIGRATIONS")]
    pub skip_migrations: bool,
    /// Seconds in-flight calls get to finish after SIGTERM.
    #[arg(long, env = "SWITCHYARD_SHUTDOWN_GRACE_SECS", default_value_t = 20)]
    pub shutdown_grace_secs: u64,
    #[command(flatten)]
    pub telemetry: TelemetryArgs,
}

/// Reads the master key from a flag/env value or a file.
pub fn load_master_key(
    inline: Option<&str>,
    file: Option<&PathBuf>,
) -> Result<Option<MasterKey>, String> {
    let text =
        match (inline.filter(|s| !s.is_empty()), file) {
            (Some(_), Some(_)) => return Err(
                "give the master key once: SWITCHYARD_MASTER_KEY or --master-key-file, not both"
                    .into(),
            ),
            (Some(k), None) => k.to_owned(),
            (None, Some(path)) => std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read master key file {}: {e}", path.display()))?,
            (None, None) => return Ok(None),
        };
    MasterKey::from_base64(&text)
        .map(Some)
        .map_err(|e| e.to_string())
}

impl Args {
    /// Validates the flags; the error says what to fix.
    pub fn settings(&self) -> Result<Settings, String> {
        let mut tokens: Vec<(SecretString, Role)> = Vec::new();
        tokens.extend(
            self.admin_tokens
                .iter()
                .filter(|t| !t.is_empty())
                .map(|t| (SecretString::from(t.clone()), Role::Admin)),
        );
        tokens.extend(
            self.reader_tokens
                .iter()
                .filter(|t| !t.is_empty())
                .map(|t| (SecretString::from(t.clone()), Role::Reader)),
        );
        if let Some(path) = &self.tokens_file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read tokens file {}: {e}", path.display()))?;
            tokens.extend(parse_tokens_file(&text)?);
        }
        let auth = match (self.no_auth, tokens.is_empty()) {
            (true, true) => Authorizer::disabled(),
            (true, false) => {
                return Err("--no-auth conflicts with configured tokens; drop one".into());
            }
            (false, true) => {
                return Err("no tokens configured: set SWITCHYARD_ADMIN_TOKENS (and SWITCHYARD_READER_TOKENS) or \
                            --tokens-file, or pass --no-auth for local development"
                    .into());
            }
            (false, false) => Authorizer::new(tokens),
        };
        if self.max_message_bytes < 1024 {
            return Err(format!(
                "--max-message-bytes {} is too small; use at least 1024",
                self.max_message_bytes
            ));
        }
        if self.redis_prefix.is_empty() || self.redis_prefix.contains(char::is_whitespace) {
            return Err("--redis-prefix must be non-empty and without spaces".into());
        }
        let bus = match self.bus {
            BusKind::Redis => BusSettings::Redis {
                url: self.redis_url.clone(),
                prefix: self.redis_prefix.clone(),
            },
            BusKind::Local => BusSettings::Local,
        };
        Ok(Settings {
            database_url: self.database_url.clone(),
            bus,
            auth,
            master_key: load_master_key(self.master_key.as_deref(), self.master_key_file.as_ref())?,
            max_message_bytes: self.max_message_bytes,
            run_migrations: !self.skip_migrations,
            shutdown_grace: Duration::from_secs(self.shutdown_grace_secs),
        })
    }
}
