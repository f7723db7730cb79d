//! Several workers sharing one Redis: round robin across the fleet, shared
//! benching, config changes and lost messages, a Redis outage, a worker
//! without config, SIGTERM. Limits are in `limits.rs`, failure handling that
//! protects providers in `protection.rs`.
// Tests spawn callers freely and read their env overrides.
#![allow(clippy::disallowed_methods)]

mod common;

use std::time::Duration;

use common::*;
use switchyard_proto::v1 as pb;
use tonic::Code;

#[tokio::test]
async fn round_robin_spreads_evenly_across_three_workers() {
    let up = fake().await;
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
    config.publish(&redis_url(), &prefix, 1, true).await;
    let workers = [
        worker(&redis_url(), &prefix, &[]).await,
        worker(&redis_url(), &prefix, &[]).await,
        worker(&redis_url(), &prefix, &[]).await,
    ];
    for w in &workers {
        wait_revision(w, 1).await;
    }
    // 3 workers × 1,000 requests, four callers each, all at once.
    let mut callers = Vec::new();
    for w in &workers {
        for _ in 0..4 {
            let mut c = client(w).await;
            callers.push(tokio::spawn(async move {
                for _ in 0..250 {
                    c.generate(ask("rr", "hi")).await.expect("served");
                }
            }));
        }
    }
    for c in callers {
        c.await.expect("caller");
    }
    let calls = [up.calls("m1"), up.calls("m2"), up.calls("m3")];
    assert_eq!(calls.iter().sum::<u64>(), 3000);
    for n in calls {
        assert!(
            n.abs_diff(1000) <= 20,
            "one shared counter, leased in blocks, spreads the fleet's requests within 2%: {calls:?}"
        );
    }
    // Each worker says it is alive (so each knows its share of a limit when
    // Redis is unreachable).
    let live = until_live_workers(&redis_url(), &prefix, 3).await;
    assert_eq!(live, 3, "three live workers");
}

#[tokio::test]
async fn a_member_benched_by_one_worker_is_skipped_by_another() {
    let up = fake().await;
    let prefix = RedisPrefix::new();
    let mut config = Config::one_pool(
        &up.base_url(),
        pb::Strategy::Priority,
        policy(0, 1, 60_000),
        &[("up", "sick", 10), ("up", "well", 0)],
    );
    config.publish(&redis_url(), &prefix, 1, true).await;
    let [a, b] = <[ServerProc; 2]>::try_from(fleet_of(2, &prefix).await)
        .unwrap_or_else(|_| panic!("two workers"));

    a_bench_reaches_the_other_worker(&up, &a, &b).await;
    let models = client(&b)
        .await
        .list_models(pb::ListModelsRequest {})
        .await
        .expect("models")
        .into_inner();
    let sick = models
        .models
        .iter()
        .flat_map(|m| m.members.iter())
        .find(|m| m.upstream_model == "sick")
        .expect("listed");
    assert!(!sick.available && sick.benched_until_ms > 0);
}

#[tokio::test]
async fn config_changes_reach_running_workers_and_lost_messages_heal() {
    let up = fake().await;
    let prefix = RedisPrefix::new();
    let mut config = Config::default();
    config
        .provider("up", pb::ProviderKind::Openai, &up.base_url(), None)
        .pool(
            "one",
            pb::Strategy::RoundRobin,
            policy(0, 3, 1000),
            &[("up", "m1", 0)],
        );
    config.publish(&redis_url(), &prefix, 1, true).await;
    let w = worker(&redis_url(), &prefix, &[]).await;
    wait_revision(&w, 1).await;
    let mut c = client(&w).await;
    assert_eq!(
        c.generate(ask("two", "hi"))
            .await
            .expect_err("not yet")
            .code(),
        Code::NotFound
    );

    // Published with a message: picked up.
    config.pool(
        "two",
        pb::Strategy::RoundRobin,
        policy(0, 3, 1000),
        &[("up", "m2", 0)],
    );
    config.publish(&redis_url(), &prefix, 2, true).await;
    wait_revision(&w, 2).await;
    c.generate(ask("two", "hi")).await.expect("new pool served");

    // Stored but the message lost: the periodic check heals it.
    config.pool(
        "three",
        pb::Strategy::RoundRobin,
        policy(0, 3, 1000),
        &[("up", "m3", 0)],
    );
    config.publish(&redis_url(), &prefix, 3, false).await;
    wait_revision(&w, 3).await;
    c.generate(ask("three", "hi"))
        .await
        .expect("healed without the message");
    assert!(w.logs().contains("config loaded"));
}

