//! TLS and mTLS on the control plane's gRPC port: who gets through, a
//! certificate rotated on disk reaching new connections while open ones
//! keep going, grpcurl over mTLS, and clear start-up errors.

mod common;

use std::time::Duration;

use common::*;
use switchyard_proto::v1 as pb;
use switchyard_proto::v1::control_plane_client::ControlPlaneClient;
use switchyard_testkit::certs::{
    CertFiles, CertPair, TestCerts, der_of, presented_certificate, tls_channel,
};

/// The control plane with `env` (TLS files), on its in-process bus.
async fn start(
    db: &TestDb,
    prefix: &RedisPrefix,
    mut env: Vec<(&'static str, String)>,
) -> ControlPlaneProc {
    env.push(("SWITCHYARD_BUS", "local".to_owned()));
    let mut launch = Launch::new(db, prefix);
    launch.extra_env = env;
    launch.start().await
}

/// An admin client over TLS trusting `ca_pem`, presenting `identity` if given.
async fn tls_client(
    cp: &ControlPlaneProc,
    ca_pem: &str,
    identity: Option<&CertPair>,
) -> Result<Client, String> {
    let channel = tls_channel(&cp.addr.to_string(), ca_pem, identity).await?;
    Ok(ControlPlaneClient::with_interceptor(
        channel,
        Bearer(ADMIN.to_owned()),
    ))
}

async fn list_pools(c: &mut Client) -> Result<Vec<String>, tonic::Status> {
    let pools = c.list_pools(pb::ListPoolsRequest::default()).await?;
    Ok(pools
        .into_inner()
        .pools
        .into_iter()
        .map(|p| p.name)
        .collect())
}

/// A client trusting `ca_pem` (presenting `identity`) cannot make a call.
async fn refused(cp: &ControlPlaneProc, ca_pem: &str, identity: Option<&CertPair>) -> bool {
    match tls_client(cp, ca_pem, identity).await {
        Err(_) => true,
        Ok(mut c) => list_pools(&mut c).await.is_err(),
    }
}

#[tokio::test]
async fn tls_serves_a_client_that_trusts_the_ca_and_no_other() {
    let (db, prefix) = (TestDb::sqlite(), RedisPrefix::new());
    let certs = TestCerts::generate();
    let files = CertFiles::new(&certs);
    let cp = start(&db, &prefix, files.env(false)).await;
    assert!(cp.logs().contains("\"mode\":\"tls\""), "{}", cp.logs());

    let mut c = tls_client(&cp, &certs.ca_pem, None)
        .await
        .expect("connect over TLS");
    create_pool(&mut c, pool("over-tls")).await;
    assert_eq!(list_pools(&mut c).await.expect("list"), vec!["over-tls"]);

    let other = TestCerts::generate_named("another CA");
    assert!(
        refused(&cp, &other.ca_pem, None).await,
        "a client trusting another CA"
    );
    // A plaintext (h2c) client gets nowhere either, and the server goes on.
    let mut plain = cp.admin().await;
    assert!(
        plain
            .list_pools(pb::ListPoolsRequest::default())
            .await
            .is_err()
    );
    list_pools(&mut c).await.expect("still serving");
}

#[tokio::test]
async fn mtls_refuses_callers_without_a_certificate_of_the_ca_and_names_those_with_one() {
    let (db, prefix) = (TestDb::sqlite(), RedisPrefix::new());
    let certs = TestCerts::generate();
    let files = CertFiles::new(&certs);
    let cp = start(&db, &prefix, files.env(true)).await;
    assert!(cp.logs().contains("\"mode\":\"mtls\""), "{}", cp.logs());

    assert!(
        refused(&cp, &certs.ca_pem, None).await,
        "no client certificate"
    );
    let stranger = TestCerts::generate_named("another CA").client("mallory");
    assert!(
        refused(&cp, &certs.ca_pem, Some(&stranger)).await,
        "a certificate of another CA"
    );

    let alice = certs.client("alice");
    let mut c = tls_client(&cp, &certs.ca_pem, Some(&alice))
        .await
        .expect("connect");
    create_pool(&mut c, pool("by-alice")).await;
    assert_eq!(list_pools(&mut c).await.expect("list"), vec!["by-alice"]);
    // The verified identity is in the RPC's span: on every log line of the call.
    let logs = cp.logs();
    let committed = logs
        .lines()
        .find(|l| l.contains("config change committed"))
        .unwrap_or_else(|| panic!("no change logged: {logs}"));
    assert!(committed.contains("\"client\":\"alice\""), "{committed}");
}

#[tokio::test]
async fn a_rotated_certificate_reaches_new_connections_while_open_ones_keep_going() {
    let (db, prefix) = (TestDb::sqlite(), RedisPrefix::new());
    let (first_ca, second_ca) = (
        TestCerts::generate(),
        TestCerts::generate_named("second CA"),
    );
    let files = CertFiles::new(&first_ca);
    let cp = start(&db, &prefix, files.env(false)).await;

    // Opened before the rotation, trusting only the first CA: a reconnect would fail.
    let mut before = tls_client(&cp, &first_ca.ca_pem, None)
        .await
        .expect("connect");
    list_pools(&mut before).await.expect("list before");
    let mut changes = before
        .watch_changes(pb::WatchChangesRequest::default())
        .await
        .expect("watch")
        .into_inner();

    let rotated = second_ca.server("rotated");
    files.write(&rotated);
    let want = der_of(&rotated.cert_pem);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        match presented_certificate(cp.addr, &second_ca.ca_pem).await {
            Ok(der) if der == want => break,
            seen if tokio::time::Instant::now() > deadline => {
                panic!(
                    "the new certificate was never served ({seen:?}); logs:\n{}",
                    cp.logs()
                )
            }
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    assert!(
        cp.logs().contains("tls certificate reloaded"),
        "{}",
        cp.logs()
    );
    assert!(
        refused(&cp, &first_ca.ca_pem, None).await,
        "new handshakes use the new certificate"
    );

    // The old connection: a call, and the stream it opened before sees it.
    create_pool(&mut before, pool("after-rotation")).await;
    let event = tokio::time::timeout(Duration::from_secs(10), changes.message())
        .await
        .expect("change in time")
        .expect("stream still open")
        .expect("an event");
    assert_eq!(event.name, "after-rotation");
    let mut after = tls_client(&cp, &second_ca.ca_pem, None)
        .await
        .expect("connect after");
    assert_eq!(
        list_pools(&mut after).await.expect("list after"),
        vec!["after-rotation"]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn grpcurl_lists_pools_over_mtls() {
    let (db, prefix) = (TestDb::sqlite(), RedisPrefix::new());
    let certs = TestCerts::generate();
    let files = CertFiles::new(&certs);
    let cp = start(&db, &prefix, files.env(true)).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let client = certs.client("grpcurl");
    let (cert, key) = (dir.path().join("client.crt"), dir.path().join("client.key"));
    std::fs::write(&cert, &client.cert_pem).expect("write");
    std::fs::write(&key, &client.key_pem).expect("write");
    let ca = files.client_ca.display().to_string();
    let addr = cp.addr.to_string();
    let auth = format!("authorization: Bearer {ADMIN}");
    let run = |with_cert: bool| {
        let mut cmd = std::process::Command::new(switchyard_testkit::tools::grpcurl());
        cmd.args(["-cacert", &ca, "-max-time", "10"]);
        if with_cert {
            cmd.arg("-cert").arg(&cert).arg("-key").arg(&key);
        }
        cmd.args(["-H", &auth, &addr, "switchyard.v1.ControlPlane/ListPools"]);
        let out = tokio::task::block_in_place(|| cmd.output()).expect("run grpcurl");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    };
    let (ok, out) = run(true);
    assert!(ok, "{out}");
    assert!(out.trim_start().starts_with('{'), "{out}");
    let (ok, out) = run(false);
    assert!(!ok, "without a client certificate: {out}");
}

#[tokio::test]
async fn bad_tls_settings_stop_the_start_with_the_file_named() {
    let certs = TestCerts::generate();
    let files = CertFiles::new(&certs);
    let other_key = files.cert.with_file_name("other.key");
    std::fs::write(&other_key, certs.client("x").key_pem).expect("write");
    let cert = files.cert.display().to_string();
    let missing = files
        .cert
        .with_file_name("missing.crt")
        .display()
        .to_string();
    let other_key = other_key.display().to_string();
    let cases: [(&[(&str, &str)], &str); 3] = [
        (
            &[("SWITCHYARD_TLS_CERT", &cert)],
            "--tls-cert needs --tls-key",
        ),
        (
            &[
                ("SWITCHYARD_TLS_CERT", &missing),
                ("SWITCHYARD_TLS_KEY", &cert),
            ],
            "missing.crt",
        ),
        (
            &[
                ("SWITCHYARD_TLS_CERT", &cert),
                ("SWITCHYARD_TLS_KEY", &other_key),
            ],
            "other.key does not match",
        ),
    ];
    for (env, expect) in cases {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_switchyard-control-plane"));
        cmd.args(["--listen", "127.0.0.1:0"])
            .env_clear()
            .env("DATABASE_URL", "sqlite::memory:")
            .env("SWITCHYARD_NO_AUTH", "true")
            .env("SWITCHYARD_BUS", "local")
            .env("SWITCHYARD_METRICS_LISTEN", "127.0.0.1:0");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = tokio::time::timeout(Duration::from_secs(20), cmd.output())
            .await
            .expect("exits promptly")
            .expect("runs");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.status.code(), Some(2), "{expect}: {text}");
        assert!(text.contains(expect), "want {expect:?} in: {text}");
        assert!(!text.contains("panicked"), "{text}");
    }
}
