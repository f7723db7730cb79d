//! Caller mistakes the database used to answer with INTERNAL: control
//! characters and over-long values in any text field or lookup, secrets in
//! error messages, a connection lost mid-write. On Postgres and SQLite,
//! against the real binary; every refusal writes nothing.
// Tests spawn callers freely and read their env overrides.
#![allow(clippy::disallowed_methods)]

#[macro_use]
mod common;

use base64::Engine as _;
use common::*;
use switchyard_proto::v1 as pb;
use tonic::Code;

both_backends!(control_characters_and_long_values_are_invalid_arguments);

fn get(key: &str) -> pb::GetRequest {
    pb::GetRequest {
        id_or_name: key.into(),
    }
}

async fn control_characters_and_long_values_are_invalid_arguments(backend: Backend) {
    let db = TestDb::new(backend).await;
    let prefix = RedisPrefix::new();
    let cp = Launch::new(&db, &prefix).start().await;
    let mut c = cp.admin().await;
    let prov = create_provider(&mut c, openai_provider("prov", "sk-0123456789abcdef")).await;
    let chat = create_pool(&mut c, pool("chat")).await;
    let before = revision(&mut c).await;
    let nul = "a\u{0}b";
    let long_url = format!("https://api.example.com/{}", "v".repeat(2100));
    let crafted_page = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("after:\u{0}");

    let status = |r: Result<(), tonic::Status>| r.expect_err("refused");
    let cases: Vec<(&str, tonic::Status, &str)> = vec![
        (
            "GetPool with NUL",
            status(c.get_pool(get("\u{0}")).await.map(|_| ())),
            "id_or_name",
        ),
        (
            "GetProvider with NUL",
            status(c.get_provider(get(nul)).await.map(|_| ())),
            "id_or_name",
        ),
        (
            "GetRoute with NUL",
            status(c.get_route(get(nul)).await.map(|_| ())),
            "id_or_name",
        ),
        (
            "GetMember with NUL",
            status(c.get_member(get(nul)).await.map(|_| ())),
            "id_or_name",
        ),
        (
            "ListMembers pool with NUL",
            status(
                c.list_members(pb::ListMembersRequest {
                    pool: "\u{0}".into(),
                    ..Default::default()
                })
                .await
                .map(|_| ()),
            ),
            "pool",
        ),
        (
            "ListMembers provider with a control character",
            status(
                c.list_members(pb::ListMembersRequest {
                    provider: "x\u{7}".into(),
                    ..Default::default()
                })
                .await
                .map(|_| ()),
            ),
            "provider",
        ),
        (
            "a crafted page token",
            status(
                c.list_pools(pb::ListPoolsRequest {
                    page_token: crafted_page.clone(),
                    ..Default::default()
                })
                .await
                .map(|_| ()),
            ),
            "page_token",
        ),
        (
            "a lookup longer than 256 bytes",
            status(c.get_pool(get(&"p".repeat(300))).await.map(|_| ())),
            "id_or_name",
        ),
        (
            "CreatePool description with NUL",
            status(
                c.create_pool(pb::CreatePoolRequest {
                    pool: Some(pb::Pool {
                        description: nul.into(),
                        ..pool("other")
                    }),
                })
                .await
                .map(|_| ()),
            ),
            "pool.description",
        ),
        (
            "UpdatePool description with NUL",
            status(
                c.update_pool(pb::UpdatePoolRequest {
                    pool: Some(pb::Pool {
                        id: chat.id.clone(),
                        description: nul.into(),
                        ..Default::default()
                    }),
                    update_mask: mask(&["description"]),
                })
                .await
                .map(|_| ()),
            ),
            "pool.description",
        ),
        (
            "a base_url of 2,100+ characters",
            status(
                c.create_provider(pb::CreateProviderRequest {
                    provider: Some(pb::Provider {
                        base_url: long_url.clone(),
                        ..openai_provider("other", "sk-0123456789abcdef")
                    }),
                })
                .await
                .map(|_| ()),
            ),
            "provider.base_url",
        ),
        (
            "a base_url with NUL",
            status(
                c.update_provider(pb::UpdateProviderRequest {
                    provider: Some(pb::Provider {
                        id: prov.id.clone(),
                        base_url: "https://api.example.com/\u{0}".into(),
                        ..Default::default()
                    }),
                    update_mask: mask(&["base_url"]),
                })
                .await
                .map(|_| ()),
            ),
            "provider.base_url",
        ),
        (
            "DeletePool with NUL",
            status(
                c.delete_pool(pb::DeletePoolRequest {
                    id_or_name: nul.into(),
                    ..Default::default()
                })
                .await
                .map(|_| ()),
            ),
            "id_or_name",
        ),
    ];
    for (what, s, field) in &cases {
        assert_eq!(s.code(), Code::InvalidArgument, "{what}: {s:?}");
        assert!(
            s.message().contains(field),
            "{what}: names {field}: {}",
            s.message()
        );
        assert!(!s.message().contains('\u{0}'), "{what}: no raw NUL echoed");
    }
    assert_eq!(revision(&mut c).await, before, "nothing was written");

    // An etag this server never issued is the caller's mistake, not a race.
    let s = c
        .delete_pool(pb::DeletePoolRequest {
            id_or_name: "chat".into(),
            etag: "W/\"abc\"".into(),
            ..Default::default()
        })
        .await
        .expect_err("not an etag");
    assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");
    assert!(s.message().contains("etag"), "{}", s.message());

    // Input shown back is cut and escaped.
    let s = c
        .get_pool(get(&format!("{}\u{1b}[31m", "q".repeat(100))))
        .await
        .expect_err("control characters in a lookup");
    assert_eq!(s.code(), Code::InvalidArgument);
    let s = c
        .get_pool(get(&"q".repeat(100)))
        .await
        .expect_err("not found");
    assert_eq!(s.code(), Code::NotFound);
    assert!(
        s.message().contains('…') && !s.message().contains(&"q".repeat(65)),
        "{}",
        s.message()
    );

    // A key pasted into credential.reference never comes back.
    let key = "sk-live-51HxYzAbCdEf0123456789";
    let s = c
        .create_provider(pb::CreateProviderRequest {
            provider: Some(pb::Provider {
                credential: Some(pb::CredentialInput {
                    source: Some(pb::credential_input::Source::Reference(key.into())),
                }),
                ..openai_provider("leaky", "unused")
            }),
        })
        .await
        .expect_err("not a reference");
    assert_eq!(s.code(), Code::InvalidArgument);
    assert!(
        s.message().contains("credential.reference"),
        "{}",
        s.message()
    );
    assert!(
        !s.message().contains("51HxYz"),
        "the key is not echoed: {}",
        s.message()
    );
    assert_eq!(revision(&mut c).await, before, "nothing was written");
}

