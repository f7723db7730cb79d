//! The kubectl-like operator commands (`get`, `describe`, `watch`, `create`,
//! `set`, `delete`, `context`) run as the real binary against a real
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
async fn get_lists_the_demo_pool_and_its_members_as_tables_and_json() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dev = start(&dir.path().join("data")).await;
    let home = dir.path();

    let pools = sy(&dev, home, &["get", "pools"]).await;
    let out = ok(&pools);
    assert!(
        out.starts_with("NAME  STRATEGY     MEMBERS  ENABLED  DESCRIPTION"),
        "{out}"
    );
    assert_eq!(rows(out)[0][..4], ["demo", "round_robin", "3", "true"]);

    let members = sy(&dev, home, &["get", "members"]).await;
    let out = ok(&members);
    let header: Vec<&str> = out.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "ID", "POOL", "PROVIDER", "MODEL", "WEIGHT", "PRIORITY", "STATUS", "HEALTH"
        ]
    );
    let rs = rows(out);
    assert_eq!(rs.len(), 3, "{out}");
    for (r, model) in rs.iter().zip(["mock-a", "mock-b", "mock-c"]) {
        assert_eq!(r[1..], ["demo", "mock", model, "1", "0", "ACTIVE", "ok"]);
    }

    // One member per page: the listing follows every page.
    let paged = sy(
        &dev,
        home,
        &["get", "members", "--chunk-size", "1", "-o", "wide"],
    )
    .await;
    let out = ok(&paged);
    assert_eq!(rows(out).len(), 3, "{out}");
    assert!(
        out.lines()
            .next()
            .unwrap()
            .ends_with("RPM_LIMIT  TPM_LIMIT  ETAG")
    );

    let json = sy(
        &dev,
        home,
        &["get", "members", "--pool", "demo", "-o", "json"],
    )
    .await;
    let v: serde_json::Value = serde_json::from_str(ok(&json)).expect("json");
    let list = v.as_array().expect("an array");
    assert_eq!(list.len(), 3);
    assert!(
        list.iter()
            .all(|m| m["pool"] == "demo" && m["status"] == "active")
    );

    let one = sy(&dev, home, &["get", "pool", "demo", "-o", "json"]).await;
    let v: serde_json::Value = serde_json::from_str(ok(&one)).expect("json");
    assert_eq!(v["name"], "demo");
    assert_eq!(v["strategy"], "round_robin");

    let yaml = sy(&dev, home, &["get", "providers", "-o", "yaml"]).await;
    assert!(ok(&yaml).contains("name: mock"), "{}", yaml.stdout);
    dev.stop().await;
}

