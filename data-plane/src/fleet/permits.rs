//! Leased permit blocks: a limited member's (or caller's) rpm/tpm window,
//! held like the round-robin tickets (`tickets.rs`). A worker leases a block
//! of the current window's permits — requests and tokens — sized to its
//! recent share of the traffic, serves requests from memory, asks for the
//! next block in the background while a part of this one is left, and gives
//! back what it did not use when the window ends or its traffic falls off.
//! The backend counts a block as used when it is leased, so the fleet's
//! permits never exceed the limit; the request path waits on the backend
//! only when its block is empty (docs/adr/005-live-signals.md). A limit
//! that the worker's traffic fills (its block would be its whole share) is
//! not leased ahead: the block is leased when empty, as small as the need.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::time::Instant;

use super::permit_block::{Block, RATE_WINDOW};
pub use super::permit_block::{MAX_BLOCK, Origin, Unused, Want};
use crate::model::Limits;

/// A refused lease is believed this long before the backend is asked again
/// (another worker may give permits back meanwhile).
const DENIAL_HOLD: Duration = Duration::from_secs(1);
/// A block is trimmed when it holds more than this many blocks of the
/// worker's current rate (its share shrank).
const TRIM_FACTOR: u64 = 4;

/// The backend's answer to a lease: permits granted out of the window it is
/// in (none: the window is spent), and how long that window lasts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Grant {
    pub requests: u64,
    pub tokens: u64,
    /// The window's counts after the lease (for a refusal's message).
    pub used_requests: u64,
    pub used_tokens: u64,
    /// Until the window ends.
    pub left: Duration,
}

impl Grant {
    pub fn refused(&self) -> bool {
        self.requests == 0
    }
}

/// Permits a worker holds and has not used.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Held {
    pub requests: u64,
    pub tokens: u64,
    pub budget_tokens: u64,
}

/// What a request found in its block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Found {
    /// Served from the block; `overshoot` tokens of its estimate were not
    /// in it (charged to the backend in the background).
    Served { overshoot: u64 },
    /// The window is spent (a lease was refused a moment ago).
    Denied {
        requests: u64,
        tokens: u64,
        retry_after: Duration,
    },
    /// Nothing in hand: lease a block now.
    Empty,
}

/// One take: what was found, a background refill to ask for, and permits
/// of a window that is over to give back.
#[derive(Debug)]
pub struct Take {
    pub found: Found,
    pub refill: Option<Want>,
    pub unused: Option<Unused>,
}

