//! The failover rules, one worker against real Redis and fake upstreams that
//! speak the OpenAI and Anthropic wire formats.
// Tests spawn callers freely and read their env overrides.
#![allow(clippy::disallowed_methods)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use pb::AttemptOutcome as O;
use switchyard_proto::v1 as pb;
use tonic::Code;

#[tokio::test]
async fn transient_errors_retry_then_move_on() {
    let s = setup(policy(1, 10, 1000), &[]).await;
    // An upstream that echoes the key in its error body.
    let echo = r#"{"error":{"message":"overloaded for key sk-test-secret-0000abcd","type":"server_error"}}"#;
    s.fake.set_fault(
        "a",
        Fault::Status {
            code: 503,
            retry_after_secs: None,
            body: Some(echo.into()),
        },
    );
    let r = client(&s.worker)
        .await
        .generate(ask("p", "hi"))
        .await
        .expect("served by b")
        .into_inner();
    assert_eq!(
        r.served_by.as_ref().map(|m| m.upstream_model.as_str()),
        Some("b")
    );
    assert_eq!(
        outcomes(&r.attempts),
        vec![
            ("a".into(), O::Transient),
            ("a".into(), O::Transient),
            ("b".into(), O::Ok)
        ]
    );
    assert_eq!(r.attempts[0].http_status, 503);
    assert_eq!(s.fake.calls("a"), 2, "one retry on the same member");
    assert!(
        r.attempts[0].detail.contains("overloaded for key *****"),
        "{}",
        r.attempts[0].detail
    );
    assert!(r.content.starts_with("b says hello"), "{}", r.content);
    // The upstream got the decrypted credential, and the answer names nothing secret.
    let auth = s.fake.last_headers("b").and_then(|h| {
        h.get("authorization")
            .map(|v| v.to_str().unwrap_or("").to_owned())
    });
    assert_eq!(auth.as_deref(), Some("Bearer sk-test-secret-0000abcd"));
    assert!(!s.worker.logs().contains("sk-test-secret"));
}

#[tokio::test]
async fn resolution_errors_and_exhaustion_say_what_happened() {
    let s = setup(policy(0, 10, 1000), &[]).await;
    let mut c = client(&s.worker).await;
    let err = c
        .generate(ask("nope", "hi"))
        .await
        .expect_err("unknown model");
    assert_eq!(err.code(), Code::NotFound);
    let huge = "x".repeat(5 << 20);
    let err = c
        .generate(ask("p", &huge))
        .await
        .expect_err("over the message limit");
    assert_eq!(err.code(), Code::ResourceExhausted, "{}", err.message());
    let err = c
        .generate(ask(&"m".repeat(600), "hi"))
        .await
        .expect_err("over-long model name");
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = c
        .generate(pb::GenerateRequest {
            messages: vec![],
            ..ask("p", "")
        })
        .await
        .expect_err("no messages");
    assert_eq!(err.code(), Code::InvalidArgument);

    // A direct provider/model is a pool of one.
    let r = c
        .generate(ask("up/direct-model", "hi"))
        .await
        .expect("direct")
        .into_inner();
    assert!(r.content.starts_with("direct-model says hello"));

    // Every member failing: UNAVAILABLE naming each one's reason.
    s.fake.set_fault("a", status(503));
    s.fake.set_fault("b", status(529));
    let err = c.generate(ask("p", "hi")).await.expect_err("all failed");
    assert_eq!(err.code(), Code::Unavailable);
    assert!(
        err.message().contains("up/a")
            && err.message().contains("up/b")
            && err.message().contains("529"),
        "{}",
        err.message()
    );
    assert!(!err.message().contains("sk-test"), "no secret in errors");

    // Every member inactive: FAILED_PRECONDITION.
    let mut config = s.config.clone();
    config
        .member_status("p", "a", pb::MemberStatus::Inactive)
        .member_status("p", "b", pb::MemberStatus::Draining);
    config.publish(&redis_url(), &s.prefix, 2, true).await;
    wait_revision(&s.worker, 2).await;
    let err = c
        .generate(ask("p", "hi"))
        .await
        .expect_err("nothing active");
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(err.message(), "no active member in pool 'p'");
}

#[tokio::test]
async fn routes_use_backup_tiers_after_the_primaries() {
    let s = setup(policy(0, 10, 1000), &[]).await;
    let mut config = s.config.clone();
    config
        .pool(
            "primary",
            pb::Strategy::RoundRobin,
            policy(0, 10, 1000),
            &[("up", "p1", 0)],
        )
        .pool(
            "backup",
            pb::Strategy::RoundRobin,
            policy(0, 10, 1000),
            &[("up", "b1", 0)],
        )
        .route("coding", &[("primary", false), ("backup", true)]);
    config.publish(&redis_url(), &s.prefix, 2, true).await;
    wait_revision(&s.worker, 2).await;
    let mut c = client(&s.worker).await;
    let r = c
        .generate(ask("coding", "hi"))
        .await
        .expect("primary")
        .into_inner();
    assert_eq!(r.served_by.map(|m| m.upstream_model), Some("p1".to_owned()));
    assert_eq!(s.fake.calls("b1"), 0, "backups idle while a primary serves");
    s.fake.set_fault("p1", status(502));
    let r = c
        .generate(ask("coding", "hi"))
        .await
        .expect("backup")
        .into_inner();
    assert_eq!(
        outcomes(&r.attempts),
        vec![("p1".into(), O::Transient), ("b1".into(), O::Ok)]
    );
}