#[tokio::test]
async fn with_redis_down_a_worker_keeps_serving_its_last_config() {
    let up = fake().await;
    let mut redis = PrivateRedis::start().await;
    let prefix = RedisPrefix::new();
    let mut config = Config::one_pool(
        &up.base_url(),
        pb::Strategy::RoundRobin,
        policy(0, 3, 1000),
        &[("up", "m1", 0), ("up", "m2", 0)],
    );
    config.publish(&redis.url(), &prefix, 1, true).await;
    let w = worker(&redis.url(), &prefix, &[]).await;
    wait_revision(&w, 1).await;

    redis.stop();
    let mut c = client(&w).await;
    for _ in 0..4 {
        let r = c
            .generate(ask("p", "hi"))
            .await
            .expect("served without Redis")
            .into_inner();
        assert!(r.served_by.is_some());
    }
    let mut health = tonic_health::pb::health_client::HealthClient::new(
        tonic::transport::Channel::from_shared(format!("http://{}", w.addr))
            .expect("uri")
            .connect()
            .await
            .expect("connect"),
    );
    let status = |svc: &str| tonic_health::pb::HealthCheckRequest {
        service: svc.into(),
    };
    let serving = tonic_health::pb::health_check_response::ServingStatus::Serving as i32;
    assert_eq!(
        health
            .check(status(""))
            .await
            .expect("health")
            .into_inner()
            .status,
        serving,
        "still serving"
    );
    let mut config_state = 0;
    for _ in 0..100 {
        config_state = health
            .check(status("switchyard.config"))
            .await
            .expect("health")
            .into_inner()
            .status;
        if config_state != serving {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_ne!(
        config_state, serving,
        "health says the config source is down"
    );
    assert!(
        w.logs().contains("serving the last config"),
        "and so do the logs"
    );

    // Redis comes back (empty, as after a restart) and the control plane
    // stores the snapshot again: the worker is live again.
    let mut redis = PrivateRedis::start_on(redis.port).await;
    config.publish(&redis.url(), &prefix, 1, true).await;
    let mut live = false;
    for _ in 0..100 {
        if health
            .check(status("switchyard.config"))
            .await
            .expect("health")
            .into_inner()
            .status
            == serving
        {
            live = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(live, "config source reported live again");
    redis.stop();
}

#[tokio::test]
async fn a_worker_is_not_serving_until_it_has_a_config() {
    let prefix = RedisPrefix::new();
    // Its periodic check is a minute away: only the quick look of a worker
    // that has no config yet can find the snapshot.
    let w = worker(
        &redis_url(),
        &prefix,
        &[("SWITCHYARD_CONFIG_CHECK_MS", "60000")],
    )
    .await;
    let mut health = tonic_health::pb::health_client::HealthClient::new(
        tonic::transport::Channel::from_shared(format!("http://{}", w.addr))
            .expect("uri")
            .connect()
            .await
            .expect("connect"),
    );
    let st = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health")
        .into_inner()
        .status;
    assert_eq!(
        st,
        tonic_health::pb::health_check_response::ServingStatus::NotServing as i32
    );
    let up = fake().await;
    let mut config = Config::one_pool(
        &up.base_url(),
        pb::Strategy::RoundRobin,
        policy(0, 3, 1000),
        &[("up", "m1", 0)],
    );
    // Stored without a change message, as the control plane does when it
    // restores a snapshot Redis lost.
    config.publish(&redis_url(), &prefix, 1, false).await;
    wait_revision(&w, 1).await;
    let st = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health")
        .into_inner()
        .status;
    assert_eq!(
        st,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_lets_in_flight_streams_finish() {
    let up = FakeUpstream::start(FakeConfig {
        chunks: 5,
        chunk_delay: Duration::from_millis(150),
    })
    .await;
    let prefix = RedisPrefix::new();
    let mut config = Config::one_pool(
        &up.base_url(),
        pb::Strategy::RoundRobin,
        policy(0, 3, 1000),
        &[("up", "slow", 0)],
    );
    config.publish(&redis_url(), &prefix, 1, true).await;
    let mut w = worker(&redis_url(), &prefix, &[]).await;
    wait_revision(&w, 1).await;
    let mut stream = client(&w)
        .await
        .generate_stream(ask("p", "hi"))
        .await
        .expect("opens")
        .into_inner();
    let start = stream.message().await.expect("ok").expect("start event");
    assert!(matches!(
        start.event,
        Some(pb::generate_stream_event::Event::Start(_))
    ));

    let metrics = format!("http://{}/metrics", metrics_addr(&w));
    let exit = tokio::spawn(async move {
        let status = w.terminate().await;
        // The last lines may still be in the pipe when the process is gone.
        for _ in 0..40 {
            if w.logs().contains("data plane stopped") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        (status, w.logs())
    });
    // While it drains, the metrics port still answers, and counts the stream.
    let mut draining = None;
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(25)).await;
        if let Ok(r) = reqwest::get(&metrics).await
            && let Ok(text) = r.text().await
        {
            draining = Some(text);
            break;
        }
    }
    let draining = draining.expect("the metrics port answers during the drain");
    assert_eq!(
        sample(&draining, "switchyard_inflight_requests", &[]),
        Some(1.0),
        "{draining}"
    );
    let (events, end) = drain(stream).await;
    assert!(end.is_ok(), "the stream in flight finished: {end:?}");
    assert!(matches!(
        events.last().and_then(|e| e.event.as_ref()),
        Some(pb::generate_stream_event::Event::Finish(_))
    ));
    let (status, logs) = exit.await.expect("join");
    assert!(
        status.is_some_and(|s| s.success()),
        "clean exit: {status:?}"
    );
    assert!(logs.contains("data plane stopped"), "{logs}");
}
