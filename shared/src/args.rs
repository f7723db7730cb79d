//! Flags and environment both servers take the same way: logs and traces,
//! Redis, the master key. Each server flattens these into its own `Args`.

use std::path::PathBuf;

use secrecy::{ExposeSecret as _, SecretString};

use crate::credential_ref::ReferenceRules;
use crate::redis_client::RedisConfig;
use crate::seal::{MasterKey, MasterKeys};
use crate::telemetry::{LogFormat, TelemetryConfig};

/// Reads a secret flag or variable: wrapped at once, so `Debug`, logs and
/// errors print `[REDACTED]`; only the code that uses it exposes it.
pub fn secret(value: &str) -> Result<SecretString, std::convert::Infallible> {
    Ok(SecretString::from(value))
}

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
        hide_env_values = true,
        value_parser = secret
    )]
    pub redis_url: SecretString,
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
            url: self.redis_url.expose_secret().to_owned(),
            cluster: self.redis_cluster,
            ca_file: self.redis_ca_file.clone(),
        }
    }
}

/// The master key that seals (control plane) and opens (workers) inline
/// credentials, signs (control plane) and verifies (workers) the config
/// snapshot, and keys caller-key hashes; during a rotation, the previous
/// one too (docs: README "Rotating the master key").
#[derive(clap::Args, Clone, Debug)]
pub struct MasterKeyArgs {
    /// Base64 32-byte key sealing inline credentials and signing the config snapshot (generate: `switchyard keygen`).
    #[arg(
        long,
        env = "SWITCHYARD_MASTER_KEY",
        hide_env_values = true,
        value_parser = secret
    )]
    pub master_key: Option<SecretString>,
    /// File holding the master key.
    #[arg(long, env = "SWITCHYARD_MASTER_KEY_FILE")]
    pub master_key_file: Option<PathBuf>,
    /// The master key being rotated out: still opens credentials sealed,
    /// snapshots signed and caller keys hashed under it.
    #[arg(
        long,
        env = "SWITCHYARD_PREVIOUS_MASTER_KEY",
        hide_env_values = true,
        value_parser = secret
    )]
    pub previous_master_key: Option<SecretString>,
    /// File holding the previous master key.
    #[arg(long, env = "SWITCHYARD_PREVIOUS_MASTER_KEY_FILE")]
    pub previous_master_key_file: Option<PathBuf>,
}

impl MasterKeyArgs {
    pub fn load(&self) -> Result<Option<MasterKeys>, String> {
        let current = load_master_key(
            self.master_key.as_ref().map(|k| k.expose_secret()),
            self.master_key_file.as_ref(),
        )?;
        let previous = load_key(
            "the previous master key",
            "SWITCHYARD_PREVIOUS_MASTER_KEY or --previous-master-key-file",
            self.previous_master_key.as_ref().map(|k| k.expose_secret()),
            self.previous_master_key_file.as_ref(),
        )?;
        match (current, previous) {
            (None, None) => Ok(None),
            (None, Some(_)) => Err(
                "--previous-master-key needs --master-key (SWITCHYARD_MASTER_KEY): the previous key only opens, it never signs"
                    .into(),
            ),
            (Some(c), Some(p)) if c.id() == p.id() => Err(format!(
                "the previous master key is the current one (id {}); give the new key as --master-key",
                c.id()
            )),
            (Some(c), p) => Ok(Some(MasterKeys::new(c, p))),
        }
    }
}

/// Reads the master key from a flag/env value or a file.
pub fn load_master_key(
    inline: Option<&str>,
    file: Option<&PathBuf>,
) -> Result<Option<MasterKey>, String> {
    load_key(
        "the master key",
        "SWITCHYARD_MASTER_KEY or --master-key-file",
        inline,
        file,
    )
}

fn load_key(
    what: &str,
    flags: &str,
    inline: Option<&str>,
    file: Option<&PathBuf>,
) -> Result<Option<MasterKey>, String> {
    let text = match (inline.filter(|s| !s.is_empty()), file) {
        (Some(_), Some(_)) => {
            return Err(format!("give {what} once: {flags}, not both"));
        }
        (Some(k), None) => k.to_owned(),
        // Config parsing, once at start-up.
        #[allow(clippy::disallowed_methods)]
        (None, Some(path)) => std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {what} file {}: {e}", path.display()))?,
        (None, None) => return Ok(None),
    };
    MasterKey::from_base64(&text)
        .map(Some)
        .map_err(|e| format!("{what}: {e}"))
}

/// Which credential references may be resolved (workers) or stored
/// (control plane, `switchyard validate`): workers and control plane must
/// be given the same values; the worker's check is the authority.
#[derive(clap::Args, Clone, Debug)]
pub struct CredentialArgs {
    /// `env:NAME` credential references must name a variable starting with
    /// this (SWITCHYARD_*, REDIS_* and DATABASE_* are refused whatever it is).
    #[arg(
        long,
        env = "SWITCHYARD_CREDENTIAL_ENV_PREFIX",
        default_value = crate::credential_ref::DEFAULT_ENV_PREFIX
    )]
    pub credential_env_prefix: String,
    /// The mounted secrets folder `file:` credential references must be
    /// inside (after resolving symlinks); without it, `file:` references are refused.
    #[arg(long, env = "SWITCHYARD_CREDENTIAL_DIR")]
    pub credential_dir: Option<PathBuf>,
}

impl CredentialArgs {
    pub fn rules(&self) -> Result<ReferenceRules, String> {
        ReferenceRules::new(&self.credential_env_prefix, self.credential_dir.clone())
    }
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

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    #[derive(clap::Parser, Debug)]
    struct Flags {
        #[command(flatten)]
        redis: RedisArgs,
        #[command(flatten)]
        master_key: MasterKeyArgs,
    }

    #[test]
    fn debug_never_prints_a_secret_flag() {
        let current = MasterKey::generate_base64();
        let previous = MasterKey::generate_base64();
        let flags = Flags::try_parse_from([
            "server",
            "--redis-url",
            "redis://:hunter2-redis-password@10.0.0.1:6379",
            "--master-key",
            &current,
            "--previous-master-key",
            &previous,
        ])
        .map_err(|e| e.to_string());
        let Ok(flags) = flags else {
            panic!("flags: {flags:?}");
        };
        let printed = format!("{flags:?} {flags:#?}");
        for secret in ["hunter2-redis-password", &current, &previous] {
            assert!(!printed.contains(secret), "{secret} printed: {printed}");
        }
        // What is wrapped is still what was given, where it is used.
        assert!(flags.redis.config().url.contains("hunter2-redis-password"));
        let keys = flags.master_key.load().map_err(|e| e.to_string());
        assert!(matches!(keys, Ok(Some(_))), "{keys:?}");
    }
}
