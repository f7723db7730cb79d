//! The Redis backend: health in one hash (`{P:health}:members`, a field per
//! member) changed only by the scripts in `scripts.rs`, each of which bumps
//! `{P:health}:version` and PUBLISHes the member's new entry on
//! `P:health:changes`; round-robin counters leased with INCRBY; rpm/tpm
//! usage per member and minute. Every script touches one hash tag, so it
//! runs on a Redis Cluster too. Times in Redis are Redis's clock (TIME);
//! every answer carries it, so workers convert to their own clock without
//! trusting theirs to agree.

use std::collections::HashMap;
use std::time::Duration;

use switchyard_shared::keys::RedisKeys;
use switchyard_shared::redis_client::{Conn, Redis, Timeouts};
use tokio::sync::OnceCell;
use tokio::time::Instant;

use super::health::Probe;
use super::scripts::*;
use super::{Backend, BackendError, Entry, Failure};
use crate::model::Limits;

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// `t` (Redis ms) on this worker's clock, given Redis's `now` at `base`.
fn at(base: Instant, now: i64, t: i64) -> Instant {
    let d = Duration::from_millis(t.abs_diff(now));
    if t >= now {
        base + d
    } else {
        base.checked_sub(d).unwrap_or(base)
    }
}

fn bad(what: &str) -> BackendError {
    BackendError(format!("unexpected answer from Redis: {what}"))
}

/// Parses `now|fails|benches|until|owner|probe|updated|version`, read at `base`.
fn parse_answer(s: &str, base: Instant) -> Result<Entry, BackendError> {
    let mut f = s.splitn(2, '|');
    let now: i64 = f
        .next()
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| bad(s))?;
    parse_entry(f.next().ok_or_else(|| bad(s))?, now, base)
}

fn parse_entry(s: &str, now: i64, base: Instant) -> Result<Entry, BackendError> {
    let f: Vec<&str> = s.split('|').collect();
    if f.len() != 7 {
        return Err(bad(s));
    }
    let num = |i: usize| f[i].parse::<i64>().map_err(|_| bad(s));
    let (till, probe, updated) = (num(2)?, num(4)?, num(5)?);
    Ok(Entry {
        fails: u32::try_from(num(0)?).unwrap_or(0),
        benches: u32::try_from(num(1)?).unwrap_or(0),
        benched_until: (till > 0).then(|| at(base, now, till)),
        probe: (!f[3].is_empty()).then(|| Probe {
            owner: f[3].to_owned(),
            until: at(base, now, probe),
        }),
        updated: at(base, now, updated),
        version: u64::try_from(num(6)?).unwrap_or(0),
    })
}

/// Parses a health message: `now|<entry>|member`.
pub fn parse_message(s: &str, base: Instant) -> Result<(String, Entry), BackendError> {
    let mut f = s.splitn(9, '|');
    let now: i64 = f
        .next()
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| bad(s))?;
    let parts: Vec<&str> = f.collect();
    if parts.len() != 8 {
        return Err(bad(s));
    }
    let entry = parse_entry(&parts[..7].join("|"), now, base)?;
    Ok((parts[7].to_owned(), entry))
}

pub struct RedisBackend {
    redis: Redis,
    conn: OnceCell<Conn>,
    keys: RedisKeys,
    fail: redis::Script,
    succeed: redis::Script,
    claim: redis::Script,
    release: redis::Script,
    merge: redis::Script,
    load: redis::Script,
    permits: redis::Script,
    charge: redis::Script,
    usage: redis::Script,
    heartbeat: redis::Script,
    budget: redis::Script,
    budget_charge: redis::Script,
}

impl RedisBackend {
    pub fn new(redis: Redis, keys: RedisKeys) -> Self {
        Self {
            redis,
            conn: OnceCell::new(),
            keys,
            fail: health_script(FAIL),
            succeed: health_script(SUCCEED),
            claim: health_script(CLAIM),
            release: health_script(RELEASE),
            merge: health_script(MERGE),
            load: redis::Script::new(LOAD),
            permits: redis::Script::new(&format!("{WINDOW}{PERMITS}")),
            charge: redis::Script::new(&format!("{WINDOW}{CHARGE}")),
            usage: redis::Script::new(&format!("{WINDOW}{USAGE}")),
            budget: redis::Script::new(BUDGET),
            budget_charge: redis::Script::new(BUDGET_CHARGE),
            heartbeat: redis::Script::new(HEARTBEAT),
        }
    }

    pub fn keys(&self) -> &RedisKeys {
        &self.keys
    }

    async fn conn(&self) -> Result<Conn, BackendError> {
        let timeouts = Timeouts {
            connect: Duration::from_secs(1),
            response: Duration::from_secs(1),
        };
        self.conn
            .get_or_try_init(|| self.redis.connect(timeouts))
            .await
            .cloned()
            .map_err(|e| BackendError(e.to_string()))
    }

