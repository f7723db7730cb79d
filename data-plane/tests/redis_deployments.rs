//! The fleet on the Redis deployments production uses besides a standalone
//! server: a real 3-master Redis Cluster and a TLS-only server, both started
//! on loopback by the harness. Shared round robin, bench sharing, config
//! sync and control plane → Redis → worker, on each.
// Tests spawn callers freely and read their env overrides.
#![allow(clippy::disallowed_methods)]

mod common;

use common::*;
use switchyard_proto::v1 as pb;
use switchyard_proto::v1::control_plane_client::ControlPlaneClient;
use switchyard_testkit::{RedisCluster, TlsRedis};

const ADMIN: &str = "deploy-admin-token";

/// How workers and the control plane reach this Redis.
struct Deployment {
    config: RedisConfig,
    env: Vec<(&'static str, String)>,
}

impl Deployment {
    fn cluster(c: &RedisCluster) -> Self {
        let url = c.urls().join(",");
        Self {
            config: RedisConfig {
                url: url.clone(),
                cluster: true,
                ca_file: None,
            },
            env: vec![
                ("REDIS_URL", url),
                ("SWITCHYARD_REDIS_CLUSTER", "true".into()),
            ],
        }
    }

    fn tls(t: &TlsRedis) -> Self {
        Self {
            config: RedisConfig {
                url: t.url(),
                cluster: false,
                ca_file: Some(t.ca_file().to_path_buf()),
            },
            env: vec![
                ("REDIS_URL", t.url()),
                (
                    "SWITCHYARD_REDIS_CA_FILE",
                    t.ca_file().display().to_string(),
                ),
            ],
        }
    }

    async fn worker(&self, prefix: &RedisPrefix) -> ServerProc {
        let env: Vec<(&str, &str)> = self.env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        worker(&self.config.url, prefix, &env).await
    }
}

/// Two workers on `d`: config arrives and changes, round robin is shared,
/// a bench decided by one reaches the other.
async fn the_fleet_shares_state_over(d: Deployment) {
    let up = FakeUpstream::start(FakeConfig::default()).await;
    let prefix = RedisPrefix::new();
    let mut config = Config::default();
    config
        .provider("up", pb::ProviderKind::Openai, &up.base_url(), None)
        .pool(
            "rr",
            pb::Strategy::RoundRobin,
            policy(0, 10, 1000),
            &[("up", "m1", 0), ("up", "m2", 0), ("up", "m3", 0)],
        );
    config.publish_to(&d.config, &prefix, 1, true).await;
    let a = d.worker(&prefix).await;
    let b = d.worker(&prefix).await;
    wait_revision(&a, 1).await;
    wait_revision(&b, 1).await;

    let mut callers = Vec::new();
    for w in [&a, &b] {
        for _ in 0..3 {
            let mut c = client(w).await;
            callers.push(tokio::spawn(async move {
                for _ in 0..100 {
                    c.generate(ask("rr", "hi")).await.expect("served");
                }
            }));
        }
    }
    for c in callers {
        c.await.expect("caller");
    }
    let calls = [up.calls("m1"), up.calls("m2"), up.calls("m3")];
    for n in calls {
        assert!(n.abs_diff(200) <= 12, "shared round robin: {calls:?}");
    }

    // A config change reaches both workers.
    config.pool(
        "p",
        pb::Strategy::Priority,
        policy(0, 1, 60_000),
        &[("up", "sick", 10), ("up", "well", 0)],
    );
    config.publish_to(&d.config, &prefix, 2, true).await;
    wait_revision(&a, 2).await;
    wait_revision(&b, 2).await;

    a_bench_reaches_the_other_worker(&up, &a, &b).await;
}

fn admin<T>(msg: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut().insert(
        "authorization",
        format!("Bearer {ADMIN}").parse().expect("header"),
    );
    r
}

/// Control plane → Redis on `d` → worker: a pool created through the
/// control plane serves on a running worker.
async fn the_control_plane_reaches_workers_over(d: Deployment) {
    let up = FakeUpstream::start(FakeConfig::default()).await;
    let prefix = RedisPrefix::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let env: Vec<(&str, &str)> = d.env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let cp = control_plane(&prefix, dir.path(), ADMIN, &env).await;
    let w = d.worker(&prefix).await;
    let mut cpc = ControlPlaneClient::connect(format!("http://{}", cp.addr))
        .await
        .expect("connect");
    cpc.create_provider(admin(pb::CreateProviderRequest {
        provider: Some(pb::Provider {
            name: "fake".into(),
            kind: pb::ProviderKind::Openai.into(),
            base_url: up.base_url(),
            ..Default::default()
        }),
    }))
    .await
    .expect("provider");
    cpc.create_pool(admin(pb::CreatePoolRequest {
        pool: Some(pb::Pool {
            name: "coding".into(),
            ..Default::default()
        }),
    }))
    .await
    .expect("pool");
    cpc.create_member(admin(pb::CreateMemberRequest {
        member: Some(pb::Member {
            pool: "coding".into(),
            provider: "fake".into(),
            upstream_model: "gpt-deploy".into(),
            ..Default::default()
        }),
    }))
    .await
    .expect("member");
    wait_revision(&w, 3).await;
    let r = client(&w)
        .await
        .generate(ask("coding", "hello"))
        .await
        .expect("served")
        .into_inner();
    assert!(
        r.content.starts_with("gpt-deploy says hello"),
        "{}",
        r.content
    );
}

#[tokio::test]
async fn on_a_redis_cluster_the_fleet_shares_state() {
    let cluster = RedisCluster::start().await;
    the_fleet_shares_state_over(Deployment::cluster(&cluster)).await;
}

#[tokio::test]
async fn on_a_redis_cluster_the_control_plane_reaches_workers() {
    let cluster = RedisCluster::start().await;
    the_control_plane_reaches_workers_over(Deployment::cluster(&cluster)).await;
}

#[tokio::test]
async fn over_tls_the_fleet_shares_state() {
    let tls = TlsRedis::start().await;
    the_fleet_shares_state_over(Deployment::tls(&tls)).await;
}

#[tokio::test]
async fn over_tls_the_control_plane_reaches_workers() {
    let tls = TlsRedis::start().await;
    the_control_plane_reaches_workers_over(Deployment::tls(&tls)).await;
}
