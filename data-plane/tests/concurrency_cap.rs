//! A member's `max_concurrency` over real workers and real Redis: three
//! workers lease shares of one cap, so the fake upstream never sees more
//! than the cap in flight; a request that finds every member at its cap
//! waits in its pool's queue or is refused with RESOURCE_EXHAUSTED and a
//! retry hint, and a member without a cap takes the overflow. A killed
//! worker's share returns when its lease expires; with Redis frozen the
//! shares lapse to an even split; the lease runs on a Redis Cluster too.
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

/// `n` calls at once, spread over `ws`, each with a 10 s deadline.
async fn burst_of(
    n: usize,
    ws: &[ServerProc],
    model: &str,
) -> Vec<Result<pb::GenerateResponse, tonic::Status>> {
    let mut calls = Vec::new();
    for i in 0..n {
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

/// Waits (bounded) until `n` workers hold a record of `member`'s slots;
/// returns how many do.
async fn until_leased(prefix: &RedisPrefix, member: &str, n: usize) -> usize {
    until_leased_on(&redis_url(), prefix, member, n).await
}

async fn until_leased_on(url: &str, prefix: &RedisPrefix, member: &str, n: usize) -> usize {
    let client = redis::Client::open(url).expect("url");
    let mut c = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let key = switchyard_shared::keys::RedisKeys::new(prefix.0.clone()).member_slots(member);
    let mut held = 0;
    for _ in 0..50 {
        let records: Vec<(String, String)> = redis::cmd("HGETALL")
            .arg(&key)
            .query_async(&mut c)
            .await
            .expect("HGETALL");
        held = records.len();
        if held == n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    held
}

async fn burst(ws: &[ServerProc], model: &str) -> Vec<Result<pb::GenerateResponse, tonic::Status>> {
    burst_of(30, ws, model).await
}

/// One capped member "capped" (cap `cap`, slow) in pool "p".
fn capped_pool(up: &FakeUpstream, cap: u32) -> Config {
    up.set_fault("capped", slow());
    let mut config = Config::default();
    config
        .provider("up", pb::ProviderKind::Openai, &up.base_url(), None)
        .pool(
            "p",
            pb::Strategy::RoundRobin,
            policy(0, 100, 1000),
            &[("up", "capped", 0)],
        )
        .member_max_concurrency("p", "capped", cap);
    config
}

#[tokio::test]
async fn three_workers_never_exceed_a_members_cap_and_refuse_with_a_retry_hint() {
    let up = fake().await;
    let prefix = RedisPrefix::new();
    capped_pool(&up, 4)
        .publish(&redis_url(), &prefix, 1, true)
        .await;
    // A short queue: some of the burst waits, the rest is refused at once.
    let ws = workers(3, &prefix, &[("SWITCHYARD_ADMISSION_QUEUE", "3")]).await;
    assert_eq!(until_leased(&prefix, "p-capped", 3).await, 3);

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

    let models = client(&ws[0])
        .await
        .list_models(pb::ListModelsRequest {})
        .await
        .expect("list models")
        .into_inner();
    let member = models
        .models
        .iter()
        .filter(|m| m.name == "p")
        .flat_map(|m| &m.members)
        .find(|m| m.member_id == "p-capped")
        .expect("listed");
    assert_eq!(member.max_concurrency, Some(4), "ListModels shows the cap");

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
    assert_eq!(until_leased(&prefix, "lb-capped", 3).await, 3);

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

#[tokio::test]
async fn a_killed_workers_share_returns_to_the_others_when_its_lease_expires() {
    let up = fake().await;
    let prefix = RedisPrefix::new();
    capped_pool(&up, 2)
        .publish(&redis_url(), &prefix, 1, true)
        .await;
    // No queue: a call finds a slot here at once or is refused.
    let mut ws = workers(2, &prefix, &[("SWITCHYARD_ADMISSION_QUEUE", "0")]).await;
    let b = ws.pop().expect("two");
    let a = ws.pop().expect("two");
    assert_eq!(
        until_leased(&prefix, "p-capped", 2).await,
        2,
        "both workers hold a share"
    );
    // Both hold a share: b alone cannot serve two at once.
    let mut split = false;
    for _ in 0..20 {
        let r = burst_of(2, std::slice::from_ref(&b), "p").await;
        if r.iter().any(Result::is_err) {
            split = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(split, "b holds only part of the cap while a lives");
    // kill -9: a's record stays in Redis until it expires.
    drop(a);
    let killed = std::time::Instant::now();
    let mut whole = None;
    while killed.elapsed() < Duration::from_secs(10) {
        let r = burst_of(2, std::slice::from_ref(&b), "p").await;
        if r.iter().all(Result::is_ok) {
            whole = Some(killed.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let whole = whole.expect("the killed worker's share came back");
    eprintln!("b holds the whole cap {whole:?} after the kill");
    assert!(
        whole >= Duration::from_secs(2),
        "a's share stays held until its lease expires (3 s), never over the cap: {whole:?}"
    );
    assert!(up.max_in_flight("capped") <= 2);
}

#[tokio::test]
async fn on_a_redis_cluster_the_cap_holds_across_workers() {
    let cluster = switchyard_testkit::RedisCluster::start().await;
    let url = cluster.urls().join(",");
    let redis = switchyard_shared::redis_client::RedisConfig {
        url: url.clone(),
        cluster: true,
        ca_file: None,
    };
    let up = fake().await;
    let prefix = RedisPrefix::new();
    capped_pool(&up, 2)
        .publish_to(&redis, &prefix, 1, true)
        .await;
    let env = [("SWITCHYARD_REDIS_CLUSTER", "true")];
    let mut ws = Vec::new();
    for _ in 0..2 {
        ws.push(worker(&url, &prefix, &env).await);
    }
    for w in &ws {
        wait_revision(w, 1).await;
    }
    let results = burst_of(10, &ws, "p").await;
    let served = results.iter().filter(|r| r.is_ok()).count();
    for r in &results {
        if let Err(s) = r {
            assert_eq!(s.code(), Code::ResourceExhausted, "{s:?}");
        }
    }
    eprintln!(
        "cluster: served {served} of 10, max in flight {}",
        up.max_in_flight("capped")
    );
    assert!(
        up.max_in_flight("capped") <= 2,
        "the shares are leased on the cluster: {} in flight",
        up.max_in_flight("capped")
    );
    assert!(served >= 2);
}

#[tokio::test]
async fn a_stream_holds_its_slot_until_it_ends_and_the_door_answers_429_with_retry_after() {
    let up = fake().await;
    let prefix = RedisPrefix::new();
    capped_pool(&up, 1)
        .publish(&redis_url(), &prefix, 1, true)
        .await;
    let ws = workers(
        1,
        &prefix,
        &[
            ("SWITCHYARD_ADMISSION_QUEUE", "0"),
            ("SWITCHYARD_HTTP_LISTEN", "127.0.0.1:0"),
        ],
    )
    .await;
    let w = &ws[0];
    assert_eq!(until_leased(&prefix, "p-capped", 1).await, 1);

    // A stream that stalls after its first chunk holds the only slot.
    up.set_fault("capped", Fault::StallAfter(1));
    let mut stream = client(w)
        .await
        .generate_stream(ask("p", "hold on"))
        .await
        .expect("stream opens")
        .into_inner();
    let first = tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("first event in time")
        .expect("first event");
    assert!(first.is_some());
    up.set_fault("capped", slow());
    let refused = client(w)
        .await
        .generate(ask("p", "now?"))
        .await
        .expect_err("the stream holds the slot");
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    // The caller leaves: the stream ends, its slot comes back.
    drop(stream);
    let mut served = false;
    for _ in 0..50 {
        if client(w).await.generate(ask("p", "now")).await.is_ok() {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(served, "the ended stream's slot came back");

    // Over HTTP: three at once, one slot, no queue: 429 with Retry-After.
    let base = format!("http://{}", http_addr(w).await);
    let http = reqwest::Client::new();
    let calls: Vec<_> = (0..3)
        .map(|_| {
            let req = http
                .post(format!("{base}/v1/chat/completions"))
                .json(&serde_json::json!({
                    "model": "p",
                    "messages": [{"role": "user", "content": "hi"}],
                }));
            tokio::spawn(async move { req.send().await.expect("the door answers") })
        })
        .collect();
    let mut statuses = Vec::new();
    for c in calls {
        let r = c.await.expect("join");
        if r.status() == 429 {
            let after: u64 = r
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
                .expect("a Retry-After");
            assert!(after >= 1);
            let body: serde_json::Value = r.json().await.expect("json");
            assert_eq!(body["error"]["type"], "rate_limit_error");
            statuses.push(429);
        } else {
            statuses.push(r.status().as_u16());
        }
    }
    statuses.sort_unstable();
    assert_eq!(statuses, vec![200, 429, 429], "one slot, the rest refused");
    assert!(up.max_in_flight("capped") <= 1);

    let text = scrape(w).await;
    assert!(
        sample(
            &text,
            "switchyard_admissions_refused_total",
            &[("pool", "p")]
        )
        .is_some_and(|n| n >= 3.0),
        "refusals are counted"
    );
    assert_eq!(
        sample(&text, "switchyard_admission_queue_length", &[("pool", "p")]),
        Some(0.0)
    );
    assert!(
        sample(
            &text,
            "switchyard_attempts_total",
            &[("pool", "p"), ("outcome", "skipped_busy")]
        )
        .is_some_and(|n| n >= 3.0)
    );
}

#[tokio::test]
async fn with_redis_frozen_shares_lapse_to_the_cap_over_the_workers_last_seen_at_least_one() {
    let up = fake().await;
    let redis = PrivateRedis::start().await;
    let prefix = RedisPrefix::new();
    capped_pool(&up, 1)
        .publish(&redis.url(), &prefix, 1, true)
        .await;
    let env = [("SWITCHYARD_ADMISSION_QUEUE", "0")];
    let ws = [
        worker(&redis.url(), &prefix, &env).await,
        worker(&redis.url(), &prefix, &env).await,
    ];
    for w in &ws {
        wait_revision(w, 1).await;
    }
    assert_eq!(
        until_leased_on(&redis.url(), &prefix, "p-capped", 2).await,
        2
    );
    // One call on each worker at once: served as far as the shares go.
    let round = || async {
        burst_of(2, &ws, "p")
            .await
            .iter()
            .filter(|r| r.is_ok())
            .count()
    };
    let mut one = false;
    for _ in 0..50 {
        let n = round().await;
        assert!(n <= 1, "one slot fleet-wide while Redis answers: {n}");
        if n == 1 {
            one = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(one, "a worker holds the slot");

    redis.freeze();
    let frozen = std::time::Instant::now();
    let mut lapsed = None;
    while frozen.elapsed() < Duration::from_secs(10) {
        if round().await == 2 {
            lapsed = Some(frozen.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let lapsed = lapsed.expect("the shares lapse to max(1, cap / 2 workers)");
    eprintln!("shares lapsed {lapsed:?} after Redis froze");
    assert!(
        lapsed >= Duration::from_secs(2),
        "a share is kept until its lease lapses (3 s): {lapsed:?}"
    );
    redis.thaw();
    // Back to one slot fleet-wide once the leases answer again.
    one = false;
    for _ in 0..50 {
        if round().await == 1 {
            one = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(one, "the leases hold the cap again");
}
