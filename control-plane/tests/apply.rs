//! ApplyConfig and ExportConfig: a whole config in one transaction and one
//! revision, the diff it reports, the no-op round trip, prune, dry run, the
//! revision precondition, and all-or-nothing on a failure. On Postgres and
//! SQLite, through the real control-plane binary.
// Tests spawn callers freely and read their env overrides.
#![allow(clippy::disallowed_methods)]

#[macro_use]
mod common;

use common::*;
use switchyard_proto::v1 as pb;
use tonic::Code;

both_backends!(
    apply_builds_a_config_in_one_revision_and_reapplying_changes_nothing,
    apply_reports_field_diffs_and_prunes_only_when_asked,
    dry_run_and_expected_revision_write_nothing,
    a_failing_change_rolls_back_the_whole_apply,
    apply_refuses_documents_it_cannot_honour,
    a_pruned_name_can_change_kind_in_one_apply,
);

fn reference(r: &str) -> Option<pb::CredentialInput> {
    Some(pb::CredentialInput {
        source: Some(pb::credential_input::Source::Reference(r.into())),
    })
}

fn tier(target: pb::route_tier::Target, backup: bool) -> pb::RouteTier {
    pb::RouteTier {
        target: Some(target),
        backup,
        when: None,
    }
}

/// Two providers, two pools (one with its own failover, one refusing
/// `extra_json`), three members (one with a default `max_output_tokens`) and
/// a route with a pool tier and a direct backup.
fn document() -> pb::ConfigDocument {
    use pb::route_tier::Target;
    pb::ConfigDocument {
        providers: vec![
            pb::Provider {
                credential: reference("env:SWITCHYARD_CRED_OPENAI"),
                ..openai_provider("openai", "unused")
            },
            pb::Provider {
                name: "claude".into(),
                kind: pb::ProviderKind::Anthropic.into(),
                base_url: "https://api.anthropic.example/v1".into(),
                credential: reference("file:/run/secrets/anthropic"),
                ..Default::default()
            },
        ],
        pools: vec![
            pb::Pool {
                strategy: pb::Strategy::Weighted.into(),
                failover: Some(pb::FailoverPolicy {
                    transient_retries: 2,
                    failure_threshold: 5,
                    cooldown_base_ms: 500,
                    cooldown_max_ms: 60_000,
                    advance_on_permanent: true,
                }),
                description: "code models".into(),
                ..pool("coding")
            },
            pb::Pool {
                allow_request_extra: Some(false),
                ..pool("chat")
            },
        ],
        members: vec![
            pb::Member {
                weight: 3,
                ..member("coding", "openai", "gpt-4o")
            },
            pb::Member {
                max_output_tokens: Some(8192),
                ..member("coding", "claude", "claude-sonnet")
            },
            pb::Member {
                rpm_limit: Some(600),
                ..member("chat", "openai", "gpt-4o-mini")
            },
        ],
        routes: vec![pb::Route {
            name: "smart".into(),
            tiers: vec![
                tier(Target::Pool("coding".into()), false),
                tier(Target::Direct("openai/gpt-4o-mini".into()), true),
            ],
            ..Default::default()
        }],
    }
}

async fn apply(c: &mut Client, doc: pb::ConfigDocument, prune: bool) -> pb::ApplyConfigResponse {
    c.apply_config(pb::ApplyConfigRequest {
        config: Some(doc),
        prune,
        ..Default::default()
    })
    .await
    .expect("apply")
    .into_inner()
}

async fn export(c: &mut Client) -> pb::ExportConfigResponse {
    c.export_config(pb::ExportConfigRequest {})
        .await
        .expect("export")
        .into_inner()
}

fn names(changes: &[pb::ConfigChange], action: pb::ChangeAction) -> Vec<String> {
    changes
        .iter()
        .filter(|c| c.action == action as i32)
        .map(|c| c.name.clone())
        .collect()
}

