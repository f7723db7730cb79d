//! Callers as a control-plane resource: the key shown once and stored as a
//! keyed hash, rotation with a grace period, the checks on every field, and
//! who may manage them. On Postgres and SQLite.
// Tests spawn callers freely and read their env overrides.
#![allow(clippy::disallowed_methods)]

#[macro_use]
mod common;

use common::*;
use switchyard_proto::v1 as pb;
use tonic::Code;

both_backends!(
    a_key_is_shown_once_and_published_only_as_a_hash,
    caller_mistakes_are_invalid_argument_naming_the_field,
);

fn caller(name: &str) -> pb::Caller {
    pb::Caller {
        name: name.into(),
        models: vec!["coding".into(), "chat".into()],
        rpm_limit: Some(60),
        daily_token_budget: Some(1_000_000),
        labels: [("team".to_owned(), "billing".to_owned())].into(),
        ..Default::default()
    }
}

async fn a_key_is_shown_once_and_published_only_as_a_hash(backend: Backend) {
    let db = TestDb::new(backend).await;
    let prefix = RedisPrefix::new();
    let cp = Launch::new(&db, &prefix).start().await;
    let mut c = cp.admin().await;
    let made = c
        .create_caller(pb::CreateCallerRequest {
            caller: Some(caller("billing-svc")),
        })
        .await
        .expect("create")
        .into_inner();
    let key = made.key.clone();
    let shown = made.caller.expect("caller");
    assert!(key.starts_with("sy_") && key.len() == 46);
    assert_eq!(shown.key_prefix, &key[..11]);
    assert_eq!(shown.models, ["chat", "coding"], "sorted, de-duplicated");

    // Reads never carry the key.
    let got = c
        .get_caller(pb::GetRequest {
            id_or_name: "billing-svc".into(),
        })
        .await
        .expect("get")
        .into_inner();
    let listed = c
        .list_callers(pb::ListCallersRequest::default())
        .await
        .expect("list")
        .into_inner();
    for text in [format!("{got:?}"), format!("{listed:?}")] {
        assert!(!text.contains(&key[11..]), "{text}");
    }
    assert_eq!(got.rpm_limit, Some(60));

    // The snapshot workers load has a 32-byte hash; GetSnapshot has none.
    let rev = revision(&mut c).await;
    let stored = wait_snapshot(&prefix, rev).await;
    let sc = &stored.callers[0];
    assert_eq!(sc.name, "billing-svc");
    assert_eq!(sc.key_hash.len(), 32);
    assert!(!format!("{stored:?}").contains(&key[3..]));
    let public = c
        .get_snapshot(pb::GetSnapshotRequest {})
        .await
        .expect("snapshot")
        .into_inner();
    assert!(public.callers[0].key_hash.is_empty());

    // Rotation: a new key, the old hash kept until the grace period ends.
    let rotated = c
        .rotate_caller_key(pb::RotateCallerKeyRequest {
            id_or_name: "billing-svc".into(),
            grace_seconds: 600,
            ..Default::default()
        })
        .await
        .expect("rotate")
        .into_inner();
    assert_ne!(rotated.key, key);
    let rc = rotated.caller.expect("caller");
    let grace = rc.previous_key_expire_time.expect("grace");
    let now = chrono::Utc::now().timestamp();
    assert!(
        (now + 590..=now + 610).contains(&grace.seconds),
        "{grace:?}"
    );
    let rev = revision(&mut c).await;
    let stored = wait_snapshot(&prefix, rev).await;
    assert_eq!(stored.callers[0].previous_key_hash, sc.key_hash);
    assert_ne!(stored.callers[0].key_hash, sc.key_hash);

    // A reader may look, not manage.
    let mut reader = cp.client(READER).await;
    reader
        .get_caller(pb::GetRequest {
            id_or_name: "billing-svc".into(),
        })
        .await
        .expect("a reader reads");
    for err in [
        reader
            .rotate_caller_key(pb::RotateCallerKeyRequest {
                id_or_name: "billing-svc".into(),
                ..Default::default()
            })
            .await
            .expect_err("rotate"),
        reader
            .create_caller(pb::CreateCallerRequest {
                caller: Some(caller("x")),
            })
            .await
            .expect_err("create"),
    ] {
        assert_eq!(err.code(), Code::PermissionDenied, "{}", err.message());
    }

    // The change feed says who did what, never the key.
    let dup = c
        .create_caller(pb::CreateCallerRequest {
            caller: Some(caller("billing-svc")),
        })
        .await
        .expect_err("duplicate");
    assert_eq!(dup.code(), Code::AlreadyExists);
    c.delete_caller(pb::DeleteCallerRequest {
        id_or_name: "billing-svc".into(),
        ..Default::default()
    })
    .await
    .expect("delete");
    assert!(!cp.logs().contains(&key) && !cp.logs().contains(&rotated.key));
    let stored = database_text(&db).await;
    assert!(stored.contains("billing-svc"), "the dump reads the tables");
    for k in [&key, &rotated.key] {
        assert!(!stored.contains(&k[3..]), "a key in the database");
    }
    drop(cp);
}

