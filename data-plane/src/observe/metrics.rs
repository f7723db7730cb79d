//! The data plane's Prometheus metrics (names in `switchyard_shared::metrics::names`).
//!
//! Counters and histograms are updated when a request ends, from its
//! attempt record; gauges of state (members, config, fleet) are read at
//! scrape time, so the request path pays nothing for them.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use switchyard_proto::v1 as pb;
use switchyard_shared::metrics::AtomicHistogram as Histogram;
pub use switchyard_shared::metrics::code_name;
use switchyard_shared::metrics::names::{self as n, TokenType};
use switchyard_shared::metrics::{LabelCap, durations, tokens};

pub use super::gauges::Live;
use super::meters::MemberMeters;
pub use super::meters::{AttemptWatch, Inflight};
pub use crate::model::outcome_name;
use crate::model::reached;

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

pub struct Metrics {
    server_duration: Histograms<n::ServerCall>,
    ttft: Histograms<n::ServerCall>,
    pub(super) client_duration: Histograms<n::ClientCall>,
    pub(super) token_usage: Histograms<n::Tokens>,
    requests: Family<n::Request, Counter>,
    pub(super) attempts: Family<n::Attempt, Counter>,
    failovers: Family<n::Pool, Counter>,
    benches: Family<n::Member, Counter>,
    probes: Family<n::MemberResult, Counter>,
    inflight: Gauge,
    pub(super) member_inflight: Family<n::Member, Gauge>,
    pub(crate) redis: Histograms<n::RedisCall>,
    pub(crate) stats_flushes: Family<n::Outcome, Counter>,
    /// Caller-chosen names (models asked for, direct `provider/model`s).
    names: LabelCap,
    /// What the scrape-time gauges read, once the worker is wired.
    live: Arc<OnceLock<Live>>,
    /// pool → member → that member's series handles.
    meters: std::sync::RwLock<HashMap<String, HashMap<String, MemberMeters>>>,
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
            attempts: Family::default(),
            failovers: Family::default(),
            benches: Family::default(),
            probes: Family::default(),
            inflight: Gauge::default(),
            member_inflight: Family::default(),
            redis: Family::new_with_constructor(durations),
            stats_flushes: Family::default(),
            names: LabelCap::new(MAX_CALLER_LABELS),
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
            n::PROBES,
            "Probes of benched members this worker made, by result",
            m.probes.clone(),
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
        let m = Arc::new(m);
        registry.register_collector(Box::new(super::gauges::StateCollector {
            live: m.live.clone(),
        }));
        m
    }

    /// Wires the scrape-time gauges to the worker's state (once).
    pub fn attach(&self, live: Live) {
        let _ = self.live.set(live);
    }

    /// The model asked for, as a label: a configured route or pool by its
    /// name; anything else (a direct `provider/model`, an unknown or invalid
    /// name: the caller chose it) capped.
    pub fn model_label(&self, model: &str) -> String {
        let configured = self
            .live
            .get()
            .is_some_and(|l| l.catalog.load().is_configured(model));
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
        if pool.contains('/') {
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

    /// An attempt (or a committed stream) on a member: in flight until dropped.
    pub fn member_busy(&self, pool: &str, member: &str) -> Inflight {
        let g = self.member_inflight.get_or_create_owned(&n::Member {
            pool: self.bounded(pool, pool),
            member: self.bounded(pool, member),
        });
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
        let who = (pool, &*c.member_id, &*c.provider, &*c.upstream_model);
        let (busy, cancelled) = self
            .with_meters(who, |m| {
                let busy = m
                    .busy
                    .get_or_init(|| self.member_inflight.get_or_create_owned(&m.labels()))
                    .clone();
                let cancelled = m
                    .cancelled
                    .get_or_init(|| {
                        self.attempts.get_or_create_owned(&n::Attempt {
                            pool: m.pool.clone(),
                            member: m.member.clone(),
                            outcome: "cancelled",
                        })
                    })
                    .clone();
                (busy, cancelled)
            })
            .unwrap_or_else(|| {
                let pool_label = self.bounded(pool, pool);
                let member = self.bounded(pool, &c.member_id);
                (
                    self.member_inflight.get_or_create_owned(&n::Member {
                        pool: pool_label.clone(),
                        member: member.clone(),
                    }),
                    self.attempts.get_or_create_owned(&n::Attempt {
                        pool: pool_label,
                        member,
                        outcome: "cancelled",
                    }),
                )
            });
        busy.inc();
        AttemptWatch {
            busy: Inflight(busy),
            cancelled: Some(cancelled),
        }
    }

    /// Everything a finished request adds up to.
    pub fn finish(&self, f: &super::Finished<'_>) {
        let model = self.model_label(f.model);
        let status = code_name(f.code);
        let response_model = f
            .served
            .map(|s| self.bounded(&s.pool, &s.upstream_model))
            .unwrap_or_default();
        let server = n::ServerCall {
            gen_ai_operation_name: n::OPERATION_CHAT,
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
        self.attempts(f.attempts);
        if let (Some(s), Some(u)) = (f.served, f.usage) {
            let who = (&*s.pool, &*s.member_id, &*s.provider, &*s.upstream_model);
            if self
                .with_meters(who, |m| m.tokens(&self.token_usage, u))
                .is_none()
            {
                for (kind, count) in [
                    (TokenType::input, u.input_tokens),
                    (TokenType::output, u.output_tokens),
                ] {
                    self.token_usage
                        .get_or_create(&n::Tokens {
                            gen_ai_operation_name: n::OPERATION_CHAT,
                            gen_ai_provider_name: s.provider.clone(),
                            gen_ai_request_model: self.bounded(&s.pool, &s.upstream_model),
                            gen_ai_response_model: self.bounded(&s.pool, &s.upstream_model),
                            gen_ai_token_type: kind,
                            pool: self.bounded(&s.pool, &s.pool),
                        })
                        .observe(f64::from(count));
                }
            }
        }
    }

    /// A request's attempts (and skips), also of a request the caller left
    /// midway: counters, client durations, failovers.
    pub fn attempts(&self, attempts: &[pb::Attempt]) {
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
            // Configured members: cached handles (no allocation per attempt).
            let who = (&*a.pool, &*a.member_id, &*a.provider, &*a.upstream_model);
            if self
                .with_meters(who, |m| m.attempt(&self.attempts, &self.client_duration, a))
                .is_none()
            {
                self.attempt_uncached(a);
            }
        }
    }

    /// Runs `f` on the cached handles of a member (pool, member, provider,
    /// upstream model), made on first use; None for a direct `provider/model`
    /// call (its names are the caller's: they go through the cap, uncached).
    fn with_meters<R>(
        &self,
        who: (&str, &str, &str, &str),
        f: impl Fn(&MemberMeters) -> R,
    ) -> Option<R> {
        let (pool, member, provider, upstream_model) = who;
        if pool.contains('/') {
            return None;
        }
        {
            let cache = self
                .meters
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            // A member whose provider or model changed gets new handles.
            if let Some(m) = cache
                .get(pool)
                .and_then(|p| p.get(member))
                .filter(|m| m.provider == provider && m.upstream_model == upstream_model)
            {
                return Some(f(m));
            }
        }
        let m = MemberMeters {
            provider: provider.to_owned(),
            upstream_model: upstream_model.to_owned(),
            pool: pool.to_owned(),
            member: member.to_owned(),
            attempts: Default::default(),
            durations: Default::default(),
            tokens: Default::default(),
            busy: OnceLock::new(),
            cancelled: OnceLock::new(),
        };
        let r = f(&m);
        self.meters
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(pool.to_owned())
            .or_default()
            .insert(member.to_owned(), m);
        Some(r)
    }

    /// An attempt of a direct call, labelled through the cap.
    fn attempt_uncached(&self, a: &pb::Attempt) {
        let outcome = outcome_name(a.outcome);
        let pool = self.bounded(&a.pool, &a.pool);
        if reached(a.outcome) {
            let ok = a.outcome == pb::AttemptOutcome::Ok as i32;
            let upstream_model = self.bounded(&a.pool, &a.upstream_model);
            self.client_duration
                .get_or_create(&n::ClientCall {
                    gen_ai_operation_name: n::OPERATION_CHAT,
                    gen_ai_provider_name: a.provider.clone(),
                    gen_ai_response_model: if ok {
                        upstream_model.clone()
                    } else {
                        String::new()
                    },
                    gen_ai_request_model: upstream_model,
                    error_type: if ok { "" } else { outcome },
                })
                .observe(Duration::from_micros(a.duration_us).as_secs_f64());
        }
        self.attempts
            .get_or_create(&n::Attempt {
                member: self.bounded(&a.pool, &a.member_id),
                pool,
                outcome,
            })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::Finished;

    fn finished<'a>(model: &'a str, attempts: &'a [pb::Attempt]) -> Finished<'a> {
        Finished {
            model,
            code: tonic::Code::NotFound,
            elapsed: Duration::from_millis(1),
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
            m.finish(&finished(&format!("nope-{i}"), &[]));
        }
        m.finish(&finished(&"x".repeat(4096), &[]));
        // A direct provider/model call: pool, member and model are the caller's.
        let direct = [pb::Attempt {
            pool: "up/some-model".into(),
            member_id: "up/some-model".into(),
            provider: "up".into(),
            upstream_model: "some-model".into(),
            outcome: pb::AttemptOutcome::ModelNotFound.into(),
            ..Default::default()
        }];
        m.finish(&finished("up/some-model", &direct));
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
