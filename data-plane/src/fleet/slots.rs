//! Concurrency slots: a member's `max_concurrency`, held fleet-wide. Each
//! worker holds a leased share of every capped member's slots ([`lease`]:
//! a Redis script hands the shares out in the background, rebalanced as
//! workers come and go, each expiring with its worker); the request path
//! takes a slot from memory only — a local count never above this worker's
//! share — as a [`Permit`], a guard whose drop (success, error, cancel,
//! panic) is the only way to give it back. A request that finds every
//! member at its cap waits in its pool's bounded FIFO [`queue`]
//! (docs/adr/005-live-signals.md, "Concurrency caps").

pub mod lease;
pub mod queue;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::time::Instant;

use queue::Queue;
pub use queue::{Full, Place};

/// Requests a pool's admission queue holds by default.
pub const DEFAULT_QUEUE: usize = 64;

/// The member is at its concurrency cap here, or others wait ahead.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the member is at its concurrency cap")]
pub struct AtCap;

/// One capped member's slots on this worker.
#[derive(Debug)]
pub struct Slot {
    /// The member's cap, fleet-wide (from its config).
    cap: AtomicU32,
    /// This worker's share: a slot is taken only while `in_use` is below it.
    share: AtomicU32,
    /// Live [`Permit`]s: only a permit's creation and drop change it.
    in_use: AtomicU32,
    /// Most slots in use at once, and takes refused, since the last lease
    /// (how many this worker wants next).
    peak: AtomicU32,
    refused: AtomicU32,
    /// When the leased share lapses unless renewed (ms since `Slots::epoch`;
    /// 0: never leased).
    lease_until_ms: AtomicU64,
}

impl Slot {
    fn new(cap: u32, share: u32) -> Self {
        Self {
            cap: AtomicU32::new(cap),
            share: AtomicU32::new(share),
            in_use: AtomicU32::new(0),
            peak: AtomicU32::new(0),
            refused: AtomicU32::new(0),
            lease_until_ms: AtomicU64::new(0),
        }
    }

    /// Takes one slot if this worker's share has room.
    /// Slots of this worker's share not in use.
    fn free(&self) -> u32 {
        self.share
            .load(Ordering::SeqCst)
            .saturating_sub(self.in_use.load(Ordering::SeqCst))
    }

