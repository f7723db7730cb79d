//! Resolve: the configuration a worker serves from, built once per snapshot
//! revision, swapped atomically, read lock-free on the request path.
//!
//! `resolve` turns a model name into tiers of candidates: a route's tiers →
//! a pool → a direct `provider/model` (a pool of one) → NOT_FOUND.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use secrecy::SecretString;
use switchyard_proto::v1 as pb;

use crate::credentials::{Refusal, Resolver};
use crate::error::DpError;
use crate::model::{Candidate, Limits, Policy, Pool, Resolved, Route, Strategy};
use crate::upstream::{Kind, Target, Timeouts};

struct Provider {
    name: String,
    kind: Kind,
    base_url: String,
    credential: Option<SecretString>,
    headers: Vec<(String, String)>,
    timeouts: Timeouts,
    enabled: bool,
}

#[derive(Default)]
pub struct Catalog {
    pub revision: u64,
    /// False until a snapshot (even an empty one at revision 0) is loaded.
    pub loaded: bool,
    pools: HashMap<String, Arc<Pool>>,
    routes: HashMap<String, Arc<Route>>,
    providers: HashMap<String, Arc<Provider>>,
    /// (provider, upstream model) → the member that serves it (one with
    /// limits first), so a direct `provider/model` call is that member for
    /// limits and health: a limit holds on every path.
    served: HashMap<(String, String), (String, Limits)>,
    /// Who may call, by key hash and certificate subject.
    pub callers: crate::callers::Callers,
    /// Providers this worker refuses to serve, by name, and why.
    refused: HashMap<String, Refusal>,
    /// Members of refused providers, by pool name (shown, never called).
    refused_members: HashMap<String, Vec<RefusedMember>>,
}

/// A member this worker does not serve, and why (ListModels shows it).
#[derive(Clone, Debug)]
pub struct RefusedMember {
    pub member_id: String,
    pub provider: String,
    pub upstream_model: String,
    pub status: pb::MemberStatus,
    pub reason: Refusal,
}

fn ms(v: u32) -> Duration {
    Duration::from_millis(u64::from(v))
}

fn kind(k: i32) -> Result<Kind, Refusal> {
    match pb::ProviderKind::try_from(k) {
        Ok(pb::ProviderKind::Openai) => Ok(Kind::OpenAi),
        Ok(pb::ProviderKind::Anthropic) => Ok(Kind::Anthropic),
        Ok(pb::ProviderKind::Mock) => Ok(Kind::Mock),
        Ok(pb::ProviderKind::Unspecified) | Err(_) => Err(Refusal::UnknownKind(k)),
    }
}

impl Provider {
    /// Where a call to `model` goes. `default_max_tokens` is the member's
    /// `max_output_tokens`; `allow_extra` the pool's `allow_request_extra`
    /// (a direct `provider/model` call has no pool: None and true).
    fn target(&self, model: &str, default_max_tokens: Option<u32>, allow_extra: bool) -> Target {
        Target {
            kind: self.kind,
            base_url: self.base_url.clone(),
            model: model.to_owned(),
            credential: self.credential.clone(),
            extra_headers: self.headers.clone(),
            timeouts: self.timeouts,
            default_max_tokens,
            allow_extra,
        }
    }
}

fn strategy(s: i32) -> Strategy {
    match pb::Strategy::try_from(s) {
        Ok(pb::Strategy::Weighted) => Strategy::Weighted,
        Ok(pb::Strategy::Priority) => Strategy::Priority,
        Ok(pb::Strategy::Random) => Strategy::Random,
        Ok(pb::Strategy::LeastBusy) => Strategy::LeastBusy,
        Ok(pb::Strategy::Latency) => Strategy::Latency,
        Ok(pb::Strategy::QuotaAware) => Strategy::QuotaAware,
        _ => Strategy::RoundRobin,
    }
}

