//! Several workers sharing one Redis: round robin across the fleet, shared
//! benching, the single half-open probe, config changes and lost messages,
//! and a Redis outage.
// Tests spawn callers freely and read their env overrides.
#![allow(clippy::disallowed_methods)]

mod common;

use std::time::Duration;

use common::*;
use pb::AttemptOutcome as O;
use switchyard_proto::v1 as pb;
use tonic::Code;

async fn fake() -> FakeUpstream {
    FakeUpstream::start(FakeConfig {
        chunks: 3,
        ..FakeConfig::default()
    })
    .await
}

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
    let keys = switchyard_shared::keys::RedisKeys::new(prefix.0.clone());
    let client = redis::Client::open(redis_url()).expect("url");
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
        if live == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(live, 3, "three live workers");
}

#[tokio::test]
async fn a_member_benched_by_one_worker_is_skipped_by_another() {
    let up = fake().await;
    let prefix = RedisPrefix::new();
    let mut config = Config::default();
    config
        .provider("up", pb::ProviderKind::Openai, &up.base_url(), None)
        .pool(
            "p",
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
async fn a_benched_member_waits_out_its_cooldown_then_one_probe_goes_through_fleet_wide() {
    let up = fake().await;
    let prefix = RedisPrefix::new();
    let mut config = Config::default();
    config
        .provider("up", pb::ProviderKind::Openai, &up.base_url(), None)
        .pool(
            "solo",
            pb::Strategy::RoundRobin,
            policy(0, 1, 1_500),
            &[("up", "only", 0)],
        );
    config.publish(&redis_url(), &prefix, 1, true).await;
    let [a, b] = <[ServerProc; 2]>::try_from(fleet_of(2, &prefix).await)
        .unwrap_or_else(|_| panic!("two workers"));

    up.set_fault("only", status(500));
    let err = client(&a)
        .await
        .generate(ask("solo", "hi"))
        .await
        .expect_err("benched now");
    assert_eq!(err.code(), Code::Unavailable);
    assert_eq!(up.calls("only"), 1);
    until_on(&b, "only", false).await;

    // The member recovers but is slow. While its bench lasts, nobody probes it:
    // both workers refuse at once without calling it.
    up.set_fault("only", Fault::DelayFirstByte(Duration::from_millis(800)));
    for w in [&a, &b] {
        let err = client(w)
            .await
            .generate(ask("solo", "hi"))
            .await
            .expect_err("still benched");
        assert!(err.message().contains("benched for"), "{}", err.message());
    }
    assert_eq!(up.calls("only"), 1, "no probe before the cooldown is over");

    // The cooldown is over: many callers on two workers at once, exactly one probe.
    until_on(&a, "only", true).await;
    let mut calls = Vec::new();
    for i in 0..6 {
        let w = if i % 2 == 0 { &a } else { &b };
        let mut c = client(w).await;
        calls.push(tokio::spawn(async move {
            c.generate(ask("solo", "hi")).await.map(|r| r.into_inner())
        }));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut ok = 0;
    let mut refused = 0;
    for c in calls {
        match c.await.expect("join") {
            Ok(_) => ok += 1,
            Err(s) => {
                assert_eq!(s.code(), Code::Unavailable, "{}", s.message());
                assert!(s.message().contains("probing"), "{}", s.message());
                refused += 1;
            }
        }
    }
    assert_eq!((ok, refused), (1, 5), "one probe, fleet-wide");
    assert_eq!(up.calls("only"), 2);
    // The probe succeeded: the member is back for everyone, and the fleet's
    // health table holds nothing of it (no probe left behind).
    up.clear_fault("only");
    until_on(&b, "only", true).await;
    client(&b)
        .await
        .generate(ask("solo", "hi"))
        .await
        .expect("back in rotation");
    let keys = switchyard_shared::keys::RedisKeys::new(prefix.0.clone());
    let entry: Option<String> = {
        let client = redis::Client::open(redis_url()).expect("url");
        let mut c = client
            .get_multiplexed_async_connection()
            .await
            .expect("redis");
        redis::cmd("HGET")
            .arg(keys.health_table())
            .arg("solo-only")
            .query_async(&mut c)
            .await
            .expect("HGET")
    };
    // fails|benches|until|owner|probe_until|updated|version
    let fields: Vec<String> = entry
        .expect("the bench count is kept (it decays with time)")
        .split('|')
        .map(str::to_owned)
        .collect();
    assert_eq!(fields[0], "0", "failures cleared");
    assert_eq!(fields[2], "0", "bench ended");
    assert_eq!(fields[3], "", "probe released");
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
    let mut config = Config::default();
    config
        .provider("up", pb::ProviderKind::Openai, &up.base_url(), None)
        .pool(
            "p",
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
    let mut config = Config::default();
    config
        .provider("up", pb::ProviderKind::Openai, &up.base_url(), None)
        .pool(
            "p",
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
    let mut config = Config::default();
    config
        .provider("up", pb::ProviderKind::Openai, &up.base_url(), None)
        .pool(
            "p",
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

/// Waits (at most ~6 s) until the current minute has at least 6 s left, so a
/// test of per-minute limits does not straddle a window boundary.
async fn away_from_minute_boundary() {
    loop {
        let s = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() % 60)
            .unwrap_or(0);
        if s < 54 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test]
async fn rpm_and_tpm_limits_are_shared_by_the_fleet_and_skip_without_penalty() {
    let up = fake().await;
    let prefix = RedisPrefix::new();
    let mut config = Config::default();
    config
        .provider("up", pb::ProviderKind::Openai, &up.base_url(), None)
        .pool(
            "p",
            pb::Strategy::Priority,
            policy(0, 1, 60_000),
            &[("up", "small", 10), ("up", "tokens", 5), ("up", "spare", 0)],
        )
        .member_limits("p", "small", Some(2), None)
        .member_limits("p", "tokens", None, Some(1))
        .member_limits("p", "spare", Some(1), None);
    config.publish(&redis_url(), &prefix, 1, true).await;
    let [a, b] = <[ServerProc; 2]>::try_from(fleet_of(2, &prefix).await)
        .unwrap_or_else(|_| panic!("two workers"));
    away_from_minute_boundary().await;

    let served = |r: &pb::GenerateResponse| {
        r.served_by
            .as_ref()
            .map(|m| m.upstream_model.clone())
            .unwrap_or_default()
    };
    let r1 = client(&a)
        .await
        .generate(ask("p", "hi"))
        .await
        .expect("r1")
        .into_inner();
    let r2 = client(&b)
        .await
        .generate(ask("p", "hi"))
        .await
        .expect("r2")
        .into_inner();
    assert_eq!(
        (served(&r1), served(&r2)),
        ("small".into(), "small".into()),
        "two requests fit the rpm limit, across workers"
    );
    let r3 = client(&a)
        .await
        .generate(ask("p", "hi"))
        .await
        .expect("r3")
        .into_inner();
    assert_eq!(
        outcomes(&r3.attempts),
        vec![("small".into(), O::SkippedQuota), ("tokens".into(), O::Ok)]
    );
    // The first answer's tokens are charged in the background: wait until
    // the fleet has counted them.
    let mut cb = client(&b).await;
    for _ in 0..100 {
        let models = cb
            .list_models(pb::ListModelsRequest {})
            .await
            .expect("models")
            .into_inner();
        if models
            .models
            .iter()
            .flat_map(|m| m.members.iter())
            .any(|m| m.upstream_model == "tokens" && m.tokens_this_minute > 0)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let r4 = client(&b)
        .await
        .generate(ask("p", "hi"))
        .await
        .expect("r4")
        .into_inner();
    assert_eq!(
        outcomes(&r4.attempts),
        vec![
            ("small".into(), O::SkippedQuota),
            ("tokens".into(), O::SkippedQuota),
            ("spare".into(), O::Ok)
        ],
        "the token limit is spent by the first answer's usage"
    );
    let err = client(&a)
        .await
        .generate(ask("p", "hi"))
        .await
        .expect_err("every member is over its limit");
    assert_eq!(err.code(), Code::ResourceExhausted, "{}", err.message());
    assert!(err.message().contains("(2 requests, "), "{}", err.message());

    let models = client(&b)
        .await
        .list_models(pb::ListModelsRequest {})
        .await
        .expect("models")
        .into_inner();
    let small = models
        .models
        .iter()
        .flat_map(|m| m.members.iter())
        .find(|m| m.upstream_model == "small")
        .expect("listed");
    assert_eq!(small.requests_this_minute, 2);
    assert!(
        small.available && small.consecutive_failures == 0,
        "quota is not a health problem"
    );
    assert_eq!(
        [up.calls("small"), up.calls("tokens"), up.calls("spare")],
        [2, 1, 1]
    );
}

/// 60 concurrent requests from 2 workers against a member with
/// `rpm_limit 10`: it gets at most 10, in every one of 5 trials (each on a
/// member of its own, so the windows start empty).
#[tokio::test]
async fn rpm_limits_hold_under_concurrent_bursts_from_two_workers() {
    let up = fake().await;
    let prefix = RedisPrefix::new();
    let mut config = Config::default();
    config.provider("up", pb::ProviderKind::Openai, &up.base_url(), None);
    for t in 1..=5 {
        let (pool, lim) = (format!("t{t}"), format!("lim{t}"));
        config
            .pool(
                &pool,
                pb::Strategy::Priority,
                policy(0, 100, 1000),
                &[("up", &lim, 10), ("up", "spare", 0)],
            )
            .member_limits(&pool, &lim, Some(10), None);
    }
    config.publish(&redis_url(), &prefix, 1, true).await;
    let [a, b] = <[ServerProc; 2]>::try_from(fleet_of(2, &prefix).await)
        .unwrap_or_else(|_| panic!("two workers"));
    for t in 1..=5 {
        let mut calls = Vec::new();
        for i in 0..60 {
            let w = if i % 2 == 0 { &a } else { &b };
            let mut c = client(w).await;
            let pool = format!("t{t}");
            calls.push(tokio::spawn(async move {
                c.generate(ask(&pool, "hi")).await.map(|_| ())
            }));
        }
        for c in calls {
            c.await.expect("join").expect("served by lim or spare");
        }
        let got = up.calls(&format!("lim{t}"));
        assert!(
            got <= 10,
            "trial {t}: the limited member got {got} requests"
        );
        assert!(got >= 5, "trial {t}: and it was used ({got})");
    }
}

/// The half-open storm: both members of a pool answer 503 and are benched;
/// 50 callers on 2 workers keep asking for 4 s. With a 1 s cooldown, each
/// member gets one probe per cooldown period (1 s, then 2 s): a handful of
/// requests, not one per caller.
#[tokio::test]
async fn a_pool_that_is_down_gets_a_probe_per_cooldown_not_a_storm() {
    let up = fake().await;
    let prefix = RedisPrefix::new();
    let mut config = Config::default();
    config
        .provider("up", pb::ProviderKind::Openai, &up.base_url(), None)
        .pool(
            "down",
            pb::Strategy::RoundRobin,
            policy(0, 1, 1000),
            &[("up", "x", 0), ("up", "y", 0)],
        );
    config.publish(&redis_url(), &prefix, 1, true).await;
    let [a, b] = <[ServerProc; 2]>::try_from(fleet_of(2, &prefix).await)
        .unwrap_or_else(|_| panic!("two workers"));
    for m in ["x", "y"] {
        up.set_fault(m, status(503));
    }
    // Both members fail once and are benched; both workers know it.
    for _ in 0..2 {
        let _ = client(&a).await.generate(ask("down", "hi")).await;
    }
    for w in [&a, &b] {
        until_on(w, "x", false).await;
        until_on(w, "y", false).await;
    }
    let before = up.calls("x") + up.calls("y");
    let until = tokio::time::Instant::now() + Duration::from_secs(4);
    let mut callers = Vec::new();
    for i in 0..50 {
        let mut c = client(if i % 2 == 0 { &a } else { &b }).await;
        callers.push(tokio::spawn(async move {
            let mut n = 0u32;
            while tokio::time::Instant::now() < until {
                let _ = c.generate(ask("down", "hi")).await;
                n += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            n
        }));
    }
    let mut requests = 0;
    for c in callers {
        requests += c.await.expect("caller");
    }
    let upstream = up.calls("x") + up.calls("y") - before;
    eprintln!("{requests} requests, {upstream} reached the failing upstreams");
    assert!(requests > 1000, "the callers kept asking ({requests})");
    // One probe per member per cooldown period: at ~1 s (then benched 2 s)
    // and at ~3 s (then 4 s). Measured: 4 for ~6,500 requests.
    assert!(
        upstream <= 6,
        "{upstream} upstream calls for {requests} requests"
    );
    assert!(upstream >= 2, "and the members were probed ({upstream})");
}

/// The same for `tpm_limit`: each request reserves an estimate (prompt and
/// `max_tokens`) before it is sent and settles on the real count, so a burst
/// cannot all pass before the first answer is counted.
#[tokio::test]
async fn tpm_limits_hold_under_concurrent_bursts_from_two_workers() {
    let up = fake().await;
    let prefix = RedisPrefix::new();
    let mut config = Config::default();
    config
        .provider("up", pb::ProviderKind::Openai, &up.base_url(), None)
        .pool(
            "tpm",
            pb::Strategy::Priority,
            policy(0, 100, 1000),
            &[("up", "lim", 10), ("up", "spare", 0)],
        )
        .member_limits("tpm", "lim", None, Some(100))
        .pool(
            "probe",
            pb::Strategy::Priority,
            policy(0, 100, 1000),
            &[("up", "lim", 0)],
        );
    config.publish(&redis_url(), &prefix, 1, true).await;
    let [a, b] = <[ServerProc; 2]>::try_from(fleet_of(2, &prefix).await)
        .unwrap_or_else(|_| panic!("two workers"));
    let request = || {
        let mut r = ask("tpm", "hi");
        r.max_tokens = Some(20);
        r
    };
    // What one answer costs (the same model, through an unlimited pool).
    let mut one = ask("probe", "hi");
    one.max_tokens = Some(20);
    let usage = client(&a)
        .await
        .generate(one)
        .await
        .expect("probe")
        .into_inner()
        .usage
        .expect("usage");
    let per_call = u64::from(usage.input_tokens + usage.output_tokens);
    let before = up.calls("lim");
    let mut calls = Vec::new();
    for i in 0..60 {
        let mut c = client(if i % 2 == 0 { &a } else { &b }).await;
        let r = request();
        calls.push(tokio::spawn(async move { c.generate(r).await.map(|_| ()) }));
    }
    for c in calls {
        c.await.expect("join").expect("served by lim or spare");
    }
    let served = up.calls("lim") - before;
    let estimate = 1 + 20; // "hi" and max_tokens
    assert!(served >= 1, "the limited member was used");
    assert!(
        served * per_call <= 100 + estimate,
        "{served} answers of {per_call} tokens against tpm_limit 100"
    );
}

/// A total outage under load, through two real workers: the pool's retry
/// budget keeps upstream attempts near one per request, instead of the six
/// (3 tries × 2 members) the policy would otherwise allow.
#[tokio::test]
async fn in_a_total_outage_the_retry_budget_holds_across_two_workers() {
    let up = fake().await;
    let prefix = RedisPrefix::new();
    let mut config = Config::default();
    config
        .provider("up", pb::ProviderKind::Openai, &up.base_url(), None)
        .pool(
            "out",
            pb::Strategy::RoundRobin,
            // Never benched: only the budget limits the retries.
            policy(2, 1_000_000, 1000),
            &[("up", "x", 0), ("up", "y", 0)],
        );
    config.publish(&redis_url(), &prefix, 1, true).await;
    let [a, b] = <[ServerProc; 2]>::try_from(fleet_of(2, &prefix).await)
        .unwrap_or_else(|_| panic!("two workers"));
    for m in ["x", "y"] {
        up.set_fault(m, status(503));
    }
    let start = tokio::time::Instant::now();
    let until = start + Duration::from_secs(2);
    let mut callers = Vec::new();
    for i in 0..20 {
        let mut c = client(if i % 2 == 0 { &a } else { &b }).await;
        callers.push(tokio::spawn(async move {
            let mut n = 0u64;
            while tokio::time::Instant::now() < until {
                let _ = c.generate(ask("out", "hi")).await;
                n += 1;
            }
            n
        }));
    }
    let mut requests = 0;
    for c in callers {
        requests += c.await.expect("caller");
    }
    let secs = start.elapsed().as_secs_f64();
    let upstream = (up.calls("x") + up.calls("y")) as f64;
    // Per worker: 20 % of its first attempts, 3 a second (a second of slack
    // for when its bucket started), a burst of 10.
    let bound = requests as f64 * 1.2 + 2.0 * (3.0 * (secs + 1.0) + 10.0);
    eprintln!("{requests} requests, {upstream} upstream attempts (bound {bound:.0})");
    assert!(requests > 100, "the callers kept asking ({requests})");
    assert!(
        upstream <= bound,
        "{upstream} upstream attempts for {requests} requests"
    );
}

/// A member back from a bench is ramped up, not handed its full share at
/// once: right after its probe succeeds most requests go elsewhere, and
/// after four seconds all of its share is back (through a real worker, with
/// the bench and the probe on real Redis).
#[tokio::test]
async fn a_member_back_from_a_bench_ramps_up() {
    let up = fake().await;
    let prefix = RedisPrefix::new();
    let mut config = Config::default();
    config
        .provider("up", pb::ProviderKind::Openai, &up.base_url(), None)
        .pool(
            "p",
            pb::Strategy::Priority,
            policy(0, 1, 300),
            &[("up", "first", 10), ("up", "second", 0)],
        );
    config.publish(&redis_url(), &prefix, 1, true).await;
    let w = worker(&redis_url(), &prefix, &[]).await;
    wait_revision(&w, 1).await;
    let mut c = client(&w).await;
    up.set_fault("first", status(503));
    c.generate(ask("p", "hi")).await.expect("second serves");
    up.clear_fault("first");
    until_on(&w, "first", true).await; // the 300 ms bench is over: half-open
    let r = c
        .generate(ask("p", "hi"))
        .await
        .expect("probe")
        .into_inner();
    assert_eq!(
        outcomes(&r.attempts)[0],
        ("first".into(), O::Ok),
        "the probe"
    );
    let mut to_first = 0;
    for _ in 0..100 {
        let r = c
            .generate(ask("p", "hi"))
            .await
            .expect("served")
            .into_inner();
        to_first += usize::from(r.served_by.is_some_and(|s| s.upstream_model == "first"));
    }
    assert!(
        to_first < 60,
        "ramping: {to_first} of 100 went to the recovered member"
    );
    tokio::time::sleep(Duration::from_millis(4200)).await;
    for _ in 0..20 {
        let r = c
            .generate(ask("p", "hi"))
            .await
            .expect("served")
            .into_inner();
        assert_eq!(
            r.served_by.map(|s| s.upstream_model).as_deref(),
            Some("first"),
            "fully back after four seconds"
        );
    }
}

/// A member that flaps (fails again soon after its probe succeeded) is
/// benched twice as long as last time: the bench count survives the
/// success and decays only with time healthy.
#[tokio::test]
async fn a_flapping_member_is_benched_longer_each_time() {
    let up = fake().await;
    let prefix = RedisPrefix::new();
    let mut config = Config::default();
    config
        .provider("up", pb::ProviderKind::Openai, &up.base_url(), None)
        .pool(
            "p",
            pb::Strategy::Priority,
            policy(0, 1, 400),
            &[("up", "flaky", 10), ("up", "steady", 0)],
        );
    config.publish(&redis_url(), &prefix, 1, true).await;
    let w = worker(&redis_url(), &prefix, &[]).await;
    wait_revision(&w, 1).await;
    let mut c = client(&w).await;
    let down = || status(503);
    // How long the member is benched for, as ListModels reports it.
    let bench_ms = |r: pb::ListModelsResponse| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(0))
            .unwrap_or(0);
        r.models
            .iter()
            .flat_map(|m| m.members.iter())
            .find(|m| m.upstream_model == "flaky")
            .map_or(0, |m| m.benched_until_ms - now)
    };
    up.set_fault("flaky", down());
    c.generate(ask("p", "hi")).await.expect("steady serves");
    let first = bench_ms(
        c.list_models(pb::ListModelsRequest {})
            .await
            .expect("list")
            .into_inner(),
    );
    assert!((1..=400).contains(&first), "first bench: 400 ms: {first}");
    // It recovers: the probe after the bench succeeds...
    up.clear_fault("flaky");
    until_on(&w, "flaky", true).await;
    let r = c
        .generate(ask("p", "hi"))
        .await
        .expect("probe")
        .into_inner();
    assert_eq!(outcomes(&r.attempts)[0], ("flaky".into(), O::Ok));
    // ...and it fails again at once.
    up.set_fault("flaky", down());
    // (It is ramping up: it comes first for a few requests in sixteen.)
    for _ in 0..300 {
        let r = c
            .generate(ask("p", "hi"))
            .await
            .expect("served")
            .into_inner();
        if outcomes(&r.attempts)[0].1 == O::Transient {
            break;
        }
    }
    let second = bench_ms(
        c.list_models(pb::ListModelsRequest {})
            .await
            .expect("list")
            .into_inner(),
    );
    assert!(
        (401..=800).contains(&second),
        "benched twice as long (800 ms): {second}"
    );
}
