//! Resolve: the configuration a worker serves from, built once per snapshot
//! revision, swapped atomically, read lock-free on the request path.
//!
//! `resolve` turns a model name into tiers of candidates: a route's tiers →
//! a pool → a direct `provider/model` (a pool of one) → NOT_FOUND.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use switchyard_proto::v1 as pb;

use crate::credentials::{Refusal, Resolver};
use crate::error::DpError;
use crate::features::{Condition, Features};
use crate::model::{Candidate, Limits, Policy, Pool, Resolved, Route, Strategy, Tier};
use crate::targets::{Expanded, Provider};

/// (provider, upstream model, key) → the active target that serves it (one
/// with limits first), its limits and its concurrency cap: a direct call
/// shares the member's health, limits, in-flight and slots.
type Served = HashMap<(String, String, String), (String, Limits, Option<u32>)>;

#[derive(Default)]
pub struct Catalog {
    pub revision: u64,
    /// False until a snapshot (even an empty one at revision 0) is loaded.
    pub loaded: bool,
    pools: HashMap<String, Arc<Pool>>,
    routes: HashMap<String, Arc<Route>>,
    providers: HashMap<String, Arc<Provider>>,
    /// Which member's target serves a provider's model on a key, so a
    /// direct `provider/model` call is that target for limits and health:
    /// a limit holds on every path.
    served: Served,
    /// Who may call, by key hash and certificate subject.
    pub callers: crate::callers::Callers,
    /// Providers this worker refuses to serve, by name, and why.
    refused: HashMap<String, Refusal>,
    /// Members of refused providers (and targets of refused keys), by pool
    /// name (shown, never called).
    refused_members: HashMap<String, Vec<RefusedMember>>,
}

/// A member this worker does not serve, and why (ListModels shows it).
#[derive(Clone, Debug)]
pub struct RefusedMember {
    pub member_id: String,
    pub provider: String,
    pub upstream_model: String,
    /// The provider key ("" when the whole provider is refused).
    pub key: String,
    pub status: pb::MemberStatus,
    pub reason: Refusal,
}

