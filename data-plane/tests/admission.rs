//! Concurrency caps and admission through the real engine (resolve → plan
//! → slot → attempt → failover) against the in-process mock upstream, on
//! paused tokio time: a member at its cap is skipped for the next, waiters
//! are served first come first served as slots free, and a full queue or
//! the deadline ends a wait with RESOURCE_EXHAUSTED and a retry hint.
// Tests spawn callers freely.
#![allow(clippy::disallowed_methods)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use switchyard_data_plane::error::DpError;
use switchyard_data_plane::failover::Engine;
use switchyard_data_plane::upstream::{ChatRequest, Message, Role};
use switchyard_proto::v1 as pb;
use tokio::time::Instant;

use pb::AttemptOutcome as O;

/// A PRIORITY pool "p" of mock members `(id, model with faults, cap)`, tried in order.
fn snapshot(members: &[(&str, &str, Option<u32>)]) -> pb::Snapshot {
    let n = i32::try_from(members.len()).unwrap_or(0);
    pb::Snapshot {
        revision: 1,
        providers: vec![pb::SnapshotProvider {
            id: "prov".into(),
            name: "mock".into(),
            kind: pb::ProviderKind::Mock.into(),
            timeouts: Some(pb::Timeouts {
                connect_ms: 1000,
                first_byte_ms: 60_000,
                request_ms: 60_000,
            }),
            enabled: true,
            ..Default::default()
        }],
        pools: vec![pb::SnapshotPool {
            id: "pool-p".into(),
            name: "p".into(),
            strategy: pb::Strategy::Priority.into(),
            failover: Some(pb::FailoverPolicy {
                transient_retries: 0,
                failure_threshold: 3,
                cooldown_base_ms: 1000,
                cooldown_max_ms: 4000,
                advance_on_permanent: false,
            }),
            enabled: true,
            members: members
                .iter()
                .zip(0..)
                .map(|((id, model, cap), i)| pb::SnapshotMember {
                    id: (*id).into(),
                    provider_id: "prov".into(),
                    provider_name: "mock".into(),
                    upstream_model: (*model).into(),
                    weight: 1,
                    priority: n - i,
                    status: pb::MemberStatus::Active.into(),
                    max_concurrency: *cap,
                    ..Default::default()
                })
                .collect(),
            allow_request_extra: None,
        }],
        ..Default::default()
    }
}

fn engine(members: &[(&str, &str, Option<u32>)], queue: usize) -> Arc<Engine> {
    Arc::new(common::engine::in_memory(&snapshot(members), queue))
}

type Outcomes = Vec<(String, O)>;

/// One call; its served member (or error) and attempt outcomes.
async fn call(
    e: &Engine,
    deadline: Option<Instant>,
) -> Result<(String, Outcomes), (DpError, Outcomes)> {
    let req = ChatRequest {
        messages: vec![Message::text(Role::User, "hi")],
        ..ChatRequest::default()
    };
    let outcomes = |a: &[pb::Attempt]| {
        a.iter()
            .map(|a| {
                (
                    a.member_id.clone(),
                    O::try_from(a.outcome).unwrap_or(O::Unspecified),
                )
            })
            .collect::<Vec<_>>()
    };
    match e.generate("p", &req, deadline, &Default::default()).await {
        Ok(s) => Ok((s.served_by.member_id, outcomes(&s.attempts))),
        Err(f) => Err((f.error, outcomes(&f.attempts))),
    }
}

/// Starts a call in the background (and lets it reach its member or queue).
async fn start(
    e: &Arc<Engine>,
    deadline: Option<Instant>,
) -> tokio::task::JoinHandle<(Result<(String, Outcomes), (DpError, Outcomes)>, Instant)> {
    let e = e.clone();
    let h = tokio::spawn(async move {
        let r = call(&e, deadline).await;
        (r, Instant::now())
    });
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    h
}

