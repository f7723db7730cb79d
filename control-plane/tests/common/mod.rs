//! Test harness: a private Postgres database or SQLite file per test, a
//! private Redis key prefix, and the real `switchyard-control-plane` binary
//! started on 127.0.0.1:0.
#![allow(dead_code)]

/// Runs `async fn $name(backend: Backend)` as two tests: on Postgres and on SQLite.
#[allow(unused_macros)]
macro_rules! both_backends {
    ($name:ident) => {
        mod $name {
            #[tokio::test]
            async fn postgres() {
                super::$name(super::Backend::Postgres).await;
            }
            #[tokio::test]
            async fn sqlite() {
                super::$name(super::Backend::Sqlite).await;
            }
        }
    };
    ($($name:ident),+ $(,)?) => {
        $(both_backends!($name);)+
    };
}

use std::time::Duration;

use futures::StreamExt as _;
use prost::Message as _;

use switchyard_proto::v1 as pb;
use switchyard_proto::v1::control_plane_client::ControlPlaneClient;
use tokio::process::Command;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

pub const ADMIN: &str = "admin-token-for-tests";
pub const READER: &str = "reader-token-for-tests";
/// A fixed 32-byte key (base64) for sealing test credentials.
pub const MASTER_KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";

#[allow(unused_imports)]
pub use switchyard_testkit::db::{Backend, TestDb, pg_admin_url};
#[allow(unused_imports)]
pub use switchyard_testkit::harness::{redis_url, unique};

#[allow(unused_imports)]
pub use switchyard_testkit::harness::{PrivateRedis, RedisPrefix, ServerProc as ControlPlaneProc};

pub struct Launch<'a> {
    pub db_url: &'a str,
    pub redis_url: String,
    pub prefix: &'a str,
    pub extra_env: Vec<(&'a str, String)>,
    pub master_key: bool,
}

impl<'a> Launch<'a> {
    pub fn new(db: &'a TestDb, prefix: &'a RedisPrefix) -> Self {
        Self {
            db_url: &db.url,
            redis_url: redis_url(),
            prefix: &prefix.0,
            extra_env: Vec::new(),
            master_key: true,
        }
    }

    pub async fn start(self) -> ControlPlaneProc {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_switchyard-control-plane"));
        cmd.arg("--listen")
            .arg("127.0.0.1:0")
            .env_clear()
            .env("DATABASE_URL", self.db_url)
            .env("REDIS_URL", &self.redis_url)
            .env("SWITCHYARD_REDIS_PREFIX", self.prefix)
            .env("SWITCHYARD_ADMIN_TOKENS", ADMIN)
            .env("SWITCHYARD_READER_TOKENS", READER)
            .env("SWITCHYARD_LOG_FORMAT", "json")
            .env("SWITCHYARD_METRICS_LISTEN", "127.0.0.1:0")
            .env("SWITCHYARD_SHUTDOWN_GRACE_SECS", "5")
            // The workers' mounted secrets folder: file: references must be inside it.
            .env("SWITCHYARD_CREDENTIAL_DIR", "/run/secrets")
            .env("RUST_LOG", "info");
        if self.master_key {
            cmd.env("SWITCHYARD_MASTER_KEY", MASTER_KEY);
        }
        for (k, v) in self.extra_env {
            cmd.env(k, v);
        }
        ControlPlaneProc::start(cmd, "control plane listening").await
    }
}

/// gRPC clients of a running control plane.
#[allow(async_fn_in_trait)]
pub trait ControlPlaneClients {
    async fn channel(&self) -> Channel;
    async fn client(&self, token: &str) -> Client;
    async fn admin(&self) -> Client;
}

impl ControlPlaneClients for ControlPlaneProc {
    async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.addr))
            .expect("uri")
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await
            .expect("connect to control plane")
    }

    async fn client(&self, token: &str) -> Client {
        ControlPlaneClient::with_interceptor(self.channel().await, Bearer(token.to_owned()))
    }

    async fn admin(&self) -> Client {
        self.client(ADMIN).await
    }
}

#[derive(Clone)]
pub struct Bearer(pub String);

impl Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if !self.0.is_empty() {
            let v = format!("Bearer {}", self.0)
                .parse()
                .map_err(|_| tonic::Status::internal("bad token"))?;
            req.metadata_mut().insert("authorization", v);
        }
        Ok(req)
    }
}

