//! Redis for both servers: a standalone server or a Redis/Valkey Cluster,
//! over TCP or TLS (`rediss://`, with an optional CA file), with TCP_NODELAY
//! on so small commands are not held back by Nagle's algorithm.
//!
//! [`Conn`] is one multiplexed, self-reconnecting connection for commands and
//! scripts; on a cluster it follows MOVED/ASK. Pub/sub uses classic channels,
//! which a cluster broadcasts to every node, so [`Redis::pubsub`] subscribes
//! on any one reachable node.

use std::path::PathBuf;
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, ConnectionInfo, IntoConnectionInfo as _, Pipeline, RedisFuture, Value};

/// Where Redis is, as the flags give it.
#[derive(Clone, Default)]
pub struct RedisConfig {
    /// `redis://…` or `rediss://…`; with `cluster`, a comma-separated list of seed nodes.
    pub url: String,
    pub cluster: bool,
    /// PEM CA bundle that signs the server certificate (`rediss://` only);
    /// unset: the system's roots.
    pub ca_file: Option<PathBuf>,
}

/// The URL may hold a password: Debug never shows it.
impl std::fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &"<redacted>")
            .field("cluster", &self.cluster)
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RedisSetupError {
    #[error("invalid Redis URL: {0}")]
    Url(String),
    #[error("cannot read the Redis CA file {path}: {error}")]
    CaFile { path: String, error: String },
    #[error("{0}")]
    Config(String),
}

/// Timeouts of a command connection.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    pub connect: Duration,
    pub response: Duration,
}

/// A Redis deployment: one server or a cluster.
#[derive(Clone)]
pub struct Redis {
    nodes: Vec<redis::Client>,
    cluster: Option<ClusterClient>,
    /// The node the next subscription tries first (they take turns).
    next: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

fn info(url: &str) -> Result<ConnectionInfo, RedisSetupError> {
    let info = url
        .trim()
        .into_connection_info()
        .map_err(|e| RedisSetupError::Url(e.to_string()))?;
    let tcp = info.tcp_settings().clone().set_nodelay(true);
    Ok(info.set_tcp_settings(tcp))
}

impl Redis {
    /// Checks the URLs and reads the CA file; connects nothing yet.
    pub fn open(cfg: &RedisConfig) -> Result<Self, RedisSetupError> {
        let urls: Vec<&str> = cfg
            .url
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect();
        if urls.is_empty() {
            return Err(RedisSetupError::Url("no Redis URL given".into()));
        }
        if urls.len() > 1 && !cfg.cluster {
            return Err(RedisSetupError::Config(
                "several Redis URLs are seed nodes of a cluster: add --redis-cluster".into(),
            ));
        }
        let tls = urls.iter().any(|u| u.starts_with("rediss://"));
        if tls && urls.iter().any(|u| !u.starts_with("rediss://")) {
            return Err(RedisSetupError::Config(
                "mixed redis:// and rediss:// URLs: use one scheme for every node".into(),
            ));
        }
        if tls {
            // rustls needs a process-wide crypto provider; an error means one is set.
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let root_cert = match &cfg.ca_file {
            None => None,
            Some(_) if !tls => {
                return Err(RedisSetupError::Config(
                    "--redis-ca-file needs a rediss:// URL".into(),
                ));
            }
            Some(path) => Some(std::fs::read(path).map_err(|e| RedisSetupError::CaFile {
                path: path.display().to_string(),
                error: e.to_string(),
            })?),
        };
        let certs = || redis::TlsCertificates {
            client_tls: None,
            root_cert: root_cert.clone(),
        };
        let infos = urls
            .iter()
            .map(|u| info(u))
            .collect::<Result<Vec<_>, _>>()?;
        let nodes = infos
            .iter()
            .map(|i| {
                if root_cert.is_some() {
                    redis::Client::build_with_tls(i.clone(), certs())
                } else {
                    redis::Client::open(i.clone())
                }
                .map_err(|e| RedisSetupError::Url(e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let cluster = if cfg.cluster {
            let mut b = ClusterClient::builder(infos).retries(2);
            if root_cert.is_some() {
                b = b.certs(certs());
            }
            Some(b.build().map_err(|e| RedisSetupError::Url(e.to_string()))?)
        } else {
            None
        };
        Ok(Self {
            nodes,
            cluster,
            next: std::sync::Arc::default(),
        })
    }

    pub fn is_cluster(&self) -> bool {
        self.cluster.is_some()
    }

    /// A command connection. Standalone: connects lazily and reconnects by
    /// itself, so this fails only on bad config. Cluster: connects now.
    pub async fn connect(&self, t: Timeouts) -> redis::RedisResult<Conn> {
        match &self.cluster {
            Some(c) => {
                let cfg = redis::cluster::ClusterConfig::new()
                    .set_connection_timeout(t.connect)
                    .set_response_timeout(t.response);
                let conn = tokio::time::timeout(
                    t.connect + t.response,
                    c.get_async_connection_with_config(cfg),
                )
                .await
                .map_err(|_| timed_out("connecting to the Redis cluster"))??;
                Ok(Conn::Cluster(conn))
            }
            None => {
                let cfg = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(t.connect))
                    .set_response_timeout(Some(t.response))
                    .set_number_of_retries(0);
                let client = self.nodes[0].clone();
                Ok(Conn::Single(ConnectionManager::new_lazy_with_config(
                    client, cfg,
                )?))
            }
        }
    }

    /// A pub/sub connection on the first node that answers; the nodes take
    /// turns being first and share `timeout`, so one that hangs does not
    /// keep the others from being tried.
    pub async fn pubsub(&self, timeout: Duration) -> redis::RedisResult<redis::aio::PubSub> {
        let mut last = timed_out("no Redis node to subscribe on");
        let n = self.nodes.len().max(1);
        let start = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let each = timeout / u32::try_from(n).unwrap_or(1);
        for i in 0..n {
            let Some(node) = self.nodes.get((start + i) % n) else {
                continue;
            };
            match tokio::time::timeout(each, node.get_async_pubsub()).await {
                Ok(Ok(p)) => return Ok(p),
                Ok(Err(e)) => last = e,
                Err(_) => last = timed_out("subscribing"),
            }
        }
        Err(last)
    }
}

fn timed_out(what: &'static str) -> redis::RedisError {
    redis::RedisError::from((redis::ErrorKind::Io, what))
}

/// One command connection to a server or a cluster; cheap to clone.
#[derive(Clone)]
pub enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(url: &str, cluster: bool) -> RedisConfig {
        RedisConfig {
            url: url.into(),
            cluster,
            ca_file: None,
        }
    }

    #[test]
    fn bad_config_is_refused_with_what_to_fix() {
        assert!(Redis::open(&cfg("not a url", false)).is_err());
        assert!(Redis::open(&cfg("", false)).is_err());
        assert!(Redis::open(&cfg("redis://127.0.0.1:6379/0", false)).is_ok());
        let many = "redis://127.0.0.1:7000,redis://127.0.0.1:7001";
        let err = Redis::open(&cfg(many, false)).err().map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("--redis-cluster")));
        assert!(Redis::open(&cfg(many, true)).is_ok_and(|r| r.is_cluster()));
        let mixed = "redis://127.0.0.1:7000,rediss://127.0.0.1:7001";
        assert!(Redis::open(&cfg(mixed, true)).is_err());
        let ca = RedisConfig {
            ca_file: Some("/nonexistent/ca.pem".into()),
            ..cfg("rediss://127.0.0.1:6380", false)
        };
        let err = Redis::open(&ca).err().map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("/nonexistent/ca.pem")));
    }
}
