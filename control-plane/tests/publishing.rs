//! Every committed change reaches Redis in revision order — across
//! concurrent writers, two replicas and Redis outages — and no secret
//! reaches a reader, a subscriber or a log.
// Tests spawn callers freely and read their env overrides.
#![allow(clippy::disallowed_methods)]

mod common;

use std::time::Duration;

use common::*;
use futures::StreamExt as _;
use prost::Message as _;
use switchyard_proto::v1 as pb;
use tonic::Code;

#[tokio::test]
async fn changes_arrive_on_redis_in_revision_order_with_the_snapshot() {
    let db = TestDb::postgres().await;
    let prefix = RedisPrefix::new();
    let mut sub = subscribe(&prefix).await;
    let cp = Launch::new(&db, &prefix).start().await;
    let mut c = cp.admin().await;

    create_provider(&mut c, openai_provider("p", "sk-0123456789abcdef")).await;
    create_pool(&mut c, pool("coding")).await;
    let m = create_member(&mut c, member("coding", "p", "gpt-4o")).await;
    c.update_member(pb::UpdateMemberRequest {
        member: Some(pb::Member {
            id: m.id.clone(),
            weight: 5,
            ..Default::default()
        }),
        update_mask: mask(&["weight"]),
    })
    .await
    .expect("update");
    c.delete_member(pb::DeleteMemberRequest {
        id: m.id.clone(),
        etag: String::new(),
    })
    .await
    .expect("delete");

    let msgs = next_changes(&mut sub, 5).await;
    assert_eq!(revisions(&msgs), vec![1, 2, 3, 4, 5]);
    let kinds: Vec<(String, String)> = msgs
        .iter()
        .map(|m| {
            (
                m["resource"].as_str().unwrap_or("").to_owned(),
                m["action"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    let expected = [
        ("provider", "created"),
        ("pool", "created"),
        ("member", "created"),
        ("member", "updated"),
        ("member", "deleted"),
    ];
    assert_eq!(
        kinds,
        expected.map(|(a, b)| (a.to_owned(), b.to_owned())).to_vec()
    );
    assert_eq!(msgs[1]["name"], "coding");

    let snap = wait_snapshot(&prefix, 5).await;
    assert_eq!(snap.revision, 5);
    assert_eq!(
        snap.pools
            .iter()
            .map(|p| p.name.as_str())
            .collect::<Vec<_>>(),
        vec!["coding"]
    );
    let sealed = &snap.providers[0]
        .credential
        .as_ref()
        .expect("credential")
        .sealed;
    assert!(
        !sealed.is_empty(),
        "workers get the sealed credential from Redis"
    );
    let revision_key =
        redis_get(&switchyard_shared::keys::RedisKeys::new(prefix.0.clone()).snapshot_revision())
            .await
            .expect("revision key");
    assert_eq!(revision_key, b"5");
}

#[tokio::test]
async fn concurrent_writers_on_two_replicas_get_distinct_ordered_revisions() {
    let db = TestDb::postgres().await;
    let prefix = RedisPrefix::new();
    let mut sub = subscribe(&prefix).await;
    let a = Launch::new(&db, &prefix).start().await;
    let b = Launch::new(&db, &prefix).start().await;
    const PER_REPLICA: usize = 15;

    let mut writers = Vec::new();
    for (tag, cp) in [("a", &a), ("b", &b)] {
        for k in 0..PER_REPLICA {
            let mut c = cp.admin().await;
            writers.push(tokio::spawn(async move {
                c.create_pool(pb::CreatePoolRequest {
                    pool: Some(pool(&format!("{tag}-{k}"))),
                })
                .await
                .map(|r| r.into_inner().etag)
            }));
        }
    }
    let mut etags = Vec::new();
    for w in writers {
        etags.push(
            w.await
                .expect("join")
                .expect("every concurrent create succeeds"),
        );
    }
    let total = 2 * PER_REPLICA;
    let mut sorted: Vec<u64> = etags
        .iter()
        .map(|e| e.parse().expect("etag is a revision"))
        .collect();
    sorted.sort_unstable();
    assert_eq!(
        sorted,
        (1..=total as u64).collect::<Vec<_>>(),
        "each write got its own revision"
    );

    let msgs = next_changes(&mut sub, total).await;
    assert_eq!(
        revisions(&msgs),
        (1..=total as u64).collect::<Vec<_>>(),
        "published once each, in revision order"
    );
    let snap = wait_snapshot(&prefix, total as u64).await;
    assert_eq!(snap.pools.len(), total);
}

#[tokio::test]
async fn no_change_is_lost_while_redis_is_down() {
    let db = TestDb::postgres().await;
    let prefix = RedisPrefix::new();

    // Publisher pointed at a dead Redis: writes still commit.
    let mut down = Launch {
        redis_url: "redis://127.0.0.1:1".into(),
        ..Launch::new(&db, &prefix)
    }
    .start()
    .await;
    let mut c = down.admin().await;
    create_provider(&mut c, openai_provider("p", "sk-0123456789abcdef")).await;
    create_pool(&mut c, pool("one")).await;
    create_pool(&mut c, pool("two")).await;
    assert_eq!(revision(&mut c).await, 3);
    assert!(
        stored_snapshot(&prefix).await.is_none(),
        "nothing could reach Redis"
    );
    assert!(
        down.terminate().await.is_some_and(|s| s.success()),
        "clean exit with unpublished changes"
    );

    // Then at the live one: everything committed goes out, in order.
    let mut sub = subscribe(&prefix).await;
    let up = Launch::new(&db, &prefix).start().await;
    let msgs = next_changes(&mut sub, 3).await;
    assert_eq!(revisions(&msgs), vec![1, 2, 3]);
    let snap = wait_snapshot(&prefix, 3).await;
    assert_eq!(snap.pools.len(), 2);
    drop(up);
}

#[tokio::test]
async fn a_restarted_empty_redis_gets_the_missed_changes_and_snapshot() {
    let mut redis = PrivateRedis::start().await;
    let port = redis.port;
    let url = redis.url();
    let db = TestDb::postgres().await;
    let prefix = RedisPrefix::new();
    let cp = Launch {
        redis_url: url.clone(),
        ..Launch::new(&db, &prefix)
    }
    .start()
    .await;
    let mut c = cp.admin().await;
    create_pool(&mut c, pool("before")).await;

    let snapshot_at = |rev: u64| {
        let url = url.clone();
        let key = switchyard_shared::keys::RedisKeys::new(prefix.0.clone()).snapshot();
        let prefix = prefix.0.clone();
        async move {
            for _ in 0..200 {
                if let Ok(client) = redis::Client::open(url.as_str())
                    && let Ok(mut conn) = client.get_multiplexed_async_connection().await
                    && let Ok(Some(bytes)) = redis::cmd("GET")
                        .arg(&key)
                        .query_async::<Option<Vec<u8>>>(&mut conn)
                        .await
                    && let Ok(payload) =
                        switchyard_shared::signed_snapshot::verify(None, &prefix, &bytes)
                    && let Ok(s) = pb::Snapshot::decode(payload)
                    && s.revision >= rev
                {
                    return s;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            panic!("private redis never got revision {rev}");
        }
    };
    snapshot_at(1).await;

    redis.stop();
    create_pool(&mut c, pool("during-1")).await;
    create_pool(&mut c, pool("during-2")).await;
    let mut redis = PrivateRedis::start_on(port).await;
    let snap = snapshot_at(3).await;
    let names: Vec<&str> = snap.pools.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, vec!["before", "during-1", "during-2"]);
    redis.stop();
}

#[tokio::test]
async fn a_snapshot_lost_from_redis_is_restored_without_a_write() {
    let db = TestDb::postgres().await;
    let prefix = RedisPrefix::new();
    let cp = Launch::new(&db, &prefix).start().await;
    let mut c = cp.admin().await;
    create_pool(&mut c, pool("kept")).await;
    wait_snapshot(&prefix, 1).await;

    // Redis loses the deployment's config (an eviction, a restart without
    // persistence, an operator's mistake) while the connection stays up.
    let keys = switchyard_shared::keys::RedisKeys::new(prefix.0.clone());
    let client = redis::Client::open(redis_url()).expect("url");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let lost = std::time::Instant::now();
    let _: i64 = redis::cmd("DEL")
        .arg(keys.snapshot())
        .arg(keys.snapshot_revision())
        .query_async(&mut conn)
        .await
        .expect("DEL");
    let snap = wait_snapshot(&prefix, 1).await;
    // Measured, not asserted: the publisher checks every 500 ms.
    eprintln!(
        "snapshot restored {} ms after it was lost",
        lost.elapsed().as_millis()
    );
    assert_eq!(
        snap.pools
            .iter()
            .map(|p| p.name.as_str())
            .collect::<Vec<_>>(),
        vec!["kept"]
    );
}

#[tokio::test]
async fn watch_changes_replays_then_follows_live() {
    let db = TestDb::postgres().await;
    let prefix = RedisPrefix::new();
    let cp = Launch::new(&db, &prefix).start().await;
    let mut c = cp.admin().await;
    create_pool(&mut c, pool("a")).await;
    create_pool(&mut c, pool("b")).await;

    let mut reader = cp.client(READER).await;
    let mut stream = reader
        .watch_changes(pb::WatchChangesRequest {
            since_revision: 1,
            ..Default::default()
        })
        .await
        .expect("watch")
        .into_inner();
    create_pool(&mut c, pool("c")).await;
    let mut got = Vec::new();
    while got.len() < 2 {
        let ev = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("event in time");
        let ev = ev.expect("stream open").expect("event ok");
        got.push((ev.revision, ev.name, ev.resource));
    }
    let pool_type = pb::ResourceType::Pool as i32;
    assert_eq!(
        got,
        vec![
            (2, "b".to_owned(), pool_type),
            (3, "c".to_owned(), pool_type)
        ]
    );

    let err = reader
        .watch_changes(pb::WatchChangesRequest {
            since_revision: 99,
            ..Default::default()
        })
        .await
        .expect_err("future revision");
    assert_eq!(err.code(), Code::InvalidArgument);

    // From the beginning: every retained change, then live.
    let resp = reader
        .watch_changes(pb::WatchChangesRequest {
            from_earliest: true,
            ..Default::default()
        })
        .await
        .expect("watch from the earliest");
    assert_eq!(
        resp.metadata()
            .get("x-switchyard-replay-from")
            .and_then(|v| v.to_str().ok()),
        Some("1"),
        "says where the replay starts"
    );
    let mut stream = resp.into_inner();
    create_pool(&mut c, pool("d")).await;
    let mut revisions = Vec::new();
    while revisions.len() < 4 {
        let ev = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("event in time")
            .expect("stream open")
            .expect("event ok");
        revisions.push(ev.revision);
    }
    assert_eq!(revisions, vec![1, 2, 3, 4], "history, then the live change");
    let err = reader
        .watch_changes(pb::WatchChangesRequest {
            since_revision: 1,
            from_earliest: true,
        })
        .await
        .expect_err("both");
    assert_eq!(err.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn credentials_never_reach_reads_subscribers_or_logs() {
    const SECRET: &str = "sk-live-NEVER-SHOW-8c1f0e2d9b7a";
    const SECRET2: &str = "sk-live-ROTATED-4d3c2b1a0f9e";
    let db = TestDb::postgres().await;
    let prefix = RedisPrefix::new();
    let mut sub = subscribe(&prefix).await;
    let cp = Launch {
        extra_env: vec![("RUST_LOG", "debug".into())],
        ..Launch::new(&db, &prefix)
    }
    .start()
    .await;
    let mut c = cp.admin().await;
    let mut watch = c
        .watch_changes(pb::WatchChangesRequest {
            since_revision: 0,
            ..Default::default()
        })
        .await
        .expect("watch")
        .into_inner();

    let created = create_provider(&mut c, openai_provider("p", SECRET)).await;
    let rotated = c
        .update_provider(pb::UpdateProviderRequest {
            provider: Some(pb::Provider {
                id: created.id.clone(),
                credential: Some(pb::CredentialInput {
                    source: Some(pb::credential_input::Source::Inline(SECRET2.into())),
                }),
                ..Default::default()
            }),
            update_mask: mask(&["credential"]),
        })
        .await
        .expect("rotate")
        .into_inner();
    assert_eq!(
        rotated
            .credential_info
            .as_ref()
            .map(|i| i.fingerprint.as_str()),
        Some("...0f9e")
    );
    // A refused call echoing nothing secret: a URL with user info.
    let err = c
        .create_provider(pb::CreateProviderRequest {
            provider: Some(pb::Provider {
                base_url: format!("https://user:{SECRET}@h.example/v1"),
                ..openai_provider("q", SECRET)
            }),
        })
        .await
        .expect_err("userinfo refused");
    assert!(!err.message().contains(SECRET));

    let mut seen = String::new();
    seen.push_str(&format!(
        "{:?}",
        c.get_provider(pb::GetRequest {
            id_or_name: "p".into()
        })
        .await
        .expect("get")
        .into_inner()
    ));
    seen.push_str(&format!(
        "{:?}",
        c.list_providers(pb::ListProvidersRequest::default())
            .await
            .expect("list")
            .into_inner()
    ));
    seen.push_str(&format!(
        "{:?}",
        c.get_snapshot(pb::GetSnapshotRequest {})
            .await
            .expect("snap")
            .into_inner()
    ));
    for _ in 0..2 {
        let ev = tokio::time::timeout(Duration::from_secs(10), watch.next())
            .await
            .expect("event");
        seen.push_str(&format!("{ev:?}"));
    }
    for m in next_changes(&mut sub, 2).await {
        seen.push_str(&m.to_string());
    }
    let stored = wait_snapshot(&prefix, 2).await;
    seen.push_str(&String::from_utf8_lossy(&stored.encode_to_vec()));
    tokio::time::sleep(Duration::from_millis(200)).await;
    seen.push_str(&cp.logs());
    assert!(
        cp.logs().contains("config change committed"),
        "logs were captured"
    );
    for s in [SECRET, SECRET2, "NEVER-SHOW", "ROTATED-4d3c"] {
        assert!(!seen.contains(s), "'{s}' leaked");
    }
}

#[tokio::test]
async fn inline_credentials_need_a_master_key() {
    let db = TestDb::postgres().await;
    let prefix = RedisPrefix::new();
    let cp = Launch {
        master_key: false,
        ..Launch::new(&db, &prefix)
    }
    .start()
    .await;
    let mut c = cp.admin().await;
    let err = c
        .create_provider(pb::CreateProviderRequest {
            provider: Some(openai_provider("p", "sk-0123456789abcdef")),
        })
        .await
        .expect_err("no master key");
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(
        err.message().contains("SWITCHYARD_MASTER_KEY"),
        "{}",
        err.message()
    );
    // A reference needs no master key.
    let p = create_provider(
        &mut c,
        pb::Provider {
            credential: Some(pb::CredentialInput {
                source: Some(pb::credential_input::Source::Reference(
                    "env:SWITCHYARD_CRED_OPENAI".into(),
                )),
            }),
            ..openai_provider("p", "")
        },
    )
    .await;
    assert_eq!(
        p.credential_info.map(|i| i.reference),
        Some("env:SWITCHYARD_CRED_OPENAI".to_owned())
    );
}
