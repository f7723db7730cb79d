//! Private Redis servers for tests: a real 3-master Redis Cluster and a TLS-only server, on loopback.

use crate::certs::TestCerts;
use std::fs::File;
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// How long a server may take to answer its first PING.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `redis-cli --cluster create` may take.
const CLUSTER_CREATE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the cluster may take to report `cluster_state:ok` on every node after creation.
const CLUSTER_OK_TIMEOUT: Duration = Duration::from_secs(15);
/// How long one `redis-cli` probe (PING, CLUSTER INFO) may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause between probes.
const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// Start attempts (each with fresh ports) when a chosen port was taken before the server bound it.
const START_ATTEMPTS: usize = 3;
/// Redis Cluster's bus listens on the client port plus this.
const CLUSTER_BUS_OFFSET: u16 = 10_000;
/// Slots of a Redis Cluster.
const CLUSTER_SLOTS: u32 = 16_384;

/// A real Redis Cluster of three masters (no replicas) on 127.0.0.1, each node a `redis-server`
/// of its own in a temp dir. Every process is killed (SIGKILL) and reaped on drop.
///
/// ```no_run
/// # async fn demo() {
/// let cluster = switchyard_testkit::redis_servers::RedisCluster::start().await;
/// let client = redis::cluster::ClusterClient::new(cluster.urls()).expect("cluster client");
/// # let _ = client;
/// # }
/// ```
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<ServerProcess>,
}

impl RedisCluster {
    /// Starts three cluster-enabled nodes, joins them with `redis-cli --cluster create` and
    /// waits (up to 15 s) until every node reports `cluster_state:ok`, all 16384 slots
    /// assigned and three known nodes.
    ///
    /// # Panics
    ///
    /// If `redis-server` or `redis-cli` is missing, or the cluster does not come up in time.
    pub async fn start() -> Self {
        require_tools();
        let mut attempt = 0;
        let nodes = loop {
            attempt += 1;
            match Self::start_nodes().await {
                Ok(nodes) => break nodes,
                Err(failure) if failure.port_taken && attempt < START_ATTEMPTS => continue,
                Err(failure) => panic!("redis cluster node did not start: {}", failure.message),
            }
        };
        let cluster = Self { nodes };
        cluster.create().await;
        cluster.wait_ok().await;
        cluster
    }

