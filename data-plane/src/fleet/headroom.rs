//! Headroom: how many requests and tokens each member's provider key has
//! left, as the providers' own rate-limit headers last said, until the
//! reset they gave (then unknown again). What one worker sees is pushed to
//! the fleet in the background (a Redis hash and a message, coalesced per
//! member) and every worker keeps the fleet's latest copy, so the request
//! path reads memory only (docs/adr/005-live-signals.md, "Headroom").

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::StreamExt as _;
use switchyard_shared::keys::RedisKeys;
use switchyard_shared::redis_client::{Redis, Timeouts};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::upstream::RateHeaders;

/// How long counts without a reset header are believed.
const NO_RESET_AGE: Duration = Duration::from_secs(60);
/// Least time between two pushes of one worker's changes (an exhausted
/// member goes at once).
const PUSH_GAP: Duration = Duration::from_millis(250);
/// The shared hash outlives its last write this long.
const HASH_TTL: Duration = Duration::from_secs(300);

/// One member's last known headroom.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Seen {
    requests: Option<(u64, Instant)>,
    tokens: Option<(u64, Instant)>,
    /// Wall-clock ms when the answer arrived: the newest report wins.
    at_ms: u64,
}

impl Seen {
    fn of(h: &RateHeaders, now: Instant, at_ms: u64) -> Self {
        let until = |d: Option<Duration>| now + d.unwrap_or(NO_RESET_AGE).min(NO_RESET_AGE * 60);
        Self {
            requests: h.remaining_requests.map(|n| (n, until(h.requests_reset))),
            tokens: h.remaining_tokens.map(|n| (n, until(h.tokens_reset))),
            at_ms,
        }
    }

    fn exhausted(&self) -> bool {
        self.requests.is_some_and(|(n, _)| n == 0) || self.tokens.is_some_and(|(n, _)| n == 0)
    }
}

/// Every member's headroom as this worker knows it (its own answers and the
/// fleet's reports).
#[derive(Default)]
pub struct Headroom {
    members: Mutex<HashMap<String, Seen>>,
    /// Members whose headroom changed here and is not pushed yet.
    dirty: Mutex<HashSet<String>>,
    changed: tokio::sync::Notify,
}

