//! Resolve's unit tests: targets, keys, direct calls, tier conditions.

use super::*;

struct NoSecrets;
impl crate::credentials::Secrets for NoSecrets {
    fn env(&self, _: &str) -> Option<String> {
        None
    }
    fn file(&self, _: &std::path::Path, _: &std::path::Path) -> Result<Option<String>, Refusal> {
        Ok(None)
    }
}

fn no_secrets() -> Resolver {
    Resolver {
        keys: None,
        rules: switchyard_shared::credential_ref::ReferenceRules::default(),
        secrets: Box::new(NoSecrets),
    }
}

fn member(id: &str, model: &str, max_output_tokens: Option<u32>) -> pb::SnapshotMember {
    pb::SnapshotMember {
        id: id.into(),
        provider_id: "prov-id".into(),
        provider_name: "prov".into(),
        upstream_model: model.into(),
        weight: 1,
        status: pb::MemberStatus::Active.into(),
        max_output_tokens,
        ..Default::default()
    }
}

fn pool(
    name: &str,
    allow_request_extra: bool,
    members: Vec<pb::SnapshotMember>,
) -> pb::SnapshotPool {
    pb::SnapshotPool {
        id: format!("{name}-id"),
        name: name.into(),
        enabled: true,
        allow_request_extra: Some(allow_request_extra),
        members,
        ..Default::default()
    }
}

fn snapshot() -> pb::Snapshot {
    pb::Snapshot {
        revision: 7,
        providers: vec![pb::SnapshotProvider {
            id: "prov-id".into(),
            name: "prov".into(),
            kind: pb::ProviderKind::Anthropic.into(),
            base_url: "https://api.example.test/v1".into(),
            enabled: true,
            ..Default::default()
        }],
        pools: vec![
            pool(
                "strict",
                false,
                vec![member("m1", "big", Some(8192)), member("m2", "small", None)],
            ),
            pool("open", true, vec![member("m3", "big", Some(1024))]),
        ],
        ..Default::default()
    }
}

/// (model, default_max_tokens, allow_extra) of each candidate of the one tier.
fn targets(c: &Catalog, model: &str) -> Vec<(String, Option<u32>, bool)> {
    let r = c.resolve(model, &Features::default()).expect("resolves");
    r.tiers[0]
        .1
        .members
        .iter()
        .map(|m| {
            (
                m.target.model.clone(),
                m.target.default_max_tokens,
                m.target.allow_extra,
            )
        })
        .collect()
}

#[test]
fn targets_carry_the_members_max_output_tokens_and_the_pools_extra_setting() {
    let c = Catalog::build(&snapshot(), &no_secrets());
    assert_eq!(
        targets(&c, "strict"),
        [
            ("big".to_owned(), Some(8192), false),
            ("small".to_owned(), None, false),
        ]
    );
    assert_eq!(targets(&c, "open"), [("big".to_owned(), Some(1024), true)]);
    // A snapshot from before the setting existed allows extra.
    let mut old = snapshot();
    old.pools[0].allow_request_extra = None;
    let c_old = Catalog::build(&old, &no_secrets());
    assert!(targets(&c_old, "strict")[0].2);
    // A direct provider/model call has no pool: no default, extra allowed.
    assert_eq!(targets(&c, "prov/big"), [("big".to_owned(), None, true)]);
}

#[test]
fn providers_that_cannot_be_served_are_refused_with_the_reason() {
    let mut snap = snapshot();
    // An unknown kind (a newer control plane) and a reference to a
    // server setting: neither is served, both say why.
    let mut unknown = snap.providers[0].clone();
    unknown.id = "prov2-id".into();
    unknown.name = "future".into();
    unknown.kind = 99;
    let mut leaky = snap.providers[0].clone();
    leaky.id = "prov3-id".into();
    leaky.name = "leaky".into();
    leaky.credential = Some(pb::SnapshotCredential {
        info: Some(pb::CredentialInfo {
            source: pb::credential_info::Source::Reference.into(),
            reference: "env:SWITCHYARD_MASTER_KEY".into(),
            ..Default::default()
        }),
        sealed: Vec::new(),
    });
    snap.providers.extend([unknown, leaky]);
    let mut m = member("m9", "x", None);
    m.provider_id = "prov3-id".into();
    snap.pools.push(pool("bad", true, vec![m]));
    let c = Catalog::build(&snap, &no_secrets());
    assert_eq!(c.refused()["future"].label(), "unknown_provider_kind");
    assert_eq!(c.refused()["leaky"].label(), "server_setting");
    assert_eq!(c.refused_members("bad")[0].member_id, "m9");
    let err = c
        .resolve("bad", &Features::default())
        .expect_err("refused")
        .to_string();
    assert!(
        err.contains("'leaky' is not served") && err.contains("server_setting"),
        "{err}"
    );
    let err = c
        .resolve("future/x", &Features::default())
        .expect_err("refused")
        .to_string();
    assert!(err.contains("unknown_provider_kind"), "{err}");
    // The good provider is untouched.
    assert!(c.resolve("strict", &Features::default()).is_ok());
}

