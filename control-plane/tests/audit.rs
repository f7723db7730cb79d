//! The audit trail: every change records who made it — a token's name from
//! the tokens file, or `admin` for a token given in the environment — and
//! WatchChanges shows it.
// Tests spawn callers freely and read their env overrides.
#![allow(clippy::disallowed_methods)]

mod common;

use std::time::Duration;

use common::*;
use switchyard_proto::v1 as pb;
use tokio_stream::StreamExt as _;

#[tokio::test]
async fn every_change_names_who_made_it() {
    let db = TestDb::sqlite();
    let prefix = RedisPrefix::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let tokens = dir.path().join("tokens");
    std::fs::write(
        &tokens,
        "# who may change what\nadmin ci-token-0123 ci-bot\nreader dash-token-0123 dashboards\n",
    )
    .expect("tokens file");
    let mut launch = Launch::new(&db, &prefix);
    launch
        .extra_env
        .push(("SWITCHYARD_TOKENS_FILE", tokens.display().to_string()));
    let cp = launch.start().await;

    let mut env_admin = cp.admin().await;
    create_pool(&mut env_admin, pool("by-env")).await;
    let mut bot = cp.client("ci-token-0123").await;
    create_pool(&mut bot, pool("by-bot")).await;
    bot.delete_pool(pb::DeletePoolRequest {
        id_or_name: "by-env".into(),
        ..Default::default()
    })
    .await
    .expect("delete");

    let mut reader = cp.client("dash-token-0123").await;
    let mut stream = reader
        .watch_changes(pb::WatchChangesRequest {
            from_earliest: true,
            ..Default::default()
        })
        .await
        .expect("watch")
        .into_inner();
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let ev = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("event in time")
            .expect("open")
            .expect("ok");
        seen.push((ev.name, ev.action, ev.actor));
    }
    let (created, deleted) = (
        pb::ChangeAction::Created as i32,
        pb::ChangeAction::Deleted as i32,
    );
    assert_eq!(
        seen,
        vec![
            ("by-env".to_owned(), created, "admin".to_owned()),
            ("by-bot".to_owned(), created, "ci-bot".to_owned()),
            ("by-env".to_owned(), deleted, "ci-bot".to_owned()),
        ]
    );
    // The log line of each change names the actor too (never the token).
    let logs = cp.logs();
    assert!(logs.contains("\"actor\":\"ci-bot\""), "{logs}");
    assert!(
        !logs.contains("ci-token-0123"),
        "a token never reaches the logs"
    );
}