    /// Runs a health script for `member` with `args` after the channel and member.
    async fn health<T: redis::FromRedisValue>(
        &self,
        script: &redis::Script,
        member: &str,
        args: &[String],
    ) -> Result<T, BackendError> {
        let mut conn = self.conn().await?;
        let mut inv = script.key(self.keys.health_table());
        inv.key(self.keys.health_version())
            .arg(self.keys.health_channel())
            .arg(member);
        for a in args {
            inv.arg(a);
        }
        inv.invoke_async(&mut conn)
            .await
            .map_err(|e| BackendError(e.to_string()))
    }

    async fn entry(
        &self,
        script: &redis::Script,
        member: &str,
        args: &[String],
    ) -> Result<Entry, BackendError> {
        let s: String = self.health(script, member, args).await?;
        parse_answer(&s, Instant::now())
    }

    /// The whole table and the change counter it is at.
    pub async fn load_all(&self) -> Result<(HashMap<String, Entry>, u64), BackendError> {
        let mut conn = self.conn().await?;
        let v: Vec<redis::Value> = self
            .load
            .key(self.keys.health_table())
            .key(self.keys.health_version())
            .invoke_async(&mut conn)
            .await
            .map_err(|e| BackendError(e.to_string()))?;
        let base = Instant::now();
        let int = |x: &redis::Value| redis::from_redis_value_ref::<i64>(x).map_err(|_| bad("load"));
        let (now, version) = match (v.first(), v.get(1)) {
            (Some(a), Some(b)) => (int(a)?, u64::try_from(int(b)?).unwrap_or(0)),
            _ => return Err(bad("load")),
        };
        let mut out = HashMap::new();
        for pair in v[2..].chunks(2) {
            if let [k, val] = pair {
                let k: String = redis::from_redis_value_ref(k).map_err(|_| bad("load"))?;
                let val: String = redis::from_redis_value_ref(val).map_err(|_| bad("load"))?;
                out.insert(k, parse_entry(&val, now, base)?);
            }
        }
        Ok((out, version))
    }

    /// Says this worker is alive; returns how many are (for limit shares).
    pub async fn heartbeat(&self, worker: &str, alive_for: Duration) -> Result<u64, BackendError> {
        let mut conn = self.conn().await?;
        self.heartbeat
            .key(self.keys.workers())
            .arg(worker)
            .arg(ms(alive_for))
            .invoke_async(&mut conn)
            .await
            .map_err(|e| BackendError(e.to_string()))
    }

    /// The change counter, for the periodic check.
    pub async fn version(&self) -> Result<u64, BackendError> {
        let mut conn = self.conn().await?;
        let v: Option<u64> = redis::cmd("GET")
            .arg(self.keys.health_version())
            .query_async(&mut conn)
            .await
            .map_err(|e| BackendError(e.to_string()))?;
        Ok(v.unwrap_or(0))
    }
}

#[async_trait::async_trait]
impl Backend for RedisBackend {
    async fn fail(
        &self,
        member: &str,
        f: &Failure,
        probe_owner: Option<&str>,
    ) -> Result<Entry, BackendError> {
        let args = [
            f.threshold.to_string(),
            ms(f.cooldown_base).to_string(),
            ms(f.cooldown_max).to_string(),
            ms(f.retry_after.unwrap_or_default()).to_string(),
            probe_owner.unwrap_or_default().to_owned(),
            ms(f.stale_after()).to_string(),
            if f.escalates { "1" } else { "0" }.to_owned(),
        ];
        self.entry(&self.fail, member, &args).await
    }

    async fn succeed(
        &self,
        member: &str,
        probe_owner: Option<&str>,
    ) -> Result<Entry, BackendError> {
        self.entry(
            &self.succeed,
            member,
            &[probe_owner.unwrap_or_default().to_owned()],
        )
        .await
    }

    async fn claim(
        &self,
        member: &str,
        owner: &str,
        ttl: Duration,
        stale_after: Duration,
    ) -> Result<(bool, Entry), BackendError> {
        let args = [
            owner.to_owned(),
            ms(ttl).to_string(),
            ms(stale_after).to_string(),
        ];
        let (granted, s): (i64, String) = self.health(&self.claim, member, &args).await?;
        Ok((granted == 1, parse_answer(&s, Instant::now())?))
    }

    async fn release(&self, member: &str, owner: &str) -> Result<Entry, BackendError> {
        self.entry(&self.release, member, &[owner.to_owned()]).await
    }

    async fn merge(&self, member: &str, local: &Entry) -> Result<Entry, BackendError> {
        let now = Instant::now();
        let left = local
            .benched_until
            .map_or(-1, |u| ms(u.saturating_duration_since(now)));
        let args = [
            local.fails.to_string(),
            local.benches.to_string(),
            left.to_string(),
        ];
        self.entry(&self.merge, member, &args).await
    }

