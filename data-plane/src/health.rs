//! Member health and round-robin counters shared by every worker.
//!
//! Redis (production) or memory (embedded default). The success path costs
//! one Redis round trip: one script bumps the pool's counter and reads the
//! health of its members. A failure costs one more (it changes health); a
//! success after failures one more (it clears them). See
//! docs/adr/004-failover-and-health.md.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::aio::ConnectionManager;
use switchyard_shared::keys::RedisKeys;

use crate::catalog::Policy;

/// What one member's shared health says right now.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemberHealth {
    pub consecutive_failures: u32,
    /// Unix ms; benched while `now < benched_until_ms`.
    pub benched_until_ms: i64,
    /// Usage this minute (read only for members with limits).
    pub requests_this_minute: u64,
    pub tokens_this_minute: u64,
}

impl MemberHealth {
    pub fn benched(&self, now_ms: i64) -> bool {
        now_ms < self.benched_until_ms
    }
}

/// The answer of `begin`: the counter value and each member's health, in order.
#[derive(Clone, Debug, Default)]
pub struct Begin {
    pub counter: u64,
    pub now_ms: i64,
    pub health: Vec<MemberHealth>,
}

/// After a failure: is the member benched now?
#[derive(Clone, Copy, Debug)]
pub struct Failure {
    pub benched: bool,
    pub benched_until_ms: i64,
}

