//! Starts the private Redis servers (a 3-master cluster, a TLS-only server) and uses them
//! through the `redis` crate.
// Tests spawn callers freely and read their env overrides.
#![allow(clippy::disallowed_methods)]

use std::collections::BTreeSet;
use std::future::Future;
use std::time::Duration;

use redis::AsyncCommands as _;
use switchyard_testkit::{RedisCluster, TlsRedis};

/// Bound on every step, server start-up included.
const TIMEOUT: Duration = Duration::from_secs(45);

async fn bounded<F: Future>(what: &str, fut: F) -> F::Output {
    match tokio::time::timeout(TIMEOUT, fut).await {
        Ok(out) => out,
        Err(_) => panic!("{what} took longer than {TIMEOUT:?}"),
    }
}

/// rustls needs a process-wide crypto provider. In a workspace build reqwest turns on rustls'
/// `ring` feature and rustls picks it by itself, but this crate alone builds rustls with `std`
/// only (through `redis/tokio-rustls-comp`), so `rustls::ClientConfig::builder()`, called by
/// redis when it connects, would panic. Installing `ring` (a dev-dependency here) fixes both.
fn install_crypto_provider() {
    // Err means a provider is already installed, which is as good.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

async fn node_connection(url: &str) -> redis::aio::MultiplexedConnection {
    let client = redis::Client::open(url).expect("node client");
    bounded("node connect", client.get_multiplexed_async_connection())
        .await
        .expect("node connection")
}

#[tokio::test]
async fn cluster_of_three_masters_spreads_keys_over_every_node() {
    let cluster = bounded("cluster start", RedisCluster::start()).await;
    let ports = cluster.ports();
    assert_eq!(ports.len(), 3);
    let urls = cluster.urls();
    let expected: Vec<String> = ports
        .iter()
        .map(|p| format!("redis://127.0.0.1:{p}"))
        .collect();
    assert_eq!(urls, expected);

    for url in &urls {
        let mut conn = node_connection(url).await;
        let info: String = bounded(
            "CLUSTER INFO",
            redis::cmd("CLUSTER").arg("INFO").query_async(&mut conn),
        )
        .await
        .expect("CLUSTER INFO");
        for field in [
            "cluster_state:ok",
            "cluster_slots_assigned:16384",
            "cluster_known_nodes:3",
            "cluster_size:3",
        ] {
            assert!(info.contains(field), "{url}: no {field} in\n{info}");
        }
    }

    let client = redis::cluster::ClusterClient::new(urls.clone()).expect("cluster client");
    let mut conn = bounded("cluster connect", client.get_async_connection())
        .await
        .expect("cluster connection");

    let keys: Vec<String> = (0..12).map(|i| format!("switchyard:key:{i}")).collect();
    let mut slots = BTreeSet::new();
    for key in &keys {
        let slot: u16 = bounded(
            "CLUSTER KEYSLOT",
            redis::cmd("CLUSTER")
                .arg("KEYSLOT")
                .arg(key)
                .query_async(&mut conn),
        )
        .await
        .expect("CLUSTER KEYSLOT");
        slots.insert(slot);
        let () = bounded("SET", conn.set(key, format!("value of {key}")))
            .await
            .expect("SET through the cluster");
    }
    assert_eq!(slots.len(), keys.len(), "keys share slots: {slots:?}");
    for key in &keys {
        let value: String = bounded("GET", conn.get(key))
            .await
            .expect("GET through the cluster");
        assert_eq!(value, format!("value of {key}"));
    }

    // Each master holds part of the keys: the cluster connection really followed the slots.
    let mut total = 0;
    for url in &urls {
        let mut node = node_connection(url).await;
        let size: usize = bounded("DBSIZE", redis::cmd("DBSIZE").query_async(&mut node))
            .await
            .expect("DBSIZE");
        assert!(size > 0, "{url} holds none of the keys (slots {slots:?})");
        total += size;
    }
    assert_eq!(total, keys.len());
}

#[tokio::test]
async fn tls_only_server_takes_tls_and_refuses_plaintext() {
    install_crypto_provider();
    let server = bounded("TLS redis start", TlsRedis::start()).await;
    assert_eq!(
        server.url(),
        format!("rediss://127.0.0.1:{}", server.port())
    );
    let ca_pem = std::fs::read(server.ca_file()).expect("read the CA file");
    assert!(
        ca_pem.starts_with(b"-----BEGIN CERTIFICATE-----"),
        "CA file is not a PEM certificate"
    );

    let client = redis::Client::build_with_tls(
        server.url(),
        redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(ca_pem),
        },
    )
    .expect("TLS client");
    let mut conn = bounded("TLS connect", client.get_multiplexed_async_connection())
        .await
        .expect("TLS connection");
    let () = bounded("SET", conn.set("switchyard:tls", "over tls"))
        .await
        .expect("SET over TLS");
    let value: String = bounded("GET", conn.get("switchyard:tls"))
        .await
        .expect("GET over TLS");
    assert_eq!(value, "over tls");

    // Without our CA the certificate is not trusted.
    let untrusting = redis::Client::open(server.url()).expect("TLS client without the CA");
    let res = bounded("untrusted TLS connect", async {
        let mut c = untrusting.get_multiplexed_async_connection().await?;
        redis::cmd("PING").query_async::<String>(&mut c).await
    })
    .await;
    match res {
        Err(err) => assert!(
            err.to_string().contains("certificate"),
            "TLS without the CA failed, but not on the certificate: {err}"
        ),
        Ok(pong) => panic!("TLS without the CA answered {pong}"),
    }

    // The plaintext protocol on the TLS port gets nothing.
    let plain = redis::Client::open(format!("redis://127.0.0.1:{}", server.port()))
        .expect("plaintext client");
    let res = bounded("plaintext connect", async {
        let mut c = plain.get_multiplexed_async_connection().await?;
        redis::cmd("PING").query_async::<String>(&mut c).await
    })
    .await;
    assert!(
        res.is_err(),
        "plaintext PING on the TLS port answered {res:?}"
    );
}
