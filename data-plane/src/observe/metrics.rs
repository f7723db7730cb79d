//! The data plane's Prometheus metrics (names in `switchyard_shared::metrics::names`).
//!
//! Counters and histograms are updated when a request ends, from its
//! attempt record; gauges of state (members, config, fleet) are read at
//! scrape time, so the request path pays nothing for them.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use switchyard_proto::v1 as pb;
use switchyard_shared::metrics::AtomicHistogram as Histogram;
pub use switchyard_shared::metrics::code_name;
use switchyard_shared::metrics::names as n;
use switchyard_shared::metrics::{LabelCap, durations, tokens};

use super::meters::MemberMeters;
pub use super::meters::{AttemptWatch, Inflight};
pub use crate::model::outcome_name;
use crate::model::{is_direct, reached};

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

pub struct Metrics {
    server_duration: Histograms<n::ServerCall>,
    ttft: Histograms<n::ServerCall>,
    pub(super) client_duration: Histograms<n::ClientCall>,
    pub(super) token_usage: Histograms<n::Tokens>,
    requests: Family<n::Request, Counter>,
    caller_requests: Family<n::CallerRequest, Counter>,
    caller_tokens: Family<n::CallerTokens, Counter>,
    /// Refused authentications (the access filter counts them).
    pub auth_failures: Counter,
    /// Stored snapshots refused (config sync counts them).
    pub config_rejected: Family<n::Reason, Counter>,
    pub(super) attempts: Family<n::Attempt, Counter>,
    failovers: Family<n::Pool, Counter>,
    benches: Family<n::Member, Counter>,
    usage_missing: Family<n::Member, Counter>,
    probes: Family<n::MemberResult, Counter>,
    admissions_waited: Family<n::Pool, Counter>,
    admissions_refused: Family<n::Pool, Counter>,
    inflight: Gauge,
    pub(super) member_inflight: Family<n::Member, Gauge>,
    pub(crate) redis: Histograms<n::RedisCall>,
    pub(crate) stats_flushes: Family<n::Outcome, Counter>,
    /// The HTTP door's connections: closed by the worker, and open now.
    pub http_closed: Family<n::Reason, Counter>,
    pub http_open: Gauge,
    /// Caller-chosen names (models asked for, direct `provider/model`s).
    names: LabelCap,
    /// Callers' names (configured, but capped all the same).
    callers: LabelCap,
    /// What the scrape-time gauges read, once the worker is wired.
    live: Arc<OnceLock<Box<dyn Scraped>>>,
    /// pool → member → that member's series handles.
    meters: std::sync::RwLock<HashMap<String, HashMap<String, MemberMeters>>>,
}

