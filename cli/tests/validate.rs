//! `switchyard validate` holds references to the allow-list the workers
//! use (same flags and environment): a server setting is never accepted.
// Tests spawn the binary with their own environment.
#![allow(clippy::disallowed_methods)]

use std::process::Command;

const FILE: &str = "version: switchyard/v1
providers:
  - name: a
    kind: openai
    base_url: https://x.example/v1
    credential: env:REDIS_URL
  - name: b
    kind: openai
    base_url: https://x.example/v1
    credential: file:/etc/passwd
  - name: c
    kind: openai
    base_url: https://x.example/v1
    credential: env:ACME_KEY
";

fn validate(env: &[(&str, &str)], args: &[&str]) -> (bool, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("switchyard.yaml");
    std::fs::write(&path, FILE).expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .arg("validate")
        .arg("-f")
        .arg(&path)
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .output()
        .expect("run switchyard");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn references_outside_the_allow_list_are_problems_with_their_line() {
    let (ok, err) = validate(&[], &[]);
    assert!(!ok);
    assert!(
        err.contains(
            "line 3: provider.credential.reference is refused: REDIS_URL is a server setting"
        ),
        "{err}"
    );
    assert!(
        err.contains("line 7: provider.credential.reference is refused: file references are off"),
        "{err}"
    );
    assert!(err.contains("line 11: provider.credential.reference is refused: environment references must name a variable starting with SWITCHYARD_CRED_"), "{err}");
    // The workers' flags move the allow-list, never onto REDIS_URL.
    let (ok, err) = validate(
        &[("SWITCHYARD_CREDENTIAL_ENV_PREFIX", "ACME_")],
        &["--credential-dir", "/etc"],
    );
    assert!(!ok);
    assert!(
        err.contains("1 problem(s)") && err.contains("REDIS_URL is a server setting"),
        "{err}"
    );
    let (ok, err) = validate(&[("SWITCHYARD_CREDENTIAL_ENV_PREFIX", "REDIS_")], &[]);
    assert!(!ok && err.contains("would cover server settings"), "{err}");
}
