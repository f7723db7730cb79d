//! The failover rules of ADR 004, one test each, through the real engine
//! (resolve → plan → attempt → failover) against the in-memory fleet
//! backend and the in-process mock upstream, on paused tokio time: cooldowns
//! and backoff are checked by advancing the clock, never by sleeping.
// Tests spawn callers freely and read their env overrides.
#![allow(clippy::disallowed_methods)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use switchyard_data_plane::catalog::Catalog;
use switchyard_data_plane::credentials::Resolver;
use switchyard_data_plane::error::DpError;
use switchyard_data_plane::failover::{Engine, Rules};
use switchyard_data_plane::server::defaults;
use switchyard_data_plane::upstream::{ChatRequest, Message, Role};
use switchyard_proto::v1 as pb;
use tokio::time::Instant;

use pb::AttemptOutcome as O;

struct Rig {
    engine: Engine,
    threshold: u32,
    cooldown_ms: u32,
}

fn policy(retries: u32, threshold: u32, cooldown_ms: u32) -> pb::FailoverPolicy {
    pb::FailoverPolicy {
        transient_retries: retries,
        failure_threshold: threshold,
        cooldown_base_ms: cooldown_ms,
        cooldown_max_ms: cooldown_ms * 4,
        advance_on_permanent: false,
    }
}

/// A PRIORITY pool "p" of mock members `(id, model with faults, rpm limit)`, tried in order.
fn snapshot(failover: pb::FailoverPolicy, members: &[(&str, &str, Option<u64>)]) -> pb::Snapshot {
    let n = i32::try_from(members.len()).unwrap_or(0);
    pb::Snapshot {
        revision: 1,
        providers: vec![pb::SnapshotProvider {
            id: "prov".into(),
            name: "mock".into(),
            kind: pb::ProviderKind::Mock.into(),
            timeouts: Some(pb::Timeouts {
                connect_ms: 1000,
                first_byte_ms: 5000,
                request_ms: 10_000,
            }),
            enabled: true,
            ..Default::default()
        }],
        pools: vec![pb::SnapshotPool {
            id: "pool-p".into(),
            name: "p".into(),
            strategy: pb::Strategy::Priority.into(),
            failover: Some(failover),
            enabled: true,
            members: members
                .iter()
                .zip(0..)
                .map(|((id, model, rpm), i)| pb::SnapshotMember {
                    id: (*id).into(),
                    provider_id: "prov".into(),
                    provider_name: "mock".into(),
                    upstream_model: (*model).into(),
                    weight: 1,
                    priority: n - i,
                    status: pb::MemberStatus::Active.into(),
                    rpm_limit: *rpm,
                    tpm_limit: None,
                    max_output_tokens: None,
                    ..Default::default()
                })
                .collect(),
            allow_request_extra: None,
        }],
        routes: vec![],
        ..Default::default()
    }
}

impl Rig {
    fn new(failover: pb::FailoverPolicy, members: &[(&str, &str, Option<u64>)]) -> Self {
        Self {
            engine: common::engine::in_memory(
                &snapshot(failover, members),
                defaults::ADMISSION_QUEUE,
            ),
            threshold: failover.failure_threshold,
            cooldown_ms: failover.cooldown_base_ms,
        }
    }

    /// The same members with other faults (health is kept by member id).
    fn reconfigure(&self, members: &[(&str, &str, Option<u64>)]) {
        let p = policy(0, self.threshold, self.cooldown_ms);
        let catalog = Catalog::build(&snapshot(p, members), &Resolver::default());
        self.engine.catalog().store(Arc::new(catalog));
    }

    async fn call(
        &self,
        deadline: Option<Instant>,
    ) -> Result<Vec<(String, O)>, (DpError, Vec<(String, O)>)> {
        self.call_model("p", deadline).await
    }

    async fn call_model(
        &self,
        model: &str,
        deadline: Option<Instant>,
    ) -> Result<Vec<(String, O)>, (DpError, Vec<(String, O)>)> {
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
        let r = self
            .engine
            .generate(model, &req, deadline, &Default::default())
            .await;
        // Let the background pusher apply what the request reported.
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(1)).await;
        match r {
            Ok(s) => Ok(outcomes(&s.attempts)),
            Err(f) => Err((f.error, outcomes(&f.attempts))),
        }
    }
}

