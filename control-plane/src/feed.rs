//! The live change feed behind WatchChanges. With Redis, every replica
//! subscribes to the changes channel, so a watcher on any replica sees every
//! replica's changes; in-process, the publisher feeds it directly.

use std::time::Duration;

use futures::StreamExt as _;
use switchyard_shared::change::ChangeMessage;
use switchyard_shared::keys::RedisKeys;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

/// Capacity of the feed; a watcher that falls further behind catches up from the outbox.
pub const FEED_CAPACITY: usize = 1024;

pub fn channel() -> broadcast::Sender<ChangeMessage> {
    broadcast::Sender::new(FEED_CAPACITY)
}

/// Follows the Redis changes channel into `feed` until shutdown, reconnecting with backoff.
pub async fn follow_redis(
    client: switchyard_shared::redis_client::Redis,
    keys: RedisKeys,
    feed: broadcast::Sender<ChangeMessage>,
    shutdown: CancellationToken,
) {
    let channel = keys.changes_channel();
    let mut backoff = Duration::from_millis(100);
    loop {
        let attempt = async {
            let mut pubsub = client.pubsub(Duration::from_secs(5)).await?;
            pubsub.subscribe(&channel).await?;
            tracing::info!(channel = %channel, "following config changes");
            Ok::<_, redis::RedisError>(pubsub)
        };
        let pubsub = tokio::select! {
            () = shutdown.cancelled() => return,
            r = attempt => r,
        };
        match pubsub {
            Ok(pubsub) => {
                backoff = Duration::from_millis(100);
                let mut messages = pubsub.into_on_message();
                loop {
                    let msg = tokio::select! {
                        () = shutdown.cancelled() => return,
                        m = messages.next() => m,
                    };
                    let Some(msg) = msg else { break };
                    match serde_json::from_slice::<ChangeMessage>(msg.get_payload_bytes()) {
                        Ok(ev) => {
                            let _ = feed.send(ev);
                        }
                        Err(err) => tracing::warn!(error = %err, "undecodable change message"),
                    }
                }
                tracing::warn!("change subscription lost; reconnecting");
            }
            Err(err) => {
                tracing::warn!(error = %err, retry_in_ms = backoff.as_millis() as u64, "cannot subscribe to config changes")
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}