async fn apply_builds_a_config_in_one_revision_and_reapplying_changes_nothing(backend: Backend) {
    let db = TestDb::new(backend).await;
    let prefix = RedisPrefix::new();
    let mut changes = subscribe(&prefix).await;
    let cp = Launch::new(&db, &prefix).start().await;
    let mut c = cp.admin().await;
    let before = revision(&mut c).await;

    let r = apply(&mut c, document(), false).await;
    assert!(r.applied);
    assert_eq!(r.revision, before + 1, "one revision for the whole apply");
    assert_eq!(
        names(&r.changes, pb::ChangeAction::Created),
        [
            "openai",
            "claude",
            "coding",
            "chat",
            "coding/openai/gpt-4o",
            "coding/claude/claude-sonnet",
            "chat/openai/gpt-4o-mini",
            "smart"
        ]
    );
    // One change message, one snapshot, holding everything.
    let msgs = next_changes(&mut changes, 1).await;
    assert_eq!(revisions(&msgs), [r.revision]);
    assert_eq!(msgs[0]["resource"], "config");
    assert_eq!(msgs[0]["action"], "applied");
    assert_eq!(msgs[0]["name"], "apply: 8 created, 0 updated, 0 deleted");
    let snap = wait_snapshot(&prefix, r.revision).await;
    let coding = snap
        .pools
        .iter()
        .find(|p| p.name == "coding")
        .expect("coding pool");
    assert_eq!(coding.members.len(), 2);
    assert_eq!(coding.strategy, pb::Strategy::Weighted as i32);
    assert_eq!(coding.failover.map(|f| f.failure_threshold), Some(5));
    assert_eq!(coding.allow_request_extra, Some(true), "left out = true");
    let claude = coding
        .members
        .iter()
        .find(|m| m.upstream_model == "claude-sonnet")
        .expect("claude member");
    assert_eq!(claude.max_output_tokens, Some(8192));
    assert!(
        coding
            .members
            .iter()
            .any(|m| m.upstream_model == "gpt-4o" && m.max_output_tokens.is_none())
    );
    let chat = snap
        .pools
        .iter()
        .find(|p| p.name == "chat")
        .expect("chat pool");
    assert_eq!(chat.allow_request_extra, Some(false));
    assert_eq!(snap.routes.len(), 1);

    // The same document again, and the exported one: nothing to do, no revision.
    let again = apply(&mut c, document(), false).await;
    assert!(!again.applied);
    assert!(again.changes.is_empty(), "{:?}", again.changes);
    assert_eq!(again.revision, r.revision);
    let exported = export(&mut c).await;
    assert_eq!(exported.revision, r.revision);
    let doc = exported.config.expect("document");
    assert!(
        doc.providers
            .iter()
            .all(|p| p.id.is_empty() && p.etag.is_empty())
    );
    assert_eq!(
        doc.members
            .iter()
            .map(|m| format!("{}/{}/{}", m.pool, m.provider, m.upstream_model))
            .collect::<Vec<_>>(),
        [
            "chat/openai/gpt-4o-mini",
            "coding/claude/claude-sonnet",
            "coding/openai/gpt-4o"
        ],
        "sorted by pool, provider, model"
    );
    assert_eq!(
        doc.members
            .iter()
            .map(|m| m.max_output_tokens)
            .collect::<Vec<_>>(),
        [None, Some(8192), None]
    );
    assert_eq!(
        doc.pools
            .iter()
            .map(|p| (p.name.as_str(), p.allow_request_extra))
            .collect::<Vec<_>>(),
        [("chat", Some(false)), ("coding", Some(true))]
    );
    let round = apply(&mut c, doc, true).await;
    assert!(
        round.changes.is_empty() && !round.applied,
        "export then apply (even with prune) is a no-op: {:?}",
        round.changes
    );
    assert_eq!(revision(&mut c).await, r.revision);

    // The audit trail names the apply and who made it.
    let mut feed = c
        .watch_changes(pb::WatchChangesRequest {
            from_earliest: true,
            ..Default::default()
        })
        .await
        .expect("watch")
        .into_inner();
    let ev = tokio::time::timeout(std::time::Duration::from_secs(10), feed.message())
        .await
        .expect("event in time")
        .expect("stream")
        .expect("one event");
    assert_eq!(ev.revision, r.revision);
    assert_eq!(ev.resource, pb::ResourceType::Config as i32);
    assert_eq!(ev.action, pb::ChangeAction::Applied as i32);
    assert_eq!(ev.actor, "admin");

    // A max_output_tokens left out of the document is cleared.
    let mut doc = document();
    doc.members[1].max_output_tokens = None;
    let cleared = apply(&mut c, doc, false).await;
    assert!(cleared.applied);
    assert_eq!(
        cleared
            .changes
            .iter()
            .map(|ch| {
                let f = &ch.fields[0];
                (
                    ch.name.as_str(),
                    ch.fields.len(),
                    f.field.as_str(),
                    f.from.as_str(),
                    f.to.as_str(),
                )
            })
            .collect::<Vec<_>>(),
        [(
            "coding/claude/claude-sonnet",
            1,
            "max_output_tokens",
            "8192",
            "none"
        )]
    );
    let snap = wait_snapshot(&prefix, cleared.revision).await;
    assert!(
        snap.pools
            .iter()
            .flat_map(|p| &p.members)
            .all(|m| m.max_output_tokens.is_none())
    );
    drop(cp);
}

