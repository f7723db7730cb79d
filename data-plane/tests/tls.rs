//! TLS and mTLS on a worker's gRPC port (and, with --metrics-tls, its
//! metrics port): who gets through, a certificate rotated on disk reaching
//! new connections while open ones keep going, and grpcurl over TLS.

mod common;

use std::time::Duration;

use common::*;
use switchyard_proto::v1 as pb;
use switchyard_proto::v1::inference_client::InferenceClient;
use switchyard_testkit::certs::{
    CertFiles, CertPair, TestCerts, der_of, presented_certificate, tls_channel,
};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

type Client = InferenceClient<InterceptedService<Channel, Bearer>>;

async fn start(prefix: &RedisPrefix, env: &[(&'static str, String)]) -> ServerProc {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    worker(&redis_url(), prefix, &env).await
}

/// A client over TLS trusting `ca_pem`, presenting `identity` if given.
async fn tls_client(
    w: &ServerProc,
    ca_pem: &str,
    identity: Option<&CertPair>,
) -> Result<Client, String> {
    let channel = tls_channel(&w.addr.to_string(), ca_pem, identity).await?;
    Ok(InferenceClient::with_interceptor(channel, Bearer))
}

async fn list_models(c: &mut Client) -> Result<u64, tonic::Status> {
    Ok(c.list_models(pb::ListModelsRequest {})
        .await?
        .into_inner()
        .revision)
}

/// A client trusting `ca_pem` (presenting `identity`) cannot make a call.
async fn refused(w: &ServerProc, ca_pem: &str, identity: Option<&CertPair>) -> bool {
    match tls_client(w, ca_pem, identity).await {
        Err(_) => true,
        Ok(mut c) => list_models(&mut c).await.is_err(),
    }
}

#[tokio::test]
async fn tls_serves_clients_that_trust_the_ca_and_counts_failed_handshakes() {
    let prefix = RedisPrefix::new();
    let certs = TestCerts::generate();
    let files = CertFiles::new(&certs);
    let w = start(&prefix, &files.env(false)).await;
    assert!(w.logs().contains("\"mode\":\"tls\""), "{}", w.logs());

    let mut c = tls_client(&w, &certs.ca_pem, None)
        .await
        .expect("connect over TLS");
    list_models(&mut c).await.expect("list models over TLS");

    let other = TestCerts::generate_named("another CA");
    assert!(
        refused(&w, &other.ca_pem, None).await,
        "a client trusting another CA"
    );
    let mut plain = client(&w).await;
    assert!(
        plain.list_models(pb::ListModelsRequest {}).await.is_err(),
        "an h2c client"
    );
    list_models(&mut c).await.expect("still serving");
    let text = scrape(&w).await;
    let failures = sample(&text, "switchyard_tls_handshake_failures_total", &[]);
    assert!(failures.is_some_and(|n| n >= 2.0), "{text}");
    assert!(
        text.contains("switchyard_tls_certificate_expiry_timestamp_seconds"),
        "{text}"
    );
}

#[tokio::test]
async fn mtls_needs_a_certificate_of_the_ca_on_grpc_and_on_the_metrics_port() {
    let prefix = RedisPrefix::new();
    let certs = TestCerts::generate();
    let files = CertFiles::new(&certs);
    let mut env = files.env(true);
    env.push(("SWITCHYARD_METRICS_TLS", "true".to_owned()));
    let w = start(&prefix, &env).await;
    assert!(w.logs().contains("\"mode\":\"mtls\""), "{}", w.logs());

    assert!(
        refused(&w, &certs.ca_pem, None).await,
        "no client certificate"
    );
    let stranger = TestCerts::generate_named("another CA").client("mallory");
    assert!(refused(&w, &certs.ca_pem, Some(&stranger)).await);
    let alice = certs.client("alice");
    let mut c = tls_client(&w, &certs.ca_pem, Some(&alice))
        .await
        .expect("connect");
    list_models(&mut c).await.expect("list models over mTLS");

    // The metrics port: the same certificate, the same client CA.
    let addr: std::net::SocketAddr = metrics_addr(&w).parse().expect("metrics addr");
    let scrape_with = |identity: Option<&CertPair>| {
        let mut b = reqwest::Client::builder()
            .add_root_certificate(
                reqwest::Certificate::from_pem(certs.ca_pem.as_bytes()).expect("CA"),
            )
            .resolve("localhost", addr)
            .timeout(Duration::from_secs(10));
        if let Some(id) = identity {
            let pem = format!("{}{}", id.cert_pem, id.key_pem);
            b = b.identity(reqwest::Identity::from_pem(pem.as_bytes()).expect("identity"));
        }
        let client = b.build().expect("client");
        let url = format!("https://localhost:{}/metrics", addr.port());
        async move {
            client
                .get(url)
                .send()
                .await?
                .error_for_status()?
                .text()
                .await
        }
    };
    let text = scrape_with(Some(&alice)).await.expect("scrape over mTLS");
    let failures = sample(&text, "switchyard_tls_handshake_failures_total", &[]);
    assert!(failures.is_some_and(|n| n >= 1.0), "{text}");
    assert!(scrape_with(None).await.is_err(), "no client certificate");
}

#[tokio::test]
async fn a_rotated_certificate_reaches_new_connections_while_open_ones_keep_going() {
    let prefix = RedisPrefix::new();
    let (first_ca, second_ca) = (
        TestCerts::generate(),
        TestCerts::generate_named("second CA"),
    );
    let files = CertFiles::new(&first_ca);
    let w = start(&prefix, &files.env(false)).await;
    // Opened before, trusting only the first CA: a reconnect would fail.
    let mut before = tls_client(&w, &first_ca.ca_pem, None)
        .await
        .expect("connect");
    list_models(&mut before).await.expect("before");

    let rotated = second_ca.server("rotated");
    files.write(&rotated);
    let want = der_of(&rotated.cert_pem);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        match presented_certificate(w.addr, &second_ca.ca_pem).await {
            Ok(der) if der == want => break,
            seen if tokio::time::Instant::now() > deadline => {
                panic!("never served ({seen:?}); logs:\n{}", w.logs())
            }
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    assert!(
        refused(&w, &first_ca.ca_pem, None).await,
        "new handshakes use the new certificate"
    );
    list_models(&mut before)
        .await
        .expect("the connection opened before keeps going");
    let mut after = tls_client(&w, &second_ca.ca_pem, None)
        .await
        .expect("connect");
    list_models(&mut after).await.expect("after");
}

#[tokio::test(flavor = "multi_thread")]
async fn grpcurl_lists_models_over_tls() {
    let prefix = RedisPrefix::new();
    let certs = TestCerts::generate();
    let files = CertFiles::new(&certs);
    let w = start(&prefix, &files.env(false)).await;
    let ca = files.client_ca.display().to_string();
    let addr = w.addr.to_string();
    let out = tokio::task::block_in_place(|| {
        std::process::Command::new(switchyard_testkit::tools::grpcurl())
            .args(["-cacert", &ca, "-max-time", "10"])
            .args([&addr, "switchyard.v1.Inference/ListModels"])
            .output()
    })
    .expect("run grpcurl");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(text.trim_start().starts_with('{'), "{text}");
}

/// A client certificate bound to a caller authenticates as that caller,
/// with no key: its scope holds, and a certificate bound to nobody gets the
/// same answer as an unknown key.
#[tokio::test]
async fn a_client_certificate_bound_to_a_caller_authenticates_without_a_key() {
    let prefix = RedisPrefix::new();
    let fake = fake().await;
    let mut config = Config::one_pool(
        &fake.base_url(),
        pb::Strategy::RoundRobin,
        policy(0, 3, 1000),
        &[("up", "a", 0)],
    );
    config.snap.callers.push(pb::SnapshotCaller {
        id: "c-alice".into(),
        name: "alice-svc".into(),
        enabled: true,
        models: vec!["p".into()],
        certificate_subject: "alice".into(),
        ..Default::default()
    });
    config.publish(&redis_url(), &prefix, 1, true).await;
    let certs = TestCerts::generate();
    let files = CertFiles::new(&certs);
    let mut env = files.env(true);
    // Caller checks on (the harness token only waits for the revision).
    env.push((
        "SWITCHYARD_INFERENCE_TOKENS",
        "not-sent-by-these-clients".to_owned(),
    ));
    env.push(("SWITCHYARD_HTTP_LISTEN", "127.0.0.1:0".to_owned()));
    let w = start(&prefix, &env).await;

    let addr = w.addr.to_string();
    let channel = async |id: CertPair| {
        tls_channel(&addr, &certs.ca_pem, Some(&id))
            .await
            .expect("connect")
    };
    let mut c = InferenceClient::new(channel(certs.client("alice")).await);
    let mut served = None;
    for _ in 0..100 {
        match c.generate(ask("p", "hi")).await {
            Ok(r) => {
                served = Some(r);
                break;
            }
            Err(s) if s.code() == tonic::Code::Unavailable => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(s) => panic!("alice's certificate: {s:?}"),
        }
    }
    let served = served.expect("served with the certificate alone");
    assert_eq!(
        served
            .metadata()
            .get("x-switchyard-caller")
            .and_then(|v| v.to_str().ok()),
        Some("alice-svc")
    );
    let denied = c
        .generate(ask("up/a", "hi"))
        .await
        .expect_err("no direct access");
    assert_eq!(denied.code(), tonic::Code::PermissionDenied);

    let mut bob = InferenceClient::new(channel(certs.client("bob")).await);
    let err = bob
        .generate(ask("p", "hi"))
        .await
        .expect_err("bob is nobody");
    assert_eq!(
        err.code(),
        tonic::Code::Unauthenticated,
        "{}",
        err.message()
    );

    // The HTTP door (the same certificate and client CA) knows them too.
    let door: std::net::SocketAddr = http_addr(&w).await.parse().expect("door addr");
    let models_as = |id: CertPair| {
        let pem = format!("{}{}", id.cert_pem, id.key_pem);
        let client = reqwest::Client::builder()
            .add_root_certificate(
                reqwest::Certificate::from_pem(certs.ca_pem.as_bytes()).expect("CA"),
            )
            .identity(reqwest::Identity::from_pem(pem.as_bytes()).expect("identity"))
            .resolve("localhost", door)
            .timeout(Duration::from_secs(10))
            .build()
            .expect("client");
        let url = format!("https://localhost:{}/v1/models", door.port());
        async move {
            let r = client.get(url).send().await.expect("the door answers");
            (r.status().as_u16(), r.text().await.unwrap_or_default())
        }
    };
    let (status, body) = models_as(certs.client("alice")).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(r#""id":"p""#), "{body}");
    let (status, body) = models_as(certs.client("bob")).await;
    assert_eq!(status, 401, "{body}");
}
