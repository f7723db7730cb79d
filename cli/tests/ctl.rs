//! The kubectl-like operator commands (`get`, `describe`, `create`, `set`,
//! `delete`) run as the real binary against a real
//! `switchyard dev`, each test on its own ports and data directory.
// Tests spawn servers and read their env overrides.
#![allow(clippy::disallowed_methods)]

mod common;

use std::time::Duration;

use common::{ok, rows, start, sy, sy_env};
use switchyard_proto::v1 as pb;

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
            "ID",
            "POOL",
            "PROVIDER",
            "MODEL",
            "WEIGHT",
            "PRIORITY",
            "STATUS",
            "HEALTH",
            "IN_FLIGHT",
            "TTFT",
            "LATENCY"
        ]
    );
    let rs = rows(out);
    assert_eq!(rs.len(), 3, "{out}");
    for (r, model) in rs.iter().zip(["mock-a", "mock-b", "mock-c"]) {
        assert_eq!(
            r[1..],
            [
                "demo", "mock", model, "1", "0", "ACTIVE", "ok", "0", "-", "-"
            ]
        );
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
            .ends_with("RPM_LIMIT  TPM_LIMIT  MAX_OUTPUT  ETAG")
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
        // ... HEALTH IN_FLIGHT TTFT LATENCY ATTEMPTS ERRORS P50 P95
        let f: Vec<&str> = l.split_whitespace().collect();
        assert_eq!(f[7], "0", "nothing in flight: {out}");
        assert!(f[8].ends_with("ms") && f[9].ends_with("ms"), "{out}");
        assert_eq!(f[10..12], ["1", "0"], "{out}");
        assert!(f[12].ends_with("ms") && f[13].ends_with("ms"), "{out}");
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
            "env:SWITCHYARD_CRED_OPENAI",
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
                    "env:SWITCHYARD_CRED_OPENAI",
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