#[derive(Default)]
pub struct Permits {
    blocks: RwLock<HashMap<String, Arc<Mutex<Block>>>>,
    /// One lease on the request path per key at a time.
    leasing: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

fn lock(b: &Mutex<Block>) -> std::sync::MutexGuard<'_, Block> {
    b.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Permits {
    fn block(&self, key: &str, limits: Limits, now: Instant) -> Arc<Mutex<Block>> {
        if let Some(b) = self.existing(key) {
            return b;
        }
        self.blocks
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(key.to_owned())
            .or_insert_with(|| Arc::new(Mutex::new(Block::new(limits, now))))
            .clone()
    }

    /// `key`'s block, if it has one (no block is made).
    fn existing(&self, key: &str) -> Option<Arc<Mutex<Block>>> {
        self.blocks
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(key)
            .cloned()
    }

    /// The lock a request holds while it leases for `key` on the request path.
    pub fn leasing(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.leasing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(key.to_owned())
            .or_default()
            .clone()
    }

    /// Takes one request and its token estimate from `key`'s block.
    /// `fresh`: a lease for this request was just granted, so a block with
    /// a request but fewer tokens than the estimate still serves it (the
    /// window had room; the rest is an overshoot, as one reservation's was).
    pub fn take(
        &self,
        key: &str,
        limits: Limits,
        estimate: u64,
        workers: u64,
        fresh: bool,
    ) -> Take {
        let now = Instant::now();
        let block = self.block(key, limits, now);
        let mut b = lock(&block);
        b.limits = limits;
        let unused = b.roll(now);
        let fits = b.has_room(estimate)
            || (fresh && b.until.is_some() && b.requests > 0 && (b.tokens > 0 || estimate == 0));
        let found = if fits {
            if !fresh {
                b.count(now, estimate);
            }
            b.requests -= 1;
            let overshoot = if limits.tpm.is_some() {
                let taken = b.tokens.min(estimate);
                b.tokens -= taken;
                estimate - taken
            } else {
                0
            };
            Found::Served { overshoot }
        } else {
            if !fresh {
                b.count(now, estimate);
            }
            match b.denied {
                Some((until, requests, tokens, ends)) if until > now => Found::Denied {
                    requests,
                    tokens,
                    retry_after: ends.duration_since(now),
                },
                _ => Found::Empty,
            }
        };
        let want = b.size(estimate, workers);
        let low = b.until.is_some() && b.requests.saturating_mul(2) <= want.requests
            || limits.tpm.is_some() && b.tokens.saturating_mul(2) <= want.tokens;
        let refill = (matches!(found, Found::Served { .. })
            && low
            && !b.tight(want, workers)
            && !b.fetching
            && b.denied.is_none_or(|(u, ..)| u <= now))
        .then(|| {
            b.fetching = true;
            want
        });
        Take {
            found,
            refill,
            unused,
        }
    }

    /// What a lease on the request path asks for.
    pub fn want(&self, key: &str, limits: Limits, estimate: u64, workers: u64) -> Want {
        let now = Instant::now();
        let block = self.block(key, limits, now);
        let mut b = lock(&block);
        b.limits = limits;
        let want = b.size(estimate, workers);
        if b.tight(want, workers) {
            // As little as this request needs.
            let tokens = if limits.tpm.is_some() {
                estimate.max(1)
            } else {
                0
            };
            return Want {
                requests: 1,
                tokens,
            };
        }
        want
    }

    /// A lease came back (`None`: it failed; `background`: it was a refill).
    /// Returns permits of an earlier window to give back.
    pub fn filled(
        &self,
        key: &str,
        limits: Limits,
        grant: Option<Grant>,
        origin: Origin,
        background: bool,
    ) -> Option<Unused> {
        let now = Instant::now();
        let block = self.block(key, limits, now);
        let mut b = lock(&block);
        if background {
            b.fetching = false;
        }
        let g = grant?;
        let until = now + g.left;
        b.fleet_left = Some((
            limits.rpm.map_or(0, |l| l.saturating_sub(g.used_requests)),
            limits.tpm.map_or(0, |l| l.saturating_sub(g.used_tokens)),
            until,
        ));
        if g.refused() {
            b.denied = Some((
                now + DENIAL_HOLD.min(g.left),
                g.used_requests,
                g.used_tokens,
                until,
            ));
            return b.roll(now);
        }
        b.denied = None;
        // A grant from a newer window than the block's ends the block.
        let newer = b
            .until
            .is_some_and(|u| u <= now || until > u + Duration::from_secs(1));
        let unused = if newer { b.end() } else { None };
        // Within one window the first grant's end stands.
        b.until = Some(b.until.unwrap_or(until));
        b.origin = origin;
        b.requests = b.requests.saturating_add(g.requests);
        b.tokens = b.tokens.saturating_add(g.tokens);
        unused
    }

    /// What `key`'s limits have left this window, fleet-wide, as of this
    /// worker's last lease (the limit less every worker's leases) plus what
    /// its own block still holds; the whole limit once that window is over;
    /// `None` where no lease has told (or the limit has no such part).
    /// Memory only: QUOTA_AWARE and ListModels read it.
    pub fn remaining(&self, key: &str) -> (Option<u64>, Option<u64>) {
        let Some(block) = self.existing(key) else {
            return (None, None);
        };
        let b = lock(&block);
        let now = Instant::now();
        let (r, t) = match b.fleet_left {
            None => return (None, None),
            Some((_, _, ends)) if ends <= now => return (b.limits.rpm, b.limits.tpm),
            Some((r, t, _)) => match b.until {
                Some(u) if u > now => (r.saturating_add(b.requests), t.saturating_add(b.tokens)),
                _ => (r, t),
            },
        };
        (b.limits.rpm.map(|_| r), b.limits.tpm.map(|_| t))
    }

    /// Settles a request's tokens: `diff` more than its estimate (negative:
    /// fewer). What the block can absorb stays local; the rest is returned
    /// to be charged to the backend.
    pub fn settle(&self, key: &str, diff: i64) -> i64 {
        let Some(block) = self.existing(key) else {
            return diff;
        };
        let now = Instant::now();
        let mut b = lock(&block);
        if b.limits.tpm.is_none() || b.until.is_none_or(|u| u <= now) {
            return diff;
        }
        // Blocks are sized to the tokens requests really use.
        b.in_window.1 = b.in_window.1.saturating_add_signed(diff);
        if diff < 0 {
            b.tokens = b.tokens.saturating_add(diff.unsigned_abs());
            return 0;
        }
        let more = diff.unsigned_abs();
        let taken = b.tokens.min(more);
        b.tokens -= taken;
        i64::try_from(more - taken).unwrap_or(i64::MAX)
    }

    /// Ends blocks whose window is over and trims those that hold far more
    /// than the worker's traffic now needs; returns what to give back.
    pub fn sweep(&self, workers: u64) -> Vec<(String, Unused)> {
        let now = Instant::now();
        let blocks: Vec<(String, Arc<Mutex<Block>>)> = self
            .blocks
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .map(|(k, b)| (k.clone(), b.clone()))
            .collect();
        let mut out = Vec::new();
        for (key, block) in blocks {
            let mut b = lock(&block);
            if let Some(u) = b.roll(now) {
                out.push((key, u));
                continue;
            }
            if b.until.is_none() {
                continue;
            }
            // Bring the rate up to date (no traffic since is no traffic).
            if now.duration_since(b.window_start) >= RATE_WINDOW {
                let span = now.duration_since(b.window_start);
                b.last_rate = if span < RATE_WINDOW * 2 {
                    b.in_window
                } else {
                    (0, 0)
                };
                b.in_window = (0, 0);
                b.window_start = now;
            }
            let want = b.size(0, workers);
            let keep = |w: u64| w.saturating_mul(TRIM_FACTOR);
            // A budget block counts no requests: it keeps them all.
            let requests = if matches!(b.origin, Origin::Budget(_)) {
                0
            } else {
                b.requests.saturating_sub(keep(want.requests))
            };
            let tokens = if b.limits.tpm.is_some() {
                b.tokens.saturating_sub(keep(want.tokens))
            } else {
                0
            };
            if requests > 0 || tokens > 0 {
                b.requests -= requests;
                b.tokens -= tokens;
                out.push((
                    key,
                    Unused {
                        origin: b.origin.clone(),
                        requests,
                        tokens,
                    },
                ));
            }
        }
        out
    }

    /// Drops every block without giving it back: the backend is
    /// unreachable and may come back without the counts the blocks were
    /// leased from. Until then the local share decides; leases counted in a
    /// backend that kept them stay counted there until their window ends
    /// (the safe side: never over the limit).
    pub fn forfeit(&self) {
        for b in self
            .blocks
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
        {
            lock(b).end();
        }
    }

    /// Permits held and not used: requests and tokens of rpm/tpm windows,
    /// tokens of budgets.
    pub fn held(&self) -> Held {
        let mut h = Held::default();
        for b in self
            .blocks
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
        {
            let b = lock(b);
            match b.origin {
                _ if b.until.is_none() => {}
                Origin::Budget(_) => h.budget_tokens += b.tokens,
                _ => {
                    h.requests += b.requests;
                    h.tokens += b.tokens;
                }
            }
        }
        h
    }

    /// Ends every block (the worker stops): what they did not use.
    pub fn drain(&self) -> Vec<(String, Unused)> {
        let blocks = self
            .blocks
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        blocks
            .iter()
            .filter_map(|(k, b)| lock(b).end().map(|u| (k.clone(), u)))
            .collect()
    }
}

#[cfg(test)]
#[path = "permits_tests.rs"]
mod tests;
