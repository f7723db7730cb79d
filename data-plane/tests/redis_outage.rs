//! Redis frozen mid-traffic (SIGSTOP: connections open, nothing answers —
//! the worst kind of slow): requests keep being served from the fleet state
//! the worker holds, the worker says it is degraded on grpc.health
//! (`switchyard.fleet`), and it catches up when Redis returns. Redis
//! killed mid-traffic and started again: no token charge is lost.
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

/// The fleet-wide counts Redis holds: a member's requests and tokens (every
/// minute field of its rpm/tpm window) and a caller's tokens today.
async fn redis_totals(
    url: &str,
    prefix: &RedisPrefix,
    member: &str,
    caller: &str,
) -> (u64, u64, u64) {
    let keys = switchyard_shared::keys::RedisKeys::new(prefix.0.clone());
    let Ok(client) = redis::Client::open(url) else {
        return (0, 0, 0);
    };
    let Ok(mut rc) = client.get_multiplexed_async_connection().await else {
        return (0, 0, 0);
    };
    let mut hash = async |key: String| {
        redis::cmd("HGETALL")
            .arg(key)
            .query_async::<std::collections::HashMap<String, i64>>(&mut rc)
            .await
            .unwrap_or_default()
    };
    let quota = hash(keys.member_quota(member)).await;
    let budget = hash(keys.budget(caller)).await;
    let sum = |h: &std::collections::HashMap<String, i64>, p: &str| -> u64 {
        h.iter()
            .filter(|(k, _)| k.starts_with(p))
            .map(|(_, v)| u64::try_from(*v).unwrap_or(0))
            .sum()
    };
    (sum(&quota, "r:"), sum(&quota, "t:"), sum(&budget, "d:"))
}

/// Sends `n` requests as the caller, alternating workers; returns the
/// tokens the upstream reported for them (every one must be served).
async fn traffic(clients: &mut [Dp], n: usize, phase: &str) -> u64 {
    let mut tokens = 0;
    for i in 0..n {
        let c = &mut clients[i % 2];
        let r = c
            .generate(with_timeout(
                ask("p", &"a longer prompt ".repeat(i % 7 + 1)),
                Duration::from_secs(2),
            ))
            .await
            .unwrap_or_else(|s| panic!("{phase}: request {i}: {s:?}"))
            .into_inner();
        let u = r
            .usage
            .unwrap_or_else(|| panic!("{phase}: request {i} has usage"));
        assert!(
            u.input_tokens + u.output_tokens > 0,
            "{phase}: usage reported"
        );
        tokens += u64::from(u.input_tokens) + u64::from(u.output_tokens);
    }
    tokens
}

/// Leased permits the workers hold and have not used: (member requests,
/// member tokens, budget tokens). Redis counts a block when it is leased.
async fn held(workers: &[&ServerProc]) -> (u64, u64, u64) {
    let mut out = (0, 0, 0);
    for w in workers {
        let m = scrape(w).await;
        let get = |name| sample(&m, name, &[]).unwrap_or(0.0) as u64;
        out.0 += get("switchyard_fleet_permits_held_requests");
        out.1 += get("switchyard_fleet_permits_held_tokens");
        out.2 += get("switchyard_fleet_permits_held_budget_tokens");
    }
    out
}

