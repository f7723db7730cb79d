//! Harness: real Redis (private key prefix), fake upstreams speaking the
//! OpenAI and Anthropic wire formats, and the real `switchyard-data-plane`
//! binary. Config reaches the worker the way the control plane publishes it:
//! snapshot and revision keys plus a change message on the channel.
#![allow(dead_code, unused_imports)]

use std::time::Duration;

use prost::Message as _;
use secrecy::SecretString;
use switchyard_proto::v1 as pb;
use switchyard_proto::v1::inference_client::InferenceClient;
use switchyard_shared::change::{Action, ChangeMessage, Resource};
use switchyard_shared::keys::RedisKeys;
pub use switchyard_shared::redis_client::{Redis, RedisConfig, Timeouts};
use switchyard_shared::seal::MasterKey;
pub use switchyard_testkit::harness::{PrivateRedis, RedisPrefix, ServerProc, redis_url, unique};
pub use switchyard_testkit::{FakeConfig, FakeUpstream, Fault};
use tokio::process::Command;
use tonic::transport::Channel;

mod config;
pub mod engine;
mod keys;
mod metrics;
pub use config::*;
pub use keys::*;
pub use metrics::*;

/// Starts a worker against `redis` with the test's prefix.
pub async fn worker(redis: &str, prefix: &RedisPrefix, env: &[(&str, &str)]) -> ServerProc {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_switchyard-data-plane"));
    cmd.args(["--listen", "127.0.0.1:0"])
        .env_clear()
        .env("REDIS_URL", redis)
        .env("SWITCHYARD_REDIS_PREFIX", &prefix.0)
        .env("SWITCHYARD_MASTER_KEY", MASTER_KEY)
        .env("SWITCHYARD_LOG_FORMAT", "json")
        .env("SWITCHYARD_METRICS_LISTEN", "127.0.0.1:0")
        .env("SWITCHYARD_CONFIG_CHECK_MS", "200")
        .env("SWITCHYARD_SHUTDOWN_GRACE_SECS", "5")
        .env("RUST_LOG", "info");
    // Open unless the test checks callers (tokens, caller keys) itself.
    let checks_callers = env
        .iter()
        .any(|(k, _)| matches!(*k, "SWITCHYARD_INFERENCE_TOKENS" | "SWITCHYARD_NO_AUTH"));
    if !checks_callers {
        cmd.env("SWITCHYARD_NO_AUTH", "true");
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    ServerProc::start(cmd, "data plane listening").await
}

/// The real control plane on SQLite in `dir`, publishing under `prefix` to
/// the shared Redis (`env` may point it elsewhere), with `admin` as its
/// admin token. `cargo test --workspace` builds every binary of the
/// workspace: the control plane's sits next to the worker's.
pub async fn control_plane(
    prefix: &RedisPrefix,
    dir: &std::path::Path,
    admin: &str,
    env: &[(&str, &str)],
) -> ServerProc {
    let path = std::path::Path::new(env!("CARGO_BIN_EXE_switchyard-data-plane"))
        .with_file_name("switchyard-control-plane");
    assert!(
        path.exists(),
        "build the control plane first: cargo build -p switchyard-control-plane ({})",
        path.display()
    );
    let mut cmd = Command::new(path);
    cmd.args(["--listen", "127.0.0.1:0"])
        .env_clear()
        .env(
            "DATABASE_URL",
            format!("sqlite://{}?mode=rwc", dir.join("cp.db").display()),
        )
        .env("REDIS_URL", redis_url())
        .env("SWITCHYARD_REDIS_PREFIX", &prefix.0)
        .env("SWITCHYARD_ADMIN_TOKENS", admin)
        .env("SWITCHYARD_MASTER_KEY", MASTER_KEY)
        .env("SWITCHYARD_METRICS_LISTEN", "127.0.0.1:0")
        .env("SWITCHYARD_LOG_FORMAT", "json");
    for (k, v) in env {
        cmd.env(k, v);
    }
    ServerProc::start(cmd, "control plane listening").await
}

/// The token every harness client presents (ignored by workers without tokens).
pub const CALLER_TOKEN: &str = "harness-caller";

#[derive(Clone)]
pub struct Bearer;

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        let v = format!("Bearer {CALLER_TOKEN}")
            .parse()
            .map_err(|_| tonic::Status::internal("header"))?;
        req.metadata_mut().insert("authorization", v);
        Ok(req)
    }
}

