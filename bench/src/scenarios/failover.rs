//! f: the cost of one failed attempt (connection refused, failure recorded)
//! before the good one: the failover pool against the healthy pool.

use std::time::Duration;

use super::Bench;
use crate::calls::{with, worker_unary};
use crate::load::closed_loop;

pub async fn run(b: &mut Bench<'_>) -> Result<(), String> {
    let wu = with(&b.ctx, |c| worker_unary(c, "bench", 1));
    let wf = with(&b.ctx, |c| worker_unary(c, "bench-failover", 2));
    // The warm-up fails on the twin pool's dead member, so the measured one
    // starts from zero failures (threshold 1000, at most 900 requests).
    let warm = with(&b.ctx, |c| worker_unary(c, "bench-failover-warm", 2));
    b.warm("worker unary", b.args.warmup, wu.clone()).await;
    b.warm("worker failover", b.args.warmup.min(100), warm).await;
    let (c, max, nf) = (b.args.concurrency, Duration::from_secs(b.args.max_secs), b.args.failover_requests.min(900));
    b.measure("f healthy pool", b.main_worker(), closed_loop(c, nf, max, wu)).await;
    b.measure("f failover pool", b.main_worker(), closed_loop(c, nf, max, wf)).await;
    let extra = format!("  ({nf} requests each)");
    b.report.added("failover added latency (f)", "failover_added", "f failover pool", "f healthy pool", &extra);
    Ok(())
}