async fn apply_reports_field_diffs_and_prunes_only_when_asked(backend: Backend) {
    let db = TestDb::new(backend).await;
    let prefix = RedisPrefix::new();
    let cp = Launch::new(&db, &prefix).start().await;
    let mut c = cp.admin().await;
    // A provider with an inline secret, made outside the document.
    create_provider(&mut c, openai_provider("openai", "sk-inline-0123456789")).await;
    let first = apply(&mut c, document(), false).await;
    // The document names openai without a credential change... it gives a
    // reference, so the inline secret is replaced and the diff says so
    // without showing the secret.
    let openai = first
        .changes
        .iter()
        .find(|ch| ch.name == "openai")
        .expect("openai change");
    assert_eq!(openai.action, pb::ChangeAction::Updated as i32);
    let cred = openai
        .fields
        .iter()
        .find(|f| f.field == "credential")
        .expect("credential diff");
    assert_eq!(cred.to, "env:SWITCHYARD_CRED_OPENAI");
    assert!(cred.from.starts_with("inline ...") || cred.from.starts_with("inline …"));
    assert!(!format!("{first:?}").contains("sk-inline-0123456789"));

    // Change four fields (a left-out allow_request_extra is its default,
    // true), drop a member and the route.
    let mut doc = document();
    doc.pools[0].strategy = pb::Strategy::Priority.into();
    doc.pools[1].allow_request_extra = None;
    doc.members[0].weight = 7;
    doc.members[0].max_output_tokens = Some(4096);
    doc.members.remove(1);
    doc.routes.clear();
    let kept = apply(&mut c, doc.clone(), false).await;
    assert!(kept.applied);
    let pool = kept
        .changes
        .iter()
        .find(|ch| ch.name == "coding")
        .expect("pool diff");
    assert_eq!(
        pool.fields
            .iter()
            .map(|f| (f.field.as_str(), f.from.as_str(), f.to.as_str()))
            .collect::<Vec<_>>(),
        [("strategy", "weighted", "priority")]
    );
    let chat = kept
        .changes
        .iter()
        .find(|ch| ch.name == "chat")
        .expect("chat pool diff");
    assert_eq!(
        chat.fields
            .iter()
            .map(|f| (f.field.as_str(), f.from.as_str(), f.to.as_str()))
            .collect::<Vec<_>>(),
        [("allow_request_extra", "false", "true")]
    );
    let m = kept
        .changes
        .iter()
        .find(|ch| ch.name == "coding/openai/gpt-4o")
        .expect("member diff");
    assert_eq!(
        m.fields
            .iter()
            .map(|f| (f.field.as_str(), f.from.as_str(), f.to.as_str()))
            .collect::<Vec<_>>(),
        [("weight", "3", "7"), ("max_output_tokens", "none", "4096")]
    );
    assert!(names(&kept.changes, pb::ChangeAction::Deleted).is_empty());
    assert_eq!(
        kept.unmanaged,
        ["member coding/claude/claude-sonnet", "route smart"]
    );

    // With prune they go, in the same single revision.
    let before = revision(&mut c).await;
    let pruned = apply(&mut c, doc, true).await;
    assert_eq!(pruned.revision, before + 1);
    assert_eq!(
        names(&pruned.changes, pb::ChangeAction::Deleted),
        ["smart", "coding/claude/claude-sonnet"],
        "the route goes first, the member after the updates"
    );
    assert!(pruned.unmanaged.is_empty());
    let routes = c
        .list_routes(pb::ListRoutesRequest::default())
        .await
        .expect("routes")
        .into_inner();
    assert!(routes.routes.is_empty());
    let members = c
        .list_members(pb::ListMembersRequest {
            pool: "coding".into(),
            ..Default::default()
        })
        .await
        .expect("members")
        .into_inner();
    assert_eq!(members.members.len(), 1);
    assert_eq!(members.members[0].weight, 7);
    assert_eq!(members.members[0].max_output_tokens, Some(4096));
    let chat = c
        .get_pool(pb::GetRequest {
            id_or_name: "chat".into(),
        })
        .await
        .expect("chat")
        .into_inner();
    assert_eq!(chat.allow_request_extra, Some(true));

    // Pruning to an empty document deletes everything, providers last.
    let empty = apply(&mut c, pb::ConfigDocument::default(), true).await;
    assert_eq!(
        names(&empty.changes, pb::ChangeAction::Deleted),
        [
            "chat/openai/gpt-4o-mini",
            "coding/openai/gpt-4o",
            "chat",
            "coding",
            "claude",
            "openai"
        ]
    );
    let snap = export(&mut c).await.config.expect("doc");
    assert_eq!(snap, pb::ConfigDocument::default());
    drop(cp);
}