fn policy(f: Option<&pb::FailoverPolicy>) -> Policy {
    let Some(f) = f else { return Policy::default() };
    Policy {
        transient_retries: f.transient_retries,
        failure_threshold: f.failure_threshold.max(1),
        cooldown_base: ms(f.cooldown_base_ms.max(1)),
        cooldown_max: ms(f.cooldown_max_ms.max(f.cooldown_base_ms).max(1)),
        advance_on_permanent: f.advance_on_permanent,
    }
}

impl Catalog {
    /// Builds the catalog from a snapshot: every credential resolved once
    /// here. A provider whose kind or credential cannot be served is
    /// refused (logged, shown by ListModels and `switchyard.config`
    /// health, counted), never served without its key or as another kind.
    pub fn build(snap: &pb::Snapshot, resolver: &Resolver) -> Self {
        let mut providers: HashMap<String, Arc<Provider>> = HashMap::new();
        let mut by_id: HashMap<&str, Arc<Provider>> = HashMap::new();
        let mut refused = HashMap::new();
        let mut refused_by_id: HashMap<&str, (&str, Refusal)> = HashMap::new();
        for p in &snap.providers {
            let t = p.timeouts.unwrap_or_default();
            let resolved = kind(p.kind).and_then(|k| Ok((k, resolver.credential(p)?)));
            let (kind, credential) = match resolved {
                Ok(ok) => ok,
                Err(reason) => {
                    tracing::warn!(
                        provider = %p.name,
                        reason = reason.label(),
                        "provider refused: its members are not served: {reason}"
                    );
                    refused_by_id.insert(p.id.as_str(), (p.name.as_str(), reason.clone()));
                    refused.insert(p.name.clone(), reason);
                    continue;
                }
            };
            let prov = Arc::new(Provider {
                name: p.name.clone(),
                kind,
                base_url: p.base_url.clone(),
                credential,
                headers: p
                    .extra_headers
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
                timeouts: Timeouts {
                    connect: ms(t.connect_ms.max(1)),
                    first_byte: ms(t.first_byte_ms.max(1)),
                    total: ms(t.request_ms.max(1)),
                },
                enabled: p.enabled,
            });
            by_id.insert(p.id.as_str(), prov.clone());
            providers.insert(p.name.clone(), prov);
        }
        let mut refused_members: HashMap<String, Vec<RefusedMember>> = HashMap::new();
        let mut pools = HashMap::new();
        let mut served: HashMap<(String, String), (String, Limits)> = HashMap::new();
        for p in &snap.pools {
            let mut members = Vec::with_capacity(p.members.len());
            let mut active = Vec::new();
            for m in &p.members {
                let Some(prov) = by_id.get(m.provider_id.as_str()) else {
                    if let Some((name, reason)) = refused_by_id.get(m.provider_id.as_str()) {
                        refused_members
                            .entry(p.name.clone())
                            .or_default()
                            .push(RefusedMember {
                                member_id: m.id.clone(),
                                provider: (*name).to_owned(),
                                upstream_model: m.upstream_model.clone(),
                                status: pb::MemberStatus::try_from(m.status)
                                    .unwrap_or(pb::MemberStatus::Active),
                                reason: reason.clone(),
                            });
                    }
                    continue;
                };
                let status =
                    pb::MemberStatus::try_from(m.status).unwrap_or(pb::MemberStatus::Active);
                let c = Arc::new(Candidate {
                    member_id: m.id.clone(),
                    provider: prov.name.clone(),
                    upstream_model: m.upstream_model.clone(),
                    weight: m.weight.max(1),
                    limits: Limits {
                        rpm: m.rpm_limit,
                        tpm: m.tpm_limit,
                    },
                    priority: m.priority,
                    status,
                    // 0 caps nothing (an unset field some tools write as 0).
                    max_concurrency: m.max_concurrency.filter(|&n| n > 0),
                    context_tokens: m.context_tokens,
                    key: if m.key.is_empty() {
                        "default".to_owned()
                    } else {
                        m.key.clone()
                    },
                    target: prov.target(
                        &m.upstream_model,
                        m.max_output_tokens,
                        p.allow_request_extra.unwrap_or(true),
                    ),
                    ephemeral: false,
                });
                if status == pb::MemberStatus::Active && prov.enabled {
                    active.push(c.clone());
                }
                let entry = served
                    .entry((c.provider.clone(), c.upstream_model.clone()))
                    .or_insert_with(|| (c.member_id.clone(), c.limits));
                if c.limits.any() && !entry.1.any() {
                    *entry = (c.member_id.clone(), c.limits);
                }
                members.push(c);
            }
            let strategy = strategy(p.strategy);
            let sequence = if strategy == Strategy::Weighted {
                crate::plan::weighted_sequence(&active.iter().map(|c| c.weight).collect::<Vec<_>>())
            } else {
                Vec::new()
            };
            let pool = Pool {
                name: p.name.clone(),
                id: p.id.clone(),
                strategy,
                policy: policy(p.failover.as_ref()),
                enabled: p.enabled,
                members,
                active,
                sequence,
            };
            pools.insert(p.name.clone(), Arc::new(pool));
        }
        let mut catalog = Self {
            loaded: true,
            revision: snap.revision,
            pools,
            routes: HashMap::new(),
            providers,
            served,
            callers: crate::callers::Callers::build(&snap.callers),
            refused,
            refused_members,
        };
        let mut routes = HashMap::new();
        for r in &snap.routes {
            let tiers = r
                .tiers
                .iter()
                .filter_map(|t| {
                    let pool = match t.target.as_ref()? {
                        pb::route_tier::Target::Pool(name) => catalog.pools.get(name).cloned()?,
                        pb::route_tier::Target::Direct(spec) => catalog.direct(spec)?,
                    };
                    Some((pool, t.backup))
                })
                .collect();
            routes.insert(
                r.name.clone(),
                Arc::new(Route {
                    name: r.name.clone(),
                    enabled: r.enabled,
                    tiers,
                }),
            );
        }
        catalog.routes = routes;
        catalog
    }

