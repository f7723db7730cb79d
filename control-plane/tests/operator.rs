//! What an operator does: tokens per role (every RPC a reader may not call
//! is refused), grpcurl against the server, and a clean stop on SIGTERM.
// Tests spawn callers freely and read their env overrides.
#![allow(clippy::disallowed_methods)]

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use futures::StreamExt as _;
use switchyard_proto::v1 as pb;
use tonic::Code;

#[tokio::test]
async fn tokens_decide_who_may_read_and_write() {
    let db = TestDb::postgres().await;
    let prefix = RedisPrefix::new();
    let cp = Launch::new(&db, &prefix).start().await;

    let mut anonymous = cp.client("").await;
    let err = anonymous
        .list_pools(pb::ListPoolsRequest::default())
        .await
        .expect_err("no token");
    assert_eq!(err.code(), Code::Unauthenticated);
    let mut wrong = cp.client("not-a-token").await;
    let err = wrong
        .list_pools(pb::ListPoolsRequest::default())
        .await
        .expect_err("wrong token");
    assert_eq!(err.code(), Code::Unauthenticated);

    let mut reader = cp.client(READER).await;
    reader
        .list_pools(pb::ListPoolsRequest::default())
        .await
        .expect("reader reads");
    reader
        .get_snapshot(pb::GetSnapshotRequest {})
        .await
        .expect("reader reads the snapshot");
    let err = reader
        .create_pool(pb::CreatePoolRequest {
            pool: Some(pool("x")),
        })
        .await
        .expect_err("reader writes");
    assert_eq!(err.code(), Code::PermissionDenied);
    let err = reader
        .delete_pool(pb::DeletePoolRequest {
            id_or_name: "x".into(),
            ..Default::default()
        })
        .await
        .expect_err("reader deletes");
    assert_eq!(err.code(), Code::PermissionDenied);

    let mut admin = cp.admin().await;
    create_pool(&mut admin, pool("x")).await;
    let pools = reader
        .list_pools(pb::ListPoolsRequest::default())
        .await
        .expect("list")
        .into_inner();
    assert_eq!(pools.pools.len(), 1);

    // Probes need no token.
    let mut health = tonic_health::pb::health_client::HealthClient::new(cp.channel().await);
    let status = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health without a token")
        .into_inner()
        .status;
    assert_eq!(
        status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
}

/// Calls `path` on the running server with an empty request body, as any
/// client may, whatever its RPC: the status the filter or handler gave
/// (Ok when the server started answering).
async fn call_raw(cp: &ControlPlaneProc, path: &str, token: &str) -> Result<(), tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(cp.channel().await);
    grpc.ready().await.expect("ready");
    let mut req = tonic::Request::new(());
    if !token.is_empty() {
        let bearer = format!("Bearer {token}").parse().expect("header");
        req.metadata_mut().insert("authorization", bearer);
    }
    let codec = tonic_prost::ProstCodec::<(), ()>::default();
    let path = path.parse().expect("path");
    grpc.server_streaming(req, path, codec).await.map(drop)
}

#[tokio::test]
async fn a_reader_may_call_only_the_listed_reads_and_every_other_rpc_is_a_write() {
    use switchyard_shared::auth::{CONTROL_PLANE, CONTROL_PLANE_READS, ReaderMay};
    let db = TestDb::sqlite();
    let prefix = RedisPrefix::new();
    let cp = Launch::new(&db, &prefix).start().await;

    // Every RPC the service declares, so one added later is checked too.
    let methods = switchyard_proto::methods_of(CONTROL_PLANE);
    assert!(methods.len() >= 30, "{methods:?}");
    for method in &methods {
        let path = format!("/{CONTROL_PLANE}/{method}");
        let got = call_raw(&cp, &path, READER).await;
        let listed = CONTROL_PLANE_READS.iter().find(|(m, _)| m == method);
        match listed {
            Some((_, ReaderMay::Call)) => assert!(
                !matches!(
                    got.as_ref().map_err(tonic::Status::code),
                    Err(Code::PermissionDenied | Code::Unauthenticated)
                ),
                "a reader may call {method}: {got:?}"
            ),
            // An empty body is a real run: the handler refuses it.
            Some((_, ReaderMay::DryRunOnly)) => {
                let err = got.expect_err(method);
                assert_eq!(err.code(), Code::PermissionDenied, "{method}");
                assert!(err.message().contains("dry_run"), "{err:?}");
            }
            None => {
                let err = got.expect_err(method);
                assert_eq!(err.code(), Code::PermissionDenied, "{method}: {err:?}");
                assert_eq!(
                    err.message(),
                    format!("{method} needs an admin token; this token may only read")
                );
            }
        }
    }

    // An RPC this server does not have: a reader is refused before the
    // router says so, and without a token nothing but health and
    // reflection is reachable (it used to answer UNIMPLEMENTED to anyone).
    let unknown = format!("/{CONTROL_PLANE}/PurgeAll");
    let err = call_raw(&cp, &unknown, READER).await.expect_err("reader");
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    let err = call_raw(&cp, &unknown, ADMIN).await.expect_err("admin");
    assert_eq!(err.code(), Code::Unimplemented, "{err:?}");
    for path in [unknown.as_str(), "/other.v1.Admin/Purge"] {
        let err = call_raw(&cp, path, "").await.expect_err(path);
        assert_eq!(err.code(), Code::Unauthenticated, "{path}: {err:?}");
    }
    call_raw(&cp, "/grpc.health.v1.Health/Check", "")
        .await
        .expect("health needs no token");
}

