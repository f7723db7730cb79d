//! `switchyard create|get|set|rotate|delete|describe caller(s)` run as the
//! real binary against a real `switchyard dev`: a key is printed once, by
//! the command that made it, and by nothing after.
// Tests spawn servers and read their env overrides.
#![allow(clippy::disallowed_methods)]

mod common;

use common::{Run, ok, rows, start, sy};
use serde_json::Value;

/// The key a create or rotate printed: stdout's last line.
fn key_of(r: &Run) -> String {
    let key = ok(r).lines().last().unwrap_or_default().to_owned();
    assert!(
        key.starts_with("sy_") && key.len() == 46,
        "a key on the last line: {}",
        r.stdout
    );
    key
}

fn json(r: &Run) -> Value {
    serde_json::from_str(ok(r)).unwrap_or_else(|e| panic!("{e}: {}", r.stdout))
}

#[tokio::test]
async fn callers_round_trip_and_their_keys_are_shown_only_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dev = start(&dir.path().join("data")).await;
    let home = dir.path();
    // Every command's output after a key was printed, to search for the key.
    let mut seen: Vec<Run> = Vec::new();

    let g = sy(&dev, home, &["get", "callers"]).await;
    assert!(g.ok && g.stdout.is_empty() && g.stderr.contains("no callers found"));

    let c = sy(
        &dev,
        home,
        &[
            "create",
            "caller",
            "billing",
            "--model",
            "*",
            "--rpm",
            "600",
            "--daily-tokens",
            "1000000",
            "--expires",
            "90d",
            "--label",
            "team=billing",
            "--description",
            "the billing service",
        ],
    )
    .await;
    let billing = key_of(&c);
    let out: Vec<&str> = c.stdout.lines().collect();
    assert_eq!(out.len(), 2, "{}", c.stdout);
    assert!(
        out[0].starts_with("caller billing created (models *, direct no, expires 20"),
        "{}",
        c.stdout
    );
    assert_eq!(c.stdout.matches(&billing).count(), 1, "the key once");
    assert!(c.stderr.contains("shown this once"), "{}", c.stderr);
    assert!(!c.stderr.contains(&billing), "{}", c.stderr);

    // -q: the key alone, for KEY=$(...).
    let q = sy(
        &dev,
        home,
        &[
            "create",
            "caller",
            "batch",
            "--model",
            "demo,chat",
            "--allow-direct",
            "--tpm",
            "5000",
            "-q",
        ],
    )
    .await;
    let batch = key_of(&q);
    assert_eq!(q.stdout, format!("{batch}\n"));
    assert!(q.stderr.is_empty(), "{}", q.stderr);
    assert_ne!(billing, batch);

    let g = sy(&dev, home, &["get", "callers"]).await;
    let out = ok(&g);
    let header: Vec<&str> = out.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "NAME", "MODELS", "DIRECT", "RPM", "TPM", "DAILY", "MONTHLY", "EXPIRES", "ENABLED",
            "KEY"
        ]
    );
    let rs = rows(out);
    assert_eq!(rs.len(), 2, "{out}");
    assert_eq!(
        rs[0][..7],
        ["batch", "chat,demo", "yes", "-", "5000", "-", "-"]
    );
    assert_eq!(rs[0][7..], ["never", "true", &format!("{}…", &batch[..11])]);
    assert_eq!(
        rs[1][..7],
        ["billing", "*", "no", "600", "-", "1000000", "-"]
    );
    assert!(
        rs[1][7].starts_with("20") && rs[1][7].ends_with('Z'),
        "{out}"
    );
    assert_eq!(rs[1][8..], ["true", &format!("{}…", &billing[..11])]);
    seen.push(g);

    let w = sy(&dev, home, &["get", "callers", "-o", "wide"]).await;
    let header: Vec<&str> = ok(&w).lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header[9..],
        [
            "KEY",
            "LABELS",
            "CERTIFICATE_SUBJECT",
            "PREVIOUS_KEY_UNTIL",
            "ETAG"
        ]
    );
    assert_eq!(rows(ok(&w))[1][10], "team=billing", "{}", w.stdout);
    seen.push(w);

    let j = sy(&dev, home, &["get", "callers", "-o", "json"]).await;
    let v = json(&j);
    let list = v.as_array().expect("an array");
    assert_eq!(list.len(), 2);
    assert_eq!(list[1]["name"], "billing");
    assert_eq!(list[1]["key_prefix"], billing[..11]);
    assert_eq!(list[1]["rpm_limit"], 600);
    assert_eq!(list[1]["tpm_limit"], Value::Null);
    assert_eq!(list[1]["models"], serde_json::json!(["*"]));
    assert_eq!(list[1]["labels"]["team"], "billing");
    assert!(list[1]["expire_time"].is_string());
    seen.push(j);
    let y = sy(&dev, home, &["get", "caller", "batch", "-o", "yaml"]).await;
    assert!(ok(&y).contains("name: batch"), "{}", y.stdout);
    seen.push(y);

    let d = sy(&dev, home, &["describe", "caller", "billing"]).await;
    let out = ok(&d);
    for line in [
        "Name:         billing",
        "Description:  the billing service",
        "Models:       * (every pool and route)",
        "Direct:       no",
        "Rate limits:  rpm 600, tpm none",
        "Token budget: daily 1000000, monthly none",
        &format!("Key:          {}…", &billing[..11]),
        "Previous key: none",
        "Labels:       team=billing",
    ] {
        assert!(out.contains(line), "{line:?} in {out}");
    }
    assert!(
        out.contains("(in 90d 0h)") || out.contains("(in 89d 23h)"),
        "{out}"
    );
    seen.push(d);

    // set: only the flags given; none clears a limit.
    let s = sy(
        &dev,
        home,
        &[
            "set",
            "caller",
            "billing",
            "--enabled",
            "false",
            "--model",
            "demo",
            "--model",
            "chat",
            "--rpm",
            "none",
            "--tpm",
            "7000",
            "--expires",
            "never",
        ],
    )
    .await;
    assert!(
        ok(&s).starts_with(
            "caller billing updated: enabled true -> false, models * -> demo,chat, \
             rpm_limit 600 -> none, tpm_limit none -> 7000, expire_time 20"
        ) && s.stdout.trim_end().ends_with(" -> never"),
        "{}",
        s.stdout
    );
    seen.push(s);
    let v = json(&sy(&dev, home, &["get", "caller", "billing", "-o", "json"]).await);
    assert_eq!(v["enabled"], false);
    assert_eq!(v["models"], serde_json::json!(["chat", "demo"]));
    assert_eq!(v["rpm_limit"], Value::Null);
    assert_eq!(v["tpm_limit"], 7000);
    assert_eq!(v["daily_token_budget"], 1_000_000, "untouched");
    assert_eq!(v["expire_time"], Value::Null);
    assert_eq!(v["labels"]["team"], "billing", "untouched");

    // rotate: a new key, printed like create's; the old one has a grace end.
    let r = sy(
        &dev,
        home,
        &["rotate", "caller", "billing", "--grace", "1h"],
    )
    .await;
    let rotated = key_of(&r);
    assert_ne!(rotated, billing);
    assert!(
        r.stdout
            .starts_with("caller billing has a new key (the previous one works until 20"),
        "{}",
        r.stdout
    );
    assert!(r.stderr.contains("shown this once"), "{}", r.stderr);
    let v = json(&sy(&dev, home, &["get", "caller", "billing", "-o", "json"]).await);
    assert_eq!(v["key_prefix"], rotated[..11]);
    assert!(v["previous_key_expire_time"].is_string(), "{v}");
    let d = sy(&dev, home, &["describe", "caller", "billing"]).await;
    assert!(
        ok(&d).contains("Previous key: works until 20")
            && (d.stdout.contains("(in 59m") || d.stdout.contains("(in 1h 0m)")),
        "{}",
        d.stdout
    );
    seen.push(d);
    let r = sy(&dev, home, &["rotate", "caller", "billing", "-q"]).await;
    let last = key_of(&r);
    assert_eq!(r.stdout, format!("{last}\n"));
    let v = json(&sy(&dev, home, &["get", "caller", "billing", "-o", "json"]).await);
    assert_eq!(v["previous_key_expire_time"], Value::Null, "no grace: {v}");

    let del = sy(&dev, home, &["delete", "caller", "batch"]).await;
    assert_eq!(ok(&del).trim(), "caller batch deleted");
    seen.push(del);
    let g = sy(&dev, home, &["get", "callers", "-o", "wide"]).await;
    let rs = rows(ok(&g));
    assert_eq!(rs.len(), 1, "{}", g.stdout);
    assert_eq!(rs[0][..3], ["billing", "chat,demo", "no"]);
    seen.push(g);

    // No key in full anywhere after the command that printed it.
    for run in &seen {
        for key in [&billing, &batch, &rotated, &last] {
            assert!(
                !run.stdout.contains(&key[..12]) && !run.stderr.contains(&key[..12]),
                "a key past its prefix in: {}{}",
                run.stdout,
                run.stderr
            );
        }
    }
    dev.stop().await;
}

