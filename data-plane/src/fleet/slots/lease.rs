//! Leasing slot shares: a few times a second one script (`scripts::SLOTS`)
//! renews this worker's share of every capped member and learns its new
//! one — the cap split over the live workers by what each wants, each
//! record expiring with its worker's lease — so a worker that joins gets
//! its share as the others shrink, and a killed worker's share returns to
//! the others within [`LEASE_TTL`]. Never on the request path: while Redis
//! is unreachable a share stays until its lease lapses, then falls back to
//! the cap split evenly over the workers last seen.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use switchyard_shared::keys::RedisKeys;
use switchyard_shared::redis_client::{Conn, Redis, Timeouts};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Slot, Slots};
use crate::catalog::Catalog;

/// How often a worker renews its shares.
pub const LEASE_EVERY: Duration = Duration::from_millis(250);
/// A share lapses this long after the lease that granted it was asked for
/// (a killed worker's share frees after this).
pub const LEASE_TTL: Duration = Duration::from_secs(3);
/// Longest one lease waits on Redis.
const LEASE_TIMEOUT: Duration = Duration::from_secs(1);

/// The script and its connection.
pub struct Lessor {
    redis: Redis,
    keys: RedisKeys,
    conn: tokio::sync::OnceCell<Conn>,
    script: redis::Script,
}

/// One member's part of a lease.
struct Ask {
    member: String,
    slot: Arc<Slot>,
    holds: u32,
    want: u32,
}

impl Lessor {
    pub fn new(redis: Redis, keys: RedisKeys) -> Self {
        Self {
            redis,
            keys,
            conn: tokio::sync::OnceCell::new(),
            script: redis::Script::new(crate::fleet::scripts::SLOTS),
        }
    }

    async fn conn(&self) -> Result<Conn, String> {
        let timeouts = Timeouts {
            connect: Duration::from_secs(1),
            response: LEASE_TIMEOUT,
        };
        self.conn
            .get_or_try_init(|| self.redis.connect(timeouts))
            .await
            .cloned()
            .map_err(|e| e.to_string())
    }

    /// Renews `asks` as `me`: `(grant, live workers)` per ask, in order.
    async fn lease(&self, me: &str, asks: &[Ask]) -> Result<Vec<(u32, u32)>, String> {
        let mut inv = self.script.prepare_invoke();
        inv.arg(me)
            .arg(u64::try_from(LEASE_TTL.as_millis()).unwrap_or(3000));
        for a in asks {
            inv.key(self.keys.member_slots(&a.member))
                .arg(a.slot.cap())
                .arg(a.holds)
                .arg(a.want);
        }
        let mut conn = self.conn().await?;
        let flat: Vec<u32> = inv
            .invoke_async(&mut conn)
            .await
            .map_err(|e| e.to_string())?;
        if flat.len() != asks.len() * 2 {
            return Err(format!(
                "slot lease answered {} values for {} members",
                flat.len(),
                asks.len()
            ));
        }
        Ok(flat.chunks(2).map(|p| (p[0], p[1])).collect())
    }

    /// Gives up this worker's records (its in-flight requests are done).
    async fn leave(&self, me: &str, members: &[String]) -> Result<(), String> {
        let mut conn = self.conn().await?;
        let mut pipe = redis::pipe();
        for m in members {
            pipe.hdel(self.keys.member_slots(m), me).ignore();
        }
        pipe.query_async::<()>(&mut conn)
            .await
            .map_err(|e| e.to_string())
    }
}

/// Capped members of the config and their caps.
fn caps(catalog: &Catalog) -> HashMap<String, u32> {
    let (pools, _) = catalog.models();
    pools
        .iter()
        .flat_map(|p| p.members.iter())
        .filter(|c| !c.ephemeral)
        .filter_map(|c| c.max_concurrency.map(|cap| (c.member_id.clone(), cap)))
        .collect()
}

