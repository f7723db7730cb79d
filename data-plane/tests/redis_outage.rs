//! Redis frozen mid-traffic (SIGSTOP: connections open, nothing answers —
//! the worst kind of slow): requests keep being served from the fleet state
//! the worker holds, the worker says it is degraded on grpc.health
//! (`switchyard.fleet`), and it catches up when Redis returns.
// Tests spawn callers freely and read their env overrides.
#![allow(clippy::disallowed_methods)]

mod common;

use std::time::Duration;

use common::*;
use switchyard_proto::v1 as pb;
use tonic_health::pb::health_check_response::ServingStatus;

async fn fleet_status(w: &ServerProc) -> i32 {
    health_status(w, "switchyard.fleet").await
}

async fn until_fleet(w: &ServerProc, want: ServingStatus) {
    for _ in 0..100 {
        if fleet_status(w).await == want as i32 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("switchyard.fleet never became {want:?}");
}

#[tokio::test]
async fn with_redis_frozen_requests_are_served_without_waiting_and_the_worker_catches_up() {
    let up = FakeUpstream::start(FakeConfig::default()).await;
    let redis = PrivateRedis::start().await;
    let prefix = RedisPrefix::new();
    let mut config = Config::one_pool(
        &up.base_url(),
        pb::Strategy::Priority,
        policy(0, 1, 60_000),
        &[("up", "sick", 10), ("up", "well", 0)],
    );
    config.publish(&redis.url(), &prefix, 1, true).await;
    let w = worker(&redis.url(), &prefix, &[]).await;
    wait_revision(&w, 1).await;
    until_fleet(&w, ServingStatus::Serving).await;
    let mut c = client(&w).await;
    c.generate(ask("p", "warm")).await.expect("served");

    redis.freeze();
    // Every request carries a 300 ms deadline: one that waited on Redis (a
    // 500 ms+ timeout) would miss it.
    for i in 0..20 {
        let r = c
            .generate(with_timeout(ask("p", "hi"), Duration::from_millis(300)))
            .await
            .unwrap_or_else(|s| panic!("request {i} with Redis frozen: {s:?}"))
            .into_inner();
        assert_eq!(
            r.served_by.map(|s| s.upstream_model).as_deref(),
            Some("sick")
        );
    }
    // A failure seen while Redis is frozen benches the member locally, at once.
    up.set_fault("sick", status(503));
    let r = c
        .generate(with_timeout(ask("p", "hi"), Duration::from_millis(300)))
        .await
        .expect("fails over")
        .into_inner();
    assert_eq!(
        outcomes(&r.attempts),
        vec![
            ("sick".into(), pb::AttemptOutcome::Transient),
            ("well".into(), pb::AttemptOutcome::Ok)
        ]
    );
    let r = c
        .generate(with_timeout(ask("p", "hi"), Duration::from_millis(300)))
        .await
        .expect("served")
        .into_inner();
    assert_eq!(
        outcomes(&r.attempts),
        vec![
            ("sick".into(), pb::AttemptOutcome::SkippedBenched),
            ("well".into(), pb::AttemptOutcome::Ok)
        ],
        "benched locally while Redis cannot hear about it"
    );
    until_fleet(&w, ServingStatus::NotServing).await;
    assert!(
        w.logs().contains("fleet state unreachable"),
        "the degraded state is logged"
    );

    // Redis returns: the worker pushes what it learned, so the fleet's table
    // now holds the bench it decided alone.
    redis.thaw();
    until_fleet(&w, ServingStatus::Serving).await;
    let keys = switchyard_shared::keys::RedisKeys::new(prefix.0.clone());
    let mut found = None;
    for _ in 0..100 {
        let client = redis::Client::open(redis.url()).expect("url");
        let mut rc = client
            .get_multiplexed_async_connection()
            .await
            .expect("redis");
        found = redis::cmd("HGET")
            .arg(keys.health_table())
            .arg("p-sick")
            .query_async::<Option<String>>(&mut rc)
            .await
            .expect("HGET");
        if found.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        found.is_some(),
        "the local bench reached Redis after the outage"
    );
    assert!(w.logs().contains("fleet state reachable again"));
}

/// With Redis gone, each of two workers enforces half of a member's
/// `rpm_limit` (they knew from their heartbeats that two were live), so the
/// fleet does not get twice the limit.
#[tokio::test]
async fn with_redis_gone_each_worker_enforces_its_share_of_a_limit() {
    let up = FakeUpstream::start(FakeConfig::default()).await;
    let mut redis = PrivateRedis::start().await;
    let prefix = RedisPrefix::new();
    let mut config = Config::one_pool(
        &up.base_url(),
        pb::Strategy::Priority,
        policy(0, 100, 1000),
        &[("up", "lim", 10), ("up", "spare", 0)],
    );
    config.member_limits("p", "lim", Some(6), None);
    config.publish(&redis.url(), &prefix, 1, true).await;
    let a = worker(&redis.url(), &prefix, &[]).await;
    let b = worker(&redis.url(), &prefix, &[]).await;
    wait_revision(&a, 1).await;
    wait_revision(&b, 1).await;
    // Both have said they are alive (a heartbeat every 5 config checks).
    let live = until_live_workers(&redis.url(), &prefix, 2).await;
    assert_eq!(live, 2);
    // Both have read the count: a heartbeat every 5 checks (1 s here).
    tokio::time::sleep(Duration::from_millis(1200)).await;
    redis.stop();
    for w in [&a, &b] {
        let mut c = client(w).await;
        for _ in 0..10 {
            c.generate(ask("p", "hi"))
                .await
                .expect("served by lim or spare");
        }
    }
    let got = up.calls("lim");
    assert!(got <= 6, "the fleet kept to the limit without Redis: {got}");
    assert!(got >= 4, "each worker used its share: {got}");
}