#[tokio::test]
async fn bad_caller_values_exit_non_zero_with_the_servers_message() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dev = start(&dir.path().join("data")).await;
    let home = dir.path();
    ok(&sy(
        &dev,
        home,
        &["create", "caller", "taken", "--model", "*", "-q"],
    )
    .await);
    for (args, says) in [
        (
            vec!["create", "caller", "x", "--model", "*", "--rpm", "0"],
            "InvalidArgument: caller.rpm_limit is 0",
        ),
        (
            vec!["create", "caller", "bad name!", "--model", "*"],
            "InvalidArgument",
        ),
        (
            vec!["create", "caller", "taken", "--model", "*"],
            "AlreadyExists",
        ),
        (
            vec![
                "create",
                "caller",
                "old",
                "--model",
                "*",
                "--expires",
                "2000-01-01T00:00:00Z",
            ],
            "in the past",
        ),
        (
            vec!["set", "caller", "nope", "--rpm", "5"],
            "NotFound: caller 'nope' not found",
        ),
        (
            vec!["set", "caller", "taken", "--tpm", "0"],
            "caller.tpm_limit is 0",
        ),
        (vec!["set", "caller", "taken"], "nothing to set"),
        (vec!["rotate", "caller", "nope"], "NotFound"),
        (
            vec!["rotate", "caller", "taken", "--grace", "31d"],
            "InvalidArgument: grace_seconds",
        ),
        (vec!["delete", "caller", "nope"], "NotFound"),
        (
            vec!["delete", "caller", "taken", "--force"],
            "--force applies",
        ),
        (vec!["describe", "caller", "nope"], "NotFound"),
        (vec!["get", "caller", "nope"], "NotFound"),
    ] {
        let r = sy(&dev, home, &args).await;
        assert!(!r.ok, "{args:?} should fail: {}", r.stdout);
        assert!(
            r.stdout.is_empty(),
            "{args:?}: no key, nothing: {}",
            r.stdout
        );
        assert!(
            r.stderr.starts_with("switchyard: ") && r.stderr.contains(says),
            "{args:?}: {}",
            r.stderr
        );
    }
    // Flags clap refuses before any call: usage errors, no key either.
    for args in [
        vec!["create", "caller", "x", "--model", "*", "--expires", "soon"],
        vec!["create", "caller", "x"],
        vec!["set", "caller", "taken", "--rpm", "lots"],
        vec!["rotate", "caller", "taken", "--grace", "forever"],
        vec![
            "create", "caller", "x", "--model", "*", "--label", "nolabel",
        ],
    ] {
        let r = sy(&dev, home, &args).await;
        assert!(!r.ok && r.stdout.is_empty(), "{args:?}: {}", r.stdout);
        assert!(r.stderr.starts_with("error: "), "{args:?}: {}", r.stderr);
    }
    dev.stop().await;
}

#[tokio::test]
async fn caller_commands_have_help_with_examples() {
    let dir = tempfile::tempdir().expect("tempdir");
    for args in [
        vec!["create", "caller", "--help"],
        vec!["set", "caller", "--help"],
        vec!["rotate", "caller", "--help"],
        vec!["rotate", "--help"],
        vec!["get", "--help"],
        vec!["describe", "--help"],
        vec!["delete", "--help"],
    ] {
        let r = common::sy_env(dir.path(), &[], &args).await;
        let out = ok(&r);
        assert!(
            out.contains("Examples:") && out.contains("caller"),
            "{args:?}: {out}"
        );
    }
}