#[tokio::test]
async fn describe_pool_shows_members_with_health_and_survives_a_down_data_plane() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dev = start(&dir.path().join("data")).await;
    let home = dir.path();

    let d = sy(&dev, home, &["describe", "pool", "demo"]).await;
    let out = ok(&d);
    assert!(out.contains("Name:         demo"), "{out}");
    assert!(out.contains("Strategy:     round_robin"), "{out}");
    assert!(out.contains("Members (3):"), "{out}");
    assert!(out.contains("Traffic (last 300s)"), "{out}");
    assert!(!out.contains("not shown"), "{out}");
    let member_lines: Vec<&str> = out.lines().filter(|l| l.contains(" mock-")).collect();
    assert_eq!(member_lines.len(), 3, "{out}");
    assert!(
        member_lines
            .iter()
            .all(|l| l.contains("ACTIVE") && l.contains(" ok "))
    );

    // Traffic: three requests, one per member (round robin), once the
    // worker has flushed its statistics (every 5 s in dev).
    let mut inference =
        pb::inference_client::InferenceClient::connect(format!("http://{}", dev.inference))
            .await
            .expect("connect inference");
    for _ in 0..3 {
        inference
            .generate(pb::GenerateRequest {
                model: "demo".into(),
                messages: vec![pb::ChatMessage {
                    role: pb::Role::User.into(),
                    content: "hi".into(),
                    ..Default::default()
                }],
                ..Default::default()
            })
            .await
            .expect("generate");
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let out = loop {
        let d = sy(&dev, home, &["describe", "pool", "demo"]).await;
        if ok(&d).contains("Traffic (last 300s): 3 requests, 0 failed") {
            break d.stdout;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no traffic within 20s: {}",
            d.stdout
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    for l in out.lines().filter(|l| l.contains(" mock-")) {
        // ... HEALTH ATTEMPTS ERRORS P50 P95
        let f: Vec<&str> = l.split_whitespace().collect();
        assert_eq!(f[7..9], ["1", "0"], "{out}");
        assert!(f[9].ends_with("ms") && f[10].ends_with("ms"), "{out}");
    }

    // The data plane down: one line says so, the config part is still there.
    let server = format!("http://{}", dev.addr);
    let down = [
        "--server",
        &server,
        "--inference-server",
        "http://127.0.0.1:1",
    ];
    let mut args = vec!["describe", "pool", "demo"];
    args.extend(down);
    let d = sy_env(home, &[], &args).await;
    let out = ok(&d);
    assert_eq!(
        out.lines()
            .filter(|l| l.contains("not shown: cannot reach http://127.0.0.1:1"))
            .count(),
        1,
        "{out}"
    );
    assert!(
        out.contains("Members (3):") && out.contains("mock-c"),
        "{out}"
    );
    let mut args = vec!["get", "members"];
    args.extend(down);
    let g = sy_env(home, &[], &args).await;
    assert!(rows(ok(&g)).iter().all(|r| r[7] == "-"), "{}", g.stdout);
    dev.stop().await;
}

#[tokio::test]
async fn create_set_and_delete_change_what_get_shows() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dev = start(&dir.path().join("data")).await;
    let home = dir.path();

    let c = sy(
        &dev,
        home,
        &[
            "create",
            "pool",
            "mine",
            "--strategy",
            "weighted",
            "--description",
            "mine",
        ],
    )
    .await;
    assert_eq!(ok(&c).trim(), "pool mine created (strategy weighted)");
    let c = sy(
        &dev,
        home,
        &[
            "create",
            "member",
            "--pool",
            "mine",
            "--provider",
            "mock",
            "--model",
            "mock-x",
            "--weight",
            "3",
            "--priority",
            "-2",
        ],
    )
    .await;
    assert!(
        ok(&c).contains("created: mine/mock/mock-x (weight 3, priority -2, active)"),
        "{}",
        c.stdout
    );
    let c = sy(
        &dev,
        home,
        &[
            "create",
            "route",
            "chat",
            "--tier",
            "pool:mine",
            "--backup-tier",
            "direct:mock/mock-a",
        ],
    )
    .await;
    assert_eq!(
        ok(&c).trim(),
        "route chat created: pool:mine, backup direct:mock/mock-a"
    );
    let c = sy(
        &dev,
        home,
        &[
            "create",
            "provider",
            "openai",
            "--kind",
            "openai",
            "--base-url",
            "https://api.example.com/v1",
            "--credential",
            "env:OPENAI_KEY",
        ],
    )
    .await;
    assert!(ok(&c).contains("provider openai created"), "{}", c.stdout);

    let g = sy(&dev, home, &["get", "members", "--pool", "mine"]).await;
    let rs = rows(ok(&g));
    assert_eq!(rs.len(), 1);
    assert_eq!(rs[0][1..7], ["mine", "mock", "mock-x", "3", "-2", "ACTIVE"]);
    let g = sy(&dev, home, &["get", "providers"]).await;
    assert!(
        ok(&g)
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>()
                == [
                    "openai",
                    "openai",
                    "https://api.example.com/v1",
                    "env:OPENAI_KEY",
                    "true"
                ]),
        "{}",
        g.stdout
    );
    let g = sy(&dev, home, &["get", "routes", "--pool", "mine"]).await;
    assert!(
        ok(&g).contains("chat  pool:mine, backup direct:mock/mock-a  true"),
        "{}",
        g.stdout
    );

    // A member by pool/provider/model; only the flags given change.
    let s = sy(
        &dev,
        home,
        &["set", "member", "demo/mock/mock-b", "--status", "draining"],
    )
    .await;
    assert!(
        ok(&s).ends_with("updated: status active -> draining\n"),
        "{}",
        s.stdout
    );
    let g = sy(&dev, home, &["get", "members", "--status", "draining"]).await;
    let rs = rows(ok(&g));
    assert_eq!(rs.len(), 1, "{}", g.stdout);
    assert_eq!(
        rs[0][1..7],
        ["demo", "mock", "mock-b", "1", "0", "DRAINING"]
    );
    let id = rs[0][0].clone();
    let s = sy(&dev, home, &["set", "member", &id, "--weight", "7"]).await;
    assert!(ok(&s).contains("weight 1 -> 7"), "{}", s.stdout);
    let g = sy(&dev, home, &["get", "member", &id]).await;
    assert_eq!(rows(ok(&g))[0][4..7], ["7", "0", "DRAINING"]);

    let s = sy(
        &dev,
        home,
        &[
            "set",
            "pool",
            "mine",
            "--enabled",
            "false",
            "--strategy",
            "priority",
        ],
    )
    .await;
    assert_eq!(
        ok(&s).trim(),
        "pool mine updated: strategy weighted -> priority, enabled true -> false"
    );
    let g = sy(&dev, home, &["get", "pools", "mine"]).await;
    assert_eq!(rows(ok(&g))[0][..4], ["mine", "priority", "1", "false"]);

    let d = sy(&dev, home, &["describe", "route", "chat"]).await;
    let out = ok(&d);
    assert!(
        out.contains("1. pool:mine") && out.contains("2. backup direct:mock/mock-a"),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.contains("mock-x") && l.contains("ACTIVE")),
        "{out}"
    );
    let d = sy(&dev, home, &["describe", "provider", "mock"]).await;
    let out = ok(&d);
    assert!(
        out.contains("Pools:        demo (3 members), mine (1 member)"),
        "{out}"
    );
    assert!(
        out.contains("chat (via pool:mine, direct:mock/mock-a)"),
        "{out}"
    );

    // A pool a route names needs --force.
    let del = sy(&dev, home, &["delete", "pool", "mine"]).await;
    assert!(
        !del.ok && del.stderr.starts_with("switchyard: FailedPrecondition"),
        "{}",
        del.stderr
    );
    for (args, line) in [
        (vec!["delete", "route", "chat"], "route chat deleted"),
        (
            vec!["delete", "member", "mine/mock/mock-x"],
            "(mine/mock/mock-x) deleted",
        ),
        (vec!["delete", "pool", "mine"], "pool mine deleted"),
        (
            vec!["delete", "provider", "openai"],
            "provider openai deleted",
        ),
    ] {
        let r = sy(&dev, home, &args).await;
        assert!(ok(&r).trim_end().ends_with(line), "{args:?}: {}", r.stdout);
    }
    let g = sy(&dev, home, &["get", "pools"]).await;
    assert_eq!(rows(ok(&g)).len(), 1);
    let g = sy(&dev, home, &["get", "routes"]).await;
    assert!(g.ok && g.stdout.is_empty() && g.stderr.contains("no routes"));
    dev.stop().await;
}