fn o(list: &[(&str, O)]) -> Vec<(String, O)> {
    list.iter().map(|(m, x)| ((*m).to_owned(), *x)).collect()
}

#[tokio::test(start_paused = true)]
async fn transient_errors_are_retried_per_policy_then_the_next_member_serves() {
    let rig = Rig::new(
        policy(1, 5, 1000),
        &[("a", "a?status=503", None), ("b", "b", None)],
    );
    let r = rig.call(None).await.expect("b serves");
    assert_eq!(
        r,
        o(&[("a", O::Transient), ("a", O::Transient), ("b", O::Ok)])
    );
}

#[tokio::test(start_paused = true)]
async fn model_not_found_moves_on_without_penalty() {
    let rig = Rig::new(
        policy(1, 1, 1000),
        &[("a", "a?status=404", None), ("b", "b", None)],
    );
    for _ in 0..3 {
        let r = rig.call(None).await.expect("b serves");
        assert_eq!(
            r,
            o(&[("a", O::ModelNotFound), ("b", O::Ok)]),
            "never benched"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn permanent_errors_return_at_once() {
    let rig = Rig::new(
        policy(1, 1, 1000),
        &[("a", "a?status=400", None), ("b", "b", None)],
    );
    let (e, attempts) = rig.call(None).await.expect_err("400 is the caller's");
    assert_eq!(tonic::Status::from(e).code(), tonic::Code::InvalidArgument);
    assert_eq!(attempts, o(&[("a", O::Permanent)]));
}

#[tokio::test(start_paused = true)]
async fn at_the_threshold_a_member_is_benched_and_skipped_until_its_cooldown_ends() {
    let rig = Rig::new(
        policy(0, 2, 1000),
        &[("a", "a?status=503", None), ("b", "b", None)],
    );
    rig.call(None).await.expect("b");
    rig.call(None).await.expect("b");
    let r = rig.call(None).await.expect("b");
    assert_eq!(
        r,
        o(&[("a", O::SkippedBenched), ("b", O::Ok)]),
        "benched after 2"
    );
    tokio::time::advance(Duration::from_millis(990)).await;
    let r = rig.call(None).await.expect("b");
    assert_eq!(
        r[0],
        ("a".into(), O::SkippedBenched),
        "still benched just before the end"
    );
}

#[tokio::test(start_paused = true)]
async fn after_the_cooldown_one_probe_and_a_failed_probe_doubles_the_bench() {
    let rig = Rig::new(
        policy(0, 1, 1000),
        &[("a", "a?status=503", None), ("b", "b", None)],
    );
    rig.call(None).await.expect("b"); // a benched for 1 s
    tokio::time::advance(Duration::from_millis(1001)).await;
    let r = rig.call(None).await.expect("b");
    assert_eq!(
        r,
        o(&[("a", O::Transient), ("b", O::Ok)]),
        "the probe went to a and failed"
    );
    // Benched again, for 2 s now.
    tokio::time::advance(Duration::from_millis(1500)).await;
    let r = rig.call(None).await.expect("b");
    assert_eq!(r[0], ("a".into(), O::SkippedBenched), "doubled: 2 s");
    tokio::time::advance(Duration::from_millis(600)).await;
    rig.reconfigure(&[("a", "a", None), ("b", "b", None)]);
    let r = rig.call(None).await.expect("a recovered");
    assert_eq!(r, o(&[("a", O::Ok)]), "a successful probe puts it back");
    // Back from a bench, it ramps up: a small share at first, all of it
    // after four doublings of a second each.
    let mut first_a = 0;
    for _ in 0..200 {
        let r = rig.call(None).await.expect("served");
        first_a += usize::from(r[0].0 == "a");
    }
    assert!(first_a < 100, "ramping: a got {first_a} of 200 first");
    tokio::time::advance(Duration::from_secs(4)).await;
    let r = rig.call(None).await.expect("a");
    assert_eq!(r, o(&[("a", O::Ok)]), "fully back");
}

#[tokio::test(start_paused = true)]
async fn with_every_member_benched_the_request_fails_fast_naming_each() {
    let rig = Rig::new(
        policy(0, 1, 5000),
        &[("a", "a?status=503", None), ("b", "b?status=502", None)],
    );
    let (e, _) = rig.call(None).await.expect_err("both fail");
    assert!(matches!(e, DpError::AllCandidatesFailed { .. }));
    let (e, attempts) = rig.call(None).await.expect_err("both benched");
    assert_eq!(
        attempts,
        o(&[("a", O::SkippedBenched), ("b", O::SkippedBenched)])
    );
    let s = tonic::Status::from(e);
    assert_eq!(s.code(), tonic::Code::Unavailable);
    assert!(
        s.message().contains("benched for 5.0s more"),
        "{}",
        s.message()
    );
}

#[tokio::test(start_paused = true)]
async fn retry_after_sets_the_bench_at_least_that_long() {
    let rig = Rig::new(
        policy(0, 1, 1000),
        &[("a", "a?status=429&retry_after=30", None), ("b", "b", None)],
    );
    rig.call(None).await.expect("b");
    tokio::time::advance(Duration::from_secs(29)).await;
    let r = rig.call(None).await.expect("b");
    assert_eq!(
        r[0],
        ("a".into(), O::SkippedBenched),
        "Retry-After: 30 s, not 1 s"
    );
}

#[tokio::test(start_paused = true)]
async fn an_attempt_cut_by_the_callers_deadline_is_not_held_against_the_member() {
    let rig = Rig::new(
        policy(0, 1, 1000),
        &[("a", "a?delay_ms=5000", None), ("b", "b", None)],
    );
    let deadline = Instant::now() + Duration::from_millis(100);
    let (e, attempts) = rig.call(Some(deadline)).await.expect_err("deadline");
    assert!(matches!(e, DpError::Deadline { .. }));
    assert_eq!(attempts, o(&[("a", O::Deadline)]));
    rig.reconfigure(&[("a", "a", None), ("b", "b", None)]);
    let r = rig.call(None).await.expect("a is not benched");
    assert_eq!(r, o(&[("a", O::Ok)]));
}

#[tokio::test(start_paused = true)]
async fn members_over_their_limit_are_skipped_without_penalty() {
    let rig = Rig::new(
        policy(0, 1, 1000),
        &[("a", "a", Some(1)), ("b", "b", Some(1))],
    );
    assert_eq!(rig.call(None).await.expect("a"), o(&[("a", O::Ok)]));
    assert_eq!(
        rig.call(None).await.expect("b"),
        o(&[("a", O::SkippedQuota), ("b", O::Ok)])
    );
    let (e, _) = rig.call(None).await.expect_err("both over");
    let s = tonic::Status::from(e);
    assert_eq!(s.code(), tonic::Code::ResourceExhausted);
    assert!(
        s.message().contains("(1 requests, ") && s.message().contains("rpm 1, tpm none"),
        "{}",
        s.message()
    );
    let wait: u64 = s
        .metadata()
        .get("grpc-retry-pushback-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("when the window has room again");
    assert!(wait <= 60_000, "{wait}");
}

#[tokio::test(start_paused = true)]
async fn the_attempt_cap_bounds_a_request() {
    let rig = Rig::new(
        policy(5, 100, 1000),
        &[
            ("a", "a?status=503", None),
            ("b", "b?status=503", None),
            ("c", "c", None),
        ],
    );
    let mut rig = rig;
    rig.engine.set_rules(Rules {
        max_attempts: 4,
        ..rig.engine.rules()
    });
    let (e, attempts) = rig.call(None).await.expect_err("cap");
    assert!(matches!(e, DpError::AttemptCap { cap: 4, .. }), "{e}");
    assert_eq!(attempts.len(), 4);
    let message = e.to_string();
    for m in ["member b", "member c"] {
        assert!(
            message.contains(&format!("{m}): not reached")),
            "the error names members never reached: {message}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_rate_limited_member_is_benched_at_once_for_its_retry_after_and_not_retried() {
    let rig = Rig::new(
        policy(3, 5, 1000),
        &[("a", "a?status=429&retry_after=20", None), ("b", "b", None)],
    );
    let r = rig.call(None).await.expect("b serves");
    assert_eq!(
        r,
        o(&[("a", O::RateLimited), ("b", O::Ok)]),
        "no retry of a rate-limited member, although the policy allows 3"
    );
    tokio::time::advance(Duration::from_secs(19)).await;
    rig.reconfigure(&[("a", "a", None), ("b", "b", None)]);
    let r = rig.call(None).await.expect("b");
    assert_eq!(
        r[0],
        ("a".into(), O::SkippedBenched),
        "out for its Retry-After"
    );
    tokio::time::advance(Duration::from_secs(2)).await;
    let r = rig.call(None).await.expect("a is back");
    assert_eq!(r, o(&[("a", O::Ok)]));
}

#[tokio::test(start_paused = true)]
async fn a_rate_limit_without_a_hint_benches_for_the_default() {
    let rig = Rig::new(
        policy(0, 5, 1000),
        &[("a", "a?status=529", None), ("b", "b", None)],
    );
    rig.call(None).await.expect("b");
    tokio::time::advance(Duration::from_millis(4900)).await;
    let r = rig.call(None).await.expect("b");
    assert_eq!(r[0], ("a".into(), O::SkippedBenched), "5 s by default");
    tokio::time::advance(Duration::from_millis(200)).await;
    let r = rig.call(None).await.expect("b");
    assert_eq!(r[0], ("a".into(), O::RateLimited), "asked again after 5 s");
}

#[tokio::test(start_paused = true)]
async fn a_refused_credential_benches_the_member_for_long_and_the_caller_sees_it_only_if_nobody_serves()
 {
    let rig = Rig::new(
        policy(1, 5, 1000),
        &[("a", "a?status=401", None), ("b", "b", None)],
    );
    assert_eq!(
        rig.call(None).await.expect("b"),
        o(&[("a", O::Auth), ("b", O::Ok)])
    );
    tokio::time::advance(Duration::from_secs(299)).await;
    assert_eq!(
        rig.call(None).await.expect("b")[0],
        ("a".into(), O::SkippedBenched)
    );
    let rig = Rig::new(
        policy(1, 5, 1000),
        &[("a", "a?status=401", None), ("b", "b?status=403", None)],
    );
    let (e, attempts) = rig.call(None).await.expect_err("nobody serves");
    assert_eq!(attempts, o(&[("a", O::Auth), ("b", O::Auth)]));
    assert_eq!(
        tonic::Status::from(e).code(),
        tonic::Code::Unauthenticated,
        "the first refusal"
    );
}

#[tokio::test(start_paused = true)]
async fn a_prompt_too_long_for_one_member_moves_on_without_penalty() {
    let rig = Rig::new(
        policy(1, 1, 1000),
        &[
            ("a", "a?status=400&context_too_long=1", None),
            ("b", "b", None),
        ],
    );
    for _ in 0..2 {
        let r = rig.call(None).await.expect("b has the room");
        assert_eq!(
            r,
            o(&[("a", O::ContextTooLong), ("b", O::Ok)]),
            "never benched"
        );
    }
    let rig = Rig::new(
        policy(1, 1, 1000),
        &[("a", "a?status=400&context_too_long=1", None)],
    );
    let (e, _) = rig.call(None).await.expect_err("too long for everyone");
    let s = tonic::Status::from(e);
    assert_eq!(s.code(), tonic::Code::InvalidArgument);
    assert!(
        s.message().contains("longer than the context"),
        "{}",
        s.message()
    );
}

#[tokio::test(start_paused = true)]
async fn retries_of_a_member_back_off_and_stop_at_the_deadline() {
    let rig = Rig::new(
        policy(4, 100, 1000),
        &[("a", "a?status=503", None), ("b", "b", None)],
    );
    let start = Instant::now();
    let r = rig.call(None).await.expect("b");
    assert_eq!(r.len(), 6, "1 + 4 retries of a, then b");
    // Paused time: without backoff the call takes exactly the 1 ms `call`
    // waits after it. Four jittered waits under 10 ms in all: p < 0.0001.
    assert!(
        start.elapsed() > Duration::from_millis(11),
        "the retries waited: {:?}",
        start.elapsed()
    );
    // With a deadline too close for another backoff, the request moves on.
    let deadline = Instant::now() + Duration::from_millis(1);
    let r = rig.call(Some(deadline)).await;
    let attempts = match r {
        Ok(a) => a,
        Err((_, a)) => a,
    };
    assert!(
        attempts.len() < 6,
        "no backoff past the deadline: {attempts:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn when_every_member_is_benched_the_error_says_when_to_come_back() {
    let rig = Rig::new(policy(0, 1, 3000), &[("a", "a?status=503", None)]);
    rig.call(None).await.expect_err("fails");
    let (e, _) = rig.call(None).await.expect_err("benched");
    let s = tonic::Status::from(e);
    let hint: u64 = s
        .metadata()
        .get("grpc-retry-pushback-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("a retry hint");
    assert!((2900..=3000).contains(&hint), "{hint}");
}

#[tokio::test(start_paused = true)]
async fn in_a_total_outage_retries_stay_within_the_pool_budget() {
    let rig = Rig::new(
        policy(2, 1000, 1000),
        &[("a", "a?status=503", None), ("b", "b?status=502", None)],
    );
    let (mut first, mut upstream, mut refused) = (0usize, 0usize, 0usize);
    let start = Instant::now();
    // 20 requests a second for 10 s (plus their backoffs), every attempt failing.
    for _ in 0..200 {
        let (_, attempts) = rig.call(None).await.expect_err("outage");
        first += 1;
        upstream += attempts.iter().filter(|(_, o)| *o == O::Transient).count();
        refused += attempts
            .iter()
            .filter(|(_, o)| *o == O::BudgetRefused)
            .count();
        tokio::time::advance(Duration::from_millis(50)).await;
    }
    // Without a budget: 6 upstream attempts per request (3 tries × 2 members).
    // First attempts, plus 20 % of them, plus the floor of 3 a second over
    // the time it took, plus the burst a quiet pool saved up.
    let bound = first as f64 * 1.2 + 3.0 * start.elapsed().as_secs_f64() + 10.0;
    assert!(
        (upstream as f64) <= bound,
        "{upstream} upstream attempts for {first} requests (bound {bound})"
    );
    assert!(refused > 0, "the attempts say when the budget refused");
}

#[tokio::test(start_paused = true)]
async fn a_direct_provider_model_call_counts_against_the_members_limit() {
    let rig = Rig::new(policy(0, 1, 1000), &[("a", "a", Some(1))]);
    assert_eq!(rig.call(None).await.expect("a"), o(&[("a", O::Ok)]));
    let (e, attempts) = rig
        .call_model("mock/a", None)
        .await
        .expect_err("the same upstream, the same limit");
    assert_eq!(attempts, o(&[("a", O::SkippedQuota)]), "as member a");
    assert_eq!(
        tonic::Status::from(e).code(),
        tonic::Code::ResourceExhausted
    );
    assert!(
        rig.call_model("mock/other", None).await.is_ok(),
        "a model without limits is free"
    );
}

/// A rate limit (429) or a refused credential (401) benches a member at
/// once, below the pool's failure threshold; when the bench is over, one
/// request probes it while the others keep away, and after the probe's
/// success the member ramps back up instead of taking all traffic at once.
#[tokio::test(start_paused = true)]
async fn a_rate_limit_or_auth_bench_ends_with_one_probe_then_the_ramp() {
    for (fault, bench) in [
        ("a?status=429&retry_after=2", Duration::from_secs(2)),
        ("a?status=401", Duration::from_secs(300)),
    ] {
        let rig = Rig::new(policy(0, 5, 1000), &[("a", fault, None), ("b", "b", None)]);
        let first = rig.call(None).await.expect("b serves");
        assert_eq!(first[1], ("b".into(), O::Ok), "{fault}");
        tokio::time::advance(bench).await;
        // a answers again, slowly: the probe is in flight while others come.
        rig.reconfigure(&[("a", "a?delay_ms=500", None), ("b", "b", None)]);
        let probe = rig.call(None);
        let others = async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let mut firsts = Vec::new();
            for _ in 0..5 {
                firsts.push(rig.call(None).await.expect("served")[0].clone());
            }
            firsts
        };
        let (probe, others) = tokio::join!(probe, others);
        assert_eq!(
            probe.expect("the probe"),
            o(&[("a", O::Ok)]),
            "{fault}: one request probes"
        );
        assert_eq!(
            others,
            vec![("a".to_owned(), O::SkippedBenched); 5],
            "{fault}: the others keep away while it probes"
        );
        // Back from the bench: a small share at first, all of it after the ramp.
        rig.reconfigure(&[("a", "a", None), ("b", "b", None)]);
        let mut first_a = 0;
        for _ in 0..200 {
            first_a += usize::from(rig.call(None).await.expect("served")[0].0 == "a");
        }
        assert!(
            first_a < 100,
            "{fault}: ramping, a got {first_a} of 200 first"
        );
        tokio::time::advance(Duration::from_secs(4)).await;
        assert_eq!(
            rig.call(None).await.expect("a"),
            o(&[("a", O::Ok)]),
            "{fault}: fully back"
        );
    }
}
