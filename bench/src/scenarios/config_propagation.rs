//! m: how fast a new config revision reaches the workers. Three workers on
//! their own prefix (only pool `cfg`: three members on the fake, so each
//! ListModels stays small whatever `--extra-pools` is).
//!
//! A trial: write revision r+1 of the snapshot as the bench always does (SET
//! the snapshot, SET its revision, PUBLISH a change message, through
//! `RedisKeys`); from the instant PUBLISH returns, poll every worker's
//! ListModels back to back (one poller per worker, no sleep) until it reports
//! r+1. Per worker: the time to its first report of r+1; per trial: the time
//! until all three have it. The workers keep their default
//! `--config-check-ms` (1000): the change message is the path measured. A
//! worker that does not report r+1 within [`LIMIT`] is a miss.

use std::time::Duration;

use futures::future::join_all;
use serde_json::json;
use switchyard_proto::v1 as pb;
use switchyard_shared::keys::RedisKeys;
use tokio::time::{Instant, timeout};

use super::Bench;
use crate::calls::{Client, served_revision};
use crate::config::{self, Redis};
use crate::procs::Worker;
use crate::report::{Row, goal};
use crate::stats::{Run, micros, note};

const M_WRITE: &str = "m cfg: write SET,SET,PUBLISH";
const M_POLL: &str = "m cfg: ListModels poll";
const M_ONE: &str = "m cfg: revision -> one worker";
const M_ALL: &str = "m cfg: revision -> all three";

/// A worker that has not reported the new revision by then is a miss.
const LIMIT: Duration = Duration::from_secs(2);
/// Pause between trials (not measured), so one reload is over before the next write.
const GAP: Duration = Duration::from_millis(20);
/// The previous design, config change reaching 3 workers: p50 and p99, ms.
const BEFORE_P50_MS: f64 = 21.0;
const BEFORE_P99_MS: f64 = 39.0;

struct Trials {
    write: Run,
    poll: Run,
    one: Run,
    all: Run,
    per_worker: [Run; 3],
}

impl Trials {
    fn new() -> Self {
        let (write, poll, one, all) = (Run::new(), Run::new(), Run::new(), Run::new());
        Self { write, poll, one, all, per_worker: std::array::from_fn(|_| Run::new()) }
    }
}

/// What one worker's poller saw: the time from `published` to its first
/// report of `target` (or why not), and each poll's round trip.
struct Seen {
    time: Result<u64, String>,
    polls: Vec<Result<u64, String>>,
}

/// Polls `w`'s ListModels back to back until it serves `target`, within [`LIMIT`] of `published`.
async fn until_served(name: &str, w: &Client, target: u64, published: Instant) -> Seen {
    let deadline = published + LIMIT;
    let mut polls = Vec::new();
    loop {
        let asked = Instant::now();
        let left = deadline.saturating_duration_since(asked);
        let served = timeout(left, served_revision(w)).await;
        let now = Instant::now();
        match served {
            Ok(Ok(rev)) => {
                polls.push(Ok(micros(now - asked)));
                if rev >= target {
                    return Seen { time: Ok(micros(now - published)), polls };
                }
            }
            Ok(Err(e)) => polls.push(Err(e)),
            Err(_) => polls.push(Err("ListModels timed out".into())),
        }
        if now >= deadline {
            let time = Err(format!("{name} did not report revision {target} within {} ms", LIMIT.as_millis()));
            return Seen { time, polls };
        }
    }
}

/// One trial: publish `snap` at the next revision, then wait for every worker.
/// Returns whether all three reported it.
async fn trial(conn: &mut Redis, keys: &RedisKeys, snap: &mut pb::Snapshot, ws: &[&Worker; 3], t: &mut Trials) -> bool {
    snap.revision += 1;
    let target = snap.revision;
    let started = Instant::now();
    let written = match timeout(LIMIT, config::publish(conn, keys, snap)).await {
        Ok(r) => r,
        Err(_) => Err(format!("writing revision {target} took over {} ms", LIMIT.as_millis())),
    };
    if let Err(e) = written {
        t.write.record(Err(e.clone()));
        for r in &mut t.per_worker {
            r.record(Err(e.clone()));
            t.one.record(Err(e.clone()));
        }
        t.all.record(Err(e));
        return false;
    }
    let published = Instant::now();
    t.write.record(Ok(micros(published - started)));
    let seen = join_all(ws.iter().map(|w| until_served(&w.name, &w.grpc, target, published))).await;
    let mut all = Ok(0u64);
    for (i, s) in seen.into_iter().enumerate() {
        s.polls.into_iter().for_each(|p| t.poll.record(p));
        t.one.record(s.time.clone());
        t.per_worker[i].record(s.time.clone());
        all = match (all, s.time) {
            (Ok(a), Ok(b)) => Ok(a.max(b)),
            (Err(a), _) => Err(a),
            (Ok(_), Err(b)) => Err(b),
        };
    }
    let converged = all.is_ok();
    t.all.record(all);
    converged
}

