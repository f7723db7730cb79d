//! What a member's failure means for the member, fleet-wide (ADR 004's
//! table). One home for it: a failed attempt before its stream or answer
//! is committed (failover) and a committed stream that broke or stalled
//! (the pump) are judged by the same rules. What the *request* does next
//! (retry, next member, stop) is the caller's business; this only benches
//! or counts.

use std::time::Duration;

use tokio::time::Instant;

use super::Rules;
use crate::fleet::{Fleet, ProbeHold};
use crate::model::{Candidate, Pool};
use crate::observe::metrics::Metrics;
use crate::upstream::ErrorClass;

/// The member's side of a failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// No health consequence: the fault is the request's (a 400 a caller
    /// can cause, a prompt too long, a model the member does not know) or
    /// the member keeps no health state (a direct call to a named model).
    Kept,
    /// A transient fault, counted toward the member's bench; `benched`
    /// when the member is benched now (by this one or before it).
    Counted { benched: bool },
    /// Benched at once for this long: it said it is rate-limited, or it
    /// refused its credential or account.
    Benched(Duration),
}

/// The rules and the state a verdict is carried out on.
pub(crate) struct Judge<'a> {
    pub fleet: &'a Fleet,
    pub metrics: &'a Metrics,
    pub rules: &'a Rules,
}