#[tokio::test]
async fn streams_fail_over_before_the_first_chunk_only() {
    let s = setup(policy(0, 10, 1000), &[]).await;
    let mut c = client(&s.worker).await;

    // An error event before any content: move to b.
    s.fake.set_fault("a", Fault::ErrorEvent);
    let opened = c.generate_stream(ask("p", "hi")).await.expect("opens");
    let header_member = opened
        .metadata()
        .get("x-switchyard-member")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    assert_eq!(
        header_member.as_deref(),
        Some("p-b"),
        "initial metadata names the member"
    );
    let (events, trailers) = drain_ok(opened.into_inner()).await;
    let Some(pb::generate_stream_event::Event::Start(start)) = &events[0].event else {
        panic!("first event is start")
    };
    assert_eq!(
        outcomes(&start.attempts),
        vec![("a".into(), O::Transient), ("b".into(), O::Ok)]
    );
    assert_eq!(text_of(&events), "b says hello w1");
    assert!(matches!(
        events.last().and_then(|e| e.event.as_ref()),
        Some(pb::generate_stream_event::Event::Finish(_))
    ));
    assert_eq!(
        trailers
            .get("x-switchyard-member")
            .and_then(|v| v.to_str().ok()),
        Some("p-b"),
        "and so do the trailers"
    );
    assert_eq!(
        trailers
            .get("x-switchyard-attempts")
            .and_then(|v| v.to_str().ok()),
        Some("p-a:transient,p-b:ok")
    );

    // Dropped after two chunks: the caller sees them, then UNAVAILABLE; b is never asked.
    let before_b = s.fake.calls("b");
    s.fake.set_fault("a", Fault::DropAfter(2));
    let stream = c
        .generate_stream(ask("p", "hi"))
        .await
        .expect("opens")
        .into_inner();
    let (events, end) = drain(stream).await;
    let status = end.expect_err("a stream that died is not OK");
    assert_eq!(status.code(), Code::Unavailable, "{}", status.message());
    assert_eq!(text_of(&events), "a says");
    assert_eq!(
        s.fake.calls("b"),
        before_b,
        "never replayed on another member"
    );
}

/// A committed stream that breaks is judged by the same table as a failed
/// attempt: it counts toward its member's bench (its first chunk does not
/// reset the count: a stream's success is its finish), and a bench it
/// causes is counted and seen by the next request.
#[tokio::test]
async fn a_broken_stream_counts_toward_its_members_bench() {
    let s = setup(policy(0, 2, 60_000), &[]).await;
    let mut c = client(&s.worker).await;
    s.fake.set_fault("a", Fault::DropAfter(1));
    for _ in 0..2 {
        let (events, end) = stream_once(&mut c, ask("p", "hi")).await;
        assert_eq!(text_of(&events), "a", "committed to a before it broke");
        assert_eq!(end.expect_err("broken").code(), Code::Unavailable);
    }
    let benches = sample(
        &scrape(&s.worker).await,
        "switchyard_member_benches_total",
        &[("member", "p-a")],
    );
    assert_eq!(benches, Some(1.0), "the second break benched a");
    let (events, end) = stream_once(&mut c, ask("p", "hi")).await;
    end.expect("b serves while a sits out");
    assert_eq!(text_of(&events), "b says hello w1");
}

#[tokio::test]
async fn a_stalled_stream_ends_with_deadline_exceeded() {
    let s = setup(policy(0, 10, 1000), &[("SWITCHYARD_STREAM_IDLE_MS", "400")]).await;
    s.fake.set_fault("a", Fault::StallAfter(1));
    let stream = client(&s.worker)
        .await
        .generate_stream(ask("p", "hi"))
        .await
        .expect("opens")
        .into_inner();
    let (events, end) = drain(stream).await;
    assert_eq!(text_of(&events), "a");
    assert_eq!(end.expect_err("stalled").code(), Code::DeadlineExceeded);
}

