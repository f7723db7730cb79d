//! Issue 18's settings through the operator commands, as the real binary
//! against a real `switchyard dev`: provider keys, members' concurrency
//! cap, context window and key, route tiers' conditions — created, shown
//! by `get` / `describe`, changed by `set`, and carried by `apply` / `export`.
// Tests spawn servers and read their env overrides.
#![allow(clippy::disallowed_methods)]

mod common;

use common::{ok, rows, start, sy};

#[tokio::test]
async fn keys_caps_and_conditions_are_created_shown_and_set() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dev = start(&dir.path().join("data")).await;
    let home = dir.path();

    let c = sy(
        &dev,
        home,
        &[
            "create",
            "provider",
            "keyed",
            "--kind",
            "mock",
            "--key",
            "batch=env:SWITCHYARD_CRED_BATCH",
            "--key",
            "spare=env:SWITCHYARD_CRED_SPARE",
        ],
    )
    .await;
    assert!(
        ok(&c)
            .contains("keys batch (env:SWITCHYARD_CRED_BATCH), spare (env:SWITCHYARD_CRED_SPARE)"),
        "{}",
        c.stdout
    );
    let bad = sy(
        &dev,
        home,
        &[
            "create",
            "provider",
            "x",
            "--kind",
            "mock",
            "--key",
            "k=sk-live-0123456789abcdef",
        ],
    )
    .await;
    assert!(
        !bad.ok && bad.stderr.contains("NAME=env:VAR"),
        "{}",
        bad.stderr
    );
    assert!(
        !bad.stderr.contains("sk-live-0123456789abcdef"),
        "{}",
        bad.stderr
    );

    ok(&sy(&dev, home, &["create", "pool", "p"]).await);
    let c = sy(
        &dev,
        home,
        &[
            "create",
            "member",
            "--pool",
            "p",
            "--provider",
            "keyed",
            "--model",
            "m",
            "--max-concurrency",
            "8",
            "--context-tokens",
            "128000",
            "--key",
            "batch",
        ],
    )
    .await;
    ok(&c);
    let unknown = sy(
        &dev,
        home,
        &[
            "create",
            "member",
            "--pool",
            "p",
            "--provider",
            "keyed",
            "--model",
            "n",
            "--key",
            "nope",
        ],
    )
    .await;
    assert!(
        !unknown.ok
            && unknown
                .stderr
                .contains("member.key 'nope' is not a key of provider 'keyed'"),
        "{}",
        unknown.stderr
    );

    // The routing columns show when a member sets one.
    let g = sy(&dev, home, &["get", "members", "--pool", "p"]).await;
    let out = ok(&g);
    let header: Vec<&str> = out
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    let at = header
        .iter()
        .position(|h| *h == "MAX_CONC")
        .expect("MAX_CONC column");
    assert_eq!(header[at..at + 3], ["MAX_CONC", "CONTEXT", "KEY"], "{out}");
    assert_eq!(rows(out)[0][at..at + 3], ["8", "128000", "batch"], "{out}");
    let demo = sy(&dev, home, &["get", "members", "--pool", "demo"]).await;
    assert!(!ok(&demo).contains("MAX_CONC"), "{}", demo.stdout);
    let d = sy(&dev, home, &["describe", "pool", "p"]).await;
    let out = ok(&d);
    assert!(out.contains("MAX_CONC") && out.contains("batch"), "{out}");
    let d = sy(&dev, home, &["describe", "provider", "keyed"]).await;
    assert!(
        ok(&d).contains(
            "Keys:         batch (env:SWITCHYARD_CRED_BATCH), spare (env:SWITCHYARD_CRED_SPARE)"
        ),
        "{}",
        d.stdout
    );

    // Tier conditions: given with --tier, shown by describe and get.
    let c = sy(
        &dev,
        home,
        &[
            "create",
            "route",
            "smart",
            "--tier",
            "pool:p when=images+prompt>=32000",
            "--tier",
            "pool:demo",
        ],
    )
    .await;
    assert_eq!(
        ok(&c).trim(),
        "route smart created: pool:p when=images+prompt>=32000, pool:demo"
    );
    let d = sy(&dev, home, &["describe", "route", "smart"]).await;
    assert!(
        ok(&d).contains("1. pool:p when=images+prompt>=32000"),
        "{}",
        d.stdout
    );
    let bad = sy(
        &dev,
        home,
        &["create", "route", "r2", "--tier", "pool:p when=colour"],
    )
    .await;
    assert!(
        !bad.ok && bad.stderr.contains("condition 'colour'"),
        "{}",
        bad.stderr
    );

    // Set: clear the cap, unpin the key.
    let s = sy(
        &dev,
        home,
        &[
            "set",
            "member",
            "p/keyed/m",
            "--max-concurrency",
            "none",
            "--key",
            "",
        ],
    )
    .await;
    assert!(
        ok(&s).contains("max_concurrency 8 -> -, key batch -> every"),
        "{}",
        s.stdout
    );
    let g = sy(&dev, home, &["get", "members", "--pool", "p", "-o", "json"]).await;
    let v: serde_json::Value = serde_json::from_str(ok(&g)).expect("json");
    let m = &v[0];
    assert_eq!(
        (
            m["max_concurrency"].clone(),
            m["context_tokens"].clone(),
            m["key"].clone()
        ),
        (
            serde_json::Value::Null,
            128_000.into(),
            serde_json::Value::Null
        ),
        "{v}"
    );

    // Export writes keys by name and reference; applying it changes nothing.
    let e = sy(&dev, home, &["export"]).await;
    let yaml = ok(&e).to_owned();
    for shown in [
        "- name: batch",
        "credential: env:SWITCHYARD_CRED_BATCH",
        "context_tokens: 128000",
        "images: true",
        "min_prompt_tokens: 32000",
    ] {
        assert!(yaml.contains(shown), "{shown} missing in:\n{yaml}");
    }
    let file = home.join("exported.yaml");
    std::fs::write(&file, &yaml).expect("write");
    let a = sy(&dev, home, &["apply", "-f", file.to_str().expect("path")]).await;
    assert!(ok(&a).contains("no changes"), "{}", a.stdout);
    dev.stop().await;
}
