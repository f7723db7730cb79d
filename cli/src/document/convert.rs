//! The file's types to and from the API's `ConfigDocument`.

use switchyard_proto::v1 as pb;

use super::{
    Condition, DEFAULT_FAILOVER, Document, Failover, Kind, Member, Pool, Provider, ProviderKey,
    Route, Status, Strategy, Tier, Timeouts, VERSION,
};

fn reference(r: &str) -> pb::CredentialInput {
    pb::CredentialInput {
        source: Some(pb::credential_input::Source::Reference(r.to_owned())),
    }
}

fn reference_of(c: Option<pb::CredentialInput>) -> Option<String> {
    match c.and_then(|c| c.source) {
        Some(pb::credential_input::Source::Reference(r)) => Some(r),
        _ => None,
    }
}

impl Document {
    /// What ApplyConfig takes.
    pub fn to_proto(&self) -> pb::ConfigDocument {
        let providers = self.providers.iter().map(provider_to_proto).collect();
        let pools = self.pools.iter().map(pool_to_proto).collect();
        let members = self
            .pools
            .iter()
            .flat_map(|p| p.members.iter().map(|m| member_to_proto(&p.name, m)))
            .collect();
        let routes = self.routes.iter().map(route_to_proto).collect();
        pb::ConfigDocument {
            providers,
            pools,
            members,
            routes,
        }
    }

    /// What ExportConfig gives, as a file.
    pub fn from_proto(doc: pb::ConfigDocument) -> Self {
        let mut pools: Vec<Pool> = doc.pools.iter().map(pool_from_proto).collect();
        for m in doc.members {
            if let Some(p) = pools.iter_mut().find(|p| p.name == m.pool) {
                p.members.push(member_from_proto(m));
            }
        }
        let mut out = Document {
            version: VERSION.to_owned(),
            providers: doc.providers.into_iter().map(provider_from_proto).collect(),
            pools,
            routes: doc.routes.into_iter().map(route_from_proto).collect(),
        };
        out.sort();
        out
    }
}

fn provider_to_proto(p: &Provider) -> pb::Provider {
    let kind = match p.kind {
        Kind::Openai => pb::ProviderKind::Openai,
        Kind::Anthropic => pb::ProviderKind::Anthropic,
        Kind::Mock => pb::ProviderKind::Mock,
    };
    pb::Provider {
        name: p.name.clone(),
        kind: kind.into(),
        base_url: p.base_url.clone(),
        credential: p.credential.as_deref().map(reference),
        extra_headers: p.extra_headers.clone().into_iter().collect(),
        timeouts: Some(pb::Timeouts {
            connect_ms: p.timeouts.connect_ms,
            first_byte_ms: p.timeouts.first_byte_ms,
            request_ms: p.timeouts.request_ms,
        }),
        enabled: Some(p.enabled),
        keys: p
            .keys
            .iter()
            .map(|k| pb::ProviderKey {
                name: k.name.clone(),
                credential: k.credential.as_deref().map(reference),
                credential_info: None,
            })
            .collect(),
        ..Default::default()
    }
}

fn provider_from_proto(p: pb::Provider) -> Provider {
    let kind = match pb::ProviderKind::try_from(p.kind) {
        Ok(pb::ProviderKind::Anthropic) => Kind::Anthropic,
        Ok(pb::ProviderKind::Mock) => Kind::Mock,
        _ => Kind::Openai,
    };
    let credential = reference_of(p.credential);
    let t = p.timeouts.unwrap_or_default();
    Provider {
        name: p.name,
        kind,
        base_url: p.base_url,
        credential,
        extra_headers: p.extra_headers.into_iter().collect(),
        timeouts: Timeouts {
            connect_ms: t.connect_ms,
            first_byte_ms: t.first_byte_ms,
            request_ms: t.request_ms,
        },
        enabled: p.enabled.unwrap_or(true),
        keys: p
            .keys
            .into_iter()
            .map(|k| ProviderKey {
                name: k.name,
                credential: reference_of(k.credential),
            })
            .collect(),
    }
}

fn pool_to_proto(p: &Pool) -> pb::Pool {
    let strategy = match p.strategy {
        Strategy::RoundRobin => pb::Strategy::RoundRobin,
        Strategy::Weighted => pb::Strategy::Weighted,
        Strategy::Priority => pb::Strategy::Priority,
        Strategy::Random => pb::Strategy::Random,
        Strategy::LeastBusy => pb::Strategy::LeastBusy,
        Strategy::Latency => pb::Strategy::Latency,
        Strategy::QuotaAware => pb::Strategy::QuotaAware,
    };
    let f = p.failover.unwrap_or(DEFAULT_FAILOVER);
    pb::Pool {
        name: p.name.clone(),
        strategy: strategy.into(),
        failover: Some(pb::FailoverPolicy {
            transient_retries: f.transient_retries,
            failure_threshold: f.failure_threshold,
            cooldown_base_ms: f.cooldown_base_ms,
            cooldown_max_ms: f.cooldown_max_ms,
            advance_on_permanent: f.advance_on_permanent,
        }),
        enabled: Some(p.enabled),
        description: p.description.clone(),
        allow_request_extra: Some(p.allow_request_extra),
        ..Default::default()
    }
}