impl Judge<'_> {
    /// Judges `class` (the member's failure, with its retry hint) and
    /// carries the verdict out: fleet-wide health, the bench metric, a log
    /// line when the member is benched. A probe held for the member is
    /// settled by the same report.
    pub(crate) fn failed(
        &self,
        pool: &Pool,
        c: &Candidate,
        class: ErrorClass,
        retry_after: Option<Duration>,
        probe: Option<ProbeHold>,
    ) -> Verdict {
        if c.ephemeral {
            return Verdict::Kept;
        }
        let m = &c.member_id;
        // Only the failure that benches a member counts and logs a bench:
        // a hundred streams dying with it add one, not a hundred.
        match class {
            ErrorClass::Transient => {
                let r = self.fleet.failure(m, &pool.policy, retry_after, probe);
                if r.benched_it {
                    self.metrics.benched(&pool.name, m);
                    tracing::warn!(pool = %pool.name, member = %m, benches = r.entry.benches, "member benched");
                }
                Verdict::Counted {
                    benched: r.entry.benched_at(Instant::now()),
                }
            }
            ErrorClass::RateLimited => {
                // Benched at once, fleet-wide, for as long as it said.
                let d = retry_after.unwrap_or(self.rules.rate_limit_cooldown);
                if self.fleet.bench_for(m, d, probe).benched_it {
                    self.metrics.benched(&pool.name, m);
                    tracing::warn!(pool = %pool.name, member = %m, for_ms = d.as_millis() as u64, "member rate-limited: benched");
                }
                Verdict::Benched(d)
            }
            ErrorClass::AuthBilling(_) => {
                let d = self.rules.auth_cooldown;
                if self.fleet.bench_for(m, d, probe).benched_it {
                    self.metrics.benched(&pool.name, m);
                    tracing::warn!(pool = %pool.name, member = %m, for_ms = d.as_millis() as u64, "member refused its credential or account: benched");
                }
                Verdict::Benched(d)
            }
            // Said in a 400 a caller can cause, or the request's own fault:
            // never a bench. A probe held is released by its guard.
            ErrorClass::Declined(_)
            | ErrorClass::ContextTooLong
            | ErrorClass::ModelNotFound
            | ErrorClass::Misconfigured
            | ErrorClass::Unsupported
            | ErrorClass::Permanent(_) => Verdict::Kept,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use prometheus_client::registry::Registry;

    use super::*;
    use crate::model::{Policy, Strategy};
    use crate::upstream::Refusal;

    struct Rig {
        fleet: Fleet,
        metrics: Arc<Metrics>,
        registry: Registry,
        rules: Rules,
        pool: Pool,
    }

    impl Rig {
        fn new(threshold: u32) -> Self {
            let (fleet, pusher) = Fleet::in_memory();
            // The test's runtime ends with the test: nothing outlives it.
            #[allow(clippy::disallowed_methods)]
            tokio::spawn(pusher);
            let mut registry = Registry::default();
            let metrics = Metrics::register(&mut registry);
            Self {
                fleet,
                metrics,
                registry,
                rules: crate::server::defaults::rules(),
                pool: Pool {
                    name: "p".into(),
                    id: "p".into(),
                    strategy: Strategy::Priority,
                    policy: Policy {
                        failure_threshold: threshold,
                        ..Policy::default()
                    },
                    enabled: true,
                    members: vec![],
                    active: vec![],
                    sequence: vec![],
                },
            }
        }

        fn fail(&self, c: &Candidate, class: ErrorClass, hint: Option<Duration>) -> Verdict {
            Judge {
                fleet: &self.fleet,
                metrics: &self.metrics,
                rules: &self.rules,
            }
            .failed(&self.pool, c, class, hint, None)
        }

        /// `switchyard_member_benches_total` of member `m`, as scraped.
        fn benches(&self, m: &str) -> u64 {
            let mut text = String::new();
            prometheus_client::encoding::text::encode(&mut text, &self.registry).expect("encodes");
            let series = format!("member=\"{m}\"");
            text.lines()
                .filter(|l| l.starts_with("switchyard_member_benches_total") && l.contains(&series))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
                .sum()
        }

        fn benched(&self, m: &str) -> bool {
            self.fleet
                .table()
                .get(m)
                .is_some_and(|e| e.benched_at(Instant::now()))
        }
    }

    #[tokio::test(start_paused = true)]
    async fn transient_faults_count_and_the_one_at_the_threshold_benches_once() {
        let rig = Rig::new(2);
        let a = Candidate::for_test("a");
        assert_eq!(
            rig.fail(&a, ErrorClass::Transient, None),
            Verdict::Counted { benched: false }
        );
        assert!(!rig.benched("a"));
        assert_eq!(
            rig.fail(&a, ErrorClass::Transient, None),
            Verdict::Counted { benched: true }
        );
        assert!(rig.benched("a"));
        // More failures while it sits out (streams dying with it) say it is
        // benched but count no new bench.
        for _ in 0..5 {
            assert_eq!(
                rig.fail(&a, ErrorClass::Transient, None),
                Verdict::Counted { benched: true }
            );
        }
        assert_eq!(rig.benches("a"), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn rate_limits_and_refused_credentials_bench_at_once() {
        let rig = Rig::new(3);
        let a = Candidate::for_test("a");
        let b = Candidate::for_test("b");
        let hint = Duration::from_secs(7);
        assert_eq!(
            rig.fail(&a, ErrorClass::RateLimited, Some(hint)),
            Verdict::Benched(hint)
        );
        assert_eq!(
            rig.fail(&a, ErrorClass::RateLimited, None),
            Verdict::Benched(rig.rules.rate_limit_cooldown)
        );
        assert_eq!(
            rig.fail(&b, ErrorClass::AuthBilling(Refusal::Unauthenticated), None),
            Verdict::Benched(rig.rules.auth_cooldown)
        );
        assert!(rig.benched("a") && rig.benched("b"));
        assert_eq!((rig.benches("a"), rig.benches("b")), (1, 1));
    }

    #[tokio::test(start_paused = true)]
    async fn what_a_caller_can_cause_and_direct_calls_leave_no_health_state() {
        let rig = Rig::new(1);
        let a = Candidate::for_test("a");
        for class in [
            ErrorClass::Declined(Refusal::Billing),
            ErrorClass::ContextTooLong,
            ErrorClass::ModelNotFound,
            ErrorClass::Misconfigured,
            ErrorClass::Unsupported,
            ErrorClass::Permanent(Refusal::BadRequest),
        ] {
            assert_eq!(rig.fail(&a, class, None), Verdict::Kept, "{class:?}");
        }
        assert!(!rig.benched("a"));
        let direct = Candidate {
            ephemeral: true,
            ..Candidate::for_test("openai/gpt-x")
        };
        assert_eq!(
            rig.fail(&direct, ErrorClass::Transient, None),
            Verdict::Kept
        );
        assert!(!rig.benched("openai/gpt-x"));
        assert_eq!(rig.benches("a"), 0);
    }
}
