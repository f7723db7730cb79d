//! Round-robin tickets: one counter per pool shared by the fleet, leased in
//! blocks so a request never waits for one. A worker asks for the next block
//! while half of the current one is left, sized to about a second of its
//! recent traffic; without a ticket (first request, backend unreachable) it
//! takes one from a local counter.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::time::Instant;

/// Largest block one worker leases at a time.
pub const MAX_BLOCK: u64 = 1024;
/// A block lasts about this long at the worker's recent rate.
const BLOCK_SPAN: Duration = Duration::from_secs(1);

#[derive(Debug)]
struct Lease {
    /// Tickets in hand: `next..end`.
    next: u64,
    end: u64,
    /// A block that arrived while the current one was still in use.
    queued: Option<(u64, u64)>,
    fetching: bool,
    /// Requests in the current and last rate window.
    window_start: Instant,
    in_window: u64,
    last_rate: u64,
    local: u64,
}

/// What taking a ticket asks of the caller: fetch a block of `n` in the background.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Refill {
    pub n: u64,
}

#[derive(Default)]
pub struct Tickets {
    leases: RwLock<HashMap<String, Arc<Mutex<Lease>>>>,
}

impl Tickets {
    fn lease(&self, pool_id: &str) -> Arc<Mutex<Lease>> {
        if let Some(l) = self
            .leases
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(pool_id)
        {
            return l.clone();
        }
        let mut w = self
            .leases
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        w.entry(pool_id.to_owned())
            .or_insert_with(|| {
                Arc::new(Mutex::new(Lease {
                    next: 0,
                    end: 0,
                    queued: None,
                    fetching: false,
                    window_start: Instant::now(),
                    in_window: 0,
                    last_rate: 0,
                    local: rand::random::<u32>().into(),
                }))
            })
            .clone()
    }

    /// The next ticket of `pool_id`, and a block to fetch if one is due.
    pub fn take(&self, pool_id: &str) -> (u64, Option<Refill>) {
        let lease = self.lease(pool_id);
        let mut l = lease
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = Instant::now();
        if now.duration_since(l.window_start) >= BLOCK_SPAN {
            // Idle windows count as zero traffic.
            let windows =
                now.duration_since(l.window_start).as_secs_f64() / BLOCK_SPAN.as_secs_f64();
            l.last_rate = if windows < 2.0 { l.in_window } else { 0 };
            l.in_window = 0;
            l.window_start = now;
        }
        l.in_window += 1;
        if l.next >= l.end
            && let Some((s, e)) = l.queued.take()
        {
            l.next = s;
            l.end = e;
        }
        let ticket = if l.next < l.end {
            l.next += 1;
            // Without a block later, carry on from here rather than elsewhere.
            l.local = l.next - 1;
            l.next - 1
        } else {
            l.local = l.local.wrapping_add(1);
            l.local
        };
        let block = l.last_rate.max(l.in_window).clamp(1, MAX_BLOCK);
        let left = l.end - l.next + l.queued.map_or(0, |(s, e)| e - s);
        let refill = if !l.fetching && left * 2 <= block {
            l.fetching = true;
            Some(Refill { n: block })
        } else {
            None
        };
        (ticket, refill)
    }

    /// Asks for a pool's first block ahead of its first request (a new
    /// pool in the config), so even that request takes a shared ticket.
    pub fn prefetch(&self, pool_id: &str) -> Option<Refill> {
        let lease = self.lease(pool_id);
        let mut l = lease
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if l.fetching || l.next < l.end || l.queued.is_some() {
            return None;
        }
        l.fetching = true;
        Some(Refill { n: 1 })
    }

    /// A block `first..first + n` arrived (or `None`: the fetch failed).
    pub fn filled(&self, pool_id: &str, block: Option<(u64, u64)>) {
        let lease = self.lease(pool_id);
        let mut l = lease
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        l.fetching = false;
        if let Some((first, n)) = block {
            if l.next >= l.end {
                l.next = first;
                l.end = first + n;
            } else {
                l.queued = Some((first, first + n));
            }
        }
    }

    /// Forgets pools that are gone from the config.
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        self.leases
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .retain(|k, _| keep(k));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn leased_blocks_are_used_in_order_and_refilled_before_they_run_out() {
        let t = Tickets::default();
        let (_, refill) = t.take("p");
        assert_eq!(
            refill,
            Some(Refill { n: 1 }),
            "the first request asks for a block"
        );
        assert_eq!(t.take("p").1, None, "one fetch at a time");
        t.filled("p", Some((100, 4)));
        let mut used = Vec::new();
        let mut asked_at = None;
        for i in 0..4 {
            let (ticket, refill) = t.take("p");
            used.push(ticket);
            if refill.is_some() && asked_at.is_none() {
                asked_at = Some(i);
            }
        }
        assert_eq!(used, vec![100, 101, 102, 103], "a block is used in order");
        assert!(
            asked_at.is_some_and(|i| i < 3),
            "the next block is asked for before this one runs out: {asked_at:?}"
        );
        t.filled("p", Some((200, 4)));
        assert_eq!(t.take("p").0, 200, "then the next block");
    }

    #[tokio::test(start_paused = true)]
    async fn the_block_follows_the_recent_rate() {
        let t = Tickets::default();
        for _ in 0..500 {
            let (_, refill) = t.take("p");
            if refill.is_some() {
                t.filled("p", None);
            }
        }
        tokio::time::advance(Duration::from_secs(1)).await;
        let (_, refill) = t.take("p");
        assert_eq!(refill, Some(Refill { n: 500 }), "about a second of traffic");
        t.filled("p", Some((0, 500)));
        tokio::time::advance(Duration::from_secs(5)).await;
        for _ in 0..3 {
            t.take("p");
        }
        assert!(
            t.take("p").0 < 500,
            "still using the block after an idle spell"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_block_tickets_still_rotate() {
        let t = Tickets::default();
        let a = t.take("p").0;
        t.filled("p", None);
        let b = t.take("p").0;
        assert_eq!(b, a.wrapping_add(1));
    }
}
