//! Failure handling that protects providers, through real workers on real
//! Redis: a benched member waits out its cooldown, then one probe; a dead
//! pool gets a probe per cooldown, not a storm; retry budgets; the ramp
//! after a bench; a flapping member's growing cooldown.
// Tests spawn callers freely and read their env overrides.
#![allow(clippy::disallowed_methods)]

mod common;

use std::time::Duration;

use common::*;
use pb::AttemptOutcome as O;
use switchyard_proto::v1 as pb;
use tonic::Code;

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
    let mut config = Config::one_pool(
        &up.base_url(),
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
    let mut config = Config::one_pool(
        &up.base_url(),
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