pub async fn run(b: &mut Bench<'_>) -> Result<(), String> {
    let mut snap = config::cfg_snapshot(&b.fake.base_url);
    // Contains the bench's unique prefix: the final cleanup deletes its keys.
    let prefix = format!("{}_cfg", b.prefix);
    let keys = RedisKeys::new(prefix.as_str());
    let mut conn = b.conn.clone();
    config::publish(&mut conn, &keys, &snap).await?;
    let redis_url = b.args.redis_url.clone();
    let mut workers = Vec::new();
    for name in ["worker-cfg-1", "worker-cfg-2", "worker-cfg-3"] {
        match b.start_worker(name, &redis_url, &prefix, &[]).await {
            Ok(w) => workers.push(w),
            Err(e) => {
                for w in workers {
                    b.stopped.push(w.stop().await);
                }
                return Err(e);
            }
        }
    }
    let Ok(ws) = <[Worker; 3]>::try_from(workers) else { return Err("expected three workers".into()) };
    let counts = |ws: &[Worker; 3]| ws.iter().map(|w| w.log.counts()).fold((0, 0), |x, c| (x.0 + c.0, x.1 + c.1));
    let before = counts(&ws);
    let t = trials(b.args.config_trials, &mut conn, &keys, &mut snap, &ws).await;
    let after = counts(&ws);
    let logs = format!("{}/{}", after.0 - before.0, after.1 - before.1);
    for w in ws {
        b.stopped.push(w.stop().await);
    }
    report(b, t, &logs);
    Ok(())
}

/// One unrecorded warm-up trial, then `n`; stops after three misses in a row.
async fn trials(n: u32, conn: &mut Redis, keys: &RedisKeys, snap: &mut pb::Snapshot, ws: &[Worker; 3]) -> Trials {
    let ws = [&ws[0], &ws[1], &ws[2]];
    trial(conn, keys, snap, &ws, &mut Trials::new()).await;
    eprintln!("running {n} config-propagation trials...");
    let mut t = Trials::new();
    let mut missed = 0;
    for _ in 0..n {
        tokio::time::sleep(GAP).await;
        if trial(conn, keys, snap, &ws, &mut t).await {
            missed = 0;
        } else {
            missed += 1;
            if missed >= 3 {
                note(&mut t.all.samples, "trials stopped: three misses in a row".into());
                break;
            }
        }
    }
    t
}

fn report(b: &mut Bench<'_>, t: Trials, logs: &str) {
    let (one50, one99, one_ok, one_miss) = (t.one.p_ms(0.5), t.one.p_ms(0.99), t.one.ok, t.one.errors);
    let (all50, all99, all_ok, all_miss) = (t.all.p_ms(0.5), t.all.p_ms(0.99), t.all.ok, t.all.errors);
    let (poll50, poll99, write50, write99) =
        (t.poll.p_ms(0.5), t.poll.p_ms(0.99), t.write.p_ms(0.5), t.write.p_ms(0.99));
    let per: Vec<String> = t.per_worker.iter().map(|r| format!("{:.3}/{:.3}", r.p_ms(0.5), r.p_ms(0.99))).collect();
    for (name, run) in [(M_WRITE, t.write), (M_POLL, t.poll), (M_ONE, t.one), (M_ALL, t.all)] {
        b.report.rows.push(Row { name: name.into(), run, logs: logs.into(), cpu_us: None, all_cpu_us: None });
    }
    let met = all_ok > 0 && all_miss == 0 && all50 <= BEFORE_P50_MS && all99 <= BEFORE_P99_MS;
    b.report.line(
        "config propagation, one worker (m)",
        format!("p50 {one50:.3} ms p99 {one99:.3} ms over {one_ok} worker-trials, {one_miss} misses"),
    );
    b.report.line(
        "config propagation, all three (m)",
        format!(
            "p50 {all50:.3} ms p99 {all99:.3} ms over {all_ok} trials, {all_miss} misses (goal: don't regress \
             from the previous design's {BEFORE_P50_MS:.0} ms p50 / {BEFORE_P99_MS:.0} ms p99, no misses: {})",
            goal(met)
        ),
    );
    b.report.line(
        "  beside it",
        format!(
            "from the instant PUBLISH returns; ListModels round trip p50 {poll50:.3} p99 {poll99:.3} ms (the floor); \
             write SET,SET,PUBLISH p50 {write50:.3} p99 {write99:.3} ms; per worker p50/p99 {} ms; \
             workers' --config-check-ms 1000 (default); miss after {} ms",
            per.join(", "),
            LIMIT.as_millis()
        ),
    );
    let us = |ms: f64| json!((ms * 1000.0).round());
    b.report.set("config_propagation_one_p50_us", us(one50));
    b.report.set("config_propagation_one_p99_us", us(one99));
    b.report.set("config_propagation_all_p50_us", us(all50));
    b.report.set("config_propagation_all_p99_us", us(all99));
    b.report.set("config_propagation_trials", json!(all_ok));
    b.report.set("config_propagation_misses", json!(all_miss));
    b.report.set("config_propagation_worker_misses", json!(one_miss));
}
