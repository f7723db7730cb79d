//! A pool's admission queue: requests that found every member at its cap
//! wait here, first come first served, each for as long as its deadline
//! allows. A freed slot wakes the head, which tries again; only the head
//! may take a slot while others wait, so nobody overtakes.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;
use tokio::time::Instant;

use super::Slots;

/// The pool's queue is full.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the admission queue is full")]
pub struct Full;

#[derive(Debug, Default)]
pub struct Queue {
    waiters: Mutex<VecDeque<(u64, Arc<Notify>)>>,
    next: AtomicU64,
}

impl Queue {
    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<(u64, Arc<Notify>)>> {
        self.waiters
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// Tells the head to try again (kept if it is not waiting right now).
    pub(super) fn wake_head(&self) {
        if let Some((_, n)) = self.lock().front() {
            n.notify_one();
        }
    }
}

/// A request's place in a pool's queue; leaving it (dropping the place:
/// a slot taken, given up, the caller gone) lets the next one move up.
#[derive(Debug)]
pub struct Place {
    queue: Arc<Queue>,
    slots: Arc<Slots>,
    id: u64,
    notify: Arc<Notify>,
    /// The pool whose queue this is.
    pool: String,
    /// When the request joined.
    joined: Instant,
}

impl Place {
    pub(super) fn join(
        queue: Arc<Queue>,
        slots: Arc<Slots>,
        pool: &str,
        limit: usize,
    ) -> Result<Self, Full> {
        let notify = Arc::new(Notify::new());
        let id = queue.next.fetch_add(1, Ordering::Relaxed);
        {
            let mut w = queue.lock();
            if w.len() >= limit {
                return Err(Full);
            }
            w.push_back((id, notify.clone()));
        }
        slots.waiting.fetch_add(1, Ordering::SeqCst);
        Ok(Self {
            queue,
            slots,
            id,
            notify,
            pool: pool.to_owned(),
            joined: Instant::now(),
        })
    }

    /// The pool whose queue this is.
    pub fn pool(&self) -> &str {
        &self.pool
    }

    pub fn joined(&self) -> Instant {
        self.joined
    }

    /// Whether this request is first in line.
    pub fn is_head(&self) -> bool {
        self.queue
            .lock()
            .front()
            .is_some_and(|(id, _)| *id == self.id)
    }

    /// Waits until this request is woken (a slot freed while it is at the
    /// head) or `until`; false when `until` came first.
    pub async fn wait(&self, until: Instant) -> bool {
        tokio::time::timeout_at(until, self.notify.notified())
            .await
            .is_ok()
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut w = self.queue.lock();
        let was_head = w.front().is_some_and(|(id, _)| *id == self.id);
        w.retain(|(id, _)| *id != self.id);
        if was_head && let Some((_, next)) = w.front() {
            // It may find a slot this one did not take.
            next.notify_one();
        }
        let empty = w.is_empty();
        drop(w);
        self.slots.waiting.fetch_sub(1, Ordering::SeqCst);
        if empty {
            self.slots.prune(&self.pool);
        }
    }
}
