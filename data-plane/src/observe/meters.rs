//! Series handles per configured member, made on first use, so an attempt
//! costs two map lookups by `&str` and atomic adds (no label allocation);
//! and the guards that keep in-flight gauges true on every path.

use std::sync::OnceLock;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use switchyard_proto::v1 as pb;
use switchyard_shared::metrics::AtomicHistogram as Histogram;
use switchyard_shared::metrics::names::{self as n, TokenType};

use prometheus_client::metrics::family::Family;

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;
use super::Operation;
use crate::model::{outcome_name, reached};

/// Every outcome's index is its enum value; room to spare.
const OUTCOMES: usize = 16;

/// One configured member's series handles, made on first use.
pub(super) struct MemberMeters {
    pub(super) provider: String,
    pub(super) upstream_model: String,
    pub(super) pool: String,
    pub(super) member: String,
    pub(super) attempts: [OnceLock<Counter>; OUTCOMES],
    /// Client operation duration by operation and outcome (ok: no error type).
    pub(super) durations: [[OnceLock<Histogram>; OUTCOMES]; 2],
    /// Input and output tokens of what it served, by operation.
    pub(super) tokens: [[OnceLock<Histogram>; 2]; 2],
    /// Its attempts in flight on this worker, and those the caller cut.
    pub(super) busy: OnceLock<Gauge>,
    pub(super) cancelled: OnceLock<Counter>,
}

impl MemberMeters {
    pub(super) fn new(pool: &str, member: &str, provider: &str, upstream_model: &str) -> Self {
        Self {
            provider: provider.to_owned(),
            upstream_model: upstream_model.to_owned(),
            pool: pool.to_owned(),
            member: member.to_owned(),
            attempts: Default::default(),
            durations: Default::default(),
            tokens: Default::default(),
            busy: OnceLock::new(),
            cancelled: OnceLock::new(),
        }
    }

    /// Its in-flight gauge.
    pub(super) fn busy(&self, member_inflight: &Family<n::Member, Gauge>) -> Gauge {
        self.busy
            .get_or_init(|| {
                member_inflight.get_or_create_owned(&n::Member {
                    pool: self.pool.clone(),
                    member: self.member.clone(),
                })
            })
            .clone()
    }

    /// Its counter of attempts the caller cut short.
    pub(super) fn cancelled(&self, attempts: &Family<n::Attempt, Counter>) -> Counter {
        self.cancelled
            .get_or_init(|| {
                attempts.get_or_create_owned(&n::Attempt {
                    pool: self.pool.clone(),
                    member: self.member.clone(),
                    outcome: "cancelled",
                })
            })
            .clone()
    }

    pub(super) fn tokens(
        &self,
        token_usage: &Histograms<n::Tokens>,
        u: crate::upstream::Usage,
        op: Operation,
    ) {
        for (i, kind, count) in [
            (0, TokenType::input, u.input_tokens),
            (1, TokenType::output, u.output_tokens),
        ] {
            self.tokens[op.index()][i]
                .get_or_init(|| {
                    token_usage.get_or_create_owned(&n::Tokens {
                        gen_ai_operation_name: op.name(),
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

    pub(super) fn attempt(
        &self,
        attempts: &Family<n::Attempt, Counter>,
        client_duration: &Histograms<n::ClientCall>,
        a: &pb::Attempt,
        op: Operation,
    ) {
        let Some(i) = usize::try_from(a.outcome).ok().filter(|i| *i < OUTCOMES) else {
            return;
        };
        let outcome = outcome_name(a.outcome);
        self.attempts[i]
            .get_or_init(|| {
                attempts.get_or_create_owned(&n::Attempt {
                    pool: self.pool.clone(),
                    member: self.member.clone(),
                    outcome,
                })
            })
            .inc();
        if reached(a.outcome) {
            let ok = a.outcome == pb::AttemptOutcome::Ok as i32;
            self.durations[op.index()][i]
                .get_or_init(|| {
                    client_duration.get_or_create_owned(&n::ClientCall {
                        gen_ai_operation_name: op.name(),
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
    pub(super) busy: Inflight,
    /// Counted if the attempt is dropped before it is done.
    pub(super) cancelled: Option<Counter>,
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
pub struct Inflight(pub(super) Gauge);

impl Drop for Inflight {
    fn drop(&mut self) {
        self.0.dec();
    }
}
