//! Member health: one entry per member with failures, a bench or a probe,
//! the rules that change it, and the worker's live copy of the fleet's table.
//!
//! The rules here are the in-memory twin of the Redis scripts in
//! `fleet/redis.rs`; `tests/fleet_backends.rs` runs one sequence of events
//! through both and checks they agree (docs/adr/004-failover-and-health.md).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::time::Instant;

use crate::model::Policy;

/// How long each doubling of a recovering member's share takes.
pub const RAMP_STEP: Duration = Duration::from_secs(1);
/// Doublings until a recovering member gets its full share (1/16 → 1).
const RAMP_STEPS: f64 = 4.0;

/// A half-open probe in flight: who holds it and until when.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Probe {
    pub owner: String,
    pub until: Instant,
}

/// One member's health, as the fleet shares it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Consecutive failures.
    pub fails: u32,
    /// Benches since the last success; each is twice as long as the last.
    pub benches: u32,
    pub benched_until: Option<Instant>,
    pub probe: Option<Probe>,
    /// Last change; an entry left alone for long starts over.
    pub updated: Instant,
    /// The fleet's change counter when this entry was written (Redis; 0 in memory).
    pub version: u64,
}

/// What a member is, for one request at one instant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Available,
    Benched {
        until: Instant,
    },
    /// The bench is over: the next request may probe it (one at a time, fleet-wide).
    HalfOpen,
    /// Another request is probing it.
    Probing,
}

impl State {
    /// Its label, as `switchyard_member_state`, ListModels' callers and the
    /// pool statistics show it.
    pub fn label(self) -> &'static str {
        match self {
            Self::Available => "available",
            Self::Benched { .. } => "benched",
            Self::HalfOpen | Self::Probing => "probing",
        }
    }
}

/// A failure as the rules need it.
#[derive(Clone, Copy, Debug)]
pub struct Failure {
    pub threshold: u32,
    pub cooldown_base: Duration,
    pub cooldown_max: Duration,
    /// The upstream's Retry-After: a bench lasts at least this long.
    pub retry_after: Option<Duration>,
    /// Whether the bench doubles with each one. A bench for a rate limit or
    /// a refused credential does not: it lasts what it says (it counts as
    /// one bench, so it ends half-open and ramps like the others).
    pub escalates: bool,
}

impl Failure {
    pub fn new(policy: &Policy, retry_after: Option<Duration>) -> Self {
        Self {
            threshold: policy.failure_threshold.max(1),
            cooldown_base: policy.cooldown_base,
            cooldown_max: policy.cooldown_max,
            retry_after,
            escalates: true,
        }
    }

    /// A bench of exactly `d`, at once (a rate limit, a refused credential).
    pub fn bench_for(d: Duration) -> Self {
        Self {
            threshold: 1,
            cooldown_base: d,
            cooldown_max: d,
            retry_after: Some(d),
            escalates: false,
        }
    }

    /// After this long without change, an entry that is not benched starts over.
    pub fn stale_after(&self) -> Duration {
        self.cooldown_max + Duration::from_secs(60)
    }
}

impl Entry {
    pub fn new(now: Instant) -> Self {
        Self {
            fails: 0,
            benches: 0,
            benched_until: None,
            probe: None,
            updated: now,
            version: 0,
        }
    }

    /// An entry with nothing in it: the member is healthy and the entry can go.
    pub fn is_clear(&self) -> bool {
        self.fails == 0 && self.benches == 0 && self.benched_until.is_none() && self.probe.is_none()
    }

    pub fn benched_at(&self, now: Instant) -> bool {
        self.benched_until.is_some_and(|u| now < u)
    }

    /// A bench that is over leaves the member half-open until a success
    /// clears it, whatever benched it: the failure threshold or, at once, a
    /// rate limit or a refused credential (whose one failure is below it).
    pub fn state(&self, now: Instant, threshold: u32) -> State {
        if let Some(until) = self.benched_until.filter(|u| now < *u) {
            return State::Benched { until };
        }
        if self.fails < threshold.max(1) && self.benched_until.is_none() {
            return State::Available;
        }
        match &self.probe {
            Some(p) if now < p.until => State::Probing,
            _ => State::HalfOpen,
        }
    }

