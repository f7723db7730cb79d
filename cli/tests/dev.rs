//! `switchyard dev` runs the whole thing on a machine with no Postgres and no
//! Redis: SQLite in a data directory, in-process bus, no auth, a demo pool.
// Tests spawn callers freely and read their env overrides.
#![allow(clippy::disallowed_methods)]

mod common;

use common::start;
use switchyard_proto::v1 as pb;
use switchyard_proto::v1::inference_client::InferenceClient;

#[tokio::test]
async fn dev_serves_a_demo_pool_without_postgres_or_redis_and_keeps_changes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dev = start(dir.path()).await;
    let mut c = dev.client().await;
    let pools = c
        .list_pools(pb::ListPoolsRequest::default())
        .await
        .expect("no token needed")
        .into_inner();
    assert_eq!(
        pools
            .pools
            .iter()
            .map(|p| p.name.as_str())
            .collect::<Vec<_>>(),
        vec!["demo"]
    );
    let members = c
        .list_members(pb::ListMembersRequest {
            pool: "demo".into(),
            ..Default::default()
        })
        .await
        .expect("members")
        .into_inner();
    assert_eq!(members.members.len(), 3);
    assert!(members.members.iter().all(|m| m.provider_name == "mock"));
    c.create_pool(pb::CreatePoolRequest {
        pool: Some(pb::Pool {
            name: "mine".into(),
            ..Default::default()
        }),
    })
    .await
    .expect("create");
    let revision = c
        .get_snapshot(pb::GetSnapshotRequest {})
        .await
        .expect("snapshot")
        .into_inner()
        .revision;

    // The inference port streams a completion from the demo pool.
    let mut inference = InferenceClient::connect(format!("http://{}", dev.inference))
        .await
        .expect("connect inference");
    let request = pb::GenerateRequest {
        model: "demo".into(),
        messages: vec![pb::ChatMessage {
            role: pb::Role::User.into(),
            content: "hi".into(),
            ..Default::default()
        }],
        ..Default::default()
    };
    let mut served = Vec::new();
    for _ in 0..3 {
        let mut stream = inference
            .generate_stream(request.clone())
            .await
            .expect("stream")
            .into_inner();
        let mut text = String::new();
        let mut finished = false;
        while let Some(ev) = stream.message().await.expect("stream ends OK") {
            match ev.event {
                Some(pb::generate_stream_event::Event::Start(s)) => {
                    served.push(s.served_by.map(|m| m.upstream_model).unwrap_or_default())
                }
                Some(pb::generate_stream_event::Event::TextDelta(t)) => text.push_str(&t),
                Some(pb::generate_stream_event::Event::Finish(_)) => finished = true,
                _ => {}
            }
        }
        assert!(finished && text.contains("says hello to: hi"), "{text}");
    }
    served.sort();
    assert_eq!(
        served,
        vec!["mock-a", "mock-b", "mock-c"],
        "round robin over the demo pool"
    );
    dev.stop().await;

    let key = std::fs::metadata(dir.path().join("master.key")).expect("master key generated");
    #[cfg(unix)]
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&key.permissions()) & 0o777,
        0o600
    );

    // Restart on the same data directory: state kept, demo not seeded twice.
    let dev = start(dir.path()).await;
    let mut c = dev.client().await;
    let snap = c
        .get_snapshot(pb::GetSnapshotRequest {})
        .await
        .expect("snapshot")
        .into_inner();
    assert_eq!(snap.revision, revision);
    let names: Vec<&str> = snap.pools.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, vec!["demo", "mine"]);
    dev.stop().await;
}