/// The worker's state as the scrape reads it (the `gauges` module): metrics
/// record, the stages' state is read only at scrape time, through this.
pub trait Scraped: Send + Sync + std::fmt::Debug {
    /// Whether `model` names a configured pool or route (a label kept as
    /// is; anything else is capped).
    fn is_configured(&self, model: &str) -> bool;
    /// The gauges of the worker's state, now.
    fn encode(&self, encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error>;
}

/// Gauges read from the worker's state at scrape time.
#[derive(Debug)]
struct StateCollector {
    live: Arc<OnceLock<Box<dyn Scraped>>>,
}

impl Collector for StateCollector {
    fn encode(&self, encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        match self.live.get() {
            Some(live) => live.encode(encoder),
            None => Ok(()),
        }
    }
}

/// Most distinct caller-chosen label values (then `other`).
const MAX_CALLER_LABELS: usize = 1000;

impl Metrics {
    /// Registers every data-plane metric in `registry`.
    pub fn register(registry: &mut Registry) -> Arc<Self> {
        let m = Self {
            server_duration: Family::new_with_constructor(durations),
            ttft: Family::new_with_constructor(durations),
            client_duration: Family::new_with_constructor(durations),
            token_usage: Family::new_with_constructor(tokens),
            requests: Family::default(),
            caller_requests: Family::default(),
            caller_tokens: Family::default(),
            auth_failures: Counter::default(),
            config_rejected: Family::default(),
            attempts: Family::default(),
            failovers: Family::default(),
            benches: Family::default(),
            usage_missing: Family::default(),
            probes: Family::default(),
            admissions_waited: Family::default(),
            admissions_refused: Family::default(),
            inflight: Gauge::default(),
            member_inflight: Family::default(),
            redis: Family::new_with_constructor(durations),
            stats_flushes: Family::default(),
            http_closed: Family::default(),
            http_open: Gauge::default(),
            names: LabelCap::new(MAX_CALLER_LABELS),
            callers: LabelCap::new(MAX_CALLER_LABELS),
            live: Arc::new(OnceLock::new()),
            meters: std::sync::RwLock::new(HashMap::new()),
        };
        registry.register(
            n::GENAI_SERVER_REQUEST_DURATION,
            "Inference RPCs, end to end (streams until their last event), by the virtual model asked for",
            m.server_duration.clone(),
        );
        registry.register(
            n::GENAI_SERVER_TIME_TO_FIRST_TOKEN,
            "Streaming RPCs: until the first chunk is handed to the caller",
            m.ttft.clone(),
        );
        registry.register(
            n::GENAI_CLIENT_OPERATION_DURATION,
            "Attempts at an upstream (a stream's: until its first chunk); provider is the provider's name in Switchyard",
            m.client_duration.clone(),
        );
        registry.register(
            n::GENAI_CLIENT_TOKEN_USAGE,
            "Tokens of served requests, by type, as the upstream reported them",
            m.token_usage.clone(),
        );
        registry.register(
            n::REQUESTS,
            "Inference RPCs by virtual model and final gRPC status",
            m.requests.clone(),
        );
        registry.register(
            n::ATTEMPTS,
            "Attempts and skips by pool, member and outcome",
            m.attempts.clone(),
        );
        registry.register(
            n::FAILOVERS,
            "Requests moving on from a member that failed, by the pool it failed in",
            m.failovers.clone(),
        );
        registry.register(
            n::MEMBER_BENCHES,
            "Members this worker benched",
            m.benches.clone(),
        );
        registry.register(
            n::USAGE_MISSING,
            "Served answers that reported no usage, charged their upper bound (prompt estimate + the member's max output)",
            m.usage_missing.clone(),
        );
        registry.register(
            n::PROBES,
            "Probes of benched members this worker made, by result",
            m.probes.clone(),
        );
        registry.register(
            n::ADMISSIONS_WAITED,
            "Requests that found every member at its concurrency cap and joined their pool's admission queue",
            m.admissions_waited.clone(),
        );
        registry.register(
            n::ADMISSIONS_REFUSED,
            "Requests refused a slot (RESOURCE_EXHAUSTED): their pool's admission queue was full, or no slot came free within their deadline",
            m.admissions_refused.clone(),
        );
        registry.register(
            n::CALLER_REQUESTS,
            "Inference RPCs by caller and final gRPC status",
            m.caller_requests.clone(),
        );
        registry.register(
            n::CALLER_TOKENS,
            "Tokens of served requests by caller and type",
            m.caller_tokens.clone(),
        );
        registry.register(
            n::AUTH_FAILURES,
            "Inference calls refused for a missing, malformed, unknown or revoked key",
            m.auth_failures.clone(),
        );
        registry.register(
            n::CONFIG_REJECTED,
            "Stored config snapshots this worker refused (it kept its last good config), by reason",
            m.config_rejected.clone(),
        );
        registry.register(
            n::INFLIGHT,
            "Inference RPCs in flight on this worker",
            m.inflight.clone(),
        );
        registry.register(
            n::MEMBER_INFLIGHT,
            "Attempts and committed streams in flight per member on this worker",
            m.member_inflight.clone(),
        );
        registry.register(
            n::REDIS_CALL_DURATION,
            "Calls to the fleet's shared state in Redis, by operation and result",
            m.redis.clone(),
        );
        registry.register(
            n::STATS_FLUSHES,
            "Pool-statistics flushes into the fleet's store, by result",
            m.stats_flushes.clone(),
        );
        registry.register(
            n::HTTP_CONNECTIONS_CLOSED,
            "HTTP door connections the worker closed: over --http-max-connections (limit), no whole request head within --http-header-timeout-ms (header_timeout), no request for --http-idle-timeout-ms (idle)",
            m.http_closed.clone(),
        );
        registry.register(
            n::HTTP_CONNECTIONS_OPEN,
            "HTTP door connections open on this worker",
            m.http_open.clone(),
        );
        let m = Arc::new(m);
        registry.register_collector(Box::new(StateCollector {
            live: m.live.clone(),
        }));
        m
    }

    /// Wires the scrape-time gauges to the worker's state (once).
    pub fn attach(&self, live: impl Scraped + 'static) {
        let _ = self.live.set(Box::new(live));
    }

    /// The model asked for, as a label: a configured route or pool by its
    /// name; anything else (a direct `provider/model`, an unknown or invalid
    /// name: the caller chose it) capped.
    pub fn model_label(&self, model: &str) -> String {
        let configured = self.live.get().is_some_and(|l| l.is_configured(model));
        if configured {
            model.to_owned()
        } else {
            self.names.label(model)
        }
    }

