//! The README's grpcurl examples, run as written (with the real grpcurl)
//! against `switchyard dev`, so they cannot rot: the operator block creates
//! the provider, pool, members and route; the data-plane block calls them.
//! Only the provider's URL is swapped for a fake OpenAI upstream on loopback.
// Tests spawn callers freely and read their env overrides.
#![allow(clippy::disallowed_methods)]

mod common;

use switchyard_testkit::{FakeConfig, FakeUpstream};

/// The commands of the first ```sh block after `heading`, continuation
/// lines joined, comments and blank lines dropped.
fn commands_after(readme: &str, heading: &str) -> Vec<String> {
    let start = readme
        .find(heading)
        .unwrap_or_else(|| panic!("README has no '{heading}'"));
    let rest = &readme[start..];
    let open = rest.find("```sh\n").expect("a sh block") + "```sh\n".len();
    let close = rest[open..].find("```").expect("block end") + open;
    let mut out = Vec::new();
    let mut current = String::new();
    for line in rest[open..close].lines() {
        let line = line.trim_end();
        if current.is_empty() && (line.trim().is_empty() || line.trim_start().starts_with('#')) {
            continue;
        }
        if let Some(cont) = line.strip_suffix('\\') {
            current.push_str(cont);
            current.push(' ');
            continue;
        }
        current.push_str(line);
        // A newline inside a quoted argument belongs to it.
        if current.matches('\'').count() % 2 == 1 {
            current.push('\n');
            continue;
        }
        out.push(std::mem::take(&mut current));
    }
    out
}

