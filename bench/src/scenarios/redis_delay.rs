//! i: Redis further away. A second worker, same prefix and config, reaches
//! Redis through the bench's delay proxy (`--redis-delay-us` each way, ~1 ms
//! round trip by default). Its added latency, closed-loop unary and at the
//! fixed rate, is set beside the main worker's (Redis direct) in the same run;
//! the goal is that the added latency moves by 0.05 ms at most.

use std::time::Duration;

use serde_json::json;
use tokio::time::Instant;

use super::overhead::{A_DIRECT, B_WORKER, E_DIRECT, E_WORKER, ensure_rate, ensure_unary};
use super::{Bench, Under};
use crate::calls::{with, worker_unary};
use crate::delay_proxy::DelayProxy;
use crate::load::{closed_loop, open_loop};
use crate::report::{diff, goal, ms};
use crate::stats::{Run, micros};

const I_UNARY: &str = "i worker Generate, Redis +1ms";
const I_RATE: &str = "i worker @rate, Redis +1ms";

/// Redis's `host:port` and the same URL pointing at `proxy` instead.
fn redirect(redis_url: &str, proxy: std::net::SocketAddr) -> Result<(String, String), String> {
    let mut url = url::Url::parse(redis_url).map_err(|e| format!("REDIS_URL: {e}"))?;
    if url.scheme() != "redis" {
        return Err(format!("the delay proxy needs a redis:// URL, not {}://", url.scheme()));
    }
    let target = format!("{}:{}", url.host_str().ok_or("REDIS_URL has no host")?, url.port().unwrap_or(6379));
    url.set_host(Some("127.0.0.1")).map_err(|e| format!("proxy URL: {e}"))?;
    url.set_port(Some(proxy.port())).map_err(|()| "proxy URL: cannot set the port".to_string())?;
    Ok((target, url.to_string()))
}

/// 200 PINGs back to back on a fresh connection to `url`.
async fn ping_rtt(url: &str) -> Result<Run, String> {
    let client = redis::Client::open(url).map_err(|e| format!("{url}: {e}"))?;
    let mut conn = client.get_multiplexed_async_connection().await.map_err(|e| format!("{url}: {e}"))?;
    let mut run = Run::new();
    for _ in 0..200 {
        let t = Instant::now();
        let r = redis::cmd("PING").query_async::<String>(&mut conn).await;
        run.record(r.map(|_| micros(t.elapsed())).map_err(|e| format!("PING: {e}")));
    }
    Ok(run)
}

pub async fn run(b: &mut Bench<'_>) -> Result<(), String> {
    ensure_unary(b).await;
    ensure_rate(b).await;
    let delay = Duration::from_micros(b.args.redis_delay_us);
    // Learn the target first: the proxy needs it, the URL needs the proxy's port.
    let (target, _) = redirect(&b.args.redis_url, std::net::SocketAddr::from(([127, 0, 0, 1], 0)))?;
    let proxy = DelayProxy::start(target, delay).await.map_err(|e| format!("delay proxy: {e}"))?;
    let (_, proxied_url) = redirect(&b.args.redis_url, proxy.addr)?;
    let result = measure(b, &proxied_url).await;
    let chunks = proxy.stop();
    let (d50, d99) = (chunks.p_ms(0.5), chunks.p_ms(0.99));
    let one_way = delay.as_secs_f64() * 1000.0;
    b.report.line(
        "  delay proxy, per chunk and direction",
        format!("set {one_way:.3} ms, achieved p50 {d50:.3} ms p99 {d99:.3} ms ({} chunks)", chunks.ok),
    );
    result
}

async fn measure(b: &mut Bench<'_>, proxied_url: &str) -> Result<(), String> {
    let direct_ping = ping_rtt(&b.args.redis_url).await?;
    let proxied_ping = ping_rtt(proxied_url).await?;
    let prefix = b.prefix.clone();
    let worker = b.start_worker("worker-redis-delay", proxied_url, &prefix, &[]).await?;
    let ctx = b.ctx.for_worker(worker.grpc.clone());
    let wu = with(&ctx, |c| worker_unary(c, "bench", 1));
    closed_loop(b.args.concurrency, b.args.warmup, Duration::from_secs(b.args.max_secs), wu.clone()).await;
    let (c, n, max) = (b.args.concurrency, b.args.requests, Duration::from_secs(b.args.max_secs));
    b.measure(I_UNARY, Under::worker(&worker), closed_loop(c, n, max, wu.clone())).await;
    b.measure(I_RATE, Under::worker(&worker), open_loop(b.args.rate, b.args.rate_secs, wu)).await;
    b.stopped.push(worker.stop().await);

    let (p, q) = (direct_ping.p_ms(0.5), proxied_ping.p_ms(0.5));
    b.report.line("Redis 1 ms away (i): PING round trip", format!("p50 direct {p:.3} ms, via the proxy {q:.3} ms"));
    b.report.set("redis_ping_p50_us", json!({"direct": direct_ping.p(0.5), "proxied": proxied_ping.p(0.5)}));
    let pairs = [("unary", B_WORKER, I_UNARY, A_DIRECT), ("@rate", E_WORKER, I_RATE, E_DIRECT)];
    for (what, near, far, direct) in pairs {
        let (Some(n), Some(f), Some(d)) = (b.report.run(near), b.report.run(far), b.report.run(direct)) else {
            return Err(format!("rows for {what} missing"));
        };
        let ((n50, n99), (f50, f99)) = (diff(n, d), diff(f, d));
        let (m50, m99) = (f50 - n50, f99 - n99);
        let met = m50 <= 50 && m99 <= 50;
        b.report.line(
            &format!("  added latency {what} vs direct"),
            format!(
                "Redis direct p50 {} p99 {} ms; Redis +1ms p50 {} p99 {} ms; moved p50 {} p99 {} ms \
                 (goal <= 0.05 ms: {})",
                ms(n50),
                ms(n99),
                ms(f50),
                ms(f99),
                ms(m50),
                ms(m99),
                goal(met)
            ),
        );
        let key = if what == "unary" { "redis_delay_unary" } else { "redis_delay_rate" };
        b.report.set(&format!("{key}_moved_p50_us"), json!(m50));
        b.report.set(&format!("{key}_moved_p99_us"), json!(m99));
    }
    b.report.cpu_ratio("  CPU ratio to direct (i unary / a)", "redis_delay_unary", I_UNARY, A_DIRECT);
    Ok(())
}