    /// `redis://127.0.0.1:PORT` of each node.
    pub fn urls(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| format!("redis://127.0.0.1:{}", n.port))
            .collect()
    }

    /// The client port of each node (its cluster bus is on the port plus 10000).
    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(|n| n.port).collect()
    }

    async fn start_nodes() -> Result<Vec<ServerProcess>, StartFailure> {
        let ports = free_cluster_ports(3);
        // Pushed one by one so that a failure kills the nodes already started.
        let mut nodes = Vec::with_capacity(ports.len());
        for port in ports {
            let dir = temp_dir("switchyard-redis-cluster-");
            let dir_path = dir.path().to_path_buf();
            let args = vec![
                "--cluster-enabled".to_owned(),
                "yes".to_owned(),
                "--cluster-config-file".to_owned(),
                path_arg(&dir_path.join(format!("nodes-{port}.conf"))),
                "--port".to_owned(),
                port.to_string(),
                "--bind".to_owned(),
                "127.0.0.1".to_owned(),
                "--save".to_owned(),
                String::new(),
                "--appendonly".to_owned(),
                "no".to_owned(),
                "--dir".to_owned(),
                path_arg(&dir_path),
            ];
            nodes.push(ServerProcess::spawn(port, dir, &args));
        }
        for node in &mut nodes {
            let ping = ["-h", "127.0.0.1", "-p", &node.port.to_string(), "PING"].map(str::to_owned);
            node.wait_ready(&ping).await?;
        }
        Ok(nodes)
    }

    async fn create(&self) {
        let mut args = vec!["--cluster".to_owned(), "create".to_owned()];
        args.extend(self.nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)));
        args.extend(["--cluster-replicas", "0", "--cluster-yes"].map(str::to_owned));
        match redis_cli(&args, CLUSTER_CREATE_TIMEOUT).await {
            Ok(out) if out.status.success() => {}
            Ok(out) => panic!(
                "`redis-cli {}` failed ({}):\n{}{}\nnode logs:\n{}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                self.logs()
            ),
            Err(err) => panic!("`redis-cli {}`: {err}", args.join(" ")),
        }
    }

    async fn wait_ok(&self) {
        let deadline = Instant::now() + CLUSTER_OK_TIMEOUT;
        loop {
            let Some(not_ok) = self.first_node_not_ok().await else {
                return;
            };
            if Instant::now() >= deadline {
                panic!(
                    "redis cluster not ok after {CLUSTER_OK_TIMEOUT:?}; last CLUSTER INFO from {not_ok}\nnode logs:\n{}",
                    self.logs()
                );
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// `CLUSTER INFO` of the first node that does not report a healthy, complete cluster.
    async fn first_node_not_ok(&self) -> Option<String> {
        for node in &self.nodes {
            let port = node.port.to_string();
            let args = ["-h", "127.0.0.1", "-p", &port, "CLUSTER", "INFO"].map(str::to_owned);
            let info = match redis_cli(&args, PROBE_TIMEOUT).await {
                Ok(out) => String::from_utf8_lossy(&out.stdout).into_owned(),
                Err(err) => err,
            };
            if !cluster_info_ok(&info, self.nodes.len()) {
                return Some(format!("node {port}:\n{info}"));
            }
        }
        None
    }

    fn logs(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("--- node {} ---\n{}", n.port, n.log()))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// A TLS-only `redis-server` on 127.0.0.1 (plaintext port disabled, no client certificates
/// required) whose certificate, for `127.0.0.1` and `localhost`, is signed by a CA made for it.
/// The process is killed (SIGKILL) and reaped on drop.
#[derive(Debug)]
pub struct TlsRedis {
    server: ServerProcess,
    ca_file: PathBuf,
}

impl TlsRedis {
    /// Makes a CA and a server certificate, starts the server and waits (up to 10 s) until
    /// `redis-cli --tls` gets a PONG from it.
    ///
    /// # Panics
    ///
    /// If `redis-server` or `redis-cli` is missing, `redis-server` lacks TLS support, or the
    /// server does not come up in time.
    pub async fn start() -> Self {
        require_tools();
        let mut attempt = 0;
        loop {
            attempt += 1;
            match Self::try_start().await {
                Ok(server) => return server,
                Err(failure) if failure.port_taken && attempt < START_ATTEMPTS => continue,
                Err(failure) => panic!("TLS redis did not start: {}", failure.message),
            }
        }
    }

    /// `rediss://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("rediss://127.0.0.1:{}", self.server.port)
    }

    /// The CA certificate (PEM) that signed the server's certificate.
    pub fn ca_file(&self) -> &Path {
        &self.ca_file
    }

    /// The TLS port.
    pub fn port(&self) -> u16 {
        self.server.port
    }

    async fn try_start() -> Result<Self, StartFailure> {
        let dir = temp_dir("switchyard-redis-tls-");
        let certs = TestCerts::generate();
        let ca_file = dir.path().join("ca.pem");
        let cert_file = dir.path().join("server.pem");
        let key_file = dir.path().join("server-key.pem");
        for (path, pem) in [
            (&ca_file, &certs.ca_pem),
            (&cert_file, &certs.server_pem),
            (&key_file, &certs.server_key_pem),
        ] {
            if let Err(err) = std::fs::write(path, pem) {
                panic!("cannot write {}: {err}", path.display());
            }
        }
        let port = free_port();
        let args = vec![
            "--port".to_owned(),
            "0".to_owned(),
            "--tls-port".to_owned(),
            port.to_string(),
            "--tls-cert-file".to_owned(),
            path_arg(&cert_file),
            "--tls-key-file".to_owned(),
            path_arg(&key_file),
            "--tls-ca-cert-file".to_owned(),
            path_arg(&ca_file),
            "--tls-auth-clients".to_owned(),
            "no".to_owned(),
            "--bind".to_owned(),
            "127.0.0.1".to_owned(),
            "--save".to_owned(),
            String::new(),
            "--appendonly".to_owned(),
            "no".to_owned(),
            "--dir".to_owned(),
            path_arg(dir.path()),
        ];
        let mut server = ServerProcess::spawn(port, dir, &args);
        let ping = vec![
            "--tls".to_owned(),
            "--cacert".to_owned(),
            path_arg(&ca_file),
            "-h".to_owned(),
            "127.0.0.1".to_owned(),
            "-p".to_owned(),
            port.to_string(),
            "PING".to_owned(),
        ];
        server.wait_ready(&ping).await?;
        Ok(Self { server, ca_file })
    }
}

/// A `redis-server` process with its temp dir; its stdout and stderr go to `<dir>/redis.log`.
#[derive(Debug)]
struct ServerProcess {
    port: u16,
    child: Child,
    log_file: PathBuf,
    // Dropped (deleted) after `Drop::drop` has killed the process.
    _dir: TempDir,
}

/// Why a server did not come up; `port_taken` when it lost its port to someone else.
struct StartFailure {
    port_taken: bool,
    message: String,
}

impl ServerProcess {
    fn spawn(port: u16, dir: TempDir, args: &[String]) -> Self {
        let log_file = dir.path().join("redis.log");
        let log = match File::create(&log_file) {
            Ok(f) => f,
            Err(err) => panic!("cannot create {}: {err}", log_file.display()),
        };
        let log_err = match log.try_clone() {
            Ok(f) => f,
            Err(err) => panic!("cannot clone {}: {err}", log_file.display()),
        };
        let child = Command::new("redis-server")
            .args(args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn();
        let child = match child {
            Ok(c) => c,
            Err(err) => panic!(
                "cannot start `redis-server {}` (redis-server must be installed, e.g. `apt-get install redis-server`): {err}",
                args.join(" ")
            ),
        };
        Self {
            port,
            child,
            log_file,
            _dir: dir,
        }
    }

    /// Runs `redis-cli <ping_args>` until it prints PONG, the process exits or
    /// [`READY_TIMEOUT`] passes.
    async fn wait_ready(&mut self, ping_args: &[String]) -> Result<(), StartFailure> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                let log = self.log();
                return Err(StartFailure {
                    port_taken: log.contains("Address already in use"),
                    message: format!(
                        "redis-server on port {} exited ({status}); log:\n{log}",
                        self.port
                    ),
                });
            }
            let last = match redis_cli(ping_args, PROBE_TIMEOUT).await {
                Ok(out) if String::from_utf8_lossy(&out.stdout).trim() == "PONG" => return Ok(()),
                Ok(out) => format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ),
                Err(err) => err,
            };
            if Instant::now() >= deadline {
                return Err(StartFailure {
                    port_taken: false,
                    message: format!(
                        "redis-server on port {} did not answer PING within {READY_TIMEOUT:?}; last redis-cli output: {last}\nlog:\n{}",
                        self.port,
                        self.log()
                    ),
                });
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log_file).unwrap_or_default()
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        // `Child::kill` signals the child's PID; `wait` reaps it.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Panics unless `redis-server` and `redis-cli` can be run: tests that need them must fail,
/// not skip, where they are missing.
fn require_tools() {
    for tool in ["redis-server", "redis-cli"] {
        match Command::new(tool)
            .arg("--version")
            .stdin(Stdio::null())
            .output()
        {
            Ok(out) if out.status.success() => {}
            Ok(out) => panic!(
                "`{tool} --version` failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ),
            Err(err) => panic!(
                "`{tool}` not found or not runnable ({err}); these tests need a real Redis: install it (Debian: `apt-get install redis-server redis-tools`)"
            ),
        }
    }
}

/// Runs `redis-cli` with `args`, killing it after `limit`.
async fn redis_cli(args: &[String], limit: Duration) -> Result<Output, String> {
    let run = tokio::process::Command::new("redis-cli")
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    match tokio::time::timeout(limit, run).await {
        Ok(Ok(out)) => Ok(out),
        Ok(Err(err)) if err.kind() == std::io::ErrorKind::NotFound => {
            panic!("redis-cli not found on PATH (Debian: `apt-get install redis-tools`): {err}")
        }
        Ok(Err(err)) => Err(format!("cannot run redis-cli: {err}")),
        Err(_) => Err(format!("redis-cli did not finish within {limit:?}")),
    }
}

/// Whether `CLUSTER INFO` text reports a healthy cluster of `nodes` nodes with every slot
/// assigned.
fn cluster_info_ok(info: &str, nodes: usize) -> bool {
    let field = |name: &str| {
        info.lines()
            .find_map(|line| line.trim().strip_prefix(name)?.strip_prefix(':'))
            .map(str::to_owned)
    };
    field("cluster_state").as_deref() == Some("ok")
        && field("cluster_slots_assigned").and_then(|v| v.parse::<u32>().ok())
            == Some(CLUSTER_SLOTS)
        && field("cluster_known_nodes").and_then(|v| v.parse::<usize>().ok()) == Some(nodes)
}

/// `n` distinct loopback ports `p` such that both `p` and `p + 10000` (its cluster bus) are free
/// now. They are held while chosen, so they are distinct, and released on return.
fn free_cluster_ports(n: usize) -> Vec<u16> {
    let mut held = Vec::with_capacity(n * 2);
    let mut ports = Vec::with_capacity(n);
    for _ in 0..200 {
        if ports.len() == n {
            break;
        }
        let listener = match TcpListener::bind((Ipv4Addr::LOCALHOST, 0)) {
            Ok(l) => l,
            Err(err) => panic!("cannot bind a loopback port: {err}"),
        };
        let port = match listener.local_addr() {
            Ok(addr) => addr.port(),
            Err(err) => panic!("cannot read a bound port: {err}"),
        };
        let Some(bus_port) = port.checked_add(CLUSTER_BUS_OFFSET) else {
            continue;
        };
        if let Ok(bus) = TcpListener::bind((Ipv4Addr::LOCALHOST, bus_port)) {
            held.push(listener);
            held.push(bus);
            ports.push(port);
        }
    }
    if ports.len() < n {
        panic!(
            "found only {} of {n} free port pairs (port, port+10000)",
            ports.len()
        );
    }
    ports
}

/// A loopback port that is free now.
fn free_port() -> u16 {
    match TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).and_then(|l| l.local_addr()) {
        Ok(addr) => addr.port(),
        Err(err) => panic!("cannot bind a loopback port: {err}"),
    }
}

fn temp_dir(prefix: &str) -> TempDir {
    match tempfile::Builder::new().prefix(prefix).tempdir() {
        Ok(dir) => dir,
        Err(err) => panic!("cannot create a temp dir: {err}"),
    }
}

fn path_arg(path: &Path) -> String {
    match path.to_str() {
        Some(s) => s.to_owned(),
        None => panic!("temp path is not UTF-8: {}", path.display()),
    }
}