fn wall_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Headroom {
    /// Records what an answer of `member` said (its rate-limit headers).
    pub fn observe(&self, member: &str, h: &RateHeaders) {
        if h.is_empty() {
            return;
        }
        let seen = Seen::of(h, Instant::now(), wall_ms(SystemTime::now()));
        self.lock().insert(member.to_owned(), seen);
        self.dirty
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(member.to_owned());
        self.changed.notify_one();
    }

    /// (remaining requests, remaining tokens) of `member`; `None`: unknown
    /// (never seen, or past its reset).
    pub fn view(&self, member: &str) -> (Option<u64>, Option<u64>) {
        let now = Instant::now();
        let fresh = |v: Option<(u64, Instant)>| v.filter(|(_, until)| now < *until).map(|(n, _)| n);
        self.lock()
            .get(member)
            .map_or((None, None), |s| (fresh(s.requests), fresh(s.tokens)))
    }

    /// How long until `member` has room again for `estimate` tokens: `None`
    /// when it has room (or nobody knows); else the time to the reset of
    /// what it lacks.
    pub fn near_limit(&self, member: &str, estimate: u64) -> Option<Duration> {
        let now = Instant::now();
        let s = *self.lock().get(member)?;
        let short = |v: Option<(u64, Instant)>, need: u64| {
            v.filter(|(n, until)| now < *until && *n < need)
                .map(|(_, until)| until.saturating_duration_since(now))
        };
        match (short(s.requests, 1), short(s.tokens, estimate.max(1))) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Seen>> {
        self.members
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The changed members' reports to push (`member`, encoded).
    fn take_dirty(&self) -> (Vec<(String, String)>, bool) {
        let dirty: Vec<String> = self
            .dirty
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .drain()
            .collect();
        let members = self.lock();
        let now = Instant::now();
        let wall = wall_ms(SystemTime::now());
        let mut urgent = false;
        let out = dirty
            .into_iter()
            .filter_map(|m| {
                let s = members.get(&m)?;
                urgent |= s.exhausted();
                Some((m, encode(s, now, wall)))
            })
            .collect();
        (out, urgent)
    }

    /// Applies a fleet report unless this worker knows a newer one.
    fn apply(&self, member: &str, text: &str) {
        let Some(seen) = decode(text, Instant::now(), wall_ms(SystemTime::now())) else {
            tracing::debug!(member, "undecodable headroom report");
            return;
        };
        let mut members = self.lock();
        if members.get(member).is_none_or(|s| s.at_ms <= seen.at_ms) {
            members.insert(member.to_owned(), seen);
        }
    }
}

/// `requests|requests_reset_ms|tokens|tokens_reset_ms|at_ms` (resets as
/// wall-clock ms; `-` for unknown).
fn encode(s: &Seen, now: Instant, wall: u64) -> String {
    let part = |v: Option<(u64, Instant)>| match v {
        Some((n, until)) => {
            let ms = u64::try_from(until.saturating_duration_since(now).as_millis()).unwrap_or(0);
            format!("{n}|{}", wall.saturating_add(ms))
        }
        None => "-|-".to_owned(),
    };
    format!("{}|{}|{}", part(s.requests), part(s.tokens), s.at_ms)
}

fn decode(text: &str, now: Instant, wall: u64) -> Option<Seen> {
    let f: Vec<&str> = text.split('|').collect();
    if f.len() != 5 {
        return None;
    }
    let part = |n: &str, reset: &str| -> Option<Option<(u64, Instant)>> {
        if n == "-" {
            return Some(None);
        }
        let n = n.parse::<u64>().ok()?;
        let reset = reset.parse::<u64>().ok()?;
        // Past its reset (on the sender's clock): unknown again.
        let left = Duration::from_millis(reset.saturating_sub(wall).min(3_600_000));
        Some((!left.is_zero()).then_some((n, now + left)))
    };
    Some(Seen {
        requests: part(f[0], f[1])?,
        tokens: part(f[2], f[3])?,
        at_ms: f[4].parse().ok()?,
    })
}

/// Shares `headroom` with the fleet over Redis until `stop`: pushes this
/// worker's changes (coalesced) and applies everyone's, loading the hash on
/// every (re)subscription.
pub async fn share(
    redis: Redis,
    keys: RedisKeys,
    headroom: std::sync::Arc<Headroom>,
    stop: CancellationToken,
) {
    let push = push(redis.clone(), keys.clone(), headroom.clone(), stop.clone());
    let follow = follow(redis, keys, headroom, stop);
    futures::future::join(push, follow).await;
}

async fn push(
    redis: Redis,
    keys: RedisKeys,
    headroom: std::sync::Arc<Headroom>,
    stop: CancellationToken,
) {
    let timeouts = Timeouts {
        connect: Duration::from_secs(1),
        response: Duration::from_secs(1),
    };
    let mut conn = None;
    let (table, channel) = (keys.headroom_table(), keys.headroom_channel());
    let mut last = Instant::now() - PUSH_GAP;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = headroom.changed.notified() => {}
        }
        let (mut reports, urgent) = headroom.take_dirty();
        if !urgent && last.elapsed() < PUSH_GAP {
            // Coalesce: what changes meanwhile goes in the same push.
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep_until(last + PUSH_GAP) => {}
            }
            let (more, _) = headroom.take_dirty();
            reports.retain(|(m, _)| !more.iter().any(|(n, _)| n == m));
            reports.extend(more);
        }
        if reports.is_empty() {
            continue;
        }
        last = Instant::now();
        if conn.is_none() {
            conn = redis.connect(timeouts).await.ok();
        }
        let Some(c) = conn.as_mut() else { continue };
        let mut pipe = redis::pipe();
        for (member, text) in &reports {
            pipe.hset(&table, member, text).ignore();
            pipe.publish(&channel, format!("{member}\t{text}")).ignore();
        }
        pipe.pexpire(
            &table,
            i64::try_from(HASH_TTL.as_millis()).unwrap_or(i64::MAX),
        )
        .ignore();
        let sent = tokio::time::timeout(Duration::from_secs(1), pipe.query_async::<()>(c)).await;
        if !matches!(sent, Ok(Ok(()))) {
            // Headroom is advisory: a lost push is replaced by the next answer's.
            tracing::debug!("headroom push failed");
            conn = None;
        }
    }
}

