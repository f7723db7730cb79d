//! ApplyConfig: a desired whole configuration in, the difference out,
//! written as one transaction and one revision.
//!
//! Resources match by name (members by pool, provider and upstream model).
//! Each change runs through the same create/update/delete code as the
//! single-resource RPCs, inside the apply's one transaction, so every check
//! those make (names, ranges, references, uniqueness) applies here too, and
//! a dry run makes them all before rolling back.
//!
//! Order, so references hold and names are free at every step: routes to
//! delete; providers, pools and members to create or update, and routes to
//! update; members and pools to delete, and the keys a provider update
//! removes (its members have moved off them by then); routes to create (a
//! pruned pool's name may be a new route's); providers to delete (nothing
//! still named by the document points at them by then).

use std::collections::HashMap;

use switchyard_shared::change::{Action, Resource};
use uuid::Uuid;

use super::document::{self, Fields, member_key};
use super::{Change, Store, WriteTxn, pb, pools};
use crate::error::{ApiError, ApiResult};
use crate::validate::clip;

/// One change to make: what the caller sees (None for the second half of
/// a change already shown), and the write behind it.
struct Op {
    change: Option<pb::ConfigChange>,
    write: Write,
}

enum Write {
    CreateProvider(pb::Provider),
    UpdateProvider(pb::Provider, Vec<&'static str>),
    /// The second half of a provider update that removes keys: after the
    /// members' own changes, so a member moving off a key is not refused.
    PruneKeys(pb::Provider),
    DeleteProvider(String),
    CreatePool(pb::Pool),
    UpdatePool(pb::Pool),
    DeletePool(String),
    CreateMember(pb::Member),
    UpdateMember(pb::Member),
    DeleteMember(String),
    CreateRoute(pb::Route),
    UpdateRoute(pb::Route),
    DeleteRoute(String),
}

const PROVIDER_PATHS: &[&str] = &["kind", "base_url", "extra_headers", "timeouts", "enabled"];
const POOL_PATHS: &[&str] = &[
    "strategy",
    "failover",
    "enabled",
    "description",
    "allow_request_extra",
];
const MEMBER_PATHS: &[&str] = &[
    "weight",
    "priority",
    "status",
    "rpm_limit",
    "tpm_limit",
    "max_output_tokens",
    "max_concurrency",
    "context_tokens",
    "key",
];
const ROUTE_PATHS: &[&str] = &["tiers", "enabled", "description"];

fn mask(paths: &[&str]) -> Option<prost_types::FieldMask> {
    Some(prost_types::FieldMask {
        paths: paths.iter().map(|p| (*p).to_owned()).collect(),
    })
}

fn change(
    resource: pb::ResourceType,
    action: pb::ChangeAction,
    name: &str,
    fields: Vec<pb::FieldChange>,
) -> pb::ConfigChange {
    pb::ConfigChange {
        resource: resource.into(),
        action: action.into(),
        name: name.to_owned(),
        fields,
    }
}

/// Every field, as set by a create.
fn all(fields: Fields) -> Vec<pb::FieldChange> {
    fields
        .into_iter()
        .map(|(field, to)| pb::FieldChange {
            field: field.to_owned(),
            from: String::new(),
            to,
        })
        .collect()
}

/// The fields that differ.
fn diff(from: Fields, to: Fields) -> Vec<pb::FieldChange> {
    from.into_iter()
        .zip(to)
        .filter(|((_, a), (_, b))| a != b)
        .map(|((field, from), (_, to))| pb::FieldChange {
            field: field.to_owned(),
            from,
            to,
        })
        .collect()
}

fn credential_reference(p: &pb::Provider) -> Option<&str> {
    match p.credential.as_ref().and_then(|c| c.source.as_ref()) {
        Some(pb::credential_input::Source::Reference(r)) => Some(r),
        _ => None,
    }
}

/// What the document asks for, as ordered writes, plus what it leaves alone.
struct Plan {
    ops: Vec<Op>,
    unmanaged: Vec<String>,
}

fn plan(doc: pb::ConfigDocument, cur: document::Stored, prune: bool) -> ApiResult<Plan> {
    use pb::ChangeAction as A;
    use pb::ResourceType as R;
    let mut head = Vec::new(); // route deletions
    let mut body = Vec::new(); // creates and updates
    let mut tail = Vec::new(); // member and pool deletions
    let mut route_creates = Vec::new();
    let mut unmanaged = Vec::new();
    let mut leftover = |what: &str, name: &str, write: Write, into: &mut Vec<Op>, res: R| {
        if prune {
            into.push(Op {
                change: Some(change(res, A::Deleted, name, Vec::new())),
                write,
            });
        } else {
            unmanaged.push(format!("{what} {name}"));
        }
    };

    // Providers.
    let mut stored: HashMap<String, pb::Provider> = cur
        .providers
        .into_iter()
        .map(|p| (p.name.clone(), p))
        .collect();
    let mut key_prunes = Vec::new();
    for mut p in doc.providers {
        let ctx = format!("provider '{}'", clip(&p.name));
        let want = document::provider_fields(&p).map_err(|e| e.context(&ctx))?;
        let reference = credential_reference(&p).map(str::to_owned);
        match stored.remove(&p.name) {
            None => {
                let mut fields = all(want);
                if let Some(r) = &reference {
                    fields.push(pb::FieldChange {
                        field: "credential".into(),
                        from: String::new(),
                        to: r.clone(),
                    });
                }
                if !p.keys.is_empty() {
                    fields.push(pb::FieldChange {
                        field: "keys".into(),
                        from: String::new(),
                        to: document::keys_text(&p.keys, &[]),
                    });
                }
                body.push(Op {
                    change: Some(change(R::Provider, A::Created, &p.name, fields)),
                    write: Write::CreateProvider(p),
                });
            }
            Some(s) => {
                let mut fields = diff(document::provider_fields(&s)?, want);
                let mut paths = PROVIDER_PATHS.to_vec();
                let had = document::stored_credential(&s);
                if let Some(r) = reference.filter(|r| *r != had) {
                    fields.push(pb::FieldChange {
                        field: "credential".into(),
                        from: had,
                        to: r,
                    });
                    paths.push("credential");
                }
                let (had, want) = (
                    document::keys_text(&s.keys, &[]),
                    document::keys_text(&p.keys, &s.keys),
                );
                if had != want {
                    fields.push(pb::FieldChange {
                        field: "keys".into(),
                        from: had,
                        to: want,
                    });
                    paths.push("keys");
                    let removed: Vec<pb::ProviderKey> = s
                        .keys
                        .iter()
                        .filter(|k| !p.keys.iter().any(|d| d.name == k.name))
                        .map(|k| pb::ProviderKey {
                            name: k.name.clone(),
                            ..Default::default()
                        })
                        .collect();
                    if !removed.is_empty() {
                        key_prunes.push(Op {
                            change: None,
                            write: Write::PruneKeys(pb::Provider {
                                id: s.id.clone(),
                                name: p.name.clone(),
                                keys: p.keys.clone(),
                                ..Default::default()
                            }),
                        });
                        // Kept (with their stored secrets) until the prune.
                        p.keys.extend(removed);
                    }
                }
                if !fields.is_empty() {
                    let name = p.name.clone();
                    body.push(Op {
                        change: Some(change(R::Provider, A::Updated, &name, fields)),
                        write: Write::UpdateProvider(pb::Provider { id: s.id, ..p }, paths),
                    });
                }
            }
        }
    }
    let mut provider_deletes = Vec::new();
    for (name, p) in sorted(stored) {
        leftover(
            "provider",
            &name,
            Write::DeleteProvider(p.id),
            &mut provider_deletes,
            R::Provider,
        );
    }

    // Pools.
    let mut stored: HashMap<String, pb::Pool> =
        cur.pools.into_iter().map(|p| (p.name.clone(), p)).collect();
    for p in doc.pools {
        let ctx = format!("pool '{}'", clip(&p.name));
        let want = document::pool_fields(&p).map_err(|e| e.context(&ctx))?;
        match stored.remove(&p.name) {
            None => body.push(Op {
                change: Some(change(R::Pool, A::Created, &p.name, all(want))),
                write: Write::CreatePool(p),
            }),
            Some(s) => {
                let fields = diff(document::pool_fields(&s)?, want);
                if !fields.is_empty() {
                    let name = p.name.clone();
                    body.push(Op {
                        change: Some(change(R::Pool, A::Updated, &name, fields)),
                        // Left out means the defaults, as on create.
                        write: Write::UpdatePool(pb::Pool {
                            id: s.id,
                            failover: Some(p.failover.unwrap_or_else(pools::default_failover)),
                            ..p
                        }),
                    });
                }
            }
        }
    }
    let mut pool_deletes = Vec::new();
    for (name, p) in sorted(stored) {
        leftover(
            "pool",
            &name,
            Write::DeletePool(p.id),
            &mut pool_deletes,
            R::Pool,
        );
    }

    // Members.
    let mut stored: HashMap<String, pb::Member> = cur
        .members
        .into_iter()
        .map(|m| {
            (
                member_key(&m.pool_name, &m.provider_name, &m.upstream_model),
                m,
            )
        })
        .collect();
    for m in doc.members {
        let key = member_key(&m.pool, &m.provider, &m.upstream_model);
        let ctx = format!("member {}", clip(&key));
        let want = document::member_fields(&m).map_err(|e| e.context(&ctx))?;
        match stored.remove(&key) {
            None => body.push(Op {
                change: Some(change(R::Member, A::Created, &key, all(want))),
                write: Write::CreateMember(m),
            }),
            Some(s) => {
                let fields = diff(document::member_fields(&s)?, want);
                if !fields.is_empty() {
                    body.push(Op {
                        change: Some(change(R::Member, A::Updated, &key, fields)),
                        // Left out means the defaults, as on create.
                        write: Write::UpdateMember(pb::Member {
                            id: s.id,
                            weight: m.weight.max(1),
                            status: if m.status == 0 {
                                pb::MemberStatus::Active.into()
                            } else {
                                m.status
                            },
                            ..m
                        }),
                    });
                }
            }
        }
    }
    for (key, m) in sorted(stored) {
        leftover(
            "member",
            &key,
            Write::DeleteMember(m.id),
            &mut tail,
            R::Member,
        );
    }
    tail.append(&mut key_prunes);
    tail.append(&mut pool_deletes);

    // Routes.
    let mut stored: HashMap<String, pb::Route> = cur
        .routes
        .into_iter()
        .map(|r| (r.name.clone(), r))
        .collect();
    for r in doc.routes {
        let want = document::route_fields(&r);
        match stored.remove(&r.name) {
            None => route_creates.push(Op {
                change: Some(change(R::Route, A::Created, &r.name, all(want))),
                write: Write::CreateRoute(r),
            }),
            Some(s) => {
                let fields = diff(document::route_fields(&s), want);
                if !fields.is_empty() {
                    let name = r.name.clone();
                    body.push(Op {
                        change: Some(change(R::Route, A::Updated, &name, fields)),
                        write: Write::UpdateRoute(pb::Route { id: s.id, ..r }),
                    });
                }
            }
        }
    }
    for (name, r) in sorted(stored) {
        leftover(
            "route",
            &name,
            Write::DeleteRoute(r.id),
            &mut head,
            R::Route,
        );
    }

    // New routes after pool deletions (a pruned pool's name may become a
    // route's), providers last (nothing refers to them by then).
    head.append(&mut body);
    head.append(&mut tail);
    head.append(&mut route_creates);
    head.append(&mut provider_deletes);
    Ok(Plan {
        ops: head,
        unmanaged,
    })
}

fn sorted<T>(m: HashMap<String, T>) -> Vec<(String, T)> {
    let mut v: Vec<(String, T)> = m.into_iter().collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

impl Store {
    pub async fn apply_config(
        &self,
        r: pb::ApplyConfigRequest,
    ) -> ApiResult<pb::ApplyConfigResponse> {
        let doc = r.config.unwrap_or_default();
        super::apply_check::check_document(&doc, r.prune)?;

        let w = self.begin_write().await?;
        let before = u64::try_from(w.revision - 1).unwrap_or_default();
        if r.expected_revision != 0 && r.expected_revision != before {
            return Err(ApiError::Aborted(format!(
                "the config is at revision {before}, not the expected {}; \
                 someone changed it meanwhile: review the new diff and apply again",
                r.expected_revision
            )));
        }
        let cur = document::load(&w.txn).await?;
        let Plan { ops, unmanaged } = plan(doc, cur, r.prune)?;
        let mut changes = Vec::with_capacity(ops.len());
        for op in ops {
            let what = match (&op.change, &op.write) {
                (Some(c), _) => label(c),
                (None, Write::PruneKeys(p)) => format!("provider '{}'", clip(&p.name)),
                (None, _) => String::new(),
            };
            self.run(&w, op.write).await.map_err(|e| e.context(&what))?;
            changes.extend(op.change);
        }
        if changes.is_empty() || r.dry_run {
            // Dropping the transaction rolls back the revision bump too.
            drop(w);
            return Ok(pb::ApplyConfigResponse {
                changes,
                revision: before,
                applied: false,
                unmanaged,
            });
        }
        for c in &changes {
            tracing::info!(
                resource = ?pb::ResourceType::try_from(c.resource).unwrap_or_default(),
                action = ?pb::ChangeAction::try_from(c.action).unwrap_or_default(),
                name = %c.name,
                fields = c.fields.len(),
                "apply: change"
            );
        }
        let revision = u64::try_from(w.revision).unwrap_or_default();
        self.commit(
            w,
            Change::new(
                Resource::Config,
                Action::Applied,
                Uuid::nil(),
                summary(&changes),
            ),
        )
        .await?;
        Ok(pb::ApplyConfigResponse {
            changes,
            revision,
            applied: true,
            unmanaged,
        })
    }

    async fn run(&self, w: &WriteTxn, write: Write) -> ApiResult<()> {
        match write {
            Write::CreateProvider(p) => self.create_provider_in(w, Some(p)).await.map(drop),
            Write::UpdateProvider(p, paths) => self
                .update_provider_in(w, Some(p), mask(&paths))
                .await
                .map(drop),
            Write::PruneKeys(p) => self
                .update_provider_in(w, Some(p), mask(&["keys"]))
                .await
                .map(drop),
            Write::DeleteProvider(id) => self.delete_provider_in(w, &id, true, "").await.map(drop),
            Write::CreatePool(p) => self.create_pool_in(w, Some(p)).await.map(drop),
            Write::UpdatePool(p) => self
                .update_pool_in(w, Some(p), mask(POOL_PATHS))
                .await
                .map(drop),
            Write::DeletePool(id) => self.delete_pool_in(w, &id, true, "").await.map(drop),
            Write::CreateMember(m) => self.create_member_in(w, Some(m)).await.map(drop),
            Write::UpdateMember(m) => self
                .update_member_in(w, Some(m), mask(MEMBER_PATHS))
                .await
                .map(drop),
            Write::DeleteMember(id) => self.delete_member_in(w, &id, "").await.map(drop),
            Write::CreateRoute(r) => self.create_route_in(w, Some(r)).await.map(drop),
            Write::UpdateRoute(r) => self
                .update_route_in(w, Some(r), mask(ROUTE_PATHS))
                .await
                .map(drop),
            Write::DeleteRoute(id) => self.delete_route_in(w, &id, "").await.map(drop),
        }
    }
}

/// `pool 'coding'` — which change an error is about.
fn label(c: &pb::ConfigChange) -> String {
    let what = match pb::ResourceType::try_from(c.resource).unwrap_or_default() {
        pb::ResourceType::Provider => "provider",
        pb::ResourceType::Pool => "pool",
        pb::ResourceType::Member => "member",
        pb::ResourceType::Route => "route",
        _ => "resource",
    };
    format!("{what} '{}'", clip(&c.name))
}

/// The change-event name of an apply: `apply: 2 created, 1 updated, 0 deleted`.
fn summary(changes: &[pb::ConfigChange]) -> String {
    let count = |a: pb::ChangeAction| changes.iter().filter(|c| c.action == a as i32).count();
    format!(
        "apply: {} created, {} updated, {} deleted",
        count(pb::ChangeAction::Created),
        count(pb::ChangeAction::Updated),
        count(pb::ChangeAction::Deleted)
    )
}