/// The snapshot, its provider holding keys k1 and k2 (no default), and
/// member m3 of pool "open" pinned to k2.
fn keyed() -> pb::Snapshot {
    let mut snap = snapshot();
    let key = |name: &str| pb::SnapshotProviderKey {
        name: name.into(),
        credential: None,
    };
    snap.providers[0].keys = vec![key("k1"), key("k2")];
    snap.pools[1].members[0].key = "k2".into();
    snap
}

fn ids(p: &Pool) -> Vec<(&str, &str)> {
    p.active
        .iter()
        .map(|c| (c.member_id.as_str(), c.key.as_str()))
        .collect()
}

#[test]
fn a_provider_with_keys_turns_each_member_into_one_target_per_key() {
    let c = Catalog::build(&keyed(), &no_secrets());
    let none = Features::default();
    let strict = c.resolve("strict", &none).expect("resolves");
    assert_eq!(
        ids(&strict.tiers[0].1),
        [
            ("m1~k1", "k1"),
            ("m1~k2", "k2"),
            ("m2~k1", "k1"),
            ("m2~k2", "k2"),
        ]
    );
    let open = c.resolve("open", &none).expect("resolves");
    assert_eq!(ids(&open.tiers[0].1), [("m3~k2", "k2")], "pinned to k2");
    // Without keys, members keep their own ids and the key "default".
    let plain = Catalog::build(&snapshot(), &no_secrets());
    let strict = plain.resolve("strict", &none).expect("resolves");
    assert_eq!(
        ids(&strict.tiers[0].1),
        [("m1", "default"), ("m2", "default")]
    );
    // A member pinned to a key the provider lacks is refused, shown.
    let mut snap = keyed();
    snap.pools[1].members[0].key = "gone".into();
    let c = Catalog::build(&snap, &no_secrets());
    let refused = c.refused_members("open");
    assert_eq!(
        (refused[0].member_id.as_str(), refused[0].key.as_str()),
        ("m3~gone", "gone")
    );
    assert_eq!(refused[0].reason.label(), "unknown_key");
    assert!(c.resolve("open", &none).is_err());
    assert!(
        !c.degraded(),
        "a member's mistake, not a key this worker refuses"
    );
    // A key whose credential this worker cannot open refuses its targets
    // only, and the config is served in part.
    let mut snap = keyed();
    snap.providers[0].keys[1].credential = Some(pb::SnapshotCredential {
        info: Some(pb::CredentialInfo {
            source: pb::credential_info::Source::Inline.into(),
            ..Default::default()
        }),
        sealed: vec![1, 2, 3],
    });
    let c = Catalog::build(&snap, &no_secrets());
    assert!(c.degraded() && c.refused().is_empty());
    let strict = c.resolve("strict", &none).expect("k1 serves");
    assert_eq!(ids(&strict.tiers[0].1), [("m1~k1", "k1"), ("m2~k1", "k1")]);
    let refused: Vec<_> = c
        .refused_members("strict")
        .iter()
        .map(|r| (r.member_id.as_str(), r.reason.label()))
        .collect();
    assert_eq!(
        refused,
        [("m1~k2", "no_master_key"), ("m2~k2", "no_master_key")]
    );
}

#[test]
fn a_direct_call_rotates_over_the_providers_keys() {
    let c = Catalog::build(&keyed(), &no_secrets());
    let none = Features::default();
    // "big" is served by m1 on both keys and m3 on k2: the direct call is
    // those targets (limits and health hold on every path).
    let big = c.resolve("prov/big", &none).expect("resolves");
    let pool = &big.tiers[0].1;
    assert_eq!(ids(pool), [("m1~k1", "k1"), ("m1~k2", "k2")]);
    assert!(pool.takes_tickets(), "round robin over the keys");
    // A model no member serves: a target per key, no state kept.
    let other = c.resolve("prov/other", &none).expect("resolves");
    let pool = &other.tiers[0].1;
    assert_eq!(
        ids(pool),
        [("prov/other~k1", "k1"), ("prov/other~k2", "k2")]
    );
    assert!(pool.active.iter().all(|c| c.ephemeral));
    assert_eq!(
        pool.id, "direct:prov",
        "the counter is named by the provider"
    );
    // Successive tickets start at successive keys.
    let table = std::collections::HashMap::new();
    let now = tokio::time::Instant::now();
    let first: Vec<String> = (0..4)
        .map(|t| {
            crate::plan::plan(pool, t, &table, now, &|_| crate::model::Live::default()).steps[0]
                .candidate
                .key
                .clone()
        })
        .collect();
    assert_eq!(first, ["k1", "k2", "k1", "k2"]);
}

fn when(images: bool, min_prompt_tokens: u64) -> Option<pb::TierCondition> {
    Some(pb::TierCondition {
        images,
        min_prompt_tokens,
        ..Default::default()
    })
}

