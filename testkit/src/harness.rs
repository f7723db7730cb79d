//! Test plumbing shared by the crates' black-box tests: a private Redis key
//! prefix, and a real binary started on 127.0.0.1:0 whose JSON logs are
//! captured and whose bound address is read from its "listening" line.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt as _, AsyncRead, BufReader};
use tokio::process::{Child, Command};

pub fn redis_url() -> String {
    std::env::var("SWITCHYARD_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A unique name with `prefix`.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::new_v4().simple())
}

/// A Redis key prefix of the test's own; its keys are deleted on drop.
pub struct RedisPrefix(pub String);

impl RedisPrefix {
    pub fn new() -> Self {
        Self(unique("sytest"))
    }
}

impl Default for RedisPrefix {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for RedisPrefix {
    fn drop(&mut self) {
        let prefix = self.0.clone();
        let _ = std::thread::spawn(move || {
            if let Ok(client) = redis::Client::open(redis_url())
                && let Ok(mut c) = client.get_connection()
            {
                // Plain keys and hash-tagged ones (`{prefix:…}…`).
                let mut keys: Vec<String> = Vec::new();
                for pattern in [format!("{prefix}:*"), format!("{{{prefix}:*")] {
                    let found: Vec<String> = redis::cmd("KEYS")
                        .arg(pattern)
                        .query(&mut c)
                        .unwrap_or_default();
                    keys.extend(found);
                }
                if !keys.is_empty() {
                    let _: redis::RedisResult<()> = redis::cmd("DEL").arg(keys).query(&mut c);
                }
            }
        })
        .join();
    }
}

/// A running binary; killed when dropped.
pub struct ServerProc {
    pub child: Child,
    pub addr: SocketAddr,
    logs: Arc<Mutex<String>>,
}

impl ServerProc {
    /// Starts `cmd` (stdout and stderr piped, killed on drop) and waits up to
    /// 30 s for a JSON log line whose message is `marker` with an `addr` field.
    pub async fn start(mut cmd: Command, marker: &str) -> Self {
        cmd.stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => panic!("cannot start {cmd:?}: {e}"),
        };
        let logs = Arc::new(Mutex::new(String::new()));
        let (tx, mut rx) = tokio::sync::mpsc::channel::<SocketAddr>(1);
        let pipes: Vec<Box<dyn AsyncRead + Send + Unpin>> = [
            child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn AsyncRead + Send + Unpin>),
            child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn AsyncRead + Send + Unpin>),
        ]
        .into_iter()
        .flatten()
        .collect();
        for pipe in pipes {
            let logs = logs.clone();
            let tx = tx.clone();
            let marker = marker.to_owned();
            tokio::spawn(async move {
                let mut lines = BufReader::new(pipe).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if line.contains(&marker)
                        && let Ok(v) = serde_json::from_str::<serde_json::Value>(&line)
                        && v.get("message").and_then(|m| m.as_str()) == Some(marker.as_str())
                        && let Some(a) = v
                            .get("addr")
                            .and_then(|a| a.as_str())
                            .and_then(|a| a.parse().ok())
                    {
                        let _ = tx.try_send(a);
                    }
                    if let Ok(mut l) = logs.lock() {
                        l.push_str(&line);
                        l.push('\n');
                    }
                }
            });
        }
        let addr = tokio::time::timeout(Duration::from_secs(30), rx.recv())
            .await
            .ok()
            .flatten();
        let Some(addr) = addr else {
            let _ = child.start_kill();
            let text = logs.lock().map(|l| l.clone()).unwrap_or_default();
            panic!("binary did not log '{marker}' with its address; logs:\n{text}");
        };
        Self { child, addr, logs }
    }

    pub fn logs(&self) -> String {
        self.logs.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// SIGTERM, then wait (at most 15 s) for the exit status.
    pub async fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .arg("-TERM")
                .arg(pid.to_string())
                .status();
        }
        tokio::time::timeout(Duration::from_secs(15), self.child.wait())
            .await
            .ok()
            .and_then(Result::ok)
    }
}

/// A Redis server of the test's own on a free port, so it can be stopped and started.
pub struct PrivateRedis {
    pub port: u16,
    child: Option<std::process::Child>,
}

impl PrivateRedis {
    pub async fn start_on(port: u16) -> Self {
        let child = std::process::Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(std::process::Stdio::null())
            .spawn();
        let child = match child {
            Ok(c) => c,
            Err(e) => panic!("redis-server must be installed: {e}"),
        };
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return Self {
                    port,
                    child: Some(child),
                };
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("private redis did not start on port {port}");
    }

    pub async fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port());
        match port {
            Ok(p) => Self::start_on(p).await,
            Err(e) => panic!("no free port: {e}"),
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Freezes the server (SIGSTOP): connections stay open, nothing answers.
    pub fn freeze(&self) {
        self.signal("-STOP");
    }

    /// Lets a frozen server run again (SIGCONT).
    pub fn thaw(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, sig: &str) {
        if let Some(c) = &self.child {
            let ok = std::process::Command::new("kill")
                .args([sig, &c.id().to_string()])
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "kill {sig} on the private redis failed");
        }
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.stop();
    }
}