    /// A direct `provider/model`: a pool of one with the default policy. If
    /// a member serves the same upstream model, the call is that member as
    /// far as limits and health go: a limit holds on every path. Otherwise
    /// the name is the caller's choice and the call creates no state that
    /// outlives it: no health entry, no bench, the provider's retry budget.
    fn direct(&self, spec: &str) -> Option<Arc<Pool>> {
        let (prov, model) = spec.split_once('/')?;
        let p = self.providers.get(prov)?;
        let known = self.served.get(&(p.name.clone(), model.to_owned()));
        let (member_id, limits) = known
            .cloned()
            .unwrap_or_else(|| (spec.to_owned(), Limits::default()));
        let c = Arc::new(Candidate {
            member_id,
            provider: p.name.clone(),
            upstream_model: model.to_owned(),
            weight: 1,
            limits,
            priority: 0,
            status: pb::MemberStatus::Active,
            max_concurrency: None,
            context_tokens: None,
            key: "default".to_owned(),
            target: p.target(model, None, true),
            ephemeral: known.is_none(),
        });
        let active = if p.enabled {
            vec![c.clone()]
        } else {
            Vec::new()
        };
        Some(Arc::new(Pool {
            name: spec.to_owned(),
            id: if known.is_some() {
                format!("direct:{spec}")
            } else {
                format!("direct:{}", p.name)
            },
            strategy: Strategy::RoundRobin,
            policy: Policy::default(),
            enabled: true,
            members: vec![c],
            active,
            sequence: Vec::new(),
        }))
    }

