//! Live signals over real workers and real Redis: LEAST_BUSY spreads by the
//! fleet's in-flight, a killed worker's load expires with its heartbeat,
//! LATENCY steers away from a slow member, and a request whose time left is
//! shorter than a member's p90 time to first token skips it.
// Tests spawn callers freely.
#![allow(clippy::disallowed_methods)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use switchyard_proto::v1 as pb;
use tonic::Code;

/// The member's in-flight count as `w`'s ListModels shows it.
async fn in_flight(w: &ServerProc, pool: &str, member: &str) -> u32 {
    let models = client(w)
        .await
        .list_models(pb::ListModelsRequest {})
        .await
        .expect("list models")
        .into_inner();
    models
        .models
        .iter()
        .filter(|m| m.name == pool)
        .flat_map(|m| &m.members)
        .find(|m| m.member_id == member)
        .map_or(0, |m| m.in_flight)
}

/// Polls (bounded: `secs`) until `f` of the member's in-flight holds.
async fn until_in_flight(
    w: &ServerProc,
    pool: &str,
    member: &str,
    secs: u64,
    f: impl Fn(u32) -> bool,
) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(secs) {
        if f(in_flight(w, pool, member).await) {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

#[tokio::test]
async fn least_busy_gives_a_slow_member_no_more_than_its_share_across_two_workers() {
    let up = fake().await;
    up.set_fault("slow", Fault::DelayFirstByte(Duration::from_millis(1500)));
    let prefix = RedisPrefix::new();
    let mut config = Config::default();
    config
        .provider("up", pb::ProviderKind::Openai, &up.base_url(), None)
        .pool(
            "lb",
            pb::Strategy::LeastBusy,
            policy(0, 100, 1000),
            &[("up", "fast", 0), ("up", "slow", 0)],
        );
    config.publish(&redis_url(), &prefix, 1, true).await;
    let workers = fleet_of(2, &prefix).await;
    // A steady stream of calls through both workers: the slow member holds
    // each request 1.5 s, so it is busy while the fast one is idle.
    let mut calls = Vec::new();
    for i in 0..40 {
        let w = &workers[i % 2];
        let mut c = client(w).await;
        calls.push(tokio::spawn(async move {
            c.generate(ask("lb", "hi")).await.map(|r| r.into_inner())
        }));
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    for c in calls {
        c.await.expect("join").expect("served");
    }
    let (fast, slow) = (up.calls("fast"), up.calls("slow"));
    assert_eq!(fast + slow, 40);
    eprintln!("least busy: fast {fast}, slow {slow} of 40");
    // Round robin would give it 20; each worker may pick it while both are
    // idle, and again while the other's report is under 250 ms old.
    assert!(
        slow <= 6,
        "least busy keeps the slow member to a small share: fast {fast}, slow {slow}"
    );
}

#[tokio::test]
async fn a_killed_workers_load_shows_on_the_other_then_expires_with_its_heartbeat() {
    let up = fake().await;
    // Held until the provider's request timeout (10 s).
    up.set_fault("hold", Fault::StallAfter(0));
    let prefix = RedisPrefix::new();
    let mut config = Config::default();
    config
        .provider("up", pb::ProviderKind::Openai, &up.base_url(), None)
        .pool(
            "p",
            pb::Strategy::LeastBusy,
            policy(0, 100, 1000),
            &[("up", "hold", 0)],
        );
    config.publish(&redis_url(), &prefix, 1, true).await;
    let mut workers = fleet_of(2, &prefix).await;
    let b = workers.pop().expect("two");
    let a = workers.pop().expect("two");
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut c = client(&a).await;
        held.push(tokio::spawn(async move {
            c.generate(ask("p", "hold on"))
                .await
                .map(|r| r.into_inner())
        }));
    }
    let seen = until_in_flight(&b, "p", "p-hold", 5, |n| n == 3).await;
    assert!(
        seen.is_some(),
        "the other worker sees worker a's 3 requests in flight"
    );
    assert_eq!(in_flight(&a, "p", "p-hold").await, 3, "and a its own");
    // kill -9: no goodbye, its last report stays in Redis.
    drop(a);
    let gone = until_in_flight(&b, "p", "p-hold", 8, |n| n == 0)
        .await
        .expect("the killed worker's load expires");
    assert!(
        gone >= Duration::from_secs(2),
        "counted until its heartbeat expires (3 s), not dropped at once: {gone:?}"
    );
    for h in held {
        let _ = h.await;
    }
}

#[tokio::test]
async fn latency_sends_a_small_share_to_the_slow_member_after_warm_up() {
    let up = fake().await;
    up.set_fault("slow", Fault::DelayFirstByte(Duration::from_millis(300)));
    let prefix = RedisPrefix::new();
    let mut config = Config::default();
    config
        .provider("up", pb::ProviderKind::Openai, &up.base_url(), None)
        .pool(
            "lat",
            pb::Strategy::Latency,
            policy(0, 100, 1000),
            &[("up", "fast", 0), ("up", "slow", 0)],
        );
    config.publish(&redis_url(), &prefix, 1, true).await;
    let w = worker(&redis_url(), &prefix, &[]).await;
    wait_revision(&w, 1).await;
    let mut c = client(&w).await;
    for _ in 0..6 {
        c.generate(ask("lat", "warm up")).await.expect("served");
    }
    let slow_before = up.calls("slow");
    for _ in 0..40 {
        c.generate(ask("lat", "hi")).await.expect("served");
    }
    let slow = up.calls("slow") - slow_before;
    eprintln!("latency: slow {slow} of 40 after warm-up");
    assert!(
        slow * 5 < 40,
        "the slow member gets under 20 % after warm-up: {slow} of 40"
    );
    // ListModels shows what the choice was made on.
    let models = c
        .list_models(pb::ListModelsRequest {})
        .await
        .expect("list")
        .into_inner();
    let members: Vec<_> = models
        .models
        .iter()
        .filter(|m| m.name == "lat")
        .flat_map(|m| m.members.clone())
        .collect();
    let ttft = |id: &str| {
        members
            .iter()
            .find(|m| m.member_id == id)
            .map_or(0.0, |m| m.ttft_ms)
    };
    assert!(ttft("lat-slow") >= 250.0, "{members:?}");
    assert!(
        ttft("lat-fast") > 0.0 && ttft("lat-fast") < 250.0,
        "{members:?}"
    );
    // And so do the metrics, read at scrape time.
    let text = scrape(&w).await;
    let slow_ttft = sample(
        &text,
        "switchyard_member_ttft_seconds",
        &[("pool", "lat"), ("member", "lat-slow")],
    );
    assert!(slow_ttft.is_some_and(|s| s >= 0.25), "{slow_ttft:?}");
    let in_flight = sample(
        &text,
        "switchyard_member_in_flight",
        &[("pool", "lat"), ("member", "lat-fast")],
    );
    assert_eq!(in_flight, Some(0.0));
    assert!(
        sample(
            &text,
            "switchyard_member_latency_seconds",
            &[("pool", "lat"), ("member", "lat-fast")]
        )
        .is_some()
    );
}

#[tokio::test]
async fn a_member_too_slow_for_the_time_left_is_skipped_and_the_caller_hears_at_once() {
    let up = fake().await;
    up.set_fault("slow", Fault::DelayFirstByte(Duration::from_millis(800)));
    let prefix = RedisPrefix::new();
    let mut config = Config::default();
    config
        .provider("up", pb::ProviderKind::Openai, &up.base_url(), None)
        .pool(
            "p",
            pb::Strategy::Priority,
            policy(0, 100, 1000),
            &[("up", "slow", 10), ("up", "fast", 0)],
        )
        .pool(
            "only",
            pb::Strategy::Priority,
            policy(0, 100, 1000),
            &[("up", "slow", 0)],
        );
    config.publish(&redis_url(), &prefix, 1, true).await;
    let w = worker(&redis_url(), &prefix, &[]).await;
    wait_revision(&w, 1).await;
    let mut c = client(&w).await;
    // With no history, a short deadline still tries the slow member.
    let err = c
        .generate(with_timeout(ask("only", "hi"), Duration::from_millis(400)))
        .await
        .expect_err("cut by the deadline");
    assert_eq!(err.code(), Code::DeadlineExceeded);
    let attempts = |md: &tonic::metadata::MetadataMap| {
        md.get("x-switchyard-attempts")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(attempts(err.metadata()), "only-slow:deadline");
    // History: the slow member answers in 800 ms.
    for _ in 0..3 {
        c.generate(ask("p", "hi")).await.expect("served");
    }
    let before = up.calls("slow");
    // Time left (400 ms) is under its p90: skipped, the fast member serves.
    let ok = c
        .generate(with_timeout(ask("p", "hi"), Duration::from_millis(400)))
        .await
        .expect("the fast member serves")
        .into_inner();
    assert_eq!(
        outcomes(&ok.attempts),
        vec![
            ("slow".to_owned(), pb::AttemptOutcome::SkippedSlow),
            ("fast".to_owned(), pb::AttemptOutcome::Ok)
        ]
    );
    // Nothing but the slow member: DEADLINE_EXCEEDED at once, nothing sent.
    let start = Instant::now();
    let err = c
        .generate(with_timeout(ask("only", "hi"), Duration::from_millis(400)))
        .await
        .expect_err("hopeless");
    assert_eq!(err.code(), Code::DeadlineExceeded);
    assert!(
        start.elapsed() < Duration::from_millis(300),
        "told before the deadline passed: {:?}",
        start.elapsed()
    );
    assert_eq!(attempts(err.metadata()), "only-slow:skipped_slow");
    assert_eq!(up.calls("slow"), before, "no hopeless attempt was sent");
}

#[tokio::test]
async fn a_draining_member_gets_no_new_requests_and_shows_its_in_flight_until_zero() {
    let up = fake().await;
    up.set_fault("a", Fault::DelayFirstByte(Duration::from_millis(2500)));
    let prefix = RedisPrefix::new();
    let mut config = Config::default();
    config
        .provider("up", pb::ProviderKind::Openai, &up.base_url(), None)
        .pool(
            "p",
            pb::Strategy::LeastBusy,
            policy(0, 100, 1000),
            &[("up", "a", 0), ("up", "b", 0)],
        );
    // By weight a could take 100 times b's load: least busy prefers it
    // as soon as b has one request in flight.
    config.snap.pools[0].members[0].weight = 100;
    config.publish(&redis_url(), &prefix, 1, true).await;
    let w = worker(&redis_url(), &prefix, &[]).await;
    wait_revision(&w, 1).await;
    // Least busy: two calls at once take one member each; a holds its own.
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut c = client(&w).await;
        held.push(tokio::spawn(async move {
            c.generate(ask("p", "hi")).await.map(|r| r.into_inner())
        }));
    }
    assert!(
        until_in_flight(&w, "p", "p-a", 5, |n| n == 1)
            .await
            .is_some()
    );
    config.member_status("p", "a", pb::MemberStatus::Draining);
    config.publish(&redis_url(), &prefix, 2, true).await;
    wait_revision(&w, 2).await;
    assert_eq!(
        in_flight(&w, "p", "p-a").await,
        1,
        "the draining member's request is still in flight, and shown"
    );
    // Concurrent calls keep b busy, so by load alone a (1/100) would win;
    // a draining member still gets nothing new.
    up.set_fault("b", Fault::DelayFirstByte(Duration::from_millis(300)));
    let before = up.calls("a");
    let mut calls = Vec::new();
    for _ in 0..10 {
        let mut c = client(&w).await;
        calls.push(tokio::spawn(async move {
            c.generate(ask("p", "hi")).await.map(|r| r.into_inner())
        }));
    }
    for c in calls {
        c.await.expect("join").expect("served by b");
    }
    assert_eq!(up.calls("a"), before, "no new request to a draining member");
    assert!(
        until_in_flight(&w, "p", "p-a", 8, |n| n == 0)
            .await
            .is_some(),
        "its in-flight reaches 0 when its request ends"
    );
    for h in held {
        h.await.expect("join").expect("both served");
    }
}

#[tokio::test]
async fn a_stream_counts_in_flight_until_it_ends_not_until_its_first_chunk() {
    let up = fake().await;
    // Two chunks, then silence: the stream is committed and stays open.
    up.set_fault("m", Fault::StallAfter(2));
    let prefix = RedisPrefix::new();
    let mut config = Config::default();
    config
        .provider("up", pb::ProviderKind::Openai, &up.base_url(), None)
        .pool(
            "p",
            pb::Strategy::LeastBusy,
            policy(0, 100, 1000),
            &[("up", "m", 0)],
        );
    config.publish(&redis_url(), &prefix, 1, true).await;
    let w = worker(&redis_url(), &prefix, &[]).await;
    wait_revision(&w, 1).await;
    let mut c = client(&w).await;
    let mut stream = c
        .generate_stream(ask("p", "hi"))
        .await
        .expect("stream opens")
        .into_inner();
    // Past the first chunk: the attempt is over, the stream is not.
    let mut chunks = 0;
    while chunks < 2 {
        let ev = stream.message().await.expect("event").expect("open");
        if matches!(
            ev.event,
            Some(pb::generate_stream_event::Event::TextDelta(_))
        ) {
            chunks += 1;
        }
    }
    assert_eq!(in_flight(&w, "p", "p-m").await, 1, "the open stream counts");
    // The caller leaves: the pump ends, and its hold with it.
    drop(stream);
    assert!(
        until_in_flight(&w, "p", "p-m", 5, |n| n == 0)
            .await
            .is_some(),
        "a stream the caller left no longer counts"
    );
}

#[tokio::test]
async fn least_busy_on_one_worker_avoids_a_member_busy_on_another() {
    let up = fake().await;
    // Held until the provider's first-byte timeout (3 s), then served by fast.
    up.set_fault("slow", Fault::DelayFirstByte(Duration::from_secs(6)));
    let prefix = RedisPrefix::new();
    let mut config = Config::default();
    config
        .provider("up", pb::ProviderKind::Openai, &up.base_url(), None)
        .pool(
            "lb",
            pb::Strategy::LeastBusy,
            policy(0, 100, 1000),
            &[("up", "fast", 0), ("up", "slow", 0)],
        );
    config.publish(&redis_url(), &prefix, 1, true).await;
    let workers = fleet_of(2, &prefix).await;
    let (a, b) = (&workers[0], &workers[1]);
    // Worker a sends until the slow member holds one of its requests.
    let mut held = Vec::new();
    for _ in 0..20 {
        if in_flight(a, "lb", "lb-slow").await > 0 {
            break;
        }
        let mut c = client(a).await;
        held.push(tokio::spawn(async move {
            c.generate(ask("lb", "hi")).await.map(|r| r.into_inner())
        }));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        until_in_flight(b, "lb", "lb-slow", 5, |n| n >= 1)
            .await
            .is_some(),
        "worker b sees a's request in flight at the slow member"
    );
    // Worker b, idle itself, sends everything to the member idle fleet-wide
    // (by its own counts alone, ties would rotate half of them to slow).
    let before = up.calls("slow");
    let mut c = client(b).await;
    for _ in 0..10 {
        c.generate(ask("lb", "hi")).await.expect("served");
    }
    assert_eq!(
        up.calls("slow"),
        before,
        "b sent nothing to the busy member"
    );
    for h in held {
        h.await.expect("join").expect("served");
    }
}

#[tokio::test]
async fn on_a_redis_cluster_one_workers_load_reaches_the_other() {
    let cluster = switchyard_testkit::RedisCluster::start().await;
    let url = cluster.urls().join(",");
    let redis = RedisConfig {
        url: url.clone(),
        cluster: true,
        ca_file: None,
    };
    let up = fake().await;
    up.set_fault("hold", Fault::StallAfter(0));
    let prefix = RedisPrefix::new();
    let mut config = Config::default();
    config
        .provider("up", pb::ProviderKind::Openai, &up.base_url(), None)
        .pool(
            "p",
            pb::Strategy::LeastBusy,
            policy(0, 100, 1000),
            &[("up", "hold", 0)],
        );
    config.publish_to(&redis, &prefix, 1, true).await;
    let env = [("SWITCHYARD_REDIS_CLUSTER", "true")];
    let a = worker(&url, &prefix, &env).await;
    let b = worker(&url, &prefix, &env).await;
    wait_revision(&a, 1).await;
    wait_revision(&b, 1).await;
    let mut c = client(&a).await;
    let held = tokio::spawn(async move { c.generate(ask("p", "hold on")).await.map(|_| ()) });
    assert!(
        until_in_flight(&b, "p", "p-hold", 5, |n| n == 1)
            .await
            .is_some(),
        "b sees a's request over the cluster"
    );
    held.abort();
}
