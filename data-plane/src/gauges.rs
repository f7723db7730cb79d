//! Gauges of the worker's state (config, fleet link, members' health,
//! live signals, slots), read at scrape time: the request path pays nothing
//! for them. `observe` only records; this is where the scrape reads the
//! stages' state, so it sits above them.

use std::sync::Arc;

use arc_swap::ArcSwap;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric as _};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use switchyard_shared::metrics::names as n;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::catalog::Catalog;
use crate::fleet::{Fleet, LinkState, State};
use crate::observe::metrics::Scraped;
use crate::sync::SyncState;

/// The worker's state the scrape reads.
pub struct Live {
    pub catalog: Arc<ArcSwap<Catalog>>,
    pub fleet: Fleet,
    pub sync: watch::Receiver<SyncState>,
    /// When the catalog last changed.
    pub applied: Arc<ArcSwap<Instant>>,
    /// Members' live signals, fleet-wide.
    pub signals: Arc<crate::signals::Signals>,
    /// Concurrency slots and the pools' admission queues.
    pub slots: Arc<crate::fleet::slots::Slots>,
}

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Live")
    }
}

impl Scraped for Live {
    fn is_configured(&self, model: &str) -> bool {
        self.catalog.load().is_configured(model)
    }

    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let live = self;
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
            "1 while the worker's config follows the store in full, 0 while stale, not loaded, or refused in whole or part",
            if *live.sync.borrow() == SyncState::Live {
                1.0
            } else {
                0.0
            },
        )?;
        let refused: Family<n::Reason, Gauge> = Family::default();
        for r in catalog.refused().values() {
            refused
                .get_or_create(&n::Reason { reason: r.label() })
                .inc();
        }
        let e = encoder.encode_descriptor(
            n::CONFIG_REFUSED_PROVIDERS,
            "Providers of the served config this worker refuses (their members are not served), by reason",
            None,
            refused.metric_type(),
        )?;
        refused.encode(e)?;
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
        #[allow(clippy::cast_precision_loss)]
        gauge(
            &mut encoder,
            n::FLEET_CHARGES_PENDING,
            "Keys with token charges not yet sent to the fleet's state (Redis away)",
            live.fleet.pending_charges() as f64,
        )?;
        let held = live.fleet.permits_held();
        for (name, help, v) in [
            (
                n::FLEET_PERMITS_HELD_REQUESTS,
                "Leased rpm permits (requests) this worker holds and has not used",
                held.requests,
            ),
            (
                n::FLEET_PERMITS_HELD_TOKENS,
                "Leased tpm permits (tokens) this worker holds and has not used",
                held.tokens,
            ),
            (
                n::FLEET_PERMITS_HELD_BUDGET_TOKENS,
                "Tokens of callers' budgets this worker leased and has not used",
                held.budget_tokens,
            ),
        ] {
            #[allow(clippy::cast_precision_loss)]
            gauge(&mut encoder, name, help, v as f64)?;
        }
        let dropped = live.fleet.dropped_charges();
        let drops: Family<n::Reason, Counter> = Family::default();
        for (reason, v) in [("full", dropped.full), ("expired", dropped.expired)] {
            drops.get_or_create(&n::Reason { reason }).inc_by(v);
        }
        let e = encoder.encode_descriptor(
            n::FLEET_CHARGES_DROPPED,
            "Token charges given up: past the bound of pending keys (full) or too old to count (expired)",
            None,
            drops.metric_type(),
        )?;
        drops.encode(e)?;
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
                let current = state.label();
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
        states.encode(e)?;
        encode_live_signals(&mut encoder, &pools, &live.signals)?;
        queues(&mut encoder, &pools, &live.slots)?;
        remaining(&mut encoder, &live.fleet, &pools)
    }
}