    /// A name seen in an attempt of `pool`: configured pools, members and
    /// models are bounded by config (and pool names never hold a '/'); in a
    /// direct `provider/model` call the caller chose them, so they are capped.
    fn bounded(&self, pool: &str, name: &str) -> String {
        if is_direct(pool) {
            self.names.label(name)
        } else {
            name.to_owned()
        }
    }

    /// An RPC started: counted in flight until the guard is finished or dropped.
    pub fn request_started(&self) -> Inflight {
        self.inflight.inc();
        Inflight(self.inflight.clone())
    }

    /// A committed stream on a member: in flight until dropped.
    pub fn member_busy(&self, c: &crate::model::Candidate, pool: &str) -> Inflight {
        let g = self.with_meters(Who::of(c, pool), |m| m.busy(&self.member_inflight));
        g.inc();
        Inflight(g)
    }

    pub fn benched(&self, pool: &str, member: &str) {
        self.benches
            .get_or_create(&n::Member {
                pool: self.bounded(pool, pool),
                member: self.bounded(pool, member),
            })
            .inc();
    }

    /// A request joined its pool's admission queue (`waited`), or was refused a slot.
    pub fn admission(&self, pool: &str, waited: bool) {
        let family = if waited {
            &self.admissions_waited
        } else {
            &self.admissions_refused
        };
        family
            .get_or_create(&n::Pool {
                pool: self.bounded(pool, pool),
            })
            .inc();
    }

    /// An answer came without usage: it is charged its upper bound.
    pub fn usage_missing(&self, pool: &str, member: &str) {
        self.usage_missing
            .get_or_create(&n::Member {
                pool: self.bounded(pool, pool),
                member: self.bounded(pool, member),
            })
            .inc();
    }

    pub fn probed(&self, pool: &str, member: &str, ok: bool) {
        self.probes
            .get_or_create(&n::MemberResult {
                pool: self.bounded(pool, pool),
                member: self.bounded(pool, member),
                result: if ok { "ok" } else { "failed" },
            })
            .inc();
    }

    /// An attempt started: the member is busy until it is done; an attempt
    /// dropped before it is done (the caller left) counts as cancelled.
    pub fn attempt_started(&self, c: &crate::model::Candidate, pool: &str) -> AttemptWatch {
        let (busy, cancelled) = self.with_meters(Who::of(c, pool), |m| {
            (m.busy(&self.member_inflight), m.cancelled(&self.attempts))
        });
        busy.inc();
        AttemptWatch {
            busy: Inflight(busy),
            cancelled: Some(cancelled),
        }
    }

    /// Everything a finished request adds up to; `model` is
    /// [`Self::model_label`] of the model asked for.
    pub fn finish(&self, f: &super::Finished<'_>, model: String) {
        let status = code_name(f.code);
        let response_model = f
            .served
            .map(|s| self.bounded(&s.pool, &s.upstream_model))
            .unwrap_or_default();
        let server = n::ServerCall {
            gen_ai_operation_name: f.operation.name(),
            gen_ai_request_model: model.clone(),
            gen_ai_response_model: response_model,
            error_type: if f.code == tonic::Code::Ok {
                ""
            } else {
                status
            },
        };
        self.server_duration
            .get_or_create(&server)
            .observe(f.elapsed.as_secs_f64());
        if let Some(t) = f.ttft {
            self.ttft.get_or_create(&server).observe(t.as_secs_f64());
        }
        self.requests
            .get_or_create(&n::Request { model, status })
            .inc();
        // Callers are configured (a bounded set); the cap guards the rest.
        let caller = self.callers.label(f.caller);
        self.caller_requests
            .get_or_create(&n::CallerRequest {
                caller: caller.clone(),
                status,
            })
            .inc();
        if let Some(u) = f.usage {
            for (kind, count) in [
                (n::TokenType::input, u.input_tokens),
                (n::TokenType::output, u.output_tokens),
            ] {
                self.caller_tokens
                    .get_or_create(&n::CallerTokens {
                        caller: caller.clone(),
                        gen_ai_token_type: kind,
                    })
                    .inc_by(u64::from(count));
            }
        }
        self.attempts(f.attempts, f.operation);
        if let (Some(s), Some(u)) = (f.served, f.usage) {
            let who = Who {
                pool: &s.pool,
                member: &s.member_id,
                provider: &s.provider,
                upstream_model: &s.upstream_model,
            };
            self.with_meters(who, |m| m.tokens(&self.token_usage, u, f.operation));
        }
    }