async fn follow(
    redis: Redis,
    keys: RedisKeys,
    headroom: std::sync::Arc<Headroom>,
    stop: CancellationToken,
) {
    let (table, channel) = (keys.headroom_table(), keys.headroom_channel());
    let timeouts = Timeouts {
        connect: Duration::from_secs(1),
        response: Duration::from_secs(1),
    };
    loop {
        let session = async {
            let mut pubsub = redis.pubsub(Duration::from_secs(2)).await.ok()?;
            pubsub.subscribe(&channel).await.ok()?;
            let mut conn = redis.connect(timeouts).await.ok()?;
            let all: HashMap<String, String> = redis::cmd("HGETALL")
                .arg(&table)
                .query_async(&mut conn)
                .await
                .ok()?;
            for (member, text) in &all {
                headroom.apply(member, text);
            }
            Some(pubsub)
        };
        let pubsub = tokio::select! {
            () = stop.cancelled() => return,
            s = tokio::time::timeout(Duration::from_secs(5), session) => s.ok().flatten(),
        };
        if let Some(pubsub) = pubsub {
            let mut messages = pubsub.into_on_message();
            loop {
                let msg = tokio::select! {
                    () = stop.cancelled() => return,
                    m = messages.next() => m,
                };
                let Some(msg) = msg else { break };
                let text = String::from_utf8_lossy(msg.get_payload_bytes());
                if let Some((member, report)) = text.split_once('\t') {
                    headroom.apply(member, report);
                }
            }
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(requests: u64, tokens: u64, reset: Duration) -> RateHeaders {
        RateHeaders {
            remaining_requests: Some(requests),
            remaining_tokens: Some(tokens),
            requests_reset: Some(reset),
            tokens_reset: Some(reset),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn counts_hold_until_their_reset_then_are_unknown() {
        let h = Headroom::default();
        assert_eq!(h.view("m"), (None, None), "never seen: unknown");
        h.observe("m", &rate(3, 900, Duration::from_secs(2)));
        assert_eq!(h.view("m"), (Some(3), Some(900)));
        tokio::time::advance(Duration::from_millis(1999)).await;
        assert_eq!(h.view("m"), (Some(3), Some(900)));
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(h.view("m"), (None, None), "past the reset: stale");
        // Without a reset header, a count is believed for a minute.
        h.observe(
            "m",
            &RateHeaders {
                remaining_requests: Some(5),
                ..RateHeaders::default()
            },
        );
        tokio::time::advance(NO_RESET_AGE - Duration::from_millis(1)).await;
        assert_eq!(h.view("m"), (Some(5), None));
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(h.view("m"), (None, None));
    }

    #[tokio::test(start_paused = true)]
    async fn near_limit_is_no_request_left_or_fewer_tokens_than_the_estimate() {
        let h = Headroom::default();
        assert_eq!(h.near_limit("m", 100), None, "unknown is not near");
        h.observe("m", &rate(1, 100, Duration::from_secs(7)));
        assert_eq!(h.near_limit("m", 100), None, "exactly enough");
        assert_eq!(h.near_limit("m", 101), Some(Duration::from_secs(7)));
        h.observe("m", &rate(0, 5000, Duration::from_secs(3)));
        assert_eq!(h.near_limit("m", 1), Some(Duration::from_secs(3)));
        tokio::time::advance(Duration::from_secs(3)).await;
        assert_eq!(h.near_limit("m", 1), None, "the reset passed");
    }

    #[tokio::test(start_paused = true)]
    async fn fleet_reports_round_trip_and_the_newest_wins() {
        let here = Headroom::default();
        here.observe("m", &rate(4, 400, Duration::from_secs(10)));
        let (reports, urgent) = here.take_dirty();
        assert!(!urgent);
        assert_eq!(reports.len(), 1);
        assert!(here.take_dirty().0.is_empty(), "pushed once");
        let there = Headroom::default();
        there.apply("m", &reports[0].1);
        assert_eq!(there.view("m"), (Some(4), Some(400)));
        // An older report does not replace a newer one.
        let mut older = reports[0].1.rsplit_once('|').map_or("", |x| x.0).to_owned();
        older.push_str("|0");
        there.apply("m", &older.replacen('4', "9", 1));
        assert_eq!(there.view("m"), (Some(4), Some(400)));
        there.apply("m", "junk");
        there.apply("m", "1|x|2|3|4");
        assert_eq!(there.view("m"), (Some(4), Some(400)), "junk ignored");
        here.observe("m", &rate(0, 400, Duration::from_secs(10)));
        assert!(here.take_dirty().1, "an exhausted member is pushed at once");
    }
}