/// Everything the config database holds, as text: every table's rows as
/// JSON on Postgres, the file itself on SQLite.
async fn database_text(db: &TestDb) -> String {
    use sea_orm::{ConnectionTrait as _, Statement};
    if let Some(path) = db
        .url
        .strip_prefix("sqlite://")
        .and_then(|p| p.split('?').next())
    {
        // The file and its write-ahead log (where recent writes still are).
        let mut out = String::new();
        for p in [path.to_owned(), format!("{path}-wal")] {
            if let Ok(bytes) = std::fs::read(&p) {
                out.push_str(&String::from_utf8_lossy(&bytes));
            }
        }
        return out;
    }
    let conn = sea_orm::Database::connect(&db.url).await.expect("connect");
    let mut out = String::new();
    for table in ["callers", "change_outbox", "providers", "config_state"] {
        let rows = conn
            .query_all_raw(Statement::from_string(
                conn.get_database_backend(),
                format!("SELECT row_to_json(t)::text AS j FROM {table} t"),
            ))
            .await
            .expect("dump");
        for r in rows {
            out.push_str(&r.try_get::<String>("", "j").expect("text"));
        }
    }
    conn.close().await.ok();
    out
}

async fn caller_mistakes_are_invalid_argument_naming_the_field(backend: Backend) {
    let db = TestDb::new(backend).await;
    let prefix = RedisPrefix::new();
    let cp = Launch::new(&db, &prefix).start().await;
    let mut c = cp.admin().await;
    let past = prost_types::Timestamp {
        seconds: 1_000,
        nanos: 0,
    };
    let cases: Vec<(pb::Caller, &str)> = vec![
        (
            pb::Caller {
                models: vec!["ok".into(), "bad name!".into()],
                ..caller("a")
            },
            "caller.models[1]",
        ),
        (
            pb::Caller {
                rpm_limit: Some(0),
                ..caller("a")
            },
            "caller.rpm_limit is 0",
        ),
        (
            pb::Caller {
                expire_time: Some(past),
                ..caller("a")
            },
            "caller.expire_time",
        ),
        (
            pb::Caller {
                certificate_subject: "cn\u{0}x".into(),
                ..caller("a")
            },
            "caller.certificate_subject",
        ),
        (
            pb::Caller {
                labels: [("bad key".to_owned(), "v".to_owned())].into(),
                ..caller("a")
            },
            "caller.labels key",
        ),
        (caller(""), "caller.name"),
        (
            pb::Caller {
                certificate_subject: "CN=svc,O=example".into(),
                ..caller("a")
            },
            "looks like a distinguished name",
        ),
    ];
    for (bad, field) in cases {
        let err = c
            .create_caller(pb::CreateCallerRequest { caller: Some(bad) })
            .await
            .expect_err(field);
        assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());
        assert!(err.message().contains(field), "{field}: {}", err.message());
    }
    // One certificate subject, one caller.
    let bound = |name: &str| pb::Caller {
        certificate_subject: "svc.internal".into(),
        ..caller(name)
    };
    c.create_caller(pb::CreateCallerRequest {
        caller: Some(bound("first")),
    })
    .await
    .expect("first");
    let twice = c
        .create_caller(pb::CreateCallerRequest {
            caller: Some(bound("second")),
        })
        .await
        .expect_err("second binding");
    assert_eq!(twice.code(), Code::AlreadyExists);
    assert!(
        twice.message().contains("already bound to caller 'first'"),
        "{}",
        twice.message()
    );
    let grace = c
        .rotate_caller_key(pb::RotateCallerKeyRequest {
            id_or_name: "nobody".into(),
            grace_seconds: 90 * 24 * 3600,
            ..Default::default()
        })
        .await
        .expect_err("grace");
    assert_eq!(grace.code(), Code::InvalidArgument);
    assert!(
        grace.message().contains("grace_seconds"),
        "{}",
        grace.message()
    );

    // Without a master key there is nothing to hash keys under.
    drop(cp);
    let prefix = RedisPrefix::new();
    let mut launch = Launch::new(&db, &prefix);
    launch.master_key = false;
    let cp = launch.start().await;
    let mut c = cp.admin().await;
    let err = c
        .create_caller(pb::CreateCallerRequest {
            caller: Some(caller("b")),
        })
        .await
        .expect_err("no master key");
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(
        err.message().contains("SWITCHYARD_MASTER_KEY"),
        "{}",
        err.message()
    );
}
