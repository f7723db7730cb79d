//! k: Redis commands per successful request. `INFO stats`
//! `total_commands_processed` is read before and after a closed-loop run on
//! the healthy pool while the main worker is otherwise idle (the other
//! workers run only inside their own scenarios). The server-wide counter
//! includes the worker's background commands (periodic checks), which is the
//! point, and any other client of that Redis, which is not. Run k2 does the
//! same on `bench-limited` (generous rpm/tpm limits: leased permit blocks).

use std::time::Duration;

use serde_json::json;

use super::Bench;
use super::overhead::{A_DIRECT, ensure_direct_unary};
use crate::calls::{with, worker_unary};
use crate::config::Redis;
use crate::load::closed_loop;
use crate::report::goal;

const K_WORKER: &str = "k worker Generate (Redis cmds)";
const K_LIMITED: &str = "k2 worker Generate, limited pool (Redis cmds)";

/// `total_commands_processed`. The counter moves after a command runs, so
/// an INFO does not count itself; the next INFO counts it: one bench command
/// per pair of reads.
async fn commands(conn: &mut Redis) -> Result<u64, String> {
    let info: String = redis::cmd("INFO").arg("stats").query_async(conn).await.map_err(|e| format!("INFO: {e}"))?;
    let line = info.lines().find_map(|l| l.strip_prefix("total_commands_processed:"));
    line.and_then(|v| v.trim().parse().ok()).ok_or_else(|| "INFO stats: no total_commands_processed".into())
}

pub async fn run(b: &mut Bench<'_>) -> Result<(), String> {
    ensure_direct_unary(b).await;
    let wu = with(&b.ctx, |c| worker_unary(c, "bench", 1));
    b.warm("worker unary", b.args.warmup, wu.clone()).await;
    let mut conn = b.conn.clone();
    let idle = Duration::from_secs(b.args.idle_secs);
    eprintln!("idle window ({} s)...", b.args.idle_secs);
    let i0 = commands(&mut conn).await?;
    tokio::time::sleep(idle).await;
    let i1 = commands(&mut conn).await?;
    let (c, n, max) = (b.args.concurrency, b.args.commands_requests, Duration::from_secs(b.args.max_secs));
    b.measure(K_WORKER, b.main_worker(), closed_loop(c, n, max, wu)).await;
    let i2 = commands(&mut conn).await?;
    let idle_rate = i1.saturating_sub(i0 + 1) as f64 / idle.as_secs_f64().max(0.001);
    let used = i2.saturating_sub(i1 + 1);
    let Some(k) = b.report.run(K_WORKER) else { return Err("row k missing".into()) };
    let (ok, secs) = (k.ok, k.secs);
    let per_req = if ok > 0 { used as f64 / ok as f64 } else { f64::NAN };
    b.report.line(
        "Redis commands per request (k)",
        format!(
            "{per_req:.3} ({used} commands / {ok} successful requests in {secs:.1} s; \
             idle background {idle_rate:.1} commands/s; goal <= 0.05: {})",
            goal(per_req <= 0.05)
        ),
    );
    b.report.added("  added latency of run k (k - a)", "commands_run_added", K_WORKER, A_DIRECT, "");
    b.report.set("redis_commands_per_request", json!((per_req * 1000.0).round() / 1000.0));
    b.report.set("redis_commands_idle_per_sec", json!((idle_rate * 10.0).round() / 10.0));
    limited(b, idle_rate, per_req).await
}

/// The same on a pool whose members have generous rpm/tpm limits (leased
/// permit blocks, ADR 005), so the goal is the same; `unlimited` is run k's
/// figure, for the difference the limits make.
async fn limited(b: &mut Bench<'_>, idle_rate: f64, unlimited: f64) -> Result<(), String> {
    let wl = with(&b.ctx, |c| worker_unary(c, "bench-limited", 1));
    b.warm("worker unary, limited pool", b.args.warmup, wl.clone()).await;
    let mut conn = b.conn.clone();
    let i0 = commands(&mut conn).await?;
    let (c, n, max) = (b.args.concurrency, b.args.commands_requests, Duration::from_secs(b.args.max_secs));
    b.measure(K_LIMITED, b.main_worker(), closed_loop(c, n, max, wl)).await;
    let i1 = commands(&mut conn).await?;
    let used = i1.saturating_sub(i0 + 1);
    let Some(k) = b.report.run(K_LIMITED) else { return Err("row k2 missing".into()) };
    let (ok, secs) = (k.ok, k.secs);
    let per_req = if ok > 0 { used as f64 / ok as f64 } else { f64::NAN };
    b.report.line(
        "Redis commands per request, limited pool (k2)",
        format!(
            "{per_req:.3} ({used} commands / {ok} successful requests in {secs:.1} s, background included \
             as in k: ~{:.0} at the idle rate; k2 - k: {:+.3}; goal <= 0.05: {})",
            idle_rate * secs,
            per_req - unlimited,
            goal(per_req <= 0.05)
        ),
    );
    b.report.set("redis_commands_per_request_limited", json!((per_req * 1000.0).round() / 1000.0));
    Ok(())
}
