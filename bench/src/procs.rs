//! The child processes: starting the fake upstream and workers (killed when
//! dropped), tapping their logs, and reading their CPU time and memory from /proc.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use switchyard_proto::v1 as pb;
use tokio::io::{AsyncBufReadExt as _, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::time::{Instant, timeout};

use crate::calls::Client;
use crate::load::REQUEST_TIMEOUT;
use crate::stats::lock;

/// Log messages whose `addr` field a caller waits for, each with where to send it.
type Found = Vec<(&'static str, tokio::sync::oneshot::Sender<String>)>;

/// The worker's gRPC listening line, and its HTTP door's.
const GRPC_LISTENING: &str = "data plane listening";
const DOOR_LISTENING: &str = "OpenAI-compatible HTTP door listening";

/// A child's WARN/ERROR log lines (and any non-JSON output), counted and a
/// few kept; lines whose message the scenario expects are counted apart.
#[derive(Default)]
pub struct LogTap {
    warn: AtomicU64,
    error: AtomicU64,
    expected: AtomicU64,
    expected_messages: Vec<&'static str>,
    samples: Mutex<Vec<String>>,
}

impl LogTap {
    pub fn expecting(expected_messages: &[&'static str]) -> Self {
        Self { expected_messages: expected_messages.to_vec(), ..Self::default() }
    }
    pub fn counts(&self) -> (u64, u64) {
        (self.warn.load(Ordering::Relaxed), self.error.load(Ordering::Relaxed))
    }
    /// WARN lines with an expected message.
    pub fn expected(&self) -> u64 {
        self.expected.load(Ordering::Relaxed)
    }
    pub fn samples(&self) -> Vec<String> {
        lock(&self.samples).clone()
    }
    fn see(&self, line: &str, v: &Value) {
        let counter = match v["level"].as_str() {
            // The bench runs workers with --no-auth on purpose.
            Some("WARN")
                if v["message"]
                    .as_str()
                    .is_some_and(|m| self.expected_messages.contains(&m) || m.starts_with("authentication is OFF")) =>
            {
                self.expected.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Some("WARN") => &self.warn,
            Some("ERROR") => &self.error,
            None if !line.trim().is_empty() => &self.error, // not JSON: a panic, stderr text...
            _ => return,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let mut s = lock(&self.samples);
        if s.len() < 8 {
            s.push(line.chars().take(400).collect());
        }
    }
}

/// Drains `r` line by line into `log` (a full pipe would block the child);
/// sends the `addr` of the first line with each message in `found` to its sender.
/// The task ends when the child closes the pipe (it exits or is killed).
fn tap<R: AsyncRead + Unpin + Send + 'static>(r: R, log: Arc<LogTap>, found: Found) {
    tokio::spawn(async move {
        let (mut lines, mut found) = (BufReader::new(r).lines(), found);
        while let Ok(Some(line)) = lines.next_line().await {
            let v: Value = serde_json::from_str(&line).unwrap_or_default();
            if let Some(addr) = v["addr"].as_str()
                && let Some(i) = found.iter().position(|(m, _)| v["message"] == *m)
            {
                let _ = found.swap_remove(i).1.send(addr.to_string());
            }
            log.see(&line, &v);
        }
    });
}

/// Starts `path` with piped output; killed when the handle drops.
fn spawn(path: &Path, args: &[&str], env: &[(&str, &str)]) -> Result<Child, String> {
    spawn_wrapped(&[], path, args, env)
}

/// Starts `path` behind `wrapper` (a program and its arguments, `path`
/// appended; none: `path` itself) with piped output; killed when the handle drops.
fn spawn_wrapped(wrapper: &[String], path: &Path, args: &[&str], env: &[(&str, &str)]) -> Result<Child, String> {
    let mut cmd = match wrapper.split_first() {
        Some((program, wrapper_args)) => {
            let mut cmd = Command::new(program);
            cmd.args(wrapper_args).arg(path);
            cmd
        }
        None => Command::new(path),
    };
    // Many workers run at once: each serves metrics on a port of its own.
    cmd.env("SWITCHYARD_METRICS_LISTEN", "127.0.0.1:0");
    cmd.args(args).envs(env.iter().copied()).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let shown = wrapper.first().map_or(path.display().to_string(), |w| format!("{w} {}", path.display()));
    cmd.kill_on_drop(true).spawn().map_err(|e| format!("cannot start {shown}: {e}"))
}

/// Where switchyard-data-plane and switchyard-fake-upstream are: `--bin-dir`, else next to this binary.
pub fn bin_dir(flag: Option<&PathBuf>) -> Result<PathBuf, String> {
    match flag {
        Some(d) => Ok(d.clone()),
        None => {
            let exe = std::env::current_exe().map_err(|e| format!("cannot find own executable: {e}"))?;
            exe.parent().map(Path::to_path_buf).ok_or_else(|| "own executable has no directory".into())
        }
    }
}

/// The running `switchyard-fake-upstream`.
pub struct Fake {
    _child: Child,
    pub pid: u32,
    /// `http://127.0.0.1:PORT/v1`
    pub base_url: String,
    pub log: Arc<LogTap>,
}

pub async fn start_fake(bin: &Path, chunks: usize, chunk_delay_us: u64) -> Result<Fake, String> {
    let args = ["--chunks".to_owned(), chunks.to_string(), "--chunk-delay-us".into(), chunk_delay_us.to_string()];
    start_fake_with(bin, &args).await
}

/// Starts the fake with more flags (`--latency`, `--rate-limit`, ...).
pub async fn start_fake_with(bin: &Path, extra: &[String]) -> Result<Fake, String> {
    let mut fake_args = vec!["--listen", "127.0.0.1:0"];
    fake_args.extend(extra.iter().map(String::as_str));
    let mut child = spawn(&bin.join("switchyard-fake-upstream"), &fake_args, &[])?;
    let log = Arc::new(LogTap::default());
    tap(child.stderr.take().ok_or("fake upstream: no stderr")?, Arc::clone(&log), Vec::new());
    let pid = child.id().ok_or("fake upstream: no pid")?;
    let mut lines = BufReader::new(child.stdout.take().ok_or("fake upstream: no stdout")?).lines();
    let addr = match timeout(Duration::from_secs(10), lines.next_line()).await {
        Ok(Ok(Some(l))) => {
            l.strip_prefix("listening on http://").map(str::to_string).ok_or(format!("fake upstream said {l:?}"))?
        }
        _ => return Err(format!("fake upstream did not print its address within 10 s: {:?}", log.samples())),
    };
    tap(lines.into_inner(), Arc::clone(&log), Vec::new());
    Ok(Fake { _child: child, pid, base_url: format!("http://{addr}/v1"), log })
}

/// How a worker is started.
pub struct WorkerConf<'a> {
    pub redis_url: &'a str,
    pub prefix: &'a str,
    /// RUST_LOG; it must keep the "data plane listening" info line.
    pub log_filter: &'a str,
    /// Revision the worker must serve before it counts as ready.
    pub revision: u64,
    /// WARN messages the scenario causes on purpose (not counted as problems).
    pub expected_warnings: &'a [&'static str],
}

/// A running `switchyard-data-plane`.
pub struct Worker {
    pub name: String,
    child: Child,
    pub pid: u32,
    pub grpc: Client,
    /// The HTTP door's address (host:port), when launched with it.
    pub door: Option<String>,
    pub log: Arc<LogTap>,
}

/// A worker that was stopped: what its log said and whether it had exited on its own.
pub struct Stopped {
    pub name: String,
    pub log: Arc<LogTap>,
    pub exited_early: Option<ExitStatus>,
}

impl Worker {
    /// Its exit status if it exited (it should not, before the bench stops it).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Kills it and waits (at most 5 s) until it is gone.
    pub async fn stop(mut self) -> Stopped {
        let exited_early = self.exited();
        let _ = self.child.start_kill();
        let _ = timeout(Duration::from_secs(5), self.child.wait()).await;
        Stopped { name: self.name, log: self.log, exited_early }
    }

    /// Sends SIGTERM (the worker's graceful shutdown, so a wrapper such as
    /// valgrind writes its output) and waits `within` for the exit; kills it
    /// if it has not exited by then.
    pub async fn terminate(mut self, within: Duration) -> Result<ExitStatus, String> {
        if let Some(status) = self.exited() {
            return Err(format!("{} exited before it was stopped ({status}): {:?}", self.name, self.log.samples()));
        }
        let sent = std::process::Command::new("kill").args(["-TERM", &self.pid.to_string()]).status();
        if !sent.is_ok_and(|s| s.success()) {
            return Err(format!("cannot send SIGTERM to {} (pid {})", self.name, self.pid));
        }
        match timeout(within, self.child.wait()).await {
            Ok(Ok(status)) => Ok(status),
            Ok(Err(e)) => Err(format!("cannot wait for {}: {e}", self.name)),
            Err(_) => {
                let _ = self.child.start_kill();
                Err(format!("{} did not exit within {within:?} of SIGTERM", self.name))
            }
        }
    }
}

/// How a worker process is launched, beyond [`WorkerConf`].
pub struct Launch {
    /// A program and its arguments in front of the worker binary (valgrind); none: the binary itself.
    pub wrapper: Vec<String>,
    /// Also serve the HTTP door on 127.0.0.1:0 ([`Worker::door`] is its address).
    pub door: bool,
    /// How long the worker may take to log that it listens.
    pub start_within: Duration,
}

impl Default for Launch {
    fn default() -> Self {
        Self { wrapper: Vec::new(), door: false, start_within: Duration::from_secs(15) }
    }
}

/// Starts a worker on 127.0.0.1:0 and waits until ListModels reports `conf.revision`.
pub async fn start_worker(bin: &Path, name: &str, conf: &WorkerConf<'_>) -> Result<Worker, String> {
    start_worker_with(bin, name, conf, &Launch::default()).await
}

/// [`start_worker`], launched as `launch` says.
pub async fn start_worker_with(
    bin: &Path,
    name: &str,
    conf: &WorkerConf<'_>,
    launch: &Launch,
) -> Result<Worker, String> {
    let mut env = vec![
        ("REDIS_URL", conf.redis_url),
        ("SWITCHYARD_REDIS_PREFIX", conf.prefix),
        ("SWITCHYARD_LISTEN", "127.0.0.1:0"),
        ("SWITCHYARD_LOG_FORMAT", "json"),
        ("RUST_LOG", conf.log_filter),
        // The failover scenario fails every first attempt on purpose: a
        // budget of one retry per first attempt keeps it measuring failover.
        ("SWITCHYARD_RETRY_BUDGET_PERCENT", "100"),
        // The router's own cost, as before caller keys: no key check.
        ("SWITCHYARD_NO_AUTH", "true"),
    ];
    if launch.door {
        env.push(("SWITCHYARD_HTTP_LISTEN", "127.0.0.1:0"));
    }
    let mut child = spawn_wrapped(&launch.wrapper, &bin.join("switchyard-data-plane"), &[], &env)?;
    let log = Arc::new(LogTap::expecting(conf.expected_warnings));
    let (grpc_tx, grpc_rx) = tokio::sync::oneshot::channel();
    let (door_tx, door_rx) = tokio::sync::oneshot::channel();
    let mut found = vec![(GRPC_LISTENING, grpc_tx)];
    if launch.door {
        found.push((DOOR_LISTENING, door_tx));
    }
    tap(child.stdout.take().ok_or("worker: no stdout")?, Arc::clone(&log), found);
    tap(child.stderr.take().ok_or("worker: no stderr")?, Arc::clone(&log), Vec::new());
    let pid = child.id().ok_or("worker: no pid")?;
    let within = launch.start_within;
    let Ok(Ok(addr)) = timeout(within, grpc_rx).await else {
        return Err(format!("{name} did not log \"{GRPC_LISTENING}\" within {within:?}: {:?}", log.samples()));
    };
    let door = match launch.door {
        false => None,
        true => match timeout(within, door_rx).await {
            Ok(Ok(addr)) => Some(addr),
            _ => return Err(format!("{name} did not log \"{DOOR_LISTENING}\" within {within:?}: {:?}", log.samples())),
        },
    };
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| format!("bad {name} address {addr}: {e}"))?;
    let channel = endpoint.connect_timeout(Duration::from_secs(2)).timeout(REQUEST_TIMEOUT).connect().await;
    let channel = channel.map_err(|e| format!("cannot connect to {name} at {addr}: {e}"))?;
    let grpc = Client::new(channel).max_decoding_message_size(256 << 20);
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let listed = timeout(Duration::from_secs(10), grpc.clone().list_models(pb::ListModelsRequest {})).await;
        if let Ok(Ok(r)) = listed
            && r.into_inner().revision == conf.revision
        {
            return Ok(Worker { name: name.into(), child, pid, grpc, door, log });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(format!("{name} did not serve revision {} within 30 s: {:?}", conf.revision, log.samples()))
}

/// The number after `key` in /proc/<pid>/status (kB for Vm* fields).
pub fn proc_status(pid: u32, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines().find_map(|l| l.strip_prefix(key))?.split_whitespace().next()?.parse().ok()
}

/// utime + stime of `pid`, in clock ticks (fields 14 and 15 of /proc/<pid>/stat).
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let f: Vec<&str> = text.get(text.rfind(')')? + 2..)?.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// Clock ticks per second (`getconf CLK_TCK`, else 100).
pub fn clk_tck() -> u64 {
    let out = std::process::Command::new("getconf").arg("CLK_TCK").output().ok();
    out.and_then(|o| String::from_utf8(o.stdout).ok()?.trim().parse().ok()).filter(|&t| t > 0).unwrap_or(100)
}
