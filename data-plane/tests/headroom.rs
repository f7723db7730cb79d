//! Headroom from the providers' own rate-limit headers, shared by the
//! fleet: a member whose headers say it has nothing left is skipped before
//! any 429 (by the other worker too), QUOTA_AWARE sends traffic where the
//! most is left, and context windows skip members a prompt does not fit.
#![allow(clippy::disallowed_methods)]

mod common;

use std::time::Duration;

use common::*;
use switchyard_proto::v1 as pb;
use tonic::Code;

/// What `w` says `member` of pool "p" has left (-1: unknown).
async fn remaining(w: &ServerProc, member: &str) -> i64 {
    let mut c = client(w).await;
    let models = c
        .list_models(pb::ListModelsRequest {})
        .await
        .expect("list models")
        .into_inner();
    models
        .models
        .iter()
        .filter(|m| m.name == "p")
        .flat_map(|m| &m.members)
        .find(|m| m.member_id == member)
        .map_or(-1, |m| m.remaining_requests)
}

/// Waits (bounded) until both workers see the same remaining count of `member`.
async fn agreed(a: &ServerProc, b: &ServerProc, member: &str) {
    for _ in 0..200 {
        if remaining(a, member).await == remaining(b, member).await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the workers never agreed on {member}'s headroom");
}

async fn steering(kind: pb::ProviderKind) {
    let up = fake().await;
    up.set_fault(
        "tight",
        Fault::RateLimit {
            rpm: 5,
            tpm: 1_000_000,
        },
    );
    let prefix = RedisPrefix::new();
    let mut config = Config::default();
    config.provider("up", kind, &up.base_url(), None).pool(
        "p",
        pb::Strategy::RoundRobin,
        policy(0, 10, 1000),
        &[("up", "tight", 0), ("up", "roomy", 0)],
    );
    config.publish(&redis_url(), &prefix, 1, true).await;
    let workers = fleet_of(2, &prefix).await;
    let mut near = 0;
    for i in 0..20 {
        let w = &workers[i % 2];
        let mut c = client(w).await;
        let r = c
            .generate(ask("p", "hi"))
            .await
            .unwrap_or_else(|e| panic!("request {i} served: {e}; logs:\n{}", w.logs()))
            .into_inner();
        near += outcomes(&r.attempts)
            .iter()
            .filter(|(_, o)| *o == pb::AttemptOutcome::SkippedNearLimit)
            .count();
        // The next request goes to the other worker: it must know what this
        // one learned from the fleet copy (pushed in the background).
        agreed(&workers[0], &workers[1], "p-tight").await;
    }
    assert_eq!(
        up.rate_limited(),
        0,
        "never a 429: the headers steered first"
    );
    assert_eq!(up.calls("tight"), 5, "the limited member served its 5 rpm");
    assert_eq!(up.calls("roomy"), 15);
    assert!(
        near >= 4,
        "the limited member was skipped near its limit: {near}"
    );
    assert_eq!(remaining(&workers[1], "p-tight").await, 0);
    assert_eq!(
        remaining(&workers[1], "p-roomy").await,
        -1,
        "no headers: unknown"
    );
}

#[tokio::test]
async fn openai_headers_steer_away_from_a_member_before_any_429_fleet_wide() {
    steering(pb::ProviderKind::Openai).await;
}

#[tokio::test]
async fn anthropic_headers_steer_away_from_a_member_before_any_429_fleet_wide() {
    steering(pb::ProviderKind::Anthropic).await;
}

#[tokio::test]
async fn quota_aware_sends_most_traffic_to_the_member_with_most_headroom() {
    let up = fake().await;
    up.set_fault(
        "small",
        Fault::RateLimit {
            rpm: 20,
            tpm: 1_000_000,
        },
    );
    up.set_fault(
        "large",
        Fault::RateLimit {
            rpm: 1000,
            tpm: 1_000_000,
        },
    );
    let prefix = RedisPrefix::new();
    let config = Config::one_pool(
        &up.base_url(),
        pb::Strategy::QuotaAware,
        policy(0, 10, 1000),
        &[("up", "small", 0), ("up", "large", 0)],
    );
    let mut config = config;
    config.publish(&redis_url(), &prefix, 1, true).await;
    let workers = fleet_of(1, &prefix).await;
    let mut c = client(&workers[0]).await;
    for _ in 0..30 {
        c.generate(ask("p", "hi")).await.expect("served");
    }
    // Until both are known, the rotation; then the larger headroom wins.
    assert!(up.calls("small") <= 2, "small: {}", up.calls("small"));
    assert!(up.calls("large") >= 28, "large: {}", up.calls("large"));
    assert_eq!(up.rate_limited(), 0);
}

#[tokio::test]
async fn context_windows_skip_members_a_prompt_does_not_fit() {
    let up = fake().await;
    let prefix = RedisPrefix::new();
    let mut config = Config::one_pool(
        &up.base_url(),
        pb::Strategy::Priority,
        policy(0, 10, 1000),
        &[("up", "small", 10), ("up", "big", 0)],
    );
    config
        .member_context("p", "small", 1000)
        .member_context("p", "big", 100_000);
    config.publish(&redis_url(), &prefix, 1, true).await;
    let workers = fleet_of(1, &prefix).await;
    let mut c = client(&workers[0]).await;
    // About 2,500 tokens at four characters a token.
    let r = c
        .generate(ask("p", &"x".repeat(10_000)))
        .await
        .expect("the big window serves")
        .into_inner();
    assert_eq!(
        outcomes(&r.attempts),
        vec![
            ("small".to_owned(), pb::AttemptOutcome::SkippedContext),
            ("big".to_owned(), pb::AttemptOutcome::Ok),
        ]
    );
    assert_eq!(up.calls("small"), 0, "skipped without an attempt");
    // A short prompt still goes to the preferred small window.
    c.generate(ask("p", "hi")).await.expect("served");
    assert_eq!(up.calls("small"), 1);
    // Too big for every member: INVALID_ARGUMENT, naming the windows.
    let err = c
        .generate(ask("p", &"x".repeat(500_000)))
        .await
        .expect_err("fits nobody");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(
        err.message().contains("context window of 100000"),
        "{}",
        err.message()
    );
    assert_eq!(up.calls("big"), 1, "nothing sent");
}

#[tokio::test]
async fn after_context_too_long_the_larger_window_is_tried_first() {
    let up = fake().await;
    up.set_fault(
        "unknown",
        Fault::Status {
            code: 400,
            retry_after_secs: None,
            body: Some(
                r#"{"error":{"message":"too long","type":"invalid_request_error","code":"context_length_exceeded"}}"#
                    .into(),
            ),
        },
    );
    let prefix = RedisPrefix::new();
    let mut config = Config::one_pool(
        &up.base_url(),
        pb::Strategy::Priority,
        policy(0, 10, 1000),
        &[("up", "unknown", 10), ("up", "mid", 5), ("up", "huge", 0)],
    );
    config
        .member_context("p", "mid", 8_000)
        .member_context("p", "huge", 200_000);
    config.publish(&redis_url(), &prefix, 1, true).await;
    let workers = fleet_of(1, &prefix).await;
    let mut c = client(&workers[0]).await;
    let r = c
        .generate(ask("p", "hi"))
        .await
        .expect("served")
        .into_inner();
    assert_eq!(
        outcomes(&r.attempts),
        vec![
            ("unknown".to_owned(), pb::AttemptOutcome::ContextTooLong),
            ("huge".to_owned(), pb::AttemptOutcome::Ok),
        ],
        "the larger window goes before the priority order"
    );
    assert_eq!(up.calls("mid"), 0);
}