fn ms(v: u32) -> Duration {
    Duration::from_millis(u64::from(v))
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
    /// here. A provider whose kind or credentials cannot be served is
    /// refused (logged, shown by ListModels and `switchyard.config`
    /// health, counted), never served without its key or as another kind;
    /// a refused named key refuses only its targets.
    pub fn build(snap: &pb::Snapshot, resolver: &Resolver) -> Self {
        let mut providers: HashMap<String, Arc<Provider>> = HashMap::new();
        let mut by_id: HashMap<&str, Arc<Provider>> = HashMap::new();
        let mut refused = HashMap::new();
        let mut refused_by_id: HashMap<&str, (&str, Refusal)> = HashMap::new();
        for p in &snap.providers {
            match Provider::build(p, resolver) {
                Ok(prov) => {
                    let prov = Arc::new(prov);
                    by_id.insert(p.id.as_str(), prov.clone());
                    providers.insert(p.name.clone(), prov);
                }
                Err(reason) => {
                    tracing::warn!(
                        provider = %p.name,
                        reason = reason.label(),
                        "provider refused: its members are not served: {reason}"
                    );
                    refused_by_id.insert(p.id.as_str(), (p.name.as_str(), reason.clone()));
                    refused.insert(p.name.clone(), reason);
                }
            }
        }
        let mut refused_members: HashMap<String, Vec<RefusedMember>> = HashMap::new();
        let mut pools = HashMap::new();
        let mut served = Served::new();
        for p in &snap.pools {
            let mut members = Vec::with_capacity(p.members.len());
            let mut active = Vec::new();
            for m in &p.members {
                let status =
                    pb::MemberStatus::try_from(m.status).unwrap_or(pb::MemberStatus::Active);
                let mut refuse = |member_id: String, key: String, reason: Refusal, prov: &str| {
                    refused_members
                        .entry(p.name.clone())
                        .or_default()
                        .push(RefusedMember {
                            member_id,
                            provider: prov.to_owned(),
                            upstream_model: m.upstream_model.clone(),
                            key,
                            status,
                            reason,
                        });
                };
                let Some(prov) = by_id.get(m.provider_id.as_str()) else {
                    if let Some((name, reason)) = refused_by_id.get(m.provider_id.as_str()) {
                        refuse(m.id.clone(), String::new(), reason.clone(), name);
                    }
                    continue;
                };
                for target in prov.expand(&m.id, &m.key) {
                    let (id, key) = match target {
                        Expanded::Served { id, key } => (id, key),
                        Expanded::Refused { id, key, reason } => {
                            refuse(id, key, reason, &prov.name);
                            continue;
                        }
                    };
                    let c = Arc::new(Candidate {
                        member_id: id,
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
                        key: key.name.clone(),
                        target: prov.target(
                            &m.upstream_model,
                            key,
                            m.max_output_tokens,
                            p.allow_request_extra.unwrap_or(true),
                        ),
                        ephemeral: false,
                    });
                    if status == pb::MemberStatus::Active && prov.enabled {
                        active.push(c.clone());
                        // A draining or inactive member takes no direct
                        // calls under its id (they would keep it busy).
                        let this = || (c.member_id.clone(), c.limits, c.max_concurrency);
                        let entry = served
                            .entry((c.provider.clone(), c.upstream_model.clone(), c.key.clone()))
                            .or_insert_with(this);
                        if c.limits.any() && !entry.1.any() {
                            *entry = this();
                        }
                    }
                    members.push(c);
                }
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
                .zip(0u32..)
                .filter_map(|(t, index)| {
                    let pool = match t.target.as_ref()? {
                        pb::route_tier::Target::Pool(name) => catalog.pools.get(name).cloned()?,
                        pb::route_tier::Target::Direct(spec) => catalog.direct(spec)?,
                    };
                    Some(Tier {
                        index,
                        pool,
                        backup: t.backup,
                        when: t.when.as_ref().map(Condition::from).unwrap_or_default(),
                    })
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

    /// A direct `provider/model`: a pool of one target per provider key,
    /// rotated round robin, with the default policy. On a key where a
    /// member serves the same upstream model, the call is that member's
    /// target as far as limits and health go: a limit holds on every path.
    /// Otherwise the name is the caller's choice and the call creates no
    /// state that outlives it: no health entry, no bench, the provider's
    /// retry budget.
    fn direct(&self, spec: &str) -> Option<Arc<Pool>> {
        let (prov, model) = spec.split_once('/')?;
        let p = self.providers.get(prov)?;
        let mut any_known = false;
        let members: Vec<Arc<Candidate>> = p
            .keys
            .iter()
            .map(|key| {
                let known = self
                    .served
                    .get(&(p.name.clone(), model.to_owned(), key.name.clone()));
                any_known |= known.is_some();
                let (member_id, limits, max_concurrency) = known
                    .cloned()
                    .unwrap_or_else(|| (p.target_id(spec, &key.name), Limits::default(), None));
                Arc::new(Candidate {
                    member_id,
                    provider: p.name.clone(),
                    upstream_model: model.to_owned(),
                    weight: 1,
                    limits,
                    priority: 0,
                    status: pb::MemberStatus::Active,
                    max_concurrency,
                    context_tokens: None,
                    key: key.name.clone(),
                    target: p.target(model, key, None, true),
                    ephemeral: known.is_none(),
                })
            })
            .collect();
        let active = if p.enabled {
            members.clone()
        } else {
            Vec::new()
        };
        Some(Arc::new(Pool {
            name: spec.to_owned(),
            // The round-robin counter over the keys: named by the model
            // only when a member serves it (the caller picks other names).
            id: if any_known {
                format!("direct:{spec}")
            } else {
                format!("direct:{}", p.name)
            },
            strategy: Strategy::RoundRobin,
            policy: Policy::default(),
            enabled: true,
            members,
            active,
            sequence: Vec::new(),
        }))
    }

    /// Resolves a model name for a request with `features`: route → pool →
    /// provider/model → NOT_FOUND. A route's tiers whose condition the
    /// request does not meet are left out.
    pub fn resolve(&self, model: &str, features: &Features) -> Result<Resolved, DpError> {
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
            // Primary tiers first, backups after, each group in order; a
            // tier whose condition the request does not meet is passed over.
            let taken = |backup: bool| {
                r.tiers
                    .iter()
                    .filter(move |t| t.backup == backup && t.pool.enabled)
                    .filter(|t| t.when.matches(features))
                    .map(|t| (t.index, t.pool.clone()))
            };
            let tiers: Vec<(u32, Arc<Pool>)> = taken(false).chain(taken(true)).collect();
            if !r.tiers.iter().any(|t| t.when.matches(features)) && !r.tiers.is_empty() {
                let asked: Vec<String> = r
                    .tiers
                    .iter()
                    // Numbered as configured, as attempts number them (0-based).
                    .map(|t| format!("tier {}: {}", t.index, t.when.describe()))
                    .collect();
                return Err(DpError::InvalidArgument(format!(
                    "no tier of route '{model}' takes this request ({}); send what a tier \
                     asks for, or add a tier without a condition",
                    asked.join("; ")
                )));
            }
            if tiers.iter().all(|(_, p)| p.active.is_empty()) {
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
                tiers: vec![(0, p.clone())],
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
                tiers: vec![(0, p)],
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

    /// Whether this worker serves the config only in part: a provider, or
    /// one of a provider's keys, refused.
    pub fn degraded(&self) -> bool {
        !self.refused.is_empty() || self.providers.values().any(|p| !p.refused_keys.is_empty())
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
mod tests;
