//! The operator's GitOps loop with the real binaries: a config file in git,
//! `switchyard validate` in CI, `switchyard apply` to an empty control plane
//! on Postgres, a worker serving it through Redis, `export` → `apply` as a
//! no-op, a change in the file re-applied, and `--prune`.
// Tests spawn callers freely and read their env overrides.
#![allow(clippy::disallowed_methods)]

mod common;

use common::*;
use switchyard_proto::v1 as pb;
use switchyard_testkit::db::TestDb;

const ADMIN: &str = "gitops-admin-token";

/// The `switchyard` command, built next to the worker by `cargo test --workspace`.
fn switchyard() -> std::path::PathBuf {
    let path = std::path::Path::new(env!("CARGO_BIN_EXE_switchyard-data-plane"))
        .with_file_name("switchyard");
    assert!(
        path.exists(),
        "build the CLI first: cargo build -p switchyard ({})",
        path.display()
    );
    path
}

struct Out {
    ok: bool,
    stdout: String,
    stderr: String,
}

/// Runs `switchyard ARGS` against the control plane at `server`, bounded.
async fn run(server: &str, args: &[&str]) -> Out {
    let mut cmd = tokio::process::Command::new(switchyard());
    cmd.args(args)
        .env_clear()
        .env("SWITCHYARD_SERVER", format!("http://{server}"))
        .env("SWITCHYARD_TOKEN", ADMIN)
        .env("HOME", std::env::temp_dir())
        .kill_on_drop(true);
    let out = tokio::time::timeout(std::time::Duration::from_secs(30), cmd.output())
        .await
        .expect("switchyard finishes in time")
        .expect("switchyard runs");
    Out {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn config_file(base_url: &str, weight: u32, with_route: bool) -> String {
    let route = if with_route {
        "routes:\n  - name: smart\n    tiers:\n      - pool: coding\n      - direct: fake/m-backup\n        backup: true\n"
    } else {
        ""
    };
    format!(
        "version: switchyard/v1\n\
         providers:\n  - name: fake\n    kind: openai\n    base_url: {base_url}\n    credential: env:SWITCHYARD_CRED_FAKE\n\
         pools:\n  - name: coding\n    strategy: weighted\n    description: code models\n    failover:\n      failure_threshold: 5\n    members:\n      - provider: fake\n        model: m-a\n        weight: {weight}\n      - provider: fake\n        model: m-b\n\
         {route}"
    )
}

async fn models(w: &ServerProc) -> Vec<String> {
    let mut c = client(w).await;
    let mut names: Vec<String> = c
        .list_models(pb::ListModelsRequest {})
        .await
        .expect("list models")
        .into_inner()
        .models
        .into_iter()
        .map(|m| m.name)
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn an_operator_goes_from_an_empty_control_plane_to_a_served_config_with_apply() {
    let fake = fake().await;
    let db = TestDb::postgres().await;
    let prefix = RedisPrefix::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let cp = control_plane(&prefix, dir.path(), ADMIN, &[("DATABASE_URL", &db.url)]).await;
    let worker = worker(
        &redis_url(),
        &prefix,
        &[("SWITCHYARD_CRED_FAKE", "sk-fake-0000")],
    )
    .await;
    let server = cp.addr.to_string();
    let file = dir.path().join("switchyard.yaml");
    std::fs::write(&file, config_file(&fake.base_url(), 3, true)).expect("write");
    let file = file.to_str().expect("utf-8 path");

    // CI: the file checks out offline.
    let v = run(&server, &["validate", "-f", file]).await;
    assert!(v.ok, "{}{}", v.stdout, v.stderr);
    assert!(
        v.stdout
            .contains("valid (1 providers, 1 pools, 2 members, 1 routes)"),
        "{}",
        v.stdout
    );

    // The plan, then the apply: one revision for everything.
    let plan = run(&server, &["apply", "-f", file, "--dry-run"]).await;
    assert!(plan.ok, "{}", plan.stderr);
    for line in [
        "provider fake: created",
        "  + credential: env:SWITCHYARD_CRED_FAKE",
        "pool coding: created",
        "  + strategy: weighted",
        "  + failover.failure_threshold: 5",
        "member coding/fake/m-a: created",
        "  + weight: 3",
        "route smart: created",
        "  + tiers: pool:coding, direct:fake/m-backup (backup)",
        "dry run: 5 change(s), nothing written (revision stays 0)",
    ] {
        assert!(
            plan.stdout.contains(line),
            "missing {line:?} in:\n{}",
            plan.stdout
        );
    }
    let applied = run(&server, &["apply", "-f", file]).await;
    assert!(applied.ok, "{}", applied.stderr);
    assert!(
        applied.stdout.contains("applied 5 change(s) as revision 1"),
        "{}",
        applied.stdout
    );

    // The worker serves it, through the credential reference.
    wait_revision(&worker, 1).await;
    assert_eq!(models(&worker).await, ["coding", "smart"]);
    let mut c = client(&worker).await;
    let answer = c
        .generate(ask("smart", "hello"))
        .await
        .expect("served")
        .into_inner();
    assert!(!answer.content.is_empty());
    assert_eq!(
        fake.last_headers("m-a")
            .or_else(|| fake.last_headers("m-b"))
            .and_then(|h| h.get("authorization").cloned())
            .map(|v| v.to_str().unwrap_or_default().to_owned()),
        Some("Bearer sk-fake-0000".to_owned())
    );

    // export → apply changes nothing; export is stable.
    let exported = run(&server, &["export"]).await;
    assert!(exported.ok, "{}", exported.stderr);
    assert!(
        exported.stderr.contains("exported revision 1"),
        "{}",
        exported.stderr
    );
    let again = run(&server, &["export"]).await;
    assert_eq!(exported.stdout, again.stdout, "two exports are identical");
    let export_file = dir.path().join("exported.yaml");
    std::fs::write(&export_file, &exported.stdout).expect("write");
    let export_file = export_file.to_str().expect("utf-8 path");
    let noop = run(&server, &["apply", "-f", export_file, "--prune"]).await;
    assert!(noop.ok, "{}", noop.stderr);
    assert!(
        noop.stdout
            .contains("no changes: the config already matches (revision 1)"),
        "{}",
        noop.stdout
    );
    assert!(
        !exported.stdout.contains("sk-fake"),
        "no secret in the export"
    );

    // A change in git: a weight, and the route dropped from the file.
    std::fs::write(file, config_file(&fake.base_url(), 8, false)).expect("write");
    let kept = run(&server, &["apply", "-f", file]).await;
    assert!(kept.ok, "{}", kept.stderr);
    assert!(
        kept.stdout
            .contains("member coding/fake/m-a: updated\n  ~ weight: 3 -> 8"),
        "{}",
        kept.stdout
    );
    assert!(
        kept.stdout
            .contains("not in the file, left as they are (--prune deletes them): route smart"),
        "{}",
        kept.stdout
    );
    let pruned = run(&server, &["apply", "-f", file, "--prune"]).await;
    assert!(pruned.ok, "{}", pruned.stderr);
    assert!(
        pruned.stdout.contains("route smart: deleted")
            && pruned.stdout.contains("applied 1 change(s) as revision 3"),
        "{}",
        pruned.stdout
    );
    wait_revision(&worker, 3).await;
    assert_eq!(models(&worker).await, ["coding"]);

    // Two CI jobs: the one holding an old revision is refused, nothing written.
    let stale = run(
        &server,
        &["apply", "-f", export_file, "--expected-revision", "1"],
    )
    .await;
    assert!(!stale.ok);
    assert!(
        stale
            .stderr
            .contains("Aborted: the config is at revision 3, not the expected 1"),
        "{}",
        stale.stderr
    );
    assert!(!stale.stderr.contains("panicked") && !stale.stderr.contains("backtrace"));

    // A broken file: every problem, each with its line; nothing applied.
    let broken = dir.path().join("broken.yaml");
    std::fs::write(
        &broken,
        "version: switchyard/v1\n\
         providers:\n  - name: fake\n    kind: openai\n    base_url: ftp://nowhere\n\
         pools:\n  - name: coding\n    members:\n      - provider: ghost\n        model: m-a\n        weight: 0\n",
    )
    .expect("write");
    let broken = broken.to_str().expect("utf-8 path");
    let bad = run(&server, &["validate", "-f", broken]).await;
    assert!(!bad.ok);
    assert!(
        bad.stderr.contains("line 3: provider.base_url"),
        "{}",
        bad.stderr
    );
    // (weight 0 means the default, 1, as on create: not a problem.)
    assert!(
        bad.stderr
            .contains("line 9: provider 'ghost' is not declared in the file"),
        "{}",
        bad.stderr
    );
    assert!(bad.stderr.contains("problem(s) in"), "{}", bad.stderr);
    let refused = run(&server, &["apply", "-f", broken]).await;
    assert!(!refused.ok);
    assert!(
        refused.stderr.contains("nothing applied"),
        "{}",
        refused.stderr
    );
    let typo = dir.path().join("typo.yaml");
    std::fs::write(
        &typo,
        "version: switchyard/v1\npools:\n  - name: coding\n    stratgy: weighted\n",
    )
    .expect("write");
    let typo = run(&server, &["validate", "-f", typo.to_str().expect("utf-8")]).await;
    assert!(!typo.ok);
    assert!(
        typo.stderr.contains("line 4") && typo.stderr.contains("stratgy"),
        "{}",
        typo.stderr
    );
}
