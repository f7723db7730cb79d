//! rpm/tpm limits across real workers on real Redis: shared by the fleet,
//! reserved so they hold under concurrent bursts, skipped without penalty.
// Tests spawn callers freely and read their env overrides.
#![allow(clippy::disallowed_methods)]

mod common;

use std::time::Duration;

use common::*;
use pb::AttemptOutcome as O;
use switchyard_proto::v1 as pb;
use tonic::Code;

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
    let mut config = Config::one_pool(
        &up.base_url(),
        pb::Strategy::Priority,
        policy(0, 1, 60_000),
        &[("up", "small", 10), ("up", "tokens", 5), ("up", "spare", 0)],
    );
    config
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

    let usage_reads = |m: &str| {
        sample(
            m,
            "switchyard_redis_call_duration_seconds_count",
            &[("op", "usage")],
        )
        .unwrap_or(0.0)
    };
    let before = usage_reads(&scrape(&b).await);
    let models = client(&b)
        .await
        .list_models(pb::ListModelsRequest {})
        .await
        .expect("models")
        .into_inner();
    assert_eq!(
        usage_reads(&scrape(&b).await) - before,
        1.0,
        "ListModels reads every limited member's usage in one Redis call"
    );
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