#[tokio::test(start_paused = true)]
async fn a_member_at_its_cap_is_skipped_for_the_next_without_penalty() {
    let e = engine(
        &[
            ("a", "a?delay_ms=1000", Some(1)),
            ("b", "b?delay_ms=1000", None),
        ],
        8,
    );
    let first = start(&e, None).await;
    let (member, outcomes) = call(&e, None).await.expect("served");
    assert_eq!(member, "b");
    assert_eq!(
        outcomes,
        vec![("a".into(), O::SkippedBusy), ("b".into(), O::Ok)]
    );
    let (first, _) = first.await.expect("join");
    assert_eq!(first.expect("served").0, "a");
    // Not held against it: the next call goes to a again.
    assert_eq!(call(&e, None).await.expect("served").0, "a");
}

#[tokio::test(start_paused = true)]
async fn waiters_are_served_first_come_first_served_as_slots_free() {
    let e = engine(&[("a", "a?delay_ms=1000", Some(1))], 8);
    let t0 = Instant::now();
    let deadline = Some(t0 + Duration::from_secs(30));
    let mut calls = Vec::new();
    for _ in 0..4 {
        calls.push(start(&e, deadline).await);
    }
    let mut done = Vec::new();
    for (i, c) in calls.into_iter().enumerate() {
        let (r, at) = c.await.expect("join");
        let (member, outcomes) = r.expect("served after waiting");
        assert_eq!(member, "a");
        if i > 0 {
            assert_eq!(
                outcomes,
                vec![("a".into(), O::SkippedBusy), ("a".into(), O::Ok)],
                "the busy skip is recorded once, then the attempt"
            );
        }
        done.push(at.duration_since(t0));
    }
    assert_eq!(
        done,
        (1..=4).map(Duration::from_secs).collect::<Vec<_>>(),
        "one at a time, in the order they came"
    );
}

#[tokio::test(start_paused = true)]
async fn the_deadline_ends_a_wait_with_resource_exhausted_and_a_retry_hint() {
    let e = engine(&[("a", "a?delay_ms=5000", Some(1))], 8);
    let holder = start(&e, None).await;
    let t0 = Instant::now();
    let (err, outcomes) = call(&e, Some(t0 + Duration::from_secs(2)))
        .await
        .expect_err("no slot in time");
    assert!(
        Instant::now() < t0 + Duration::from_secs(2),
        "it hears why before its deadline"
    );
    assert_eq!(outcomes, vec![("a".into(), O::SkippedBusy)]);
    let DpError::Busy { why, .. } = &err else {
        panic!("{err}")
    };
    assert_eq!(*why, "no slot came free within the request's deadline");
    let status = tonic::Status::from(err);
    assert_eq!(status.code(), tonic::Code::ResourceExhausted);
    assert!(status.metadata().get("grpc-retry-pushback-ms").is_some());
    assert!(holder.await.expect("join").0.is_ok());
}

#[tokio::test(start_paused = true)]
async fn a_full_queue_refuses_at_once() {
    let e = engine(&[("a", "a?delay_ms=1000", Some(1))], 1);
    let holder = start(&e, None).await;
    let waiter = start(&e, None).await;
    let t0 = Instant::now();
    let (err, _) = call(&e, None).await.expect_err("the queue is full");
    assert_eq!(Instant::now(), t0, "refused without waiting");
    assert!(
        matches!(
            err,
            DpError::Busy {
                why: "its admission queue is full",
                ..
            }
        ),
        "{err}"
    );
    assert!(holder.await.expect("join").0.is_ok());
    assert!(
        waiter.await.expect("join").0.is_ok(),
        "the waiter is served"
    );
}

#[tokio::test(start_paused = true)]
async fn a_caller_that_leaves_gives_its_slot_and_its_place_back() {
    let e = engine(&[("a", "a?delay_ms=1000", Some(1))], 8);
    let holder = start(&e, None).await;
    let waiter = start(&e, None).await;
    let later = start(&e, None).await;
    // The first waiter leaves: the next one moves up.
    waiter.abort();
    // The holder leaves mid-attempt: its slot comes back at once.
    holder.abort();
    let t0 = Instant::now();
    let (r, at) = later.await.expect("join");
    assert_eq!(r.expect("served").0, "a");
    assert_eq!(
        at.duration_since(t0),
        Duration::from_secs(1),
        "served as soon as the holder left"
    );
}
