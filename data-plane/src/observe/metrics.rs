//! The data plane's Prometheus metrics (names in `switchyard_shared::metrics::names`).
//!
//! Counters and histograms are updated when a request ends, from its
//! attempt record; gauges of state (members, config, fleet) are read at
//! scrape time, so the request path pays nothing for them.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use arc_swap::ArcSwap;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric as _};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::registry::Registry;
use switchyard_proto::v1 as pb;
use switchyard_shared::metrics::AtomicHistogram as Histogram;
pub use switchyard_shared::metrics::code_name;
use switchyard_shared::metrics::names::{self as n, TokenType};
use switchyard_shared::metrics::{LabelCap, durations, tokens};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::catalog::Catalog;
use crate::fleet::{Fleet, LinkState, State};
use crate::sync::SyncState;

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// The GenAI operation every inference RPC is.
pub const CHAT: &str = "chat";

pub struct Metrics {
    server_duration: Histograms<n::ServerCall>,
    ttft: Histograms<n::ServerCall>,
    client_duration: Histograms<n::ClientCall>,
    token_usage: Histograms<n::Tokens>,
    requests: Family<n::Request, Counter>,
    attempts: Family<n::Attempt, Counter>,
    failovers: Family<n::Pool, Counter>,
    benches: Family<n::Member, Counter>,
    probes: Family<n::MemberResult, Counter>,
    inflight: Gauge,
    member_inflight: Family<n::Member, Gauge>,
    pub(crate) redis: Histograms<n::RedisCall>,
    pub(crate) stats_flushes: Family<n::Outcome, Counter>,
    /// Caller-chosen names (models asked for, direct `provider/model`s).
    names: LabelCap,
    /// What the scrape-time gauges read, once the worker is wired.
    live: Arc<OnceLock<Live>>,
    /// pool → member → that member's series handles.
    meters: std::sync::RwLock<HashMap<String, HashMap<String, MemberMeters>>>,
}

