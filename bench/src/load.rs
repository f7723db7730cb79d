//! Load drivers: a closed loop (N callers back to back) and an open loop (a
//! fixed schedule of sends, whatever the answers do). Both are bounded in
//! count and in time.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinSet;
use tokio::time::{Instant, timeout};

use crate::stats::{Run, lock, micros};

/// Per-request bound; a request past it counts as an error.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Open loop: requests beyond this many in flight are not sent (counted as errors).
const MAX_IN_FLIGHT: u64 = 4096;

/// `concurrency` callers, each calling `f` back to back, until `n` calls or `max` elapsed.
pub async fn closed_loop<F, Fut>(concurrency: usize, n: u64, max: Duration, f: F) -> Run
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<u64, String>> + Send + 'static,
{
    let (f, next) = (Arc::new(f), Arc::new(AtomicU64::new(0)));
    let start = Instant::now();
    let deadline = start + max;
    let mut set = JoinSet::new();
    for _ in 0..concurrency.max(1) {
        let (f, next) = (Arc::clone(&f), Arc::clone(&next));
        set.spawn(async move {
            let mut run = Run::new();
            while Instant::now() < deadline && next.fetch_add(1, Ordering::Relaxed) < n {
                let r = timeout(REQUEST_TIMEOUT, f()).await;
                run.record(r.unwrap_or_else(|_| Err("request timed out (bench bound)".into())));
            }
            run
        });
    }
    let mut total = Run::new();
    while let Some(res) = set.join_next().await {
        match res {
            Ok(run) => total.merge(run),
            Err(e) => total.record(Err(format!("caller task failed: {e}"))),
        }
    }
    total.secs = start.elapsed().as_secs_f64();
    total
}

/// Open loop: one call scheduled every 1/rate seconds for `secs`, starting 20 ms from now.
pub async fn open_loop<F, Fut>(rate: u64, secs: u64, f: F) -> Run
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<u64, String>> + Send + 'static,
{
    let start = Instant::now() + Duration::from_millis(20);
    open_loop_split(rate, secs, start, &[], f).await.pop().unwrap_or_else(Run::new)
}

/// Open loop from `start`: one call scheduled every 1/rate seconds for `secs`,
/// whatever the answers do. Latency counts from the actual send; how late sends
/// were (timer granularity, CPU contention) is reported apart as the generator lag.
///
/// `splits` (offsets from `start`, ascending) cut the run into phases by
/// scheduled send time: one [`Run`] per phase, `splits.len() + 1` in all. A
/// single phase's duration is the whole run including the drain; a split
/// phase's is its scheduled length.
pub async fn open_loop_split<F, Fut>(rate: u64, secs: u64, start: Instant, splits: &[Duration], f: F) -> Vec<Run>
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<u64, String>> + Send + 'static,
{
    let rate = rate.max(1);
    let phases = splits.len() + 1;
    let runs: Arc<Vec<Mutex<Run>>> = Arc::new((0..phases).map(|_| Mutex::new(Run::new())).collect());
    let mut lags: Vec<Run> = (0..phases).map(|_| Run::new()).collect();
    let in_flight = Arc::new(AtomicU64::new(0));
    let mut set = JoinSet::new();
    for i in 0..rate.saturating_mul(secs) {
        let offset = Duration::from_nanos(i.saturating_mul(1_000_000_000) / rate);
        let phase = splits.iter().filter(|&&s| offset >= s).count();
        let at = start + offset;
        tokio::time::sleep_until(at).await;
        while set.try_join_next().is_some() {}
        let sent = Instant::now();
        lags[phase].record(Ok(micros(sent - at)));
        if in_flight.load(Ordering::Relaxed) >= MAX_IN_FLIGHT {
            lock(&runs[phase]).record(Err(format!("not sent: {MAX_IN_FLIGHT} requests already in flight")));
            continue;
        }
        in_flight.fetch_add(1, Ordering::Relaxed);
        let (fut, runs, in_flight) = (f(), Arc::clone(&runs), Arc::clone(&in_flight));
        set.spawn(async move {
            let r = match timeout(REQUEST_TIMEOUT, fut).await {
                Ok(Ok(_)) => Ok(micros(sent.elapsed())),
                Ok(Err(e)) => Err(e),
                Err(_) => Err("request timed out (bench bound)".into()),
            };
            in_flight.fetch_sub(1, Ordering::Relaxed);
            lock(&runs[phase]).record(r);
        });
    }
    let drained =
        timeout(REQUEST_TIMEOUT + Duration::from_secs(5), async { while set.join_next().await.is_some() {} }).await;
    let elapsed = start.elapsed().as_secs_f64();
    set.abort_all();
    let mut out: Vec<Run> = runs.iter().map(|m| std::mem::replace(&mut *lock(m), Run::new())).collect();
    if drained.is_err()
        && let Some(last) = out.last_mut()
    {
        last.record(Err("some requests never finished".into()));
    }
    let end = Duration::from_secs(secs);
    for (i, (run, lag)) in out.iter_mut().zip(&lags).enumerate() {
        let lo = if i == 0 { Duration::ZERO } else { splits[i - 1].min(end) };
        let hi = splits.get(i).map_or(end, |s| (*s).min(end));
        run.secs = if phases == 1 { elapsed } else { hi.saturating_sub(lo).as_secs_f64() };
        run.lag_p99_us = lag.p(0.99);
    }
    out
}