    /// Counts a failure. At the threshold, and whenever it fails again after
    /// a bench ended (a failed probe), the member is benched for twice as long
    /// as last time, capped; never shorter than Retry-After. Failures while
    /// benched (requests already in flight) do not escalate it, but a longer
    /// Retry-After extends it. A failure ends the caller's probe.
    pub fn fail(&mut self, now: Instant, f: &Failure, probe_owner: Option<&str>) {
        if !self.benched_at(now) && now.saturating_duration_since(self.updated) > f.stale_after() {
            self.fails = 0;
            self.benches = 0;
        }
        self.fails += 1;
        let retry_after = f.retry_after.unwrap_or_default();
        if self.fails >= f.threshold && !self.benched_at(now) {
            let cooldown = if f.escalates {
                self.benches += 1;
                let exp = (self.benches - 1).min(30);
                f.cooldown_base
                    .saturating_mul(1 << exp)
                    .min(f.cooldown_max)
                    .max(retry_after)
            } else {
                // Not doubled, but it is a bench: its probe's success starts
                // the ramp (`ramp_share` needs a bench count).
                self.benches = self.benches.max(1);
                retry_after
            };
            self.benched_until = Some(
                self.benched_until
                    .map_or(now + cooldown, |u| u.max(now + cooldown)),
            );
        } else if let Some(u) = self.benched_until.filter(|u| now < *u) {
            self.benched_until = Some(u.max(now + retry_after));
        }
        if let (Some(p), Some(owner)) = (&self.probe, probe_owner)
            && p.owner == owner
        {
            self.probe = None;
        }
        self.updated = now;
    }

    /// A success: failures, a bench that is over, and the caller's probe end
    /// (an active bench stays, unless the caller holds its probe). The bench count stays, so a
    /// member that fails again soon (it flaps) is benched twice as long as
    /// last time; it decays only with time healthy (`Failure::stale_after`).
    pub fn succeed(&mut self, now: Instant, probe_owner: Option<&str>) {
        let ours = probe_owner.is_some_and(|o| self.probe.as_ref().is_some_and(|p| p.owner == o));
        if self.benched_at(now) && !ours {
            // A request that was in flight when the member was benched (for a
            // rate limit, say) does not end the bench.
            return;
        }
        let ended_bench = self.benched_until.is_some() || ours;
        self.fails = 0;
        self.benched_until = None;
        self.probe = None;
        if ended_bench {
            // The ramp (`ramp_share`) starts here.
            self.updated = now;
        }
    }

    /// A member back from a bench gets a growing share of its traffic: 1/16
    /// right after its probe succeeded, doubling every `RAMP_STEP`, all of it
    /// after four steps (a time-based slow start, so no write per success).
    /// `None` when it is not ramping.
    pub fn ramp_share(&self, now: Instant) -> Option<f64> {
        if self.benches == 0
            || self.fails > 0
            || self.benched_until.is_some()
            || self.probe.is_some()
        {
            return None;
        }
        let steps =
            now.saturating_duration_since(self.updated).as_secs_f64() / RAMP_STEP.as_secs_f64();
        (steps < RAMP_STEPS).then(|| 2f64.powf(steps - RAMP_STEPS))
    }

    /// Whether a success has anything to clear (otherwise nobody is told).
    pub fn needs_success(&self, now: Instant, probe_owner: Option<&str>) -> bool {
        let ours = probe_owner.is_some_and(|o| self.probe.as_ref().is_some_and(|p| p.owner == o));
        if self.benched_at(now) && !ours {
            return false;
        }
        self.fails > 0 || self.benched_until.is_some() || self.probe.is_some()
    }

