//! The Redis follower: keeps a worker's health table live — subscribe,
//! push what was learned while away, load everything, then apply every
//! message; a gap in the change counter or a periodic check that finds it
//! moved reloads.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use switchyard_shared::redis_client::Redis;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Fleet;

/// Checks between two heartbeats into `P:workers`.
const HEARTBEAT_EVERY: u32 = 5;
use super::redis::{RedisBackend, parse_message};

/// Keeps `fleet`'s health table live until `stop`: subscribe, push what was
/// learned while away, load everything, then apply every message; a gap in
/// the change counter or a periodic check that finds it moved reloads.
pub async fn follow(
    redis: Redis,
    backend: Arc<RedisBackend>,
    fleet: Fleet,
    check_every: Duration,
    stop: CancellationToken,
) {
    let channel = backend.keys().health_channel();
    let mut backoff = Duration::from_millis(100);
    loop {
        let session = async {
            let mut pubsub = redis
                .pubsub(Duration::from_secs(2))
                .await
                .map_err(|e| e.to_string())?;
            tokio::time::timeout(Duration::from_secs(2), pubsub.subscribe(&channel))
                .await
                .map_err(|_| "subscribing to health changes timed out".to_owned())?
                .map_err(|e| e.to_string())?;
            // Pushes what was learned while away, then loads everything.
            let version = fleet.reload().await.map_err(|e| e.0)?;
            Ok::<_, String>((pubsub, version))
        };
        let started = tokio::select! {
            () = stop.cancelled() => return,
            s = tokio::time::timeout(Duration::from_secs(5), session) => {
                s.unwrap_or_else(|_| Err("connecting for health changes timed out".into()))
            }
        };
        let why = match started {
            Ok((pubsub, seen)) => {
                backoff = Duration::from_millis(100);
                fleet.link().ok();
                tracing::debug!(version = seen, "health table loaded");
                tokio::select! {
                    () = stop.cancelled() => return,
                    why = live(pubsub, &backend, &fleet, seen, check_every) => why,
                }
            }
            Err(e) => e,
        };
        fleet.link().failed(&why);
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

/// Applies messages until the session breaks; returns why. A gap in the
/// change counter reloads at once. The periodic check reloads when the
/// counter it read last time is still ahead of the messages (one missed),
/// and resubscribes when that happens twice in a row (a subscription that
/// died quietly).
async fn live(
    pubsub: redis::aio::PubSub,
    backend: &RedisBackend,
    fleet: &Fleet,
    mut seen: u64,
    check_every: Duration,
) -> String {
    let mut messages = pubsub.into_on_message();
    let mut tick = tokio::time::interval(check_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ahead: Option<u64> = None;
    let mut stalls = 0;
    let mut checks: u32 = 0;
    loop {
        let reload = tokio::select! {
            m = messages.next() => match m {
                None => return "health subscription lost".to_owned(),
                Some(msg) => {
                    let text = String::from_utf8_lossy(msg.get_payload_bytes());
                    match parse_message(&text, Instant::now()) {
                        Ok((member, entry)) => {
                            let v = entry.version;
                            fleet.table().apply(&member, entry);
                            let gap = v > seen + 1;
                            seen = seen.max(v);
                            gap
                        }
                        Err(e) => {
                            tracing::warn!(error = %e.0, "undecodable health message; reloading");
                            true
                        }
                    }
                }
            },
            _ = tick.tick() => {
                if fleet.has_pending()
                    && let Err(e) = fleet.push_pending().await
                {
                    tracing::debug!(error = %e.0, "pending fleet reports not pushed yet");
                }
                let v = match tokio::time::timeout(Duration::from_secs(1), backend.version()).await {
                    Ok(Ok(v)) => v,
                    Ok(Err(e)) => return e.0,
                    Err(_) => return "health check timed out".to_owned(),
                };
                fleet.link().ok();
                // A heartbeat every few checks (a script of five commands);
                // a worker silent for three heartbeats no longer counts.
                if checks.is_multiple_of(HEARTBEAT_EVERY) {
                    match backend
                        .heartbeat(fleet.worker_id(), check_every * HEARTBEAT_EVERY * 3)
                        .await
                    {
                        Ok(n) => fleet.set_live_workers(n),
                        Err(e) => tracing::debug!(error = %e.0, "heartbeat failed"),
                    }
                }
                checks = checks.wrapping_add(1);
                let missed = ahead.is_some_and(|a| seen < a);
                ahead = (v > seen).then_some(v);
                if missed {
                    stalls += 1;
                    if stalls >= 2 {
                        return "health messages stopped arriving".to_owned();
                    }
                } else if v <= seen {
                    stalls = 0;
                }
                missed
            }
        };
        if reload {
            match fleet.reload().await {
                Ok(v) => seen = seen.max(v),
                Err(e) => return e.0,
            }
        }
    }
}
