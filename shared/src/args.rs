//! Flags and environment both servers take the same way: logs and traces,
//! Redis, the master key. Each server flattens these into its own `Args`.

use std::path::PathBuf;

use crate::redis_client::RedisConfig;
use crate::seal::MasterKey;
use crate::telemetry::{LogFormat, TelemetryConfig};

/// Logs and traces.
#[derive(clap::Args, Clone, Debug)]
pub struct TelemetryArgs {
    /// Log format: text or json.
    #[arg(long, env = "SWITCHYARD_LOG_FORMAT", default_value = "text")]
    pub log_format: LogFormat,
    /// Log filter, RUST_LOG syntax.
    #[arg(long, env = "RUST_LOG", default_value = "info")]
    pub log: String,
    /// OTLP endpoint for traces (e.g. http://127.0.0.1:4317); export is off when unset.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    /// OTLP protocol: grpc, or http/protobuf (then /v1/traces is added to the endpoint).
    #[arg(long, env = "OTEL_EXPORTER_OTLP_PROTOCOL", default_value = "grpc")]
    pub otlp_protocol: crate::telemetry::OtlpProtocol,
    /// PEM CA bundle that signs an https:// OTLP/gRPC endpoint's certificate.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_CERTIFICATE")]
    pub otlp_ca_file: Option<PathBuf>,
}

impl TelemetryArgs {
    pub fn config(&self, service_name: &'static str) -> TelemetryConfig {
        TelemetryConfig {
            service_name,
            log_format: self.log_format,
            log_filter: self.log.clone(),
            otlp_endpoint: self.otlp_endpoint.clone().filter(|s| !s.is_empty()),
            otlp_protocol: self.otlp_protocol,
            otlp_ca_file: self.otlp_ca_file.clone(),
        }
    }
}

/// Where Redis is and the prefix every key and channel lives under.
#[derive(clap::Args, Clone, Debug)]
pub struct RedisArgs {
    #[arg(
        long,
        env = "REDIS_URL",
        default_value = "redis://127.0.0.1:6379",
        hide_env_values = true
    )]
    pub redis_url: String,
    /// Prefix of every Redis key and channel (the same for the control plane and its workers).
    #[arg(long, env = "SWITCHYARD_REDIS_PREFIX", default_value = "switchyard")]
    pub redis_prefix: String,
    /// Redis is a Redis/Valkey Cluster; REDIS_URL may list several seed nodes, comma-separated.
    #[arg(long, env = "SWITCHYARD_REDIS_CLUSTER")]
    pub redis_cluster: bool,
    /// PEM CA bundle that signs the Redis server certificate (rediss:// only; default: system roots).
    #[arg(long, env = "SWITCHYARD_REDIS_CA_FILE")]
    pub redis_ca_file: Option<PathBuf>,
}

impl RedisArgs {
    /// The checked prefix.
    pub fn prefix(&self) -> Result<String, String> {
        if self.redis_prefix.is_empty() || self.redis_prefix.contains(char::is_whitespace) {
            return Err("--redis-prefix must be non-empty and without spaces".into());
        }
        Ok(self.redis_prefix.clone())
    }

    /// Where Redis is, for [`crate::redis_client::Redis::open`].
    pub fn config(&self) -> RedisConfig {
        RedisConfig {
            url: self.redis_url.clone(),
            cluster: self.redis_cluster,
            ca_file: self.redis_ca_file.clone(),
        }
    }
}

/// The master key that seals (control plane) and opens (workers) inline credentials.
#[derive(clap::Args, Clone, Debug)]
pub struct MasterKeyArgs {
    /// Base64 32-byte key sealing inline credentials (generate: `switchyard keygen`).
    #[arg(long, env = "SWITCHYARD_MASTER_KEY", hide_env_values = true)]
    pub master_key: Option<String>,
    /// File holding the master key.
    #[arg(long, env = "SWITCHYARD_MASTER_KEY_FILE")]
    pub master_key_file: Option<PathBuf>,
}

impl MasterKeyArgs {
    pub fn load(&self) -> Result<Option<MasterKey>, String> {
        load_master_key(self.master_key.as_deref(), self.master_key_file.as_ref())
    }
}

/// Reads the master key from a flag/env value or a file.
pub fn load_master_key(
    inline: Option<&str>,
    file: Option<&PathBuf>,
) -> Result<Option<MasterKey>, String> {
    let text = match (inline.filter(|s| !s.is_empty()), file) {
        (Some(_), Some(_)) => {
            return Err(
                "give the master key once: SWITCHYARD_MASTER_KEY or --master-key-file, not both"
                    .into(),
            );
        }
        (Some(k), None) => k.to_owned(),
        // Config parsing, once at start-up.
        #[allow(clippy::disallowed_methods)]
        (None, Some(path)) => std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read master key file {}: {e}", path.display()))?,
        (None, None) => return Ok(None),
    };
    MasterKey::from_base64(&text)
        .map(Some)
        .map_err(|e| e.to_string())
}

/// TLS on the gRPC port (and, with `--metrics-tls`, on the metrics port).
#[derive(clap::Args, Clone, Debug, Default)]
pub struct TlsArgs {
    /// PEM certificate chain to serve (with --tls-key); re-read when it changes on disk.
    #[arg(long, env = "SWITCHYARD_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "SWITCHYARD_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA bundle: callers must present a certificate it signed (mTLS).
    #[arg(long, env = "SWITCHYARD_TLS_CLIENT_CA")]
    pub tls_client_ca: Option<PathBuf>,
    /// Serve the metrics port with the same TLS (and client certificates, with --tls-client-ca).
    #[arg(long, env = "SWITCHYARD_METRICS_TLS")]
    pub metrics_tls: bool,
}

impl TlsArgs {
    /// The server's TLS, or `None` for plaintext (h2c).
    pub fn load(&self) -> Result<Option<crate::tls::ServerTls>, String> {
        let given = |p: &Option<PathBuf>| p.clone().filter(|p| !p.as_os_str().is_empty());
        let client_ca = given(&self.tls_client_ca);
        match (given(&self.tls_cert), given(&self.tls_key)) {
            (Some(cert), Some(key)) => {
                crate::tls::ServerTls::load(&cert, &key, client_ca.as_deref())
                    .map(Some)
                    .map_err(|e| e.to_string())
            }
            (Some(_), None) => {
                Err("--tls-cert needs --tls-key (SWITCHYARD_TLS_KEY): give both or neither".into())
            }
            (None, Some(_)) => {
                Err("--tls-key needs --tls-cert (SWITCHYARD_TLS_CERT): give both or neither".into())
            }
            (None, None) if client_ca.is_some() => {
                Err("--tls-client-ca needs --tls-cert and --tls-key: mTLS runs over TLS".into())
            }
            (None, None) if self.metrics_tls => {
                Err("--metrics-tls needs --tls-cert and --tls-key".into())
            }
            (None, None) => Ok(None),
        }
    }

    /// The TLS of the metrics port: `tls` when `--metrics-tls` is set.
    pub fn metrics(&self, tls: Option<&crate::tls::ServerTls>) -> Option<crate::tls::ServerTls> {
        tls.filter(|_| self.metrics_tls).cloned()
    }
}