/// `KEYS`: the counter, then each member's health key, then each member's
/// quota key. `ARGV[1]`: '1' to bump the counter; `ARGV[1 + i]`: '1' when
/// member i has limits (its quota key is read).
const BEGIN: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local c = 0
if ARGV[1] == '1' then c = redis.call('INCR', KEYS[1]) end
local out = {c, now}
local n = (#KEYS - 1) / 2
for i = 1, n do
  local h = redis.call('HMGET', KEYS[1 + i], 'fails', 'until')
  out[#out + 1] = tonumber(h[1] or '0')
  out[#out + 1] = tonumber(h[2] or '0')
  if ARGV[1 + i] == '1' then
    local q = redis.call('HMGET', KEYS[1 + n + i], 'r', 't')
    out[#out + 1] = tonumber(q[1] or '0')
    out[#out + 1] = tonumber(q[2] or '0')
  else
    out[#out + 1] = 0
    out[#out + 1] = 0
  end
end
return out
";

const FAIL: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local threshold = tonumber(ARGV[1])
local base = tonumber(ARGV[2])
local max = tonumber(ARGV[3])
local retry_after = tonumber(ARGV[4])
local probe = ARGV[5] == '1'
local fails = redis.call('HINCRBY', KEYS[1], 'fails', 1)
local until_ms = tonumber(redis.call('HGET', KEYS[1], 'until') or '0')
local benched = 0
if fails >= threshold and (now >= until_ms or probe) then
  -- A new bench (or a failed probe): twice as long as the last one. Failures
  -- of requests already in flight while benched do not escalate it.
  local benches = redis.call('HINCRBY', KEYS[1], 'benches', 1)
  local exp = math.min(benches - 1, 30)
  local cooldown = math.min(base * (2 ^ exp), max)
  if retry_after > cooldown then cooldown = retry_after end
  until_ms = math.max(until_ms, now + cooldown)
  redis.call('HSET', KEYS[1], 'until', until_ms)
  benched = 1
elseif now < until_ms then
  -- Already benched: a longer Retry-After extends the bench, nothing shortens it.
  if now + retry_after > until_ms then
    until_ms = now + retry_after
    redis.call('HSET', KEYS[1], 'until', until_ms)
  end
  benched = 1
end
redis.call('PEXPIRE', KEYS[1], math.max(until_ms - now, 0) + max + 60000)
return {fails, benched, until_ms}
";

const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
";

pub struct RedisHealth {
    conn: ConnectionManager,
    keys: RedisKeys,
    begin: redis::Script,
    fail: redis::Script,
    release: redis::Script,
    local_counter: AtomicU64,
    last_warn_ms: AtomicU64,
}

#[derive(Default)]
pub struct Memory {
    counters: HashMap<String, u64>,
    health: HashMap<String, (MemberHealth, u32)>,
    probes: HashMap<String, (String, i64)>,
    /// (member, minute) → (requests, tokens).
    quota: HashMap<(String, i64), (u64, u64)>,
}

/// Shared state, Redis or in-process.
pub enum Fleet {
    Redis(Box<RedisHealth>),
    Memory(Mutex<Memory>),
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The current Unix minute (the rpm/tpm window).
pub fn minute() -> i64 {
    now_ms().div_euclid(60_000)
}

/// A member as `begin` needs it: its id and whether it has rpm/tpm limits.
#[derive(Clone, Copy, Debug)]
pub struct Member<'a> {
    pub id: &'a str,
    pub limited: bool,
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl Fleet {
    pub fn redis(conn: ConnectionManager, prefix: &str) -> Self {
        Fleet::Redis(Box::new(RedisHealth {
            conn,
            keys: RedisKeys::new(prefix),
            begin: redis::Script::new(BEGIN),
            fail: redis::Script::new(FAIL),
            release: redis::Script::new(RELEASE),
            local_counter: AtomicU64::new(0),
            last_warn_ms: AtomicU64::new(0),
        }))
    }

    pub fn memory() -> Self {
        Fleet::Memory(Mutex::new(Memory::default()))
    }

    /// Bumps the pool's counter (when `count`) and reads its members' health
    /// and, for members with limits, their usage this minute: one round trip.
    pub async fn begin(&self, pool_id: &str, members: &[Member<'_>], count: bool) -> Begin {
        match self {
            Fleet::Redis(r) => r.begin(pool_id, members, count).await,
            Fleet::Memory(m) => {
                let mut m = m.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                let counter = if count {
                    let c = m.counters.entry(pool_id.to_owned()).or_default();
                    *c += 1;
                    *c
                } else {
                    0
                };
                let now = minute();
                let health = members
                    .iter()
                    .map(|mem| {
                        let mut h = m.health.get(mem.id).map(|h| h.0).unwrap_or_default();
                        if mem.limited
                            && let Some((r, t)) = m.quota.get(&(mem.id.to_owned(), now))
                        {
                            h.requests_this_minute = *r;
                            h.tokens_this_minute = *t;
                        }
                        h
                    })
                    .collect();
                Begin {
                    counter,
                    now_ms: now_ms(),
                    health,
                }
            }
        }
    }

    /// Adds to a limited member's usage this minute (one round trip).
    pub async fn record_usage(&self, member: &str, requests: u64, tokens: u64) {
        let now = minute();
        match self {
            Fleet::Redis(r) => {
                let key = r.keys.member_quota(member, now);
                let mut c = r.conn.clone();
                let res: redis::RedisResult<()> = redis::pipe()
                    .atomic()
                    .hincr(&key, "r", requests)
                    .ignore()
                    .hincr(&key, "t", tokens)
                    .ignore()
                    .expire(&key, 120)
                    .ignore()
                    .query_async(&mut c)
                    .await;
                if let Err(e) = res {
                    r.warn(&e);
                }
            }
            Fleet::Memory(m) => {
                let mut m = m.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                m.quota.retain(|(_, min), _| *min >= now - 1);
                let e = m.quota.entry((member.to_owned(), now)).or_default();
                e.0 += requests;
                e.1 += tokens;
            }
        }
    }

    /// Clears a member's failures (only called when it had some).
    pub async fn success(&self, member: &str) {
        match self {
            Fleet::Redis(r) => {
                let mut c = r.conn.clone();
                let res: redis::RedisResult<i64> = redis::cmd("DEL")
                    .arg(r.keys.member_health(member))
                    .query_async(&mut c)
                    .await;
                if let Err(e) = res {
                    r.warn(&e);
                }
            }
            Fleet::Memory(m) => {
                m.lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .health
                    .remove(member);
            }
        }
    }

    /// Counts a transient failure; benches the member at the threshold (or
    /// again, twice as long, when `probe` failed).
    pub async fn failure(
        &self,
        member: &str,
        policy: &Policy,
        retry_after: Option<Duration>,
        probe: bool,
    ) -> Failure {
        let retry_after = retry_after.map_or(0, ms);
        match self {
            Fleet::Redis(r) => {
                let mut c = r.conn.clone();
                let res: redis::RedisResult<(i64, i64, i64)> = r
                    .fail
                    .key(r.keys.member_health(member))
                    .arg(policy.failure_threshold)
                    .arg(ms(policy.cooldown_base))
                    .arg(ms(policy.cooldown_max))
                    .arg(retry_after)
                    .arg(if probe { "1" } else { "0" })
                    .invoke_async(&mut c)
                    .await;
                match res {
                    Ok((_, benched, until)) => Failure {
                        benched: benched == 1,
                        benched_until_ms: until,
                    },
                    Err(e) => {
                        r.warn(&e);
                        Failure {
                            benched: false,
                            benched_until_ms: 0,
                        }
                    }
                }
            }
            Fleet::Memory(m) => {
                let mut m = m.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                let now = now_ms();
                let (h, benches) = m.health.entry(member.to_owned()).or_default();
                h.consecutive_failures += 1;
                let mut benched = false;
                if h.consecutive_failures >= policy.failure_threshold
                    && (now >= h.benched_until_ms || probe)
                {
                    *benches += 1;
                    let exp = (*benches - 1).min(30);
                    let cooldown = ms(policy.cooldown_base)
                        .saturating_mul(1 << exp)
                        .min(ms(policy.cooldown_max))
                        .max(retry_after);
                    h.benched_until_ms = h.benched_until_ms.max(now + cooldown);
                    benched = true;
                } else if now < h.benched_until_ms {
                    h.benched_until_ms = h.benched_until_ms.max(now + retry_after);
                    benched = true;
                }
                Failure {
                    benched,
                    benched_until_ms: h.benched_until_ms,
                }
            }
        }
    }

    /// Takes the pool's one fleet-wide probe token (half-open), if free.
    pub async fn try_probe(&self, pool_id: &str, token: &str, ttl: Duration) -> bool {
        match self {
            Fleet::Redis(r) => {
                let mut c = r.conn.clone();
                let res: redis::RedisResult<Option<String>> = redis::cmd("SET")
                    .arg(r.keys.probe_token(pool_id))
                    .arg(token)
                    .arg("NX")
                    .arg("PX")
                    .arg(ms(ttl).max(1))
                    .query_async(&mut c)
                    .await;
                match res {
                    Ok(v) => v.is_some(),
                    Err(e) => {
                        r.warn(&e);
                        false
                    }
                }
            }
            Fleet::Memory(m) => {
                let mut m = m.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                let now = now_ms();
                match m.probes.get(pool_id) {
                    Some((_, exp)) if *exp > now => false,
                    _ => {
                        m.probes
                            .insert(pool_id.to_owned(), (token.to_owned(), now + ms(ttl)));
                        true
                    }
                }
            }
        }
    }

    pub async fn release_probe(&self, pool_id: &str, token: &str) {
        match self {
            Fleet::Redis(r) => {
                let mut c = r.conn.clone();
                let res: redis::RedisResult<i64> = r
                    .release
                    .key(r.keys.probe_token(pool_id))
                    .arg(token)
                    .invoke_async(&mut c)
                    .await;
                if let Err(e) = res {
                    r.warn(&e);
                }
            }
            Fleet::Memory(m) => {
                let mut m = m.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                if m.probes.get(pool_id).is_some_and(|(t, _)| t == token) {
                    m.probes.remove(pool_id);
                }
            }
        }
    }
}

impl RedisHealth {
    async fn begin(&self, pool_id: &str, members: &[Member<'_>], count: bool) -> Begin {
        let mut inv = self.begin.key(self.keys.rr_counter(pool_id));
        for m in members {
            inv.key(self.keys.member_health(m.id));
        }
        let now = minute();
        for m in members {
            // Unlimited members pass their health key again; it is not read.
            inv.key(if m.limited {
                self.keys.member_quota(m.id, now)
            } else {
                self.keys.member_health(m.id)
            });
        }
        inv.arg(if count { "1" } else { "0" });
        for m in members {
            inv.arg(if m.limited { "1" } else { "0" });
        }
        let mut c = self.conn.clone();
        let res: redis::RedisResult<Vec<i64>> = inv.invoke_async(&mut c).await;
        match res {
            Ok(v) if v.len() == 2 + 4 * members.len() => Begin {
                counter: u64::try_from(v[0]).unwrap_or(0),
                now_ms: v[1],
                health: v[2..]
                    .chunks(4)
                    .map(|p| MemberHealth {
                        consecutive_failures: u32::try_from(p[0]).unwrap_or(0),
                        benched_until_ms: p[1],
                        requests_this_minute: u64::try_from(p[2]).unwrap_or(0),
                        tokens_this_minute: u64::try_from(p[3]).unwrap_or(0),
                    })
                    .collect(),
            },
            other => {
                // Redis is down: serve anyway, spreading with a local counter and
                // treating every member as healthy.
                if let Err(e) = other {
                    self.warn(&e);
                }
                Begin {
                    counter: self.local_counter.fetch_add(1, Ordering::Relaxed) + 1,
                    now_ms: now_ms(),
                    health: vec![MemberHealth::default(); members.len()],
                }
            }
        }
    }

    /// Logs Redis trouble at most once a second.
    fn warn(&self, e: &redis::RedisError) {
        let now = u64::try_from(now_ms()).unwrap_or(0);
        let last = self.last_warn_ms.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= 1000
            && self
                .last_warn_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(error = %e, "shared health unavailable; serving with local state");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy {
            failure_threshold: 2,
            cooldown_base: Duration::from_millis(1000),
            cooldown_max: Duration::from_millis(3000),
            ..Policy::default()
        }
    }

    #[tokio::test]
    async fn memory_benches_at_threshold_with_capped_doubling_cooldown() {
        let f = Fleet::memory();
        assert!(!f.failure("m", &policy(), None, false).await.benched);
        let first = f.failure("m", &policy(), None, false).await;
        assert!(first.benched);
        let now = now_ms();
        assert!((first.benched_until_ms - now - 1000).abs() < 200);
        // Requests that were in flight fail too: the bench neither grows nor shrinks.
        let in_flight = f.failure("m", &policy(), None, false).await;
        assert!(in_flight.benched);
        assert_eq!(in_flight.benched_until_ms, first.benched_until_ms);
        // Failed probes double it, up to cooldown_max.
        let second = f.failure("m", &policy(), None, true).await;
        let third = f.failure("m", &policy(), None, true).await;
        assert!((second.benched_until_ms - now - 2000).abs() < 200);
        assert!(
            (third.benched_until_ms - now - 3000).abs() < 200,
            "capped at cooldown_max"
        );
        let with_retry_after = f
            .failure("m", &policy(), Some(Duration::from_secs(10)), false)
            .await;
        assert!(
            with_retry_after.benched_until_ms - now >= 9_800,
            "Retry-After lengthens the bench"
        );
        let after = f.failure("m", &policy(), None, false).await;
        assert_eq!(
            after.benched_until_ms, with_retry_after.benched_until_ms,
            "nothing shortens it"
        );
        f.success("m").await;
        let b = f
            .begin(
                "p",
                &[Member {
                    id: "m",
                    limited: false,
                }],
                true,
            )
            .await;
        assert_eq!(b.health[0], MemberHealth::default());
    }

    #[tokio::test]
    async fn one_probe_at_a_time() {
        let f = Fleet::memory();
        assert!(f.try_probe("p", "a", Duration::from_secs(5)).await);
        assert!(!f.try_probe("p", "b", Duration::from_secs(5)).await);
        f.release_probe("p", "b").await;
        assert!(
            !f.try_probe("p", "b", Duration::from_secs(5)).await,
            "only the holder releases"
        );
        f.release_probe("p", "a").await;
        assert!(f.try_probe("p", "b", Duration::from_secs(5)).await);
    }
}
