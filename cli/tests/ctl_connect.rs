//! The operator commands that follow and reach servers (`watch`,
//! `context`, https verification) run as the real binary against a real
//! `switchyard dev`, each test on its own ports and data directory.
// Tests spawn servers and read their env overrides.
#![allow(clippy::disallowed_methods)]

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::{ok, rows, start, sy, sy_env};
use switchyard_proto::v1 as pb;
use tokio::io::{AsyncBufReadExt as _, BufReader};

#[tokio::test]
async fn watch_prints_changes_made_by_other_commands() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dev = start(&dir.path().join("data")).await;
    let home = dir.path();
    let revision = dev
        .client()
        .await
        .get_snapshot(pb::GetSnapshotRequest {})
        .await
        .expect("snapshot")
        .into_inner()
        .revision;
    let since = revision.to_string();
    let mut watch = tokio::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args([
            "watch",
            "--since",
            &since,
            "--server",
            &format!("http://{}", dev.addr),
        ])
        .env_clear()
        .env("HOME", home)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start watch");
    let mut lines = BufReader::new(watch.stdout.take().expect("stdout")).lines();
    let mut next_with = async |needle: &str| -> String {
        let find = async {
            while let Some(line) = lines.next_line().await.expect("read") {
                if line.contains(needle) {
                    return line;
                }
            }
            panic!("watch ended before a line with {needle:?}");
        };
        tokio::time::timeout(Duration::from_secs(20), find)
            .await
            .unwrap_or_else(|_| panic!("no line with {needle:?} within 20s"))
    };
    assert!(next_with("ACTION RESOURCE NAME").await.starts_with("REV"));

    ok(&sy(&dev, home, &["create", "pool", "watched"]).await);
    let line = next_with("watched").await;
    let f: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(f[0], (revision + 1).to_string(), "{line}");
    assert_eq!(f[2..], ["dev", "created", "pool", "watched"], "{line}");
    // Past the replay: this one comes live.
    ok(&sy(
        &dev,
        home,
        &["set", "member", "demo/mock/mock-c", "--status", "inactive"],
    )
    .await);
    let line = next_with("updated member").await;
    assert!(line.ends_with("demo/mock/mock-c"), "{line}");

    watch.kill().await.expect("kill watch");
    dev.stop().await;
}