#[tokio::test]
async fn bad_values_exit_non_zero_with_the_servers_message() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dev = start(&dir.path().join("data")).await;
    let home = dir.path();
    for (args, says) in [
        (
            vec!["set", "member", "NOT-A-UUID", "--status", "draining"],
            "NOT-A-UUID",
        ),
        (
            vec![
                "create",
                "member",
                "--pool",
                "nope",
                "--provider",
                "mock",
                "--model",
                "m",
            ],
            "NotFound: pool 'nope'",
        ),
        (vec!["create", "pool", "bad name!"], "InvalidArgument"),
        (vec!["get", "pools", "nope"], "NotFound"),
        (vec!["describe", "route", "nope"], "NotFound"),
        (
            vec!["set", "member", "demo/mock/mock-a", "--weight", "0"],
            "weight",
        ),
        (
            vec!["create", "route", "r", "--tier", "demo"],
            "use pool:NAME or direct:PROVIDER/MODEL",
        ),
        (vec!["set", "pool", "demo"], "nothing to set"),
        (
            vec![
                "create",
                "provider",
                "p",
                "--kind",
                "openai",
                "--credential",
                "sk-secret",
            ],
            "reference",
        ),
    ] {
        let r = sy(&dev, home, &args).await;
        assert!(!r.ok, "{args:?} should fail: {}", r.stdout);
        assert!(
            r.stderr.starts_with("switchyard: ") && r.stderr.contains(says),
            "{args:?}: {}",
            r.stderr
        );
        assert!(!r.stderr.contains("sk-secret"), "{}", r.stderr);
    }
    // A server that is not there is one line, not a hang.
    let r = sy_env(home, &[], &["get", "pools", "--server", "127.0.0.1:1"]).await;
    assert!(
        !r.ok
            && r.stderr
                .starts_with("switchyard: cannot reach http://127.0.0.1:1"),
        "{}",
        r.stderr
    );
    dev.stop().await;
}

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
