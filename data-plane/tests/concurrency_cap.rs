//! A member's `max_concurrency` over real workers and real Redis: three
//! workers lease shares of one cap, so the fake upstream never sees more
//! than the cap in flight; a request that finds every member at its cap
//! waits in its pool's queue or is refused with RESOURCE_EXHAUSTED and a
//! retry hint, and a member without a cap takes the overflow.
// Tests spawn callers freely.
#![allow(clippy::disallowed_methods)]

mod common;

use std::time::Duration;

use common::*;
use switchyard_proto::v1 as pb;
use tonic::Code;

/// Each call holds its member this long before answering.
const LATENCY: Duration = Duration::from_millis(400);

fn slow() -> Fault {
    Fault::Latency {
        ttft: LATENCY,
        knee: usize::MAX,
        slow: LATENCY,
    }
}

/// `n` workers on `prefix` started with `env`, each serving revision 1,
/// with their shares leased.
async fn workers(n: usize, prefix: &RedisPrefix, env: &[(&str, &str)]) -> Vec<ServerProc> {
    let mut ws = Vec::new();
    for _ in 0..n {
        ws.push(worker(&redis_url(), prefix, env).await);
    }
    for w in &ws {
        wait_revision(w, 1).await;
    }
    assert_eq!(
        until_live_workers(&redis_url(), prefix, n as u64).await,
        n as u64
    );
    ws
}

/// 30 calls at once, spread over `ws`, each with a 10 s deadline.
async fn burst(ws: &[ServerProc], model: &str) -> Vec<Result<pb::GenerateResponse, tonic::Status>> {
    let mut calls = Vec::new();
    for i in 0..30 {
        let mut c = client(&ws[i % ws.len()]).await;
        let model = model.to_owned();
        calls.push(tokio::spawn(async move {
            c.generate(with_timeout(ask(&model, "hi"), Duration::from_secs(10)))
                .await
                .map(|r| r.into_inner())
        }));
    }
    let mut out = Vec::new();
    for c in calls {
        out.push(c.await.expect("join"));
    }
    out
}

#[tokio::test]
async fn three_workers_never_exceed_a_members_cap_and_refuse_with_a_retry_hint() {
    let up = fake().await;
    up.set_fault("capped", slow());
    let prefix = RedisPrefix::new();
    let mut config = Config::default();
    config
        .provider("up", pb::ProviderKind::Openai, &up.base_url(), None)
        .pool(
            "p",
            pb::Strategy::RoundRobin,
            policy(0, 100, 1000),
            &[("up", "capped", 0)],
        )
        .member_max_concurrency("p", "capped", 4);
    config.publish(&redis_url(), &prefix, 1, true).await;
    // A short queue: some of the burst waits, the rest is refused at once.
    let ws = workers(3, &prefix, &[("SWITCHYARD_ADMISSION_QUEUE", "3")]).await;

    let results = burst(&ws, "p").await;
    let mut served = 0;
    let mut refused = 0;
    for r in &results {
        match r {
            Ok(resp) => {
                served += 1;
                assert_eq!(
                    resp.served_by.as_ref().map(|s| s.member_id.as_str()),
                    Some("p-capped")
                );
            }
            Err(s) => {
                assert_eq!(
                    s.code(),
                    Code::ResourceExhausted,
                    "only refused for want of a slot: {s:?}"
                );
                assert!(
                    s.message().contains("concurrency cap"),
                    "the message says why: {}",
                    s.message()
                );
                let hint: u64 = s
                    .metadata()
                    .get("grpc-retry-pushback-ms")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse().ok())
                    .expect("a retry hint");
                assert!(hint >= 100, "hint {hint} ms");
                refused += 1;
            }
        }
    }
    eprintln!(
        "served {served}, refused {refused}; max in flight {}",
        up.max_in_flight("capped")
    );
    assert_eq!(served + refused, 30);
    assert!(
        up.max_in_flight("capped") <= 4,
        "the cap holds across the fleet: {} in flight",
        up.max_in_flight("capped")
    );
    assert!(
        served >= 4,
        "queued requests are served as slots free: {served}"
    );
    assert!(refused > 0, "a full queue refuses");
    assert_eq!(up.calls("capped"), served as u64);

    // Once the burst is over every slot is back: each worker serves again.
    for w in &ws {
        let mut c = client(w).await;
        c.generate(with_timeout(ask("p", "again"), Duration::from_secs(10)))
            .await
            .expect("a slot came back");
    }
}

#[tokio::test]
async fn under_least_busy_a_member_without_a_cap_takes_the_overflow() {
    let up = fake().await;
    up.set_fault("capped", slow());
    up.set_fault("open", slow());
    let prefix = RedisPrefix::new();
    let mut config = Config::default();
    config
        .provider("up", pb::ProviderKind::Openai, &up.base_url(), None)
        .pool(
            "lb",
            pb::Strategy::LeastBusy,
            policy(0, 100, 1000),
            &[("up", "capped", 0), ("up", "open", 0)],
        )
        .member_max_concurrency("lb", "capped", 4);
    config.publish(&redis_url(), &prefix, 1, true).await;
    let ws = workers(3, &prefix, &[]).await;

    let results = burst(&ws, "lb").await;
    let mut busy_skips = 0;
    for r in &results {
        let resp = r
            .as_ref()
            .expect("served: the open member takes the overflow");
        busy_skips += outcomes(&resp.attempts)
            .iter()
            .filter(|(_, o)| *o == pb::AttemptOutcome::SkippedBusy)
            .count();
    }
    let (capped, open) = (up.calls("capped"), up.calls("open"));
    eprintln!(
        "capped {capped} (max in flight {}), open {open}; busy skips {busy_skips}",
        up.max_in_flight("capped")
    );
    assert_eq!(capped + open, 30);
    assert!(
        up.max_in_flight("capped") <= 4,
        "the cap holds across the fleet: {} in flight",
        up.max_in_flight("capped")
    );
    assert!(capped >= 1, "the capped member serves its share");
    assert!(open > 4, "the open member takes the overflow: {open}");
}