async fn dry_run_and_expected_revision_write_nothing(backend: Backend) {
    let db = TestDb::new(backend).await;
    let prefix = RedisPrefix::new();
    let cp = Launch::new(&db, &prefix).start().await;
    let mut c = cp.admin().await;
    let before = revision(&mut c).await;

    // A reader may ask for the plan, not apply it.
    let mut reader = cp.client(READER).await;
    let plan = reader
        .apply_config(pb::ApplyConfigRequest {
            config: Some(document()),
            dry_run: true,
            ..Default::default()
        })
        .await
        .expect("a reader may dry-run")
        .into_inner();
    assert!(!plan.applied);
    assert_eq!(plan.changes.len(), 8);
    assert_eq!(plan.revision, before);
    let denied = reader
        .apply_config(pb::ApplyConfigRequest {
            config: Some(document()),
            ..Default::default()
        })
        .await
        .expect_err("a reader may not apply");
    assert_eq!(denied.code(), Code::PermissionDenied);
    assert_eq!(revision(&mut c).await, before, "nothing written");
    let listed = c
        .list_pools(pb::ListPoolsRequest::default())
        .await
        .expect("pools")
        .into_inner();
    assert!(listed.pools.is_empty());

    // A stale expected revision is refused; the current one goes through.
    let stale = c
        .apply_config(pb::ApplyConfigRequest {
            config: Some(document()),
            expected_revision: before + 5,
            ..Default::default()
        })
        .await
        .expect_err("stale");
    assert_eq!(stale.code(), Code::Aborted);
    assert!(
        stale.message().contains(&format!(
            "at revision {before}, not the expected {}",
            before + 5
        )),
        "{}",
        stale.message()
    );
    assert_eq!(revision(&mut c).await, before);
    let ok = c
        .apply_config(pb::ApplyConfigRequest {
            config: Some(document()),
            expected_revision: before,
            ..Default::default()
        })
        .await
        .expect("current revision")
        .into_inner();
    assert_eq!(ok.revision, before + 1);
    drop(cp);
}