    /// Takes the member's probe if its bench is over and nobody holds it.
    /// A bench that ended long ago (`stale_after`) no longer counts toward
    /// the next: if this probe fails, the member starts over at the base
    /// cooldown. Staleness runs from the bench's end, not its start, so a
    /// long bench (a refused credential's) still ramps after its probe.
    pub fn claim(
        &mut self,
        now: Instant,
        owner: &str,
        ttl: Duration,
        stale_after: Duration,
    ) -> bool {
        let free = self.probe.as_ref().is_none_or(|p| now >= p.until);
        if self.fails == 0 || self.benched_at(now) || !free {
            return false;
        }
        let since = self
            .benched_until
            .map_or(self.updated, |u| u.max(self.updated));
        if now.saturating_duration_since(since) > stale_after {
            self.benches = 0;
        }
        self.probe = Some(Probe {
            owner: owner.to_owned(),
            until: now + ttl,
        });
        self.updated = now;
        true
    }

    /// Gives the probe back (only its holder can).
    pub fn release(&mut self, now: Instant, owner: &str) -> bool {
        if self.probe.as_ref().is_some_and(|p| p.owner == owner) {
            self.probe = None;
            self.updated = now;
            return true;
        }
        false
    }

    /// Folds in what a worker learned while it could not tell the fleet.
    pub fn merge(&mut self, now: Instant, other: &Entry) {
        self.fails = self.fails.max(other.fails);
        self.benches = self.benches.max(other.benches);
        self.benched_until = match (self.benched_until, other.benched_until) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        self.updated = now;
    }
}

/// The worker's copy of the fleet's health: read lock-free on the request
/// path, replaced entry by entry as changes arrive. A cleared member keeps a
/// clear entry (a tombstone with its version), so a late, older message
/// cannot bring its failures back; a full load drops them.
#[derive(Default)]
pub struct HealthTable {
    entries: ArcSwap<HashMap<String, Entry>>,
    write: std::sync::Mutex<Floor>,
}

/// The fleet's change counter at the last full load: a message at or below
/// it about a member the load did not have is older than the load.
#[derive(Default)]
struct Floor(u64);

impl HealthTable {
    /// The table as of now (one atomic load).
    pub fn load(&self) -> Arc<HashMap<String, Entry>> {
        self.entries.load_full()
    }

    /// The member's entry, if it has failures, a bench or a probe.
    pub fn get(&self, member: &str) -> Option<Entry> {
        self.entries
            .load()
            .get(member)
            .filter(|e| !e.is_clear())
            .cloned()
    }

    /// Stores `entry` unless the table holds a newer version of it.
    pub fn apply(&self, member: &str, entry: Entry) {
        self.update(|m, floor| {
            match m.get(member) {
                Some(cur) if cur.version > entry.version => return,
                None if entry.version != 0 && entry.version <= floor => return,
                _ => {}
            }
            m.insert(member.to_owned(), entry);
        });
    }

    /// Changes one member's entry in place (created when missing).
    pub fn modify<R>(
        &self,
        member: &str,
        now: Instant,
        f: impl FnOnce(&mut Entry) -> R,
    ) -> (R, Entry) {
        let _floor = self
            .write
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut m = HashMap::clone(&self.entries.load());
        let mut e = m.get(member).cloned().unwrap_or_else(|| Entry::new(now));
        let r = f(&mut e);
        m.insert(member.to_owned(), e.clone());
        self.entries.store(Arc::new(m));
        (r, e)
    }

    /// Replaces everything with a full load taken at change counter `version`.
    pub fn replace(&self, entries: HashMap<String, Entry>, version: u64) {
        let mut floor = self
            .write
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        floor.0 = version;
        self.entries.store(Arc::new(entries));
    }

    fn update(&self, f: impl FnOnce(&mut HashMap<String, Entry>, u64)) {
        let floor = self
            .write
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut m = HashMap::clone(&self.entries.load());
        f(&mut m, floor.0);
        self.entries.store(Arc::new(m));
    }
}

#[cfg(test)]
mod tests;
