//! `switchyard-bench instructions`: the performance gate. Counts the
//! instructions the worker spends per request under callgrind, on four paths
//! (gRPC Generate and GenerateStream, the HTTP door's chat completion unary
//! and streamed), and compares them with the committed baseline.
//!
//! Per path, two runs of a fresh worker under callgrind against the same
//! (native) fake upstream, requests one at a time: `--large` requests, then
//! `--small`. Instructions per request = (total of the large run − total of
//! the small) / (large − small), so start-up, shutdown and the first
//! requests' one-off work cancel out. The small run stays up until as long
//! after its first request as the large run took for all of its own, so the
//! worker's background ticks (signals, slot leases, heartbeat: work per
//! second, not per request) cancel out too.

mod baseline;
mod callgrind;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::ValueEnum;
use serde_json::json;
use switchyard_shared::keys::RedisKeys;
use tokio::time::{Instant, timeout};

use crate::args::Args;
use crate::calls::{self, Ctx};
use crate::config::{self, Redis};
use crate::load::REQUEST_TIMEOUT;
use crate::procs::{self, Fake, Launch, WorkerConf};
use baseline::Verdict;

const DEFAULT_BASELINE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/instructions.json");
/// The measured workers' RUST_LOG: the two listening lines, nothing per request.
const WORKER_LOG: &str = "warn,switchyard_data_plane::server=info,switchyard_data_plane::door=info";
/// The worker's start-up warning without SWITCHYARD_MASTER_KEY, as the bench runs it.
const NO_MASTER_KEY: &str = "no master key: the config snapshot in Redis is not authenticated; anyone who can \
    write Redis can change what this worker serves (give SWITCHYARD_MASTER_KEY)";
/// Bounds of one run under callgrind (about 50 times slower than native).
const START_WITHIN: Duration = Duration::from_secs(120);
const REQUESTS_WITHIN: Duration = Duration::from_secs(300);
const EXIT_WITHIN: Duration = Duration::from_secs(60);

/// A request path the gate measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum GatePath {
    /// gRPC `Generate` on pool `bench`.
    GrpcUnary,
    /// gRPC `GenerateStream` on pool `bench`, read to its Finish.
    GrpcStream,
    /// The HTTP door: `POST /v1/chat/completions` on model `bench`.
    DoorUnary,
    /// The same with `stream: true`, read to `[DONE]`.
    DoorStream,
}

impl GatePath {
    fn name(self) -> String {
        self.to_possible_value().map(|v| v.get_name().to_string()).unwrap_or_default()
    }

    fn door(self) -> bool {
        matches!(self, GatePath::DoorUnary | GatePath::DoorStream)
    }

    /// One request on this path; an error when the answer is not a good one.
    async fn call(self, ctx: &Arc<Ctx>) -> Result<u64, String> {
        match self {
            GatePath::GrpcUnary => calls::worker_unary(Arc::clone(ctx), "bench", 1).await,
            GatePath::GrpcStream => calls::worker_stream(Arc::clone(ctx)).await,
            GatePath::DoorUnary => calls::door_unary(&ctx.http, &ctx.url, "bench").await,
            GatePath::DoorStream => calls::door_stream(&ctx.http, &ctx.url, "bench").await,
        }
    }
}

/// Flags of `switchyard-bench instructions`.
#[derive(clap::Args, Debug)]
pub struct GateArgs {
    /// The committed baseline to compare with (or to write).
    #[arg(long, default_value = DEFAULT_BASELINE)]
    pub baseline: PathBuf,
    /// Write the figures measured now into --baseline (with the commit and the date) instead of comparing.
    #[arg(long)]
    pub update_baseline: bool,
    /// A path more than this many percent above its baseline fails; as far below, it asks for an update.
    #[arg(long, default_value_t = 5.0)]
    pub tolerance_percent: f64,
    /// Paths to measure (comma-separated); default: all four.
    #[arg(long, value_enum, value_delimiter = ',')]
    pub paths: Vec<GatePath>,
    /// Requests of each path's small run.
    #[arg(long, default_value_t = 200)]
    pub small: u64,
    /// Requests of each path's large run.
    #[arg(long, default_value_t = 1000)]
    pub large: u64,
    /// Measure every path this many times: the spread is reported, the mean compared.
    #[arg(long, default_value_t = 1)]
    pub repeat: u32,
    /// The valgrind program.
    #[arg(long, default_value = "valgrind")]
    pub valgrind: String,
    /// Keep the callgrind output files in this directory (default: a temporary one, deleted).
    #[arg(long)]
    pub keep_out: Option<PathBuf>,
}

/// What every run of the gate shares.
struct Gate<'a> {
    args: &'a GateArgs,
    bin: PathBuf,
    redis_url: &'a str,
    prefix: &'a str,
    _fake: Fake,
    out: OutDir,
}

/// Where the callgrind files go; a temporary directory is removed on drop.
struct OutDir {
    dir: PathBuf,
    keep: bool,
}

impl OutDir {
    fn new(keep: Option<&PathBuf>, prefix: &str) -> Result<Self, String> {
        let (dir, keep) = match keep {
            Some(d) => (d.clone(), true),
            None => (std::env::temp_dir().join(format!("switchyard-gate-{prefix}")), false),
        };
        std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        Ok(Self { dir, keep })
    }
}