/// The worker's state the scrape reads.
pub struct Live {
    pub catalog: Arc<ArcSwap<Catalog>>,
    pub fleet: Fleet,
    pub sync: watch::Receiver<SyncState>,
    /// When the catalog last changed.
    pub applied: Arc<ArcSwap<Instant>>,
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
        registry.register_collector(Box::new(StateCollector {
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
            gen_ai_operation_name: CHAT,
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
            if self.with_meters(who, |m| m.tokens(self, u)).is_none() {
                for (kind, count) in [
                    (TokenType::input, u.input_tokens),
                    (TokenType::output, u.output_tokens),
                ] {
                    self.token_usage
                        .get_or_create(&n::Tokens {
                            gen_ai_operation_name: CHAT,
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
            if crate::tried::reached(a.outcome) {
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
            if self.with_meters(who, |m| m.attempt(self, a)).is_none() {
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
        if crate::tried::reached(a.outcome) {
            let ok = a.outcome == pb::AttemptOutcome::Ok as i32;
            let upstream_model = self.bounded(&a.pool, &a.upstream_model);
            self.client_duration
                .get_or_create(&n::ClientCall {
                    gen_ai_operation_name: CHAT,
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

/// Every outcome's index is its enum value; room to spare.
const OUTCOMES: usize = 16;

/// One configured member's series handles, made on first use.
struct MemberMeters {
    provider: String,
    upstream_model: String,
    pool: String,
    member: String,
    attempts: [OnceLock<Counter>; OUTCOMES],
    /// Client operation duration by outcome (ok: no error type).
    durations: [OnceLock<Histogram>; OUTCOMES],
    /// Input and output tokens of what it served.
    tokens: [OnceLock<Histogram>; 2],
    /// Its attempts in flight on this worker, and those the caller cut.
    busy: OnceLock<Gauge>,
    cancelled: OnceLock<Counter>,
}

impl MemberMeters {
    fn labels(&self) -> n::Member {
        n::Member {
            pool: self.pool.clone(),
            member: self.member.clone(),
        }
    }

    fn tokens(&self, m: &Metrics, u: crate::upstream::Usage) {
        for (i, kind, count) in [
            (0, TokenType::input, u.input_tokens),
            (1, TokenType::output, u.output_tokens),
        ] {
            self.tokens[i]
                .get_or_init(|| {
                    m.token_usage.get_or_create_owned(&n::Tokens {
                        gen_ai_operation_name: CHAT,
                        gen_ai_provider_name: self.provider.clone(),
                        gen_ai_request_model: self.upstream_model.clone(),
                        gen_ai_response_model: self.upstream_model.clone(),
                        gen_ai_token_type: kind,
                        pool: self.pool.clone(),
                    })
                })
                .observe(f64::from(count));
        }
    }

    fn attempt(&self, m: &Metrics, a: &pb::Attempt) {
        let Some(i) = usize::try_from(a.outcome).ok().filter(|i| *i < OUTCOMES) else {
            return;
        };
        let outcome = outcome_name(a.outcome);
        self.attempts[i]
            .get_or_init(|| {
                m.attempts.get_or_create_owned(&n::Attempt {
                    pool: self.pool.clone(),
                    member: self.member.clone(),
                    outcome,
                })
            })
            .inc();
        if crate::tried::reached(a.outcome) {
            let ok = a.outcome == pb::AttemptOutcome::Ok as i32;
            self.durations[i]
                .get_or_init(|| {
                    m.client_duration.get_or_create_owned(&n::ClientCall {
                        gen_ai_operation_name: CHAT,
                        gen_ai_provider_name: self.provider.clone(),
                        gen_ai_request_model: self.upstream_model.clone(),
                        gen_ai_response_model: if ok {
                            self.upstream_model.clone()
                        } else {
                            String::new()
                        },
                        error_type: if ok { "" } else { outcome },
                    })
                })
                .observe(Duration::from_micros(a.duration_us).as_secs_f64());
        }
    }
}

/// One attempt in flight.
pub struct AttemptWatch {
    busy: Inflight,
    /// Counted if the attempt is dropped before it is done.
    cancelled: Option<Counter>,
}

impl AttemptWatch {
    /// The attempt ended (its outcome is counted with the request).
    pub fn done(mut self) {
        self.cancelled = None;
    }
}

impl Drop for AttemptWatch {
    fn drop(&mut self) {
        let _ = &self.busy;
        if let Some(c) = self.cancelled.take() {
            c.inc();
        }
    }
}

/// Decrements its gauge when dropped.
pub struct Inflight(Gauge);

impl Drop for Inflight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The label value of an attempt outcome: its enum name, lowercased, without the prefix.
pub fn outcome_name(outcome: i32) -> &'static str {
    use pb::AttemptOutcome as O;
    match O::try_from(outcome) {
        Ok(O::Ok) => "ok",
        Ok(O::Transient) => "transient",
        Ok(O::Permanent) => "permanent",
        Ok(O::ModelNotFound) => "model_not_found",
        Ok(O::SkippedBenched) => "skipped_benched",
        Ok(O::Deadline) => "deadline",
        Ok(O::SkippedQuota) => "skipped_quota",
        Ok(O::RateLimited) => "rate_limited",
        Ok(O::Auth) => "auth",
        Ok(O::ContextTooLong) => "context_too_long",
        Ok(O::BudgetRefused) => "budget_refused",
        Ok(O::Unspecified) | Err(_) => "unspecified",
    }
}

/// Gauges read from the worker's state at scrape time.
#[derive(Debug)]
struct StateCollector {
    live: Arc<OnceLock<Live>>,
}

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Live")
    }
}

impl Collector for StateCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let Some(live) = self.live.get() else {
            return Ok(());
        };
        let catalog = live.catalog.load();
        let gauge = |encoder: &mut DescriptorEncoder<'_>, name: &str, help: &str, v: f64| {
            let g = ConstGauge::new(v);
            let e = encoder.encode_descriptor(name, help, None, g.metric_type())?;
            g.encode(e)
        };
        #[allow(clippy::cast_precision_loss)]
        gauge(
            &mut encoder,
            n::CONFIG_REVISION,
            "The config revision this worker serves",
            catalog.revision as f64,
        )?;
        gauge(
            &mut encoder,
            n::CONFIG_AGE,
            "Seconds since this worker applied its last config change",
            live.applied.load().elapsed().as_secs_f64(),
        )?;
        gauge(
            &mut encoder,
            n::CONFIG_LIVE,
            "1 while the worker's config follows the store, 0 while stale or not loaded",
            if *live.sync.borrow() == SyncState::Live {
                1.0
            } else {
                0.0
            },
        )?;
        gauge(
            &mut encoder,
            n::FLEET_UP,
            "1 while the fleet's shared state (Redis) is reachable, 0 while degraded",
            if live.fleet.link().state() == LinkState::Up {
                1.0
            } else {
                0.0
            },
        )?;
        // Member state, one series per state so a panel can stack them.
        let table = live.fleet.table().load();
        let now = Instant::now();
        let states: Family<n::MemberState, Gauge> = Family::default();
        let (pools, _) = catalog.models();
        for p in &pools {
            for m in &p.members {
                let state = table.get(&m.member_id).map_or(State::Available, |e| {
                    e.state(now, p.policy.failure_threshold)
                });
                let current = match state {
                    State::Available => "available",
                    State::Benched { .. } => "benched",
                    State::HalfOpen | State::Probing => "probing",
                };
                for s in ["available", "benched", "probing"] {
                    states
                        .get_or_create(&n::MemberState {
                            pool: p.name.clone(),
                            member: m.member_id.clone(),
                            state: s,
                        })
                        .set(i64::from(s == current));
                }
            }
        }
        let e = encoder.encode_descriptor(
            n::MEMBER_STATE,
            "1 for the state each member is in (available, benched, probing), 0 for the others",
            None,
            states.metric_type(),
        )?;
        states.encode(e)
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