#[tokio::test]
async fn a_server_without_tokens_refuses_to_start() {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_switchyard-control-plane"))
        .args(["--listen", "127.0.0.1:0"])
        .env_clear()
        .env("DATABASE_URL", "sqlite::memory:")
        .output();
    let out = tokio::time::timeout(Duration::from_secs(20), out)
        .await
        .expect("exits promptly")
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("no tokens configured"), "{text}");
}

fn run_grpcurl(args: &[&str]) -> (bool, String) {
    let out = Command::new(switchyard_testkit::tools::grpcurl())
        .args(args)
        .output()
        .expect("run grpcurl");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn grpcurl_operator_lists_describes_creates_and_lists() {
    let db = TestDb::postgres().await;
    let prefix = RedisPrefix::new();
    let cp = Launch::new(&db, &prefix).start().await;
    let addr = cp.addr.to_string();
    let auth = format!("authorization: Bearer {ADMIN}");

    let (ok, out) = tokio::task::block_in_place(|| run_grpcurl(&["-plaintext", &addr, "list"]));
    assert!(ok, "{out}");
    for svc in ["switchyard.v1.ControlPlane", "grpc.health.v1.Health"] {
        assert!(out.contains(svc), "list lacks {svc}: {out}");
    }
    assert!(
        !out.contains("switchyard.v1.Inference"),
        "the control plane does not serve inference, so it does not list it: {out}"
    );
    let (ok, out) = tokio::task::block_in_place(|| {
        run_grpcurl(&[
            "-plaintext",
            &addr,
            "describe",
            "switchyard.v1.ControlPlane",
        ])
    });
    assert!(ok, "{out}");
    assert!(out.contains("rpc CreatePool"), "{out}");
    let (ok, out) = tokio::task::block_in_place(|| {
        run_grpcurl(&["-plaintext", &addr, "describe", "switchyard.v1.Pool"])
    });
    assert!(ok && out.contains("strategy"), "{out}");

    let body = r#"{"pool":{"name":"coding","strategy":"STRATEGY_WEIGHTED","description":"made by grpcurl"}}"#;
    let (ok, out) = tokio::task::block_in_place(|| {
        run_grpcurl(&[
            "-plaintext",
            "-H",
            &auth,
            "-d",
            body,
            &addr,
            "switchyard.v1.ControlPlane/CreatePool",
        ])
    });
    assert!(ok, "{out}");
    assert!(out.contains("\"etag\""), "{out}");

    let (ok, out) = tokio::task::block_in_place(|| {
        run_grpcurl(&[
            "-plaintext",
            "-H",
            &auth,
            &addr,
            "switchyard.v1.ControlPlane/ListPools",
        ])
    });
    assert!(ok, "{out}");
    assert!(
        out.contains("\"name\": \"coding\"") && out.contains("STRATEGY_WEIGHTED"),
        "{out}"
    );

    let (ok, out) = tokio::task::block_in_place(|| {
        run_grpcurl(&["-plaintext", &addr, "switchyard.v1.ControlPlane/ListPools"])
    });
    assert!(!ok && out.contains("Unauthenticated"), "{out}");
    let (ok, out) = tokio::task::block_in_place(|| {
        run_grpcurl(&["-plaintext", &addr, "grpc.health.v1.Health/Check"])
    });
    assert!(ok && out.contains("SERVING"), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_ends_watches_and_exits_cleanly() {
    let db = TestDb::postgres().await;
    let prefix = RedisPrefix::new();
    let mut cp = Launch::new(&db, &prefix).start().await;
    let mut c = cp.admin().await;
    let mut watch = c
        .watch_changes(pb::WatchChangesRequest {
            since_revision: 0,
            ..Default::default()
        })
        .await
        .expect("watch")
        .into_inner();
    create_pool(&mut c, pool("a")).await;
    let first = tokio::time::timeout(Duration::from_secs(10), watch.next())
        .await
        .expect("event");
    assert!(first.is_some_and(|e| e.is_ok()));

    let status = cp.terminate().await.expect("exits within the bound");
    assert!(status.success(), "exit status {status:?}");
    let end = tokio::time::timeout(Duration::from_secs(5), watch.next())
        .await
        .expect("stream ends");
    match end {
        Some(Err(s)) => assert_eq!(s.code(), Code::Unavailable, "{s:?}"),
        other => panic!("watch should end with UNAVAILABLE, got {other:?}"),
    }
    let logs = cp.logs();
    assert!(
        logs.contains("shutting down") && logs.contains("control plane stopped"),
        "{logs}"
    );
}