/// Renews this worker's shares until `stop`, then gives them up.
pub async fn run(
    slots: Arc<Slots>,
    catalog: Arc<ArcSwap<Catalog>>,
    lessor: Lessor,
    me: String,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(LEASE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = tick.tick() => {}
            () = slots.new_member.notified() => {}
        }
        let loaded = catalog.load();
        if loaded.loaded {
            slots.retain(&caps(&loaded));
        }
        let asks: Vec<Ask> = slots
            .members()
            .iter()
            .map(|(id, slot)| Ask {
                member: id.clone(),
                slot: slot.clone(),
                holds: Slots::claim(slot),
                want: Slots::want(slot),
            })
            .collect();
        if asks.is_empty() {
            continue;
        }
        let asked_at = Instant::now();
        let failed = match tokio::time::timeout(LEASE_TIMEOUT, lessor.lease(&me, &asks)).await {
            Ok(Ok(grants)) => {
                for (a, (grant, workers)) in asks.iter().zip(grants) {
                    if grant != a.slot.share() {
                        tracing::debug!(member = %a.member, share = grant, workers, cap = a.slot.cap(), "slot share changed");
                    }
                    slots.set_workers(workers);
                    slots.granted(&a.slot, grant, asked_at, LEASE_TTL);
                }
                false
            }
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "slot shares not leased");
                true
            }
            Err(_) => {
                tracing::debug!("slot shares not leased: timed out");
                true
            }
        };
        slots.lapse(Instant::now(), failed);
    }
    let members: Vec<String> = slots.members().keys().cloned().collect();
    if !members.is_empty() {
        let _ = tokio::time::timeout(LEASE_TIMEOUT, lessor.leave(&me, &members)).await;
    }
}

#[cfg(test)]
mod tests {
    use switchyard_shared::redis_client::RedisConfig;
    use switchyard_testkit::harness::{RedisPrefix, redis_url};

    use super::*;

    fn lessor(prefix: &RedisPrefix) -> Lessor {
        let redis = Redis::open(&RedisConfig {
            url: redis_url(),
            cluster: false,
            ca_file: None,
        })
        .expect("redis url");
        Lessor::new(redis, RedisKeys::new(prefix.0.clone()))
    }

    /// One worker's lease of member "m" (cap 4): its grant.
    async fn lease(l: &Lessor, me: &str, holds: u32, want: u32) -> (u32, u32) {
        let ask = Ask {
            member: "m".into(),
            slot: Arc::new(Slot::new(4, 0)),
            holds,
            want,
        };
        l.lease(me, &[ask]).await.expect("lease")[0]
    }

    /// The records in Redis never add up to more than the cap.
    async fn recorded(l: &Lessor) -> u32 {
        let mut conn = l.conn().await.expect("conn");
        let all: Vec<(String, String)> = redis::cmd("HGETALL")
            .arg(l.keys.member_slots("m"))
            .query_async(&mut conn)
            .await
            .expect("hgetall");
        all.iter()
            .map(|(_, v)| {
                v.split('|')
                    .next()
                    .and_then(|g| g.parse::<u32>().ok())
                    .unwrap_or(0)
            })
            .sum()
    }

    // Real Redis (the script runs on Redis's clock), no sleeps: every step
    // is one lease.
    #[tokio::test]
    async fn the_script_splits_a_cap_by_want_and_never_grants_beyond_it() {
        let prefix = RedisPrefix::new();
        let l = lessor(&prefix);
        assert_eq!(lease(&l, "a", 0, 4).await, (4, 1), "alone: the whole cap");
        // b joins while a holds all four: nothing yet.
        assert_eq!(lease(&l, "b", 0, 4).await, (0, 2));
        assert!(recorded(&l).await <= 4);
        // a's fair share is now two, but its four in use stay claimed.
        assert_eq!(lease(&l, "a", 4, 4).await, (2, 2));
        assert_eq!(recorded(&l).await, 4);
        assert_eq!(lease(&l, "b", 0, 4).await, (0, 2), "no room until a drains");
        // a's requests ended: it claims only its share.
        assert_eq!(lease(&l, "a", 2, 4).await, (2, 2));
        assert_eq!(lease(&l, "b", 0, 4).await, (2, 2), "b gets the rest");
        assert_eq!(recorded(&l).await, 4);
        // c joins, wanting one (idle): one each for b and c once a shrinks.
        assert_eq!(lease(&l, "c", 0, 1).await, (0, 3));
        assert_eq!(
            lease(&l, "a", 2, 4).await.0,
            1,
            "a's fair share: (4 - 1) / 2, rounded down"
        );
        assert_eq!(lease(&l, "c", 0, 1).await, (0, 3), "a still claims two");
        assert_eq!(lease(&l, "a", 1, 4).await.0, 1, "a drained to its share");
        assert_eq!(lease(&l, "c", 0, 1).await, (1, 3));
        assert!(recorded(&l).await <= 4);
        // c wants less than a third: b keeps two.
        assert_eq!(lease(&l, "b", 2, 4).await.0, 2);
        assert_eq!(recorded(&l).await, 4);
        l.leave("a", &["m".into()]).await.expect("leave");
        assert_eq!(
            lease(&l, "b", 2, 4).await,
            (3, 2),
            "a left: what c does not want is b's"
        );
        assert!(recorded(&l).await <= 4);
    }
}