    async fn lease(&self, pool_id: &str, n: u64) -> Result<u64, BackendError> {
        let mut conn = self.conn().await?;
        let last: u64 = redis::cmd("INCRBY")
            .arg(self.keys.rr_counter(pool_id))
            .arg(n)
            .query_async(&mut conn)
            .await
            .map_err(|e| BackendError(e.to_string()))?;
        Ok(last.saturating_sub(n) + 1)
    }

    async fn charge(
        &self,
        member: &str,
        minutes_ago: i64,
        requests: i64,
        tokens: i64,
    ) -> Result<(), BackendError> {
        let mut conn = self.conn().await?;
        let _: i64 = self
            .charge
            .key(self.keys.member_quota(member))
            .arg(tokens)
            .arg(requests)
            .arg(minutes_ago)
            .invoke_async(&mut conn)
            .await
            .map_err(|e| BackendError(e.to_string()))?;
        Ok(())
    }

    async fn permits(
        &self,
        key: &str,
        limits: Limits,
        want: super::permits::Want,
    ) -> Result<super::permits::Grant, BackendError> {
        let mut conn = self.conn().await?;
        let limit = |l: Option<u64>| l.map_or(-1, |v| i64::try_from(v).unwrap_or(i64::MAX));
        let (requests, tokens, used_requests, used_tokens, left): (u64, u64, u64, u64, u64) = self
            .permits
            .key(self.keys.member_quota(key))
            .arg(limit(limits.rpm))
            .arg(limit(limits.tpm))
            .arg(want.requests)
            .arg(want.tokens)
            .invoke_async(&mut conn)
            .await
            .map_err(|e| BackendError(e.to_string()))?;
        Ok(super::permits::Grant {
            requests,
            tokens,
            used_requests,
            used_tokens,
            left: Duration::from_millis(left),
        })
    }

    async fn budget(
        &self,
        key: &str,
        windows: &[(String, u64)],
        tokens: u64,
    ) -> Result<super::BudgetLease, BackendError> {
        let mut conn = self.conn().await?;
        let mut call = self.budget.key(self.keys.budget(key));
        call.arg(windows.len());
        for (field, limit) in windows {
            call.arg(field).arg(*limit);
        }
        call.arg(tokens);
        let (i, n): (usize, u64) = call
            .invoke_async(&mut conn)
            .await
            .map_err(|e| BackendError(e.to_string()))?;
        Ok(match i.checked_sub(1) {
            Some(window) => super::BudgetLease::Spent { window, used: n },
            None => super::BudgetLease::Granted(n),
        })
    }

    async fn budget_charge(
        &self,
        key: &str,
        fields: &[String],
        tokens: i64,
    ) -> Result<(), BackendError> {
        let mut conn = self.conn().await?;
        let mut call = self.budget_charge.key(self.keys.budget(key));
        call.arg(tokens);
        for f in fields {
            call.arg(f);
        }
        let _: i64 = call
            .invoke_async(&mut conn)
            .await
            .map_err(|e| BackendError(e.to_string()))?;
        Ok(())
    }

    async fn usage(&self, member: &str) -> Result<(u64, u64), BackendError> {
        let mut conn = self.conn().await?;
        self.usage
            .key(self.keys.member_quota(member))
            .invoke_async(&mut conn)
            .await
            .map_err(|e| BackendError(e.to_string()))
    }

    async fn usage_many(&self, members: &[String]) -> Result<Vec<(u64, u64)>, BackendError> {
        let mut conn = self.conn().await?;
        if matches!(conn, Conn::Cluster(_)) {
            // The members' keys live on many nodes: one read each, concurrently.
            return futures::future::try_join_all(members.iter().map(|m| self.usage(m))).await;
        }
        // One round trip: the script loaded, then every member's read.
        let mut pipe = redis::pipe();
        pipe.load_script(&self.usage).ignore();
        for m in members {
            pipe.invoke_script(&self.usage.key(self.keys.member_quota(m)));
        }
        pipe.query_async(&mut conn)
            .await
            .map_err(|e| BackendError(e.to_string()))
    }

    async fn load(&self) -> Result<(HashMap<String, Entry>, u64), BackendError> {
        self.load_all().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn messages_convert_redis_time_to_the_workers_clock() {
        let base = Instant::now();
        let (member, e) =
            parse_message("1000|3|1|6000|w1|9000|900|42|pool/m|x", base).expect("parses");
        assert_eq!(member, "pool/m|x", "the member is the rest, bars and all");
        assert_eq!(e.fails, 3);
        assert_eq!(e.benches, 1);
        assert_eq!(e.benched_until, Some(base + Duration::from_secs(5)));
        assert_eq!(
            e.probe,
            Some(Probe {
                owner: "w1".into(),
                until: base + Duration::from_secs(8)
            })
        );
        assert_eq!(e.version, 42);
        assert!(parse_message("garbage", base).is_err());
        assert!(parse_answer("1|2|3", base).is_err());
    }
}