fn pool_from_proto(p: &pb::Pool) -> Pool {
    let strategy = match pb::Strategy::try_from(p.strategy) {
        Ok(pb::Strategy::Weighted) => Strategy::Weighted,
        Ok(pb::Strategy::Priority) => Strategy::Priority,
        Ok(pb::Strategy::Random) => Strategy::Random,
        Ok(pb::Strategy::LeastBusy) => Strategy::LeastBusy,
        Ok(pb::Strategy::Latency) => Strategy::Latency,
        Ok(pb::Strategy::QuotaAware) => Strategy::QuotaAware,
        _ => Strategy::RoundRobin,
    };
    let failover = p
        .failover
        .map(|f| Failover {
            transient_retries: f.transient_retries,
            failure_threshold: f.failure_threshold,
            cooldown_base_ms: f.cooldown_base_ms,
            cooldown_max_ms: f.cooldown_max_ms,
            advance_on_permanent: f.advance_on_permanent,
        })
        .filter(|f| *f != DEFAULT_FAILOVER);
    Pool {
        name: p.name.clone(),
        strategy,
        failover,
        enabled: p.enabled.unwrap_or(true),
        description: p.description.clone(),
        allow_request_extra: p.allow_request_extra.unwrap_or(true),
        members: Vec::new(),
    }
}

fn member_to_proto(pool: &str, m: &Member) -> pb::Member {
    let status = match m.status {
        Status::Active => pb::MemberStatus::Active,
        Status::Inactive => pb::MemberStatus::Inactive,
        Status::Draining => pb::MemberStatus::Draining,
    };
    pb::Member {
        pool: pool.to_owned(),
        provider: m.provider.clone(),
        upstream_model: m.model.clone(),
        weight: m.weight,
        priority: m.priority,
        status: status.into(),
        rpm_limit: m.rpm_limit,
        tpm_limit: m.tpm_limit,
        max_output_tokens: m.max_output_tokens,
        max_concurrency: m.max_concurrency,
        context_tokens: m.context_tokens,
        key: m.key.clone(),
        ..Default::default()
    }
}

fn member_from_proto(m: pb::Member) -> Member {
    let status = match pb::MemberStatus::try_from(m.status) {
        Ok(pb::MemberStatus::Inactive) => Status::Inactive,
        Ok(pb::MemberStatus::Draining) => Status::Draining,
        _ => Status::Active,
    };
    Member {
        provider: m.provider,
        model: m.upstream_model,
        weight: m.weight.max(1),
        priority: m.priority,
        status,
        rpm_limit: m.rpm_limit,
        tpm_limit: m.tpm_limit,
        max_output_tokens: m.max_output_tokens,
        max_concurrency: m.max_concurrency,
        context_tokens: m.context_tokens,
        key: m.key,
    }
}

fn route_to_proto(r: &Route) -> pb::Route {
    use pb::route_tier::Target;
    pb::Route {
        name: r.name.clone(),
        tiers: r
            .tiers
            .iter()
            .map(|t| pb::RouteTier {
                target: match (&t.pool, &t.direct) {
                    (Some(p), _) => Some(Target::Pool(p.clone())),
                    (None, Some(d)) => Some(Target::Direct(d.clone())),
                    (None, None) => None,
                },
                backup: t.backup,
                when: t.when.map(|c| pb::TierCondition {
                    images: c.images,
                    reasoning: c.reasoning,
                    tools: c.tools,
                    min_prompt_tokens: c.min_prompt_tokens,
                }),
            })
            .collect(),
        enabled: Some(r.enabled),
        description: r.description.clone(),
        ..Default::default()
    }
}

fn route_from_proto(r: pb::Route) -> Route {
    use pb::route_tier::Target;
    Route {
        name: r.name,
        tiers: r
            .tiers
            .into_iter()
            .map(|t| {
                let (pool, direct) = match t.target {
                    Some(Target::Pool(p)) => (Some(p), None),
                    Some(Target::Direct(d)) => (None, Some(d)),
                    None => (None, None),
                };
                Tier {
                    pool,
                    direct,
                    backup: t.backup,
                    // A condition that asks nothing is left out.
                    when: t
                        .when
                        .map(|c| Condition {
                            images: c.images,
                            reasoning: c.reasoning,
                            tools: c.tools,
                            min_prompt_tokens: c.min_prompt_tokens,
                        })
                        .filter(|c| *c != Condition::default()),
                }
            })
            .collect(),
        enabled: r.enabled.unwrap_or(true),
        description: r.description,
    }
}