    /// Resolves a model name: route → pool → provider/model → NOT_FOUND.
    pub fn resolve(&self, model: &str) -> Result<Resolved, DpError> {
        if model.is_empty() {
            return Err(DpError::InvalidArgument(
                "model is required: a route, a pool, or provider/model".into(),
            ));
        }
        if let Some(r) = self.routes.get(model) {
            if !r.enabled {
                return Err(DpError::FailedPrecondition(format!(
                    "route '{model}' is disabled"
                )));
            }
            // Primary tiers first, backups after, each group in order.
            let mut tiers: Vec<Arc<Pool>> = r
                .tiers
                .iter()
                .filter(|(p, b)| !*b && p.enabled)
                .map(|(p, _)| p.clone())
                .collect();
            tiers.extend(
                r.tiers
                    .iter()
                    .filter(|(p, b)| *b && p.enabled)
                    .map(|(p, _)| p.clone()),
            );
            if tiers.iter().all(|p| p.active.is_empty()) {
                return Err(DpError::FailedPrecondition(format!(
                    "no active member in route '{model}'"
                )));
            }
            return Ok(Resolved {
                model: model.to_owned(),
                tiers,
            });
        }
        if let Some(p) = self.pools.get(model) {
            if !p.enabled {
                return Err(DpError::FailedPrecondition(format!(
                    "no active member in pool '{model}' (the pool is disabled)"
                )));
            }
            if p.active.is_empty() {
                let why = match self.refused_members(model).first() {
                    // Callers see the rule's label; the worker's log has the detail.
                    Some(r) => format!(
                        " (provider '{}' is not served by this worker: {}; its log says why)",
                        r.provider,
                        r.reason.label()
                    ),
                    None => String::new(),
                };
                return Err(DpError::FailedPrecondition(format!(
                    "no active member in pool '{model}'{why}"
                )));
            }
            return Ok(Resolved {
                model: model.to_owned(),
                tiers: vec![p.clone()],
            });
        }
        if let Some((prov, _)) = model.split_once('/')
            && let Some(reason) = self.refused.get(prov)
        {
            return Err(DpError::FailedPrecondition(format!(
                "provider '{prov}' is not served by this worker: {}; its log says why",
                reason.label()
            )));
        }
        if let Some(p) = self.direct(model) {
            if p.active.is_empty() {
                return Err(DpError::FailedPrecondition(format!(
                    "no active member in pool '{model}' (provider disabled)"
                )));
            }
            return Ok(Resolved {
                model: model.to_owned(),
                tiers: vec![p],
            });
        }
        Err(DpError::NotFound(format!(
            "model '{model}' is not a route, a pool, or a provider/model"
        )))
    }

    /// Pools, then routes, sorted by name (for ListModels).
    /// Whether `name` is a configured route or pool (not a direct
    /// `provider/model`, not unknown).
    pub fn is_configured(&self, name: &str) -> bool {
        self.routes.contains_key(name) || self.pools.contains_key(name)
    }

    /// Providers refused at load, by name, and why.
    pub fn refused(&self) -> &HashMap<String, Refusal> {
        &self.refused
    }

    /// A pool's members this worker refuses, and why.
    pub fn refused_members(&self, pool: &str) -> &[RefusedMember] {
        self.refused_members.get(pool).map_or(&[], Vec::as_slice)
    }

    pub fn models(&self) -> (Vec<Arc<Pool>>, Vec<Arc<Route>>) {
        let mut pools: Vec<_> = self.pools.values().cloned().collect();
        pools.sort_by(|a, b| a.name.cmp(&b.name));
        let mut routes: Vec<_> = self.routes.values().cloned().collect();
        routes.sort_by(|a, b| a.name.cmp(&b.name));
        (pools, routes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct NoSecrets;
    impl crate::credentials::Secrets for NoSecrets {
        fn env(&self, _: &str) -> Option<String> {
            None
        }
        fn file(
            &self,
            _: &std::path::Path,
            _: &std::path::Path,
        ) -> Result<Option<String>, Refusal> {
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
        let r = c.resolve(model).expect("resolves");
        r.tiers[0]
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
        let err = c.resolve("bad").expect_err("refused").to_string();
        assert!(
            err.contains("'leaky' is not served") && err.contains("server_setting"),
            "{err}"
        );
        let err = c.resolve("future/x").expect_err("refused").to_string();
        assert!(err.contains("unknown_provider_kind"), "{err}");
        // The good provider is untouched.
        assert!(c.resolve("strict").is_ok());
    }
}