pub type Client = ControlPlaneClient<InterceptedService<Channel, Bearer>>;

/// Subscribes to the test's changes channel before anything is published.
pub async fn subscribe(prefix: &RedisPrefix) -> redis::aio::PubSubStream {
    let client = redis::Client::open(redis_url()).expect("redis url");
    let mut ps = client
        .get_async_pubsub()
        .await
        .expect("Redis must be running for the tests");
    ps.subscribe(switchyard_shared::keys::RedisKeys::new(prefix.0.clone()).changes_channel())
        .await
        .expect("subscribe");
    ps.into_on_message()
}

/// The next `n` change messages (revision, resource, action, name), bounded in time.
pub async fn next_changes(
    stream: &mut redis::aio::PubSubStream,
    n: usize,
) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while out.len() < n {
        match tokio::time::timeout_at(deadline, stream.next()).await {
            Ok(Some(msg)) => {
                out.push(serde_json::from_slice(msg.get_payload_bytes()).expect("json change"))
            }
            _ => break,
        }
    }
    out
}

pub fn revisions(msgs: &[serde_json::Value]) -> Vec<u64> {
    msgs.iter()
        .map(|m| m["revision"].as_u64().expect("revision"))
        .collect()
}

pub async fn redis_get(key: &str) -> Option<Vec<u8>> {
    let client = redis::Client::open(redis_url()).expect("redis url");
    let mut c = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    redis::cmd("GET")
        .arg(key)
        .query_async(&mut c)
        .await
        .expect("GET")
}

pub async fn stored_snapshot(prefix: &RedisPrefix) -> Option<pb::Snapshot> {
    let bytes =
        redis_get(&switchyard_shared::keys::RedisKeys::new(prefix.0.clone()).snapshot()).await?;
    // Signed under the master key (or not, without one): the payload either way.
    let payload = switchyard_shared::signed_snapshot::verify(None, &prefix.0, &bytes)
        .expect("without keys nothing is refused");
    Some(pb::Snapshot::decode(payload).expect("snapshot decodes"))
}

/// Polls (bounded) until the stored snapshot reaches `revision`.
pub async fn wait_snapshot(prefix: &RedisPrefix, revision: u64) -> pb::Snapshot {
    for _ in 0..200 {
        if let Some(s) = stored_snapshot(prefix).await
            && s.revision >= revision
        {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("snapshot never reached revision {revision}");
}

// ---- builders for the resources ----

pub fn openai_provider(name: &str, secret: &str) -> pb::Provider {
    pb::Provider {
        name: name.into(),
        kind: pb::ProviderKind::Openai.into(),
        base_url: "https://api.example.test/v1".into(),
        credential: Some(pb::CredentialInput {
            source: Some(pb::credential_input::Source::Inline(secret.into())),
        }),
        ..Default::default()
    }
}

pub fn pool(name: &str) -> pb::Pool {
    pb::Pool {
        name: name.into(),
        strategy: pb::Strategy::RoundRobin.into(),
        ..Default::default()
    }
}

pub fn member(pool: &str, provider: &str, model: &str) -> pb::Member {
    pb::Member {
        pool: pool.into(),
        provider: provider.into(),
        upstream_model: model.into(),
        ..Default::default()
    }
}

pub fn mask(paths: &[&str]) -> Option<prost_types::FieldMask> {
    Some(prost_types::FieldMask {
        paths: paths.iter().map(|s| (*s).to_owned()).collect(),
    })
}

pub async fn create_provider(c: &mut Client, p: pb::Provider) -> pb::Provider {
    c.create_provider(pb::CreateProviderRequest { provider: Some(p) })
        .await
        .expect("create provider")
        .into_inner()
}

pub async fn create_pool(c: &mut Client, p: pb::Pool) -> pb::Pool {
    c.create_pool(pb::CreatePoolRequest { pool: Some(p) })
        .await
        .expect("create pool")
        .into_inner()
}

pub async fn create_member(c: &mut Client, m: pb::Member) -> pb::Member {
    c.create_member(pb::CreateMemberRequest { member: Some(m) })
        .await
        .expect("create member")
        .into_inner()
}

pub async fn revision(c: &mut Client) -> u64 {
    c.get_snapshot(pb::GetSnapshotRequest {})
        .await
        .expect("snapshot")
        .into_inner()
        .revision
}
