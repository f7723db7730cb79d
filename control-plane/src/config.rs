//! Command-line flags and environment for `switchyard-control-plane`,
//! validated into [`Settings`] at start-up.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use secrecy::{ExposeSecret as _, SecretString};
use switchyard_shared::args::{
    CredentialArgs, MasterKeyArgs, RedisArgs, TelemetryArgs, TlsArgs, secret,
};

use crate::server::{BusSettings, Settings};
use switchyard_shared::auth::{Authorizer, Role, parse_tokens_file};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum BusKind {
    Redis,
    Local,
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
        hide_env_values = true,
        value_parser = secret
    )]
    pub database_url: SecretString,
    /// Where changes are published: redis (production) or local (in-process; no data plane can follow).
    #[arg(long, env = "SWITCHYARD_BUS", value_enum, default_value = "redis")]
    pub bus: BusKind,
    #[command(flatten)]
    pub redis: RedisArgs,
    /// Comma-separated admin tokens (read and write).
    #[arg(
        long,
        env = "SWITCHYARD_ADMIN_TOKENS",
        value_delimiter = ',',
        hide_env_values = true,
        value_parser = secret
    )]
    pub admin_tokens: Vec<SecretString>,
    /// Comma-separated reader tokens (read only).
    #[arg(
        long,
        env = "SWITCHYARD_READER_TOKENS",
        value_delimiter = ',',
        hide_env_values = true,
        value_parser = secret
    )]
    pub reader_tokens: Vec<SecretString>,
    /// File of `admin TOKEN` / `reader TOKEN` lines.
    #[arg(long, env = "SWITCHYARD_TOKENS_FILE")]
    pub tokens_file: Option<PathBuf>,
    /// Accept every caller without a token. For local development only.
    #[arg(long, env = "SWITCHYARD_NO_AUTH")]
    pub no_auth: bool,
    #[command(flatten)]
    pub master_key: MasterKeyArgs,
    #[command(flatten)]
    pub credentials: CredentialArgs,
    /// Largest request message accepted, in bytes (larger: RESOURCE_EXHAUSTED).
    #[arg(long, env = "SWITCHYARD_MAX_MESSAGE_BYTES", default_value_t = 1 << 20)]
    pub max_message_bytes: usize,
    /// Where Prometheus scrapes `GET /metrics` (host:port, or `off`).
    #[arg(
        long,
        env = "SWITCHYARD_METRICS_LISTEN",
        default_value = "0.0.0.0:9101"
    )]
    pub metrics_listen: String,
    /// Do not run migrations at start-up (run `switchyard migrate` instead).
    #[arg(long, env = "SWITCHYARD_SKIP_MIGRATIONS")]
    pub skip_migrations: bool,
    /// Seconds in-flight calls get to finish after SIGTERM.
    #[arg(long, env = "SWITCHYARD_SHUTDOWN_GRACE_SECS", default_value_t = 20)]
    pub shutdown_grace_secs: u64,
    #[command(flatten)]
    pub tls: TlsArgs,
    #[command(flatten)]
    pub telemetry: TelemetryArgs,
}

impl Args {
    /// Validates the flags; the error says what to fix.
    pub fn settings(&self) -> Result<Settings, String> {
        for (flag, list) in [
            ("SWITCHYARD_ADMIN_TOKENS", &self.admin_tokens),
            ("SWITCHYARD_READER_TOKENS", &self.reader_tokens),
        ] {
            // `VAR=` (one empty value) is as good as unset; `" , "` is a mistake.
            let unset = list.len() == 1 && list[0].expose_secret().is_empty();
            if !unset && list.iter().any(|t| t.expose_secret().trim().is_empty()) {
                return Err(format!(
                    "{flag} holds a blank entry; give comma-separated tokens without empty items, or leave it unset"
                ));
            }
        }
        // (token, role, the name its changes are recorded under)
        let mut tokens: Vec<(SecretString, Role, String)> = Vec::new();
        let given = |list: &[SecretString]| {
            list.iter()
                .map(|t| t.expose_secret().trim().to_owned())
                .filter(|t| !t.is_empty())
                .map(SecretString::from)
                .collect::<Vec<_>>()
        };
        tokens.extend(
            given(&self.admin_tokens)
                .into_iter()
                .map(|t| (t, Role::Admin, "admin".to_owned())),
        );
        tokens.extend(
            given(&self.reader_tokens)
                .into_iter()
                .map(|t| (t, Role::Reader, "reader".to_owned())),
        );
        if let Some(path) = &self.tokens_file {
            // Config parsing, once at start-up.
            #[allow(clippy::disallowed_methods)]
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
            (false, false) => Authorizer::named(tokens),
        };
        if self.max_message_bytes < 1024 {
            return Err(format!(
                "--max-message-bytes {} is too small; use at least 1024",
                self.max_message_bytes
            ));
        }
        let bus = match self.bus {
            BusKind::Redis => BusSettings::Redis {
                redis: self.redis.config(),
                prefix: self.redis.prefix()?,
            },
            BusKind::Local => BusSettings::Local,
        };
        Ok(Settings {
            database_url: self.database_url.expose_secret().to_owned(),
            bus,
            auth,
            master_keys: self.master_key.load()?,
            credential_rules: self.credentials.rules()?,
            max_message_bytes: self.max_message_bytes,
            run_migrations: !self.skip_migrations,
            shutdown_grace: Duration::from_secs(self.shutdown_grace_secs),
        })
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::Args;

    fn settings(args: &[&str]) -> Result<(), String> {
        let mut argv = vec![
            "switchyard-control-plane",
            "--database-url",
            "sqlite::memory:",
        ];
        argv.extend_from_slice(args);
        Args::try_parse_from(argv)
            .map_err(|e| e.to_string())?
            .settings()
            .map(|_| ())
    }

    #[test]
    fn a_credential_prefix_covering_server_settings_stops_the_start() {
        for bad in ["SWITCHYARD_", "REDIS_", "DATABASE_"] {
            let err = settings(&["--no-auth", "--credential-env-prefix", bad]).expect_err(bad);
            assert!(err.contains("would cover server settings"), "{bad}: {err}");
        }
        let err =
            settings(&["--no-auth", "--credential-dir", "relative/dir"]).expect_err("relative");
        assert!(err.contains("--credential-dir"), "{err}");
        assert!(
            settings(&[
                "--no-auth",
                "--credential-env-prefix",
                "ACME_",
                "--credential-dir",
                "/run/secrets"
            ])
            .is_ok()
        );
    }

    #[test]
    fn token_lists_refuse_blank_entries_but_an_empty_value_is_unset() {
        assert!(settings(&["--admin-tokens", "a,b"]).is_ok());
        assert!(
            settings(&["--admin-tokens", "a", "--reader-tokens", ""]).is_ok(),
            "READER_TOKENS= is as good as unset"
        );
        for blank in [" , ", " ", "a,,b", "a, "] {
            let err = settings(&["--admin-tokens", blank]).expect_err(blank);
            assert!(err.contains("blank entry"), "{blank:?}: {err}");
        }
        assert!(
            settings(&[])
                .expect_err("no tokens")
                .contains("no tokens configured"),
            "no tokens at all still refuses"
        );
    }
}
