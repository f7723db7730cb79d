//! `switchyard-bench`: drives the real `switchyard-data-plane` release binary
//! against the real `switchyard-fake-upstream`, on 127.0.0.1, and prints what
//! the worker adds: latency, time to first token, throughput, failover cost,
//! CPU per request and memory. Every loop is bounded in count and in time.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Parser;
use futures::StreamExt as _;
use hdrhistogram::Histogram;
use prost::Message as _;
use serde_json::{Value, json};
use switchyard_proto::v1 as pb;
use tokio::io::{AsyncBufReadExt as _, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::task::JoinSet;
use tokio::time::{Instant, timeout};

type Client = pb::inference_client::InferenceClient<tonic::transport::Channel>;
type Redis = redis::aio::MultiplexedConnection;
type Found = Option<tokio::sync::oneshot::Sender<String>>;

/// Per-request bound; a request past it counts as an error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Open loop: requests beyond this many in flight are not sent (counted as errors).
const MAX_IN_FLIGHT: u64 = 4096;
const UNARY_BODY: &str = r#"{"model":"m1","messages":[{"role":"user","content":"hello"}],"max_tokens":16}"#;
const STREAM_BODY: &str =
    r#"{"model":"m1","messages":[{"role":"user","content":"hello"}],"max_tokens":16,"stream":true}"#;

/// Load generator for the Switchyard data plane (see bench/README.md).
#[derive(Parser, Debug)]
#[command(name = "switchyard-bench", version)]
struct Args {
    /// Directory holding switchyard-data-plane and switchyard-fake-upstream (default: next to this binary).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    redis_url: String,
    /// Extra pools of 10 members each in the snapshot (for the memory figure).
    #[arg(long, default_value_t = 0)]
    extra_pools: usize,
    /// Concurrent callers of the closed-loop scenarios.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Requests per closed-loop unary scenario (a baseline, b via worker).
    #[arg(long, default_value_t = 20_000)]
    requests: u64,
    /// Requests per streaming scenario (c: direct SSE, GenerateStream).
    #[arg(long, default_value_t = 5_000)]
    stream_requests: u64,
    /// Time cap of each closed-loop scenario, in seconds.
    #[arg(long, default_value_t = 8)]
    max_secs: u64,
    /// Open-loop rate (requests per second) of the fixed-rate scenario (e).
    #[arg(long, default_value_t = 1000)]
    rate: u64,
    /// Duration of each fixed-rate run, in seconds.
    #[arg(long, default_value_t = 10)]
    rate_secs: u64,
    /// Requests per failover scenario (f: healthy pool, then failover pool); at most 900.
    #[arg(long, default_value_t = 500)]
    failover_requests: u64,
    /// Warm-up requests per request kind before measuring (not reported).
    #[arg(long, default_value_t = 200)]
    warmup: u64,
    /// Content chunks per fake answer.
    #[arg(long, default_value_t = 5)]
    chunks: usize,
    /// Fake upstream delay before each streamed chunk, in microseconds.
    #[arg(long, default_value_t = 0)]
    chunk_delay_us: u64,
    /// RUST_LOG of the worker; it must keep the "data plane listening" info line.
    #[arg(long, default_value = "warn,switchyard_data_plane::server=info,switchyard_data_plane::sync=info")]
    worker_log: String,
}

/// Outcome of one scenario: a histogram of microseconds plus error samples.
struct Run {
    hist: Histogram<u64>,
    ok: u64,
    errors: u64,
    samples: Vec<String>,
    secs: f64,
    /// Open loop only: p99 of how late requests were sent versus their schedule, in microseconds.
    lag_p99_us: u64,
}

fn note(samples: &mut Vec<String>, e: String) {
    if samples.len() < 3 && !samples.contains(&e) {
        samples.push(e);
    }
}

impl Run {
    fn new() -> Self {
        let hist = Histogram::new_with_bounds(1, 120_000_000, 3).expect("valid histogram bounds");
        Self { hist, ok: 0, errors: 0, samples: Vec::new(), secs: 0.0, lag_p99_us: 0 }
    }
    fn record(&mut self, r: Result<u64, String>) {
        match r {
            Ok(us) => {
                self.ok += 1;
                self.hist.saturating_record(us.max(1));
            }
            Err(e) => {
                self.errors += 1;
                note(&mut self.samples, e);
            }
        }
    }
    fn merge(&mut self, other: Run) {
        if let Err(e) = self.hist.add(&other.hist) {
            eprintln!("histogram merge failed: {e}");
        }
        self.ok += other.ok;
        self.errors += other.errors;
        other.samples.into_iter().for_each(|s| note(&mut self.samples, s));
    }
    fn p(&self, q: f64) -> u64 {
        if self.ok == 0 { 0 } else { self.hist.value_at_quantile(q) }
    }
    fn rps(&self) -> f64 {
        if self.secs > 0.0 { self.ok as f64 / self.secs } else { 0.0 }
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// `concurrency` callers, each calling `f` back to back, until `n` calls or `max` elapsed.
async fn closed_loop<F, Fut>(concurrency: usize, n: u64, max: Duration, f: F) -> Run
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

/// Open loop: one call scheduled every 1/rate seconds for `secs`, whatever the answers do.
/// Latency counts from the actual send; how late sends were (timer granularity,
/// CPU contention) is reported apart as the generator lag.
async fn open_loop<F, Fut>(rate: u64, secs: u64, f: F) -> Run
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<u64, String>> + Send + 'static,
{
    let rate = rate.max(1);
    let run = Arc::new(Mutex::new(Run::new()));
    let in_flight = Arc::new(AtomicU64::new(0));
    let start = Instant::now() + Duration::from_millis(20);
    let (mut set, mut lag) = (JoinSet::new(), Run::new());
    let record = |run: &Mutex<Run>, r| run.lock().unwrap_or_else(|p| p.into_inner()).record(r);
    for i in 0..rate.saturating_mul(secs) {
        let at = start + Duration::from_nanos(i.saturating_mul(1_000_000_000) / rate);
        tokio::time::sleep_until(at).await;
        while set.try_join_next().is_some() {}
        let sent = Instant::now();
        lag.record(Ok(micros(sent - at)));
        if in_flight.load(Ordering::Relaxed) >= MAX_IN_FLIGHT {
            record(&run, Err(format!("not sent: {MAX_IN_FLIGHT} requests already in flight")));
            continue;
        }
        in_flight.fetch_add(1, Ordering::Relaxed);
        let (fut, run, in_flight) = (f(), Arc::clone(&run), Arc::clone(&in_flight));
        set.spawn(async move {
            let r = match timeout(REQUEST_TIMEOUT, fut).await {
                Ok(Ok(_)) => Ok(micros(sent.elapsed())),
                Ok(Err(e)) => Err(e),
                Err(_) => Err("request timed out (bench bound)".into()),
            };
            in_flight.fetch_sub(1, Ordering::Relaxed);
            record(&run, r);
        });
    }
    let drained =
        timeout(REQUEST_TIMEOUT + Duration::from_secs(5), async { while set.join_next().await.is_some() {} }).await;
    let secs = start.elapsed().as_secs_f64();
    set.abort_all();
    let mut out = std::mem::replace(&mut *run.lock().unwrap_or_else(|p| p.into_inner()), Run::new());
    if drained.is_err() {
        out.record(Err("some requests never finished".into()));
    }
    (out.secs, out.lag_p99_us) = (secs, lag.p(0.99));
    out
}

/// What every request needs: HTTP client and URL of the fake, gRPC client of the worker.
struct Ctx {
    http: reqwest::Client,
    url: String,
    grpc: Client,
}

/// A scenario's request function: `f(ctx)` on a shared context.
fn with<F, Fut>(ctx: &Arc<Ctx>, f: F) -> impl Fn() -> Fut + Clone + Send + Sync + 'static
where
    F: Fn(Arc<Ctx>) -> Fut + Clone + Send + Sync + 'static,
{
    let ctx = Arc::clone(ctx);
    move || f(Arc::clone(&ctx))
}

async fn post(ctx: &Ctx, body: &'static str) -> Result<reqwest::Response, String> {
    let resp = ctx.http.post(&ctx.url).header("content-type", "application/json").body(body).send().await;
    let resp = resp.map_err(|e| format!("direct: {e}"))?;
    if !resp.status().is_success() {
        return Err(format!("direct: HTTP {}", resp.status()));
    }
    Ok(resp)
}

async fn direct_unary(ctx: Arc<Ctx>) -> Result<u64, String> {
    let t = Instant::now();
    post(&ctx, UNARY_BODY).await?.bytes().await.map_err(|e| format!("direct body: {e}"))?;
    Ok(micros(t.elapsed()))
}

/// Time to the first SSE event carrying non-empty `choices[0].delta.content`; requires `[DONE]`.
async fn direct_stream(ctx: Arc<Ctx>) -> Result<u64, String> {
    let t = Instant::now();
    let mut body = post(&ctx, STREAM_BODY).await?.bytes_stream();
    let (mut buf, mut scanned, mut first) = (Vec::<u8>::new(), 0usize, None);
    while let Some(chunk) = body.next().await {
        buf.extend_from_slice(&chunk.map_err(|e| format!("direct stream body: {e}"))?);
        while first.is_none() {
            let Some(nl) = buf[scanned..].iter().position(|&b| b == b'\n') else { break };
            let line = &buf[scanned..scanned + nl];
            scanned += nl + 1;
            let Some(data) = line.strip_prefix(b"data: ") else { continue };
            let v: Value = serde_json::from_slice(data).unwrap_or_default();
            if v["choices"][0]["delta"]["content"].as_str().is_some_and(|s| !s.is_empty()) {
                first = Some(micros(t.elapsed()));
            }
        }
    }
    match first {
        Some(us) if buf.windows(12).any(|w| w == b"data: [DONE]") => Ok(us),
        Some(_) => Err("direct stream: no [DONE]".into()),
        None => Err("direct stream: no content chunk".into()),
    }
}

fn request(model: &str) -> pb::GenerateRequest {
    let msg = pb::ChatMessage { role: pb::Role::User as i32, content: "hello".into(), ..Default::default() };
    pb::GenerateRequest { model: model.into(), messages: vec![msg], max_tokens: Some(16), ..Default::default() }
}

fn status_text(s: tonic::Status) -> String {
    format!("{:?}: {}", s.code(), s.message())
}

/// Generate; checks the answer and that it took exactly `attempts` attempts.
async fn worker_unary(ctx: Arc<Ctx>, model: &'static str, attempts: usize) -> Result<u64, String> {
    let t = Instant::now();
    let r = ctx.grpc.clone().generate(request(model)).await.map_err(status_text)?.into_inner();
    let us = micros(t.elapsed());
    if r.content.is_empty() {
        return Err("Generate: empty content".into());
    }
    if r.attempts.len() != attempts {
        let got: Vec<_> = r.attempts.iter().map(|a| (a.outcome, a.detail.clone())).collect();
        return Err(format!("Generate {model}: expected {attempts} attempts, got {got:?}"));
    }
    Ok(us)
}

/// GenerateStream: time to the first non-empty text delta; requires a Finish.
async fn worker_stream(ctx: Arc<Ctx>) -> Result<u64, String> {
    use pb::generate_stream_event::Event;
    let t = Instant::now();
    let mut s = ctx.grpc.clone().generate_stream(request("bench")).await.map_err(status_text)?.into_inner();
    let (mut first, mut finished) = (None, false);
    while let Some(ev) = s.message().await.map_err(status_text)? {
        match ev.event {
            Some(Event::TextDelta(d)) if first.is_none() && !d.is_empty() => first = Some(micros(t.elapsed())),
            Some(Event::Finish(_)) => finished = true,
            _ => {}
        }
    }
    match first {
        Some(us) if finished => Ok(us),
        Some(_) => Err("GenerateStream: ended without Finish".into()),
        None => Err("GenerateStream: no text delta".into()),
    }
}

/// A child's WARN/ERROR log lines (and any non-JSON output), counted and a few kept.
#[derive(Default)]
struct LogTap {
    warn: AtomicU64,
    error: AtomicU64,
    samples: Mutex<Vec<String>>,
}

impl LogTap {
    fn counts(&self) -> (u64, u64) {
        (self.warn.load(Ordering::Relaxed), self.error.load(Ordering::Relaxed))
    }
    fn samples(&self) -> Vec<String> {
        self.samples.lock().map(|s| s.clone()).unwrap_or_default()
    }
    fn see(&self, line: &str, v: &Value) {
        let counter = match v["level"].as_str() {
            Some("WARN") => &self.warn,
            Some("ERROR") => &self.error,
            None if !line.trim().is_empty() => &self.error, // not JSON: a panic, stderr text...
            _ => return,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let mut s = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        if s.len() < 8 {
            s.push(line.chars().take(400).collect());
        }
    }
}

/// Drains `r` line by line into `log` (a full pipe would block the child);
/// sends the `addr` of the first "data plane listening" line to `found`.
fn tap<R: AsyncRead + Unpin + Send + 'static>(r: R, log: Arc<LogTap>, found: Found) {
    tokio::spawn(async move {
        let (mut lines, mut found) = (BufReader::new(r).lines(), found);
        while let Ok(Some(line)) = lines.next_line().await {
            let v: Value = serde_json::from_str(&line).unwrap_or_default();
            if v["message"] == "data plane listening"
                && let (Some(tx), Some(addr)) = (found.take(), v["addr"].as_str())
            {
                let _ = tx.send(addr.to_string());
            }
            log.see(&line, &v);
        }
    });
}

/// The number after `key` in /proc/<pid>/status (kB for Vm* fields).
fn proc_status(pid: u32, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines().find_map(|l| l.strip_prefix(key))?.split_whitespace().next()?.parse().ok()
}

/// utime + stime of `pid`, in clock ticks (fields 14 and 15 of /proc/<pid>/stat).
fn cpu_ticks(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let f: Vec<&str> = text.get(text.rfind(')')? + 2..)?.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

fn clk_tck() -> u64 {
    let out = std::process::Command::new("getconf").arg("CLK_TCK").output().ok();
    out.and_then(|o| String::from_utf8(o.stdout).ok()?.trim().parse().ok()).filter(|&t| t > 0).unwrap_or(100)
}

fn id() -> String {
    uuid::Uuid::new_v4().to_string()
}

fn member(provider_id: &str, model: &str, priority: i32) -> pb::SnapshotMember {
    let status = pb::MemberStatus::Active as i32;
    let (id, provider_id, upstream_model) = (id(), provider_id.into(), model.into());
    pb::SnapshotMember { id, provider_id, upstream_model, weight: 1, priority, status, ..Default::default() }
}

fn pool(
    name: &str,
    s: pb::Strategy,
    retries: u32,
    threshold: u32,
    members: Vec<pb::SnapshotMember>,
) -> pb::SnapshotPool {
    let failover = pb::FailoverPolicy {
        transient_retries: retries,
        failure_threshold: threshold,
        cooldown_base_ms: 1000,
        cooldown_max_ms: 300_000,
        advance_on_permanent: false,
    };
    let (id, name, strategy) = (id(), name.into(), s as i32);
    pb::SnapshotPool { id, name, strategy, failover: Some(failover), enabled: true, members }
}

/// Revision 1: providers "fake" and "dead" (a closed port), pools "bench",
/// "bench-failover" and `extra` pools of 10 members. Also returns the dead member's id.
fn snapshot(base_url: &str, extra: usize) -> (pb::Snapshot, String) {
    let provider = |name: &str, url: &str| pb::SnapshotProvider {
        id: id(),
        name: name.into(),
        kind: pb::ProviderKind::Openai as i32,
        base_url: url.into(),
        timeouts: Some(pb::Timeouts { connect_ms: 1000, first_byte_ms: 5000, request_ms: 30_000 }),
        enabled: true,
        ..Default::default()
    };
    let (fake, dead) = (provider("fake", base_url), provider("dead", "http://127.0.0.1:1/v1"));
    let (dead_member, round_robin) = (member(&dead.id, "m1", 10), pb::Strategy::RoundRobin);
    let dead_id = dead_member.id.clone();
    let bench = ["m1", "m2", "m3"].iter().map(|m| member(&fake.id, m, 0)).collect();
    let mut pools = vec![
        pool("bench", round_robin, 1, 3, bench),
        // One attempt per member, never benched: every call fails over once.
        pool("bench-failover", pb::Strategy::Priority, 0, 1000, vec![dead_member, member(&fake.id, "m2", 0)]),
    ];
    for i in 0..extra {
        let members = (0..10).map(|j| member(&fake.id, &format!("x{j}"), 0)).collect();
        pools.push(pool(&format!("extra-{i:05}"), round_robin, 1, 3, members));
    }
    (pb::Snapshot { revision: 1, providers: vec![fake, dead], pools, ..Default::default() }, dead_id)
}

async fn redis_del_prefix(conn: &mut Redis, prefix: &str) -> redis::RedisResult<u64> {
    let (mut cursor, mut deleted) = (0u64, 0u64);
    for _ in 0..100_000 {
        let mut scan = redis::cmd("SCAN");
        scan.arg(cursor).arg("MATCH").arg(format!("{prefix}:*")).arg("COUNT").arg(1000);
        let (next, keys): (u64, Vec<String>) = scan.query_async(conn).await?;
        if !keys.is_empty() {
            deleted += redis::cmd("DEL").arg(&keys).query_async::<u64>(conn).await?;
        }
        cursor = next;
        if cursor == 0 {
            break;
        }
    }
    Ok(deleted)
}

/// Starts `path` with piped output; killed when the handle drops.
fn spawn(path: &Path, args: &[&str], env: &[(&str, &str)]) -> Result<Child, String> {
    let mut cmd = Command::new(path);
    cmd.args(args).envs(env.iter().copied()).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd.kill_on_drop(true).spawn().map_err(|e| format!("cannot start {}: {e}", path.display()))
}

/// Children (killed when dropped) and their logs.
#[derive(Default)]
struct Procs {
    fake: Option<Child>,
    worker: Option<Child>,
    fake_log: Arc<LogTap>,
    worker_log: Arc<LogTap>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let prefix = format!("bench_{}", uuid::Uuid::new_v4().simple());
    let redis = match redis::Client::open(args.redis_url.as_str()) {
        Ok(c) => c,
        Err(e) => return fail(&format!("bad REDIS_URL: {e}")),
    };
    let mut conn = match timeout(Duration::from_secs(5), redis.get_multiplexed_async_connection()).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => return fail(&format!("cannot connect to Redis at {}: {e}", args.redis_url)),
        Err(_) => return fail(&format!("Redis at {} did not answer within 5 s", args.redis_url)),
    };
    let mut procs = Procs::default();
    let result = run(&args, &prefix, &mut conn, &mut procs).await;
    let exited = procs.worker.as_mut().and_then(|c| c.try_wait().ok().flatten());
    drop((procs.worker.take(), procs.fake.take()));
    tokio::time::sleep(Duration::from_millis(200)).await;
    match redis_del_prefix(&mut conn, &prefix).await {
        Ok(n) => eprintln!("cleanup: deleted {n} Redis keys under {prefix}:"),
        Err(e) => eprintln!("cleanup: cannot delete {prefix}:* keys: {e}"),
    }
    if let Some(status) = exited {
        return fail(&format!(
            "the data plane exited during the run ({status}); its output: {:?}",
            procs.worker_log.samples()
        ));
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

fn fail(msg: &str) -> ExitCode {
    eprintln!("switchyard-bench: {msg}");
    ExitCode::FAILURE
}

/// Runs one scenario, counting the worker's WARN/ERROR log lines meanwhile.
async fn measure(log: &LogTap, name: &'static str, fut: impl Future<Output = Run>) -> (&'static str, Run, String) {
    eprintln!("running {name}...");
    let before = log.counts();
    let run = fut.await;
    let after = log.counts();
    (name, run, format!("{}/{}", after.0 - before.0, after.1 - before.1))
}

/// The fake's base URL, the snapshot stored, the dead member's id, a client of the worker, its pid.
type Ready = (String, pb::Snapshot, String, Client, u32);

/// Starts the fake upstream, stores the snapshot, starts the worker and waits until it serves revision 1.
async fn setup(args: &Args, prefix: &str, conn: &mut Redis, procs: &mut Procs, bin: &Path) -> Result<Ready, String> {
    let (chunks, delay) = (args.chunks.to_string(), args.chunk_delay_us.to_string());
    let fake_args = ["--listen", "127.0.0.1:0", "--chunks", &chunks, "--chunk-delay-us", &delay];
    let fake = procs.fake.insert(spawn(&bin.join("switchyard-fake-upstream"), &fake_args, &[])?);
    tap(fake.stderr.take().ok_or("fake upstream: no stderr")?, Arc::clone(&procs.fake_log), None);
    let mut lines = BufReader::new(fake.stdout.take().ok_or("fake upstream: no stdout")?).lines();
    let fake_addr = match timeout(Duration::from_secs(10), lines.next_line()).await {
        Ok(Ok(Some(l))) => {
            l.strip_prefix("listening on http://").map(str::to_string).ok_or(format!("fake upstream said {l:?}"))?
        }
        _ => {
            return Err(format!("fake upstream did not print its address within 10 s: {:?}", procs.fake_log.samples()));
        }
    };
    tap(lines.into_inner(), Arc::clone(&procs.fake_log), None);
    let base_url = format!("http://{fake_addr}/v1");

    let (snap, dead_member) = snapshot(&base_url, args.extra_pools);
    let change = json!({"revision": 1, "resource": "pool", "action": "created", "id": "", "name": "bench"});
    let writes = [
        ("SET", "config:snapshot", snap.encode_to_vec()),
        ("SET", "config:revision", b"1".to_vec()),
        ("PUBLISH", "config:changes", change.to_string().into_bytes()),
    ];
    for (cmd, key, value) in writes {
        let res = redis::cmd(cmd).arg(format!("{prefix}:{key}")).arg(value).query_async::<()>(conn).await;
        res.map_err(|e| format!("cannot {cmd} {prefix}:{key}: {e}"))?;
    }

    let env = [
        ("REDIS_URL", args.redis_url.as_str()),
        ("SWITCHYARD_REDIS_PREFIX", prefix),
        ("SWITCHYARD_LISTEN", "127.0.0.1:0"),
        ("SWITCHYARD_LOG_FORMAT", "json"),
        ("RUST_LOG", args.worker_log.as_str()),
    ];
    let worker = procs.worker.insert(spawn(&bin.join("switchyard-data-plane"), &[], &env)?);
    let (tx, rx) = tokio::sync::oneshot::channel();
    tap(worker.stdout.take().ok_or("worker: no stdout")?, Arc::clone(&procs.worker_log), Some(tx));
    tap(worker.stderr.take().ok_or("worker: no stderr")?, Arc::clone(&procs.worker_log), None);
    let pid = worker.id().ok_or("worker: no pid")?;
    let Ok(Ok(addr)) = timeout(Duration::from_secs(15), rx).await else {
        return Err(format!(
            "worker did not log \"data plane listening\" within 15 s: {:?}",
            procs.worker_log.samples()
        ));
    };
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| format!("bad worker address {addr}: {e}"))?;
    let channel = endpoint.connect_timeout(Duration::from_secs(2)).timeout(REQUEST_TIMEOUT).connect().await;
    let channel = channel.map_err(|e| format!("cannot connect to the worker at {addr}: {e}"))?;
    let client = Client::new(channel).max_decoding_message_size(256 << 20);
    for _ in 0..300 {
        if let Ok(r) = client.clone().list_models(pb::ListModelsRequest {}).await
            && r.into_inner().revision == 1
        {
            return Ok((base_url, snap, dead_member, client, pid));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err("worker did not serve revision 1 within 30 s".into())
}

async fn run(args: &Args, prefix: &str, conn: &mut Redis, procs: &mut Procs) -> Result<(), String> {
    let bin = match &args.bin_dir {
        Some(d) => d.clone(),
        None => {
            let exe = std::env::current_exe().map_err(|e| format!("cannot find own executable: {e}"))?;
            exe.parent().map(Path::to_path_buf).ok_or("own executable has no directory")?
        }
    };
    let started = Instant::now();
    let (base_url, snap, dead_member, grpc, pid) = setup(args, prefix, conn, procs, &bin).await?;
    let load_ms = started.elapsed().as_millis();
    let rss_loaded = proc_status(pid, "VmRSS:").unwrap_or(0);
    let http = reqwest::Client::builder().pool_max_idle_per_host(1024).timeout(REQUEST_TIMEOUT).build();
    let http = http.map_err(|e| format!("http client: {e}"))?;
    let ctx = Arc::new(Ctx { http, url: format!("{base_url}/chat/completions"), grpc });
    let (du, ds, ws) = (with(&ctx, direct_unary), with(&ctx, direct_stream), with(&ctx, worker_stream));
    let wu = with(&ctx, |c| worker_unary(c, "bench", 1));
    let wf = with(&ctx, |c| worker_unary(c, "bench-failover", 2));

    let (c, max, n, log) = (args.concurrency, Duration::from_secs(args.max_secs), args.warmup, &*procs.worker_log);
    eprintln!("warming up ({n} requests per kind)...");
    closed_loop(c, n, max, du.clone()).await;
    closed_loop(c, n, max, wu.clone()).await;
    closed_loop(c, n, max, ds.clone()).await;
    closed_loop(c, n, max, ws.clone()).await;
    closed_loop(c, n.min(100), max, wf.clone()).await;

    let mut rows = Vec::new();
    rows.push(measure(log, "a direct unary", closed_loop(c, args.requests, max, du.clone())).await);
    let cpu0 = cpu_ticks(pid);
    rows.push(measure(log, "b worker Generate", closed_loop(c, args.requests, max, wu.clone())).await);
    let cpu1 = cpu_ticks(pid);
    rows.push(measure(log, "c direct SSE (TTFC)", closed_loop(c, args.stream_requests, max, ds)).await);
    rows.push(measure(log, "c worker Stream (TTFT)", closed_loop(c, args.stream_requests, max, ws)).await);
    rows.push(measure(log, "e direct @rate", open_loop(args.rate, args.rate_secs, du)).await);
    rows.push(measure(log, "e worker @rate", open_loop(args.rate, args.rate_secs, wu.clone())).await);
    // Warm-up failures count towards benching the dead member (threshold 1000): start from zero.
    let del = redis::cmd("DEL").arg(format!("{prefix}:health:{dead_member}")).query_async::<()>(conn).await;
    del.map_err(|e| format!("redis DEL: {e}"))?;
    let nf = args.failover_requests.min(900);
    rows.push(measure(log, "f healthy pool", closed_loop(c, nf, max, wu)).await);
    rows.push(measure(log, "f failover pool", closed_loop(c, nf, max, wf)).await);
    let (hwm, rss_end) = (proc_status(pid, "VmHWM:").unwrap_or(0), proc_status(pid, "VmRSS:").unwrap_or(0));

    // Report: the table, derived figures, problems, then one JSON line.
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let (pools, extra) = (snap.pools.len(), args.extra_pools);
    println!(
        "\nSwitchyard data-plane benchmark: 127.0.0.1, {cores} cores, concurrency {c}, extra pools {extra} x 10 members"
    );
    println!("{:<24}      ok errors    p50 ms    p90 ms    p99 ms    max ms     req/s  dp w/e", "scenario");
    let mut scenarios = serde_json::Map::new();
    for (name, r, logs) in &rows {
        let [p50, p90, p99, max] = [r.p(0.5), r.p(0.9), r.p(0.99), r.hist.max()];
        let [m50, m90, m99, mmax] = [p50, p90, p99, max].map(|us| us as f64 / 1000.0);
        let (ok, err, rps) = (r.ok, r.errors, r.rps());
        println!("{name:<24} {ok:>7} {err:>6} {m50:>9.3} {m90:>9.3} {m99:>9.3} {mmax:>9.3} {rps:>9.0} {logs:>7}");
        let rps = (rps * 10.0).round() / 10.0;
        let row =
            json!({"ok": ok, "errors": err, "p50_us": p50, "p90_us": p90, "p99_us": p99, "max_us": max, "rps": rps});
        scenarios.insert(name.to_string(), row);
    }
    let [a, b, cd, cw, ed, ew, fh, ff] = [0, 1, 2, 3, 4, 5, 6, 7].map(|i| &rows[i].1);
    let mut summary = json!({"bench": "switchyard-data-plane", "concurrency": c, "extra_pools": args.extra_pools, "scenarios": scenarios});
    let mut added = |label: &str, key: &str, x: &Run, base: &Run, extra: String| {
        let (d50, d99) = (x.p(0.5) as i64 - base.p(0.5) as i64, x.p(0.99) as i64 - base.p(0.99) as i64);
        println!("  {label:<38} p50 {:+.3} ms   p99 {:+.3} ms{extra}", d50 as f64 / 1000.0, d99 as f64 / 1000.0);
        summary[format!("{key}_p50_us")] = json!(d50);
        summary[format!("{key}_p99_us")] = json!(d99);
    };
    println!("\nderived figures");
    added("added latency, unary (b - a)", "added_unary", b, a, String::new());
    added("added time to first token (c)", "added_ttft", cw, cd, String::new());
    let (lag_d, lag_w) = (ed.lag_p99_us as f64 / 1000.0, ew.lag_p99_us as f64 / 1000.0);
    let rate = format!(
        "  (worker at {} req/s for {} s: achieved {:.0} req/s; send lag p99 {lag_d:.3} / {lag_w:.3} ms)",
        args.rate,
        args.rate_secs,
        ew.rps()
    );
    added("added latency at fixed rate (e)", "added_rate", ew, ed, rate);
    added("failover added latency (f)", "failover_added", ff, fh, format!("  ({nf} requests each)"));
    let (brps, arps) = (b.rps(), a.rps());
    println!("  {:<38} {brps:.0} req/s at concurrency {c} (direct: {arps:.0} req/s)", "throughput via worker (d)");
    let tck = clk_tck();
    let cpu_us = match (cpu0, cpu1) {
        (Some(x), Some(y)) if b.ok + b.errors > 0 => Some((y - x) as f64 * 1e6 / tck as f64 / (b.ok + b.errors) as f64),
        _ => None,
    };
    match cpu_us {
        Some(v) => println!("  {:<38} {v:.1} us (user+sys during b, CLK_TCK {tck})", "worker CPU per request (g)"),
        None => println!("  {:<38} unavailable (/proc/{pid}/stat unreadable)", "worker CPU per request (g)"),
    }
    let members: usize = snap.pools.iter().map(|p| p.members.len()).sum();
    let [loaded, end, peak] = [rss_loaded, rss_end, hwm].map(|kib| kib as f64 / 1024.0);
    let rss =
        format!("{loaded:.1} MiB after loading {pools} pools / {members} members (ready {load_ms} ms after start)");
    println!("  {:<38} {rss}; {end:.1} MiB at end, peak {peak:.1} MiB", "worker RSS (h)");
    summary["throughput_rps"] = json!(b.rps().round());
    summary["rate_target_rps"] = json!(args.rate);
    summary["rate_achieved_rps"] = json!(ew.rps().round());
    summary["rate_send_lag_p99_us"] = json!({"direct": ed.lag_p99_us, "worker": ew.lag_p99_us});
    summary["cpu_us_per_request"] = json!(cpu_us.map(|v| (v * 10.0).round() / 10.0));
    summary["rss_loaded_kib"] = json!(rss_loaded);
    summary["rss_peak_kib"] = json!(hwm);
    summary["pools"] = json!(pools);
    summary["members"] = json!(members);

    let mut problems: Vec<String> =
        rows.iter().flat_map(|(n, r, _)| r.samples.iter().map(move |s| format!("{n}: {s}"))).collect();
    for (who, log) in [("worker", &procs.worker_log), ("fake upstream", &procs.fake_log)] {
        let (w, e) = log.counts();
        summary[format!("{}_warn_error_lines", who.replace(' ', "_"))] = json!([w, e]);
        if w + e > 0 {
            problems.push(format!("{who} logged {w} WARN and {e} ERROR/other lines; first ones:"));
            problems.extend(log.samples().into_iter().map(|s| format!("  {s}")));
        }
    }
    println!("\nproblems: {}", if problems.is_empty() { "none" } else { "" });
    problems.iter().for_each(|p| println!("  {p}"));
    println!("\n{summary}");
    Ok(())
}