pub async fn client(
    w: &ServerProc,
) -> InferenceClient<tonic::service::interceptor::InterceptedService<Channel, Bearer>> {
    let channel = Channel::from_shared(format!("http://{}", w.addr))
        .expect("uri")
        .connect()
        .await
        .expect("connect to worker");
    InferenceClient::with_interceptor(channel, Bearer)
}

/// Waits (bounded) until the worker serves `revision`.
pub async fn wait_revision(w: &ServerProc, revision: u64) {
    let mut c = client(w).await;
    for _ in 0..100 {
        if let Ok(r) = c.list_models(pb::ListModelsRequest {}).await
            && r.get_ref().revision >= revision
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "worker never reached revision {revision}; logs:\n{}",
        w.logs()
    );
}

pub fn ask(model: &str, text: &str) -> pb::GenerateRequest {
    pb::GenerateRequest {
        model: model.into(),
        messages: vec![pb::ChatMessage {
            role: pb::Role::User.into(),
            content: text.into(),
            ..Default::default()
        }],
        ..Default::default()
    }
}

pub fn with_timeout<T>(msg: T, timeout: Duration) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.set_timeout(timeout);
    r
}

pub fn outcomes(attempts: &[pb::Attempt]) -> Vec<(String, pb::AttemptOutcome)> {
    attempts
        .iter()
        .map(|a| {
            (
                a.upstream_model.clone(),
                pb::AttemptOutcome::try_from(a.outcome).unwrap_or(pb::AttemptOutcome::Unspecified),
            )
        })
        .collect()
}

/// Collects a stream's events until it ends; returns them and the final status (Ok or the error).
pub async fn drain(
    mut s: tonic::Streaming<pb::GenerateStreamEvent>,
) -> (Vec<pb::GenerateStreamEvent>, Result<(), tonic::Status>) {
    read_all(&mut s).await
}

/// Opens a stream with `c` (it must open) and collects it like `drain`.
pub async fn stream_once(
    c: &mut InferenceClient<tonic::service::interceptor::InterceptedService<Channel, Bearer>>,
    req: pb::GenerateRequest,
) -> (Vec<pb::GenerateStreamEvent>, Result<(), tonic::Status>) {
    let mut s = c
        .generate_stream(req)
        .await
        .expect("the stream opens")
        .into_inner();
    read_all(&mut s).await
}

async fn read_all(
    s: &mut tonic::Streaming<pb::GenerateStreamEvent>,
) -> (Vec<pb::GenerateStreamEvent>, Result<(), tonic::Status>) {
    let mut events = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(20), s.message()).await {
            Ok(Ok(Some(e))) => events.push(e),
            Ok(Ok(None)) => return (events, Ok(())),
            Ok(Err(status)) => return (events, Err(status)),
            Err(_) => panic!("stream did not end in time"),
        }
    }
}

pub fn text_of(events: &[pb::GenerateStreamEvent]) -> String {
    events
        .iter()
        .filter_map(|e| match &e.event {
            Some(pb::generate_stream_event::Event::TextDelta(t)) => Some(t.as_str()),
            _ => None,
        })
        .collect()
}

/// Polls `f` (bounded) until it holds.
pub async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..100 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("never: {what}");
}

/// Like `drain`, for a stream expected to end OK: also returns its trailing metadata.
pub async fn drain_ok(
    mut s: tonic::Streaming<pb::GenerateStreamEvent>,
) -> (Vec<pb::GenerateStreamEvent>, tonic::metadata::MetadataMap) {
    let (events, end) = read_all(&mut s).await;
    if let Err(status) = end {
        panic!("stream failed: {status:?}");
    }
    let trailers = s.trailers().await.expect("trailers").unwrap_or_default();
    (events, trailers)
}

