//! `switchyard dev` as a test runs it: the real binary on free ports; and
//! the `switchyard` operator commands run against it.
#![allow(dead_code)]

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use switchyard_proto::v1::control_plane_client::ControlPlaneClient;
use tokio::io::{AsyncBufReadExt as _, BufReader};

pub struct Dev {
    pub child: tokio::process::Child,
    pub addr: String,
    pub inference: String,
    /// The OpenAI-compatible HTTP door.
    pub http: String,
}

/// `switchyard dev` on free ports in `data_dir`, with `env` added.
pub async fn start_with(data_dir: &std::path::Path, env: &[(&str, &str)]) -> Dev {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args([
            "dev",
            "--listen",
            "127.0.0.1:0",
            "--inference-listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(data_dir)
        .env_clear()
        // Proof that no Postgres or Redis is needed: point their usual env at nothing.
        .env("DATABASE_URL", "postgres://nobody@127.0.0.1:1/none")
        .env("REDIS_URL", "redis://127.0.0.1:1")
        .env("SWITCHYARD_METRICS_LISTEN", "127.0.0.1:0")
        .env("SWITCHYARD_HTTP_LISTEN", "127.0.0.1:0")
        .env("SWITCHYARD_LOG_FORMAT", "json")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start switchyard dev");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let find = async {
        let (mut cp, mut dp, mut http) = (None, None, None);
        while let Ok(Some(line)) = lines.next_line().await {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line)
                && let Some(a) = v["addr"].as_str()
            {
                if v["message"] == "control plane listening" {
                    cp = Some(a.to_owned());
                } else if v["message"] == "data plane listening" {
                    dp = Some(a.to_owned());
                } else if v["message"] == "OpenAI-compatible HTTP door listening" {
                    http = Some(a.to_owned());
                }
            }
            if let (Some(c), Some(d), Some(h)) = (&cp, &dp, &http) {
                return Some((c.clone(), d.clone(), h.clone()));
            }
        }
        None
    };
    let (addr, inference, http) = tokio::time::timeout(Duration::from_secs(30), find)
        .await
        .ok()
        .flatten()
        .expect("dev reports both addresses");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Dev {
        child,
        addr,
        inference,
        http,
    }
}

impl Dev {
    pub async fn client(&self) -> ControlPlaneClient<tonic::transport::Channel> {
        ControlPlaneClient::connect(format!("http://{}", self.addr))
            .await
            .expect("connect")
    }

    pub async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .arg("-TERM")
                .arg(pid.to_string())
                .status();
        }
        let status = tokio::time::timeout(Duration::from_secs(15), self.child.wait())
            .await
            .expect("exits")
            .expect("status");
        assert!(status.success(), "{status:?}");
    }
}

/// `switchyard dev` on free ports in `data_dir`.
pub async fn start(data_dir: &std::path::Path) -> Dev {
    start_with(data_dir, &[]).await
}

/// How a `switchyard` command ended and what it printed.
pub struct Run {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

/// `switchyard ARGS` with nothing from this process's environment but `env`
/// (HOME points at `home`, so no operator's contexts file is read).
pub async fn sy_env(home: &Path, env: &[(&str, &str)], args: &[&str]) -> Run {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_switchyard"));
    cmd.args(args)
        .env_clear()
        .env("HOME", home)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(30), cmd.output())
        .await
        .unwrap_or_else(|_| panic!("switchyard {args:?} finished within 30s"))
        .expect("run switchyard");
    let run = Run {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    // Whatever it says, it never panics.
    assert!(
        !run.stderr.contains("panicked") && !run.stderr.contains("RUST_BACKTRACE"),
        "switchyard {args:?} panicked: {}",
        run.stderr
    );
    run
}

/// `switchyard ARGS --server … --inference-server …` against `dev`.
pub async fn sy(dev: &Dev, home: &Path, args: &[&str]) -> Run {
    let server = format!("http://{}", dev.addr);
    let inference = format!("http://{}", dev.inference);
    let mut all = args.to_vec();
    all.extend(["--server", &server, "--inference-server", &inference]);
    sy_env(home, &[], &all).await
}

/// The table's rows (header left out), split on runs of spaces.
pub fn rows(table: &str) -> Vec<Vec<String>> {
    table
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().map(str::to_owned).collect())
        .collect()
}

pub fn ok(r: &Run) -> &str {
    assert!(r.ok, "exit 0 expected; stderr: {}", r.stderr);
    &r.stdout
}
