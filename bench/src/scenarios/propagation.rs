//! l: how fast a bench decided by one worker reaches another. Two workers, A
//! and B, on their own prefix (only pool `prop`, so each ListModels stays
//! small whatever `--extra-pools` is). Pool `prop` (PRIORITY) holds `bad`
//! first, whose model id makes it answer 503, then a healthy member; failover
//! policy: no retries, benched after one failure, constant cooldown.
//!
//! A trial: wait until both workers show `bad` available; call A once (it
//! fails on `bad`, fails over and succeeds: two attempts); from the moment
//! A's answer arrives, poll B's ListModels back to back until B reports `bad`
//! unavailable. The propagation time runs from A's answer to that report; its
//! floor is one ListModels round trip (reported too). A trial that does not
//! converge within `--prop-timeout-ms` is a miss.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use switchyard_shared::keys::RedisKeys;
use tokio::time::{Instant, timeout};

use super::Bench;
use super::overhead::{A_DIRECT, ensure_direct_unary};
use crate::calls::{Client, Ctx, direct_status, member_available, worker_unary};
use crate::config::{self, BAD_MODEL};
use crate::procs::Worker;
use crate::report::{Row, goal};
use crate::stats::{Run, micros};

const L_CALL: &str = "l prop: A call (fails over)";
const L_POLL: &str = "l prop: B ListModels poll";
const L_PROP: &str = "l prop: propagation A -> B";