    fn try_take(&self) -> bool {
        let share = self.share.load(Ordering::SeqCst);
        // SeqCst with the queue's `waiting` count: a take that fails and
        // then joins the queue, and a slot freed meanwhile, see each other.
        let taken = self
            .in_use
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < share).then_some(n + 1)
            });
        match taken {
            Ok(n) => {
                self.peak.fetch_max(n + 1, Ordering::Relaxed);
                true
            }
            Err(_) => {
                self.refused.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    pub fn in_use(&self) -> u32 {
        self.in_use.load(Ordering::Acquire)
    }

    pub fn share(&self) -> u32 {
        self.share.load(Ordering::Acquire)
    }

    pub fn cap(&self) -> u32 {
        self.cap.load(Ordering::Acquire)
    }
}

/// Every capped member's slots and every pool's admission queue on this worker.
#[derive(Debug)]
pub struct Slots {
    /// Member id → its slots; copied on the rare insert so takes read no lock.
    members: ArcSwap<HashMap<String, Arc<Slot>>>,
    /// Pool id → its admission queue.
    queues: Mutex<HashMap<String, Arc<Queue>>>,
    /// Requests waiting in any queue: a freed slot wakes queues only then.
    waiting: AtomicUsize,
    /// Most requests one pool's queue holds.
    queue_limit: usize,
    /// Shares are leased from the fleet ([`lease`]); without a fleet (one
    /// worker) a share is the whole cap.
    shared: bool,
    /// Live workers as the last lease counted them (the fallback's divisor).
    workers: AtomicU32,
    /// A new capped member appeared: the lease task leases it at once.
    pub(crate) new_member: tokio::sync::Notify,
    epoch: Instant,
}

impl Slots {
    /// Slots of a worker that shares its caps with a fleet (`shared`) or
    /// holds them alone; `queue_limit` requests wait per pool at most.
    pub fn new(shared: bool, queue_limit: usize) -> Arc<Self> {
        Arc::new(Self {
            members: ArcSwap::default(),
            queues: Mutex::default(),
            waiting: AtomicUsize::new(0),
            queue_limit,
            shared,
            workers: AtomicU32::new(1),
            new_member: tokio::sync::Notify::new(),
            epoch: Instant::now(),
        })
    }

    fn ms(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_millis()).unwrap_or(u64::MAX)
    }

    /// The share a worker falls back to while it holds no lease: the cap
    /// split evenly between the live workers it last knew of (at least one).
    pub fn fallback(&self, cap: u32) -> u32 {
        if !self.shared {
            return cap;
        }
        (cap / self.workers.load(Ordering::Relaxed).max(1)).max(1)
    }

    /// The member's slots, made on first sight: with the whole cap on a
    /// worker alone; in a fleet with none until the lease task (woken now)
    /// leases its share.
    pub fn slot(&self, member_id: &str, cap: u32) -> Arc<Slot> {
        if let Some(s) = self.members.load().get(member_id) {
            if s.cap.load(Ordering::Relaxed) != cap {
                s.cap.store(cap, Ordering::Release);
                if !self.shared {
                    s.share.store(cap, Ordering::Release);
                }
            }
            return s.clone();
        }
        let share = if self.shared { 0 } else { cap };
        let mut out = None;
        self.members.rcu(|map| {
            let mut map = HashMap::clone(map);
            out = Some(
                map.entry(member_id.to_owned())
                    .or_insert_with(|| Arc::new(Slot::new(cap, share)))
                    .clone(),
            );
            map
        });
        self.new_member.notify_one();
        out.unwrap_or_else(|| Arc::new(Slot::new(cap, 0)))
    }

    /// Keeps only the members still capped in the config (`caps`), with their caps.
    pub fn retain(&self, caps: &HashMap<String, u32>) {
        let stale = self
            .members
            .load()
            .iter()
            .any(|(id, s)| caps.get(id).is_none_or(|c| *c != s.cap()))
            || caps.keys().any(|id| !self.members.load().contains_key(id));
        if !stale {
            return;
        }
        for (id, cap) in caps {
            self.slot(id, *cap);
        }
        self.members.rcu(|map| {
            let mut map = HashMap::clone(map);
            map.retain(|id, _| caps.contains_key(id));
            map
        });
    }

    /// Every capped member's slots.
    pub fn members(&self) -> Arc<HashMap<String, Arc<Slot>>> {
        self.members.load_full()
    }

    /// What this worker wants of a member next: its recent peak, one more
    /// for every refused take (up to the cap), at least one. Resets the count.
    pub(crate) fn want(slot: &Slot) -> u32 {
        let peak = slot.peak.swap(slot.in_use(), Ordering::Relaxed);
        let refused = slot.refused.swap(0, Ordering::Relaxed);
        peak.saturating_add(refused)
            .saturating_add(1)
            .min(slot.cap().max(1))
    }

    /// What this worker holds of a member: its share, or more while slots
    /// taken under a larger one are still in use (never less than in use).
    pub(crate) fn claim(slot: &Slot) -> u32 {
        slot.share().max(slot.in_use())
    }

    /// A lease answered (`asked_at`: when it was sent): the member's share
    /// until `asked_at + ttl`; `workers`: live workers it counted.
    pub(crate) fn granted(&self, slot: &Slot, share: u32, asked_at: Instant, ttl: Duration) {
        let before = slot.share.swap(share, Ordering::SeqCst);
        slot.lease_until_ms
            .store(self.ms(asked_at + ttl), Ordering::Release);
        if share > before {
            self.wake();
        }
    }

    pub(crate) fn set_workers(&self, n: u32) {
        self.workers.store(n.max(1), Ordering::Relaxed);
    }

    /// Shares whose lease lapsed (the fleet unreachable that long) fall
    /// back to an even split; so do members never leased when the last
    /// lease `failed`.
    pub(crate) fn lapse(&self, now: Instant, failed: bool) {
        let now_ms = self.ms(now);
        for slot in self.members.load().values() {
            let until = slot.lease_until_ms.load(Ordering::Acquire);
            let lapsed = if until == 0 { failed } else { until <= now_ms };
            if lapsed {
                let fallback = self.fallback(slot.cap());
                if slot.share.swap(fallback, Ordering::SeqCst) < fallback {
                    self.wake();
                }
            }
        }
    }

    /// Takes a slot of `c`'s member for a request of pool `pool_id`.
    /// `Ok(None)`: the member is not capped. `Err(AtCap)`: it is at its cap
    /// here — or others wait in the pool's queue ahead of this request and
    /// the member has no more free slots than there are waiters (FIFO: a
    /// freed slot is the head's; a member with room for every waiter and
    /// more — one the waiters cannot use, say, too small for the head's
    /// prompt — still serves newcomers). A request that takes a slot leaves
    /// the queue (`place`).
    pub fn take(
        self: &Arc<Self>,
        member_id: &str,
        cap: Option<u32>,
        pool_id: &str,
        place: &mut Option<Place>,
    ) -> Result<Option<Permit>, AtCap> {
        let Some(cap) = cap else {
            return Ok(None);
        };
        let slot = self.slot(member_id, cap);
        let ahead = match place {
            Some(p) if p.pool() == pool_id => !p.is_head(),
            _ => {
                self.waiting.load(Ordering::Acquire) > 0 && {
                    let waiters = self.queue_len(pool_id);
                    waiters > 0 && slot.free() as usize <= waiters
                }
            }
        };
        if ahead || !slot.try_take() {
            if ahead {
                slot.refused.fetch_add(1, Ordering::Relaxed);
            }
            return Err(AtCap);
        }
        // Out of the queue at once: the next in line may take the next slot.
        place.take();
        Ok(Some(Permit {
            slot,
            slots: self.clone(),
        }))
    }

    /// Requests waiting in a pool's queue.
    pub fn queue_len(&self, pool_id: &str) -> usize {
        self.queues
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(pool_id)
            .map_or(0, |q| q.len())
    }

    /// Joins the end of a pool's queue, unless it is full.
    pub fn enqueue(self: &Arc<Self>, pool_id: &str) -> Result<Place, Full> {
        // Joined under the map's lock, so `prune` cannot drop the queue in between.
        let mut queues = self
            .queues
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let q = queues.entry(pool_id.to_owned()).or_default().clone();
        let joined = Place::join(q.clone(), self.clone(), pool_id, self.queue_limit);
        if joined.is_err() && q.is_empty() {
            queues.remove(pool_id);
        }
        joined
    }

    /// Forgets a pool's queue once nobody waits in it (pool ids of direct
    /// calls come and go).
    pub(super) fn prune(&self, pool_id: &str) {
        self.queues
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .retain(|id, q| id != pool_id || !q.is_empty());
    }

    /// A slot freed or a share grew: the head of every waiting queue tries again.
    fn wake(&self) {
        if self.waiting.load(Ordering::SeqCst) == 0 {
            return;
        }
        let queues: Vec<_> = self
            .queues
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
            .cloned()
            .collect();
        for q in queues {
            q.wake_head();
        }
    }
}

/// One slot of a capped member, held while an attempt (or its stream) lives.
#[derive(Debug)]
pub struct Permit {
    slot: Arc<Slot>,
    slots: Arc<Slots>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.slot.in_use.fetch_sub(1, Ordering::SeqCst);
        self.slots.wake();
    }
}

#[cfg(test)]
mod tests;