async fn a_failing_change_rolls_back_the_whole_apply(backend: Backend) {
    let db = TestDb::new(backend).await;
    let prefix = RedisPrefix::new();
    let cp = Launch::new(&db, &prefix).start().await;
    let mut c = cp.admin().await;
    let before = revision(&mut c).await;
    let mut doc = document();
    // The last change fails: a route naming a pool nobody declared or stored.
    doc.routes[0].tiers[0].target = Some(pb::route_tier::Target::Pool("nowhere".into()));
    for dry_run in [true, false] {
        let err = c
            .apply_config(pb::ApplyConfigRequest {
                config: Some(doc.clone()),
                dry_run,
                ..Default::default()
            })
            .await
            .expect_err("unknown pool");
        assert_eq!(err.code(), Code::NotFound, "{}", err.message());
        assert!(
            err.message().starts_with("route 'smart': ")
                && err.message().contains("pool 'nowhere' not found"),
            "{}",
            err.message()
        );
    }
    assert_eq!(revision(&mut c).await, before);
    let providers = c
        .list_providers(pb::ListProvidersRequest::default())
        .await
        .expect("providers")
        .into_inner();
    assert!(
        providers.providers.is_empty(),
        "the providers created before the failure were rolled back"
    );

    // A bad field value names the resource and the field.
    let mut doc = document();
    doc.members[0].weight = 20_000;
    let err = c
        .apply_config(pb::ApplyConfigRequest {
            config: Some(doc),
            ..Default::default()
        })
        .await
        .expect_err("weight");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("coding/openai/gpt-4o")
            && err.message().contains("member.weight is 20000"),
        "{}",
        err.message()
    );
    assert_eq!(revision(&mut c).await, before);
    drop(cp);
}

async fn apply_refuses_documents_it_cannot_honour(backend: Backend) {
    let db = TestDb::new(backend).await;
    let prefix = RedisPrefix::new();
    let cp = Launch::new(&db, &prefix).start().await;
    let mut c = cp.admin().await;
    let cases: Vec<(pb::ConfigDocument, bool, &str)> = vec![
        (
            {
                let mut d = document();
                d.providers[0].credential = Some(pb::CredentialInput {
                    source: Some(pb::credential_input::Source::Inline(
                        "sk-live-0123456789abcdef".into(),
                    )),
                });
                d
            },
            false,
            "credential references only",
        ),
        (
            {
                let mut d = document();
                d.pools.push(pool("coding"));
                d
            },
            false,
            "'coding' appears more than once",
        ),
        (
            {
                let mut d = document();
                d.routes[0].name = "chat".into();
                d
            },
            false,
            "'chat' appears more than once",
        ),
        (
            {
                let mut d = document();
                d.providers.remove(1);
                d
            },
            true,
            "names provider 'claude', which the document does not declare",
        ),
    ];
    for (doc, prune, want) in cases {
        let err = c
            .apply_config(pb::ApplyConfigRequest {
                config: Some(doc),
                prune,
                ..Default::default()
            })
            .await
            .expect_err(want);
        assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());
        assert!(err.message().contains(want), "{}", err.message());
        assert!(!err.message().contains("sk-live"), "{}", err.message());
    }
    assert_eq!(
        c.list_providers(pb::ListProvidersRequest::default())
            .await
            .expect("providers")
            .into_inner()
            .providers
            .len(),
        0
    );
    drop(cp);
}

async fn a_pruned_name_can_change_kind_in_one_apply(backend: Backend) {
    use pb::route_tier::Target;
    let db = TestDb::new(backend).await;
    let prefix = RedisPrefix::new();
    let cp = Launch::new(&db, &prefix).start().await;
    let mut c = cp.admin().await;
    apply(&mut c, document(), true).await;
    // "chat" was a pool and "smart" a route; now "chat" is a route over
    // "coding" and "smart" a pool.
    let mut doc = document();
    doc.pools.retain(|p| p.name != "chat");
    doc.members.retain(|m| m.pool != "chat");
    doc.pools.push(pool("smart"));
    doc.members.push(member("smart", "openai", "gpt-4o-mini"));
    doc.routes = vec![pb::Route {
        name: "chat".into(),
        tiers: vec![tier(Target::Pool("coding".into()), false)],
        ..Default::default()
    }];
    let r = apply(&mut c, doc.clone(), true).await;
    assert!(r.applied, "{:?}", r.changes);
    let again = apply(&mut c, doc, true).await;
    assert!(again.changes.is_empty(), "{:?}", again.changes);
    let routes = c
        .list_routes(pb::ListRoutesRequest::default())
        .await
        .expect("routes")
        .into_inner()
        .routes;
    assert_eq!(routes.len(), 1);
    assert_eq!(routes[0].name, "chat");
}