#[test]
fn route_tiers_whose_condition_the_request_lacks_are_passed_over() {
    let mut snap = snapshot();
    let tier = |pool: &str, backup, when| pb::RouteTier {
        target: Some(pb::route_tier::Target::Pool(pool.into())),
        backup,
        when,
    };
    snap.routes = vec![
        pb::SnapshotRoute {
            name: "auto".into(),
            enabled: true,
            tiers: vec![
                tier("strict", false, when(true, 0)),
                tier("open", true, when(false, 0)),
                tier("open", false, when(false, 100)),
            ],
            ..Default::default()
        },
        pb::SnapshotRoute {
            name: "eyes".into(),
            enabled: true,
            tiers: vec![tier("strict", false, when(true, 0))],
            ..Default::default()
        },
    ];
    let c = Catalog::build(&snap, &no_secrets());
    let indexes = |f: Features| -> Vec<u32> {
        let r = c.resolve("auto", &f).expect("resolves");
        r.tiers.iter().map(|(i, _)| *i).collect()
    };
    // Primaries first (in order), backups after; each with its index.
    let image = Features {
        images: true,
        ..Features::text(10)
    };
    assert_eq!(indexes(image), [0, 1]);
    assert_eq!(indexes(Features::text(10)), [1]);
    assert_eq!(indexes(Features::text(100)), [2, 1], "at least N tokens");
    let err = c
        .resolve("eyes", &Features::text(10))
        .expect_err("no tier takes it");
    assert!(matches!(err, DpError::InvalidArgument(_)), "{err:?}");
    assert!(err.to_string().contains("tier 0: images"), "{err}");
    assert!(c.resolve("eyes", &image).is_ok());
    // A tier this worker cannot serve (a pool it does not have) leaves the
    // others their configured numbers.
    snap.routes[0].tiers.insert(0, tier("gone", false, None));
    let shifted = Catalog::build(&snap, &no_secrets());
    let r = shifted
        .resolve("auto", &Features::text(10))
        .expect("resolves");
    assert_eq!(r.tiers.iter().map(|(i, _)| *i).collect::<Vec<_>>(), [2]);
    snap.routes[0].tiers.remove(0);
    // A tier that takes the request but whose pool is disabled is the
    // configuration's problem, not the caller's.
    snap.pools[0].enabled = false;
    let c = Catalog::build(&snap, &no_secrets());
    let err = c.resolve("eyes", &image).expect_err("disabled");
    assert!(matches!(err, DpError::FailedPrecondition(_)), "{err:?}");
}

#[tokio::test(start_paused = true)]
async fn a_benched_key_sits_out_while_the_other_key_of_the_member_serves() {
    use crate::fleet::{Entry, Failure};
    use crate::model::Live;
    let c = Catalog::build(&keyed(), &no_secrets());
    let strict = c.resolve("strict", &Features::default()).expect("resolves");
    let pool = &strict.tiers[0].1;
    // m1's k2 answered 429 with Retry-After 30 s: benched at once.
    let now = tokio::time::Instant::now();
    let mut entry = Entry::new(now);
    entry.fail(
        now,
        &Failure::bench_for(std::time::Duration::from_secs(30)),
        None,
    );
    let health = std::collections::HashMap::from([("m1~k2".to_owned(), entry)]);
    let planned = |now| {
        let p = crate::plan::plan(pool, 0, &health, now, &|_| Live::default());
        let steps: Vec<String> = p
            .steps
            .iter()
            .map(|s| s.candidate.member_id.clone())
            .collect();
        let skipped: Vec<String> = p.skipped.iter().map(|(c, _)| c.member_id.clone()).collect();
        (steps, skipped)
    };
    let (steps, skipped) = planned(now);
    assert_eq!(skipped, ["m1~k2"]);
    assert_eq!(steps, ["m1~k1", "m2~k1", "m2~k2"], "the other key serves");
    tokio::time::advance(std::time::Duration::from_secs(31)).await;
    let (steps, skipped) = planned(tokio::time::Instant::now());
    assert!(skipped.is_empty(), "back after its bench: {skipped:?}");
    assert!(steps.contains(&"m1~k2".to_owned()), "{steps:?}");
}

#[test]
fn a_direct_call_shares_an_active_members_cap_and_never_a_draining_ones_id() {
    let mut snap = snapshot();
    snap.pools[0].members[0].max_concurrency = Some(4);
    let c = Catalog::build(&snap, &no_secrets());
    let none = Features::default();
    let direct = c.resolve("prov/big", &none).expect("resolves");
    let m = &direct.tiers[0].1.members[0];
    assert_eq!(
        (m.member_id.as_str(), m.max_concurrency),
        ("m1", Some(4)),
        "m1's target, slots and all"
    );
    // m1 draining and m3 inactive: the direct call is a target of its own.
    snap.pools[0].members[0].status = pb::MemberStatus::Draining.into();
    snap.pools[1].members[0].status = pb::MemberStatus::Inactive.into();
    let c = Catalog::build(&snap, &no_secrets());
    let direct = c.resolve("prov/big", &none).expect("resolves");
    let m = &direct.tiers[0].1.members[0];
    assert!(m.ephemeral, "not m1: {}", m.member_id);
    assert_eq!(m.max_concurrency, None);
}
