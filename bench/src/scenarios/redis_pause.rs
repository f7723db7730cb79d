//! j: Redis stops answering for a while. During a fixed-rate run on the
//! healthy pool, a separate connection sends `CLIENT PAUSE <ms> ALL`; the
//! requests sent before, during and after the pause are reported apart, with
//! the failures (goal 0) and the p99 during against before (goal: within 1 ms).
//! The pause stops every client of that Redis, not only the bench's.

use std::time::Duration;

use serde_json::json;
use tokio::time::Instant;

use super::Bench;
use crate::calls::{direct_unary, with, worker_unary};
use crate::load::{open_loop, open_loop_split};
use crate::report::{goal, ms};

pub async fn run(b: &mut Bench<'_>) -> Result<(), String> {
    let (rate, secs) = (b.args.pause_rate, b.args.pause_secs);
    let (at, len) = (Duration::from_millis(b.args.pause_at_ms), Duration::from_millis(b.args.pause_ms));
    let names = [
        format!("j direct @{rate}/s"),
        format!("j worker @{rate}/s before pause"),
        format!("j worker @{rate}/s during pause"),
        format!("j worker @{rate}/s after pause"),
    ];
    let connect = b.redis.get_multiplexed_async_connection();
    let mut pauser = connect.await.map_err(|e| format!("pause connection: {e}"))?;
    let (du, wu) = (with(&b.ctx, direct_unary), with(&b.ctx, |c| worker_unary(c, "bench", 1)));
    b.warm("direct unary", b.args.warmup, du.clone()).await;
    b.warm("worker unary", b.args.warmup, wu.clone()).await;
    b.measure(&names[0], b.direct(), open_loop(rate, secs, du)).await;

    let start = Instant::now() + Duration::from_millis(20);
    let pause_ms = b.args.pause_ms;
    let pause = tokio::spawn(async move {
        tokio::time::sleep_until(start + at).await;
        let sent = start.elapsed();
        let cmd = redis::cmd("CLIENT").arg("PAUSE").arg(pause_ms).arg("ALL").query_async::<()>(&mut pauser).await;
        (sent, cmd.map_err(|e| format!("CLIENT PAUSE: {e}")), pauser)
    });
    let bounds = [at, at + len];
    let split = [names[1].as_str(), names[2].as_str(), names[3].as_str()];
    let run = open_loop_split(rate, secs, start, &bounds, wu);
    b.measure_split(&split, b.main_worker(), start, &bounds, run).await;
    let (sent, paused) = match pause.await {
        Ok((sent, res, mut conn)) => {
            // The pause has ended by now; unpausing is a no-op unless the run was shorter than it.
            let _ = redis::cmd("CLIENT").arg("UNPAUSE").query_async::<()>(&mut conn).await;
            (sent, res)
        }
        Err(e) => (Duration::ZERO, Err(format!("pause task failed: {e}"))),
    };
    paused?;

    // (errors, p50 us, p99 us) of direct, before, during, after.
    let mut f = [(0u64, 0u64, 0u64); 4];
    for (fig, name) in f.iter_mut().zip(&names) {
        let r = b.report.run(name).ok_or("rows j missing")?;
        *fig = (r.errors, r.p(0.5), r.p(0.99));
    }
    let [direct, before, during, after] = f;
    let failed = before.0 + during.0 + after.0;
    let p = |x: (u64, u64, u64)| format!("p50 {:.3} p99 {:.3} ms", x.1 as f64 / 1000.0, x.2 as f64 / 1000.0);
    let moved = during.2 as i64 - before.2 as i64;
    let phases = format!("before {} | during {} | after {} | direct {}", p(before), p(during), p(after), p(direct));
    let counts = (before.0, during.0, after.0);
    let sent_ms = sent.as_secs_f64() * 1000.0;
    b.report.line(
        "Redis pause (j)",
        format!(
            "CLIENT PAUSE {pause_ms} ALL sent at {sent_ms:.1} ms into a {rate} req/s x {secs} s run; \
             failed requests {failed} (before/during/after {}/{}/{}; goal 0: {})",
            counts.0,
            counts.1,
            counts.2,
            goal(failed == 0)
        ),
    );
    b.report.line("  latency by phase", phases);
    b.report.line("  p99 during minus before", format!("{} ms (goal <= 1 ms: {})", ms(moved), goal(moved <= 1000)));
    b.report.set("pause_failed_requests", json!(failed));
    b.report.set("pause_p50_us", json!({"before": before.1, "during": during.1, "after": after.1, "direct": direct.1}));
    b.report.set("pause_p99_us", json!({"before": before.2, "during": during.2, "after": after.2, "direct": direct.2}));
    Ok(())
}