/// Waits (bounded) until `w` reports `model` as `available` in ListModels.
pub async fn until_on(w: &ServerProc, model: &str, available: bool) {
    let mut c = client(w).await;
    for _ in 0..400 {
        let models = c
            .list_models(pb::ListModelsRequest {})
            .await
            .expect("models")
            .into_inner();
        if models
            .models
            .iter()
            .flat_map(|m| m.members.iter())
            .any(|m| m.upstream_model == model && m.available == available)
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{model} never showed as available={available}");
}

/// Pool "p" has members "sick" (tried first) and "well", threshold 1. "sick"
/// starts failing; `a` fails over and benches it; the bench reaches `b`
/// through the fleet state (pushed, not polled per request), which skips it.
pub async fn a_bench_reaches_the_other_worker(up: &FakeUpstream, a: &ServerProc, b: &ServerProc) {
    use pb::AttemptOutcome as O;
    up.set_fault(
        "sick",
        Fault::Status {
            code: 503,
            retry_after_secs: None,
            body: None,
        },
    );
    let r = client(a)
        .await
        .generate(ask("p", "hi"))
        .await
        .expect("fails over")
        .into_inner();
    assert_eq!(
        outcomes(&r.attempts),
        vec![("sick".into(), O::Transient), ("well".into(), O::Ok)]
    );
    until_on(b, "sick", false).await;
    let r = client(b)
        .await
        .generate(ask("p", "hi"))
        .await
        .expect("other worker")
        .into_inner();
    assert_eq!(
        outcomes(&r.attempts),
        vec![("sick".into(), O::SkippedBenched), ("well".into(), O::Ok)]
    );
    assert_eq!(
        up.calls("sick"),
        1,
        "the benched member got no more traffic"
    );
}

/// The status `w` reports on grpc.health for `service`.
pub async fn health_status(w: &ServerProc, service: &str) -> i32 {
    let mut health = tonic_health::pb::health_client::HealthClient::new(
        tonic::transport::Channel::from_shared(format!("http://{}", w.addr))
            .expect("uri")
            .connect()
            .await
            .expect("connect"),
    );
    health
        .check(tonic_health::pb::HealthCheckRequest {
            service: service.into(),
        })
        .await
        .expect("health")
        .into_inner()
        .status
}

/// The fake answers with this HTTP status (and its provider-shaped error).
pub fn status(code: u16) -> Fault {
    Fault::Status {
        code,
        retry_after_secs: None,
        body: None,
    }
}

/// `n` workers on the test's prefix, each serving config revision 1.
pub async fn fleet_of(n: usize, prefix: &RedisPrefix) -> Vec<ServerProc> {
    let mut workers = Vec::new();
    for _ in 0..n {
        workers.push(worker(&redis_url(), prefix, &[]).await);
    }
    for w in &workers {
        wait_revision(w, 1).await;
    }
    workers
}

/// The fake upstream the fleet tests share: short, three-chunk answers.
pub async fn fake() -> FakeUpstream {
    FakeUpstream::start(FakeConfig {
        chunks: 3,
        ..FakeConfig::default()
    })
    .await
}

/// One worker, one fake upstream, a provider "up" pointing at it, and a
/// PRIORITY pool "p" whose members a (tried first) and b.
pub struct Setup {
    pub fake: FakeUpstream,
    pub prefix: RedisPrefix,
    pub worker: ServerProc,
    pub config: Config,
}

pub async fn setup(failover: pb::FailoverPolicy, env: &[(&str, &str)]) -> Setup {
    let fake = FakeUpstream::start(FakeConfig {
        chunks: 4,
        ..FakeConfig::default()
    })
    .await;
    let prefix = RedisPrefix::new();
    let mut config = Config::default();
    config
        .provider(
            "up",
            pb::ProviderKind::Openai,
            &fake.base_url(),
            Some("sk-test-secret-0000abcd"),
        )
        .pool(
            "p",
            pb::Strategy::Priority,
            failover,
            &[("up", "a", 10), ("up", "b", 0)],
        )
        .route("r", &[("p", false)]);
    config.publish(&redis_url(), &prefix, 1, true).await;
    let worker = worker(&redis_url(), &prefix, env).await;
    wait_revision(&worker, 1).await;
    Setup {
        fake,
        prefix,
        worker,
        config,
    }
}

/// Waits (bounded) until `n` workers have said they are alive in Redis at
/// `url`; returns how many did.
pub async fn until_live_workers(url: &str, prefix: &RedisPrefix, n: u64) -> u64 {
    let keys = RedisKeys::new(prefix.0.clone());
    let client = redis::Client::open(url).expect("url");
    let mut c = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let mut live = 0;
    for _ in 0..50 {
        live = redis::cmd("ZCARD")
            .arg(keys.workers())
            .query_async::<u64>(&mut c)
            .await
            .expect("ZCARD");
        if live == n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    live
}
