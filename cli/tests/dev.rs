//! `switchyard dev` runs the whole thing on a machine with no Postgres and no
//! Redis: SQLite in a data directory, in-process bus, no auth, a demo pool.
// Tests spawn callers freely and read their env overrides.
#![allow(clippy::disallowed_methods)]

use std::process::Stdio;
use std::time::Duration;

use switchyard_proto::v1 as pb;
use switchyard_proto::v1::control_plane_client::ControlPlaneClient;
use switchyard_proto::v1::inference_client::InferenceClient;
use tokio::io::{AsyncBufReadExt as _, BufReader};

struct Dev {
    child: tokio::process::Child,
    addr: String,
    inference: String,
}

async fn start(data_dir: &std::path::Path) -> Dev {
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
        .env("SWITCHYARD_LOG_FORMAT", "json")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start switchyard dev");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let find = async {
        let (mut cp, mut dp) = (None, None);
        while let Ok(Some(line)) = lines.next_line().await {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line)
                && let Some(a) = v["addr"].as_str()
            {
                if v["message"] == "control plane listening" {
                    cp = Some(a.to_owned());
                } else if v["message"] == "data plane listening" {
                    dp = Some(a.to_owned());
                }
            }
            if let (Some(c), Some(d)) = (&cp, &dp) {
                return Some((c.clone(), d.clone()));
            }
        }
        None
    };
    let (addr, inference) = tokio::time::timeout(Duration::from_secs(30), find)
        .await
        .ok()
        .flatten()
        .expect("dev reports both addresses");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Dev {
        child,
        addr,
        inference,
    }
}

impl Dev {
    async fn client(&self) -> ControlPlaneClient<tonic::transport::Channel> {
        ControlPlaneClient::connect(format!("http://{}", self.addr))
            .await
            .expect("connect")
    }

    async fn stop(mut self) {
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

#[tokio::test]
async fn dev_serves_a_demo_pool_without_postgres_or_redis_and_keeps_changes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dev = start(dir.path()).await;
    let mut c = dev.client().await;
    let pools = c
        .list_pools(pb::ListPoolsRequest::default())
        .await
        .expect("no token needed")
        .into_inner();
    assert_eq!(
        pools
            .pools
            .iter()
            .map(|p| p.name.as_str())
            .collect::<Vec<_>>(),
        vec!["demo"]
    );
    let members = c
        .list_members(pb::ListMembersRequest {
            pool: "demo".into(),
            ..Default::default()
        })
        .await
        .expect("members")
        .into_inner();
    assert_eq!(members.members.len(), 3);
    assert!(members.members.iter().all(|m| m.provider_name == "mock"));
    c.create_pool(pb::CreatePoolRequest {
        pool: Some(pb::Pool {
            name: "mine".into(),
            ..Default::default()
        }),
    })
    .await
    .expect("create");
    let revision = c
        .get_snapshot(pb::GetSnapshotRequest {})
        .await
        .expect("snapshot")
        .into_inner()
        .revision;

    // The inference port streams a completion from the demo pool.
    let mut inference = InferenceClient::connect(format!("http://{}", dev.inference))
        .await
        .expect("connect inference");
    let request = pb::GenerateRequest {
        model: "demo".into(),
        messages: vec![pb::ChatMessage {
            role: pb::Role::User.into(),
            content: "hi".into(),
            ..Default::default()
        }],
        ..Default::default()
    };
    let mut served = Vec::new();
    for _ in 0..3 {
        let mut stream = inference
            .generate_stream(request.clone())
            .await
            .expect("stream")
            .into_inner();
        let mut text = String::new();
        let mut finished = false;
        while let Some(ev) = stream.message().await.expect("stream ends OK") {
            match ev.event {
                Some(pb::generate_stream_event::Event::Start(s)) => {
                    served.push(s.served_by.map(|m| m.upstream_model).unwrap_or_default())
                }
                Some(pb::generate_stream_event::Event::TextDelta(t)) => text.push_str(&t),
                Some(pb::generate_stream_event::Event::Finish(_)) => finished = true,
                _ => {}
            }
        }
        assert!(finished && text.contains("says hello to: hi"), "{text}");
    }
    served.sort();
    assert_eq!(
        served,
        vec!["mock-a", "mock-b", "mock-c"],
        "round robin over the demo pool"
    );
    dev.stop().await;

    let key = std::fs::metadata(dir.path().join("master.key")).expect("master key generated");
    #[cfg(unix)]
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&key.permissions()) & 0o777,
        0o600
    );

    // Restart on the same data directory: state kept, demo not seeded twice.
    let dev = start(dir.path()).await;
    let mut c = dev.client().await;
    let snap = c
        .get_snapshot(pb::GetSnapshotRequest {})
        .await
        .expect("snapshot")
        .into_inner();
    assert_eq!(snap.revision, revision);
    let names: Vec<&str> = snap.pools.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, vec!["demo", "mine"]);
    dev.stop().await;
}