    /// A request's attempts (and skips), also of a request the caller left
    /// midway: counters, client durations, failovers.
    pub fn attempts(&self, attempts: &[pb::Attempt], op: super::Operation) {
        // The last member that failed: moving on from it to another is a failover.
        let mut last_failed: Option<&pb::Attempt> = None;
        for a in attempts {
            if reached(a.outcome) {
                if let Some(failed) = last_failed.take()
                    && failed.member_id != a.member_id
                {
                    self.failovers
                        .get_or_create(&n::Pool {
                            pool: self.bounded(&failed.pool, &failed.pool),
                        })
                        .inc();
                }
                if a.outcome != pb::AttemptOutcome::Ok as i32 {
                    last_failed = Some(a);
                }
            }
            let who = Who {
                pool: &a.pool,
                member: &a.member_id,
                provider: &a.provider,
                upstream_model: &a.upstream_model,
            };
            self.with_meters(who, |m| {
                m.attempt(&self.attempts, &self.client_duration, a, op);
            });
        }
    }

    /// Runs `f` on a member's series handles. A configured member's are
    /// made on first use and cached (an attempt then costs map lookups by
    /// `&str` and atomic adds); a direct `provider/model` call's names are
    /// the caller's, so they go through the cap and are not cached.
    fn with_meters<R>(&self, who: Who<'_>, f: impl Fn(&MemberMeters) -> R) -> R {
        if is_direct(who.pool) {
            let capped = |v: &str| self.names.label(v);
            return f(&MemberMeters::new(
                &capped(who.pool),
                &capped(who.member),
                who.provider,
                &capped(who.upstream_model),
            ));
        }
        {
            let cache = self
                .meters
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            // A member whose provider or model changed gets new handles.
            if let Some(m) = cache
                .get(who.pool)
                .and_then(|p| p.get(who.member))
                .filter(|m| m.provider == who.provider && m.upstream_model == who.upstream_model)
            {
                return f(m);
            }
        }
        let m = MemberMeters::new(who.pool, who.member, who.provider, who.upstream_model);
        let r = f(&m);
        self.meters
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(who.pool.to_owned())
            .or_default()
            .insert(who.member.to_owned(), m);
        r
    }
}

/// Which member an observation is about.
#[derive(Clone, Copy)]
struct Who<'a> {
    pool: &'a str,
    member: &'a str,
    provider: &'a str,
    upstream_model: &'a str,
}

impl<'a> Who<'a> {
    fn of(c: &'a crate::model::Candidate, pool: &'a str) -> Self {
        Self {
            pool,
            member: &c.member_id,
            provider: &c.provider,
            upstream_model: &c.upstream_model,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::Finished;

    fn finished<'a>(model: &'a str, attempts: &'a [pb::Attempt]) -> Finished<'a> {
        Finished {
            operation: crate::observe::Operation::Chat,
            model,
            caller: "anonymous",
            code: tonic::Code::NotFound,
            elapsed: std::time::Duration::from_millis(1),
            ttft: None,
            served: None,
            usage: None,
            attempts,
        }
    }

    #[test]
    fn names_a_caller_chooses_cannot_grow_the_series_without_bound() {
        let mut registry = Registry::default();
        let m = Metrics::register(&mut registry);
        for i in 0..(MAX_CALLER_LABELS + 50) {
            let name = format!("nope-{i}");
            m.finish(&finished(&name, &[]), m.model_label(&name));
        }
        let long = "x".repeat(4096);
        m.finish(&finished(&long, &[]), m.model_label(&long));
        // A direct provider/model call: pool, member and model are the caller's.
        let direct = [pb::Attempt {
            pool: "up/some-model".into(),
            member_id: "up/some-model".into(),
            provider: "up".into(),
            upstream_model: "some-model".into(),
            outcome: pb::AttemptOutcome::ModelNotFound.into(),
            ..Default::default()
        }];
        m.finish(
            &finished("up/some-model", &direct),
            m.model_label("up/some-model"),
        );
        let text = switchyard_shared::metrics::render(&registry);
        let series = text
            .lines()
            .filter(|l| l.starts_with("switchyard_requests_total{"))
            .count();
        assert_eq!(series, MAX_CALLER_LABELS + 1, "the cap, plus `other`");
        assert!(text.contains(r#"model="other""#));
        assert!(
            !text.contains(&"x".repeat(200)),
            "a long name is never a label"
        );
        assert!(
            text.contains(r#"gen_ai_request_model="other""#),
            "a direct call's upstream model is capped like its name"
        );
    }
}