/// Polls both workers (1 ms apart) until `bad` is available on both, within `max`.
async fn until_available(workers: [&Client; 2], bad: &str, max: Duration) -> Result<(), String> {
    let deadline = Instant::now() + max;
    loop {
        let mut all = true;
        for w in workers {
            all &= member_available(w, "prop", bad).await?;
        }
        if all {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("`bad` still benched {} ms after the trial", max.as_millis()));
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

struct Trials {
    call: Run,
    poll: Run,
    prop: Run,
}

/// One trial: A's call, then B's polls; records into `t`.
async fn trial(a: &Arc<Ctx>, bgrpc: &Client, bad: &str, limit: Duration, t: &mut Trials) {
    let sent = Instant::now();
    let call = worker_unary(Arc::clone(a), "prop", 2).await;
    let answered = Instant::now();
    if let Err(e) = call {
        t.call.record(Err(e.clone()));
        t.prop.record(Err(format!("A's call did not fail over: {e}")));
        return;
    }
    t.call.record(Ok(micros(answered - sent)));
    loop {
        let asked = Instant::now();
        let seen = timeout(limit, member_available(bgrpc, "prop", bad)).await;
        let now = Instant::now();
        match seen {
            Ok(Ok(available)) => {
                t.poll.record(Ok(micros(now - asked)));
                if !available {
                    t.prop.record(Ok(micros(now - answered)));
                    return;
                }
            }
            Ok(Err(e)) => t.poll.record(Err(e)),
            Err(_) => t.poll.record(Err("ListModels timed out".into())),
        }
        if now - answered > limit {
            t.prop.record(Err(format!("B did not report `bad` benched within {} ms", limit.as_millis())));
            return;
        }
    }
}

pub async fn run(b: &mut Bench<'_>) -> Result<(), String> {
    ensure_direct_unary(b).await;
    // Today's fake upstream takes no faults from the model id; the worker's
    // MOCK provider does. Use the fake when it answers 503 to the model id.
    let bad_on_fake = direct_status(&b.ctx, BAD_MODEL).await? == 503;
    if !bad_on_fake {
        mock_built_in(&b.bin).await?;
    }
    let cooldown = b.args.prop_cooldown_ms.max(100);
    let (snap, bad) = config::prop_snapshot(&b.fake.base_url, bad_on_fake, cooldown);
    let prefix = format!("{}_prop", b.prefix);
    let mut conn = b.conn.clone();
    config::publish(&mut conn, &RedisKeys::new(prefix.as_str()), &snap).await?;
    let redis_url = b.args.redis_url.clone();
    // Benching `bad` is the point: A's "member benched" warnings are expected.
    let benched = &["member benched"];
    let wa = b.start_worker("worker-prop-a", &redis_url, &prefix, benched).await?;
    let wb = match b.start_worker("worker-prop-b", &redis_url, &prefix, benched).await {
        Ok(w) => w,
        Err(e) => {
            b.stopped.push(wa.stop().await);
            return Err(e);
        }
    };
    let counts = |ws: [&Worker; 2]| ws.iter().map(|w| w.log.counts()).fold((0, 0), |x, c| (x.0 + c.0, x.1 + c.1));
    let before = counts([&wa, &wb]);
    let t = trials(b, &wa, &wb, &bad, cooldown).await;
    let after = counts([&wa, &wb]);
    let logs = format!("{}/{}", after.0 - before.0, after.1 - before.1);
    let benched_lines = wa.log.expected() + wb.log.expected();
    b.stopped.push(wa.stop().await);
    b.stopped.push(wb.stop().await);
    let direct_p50 = b.report.run(A_DIRECT).map(|r| r.p_ms(0.5)).unwrap_or_default();
    let (call50, poll50, poll99) = (t.call.p_ms(0.5), t.poll.p_ms(0.5), t.poll.p_ms(0.99));
    let (p50, p99, ok, misses) = (t.prop.p_ms(0.5), t.prop.p_ms(0.99), t.prop.ok, t.prop.errors);
    for (name, run) in [(L_CALL, t.call), (L_POLL, t.poll), (L_PROP, t.prop)] {
        let row = Row { name: name.into(), run, logs: logs.clone(), cpu_us: None, all_cpu_us: None };
        b.report.rows.push(row);
    }
    let bad_where = if bad_on_fake { "the fake upstream" } else { "a MOCK provider (the fake ignores the fault)" };
    b.report.line(
        "bench propagation A -> B (l)",
        format!(
            "p50 {p50:.3} ms p99 {p99:.3} ms over {ok} trials, {misses} misses (goal p99 <= 10 ms: {})",
            goal(ok > 0 && misses == 0 && p99 <= 10.0)
        ),
    );
    b.report.line(
        "  beside it",
        format!(
            "B ListModels round trip p50 {poll50:.3} p99 {poll99:.3} ms (the floor); A's failover call p50 \
             {call50:.3} ms vs direct unary p50 {direct_p50:.3} ms; `{BAD_MODEL}` on {bad_where}; cooldown {cooldown} ms; \
             {benched_lines} \"member benched\" warnings (expected)"
        ),
    );
    b.report.set("propagation_p50_us", json!((p50 * 1000.0).round()));
    b.report.set("propagation_p99_us", json!((p99 * 1000.0).round()));
    b.report.set("propagation_trials", json!(ok));
    b.report.set("propagation_misses", json!(misses));
    Ok(())
}

/// `bad` on a MOCK provider needs workers with the mock upstream built in
/// (the data plane's `mock` cargo feature; its `--version` says so): one
/// without it passes `bad` over as misconfigured and never benches it.
async fn mock_built_in(bin: &Path) -> Result<(), String> {
    let worker = bin.join("switchyard-data-plane");
    let out = tokio::process::Command::new(&worker).arg("--version").output().await;
    let out = out.map_err(|e| format!("{} --version: {e}", worker.display()))?;
    if String::from_utf8_lossy(&out.stdout).contains("mock upstream built in") {
        return Ok(());
    }
    Err(format!(
        "propagation needs `{BAD_MODEL}` on a MOCK provider (the fake takes no faults from the model id), and {} \
         was built without the mock upstream: build it with `cargo build --release -p switchyard-data-plane \
         --features switchyard-data-plane/mock` (bench/README.md)",
        worker.display()
    ))
}

/// Runs the trials (one unrecorded warm-up first), bounded in count and time.
async fn trials(b: &Bench<'_>, wa: &Worker, wb: &Worker, bad: &str, cooldown: u32) -> Trials {
    let a = b.ctx.for_worker(wa.grpc.clone());
    let limit = Duration::from_millis(b.args.prop_timeout_ms);
    let settle = Duration::from_millis(u64::from(cooldown)) + limit;
    let mut t = Trials { call: Run::new(), poll: Run::new(), prop: Run::new() };
    let mut warm = Trials { call: Run::new(), poll: Run::new(), prop: Run::new() };
    trial(&a, &wb.grpc, bad, limit, &mut warm).await;
    let started = Instant::now();
    let n = b.args.prop_trials;
    let deadline = started + (settle + limit) * n.max(1);
    eprintln!("running {n} propagation trials...");
    let mut stuck = 0;
    for _ in 0..n {
        if Instant::now() > deadline {
            t.prop.record(Err("trials stopped: time bound reached".into()));
            break;
        }
        if let Err(e) = until_available([&wa.grpc, &wb.grpc], bad, settle).await {
            t.prop.record(Err(e));
            stuck += 1;
            if stuck >= 3 {
                break;
            }
            continue;
        }
        stuck = 0;
        trial(&a, &wb.grpc, bad, limit, &mut t).await;
    }
    t
}