impl Drop for OutDir {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// One path's figures: instructions per request, one per repetition.
struct Measured {
    path: GatePath,
    runs: Vec<f64>,
}

impl Measured {
    fn mean(&self) -> f64 {
        self.runs.iter().sum::<f64>() / self.runs.len().max(1) as f64
    }

    /// (max − min) / mean, in percent.
    fn spread_percent(&self) -> f64 {
        let (lo, hi) = self.runs.iter().fold((f64::MAX, f64::MIN), |(lo, hi), &v| (lo.min(v), hi.max(v)));
        if self.runs.len() < 2 { 0.0 } else { (hi - lo) / self.mean() * 100.0 }
    }
}

/// Measures, prints, then compares with the baseline (an error names every
/// path above it) or writes a new one.
pub async fn run(args: &Args, gate: &GateArgs, prefix: &str, mut conn: Redis) -> Result<(), String> {
    if gate.small == 0 || gate.large <= gate.small {
        return Err("--large must be above --small, and --small above 0".into());
    }
    let valgrind = callgrind::version(&gate.valgrind)?;
    let bin = procs::bin_dir(args.bin_dir.as_ref())?;
    let profile = bin.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let old =
        if gate.baseline.exists() || !gate.update_baseline { Some(baseline::read(&gate.baseline)?) } else { None };
    let fake = procs::start_fake(&bin, 5, 0).await?;
    config::publish(&mut conn, &RedisKeys::new(prefix), &config::bench_snapshot(&fake.base_url, 0)).await?;
    let out = OutDir::new(gate.keep_out.as_ref(), prefix)?;
    let g = Gate { args: gate, bin, redis_url: &args.redis_url, prefix, _fake: fake, out };
    let paths = if gate.paths.is_empty() { GatePath::value_variants().to_vec() } else { gate.paths.clone() };
    let started = Instant::now();
    let mut measured: Vec<Measured> = paths.iter().map(|&path| Measured { path, runs: Vec::new() }).collect();
    for round in 1..=gate.repeat.max(1) {
        for m in &mut measured {
            let per_request = g.per_request(m.path, round).await?;
            eprintln!("{} (round {round}): {per_request:.0} instructions per request", m.path.name());
            m.runs.push(per_request);
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let head = format!(
        "instructions per request of switchyard-data-plane (callgrind, ({} - {}) requests per path, \
         profile {profile}, {valgrind}; measured in {secs:.0} s)",
        gate.large, gate.small
    );
    if gate.update_baseline {
        print_table(&head, &measured, None, gate.tolerance_percent);
        let (commit, date) = baseline::provenance(gate.baseline.parent().unwrap_or(Path::new(".")));
        let meta = json!({"about": "switchyard-bench instructions (bench/README.md): instructions per request of the \
                worker, callgrind, (total at the large run - total at the small) / difference",
            "commit": commit, "date": date, "profile": profile, "valgrind": valgrind,
            "requests": {"small": gate.small, "large": gate.large}});
        let meta = meta.as_object().cloned().unwrap_or_default();
        let figures: Vec<(String, f64)> = measured.iter().map(|m| (m.path.name(), m.mean())).collect();
        baseline::write(&gate.baseline, old, &figures, meta)?;
        println!("baseline written: {} ({commit}, {date})", gate.baseline.display());
        return Ok(());
    }
    let Some(old) = old else { return Err("no baseline".into()) };
    let head = format!("{head}\nbaseline: {} ({})", gate.baseline.display(), old.measured_at());
    print_table(&head, &measured, Some(&old), gate.tolerance_percent);
    compare(&measured, &old, &profile, gate)
}

impl Gate<'_> {
    /// One path's instructions per request: a large run, then a small one held as long.
    async fn per_request(&self, path: GatePath, round: u32) -> Result<f64, String> {
        let (large_total, took) = self.counted_run(path, self.args.large, round, None).await?;
        let (small_total, _) = self.counted_run(path, self.args.small, round, Some(took)).await?;
        if large_total <= small_total {
            return Err(format!(
                "{}: the large run counted {large_total} instructions, the small one {small_total}",
                path.name()
            ));
        }
        Ok((large_total - small_total) as f64 / (self.args.large - self.args.small) as f64)
    }

    /// A worker under callgrind serving `n` requests on `path` one at a time,
    /// then idle until `hold` after the first (if given), then stopped with
    /// SIGTERM: its total instructions and how long the requests took.
    async fn counted_run(
        &self,
        path: GatePath,
        n: u64,
        round: u32,
        hold: Option<Duration>,
    ) -> Result<(u64, Duration), String> {
        let name = format!("worker-{}-{n}-{round}", path.name());
        let file = self.out.dir.join(format!("callgrind.{name}.out"));
        let wrapper = callgrind::wrapper(&self.args.valgrind, &file);
        let launch = Launch { wrapper, door: path.door(), start_within: START_WITHIN };
        let conf = WorkerConf {
            redis_url: self.redis_url,
            prefix: self.prefix,
            log_filter: WORKER_LOG,
            revision: 1,
            expected_warnings: &[NO_MASTER_KEY],
        };
        let worker = procs::start_worker_with(&self.bin, &name, &conf, &launch).await?;
        let http = reqwest::Client::builder().timeout(REQUEST_TIMEOUT).build().map_err(|e| format!("http: {e}"))?;
        let url = worker.door.as_ref().map(|a| format!("http://{a}/v1/chat/completions")).unwrap_or_default();
        let ctx = Arc::new(Ctx { http, url, grpc: worker.grpc.clone() });
        let start = Instant::now();
        for i in 0..n {
            match timeout(REQUEST_TIMEOUT, path.call(&ctx)).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(format!("{name}: request {i}: {e}")),
                Err(_) => return Err(format!("{name}: request {i} took more than {REQUEST_TIMEOUT:?}")),
            }
            if start.elapsed() > REQUESTS_WITHIN {
                return Err(format!("{name}: {i} requests took more than {REQUESTS_WITHIN:?}"));
            }
        }
        let took = start.elapsed();
        if let Some(hold) = hold {
            tokio::time::sleep_until(start + hold).await;
        }
        drop(ctx);
        let (warn, error) = worker.log.counts();
        let samples = worker.log.samples();
        let status = worker.terminate(EXIT_WITHIN).await?;
        if !status.success() {
            return Err(format!("{name} exited with {status}: {samples:?}"));
        }
        if warn + error > 0 {
            eprintln!("note: {name} logged {warn} WARN and {error} ERROR/other lines: {samples:?}");
        }
        let total = callgrind::total(&file)?;
        if !self.out.keep {
            let _ = std::fs::remove_file(&file);
        }
        Ok((total, took))
    }
}

fn print_table(head: &str, measured: &[Measured], old: Option<&baseline::Baseline>, tolerance: f64) {
    println!("\n{head}");
    let runs = measured.first().map_or(1, |m| m.runs.len());
    let spread = if runs > 1 { format!("{:>10}", "spread") } else { String::new() };
    println!("{:<12} {:>12}{spread} {:>12} {:>7}  verdict", "path", "measured", "baseline", "ratio");
    for m in measured {
        let (mean, name) = (m.mean(), m.path.name());
        let base = old.and_then(|b| b.figures.get(&name).copied());
        let spread = if runs > 1 { format!("{:>9.2}%", m.spread_percent()) } else { String::new() };
        let (verdict, ratio) = baseline::judge(mean, base, tolerance);
        let verdict = match (old, verdict) {
            (None, _) => "(baseline written)",
            (_, Verdict::Ok) => "ok",
            (_, Verdict::Above) => "ABOVE THE BASELINE",
            (_, Verdict::Below) => "below the baseline: update it",
            (_, Verdict::New) => "not in the baseline",
        };
        let base = base.map_or("-".into(), |b| format!("{b:.0}"));
        let ratio = ratio.map_or("-".into(), |r| format!("{r:.3}"));
        println!("{name:<12} {mean:>12.0}{spread} {base:>12} {ratio:>7}  {verdict}");
        if runs > 1 {
            let each: Vec<String> = m.runs.iter().map(|r| format!("{r:.0}")).collect();
            println!("{:<12} runs: {}", "", each.join(", "));
        }
    }
}

/// Err naming every path more than the tolerance above its baseline; notes
/// for the paths as far below (their baseline should come down with the change).
fn compare(measured: &[Measured], old: &baseline::Baseline, profile: &str, gate: &GateArgs) -> Result<(), String> {
    let tol = gate.tolerance_percent;
    if let Some(base_profile) = old.profile.as_deref().filter(|p| *p != profile) {
        return Err(format!(
            "the baseline was measured on a worker built with profile {base_profile}, this one with {profile}: \
             the figures do not compare (build with --profile {base_profile}, or pass --bin-dir)"
        ));
    }
    let mut above = Vec::new();
    for m in measured {
        let (name, mean) = (m.path.name(), m.mean());
        let base = old.figures.get(&name).copied();
        let (verdict, ratio) = baseline::judge(mean, base, tol);
        let (base, ratio) = (base.unwrap_or_default(), ratio.unwrap_or_default());
        let line = format!(
            "{name}: {mean:.0} instructions per request, baseline {base:.0}, ratio {ratio:.3} ({:+.1} %)",
            (ratio - 1.0) * 100.0
        );
        match verdict {
            Verdict::Ok => {}
            Verdict::Above => above.push(line),
            Verdict::Below => println!(
                "note: {line}: more than {tol} % below the baseline; if the change is meant, \
                 update it in the same commit: switchyard-bench instructions --update-baseline"
            ),
            Verdict::New => println!("note: {name} has no baseline figure: add it with --update-baseline"),
        }
    }
    if above.is_empty() {
        println!("instructions gate: passed (every path within +{tol} % of {})", gate.baseline.display());
        return Ok(());
    }
    Err(format!(
        "instructions gate FAILED: more than +{tol} % above the baseline ({}):\n  {}",
        gate.baseline.display(),
        above.join("\n  ")
    ))
}