#[tokio::test]
async fn a_caller_that_leaves_cancels_the_upstream() {
    let s = setup(policy(0, 10, 1000), &[]).await;
    s.fake.set_fault("a", Fault::StallAfter(1));
    let mut stream = client(&s.worker)
        .await
        .generate_stream(ask("p", "hi"))
        .await
        .expect("opens")
        .into_inner();
    let start = stream.message().await.expect("ok").expect("start");
    assert!(matches!(
        start.event,
        Some(pb::generate_stream_event::Event::Start(_))
    ));
    let first = stream.message().await.expect("ok").expect("first chunk");
    assert!(matches!(
        first.event,
        Some(pb::generate_stream_event::Event::TextDelta(_))
    ));
    drop(stream);
    eventually("the upstream sees the cancel", || s.fake.cancelled() == 1).await;
    eventually("nothing left in flight upstream", || {
        s.fake.in_flight() == 0
    })
    .await;
}

#[tokio::test]
async fn the_callers_deadline_bounds_every_attempt() {
    let s = setup(policy(3, 10, 1000), &[]).await;
    s.fake
        .set_fault("a", Fault::DelayFirstByte(Duration::from_secs(5)));
    let started = Instant::now();
    let err = client(&s.worker)
        .await
        .generate(with_timeout(ask("p", "hi"), Duration::from_millis(400)))
        .await
        .expect_err("deadline");
    assert_eq!(err.code(), Code::DeadlineExceeded, "{}", err.message());
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "did not wait for the slow upstream"
    );
    assert_eq!(s.fake.calls("b"), 0, "no attempt starts after the deadline");
    let attempts = err
        .metadata()
        .get("x-switchyard-attempts")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    assert_eq!(
        attempts, "p-a:deadline",
        "the attempt is reported as cut by the deadline"
    );
    let models = client(&s.worker)
        .await
        .list_models(pb::ListModelsRequest {})
        .await
        .expect("models")
        .into_inner();
    let a = models
        .models
        .iter()
        .flat_map(|m| m.members.iter())
        .find(|m| m.member_id == "p-a")
        .expect("member a");
    assert_eq!(
        a.consecutive_failures, 0,
        "the caller's deadline is not the member's failure"
    );
}

#[tokio::test]
async fn anthropic_members_speak_the_messages_api() {
    let s = setup(policy(0, 10, 1000), &[]).await;
    let mut config = s.config.clone();
    config
        .provider(
            "claude",
            pb::ProviderKind::Anthropic,
            &s.fake.base_url(),
            Some("sk-ant-test-key-9999"),
        )
        .pool(
            "claude-pool",
            pb::Strategy::RoundRobin,
            policy(0, 10, 1000),
            &[("claude", "claude-x", 0)],
        );
    config.publish(&redis_url(), &s.prefix, 2, true).await;
    wait_revision(&s.worker, 2).await;
    let mut c = client(&s.worker).await;
    let r = c
        .generate(ask("claude-pool", "hi"))
        .await
        .expect("unary")
        .into_inner();
    assert!(
        r.content.starts_with("claude-x says hello"),
        "{}",
        r.content
    );
    let key = s.fake.last_headers("claude-x").and_then(|h| {
        h.get("x-api-key")
            .map(|v| v.to_str().unwrap_or("").to_owned())
    });
    assert_eq!(key.as_deref(), Some("sk-ant-test-key-9999"));
    let (events, end) = stream_once(&mut c, ask("claude-pool", "hi")).await;
    assert!(end.is_ok(), "{end:?}");
    assert_eq!(text_of(&events), "claude-x says hello w1");
    assert!(
        events
            .iter()
            .any(|e| matches!(e.event, Some(pb::generate_stream_event::Event::Usage(_))))
    );
}

#[tokio::test]
async fn inference_tokens_gate_callers_but_not_probes() {
    let s = setup(
        policy(0, 10, 1000),
        &[("SWITCHYARD_INFERENCE_TOKENS", "harness-caller,caller-two")],
    )
    .await;
    // A client that presents no token (the harness client always does).
    let mut c = switchyard_proto::v1::inference_client::InferenceClient::connect(format!(
        "http://{}",
        s.worker.addr
    ))
    .await
    .expect("connect");
    let err = c.generate(ask("p", "hi")).await.expect_err("no token");
    assert_eq!(err.code(), Code::Unauthenticated);
    let mut wrong = tonic::Request::new(ask("p", "hi"));
    wrong
        .metadata_mut()
        .insert("authorization", "Bearer nope".parse().expect("header"));
    assert_eq!(
        c.generate(wrong).await.expect_err("wrong token").code(),
        Code::Unauthenticated
    );
    let mut ok = tonic::Request::new(ask("p", "hi"));
    ok.metadata_mut().insert(
        "authorization",
        "Bearer caller-two".parse().expect("header"),
    );
    let r = c
        .generate(ok)
        .await
        .expect("a configured token")
        .into_inner();
    assert!(r.content.starts_with("a says hello"), "{}", r.content);
    let mut health = tonic_health::pb::health_client::HealthClient::new(
        tonic::transport::Channel::from_shared(format!("http://{}", s.worker.addr))
            .expect("uri")
            .connect()
            .await
            .expect("connect"),
    );
    health
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health needs no token");
    assert!(
        !s.worker.logs().contains("caller-two"),
        "tokens are not logged"
    );
}
