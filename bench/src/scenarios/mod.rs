//! The scenarios and what they share: [`Bench`] (the fake, the main worker,
//! Redis, the report) and [`Bench::measure`], which runs one load and records
//! its row with the CPU and log lines of the process under test.
//!
//! A scenario that compares against a baseline row (`a direct unary`,
//! `e direct @rate`, the main worker's rows) measures it first if this run has
//! not yet, so any one scenario can run alone (`--only`).

mod config_propagation;
mod failover;
mod overhead;
mod propagation;
mod redis_commands;
mod redis_delay;
mod redis_pause;
mod routing;

use std::collections::HashSet;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use switchyard_proto::v1 as pb;
use switchyard_shared::keys::RedisKeys;
use tokio::time::Instant;

use crate::args::{Args, Scenario};
use crate::calls::Ctx;
use crate::config::{self, Redis};
use crate::load::{REQUEST_TIMEOUT, closed_loop};
use crate::procs::{self, Fake, LogTap, Stopped, Worker, WorkerConf};
use crate::report::{Report, Row};
use crate::stats::Run;

/// Everything the scenarios share.
pub struct Bench<'a> {
    pub args: &'a Args,
    pub bin: PathBuf,
    pub prefix: String,
    pub redis: redis::Client,
    pub conn: Redis,
    pub fake: Fake,
    /// The worker every scenario but the propagation one measures; Redis direct.
    pub worker: Worker,
    pub snap: pb::Snapshot,
    /// The fake and the main worker.
    pub ctx: Arc<Ctx>,
    pub report: Report,
    /// Workers started and stopped by scenarios, for the problems section.
    pub stopped: Vec<Stopped>,
    warmed: HashSet<String>,
    tck: u64,
    load_ms: u128,
    rss_loaded: u64,
}

/// The process a row measures (its CPU) and the logs whose WARN/ERROR lines it counts.
#[derive(Clone)]
pub struct Under {
    pid: u32,
    logs: Vec<Arc<LogTap>>,
}

impl Under {
    pub fn worker(w: &Worker) -> Self {
        Self { pid: w.pid, logs: vec![Arc::clone(&w.log)] }
    }
}

/// Counters at one instant: log lines, CPU ticks of the process under test and of all three.
struct Mark {
    logs: (u64, u64),
    cpu: Option<u64>,
    all_cpu: Option<u64>,
}

fn mark(under: &Under, fake_pid: u32) -> Mark {
    let logs = under.logs.iter().map(|l| l.counts()).fold((0, 0), |a, c| (a.0 + c.0, a.1 + c.1));
    let cpu = procs::cpu_ticks(under.pid);
    let mut pids = vec![std::process::id(), fake_pid];
    if under.pid != fake_pid {
        pids.push(under.pid);
    }
    let all_cpu = pids.iter().map(|&p| procs::cpu_ticks(p)).sum();
    Mark { logs, cpu, all_cpu }
}

