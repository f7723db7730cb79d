//! Limits without a Redis wait, on real workers and real Redis: each worker
//! holds a leased block of a limited member's permits (`fleet/permits.rs`),
//! so a burst never gets more than the limit fleet-wide, and a limited pool
//! with generous limits costs Redis about what an unlimited one does.
// Tests spawn callers freely and read their env overrides.
#![allow(clippy::disallowed_methods)]

mod common;

use std::time::Duration;

use common::*;
use pb::AttemptOutcome as O;
use switchyard_proto::v1 as pb;

/// Waits (at most ~10 s) until the current minute has at least 10 s left,
/// so a burst does not straddle a window boundary.
async fn away_from_minute_boundary() {
    loop {
        let s = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() % 60)
            .unwrap_or(0);
        if s < 50 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// A burst of 60 against `rpm_limit 10`, split over two workers: exactly 10
/// reach the limited member; every other request skips it without penalty
/// (`SKIPPED_QUOTA`) and is served by the spare.
#[tokio::test]
async fn a_burst_of_60_against_rpm_10_over_two_workers_gets_exactly_10() {
    let up = fake().await;
    let prefix = RedisPrefix::new();
    let mut config = Config::one_pool(
        &up.base_url(),
        pb::Strategy::Priority,
        policy(0, 100, 1000),
        &[("up", "lim", 10), ("up", "spare", 0)],
    );
    config.member_limits("p", "lim", Some(10), None);
    config.publish(&redis_url(), &prefix, 1, true).await;
    let [a, b] = <[ServerProc; 2]>::try_from(fleet_of(2, &prefix).await)
        .unwrap_or_else(|_| panic!("two workers"));
    // Both count each other (a heartbeat every 5 config checks), so each
    // sizes its blocks to its share.
    assert_eq!(until_live_workers(&redis_url(), &prefix, 2).await, 2);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    away_from_minute_boundary().await;

    let mut calls = Vec::new();
    for i in 0..60 {
        let w = if i % 2 == 0 { &a } else { &b };
        let mut c = client(w).await;
        calls.push(tokio::spawn(async move {
            c.generate(ask("p", "hi")).await.map(|r| r.into_inner())
        }));
    }
    let mut skipped = 0;
    for c in calls {
        let r = c.await.expect("join").expect("served by lim or spare");
        let o = outcomes(&r.attempts);
        if o == vec![("lim".into(), O::SkippedQuota), ("spare".into(), O::Ok)] {
            skipped += 1;
        } else {
            assert_eq!(o, vec![("lim".into(), O::Ok)]);
        }
    }
    assert_eq!(up.calls("lim"), 10, "exactly the limit, fleet-wide");
    assert_eq!(skipped, 50, "the rest skipped the member, as before");
    assert_eq!(up.calls("spare"), 50);
}

/// `total_commands_processed` of a private Redis.
async fn commands(url: &str) -> u64 {
    let client = redis::Client::open(url).expect("url");
    let mut c = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let info: String = redis::cmd("INFO")
        .arg("stats")
        .query_async(&mut c)
        .await
        .expect("INFO");
    info.lines()
        .find_map(|l| l.strip_prefix("total_commands_processed:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("total_commands_processed")
}

/// `n` requests to `model`, `concurrency` at a time, each served by `member`.
async fn load(w: &ServerProc, model: &'static str, member: &'static str, n: usize) {
    let concurrency = 8;
    let mut tasks = Vec::new();
    for k in 0..concurrency {
        let mut c = client(w).await;
        tasks.push(tokio::spawn(async move {
            for _ in (k..n).step_by(concurrency) {
                let r = c.generate(ask(model, "hi")).await.expect("served");
                assert_eq!(
                    outcomes(&r.into_inner().attempts),
                    vec![(member.into(), O::Ok)]
                );
            }
        }));
    }
    for t in tasks {
        t.await.expect("join");
    }
}

/// Redis commands (`INFO stats`, which counts the commands a script runs
/// too) over `n` requests right after a warm-up of half as many, and the
/// seconds they took.
async fn commands_over(
    w: &ServerProc,
    url: &str,
    model: &'static str,
    member: &'static str,
    n: usize,
) -> (u64, f64) {
    load(w, model, member, n / 2).await;
    let before = commands(url).await;
    let t = std::time::Instant::now();
    load(w, model, member, n).await;
    let secs = t.elapsed().as_secs_f64();
    // Each INFO is counted by the next read.
    (commands(url).await.saturating_sub(before + 1), secs)
}

/// Redis commands per request of a pool whose member has rpm and tpm limits
/// far above the traffic, at steady state, against the same traffic to an
/// unlimited member of the same worker: requests are served from the
/// worker's block and Redis sees a lease now and then. What both runs
/// share (health, heartbeat, live signals, statistics) cancels out.
#[tokio::test]
async fn a_limited_pool_costs_at_most_one_redis_command_per_20_requests() {
    let up = fake().await;
    let redis = PrivateRedis::start().await;
    let prefix = RedisPrefix::new();
    let mut config = Config::one_pool(
        &up.base_url(),
        pb::Strategy::Priority,
        policy(0, 100, 1000),
        &[("up", "lim", 0)],
    );
    config
        .member_limits("p", "lim", Some(10_000_000), Some(10_000_000_000))
        .pool(
            "free",
            pb::Strategy::Priority,
            policy(0, 100, 1000),
            &[("up", "open", 0)],
        );
    config.publish(&redis.url(), &prefix, 1, true).await;
    // Pool statistics flush once a minute, so no flush (a burst of HINCRBYs
    // by the clock) lands in one run and not the other.
    let w = worker(
        &redis.url(),
        &prefix,
        &[("SWITCHYARD_STATS_FLUSH_MS", "60000")],
    )
    .await;
    wait_revision(&w, 1).await;
    away_from_minute_boundary().await;

    let n = 1600;
    let (unlimited, open_secs) = commands_over(&w, &redis.url(), "free", "open", n).await;
    let (limited, lim_secs) = commands_over(&w, &redis.url(), "p", "lim", n).await;
    assert_eq!(up.calls("lim"), (n + n / 2) as u64);
    // The shared background (statistics flushes, heartbeats, signals) runs
    // by the clock: scaled to the limited run's length, so a slower run on a
    // busy machine is not counted against the limits.
    let background = unlimited as f64 * lim_secs / open_secs.max(0.001);
    let per_request = (limited as f64 - background).max(0.0) / n as f64;
    eprintln!(
        "Redis commands over {n} requests: limited {limited}, unlimited {unlimited}: \
         {per_request:.3} per request for the limits"
    );
    assert!(
        per_request <= 0.05,
        "{per_request:.3} Redis commands per request for the limits \
         (limited {limited}, unlimited {unlimited}, over {n} requests)"
    );
}
