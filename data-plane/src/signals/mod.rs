//! Live signals per member, fleet-wide: requests in flight (counted by
//! [`Hold`] guards, so they cannot leak) and latency estimates (peak-EWMA
//! time to first token and total latency, a recent p90), this worker's own
//! plus every other worker's last report ([`peers`], exchanged in the
//! background by [`share`]). The request path reads memory only
//! (docs/adr/005-live-signals.md).

pub mod hold;
pub mod latency;
pub mod peers;
pub mod share;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::time::Instant;

pub use hold::{Carry, Hold};
use latency::Estimates;
use peers::Remote;

use crate::model::{Candidate, Live};

/// One member's signals on this worker.
#[derive(Debug, Default)]
pub struct Member {
    /// Live [`Hold`]s: only a guard's creation and drop change it.
    in_flight: AtomicU32,
    estimates: Mutex<Estimates>,
}

impl Member {
    fn with<R>(&self, f: impl FnOnce(&mut Estimates) -> R) -> R {
        f(&mut self
            .estimates
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner))
    }
}

/// What this worker measured of one member, as it reports it.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Local {
    pub in_flight: u32,
    pub ttft: Option<Duration>,
    pub latency: Option<Duration>,
    pub ttft_p90: Option<Duration>,
    /// This worker's recent p90 of whole unary answers (not reported).
    pub answer_p90: Option<Duration>,
}

/// Every member's signals: this worker's, and the fleet's merged view.
#[derive(Debug, Default)]
pub struct Signals {
    /// Member id → its local signals; copied on the rare insert so reads
    /// take no lock.
    members: ArcSwap<HashMap<String, Arc<Member>>>,
    /// Other workers' last reports, merged per member (fresh ones only),
    /// replaced by the background exchange.
    others: ArcSwap<HashMap<String, Remote>>,
}

impl Signals {
    fn member(&self, id: &str) -> Arc<Member> {
        if let Some(m) = self.members.load().get(id) {
            return m.clone();
        }
        let mut out = None;
        self.members.rcu(|map| {
            let mut map = HashMap::clone(map);
            out = Some(map.entry(id.to_owned()).or_default().clone());
            map
        });
        out.unwrap_or_default()
    }

    /// A guard counting one attempt at `c` until it is dropped. A direct
    /// call's member (its name is the caller's choice) is not tracked.
    pub fn hold(&self, c: &Candidate) -> Hold {
        if c.ephemeral {
            return Hold::untracked();
        }
        Hold::new(self.member(&c.member_id))
    }

    /// This worker's view of every member it measured.
    pub fn local(&self, now: Instant) -> Vec<(String, Local)> {
        self.members
            .load()
            .iter()
            .map(|(id, m)| (id.clone(), local_of(m, now)))
            .collect()
    }

    /// Replaces the other workers' merged view (the exchange does).
    pub fn set_others(&self, others: HashMap<String, Remote>) {
        self.others.store(Arc::new(others));
    }

    /// The member's signals, fleet-wide: own live count plus the others'
    /// last reports; latencies the mean of every fresh estimate.
    pub fn live(&self, member_id: &str) -> Live {
        let now = Instant::now();
        let own = self
            .members
            .load()
            .get(member_id)
            .map(|m| local_of(m, now))
            .unwrap_or_default();
        let others = self.others.load();
        let remote = others.get(member_id);
        let mean = |own: Option<Duration>, f: fn(&Remote) -> Option<(Duration, u32)>| {
            let (sum, n) = remote.and_then(f).unwrap_or_default();
            let (sum, n) = match own {
                Some(d) => (sum + d, n + 1),
                None => (sum, n),
            };
            (n > 0).then(|| sum / n)
        };
        Live {
            in_flight: own
                .in_flight
                .saturating_add(remote.map_or(0, |r| r.in_flight)),
            ttft: mean(own.ttft, |r| r.ttft),
            latency: mean(own.latency, |r| r.latency),
            ttft_p90: mean(own.ttft_p90, |r| r.ttft_p90),
            answer_p90: own.answer_p90,
            ..Live::default()
        }
    }
}

fn local_of(m: &Member, now: Instant) -> Local {
    let (ttft, latency, ttft_p90, answer_p90) = m.with(|e| {
        (
            e.ttft.get(now),
            e.latency.get(now),
            e.recent_ttft.p90(now),
            e.recent_answer.p90(now),
        )
    });
    Local {
        in_flight: m.in_flight.load(Ordering::Acquire),
        ttft,
        latency,
        ttft_p90,
        answer_p90,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn fleet_view_adds_others_in_flight_and_averages_latency() {
        let s = Signals::default();
        let m = s.member("m1");
        let _a = Hold::new(m.clone());
        let _b = Hold::new(m.clone());
        m.with(|e| e.ttft.observe(Duration::from_millis(100), Instant::now()));
        s.set_others(HashMap::from([(
            "m1".to_owned(),
            Remote {
                in_flight: 5,
                ttft: Some((Duration::from_millis(300), 1)),
                ..Remote::default()
            },
        )]));
        let live = s.live("m1");
        assert_eq!(live.in_flight, 7);
        assert_eq!(live.ttft, Some(Duration::from_millis(200)));
        assert_eq!(live.latency, None);
        assert_eq!(s.live("unknown"), Live::default());
    }
}