/// The members' live signals, fleet-wide, read at scrape time: in flight,
/// peak-EWMA time to first token and total latency (members with no
/// estimate have no latency series).
fn encode_live_signals(
    encoder: &mut prometheus_client::encoding::DescriptorEncoder<'_>,
    pools: &[Arc<crate::model::Pool>],
    signals: &crate::signals::Signals,
) -> Result<(), std::fmt::Error> {
    use prometheus_client::encoding::EncodeMetric as _;
    type Seconds = Gauge<f64, std::sync::atomic::AtomicU64>;
    let in_flight: Family<n::Member, Gauge> = Family::default();
    let ttft: Family<n::Member, Seconds> = Family::default();
    let latency: Family<n::Member, Seconds> = Family::default();
    for p in pools {
        for m in &p.members {
            let live = signals.live(&m.member_id);
            let who = n::Member {
                pool: p.name.clone(),
                member: m.member_id.clone(),
            };
            in_flight.get_or_create(&who).set(i64::from(live.in_flight));
            if let Some(d) = live.ttft {
                ttft.get_or_create(&who).set(d.as_secs_f64());
            }
            if let Some(d) = live.latency {
                latency.get_or_create(&who).set(d.as_secs_f64());
            }
        }
    }
    let e = encoder.encode_descriptor(
        n::MEMBER_IN_FLIGHT,
        "Requests in flight per member, fleet-wide (this worker's plus the others' last reports)",
        None,
        in_flight.metric_type(),
    )?;
    in_flight.encode(e)?;
    let e = encoder.encode_descriptor(
        n::MEMBER_TTFT,
        "Peak-EWMA time to first token per member, fleet-wide, seconds",
        None,
        ttft.metric_type(),
    )?;
    ttft.encode(e)?;
    let e = encoder.encode_descriptor(
        n::MEMBER_LATENCY,
        "Peak-EWMA total latency per member, fleet-wide, seconds",
        None,
        latency.metric_type(),
    )?;
    latency.encode(e)
}

/// Requests waiting in each admission queue (pools with a capped member).
fn queues(
    encoder: &mut DescriptorEncoder<'_>,
    pools: &[Arc<crate::model::Pool>],
    slots: &crate::fleet::slots::Slots,
) -> Result<(), std::fmt::Error> {
    let waiting: Family<n::Pool, Gauge> = Family::default();
    for p in pools {
        if p.members.iter().any(|m| m.max_concurrency.is_some()) {
            let len = i64::try_from(slots.queue_len(&p.id)).unwrap_or(i64::MAX);
            waiting
                .get_or_create(&n::Pool {
                    pool: p.name.clone(),
                })
                .set(len);
        }
    }
    let e = encoder.encode_descriptor(
        n::ADMISSION_QUEUE,
        "Requests waiting in a pool's admission queue on this worker (every member they may try is at its concurrency cap)",
        None,
        waiting.metric_type(),
    )?;
    waiting.encode(e)
}

/// The members' headroom from their providers' headers, where known.
fn remaining(
    encoder: &mut DescriptorEncoder<'_>,
    fleet: &Fleet,
    pools: &[Arc<crate::model::Pool>],
) -> Result<(), std::fmt::Error> {
    let requests: Family<n::Member, Gauge> = Family::default();
    let tokens: Family<n::Member, Gauge> = Family::default();
    for p in pools {
        for m in &p.members {
            let label = n::Member {
                pool: p.name.clone(),
                member: m.member_id.clone(),
            };
            let (r, t) = fleet.remaining(&m.member_id, m.limits);
            for (family, v) in [(&requests, r), (&tokens, t)] {
                if let Some(v) = v {
                    family
                        .get_or_create(&label)
                        .set(i64::try_from(v).unwrap_or(i64::MAX));
                }
            }
        }
    }
    for (name, help, family) in [
        (
            n::MEMBER_REMAINING_REQUESTS,
            "Requests the member's provider key has left, as its rate-limit headers last said",
            requests,
        ),
        (
            n::MEMBER_REMAINING_TOKENS,
            "Tokens the member's provider key has left, as its rate-limit headers last said",
            tokens,
        ),
    ] {
        let e = encoder.encode_descriptor(name, help, None, family.metric_type())?;
        family.encode(e)?;
    }
    Ok(())
}