#[tokio::test]
async fn contexts_let_later_commands_reach_the_server_without_flags() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dev = start(&dir.path().join("data")).await;
    let home = dir.path().join("home");
    std::fs::create_dir_all(&home).expect("home");
    let server = format!("http://{}", dev.addr);
    let inference = format!("http://{}", dev.inference);

    // Nothing to reach without flags or a context: the default port is not ours.
    let r = sy_env(&home, &[], &["context", "list"]).await;
    assert!(r.ok && r.stderr.contains("no contexts"), "{}", r.stderr);
    let r = sy_env(
        &home,
        &[],
        &[
            "context",
            "set",
            "local",
            "--server",
            &server,
            "--inference-server",
            &inference,
        ],
    )
    .await;
    assert!(
        ok(&r).contains("context local created and made current"),
        "{}",
        r.stdout
    );
    let r = sy_env(
        &home,
        &[],
        &[
            "context",
            "set",
            "broken",
            "--server",
            "http://127.0.0.1:1",
            "--token-env",
            "SY_TEST_TOKEN",
        ],
    )
    .await;
    assert!(ok(&r).contains("context broken created ("), "{}", r.stdout);
    let file = std::fs::read_to_string(home.join(".config/switchyard/config.yaml")).expect("file");
    assert!(
        file.contains("token_env: SY_TEST_TOKEN") && !file.contains("token:"),
        "{file}"
    );

    let g = sy_env(&home, &[], &["get", "pools"]).await;
    assert_eq!(rows(ok(&g))[0][0], "demo");
    let g = sy_env(&home, &[], &["get", "members"]).await;
    assert!(rows(ok(&g)).iter().all(|r| r[7] == "ok"), "{}", g.stdout);

    // --context picks another; its token comes from the variable it names.
    let r = sy_env(&home, &[], &["--context", "broken", "get", "pools"]).await;
    assert!(
        !r.ok && r.stderr.contains("$SY_TEST_TOKEN, which is not set"),
        "{}",
        r.stderr
    );
    let r = sy_env(
        &home,
        &[("SY_TEST_TOKEN", "t0ken")],
        &["--context", "broken", "get", "pools"],
    )
    .await;
    assert!(
        !r.ok && r.stderr.contains("cannot reach http://127.0.0.1:1"),
        "{}",
        r.stderr
    );
    // Flags, then environment, beat the context.
    let r = sy_env(
        &home,
        &[("SY_TEST_TOKEN", "t")],
        &["--context", "broken", "get", "pools", "--server", &server],
    )
    .await;
    assert!(r.ok, "{}", r.stderr);
    let r = sy_env(
        &home,
        &[("SWITCHYARD_SERVER", "http://127.0.0.1:1")],
        &["get", "pools"],
    )
    .await;
    assert!(!r.ok && r.stderr.contains("127.0.0.1:1"), "{}", r.stderr);

    let r = sy_env(&home, &[], &["context", "use", "broken"]).await;
    assert_eq!(ok(&r).trim(), "now using context broken");
    let r = sy_env(&home, &[], &["context", "list"]).await;
    let current: Vec<String> = rows(ok(&r))
        .into_iter()
        .filter(|r| r[0] == "*")
        .map(|r| r[1].clone())
        .collect();
    assert_eq!(current, ["broken"]);
    let r = sy_env(&home, &[], &["context", "use", "nope"]).await;
    assert!(
        !r.ok && r.stderr.contains("no context named 'nope'"),
        "{}",
        r.stderr
    );
    let r = sy_env(
        &home,
        &[],
        &["context", "set", "x", "--token-env", "sk-live-123"],
    )
    .await;
    assert!(
        !r.ok && r.stderr.contains("name of an environment variable"),
        "{}",
        r.stderr
    );

    // XDG_CONFIG_HOME moves the file; --config names one outright.
    let xdg = dir.path().join("xdg");
    let env = [("XDG_CONFIG_HOME", xdg.to_str().expect("utf-8"))];
    let r = sy_env(&home, &env, &["context", "set", "x", "--server", &server]).await;
    ok(&r);
    assert!(xdg.join("switchyard/config.yaml").exists());
    let g = sy_env(&home, &env, &["get", "pools"]).await;
    assert_eq!(rows(ok(&g))[0][0], "demo");
    let other = dir.path().join("other.yaml");
    let other = other.to_str().expect("utf-8");
    ok(&sy_env(
        &home,
        &[],
        &[
            "--config", other, "context", "set", "y", "--server", &server,
        ],
    )
    .await);
    let g = sy_env(&home, &[("SWITCHYARD_CONFIG", other)], &["get", "pools"]).await;
    assert_eq!(rows(ok(&g))[0][0], "demo");
    dev.stop().await;
}

#[tokio::test]
async fn https_servers_are_verified_against_the_ca_file() {
    let certs = switchyard_testkit::certs::TestCerts::generate();
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &certs.ca_pem).expect("write ca");
    // A TLS gRPC server with the health service only: a call that reaches
    // it is answered Unimplemented, so the handshake is what is tested.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (_reporter, health) = tonic_health::server::health_reporter();
    let tls = tonic::transport::ServerTlsConfig::new().identity(
        tonic::transport::Identity::from_pem(&certs.server_pem, &certs.server_key_pem),
    );
    let server = tonic::transport::Server::builder()
        .tls_config(tls)
        .expect("tls")
        .add_service(health)
        .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener));
    let server = tokio::spawn(server);
    let url = format!("https://{addr}");
    let home = dir.path();

    let r = sy_env(home, &[], &["get", "pools", "--server", &url]).await;
    assert!(
        !r.ok
            && r.stderr.contains(&format!("cannot reach {url}"))
            && r.stderr.contains("UnknownIssuer"),
        "not trusted by default: {}",
        r.stderr
    );
    let ca = ca.to_str().expect("utf-8");
    let r = sy_env(
        home,
        &[],
        &["get", "pools", "--server", &url, "--ca-file", ca],
    )
    .await;
    assert!(
        !r.ok && r.stderr.starts_with("switchyard: Unimplemented"),
        "trusted with the CA: {}",
        r.stderr
    );
    let r = sy_env(
        home,
        &[("SWITCHYARD_CA_FILE", ca)],
        &[
            "get",
            "pools",
            "--server",
            &format!("https://localhost:{}", addr.port()),
        ],
    )
    .await;
    assert!(
        r.stderr.starts_with("switchyard: Unimplemented"),
        "by name too: {}",
        r.stderr
    );
    server.abort();
}