impl Bench<'_> {
    /// Direct rows: the fake is under test; the main worker's log should stay quiet.
    pub fn direct(&self) -> Under {
        Under { pid: self.fake.pid, logs: vec![Arc::clone(&self.worker.log)] }
    }

    pub fn main_worker(&self) -> Under {
        Under::worker(&self.worker)
    }

    fn row(&self, name: String, run: Run, a: &Mark, b: &Mark) -> Row {
        let n = run.ok + run.errors;
        let per_req = |x: Option<u64>, y: Option<u64>| match (x, y) {
            (Some(x), Some(y)) if n > 0 => Some(y.saturating_sub(x) as f64 * 1e6 / self.tck as f64 / n as f64),
            _ => None,
        };
        let logs = format!("{}/{}", b.logs.0 - a.logs.0, b.logs.1 - a.logs.1);
        Row { name, run, logs, cpu_us: per_req(a.cpu, b.cpu), all_cpu_us: per_req(a.all_cpu, b.all_cpu) }
    }

    /// Runs one load and records its row.
    pub async fn measure(&mut self, name: &str, under: Under, fut: impl Future<Output = Run>) {
        self.measure_split(&[name], under, Instant::now(), &[], async { vec![fut.await] }).await;
    }

    /// Runs one load cut into phases (one row per name) at `start + bounds[i]`;
    /// CPU and log lines are read at the same instants.
    pub async fn measure_split(
        &mut self,
        names: &[&str],
        under: Under,
        start: Instant,
        bounds: &[Duration],
        fut: impl Future<Output = Vec<Run>>,
    ) {
        eprintln!("running {}...", names.join(" / "));
        let first = mark(&under, self.fake.pid);
        let (u, fake, at) = (under.clone(), self.fake.pid, bounds.iter().map(|b| start + *b).collect::<Vec<_>>());
        let marker = tokio::spawn(async move {
            let mut marks = Vec::new();
            for t in at {
                tokio::time::sleep_until(t).await;
                marks.push(mark(&u, fake));
            }
            marks
        });
        let runs = fut.await;
        let mut marks = vec![first];
        match marker.await {
            Ok(m) if m.len() == bounds.len() => marks.extend(m),
            _ => marks.extend(bounds.iter().map(|_| Mark { logs: (0, 0), cpu: None, all_cpu: None })),
        }
        marks.push(mark(&under, self.fake.pid));
        for (i, (name, run)) in names.iter().zip(runs).enumerate() {
            let row = self.row(name.to_string(), run, &marks[i], &marks[i + 1]);
            self.report.rows.push(row);
        }
    }

    /// Runs `args.warmup` calls of `f` (closed loop) once per `kind` and run.
    pub async fn warm<F, Fut>(&mut self, kind: &str, n: u64, f: F)
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<u64, String>> + Send + 'static,
    {
        if self.warmed.insert(kind.to_string()) {
            eprintln!("warming up {kind} ({n} requests)...");
            closed_loop(self.args.concurrency, n, Duration::from_secs(self.args.max_secs), f).await;
        }
    }

    /// Starts another worker on this machine's binaries; `expected_warnings`:
    /// WARN messages the scenario causes on purpose.
    pub async fn start_worker(
        &self,
        name: &str,
        redis_url: &str,
        prefix: &str,
        expected_warnings: &[&'static str],
    ) -> Result<Worker, String> {
        let log_filter = &self.args.worker_log;
        let conf = WorkerConf { redis_url, prefix, log_filter, revision: 1, expected_warnings };
        procs::start_worker(&self.bin, name, &conf).await
    }
}

/// Starts the fake upstream, stores the snapshot, starts the main worker and
/// waits until it serves revision 1.
async fn setup<'a>(args: &'a Args, prefix: &str, redis: redis::Client, mut conn: Redis) -> Result<Bench<'a>, String> {
    let bin = procs::bin_dir(args.bin_dir.as_ref())?;
    let started = Instant::now();
    let fake = procs::start_fake(&bin, args.chunks, args.chunk_delay_us).await?;
    let snap = config::bench_snapshot(&fake.base_url, args.extra_pools);
    config::publish(&mut conn, &RedisKeys::new(prefix), &snap).await?;
    let (redis_url, log_filter) = (args.redis_url.as_str(), args.worker_log.as_str());
    let conf = WorkerConf { redis_url, prefix, log_filter, revision: 1, expected_warnings: &[] };
    let worker = procs::start_worker(&bin, "worker", &conf).await?;
    let load_ms = started.elapsed().as_millis();
    let rss_loaded = procs::proc_status(worker.pid, "VmRSS:").unwrap_or(0);
    let http = reqwest::Client::builder().pool_max_idle_per_host(1024).timeout(REQUEST_TIMEOUT).build();
    let http = http.map_err(|e| format!("http client: {e}"))?;
    let ctx = Arc::new(Ctx { http, url: format!("{}/chat/completions", fake.base_url), grpc: worker.grpc.clone() });
    Ok(Bench {
        args,
        bin,
        prefix: prefix.to_string(),
        redis,
        conn,
        fake,
        worker,
        snap,
        ctx,
        report: Report::default(),
        stopped: Vec::new(),
        warmed: HashSet::new(),
        tck: procs::clk_tck(),
        load_ms,
        rss_loaded,
    })
}