#[tokio::test]
async fn a_blank_token_list_refuses_to_start() {
    for blank in [" , ", " ", ","] {
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_switchyard-control-plane"))
            .args(["--listen", "127.0.0.1:0"])
            .env_clear()
            .env("DATABASE_URL", "sqlite::memory:")
            .env("SWITCHYARD_METRICS_LISTEN", "off")
            .env("SWITCHYARD_ADMIN_TOKENS", blank)
            .output();
        let out = tokio::time::timeout(std::time::Duration::from_secs(20), out)
            .await
            .expect("exits promptly")
            .expect("runs");
        assert!(!out.status.success(), "{blank:?} must not start a server");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            text.contains("SWITCHYARD_ADMIN_TOKENS holds a blank entry"),
            "{text}"
        );
    }
}

#[tokio::test]
async fn a_connection_lost_mid_write_is_unavailable_never_internal() {
    let db = TestDb::postgres().await;
    let prefix = RedisPrefix::new();
    let cp = Launch::new(&db, &prefix).start().await;
    let mut c = cp.admin().await;
    create_provider(&mut c, openai_provider("prov", "sk-0123456789abcdef")).await;
    let name = db.url.rsplit('/').next().unwrap_or_default().to_owned();
    // Terminate the control plane's connections while it writes.
    let killer = tokio::spawn(async move {
        let admin = sea_orm::Database::connect(pg_admin_url())
            .await
            .expect("admin");
        let sql = format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = '{name}' AND pid <> pg_backend_pid()"
        );
        let mut killed = 0;
        for _ in 0..40 {
            let stmt = sea_orm::Statement::from_string(sea_orm::DatabaseBackend::Postgres, &sql);
            if let Ok(rows) = sea_orm::ConnectionTrait::query_all_raw(&admin, stmt).await {
                killed += rows.len();
            }
            tokio::time::sleep(std::time::Duration::from_millis(15)).await;
        }
        killed
    });
    let (mut ok, mut unavailable) = (0, 0);
    for i in 0..120 {
        let r = c
            .create_pool(pb::CreatePoolRequest {
                pool: Some(pool(&format!("p{i}"))),
            })
            .await;
        match r {
            Ok(_) => ok += 1,
            Err(s) if s.code() == Code::Unavailable => unavailable += 1,
            Err(s) => panic!("write {i}: {s:?} (only OK or UNAVAILABLE are acceptable)"),
        }
    }
    let killed = killer.await.expect("killer");
    assert!(
        killed > 0,
        "the control plane's connections were terminated during the writes"
    );
    assert!(ok > 0, "writes go through between the kills");
    // Reads retry once on a fresh connection: after the kills, they work.
    c.list_pools(pb::ListPoolsRequest::default())
        .await
        .expect("a read after the connections were killed");
    eprintln!("{ok} written, {unavailable} unavailable");
}