fn run(cmd: &str, env: &[(&str, &str)]) -> (bool, String, String) {
    // From the repository's root, as a reader of the README runs them.
    let out = std::process::Command::new("bash")
        .args(["-c", cmd])
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .envs(env.iter().copied())
        .output()
        .expect("bash");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_grpcurl_examples_work_as_written() {
    // First, before any server: the first call may make the tools' venv.
    let grpcurl = switchyard_testkit::tools::grpcurl();
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("README.md");
    let fake = FakeUpstream::start(FakeConfig::default()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let dev = common::start_with(
        dir.path(),
        &[("SWITCHYARD_CRED_OPENAI", "sk-fake-for-the-readme")],
    )
    .await;
    let bin_dir = grpcurl.parent().expect("grpcurl dir").display().to_string();
    let path = format!("{bin_dir}:{}", std::env::var("PATH").unwrap_or_default());
    let env = [
        ("PATH", path.as_str()),
        ("A", dev.addr.as_str()),
        ("W", dev.inference.as_str()),
        ("ADMIN_TOKEN", "unused-under-dev"),
    ];

    let mut member_id = String::new();
    let mut ran = 0;
    // Shell variables the blocks set (H=...), kept for the commands after them.
    let mut assignments = String::new();
    for section in ["## Operate it with grpcurl", "## Call it (data plane)"] {
        for cmd in commands_after(&readme, section) {
            // The addresses come from the running dev server.
            if cmd.starts_with("A=") || cmd.starts_with("W=") {
                continue;
            }
            if cmd
                .split_whitespace()
                .next()
                .is_some_and(|w| w.contains('='))
            {
                assignments.push_str(&cmd);
                assignments.push('\n');
                continue;
            }
            let mut cmd = cmd
                .replace("https://api.openai.com/v1", &fake.base_url())
                .replace("<member id>", &member_id);
            let streaming = cmd.contains("/WatchChanges");
            if streaming {
                // A live feed never ends by itself.
                cmd = cmd.replacen("grpcurl ", "grpcurl -max-time 2 ", 1);
            }
            let script = format!("{assignments}{cmd}");
            let (ok, out, err) = tokio::task::block_in_place(|| run(&script, &env));
            ran += 1;
            if streaming {
                assert!(
                    out.contains("\"revision\""),
                    "{cmd}\nprints changes before its time is up:\n{out}{err}"
                );
            } else {
                assert!(ok, "README command failed:\n{cmd}\n{out}{err}");
            }
            if cmd.contains("/CreateMember") {
                let v: serde_json::Value = serde_json::from_str(&out).expect("member JSON");
                member_id = v["id"].as_str().expect("member id").to_owned();
            }
            if cmd.contains("Inference/Generate ") || cmd.ends_with("Inference/Generate") {
                assert!(out.contains("\"servedBy\""), "{cmd}\n{out}");
            }
        }
    }
    assert!(
        !member_id.is_empty(),
        "the member id reached the update example"
    );

    // The HTTP walk-through, with curl, against the same dev server,
    // on the config the grpcurl block made (the CLI block replaces it).
    let http = format!("http://{}", dev.http);
    let http_env = [("PATH", path.as_str()), ("H", http.as_str())];
    let mut http_ran = 0;
    for cmd in commands_after(&readme, "## Call it over HTTP (OpenAI-compatible)") {
        if cmd.starts_with("H=") {
            continue; // the address comes from the running dev server
        }
        let (ok, out, err) = tokio::task::block_in_place(|| run(&cmd, &http_env));
        http_ran += 1;
        assert!(ok, "README command failed:\n{cmd}\n{out}{err}");
        let check = |want: &str| assert!(out.contains(want), "{cmd}: no {want:?} in\n{out}{err}");
        if cmd.contains("/v1/models") {
            check(r#""id":"coding""#);
        } else if cmd.contains("\"nope\"") {
            check(r#""code":"model_not_found""#);
        } else if cmd.contains("grep") {
            check("x-switchyard-attempts");
        } else if cmd.contains("\"stream\":true") {
            check("data: [DONE]");
            check(r#""usage":{"#);
        } else if cmd.contains("/v1/embeddings") {
            check(r#""object":"embedding""#);
        } else if cmd.contains("/v1/chat/completions") {
            check(r#""object":"chat.completion""#);
        }
    }
    assert!(http_ran >= 6, "{http_ran} README HTTP commands ran");

    // The CLI walk-through, with the real `switchyard` command, on the
    // config the grpcurl block made.
    let cli_dir = std::path::Path::new(env!("CARGO_BIN_EXE_switchyard"))
        .parent()
        .expect("bin dir")
        .display()
        .to_string();
    let cli_path = format!("{cli_dir}:{path}");
    let server = format!("http://{}", dev.addr);
    let inference = format!("http://{}", dev.inference);
    let exported = dir.path().join("exported.yaml").display().to_string();
    let cli_env = [
        ("PATH", cli_path.as_str()),
        ("SWITCHYARD_SERVER", server.as_str()),
        ("SWITCHYARD_INFERENCE_SERVER", inference.as_str()),
        ("HOME", dir.path().to_str().expect("utf-8")),
    ];
    let mut cli_ran = 0;
    for cmd in commands_after(&readme, "## Operate it\n") {
        if cmd.starts_with("export ") {
            continue; // the addresses come from the running dev server
        }
        let mut cmd = cmd.replace("/tmp/switchyard.yaml", &exported);
        let streaming = cmd.contains("switchyard watch");
        if streaming {
            cmd = format!("timeout 3 {cmd}");
        }
        let (ok, out, err) = tokio::task::block_in_place(|| run(&cmd, &cli_env));
        cli_ran += 1;
        if streaming {
            assert!(out.contains("apply:"), "{cmd}\n{out}{err}");
            continue;
        }
        assert!(ok, "README command failed:\n{cmd}\n{out}{err}");
        assert!(!err.contains("panicked"), "{cmd}\n{err}");
        let check = |want: &str| assert!(out.contains(want), "{cmd}: no {want:?} in\n{out}");
        if cmd.contains("validate") {
            check("valid (4 providers, 2 pools, 5 members, 1 routes)");
        } else if cmd.contains("--dry-run") {
            check("dry run:");
        } else if cmd.contains(&exported) && cmd.contains("apply") {
            check("no changes: the config already matches");
        } else if cmd.contains("apply") {
            check("applied ");
        } else if cmd.contains("get members --pool coding -o json") {
            check("\"draining\"");
        } else if cmd.contains("get members") {
            check("POOL");
        } else if cmd.contains("--max-concurrency") {
            check("max_concurrency 64 -> 16, key every -> batch");
        } else if cmd.contains("describe provider") {
            check("batch (env:SWITCHYARD_CRED_OPENAI_BATCH)");
        } else if cmd.contains("set member") {
            check("draining");
        }
    }
    assert!(cli_ran >= 10, "{cli_ran} README CLI commands ran");

    assert!(ran >= 15, "{ran} README commands ran");
    dev.stop().await;
}