/// Sets up, runs the selected scenarios in order, prints the report. The
/// children are killed when this returns; the caller deletes the Redis keys.
pub async fn run(args: &Args, prefix: &str, redis: redis::Client, conn: Redis) -> Result<(), String> {
    let mut b = setup(args, prefix, redis, conn).await?;
    let mut failed = Vec::new();
    for s in args.selected() {
        eprintln!("== scenario {}", s.name());
        let res = match s {
            Scenario::Unary => overhead::unary(&mut b).await,
            Scenario::Stream => overhead::stream(&mut b).await,
            Scenario::Rate => overhead::rate(&mut b).await,
            Scenario::Failover => failover::run(&mut b).await,
            Scenario::RedisCommands => redis_commands::run(&mut b).await,
            Scenario::RedisDelay => redis_delay::run(&mut b).await,
            Scenario::Propagation => propagation::run(&mut b).await,
            Scenario::ConfigPropagation => config_propagation::run(&mut b).await,
            Scenario::RedisPause => redis_pause::run(&mut b).await,
            Scenario::Routing => routing::run(&mut b).await,
        };
        if let Err(e) = res {
            eprintln!("scenario {} failed: {e}", s.name());
            b.report.problems.push(format!("scenario {} failed: {e}", s.name()));
            failed.push(s.name());
        }
    }
    memory(&mut b);
    logs(&mut b);
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let (c, extra) = (args.concurrency, args.extra_pools);
    b.report.set("bench", json!("switchyard-data-plane"));
    b.report.set("concurrency", json!(c));
    b.report.set("extra_pools", json!(extra));
    let scenarios: Vec<String> = args.selected().iter().map(|s| s.name()).collect();
    b.report.set("scenarios_run", json!(scenarios));
    b.report.print(&format!(
        "Switchyard data-plane benchmark: 127.0.0.1, {cores} cores, concurrency {c}, extra pools {extra} x 10 members"
    ));
    if let Some(status) = b.worker.exited() {
        return Err(format!(
            "the data plane exited during the run ({status}); its output: {:?}",
            b.worker.log.samples()
        ));
    }
    if let Some(s) = b.stopped.iter().find(|s| s.exited_early.is_some()) {
        return Err(format!("{} exited during the run; its output: {:?}", s.name, s.log.samples()));
    }
    if failed.is_empty() { Ok(()) } else { Err(format!("scenario(s) failed: {}", failed.join(", "))) }
}

/// h: the main worker's memory with the whole snapshot loaded.
fn memory(b: &mut Bench<'_>) {
    let pid = b.worker.pid;
    let (hwm, end) = (procs::proc_status(pid, "VmHWM:").unwrap_or(0), procs::proc_status(pid, "VmRSS:").unwrap_or(0));
    let pools = b.snap.pools.len();
    let members: usize = b.snap.pools.iter().map(|p| p.members.len()).sum();
    let [loaded, end_mib, peak] = [b.rss_loaded, end, hwm].map(|kib| kib as f64 / 1024.0);
    let load_ms = b.load_ms;
    b.report.line(
        "worker RSS (h)",
        format!(
            "{loaded:.1} MiB after loading {pools} pools / {members} members (ready {load_ms} ms after start); \
             {end_mib:.1} MiB at end, peak {peak:.1} MiB"
        ),
    );
    b.report.set("rss_loaded_kib", json!(b.rss_loaded));
    b.report.set("rss_peak_kib", json!(hwm));
    b.report.set("pools", json!(pools));
    b.report.set("members", json!(members));
}

/// WARN/ERROR lines of every child over the whole run.
fn logs(b: &mut Bench<'_>) {
    let mut taps: Vec<(String, Arc<LogTap>)> = vec![(b.worker.name.clone(), Arc::clone(&b.worker.log))];
    taps.extend(b.stopped.iter().map(|s| (s.name.clone(), Arc::clone(&s.log))));
    taps.push(("fake upstream".into(), Arc::clone(&b.fake.log)));
    for (who, log) in taps {
        let (w, e) = log.counts();
        b.report.set(&format!("{}_warn_error_lines", who.replace([' ', '-'], "_")), json!([w, e]));
        if w + e > 0 {
            b.report.problems.push(format!("{who} logged {w} WARN and {e} ERROR/other lines; first ones:"));
            b.report.problems.extend(log.samples().into_iter().map(|s| format!("  {s}")));
        }
    }
}
