//! What the worker adds per request, each against the direct call to the fake:
//! closed-loop unary (a, b; throughput d; CPU g), streaming time to first
//! token (c) and a fixed offered rate (e).

use std::time::Duration;

use serde_json::json;

use super::Bench;
use crate::calls::{direct_stream, direct_unary, with, worker_stream, worker_unary};
use crate::load::{closed_loop, open_loop};

pub const A_DIRECT: &str = "a direct unary";
pub const B_WORKER: &str = "b worker Generate";
const C_DIRECT: &str = "c direct SSE (TTFC)";
const C_WORKER: &str = "c worker Stream (TTFT)";
pub const E_DIRECT: &str = "e direct @rate";
pub const E_WORKER: &str = "e worker @rate";

/// Row a (direct unary), if this run has not measured it yet.
pub async fn ensure_direct_unary(b: &mut Bench<'_>) {
    if b.report.run(A_DIRECT).is_some() {
        return;
    }
    let du = with(&b.ctx, direct_unary);
    b.warm("direct unary", b.args.warmup, du.clone()).await;
    let (c, n, max) = (b.args.concurrency, b.args.requests, Duration::from_secs(b.args.max_secs));
    b.measure(A_DIRECT, b.direct(), closed_loop(c, n, max, du)).await;
}

/// Rows a and b, if this run has not measured them yet.
pub async fn ensure_unary(b: &mut Bench<'_>) {
    ensure_direct_unary(b).await;
    if b.report.run(B_WORKER).is_some() {
        return;
    }
    let wu = with(&b.ctx, |c| worker_unary(c, "bench", 1));
    b.warm("worker unary", b.args.warmup, wu.clone()).await;
    let (c, n, max) = (b.args.concurrency, b.args.requests, Duration::from_secs(b.args.max_secs));
    b.measure(B_WORKER, b.main_worker(), closed_loop(c, n, max, wu)).await;
}

/// Rows e (direct and worker at `--rate`), if this run has not measured them yet.
pub async fn ensure_rate(b: &mut Bench<'_>) {
    let (rate, secs, n) = (b.args.rate, b.args.rate_secs, b.args.warmup);
    if b.report.run(E_DIRECT).is_none() {
        let du = with(&b.ctx, direct_unary);
        b.warm("direct unary", n, du.clone()).await;
        b.measure(E_DIRECT, b.direct(), open_loop(rate, secs, du)).await;
    }
    if b.report.run(E_WORKER).is_none() {
        let wu = with(&b.ctx, |c| worker_unary(c, "bench", 1));
        b.warm("worker unary", n, wu.clone()).await;
        b.measure(E_WORKER, b.main_worker(), open_loop(rate, secs, wu)).await;
    }
}

/// a, b: added latency (b − a), throughput (d), worker CPU per request (g).
pub async fn unary(b: &mut Bench<'_>) -> Result<(), String> {
    ensure_unary(b).await;
    b.report.added("added latency, unary (b - a)", "added_unary", B_WORKER, A_DIRECT, "");
    let (Some(wr), Some(dr)) = (b.report.row(B_WORKER), b.report.row(A_DIRECT)) else {
        return Err("rows a/b missing".into());
    };
    let (brps, arps, c) = (wr.run.rps(), dr.run.rps(), b.args.concurrency);
    let cpu_us = wr.cpu_us;
    b.report.line("throughput via worker (d)", format!("{brps:.0} req/s at concurrency {c} (direct: {arps:.0} req/s)"));
    b.report.set("throughput_rps", json!(brps.round()));
    let tck = b.tck;
    match cpu_us {
        Some(v) => b.report.line("worker CPU per request (g)", format!("{v:.1} us (user+sys during b, CLK_TCK {tck})")),
        None => b.report.line("worker CPU per request (g)", "unavailable (/proc/<pid>/stat unreadable)"),
    }
    b.report.set("cpu_us_per_request", json!(cpu_us.map(|v| (v * 10.0).round() / 10.0)));
    b.report.cpu_ratio("  CPU ratio to direct (g: b / a)", "unary", B_WORKER, A_DIRECT);
    Ok(())
}

/// c: added time to first token, streaming.
pub async fn stream(b: &mut Bench<'_>) -> Result<(), String> {
    let (ds, ws) = (with(&b.ctx, direct_stream), with(&b.ctx, worker_stream));
    b.warm("direct stream", b.args.warmup, ds.clone()).await;
    b.warm("worker stream", b.args.warmup, ws.clone()).await;
    let (c, n, max) = (b.args.concurrency, b.args.stream_requests, Duration::from_secs(b.args.max_secs));
    b.measure(C_DIRECT, b.direct(), closed_loop(c, n, max, ds)).await;
    b.measure(C_WORKER, b.main_worker(), closed_loop(c, n, max, ws)).await;
    b.report.added("added time to first token (c)", "added_ttft", C_WORKER, C_DIRECT, "");
    b.report.cpu_ratio("  CPU ratio to direct (c)", "stream", C_WORKER, C_DIRECT);
    Ok(())
}

/// e: added latency at a fixed offered rate.
pub async fn rate(b: &mut Bench<'_>) -> Result<(), String> {
    ensure_rate(b).await;
    let (Some(ed), Some(ew)) = (b.report.run(E_DIRECT), b.report.run(E_WORKER)) else {
        return Err("rows e missing".into());
    };
    let (lag_d, lag_w) = (ed.lag_p99_us, ew.lag_p99_us);
    let achieved = ew.rps();
    let (rate, secs) = (b.args.rate, b.args.rate_secs);
    let (lag_dm, lag_wm) = (lag_d as f64 / 1000.0, lag_w as f64 / 1000.0);
    let extra = format!(
        "  (worker at {rate} req/s for {secs} s: achieved {achieved:.0} req/s; send lag p99 {lag_dm:.3} / {lag_wm:.3} ms)"
    );
    b.report.added("added latency at fixed rate (e)", "added_rate", E_WORKER, E_DIRECT, &extra);
    b.report.set("rate_target_rps", json!(rate));
    b.report.set("rate_achieved_rps", json!(achieved.round()));
    b.report.set("rate_send_lag_p99_us", json!({"direct": lag_d, "worker": lag_w}));
    b.report.cpu_ratio("  CPU ratio to direct (e)", "rate", E_WORKER, E_DIRECT);
    Ok(())
}