/// Waits until Redis holds `want` (member requests, member tokens, caller
/// tokens) plus the permits the workers hold unused.
async fn until_totals(
    url: &str,
    prefix: &RedisPrefix,
    workers: &[&ServerProc],
    want: (u64, u64, u64),
    when: &str,
) {
    let mut got = (0, 0, 0);
    let mut expected = want;
    for _ in 0..150 {
        let (r, t, b) = held(workers).await;
        expected = (want.0 + r, want.1 + t, want.2 + b);
        got = redis_totals(url, prefix, "p-lim", "caller:c-batch").await;
        if got == expected {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "{when}: Redis holds (requests, member tokens, caller tokens) {got:?}, the upstream reported {want:?} and the workers hold {expected:?} in all"
    );
}

/// A member with a tpm limit and a caller with a daily token budget, on two
/// workers: Redis is killed mid-traffic, requests keep being served from
/// memory, Redis comes back empty on the same port, and the fleet's counts
/// in it then equal what the upstream reported since — every charge made
/// during the outage was kept, summed, and sent when Redis returned — plus
/// the permits the workers leased since and hold unused.
#[tokio::test]
async fn charges_made_while_redis_is_down_reach_it_when_it_returns() {
    let up = FakeUpstream::start(FakeConfig::default()).await;
    let mut redis = PrivateRedis::start().await;
    let port = redis.port;
    let prefix = RedisPrefix::new();
    let mut config = Config::one_pool(
        &up.base_url(),
        pb::Strategy::Priority,
        policy(0, 100, 1000),
        &[("up", "lim", 0)],
    );
    config.member_limits("p", "lim", None, Some(1_000_000_000));
    let (key, _) = switchyard_shared::caller_key::generate();
    let master = switchyard_shared::seal::MasterKey::from_base64(MASTER_KEY).expect("master key");
    let hash = switchyard_shared::caller_key::KeyHasher::new(&master)
        .hash(switchyard_shared::caller_key::expose(&key));
    config.snap.callers.push(pb::SnapshotCaller {
        id: "c-batch".into(),
        name: "batch-svc".into(),
        enabled: true,
        models: vec!["*".into()],
        daily_token_budget: Some(1_000_000_000),
        key_hash: hash.to_vec(),
        ..Default::default()
    });
    config.publish(&redis.url(), &prefix, 1, true).await;
    let env = [("SWITCHYARD_INFERENCE_TOKENS", CALLER_TOKEN)];
    let a = worker(&redis.url(), &prefix, &env).await;
    let b = worker(&redis.url(), &prefix, &env).await;
    wait_revision(&a, 1).await;
    wait_revision(&b, 1).await;
    let header = bearer(switchyard_shared::caller_key::expose(&key));
    let mut clients = [
        as_caller(&a, header.clone()).await,
        as_caller(&b, header).await,
    ];

    // Redis up: every charge lands.
    let before = traffic(&mut clients, 6, "Redis up").await;
    until_totals(
        &redis.url(),
        &prefix,
        &[&a, &b],
        (6, before, before),
        "before the outage",
    )
    .await;

    // Redis killed: served from memory, charged nowhere yet. The workers
    // notice first (a request served from a block leased before is counted
    // in the Redis that is gone, which this test does not read).
    redis.stop();
    until_fleet(&a, ServingStatus::NotServing).await;
    until_fleet(&b, ServingStatus::NotServing).await;
    let during = traffic(&mut clients, 30, "Redis down").await;
    let m = scrape(&a).await;
    assert!(
        sample(&m, "switchyard_fleet_charges_pending", &[]).is_some_and(|v| v >= 1.0),
        "the kept charges show: one member minute and one caller budget at least"
    );

    // Redis back on the same port, empty (it kept nothing): what the workers
    // kept during the outage, and what comes after, adds up to what the
    // upstream reported.
    let redis = PrivateRedis::start_on(port).await;
    config.publish(&redis.url(), &prefix, 1, false).await;
    until_fleet(&a, ServingStatus::Serving).await;
    until_fleet(&b, ServingStatus::Serving).await;
    let after = traffic(&mut clients, 4, "Redis back").await;
    until_totals(
        &redis.url(),
        &prefix,
        &[&a, &b],
        (34, during + after, during + after),
        "after the outage",
    )
    .await;
    let m = scrape(&a).await;
    assert_eq!(
        sample(&m, "switchyard_fleet_charges_pending", &[]),
        Some(0.0)
    );
    assert_eq!(
        sample(
            &m,
            "switchyard_fleet_charges_dropped_total",
            &[("reason", "full")]
        ),
        Some(0.0),
        "nothing dropped"
    );
}
