//! Config sync: load the snapshot, then follow changes, without Postgres.
//!
//! Redis: subscribe to the changes channel first, then load the snapshot,
//! so no change falls in between. Any message newer than what we serve, a
//! reconnect, or the periodic check (the stored revision moved) reloads the
//! whole snapshot — so a lost message heals within one check period. While
//! Redis is unreachable the worker keeps serving its last config.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use futures::StreamExt as _;
use prost::Message as _;
use switchyard_proto::v1 as pb;
use switchyard_shared::change::ChangeMessage;
use switchyard_shared::keys::RedisKeys;
use switchyard_shared::redis_client::{Conn, Redis, Timeouts};
use switchyard_shared::seal::MasterKey;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::catalog::{Catalog, Secrets};

/// How often a worker without a config looks for the snapshot.
const WAITING_CHECK: Duration = Duration::from_millis(100);

/// Health of the sync itself, reported to grpc.health.v1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncState {
    /// No config yet: the worker is NOT_SERVING.
    Loading,
    /// Following changes.
    Live,
    /// Serving the last config; the source is unreachable.
    Stale,
}

/// Builds catalogs from snapshots and swaps them in.
pub struct Loader {
    /// When the catalog last changed (for the config-age gauge).
    pub applied: Arc<ArcSwap<tokio::time::Instant>>,
    pub catalog: Arc<ArcSwap<Catalog>>,
    pub master_key: Option<MasterKey>,
    pub secrets: Box<dyn Secrets>,
    pub state: watch::Sender<SyncState>,
    /// Told of every new catalog (to lease round-robin tickets ahead).
    pub fleet: crate::fleet::Fleet,
}

impl Loader {
    /// Swaps in `snap` if it is newer than what is served.
    pub fn apply(&self, snap: &pb::Snapshot) {
        let current = self.catalog.load().revision;
        let first = *self.state.borrow() == SyncState::Loading;
        if snap.revision <= current && !first {
            if *self.state.borrow() == SyncState::Stale {
                tracing::info!(revision = current, "config source reachable again");
                self.state.send_replace(SyncState::Live);
            }
            return;
        }
        let catalog = Catalog::build(snap, self.master_key.as_ref(), self.secrets.as_ref());
        let catalog = Arc::new(catalog);
        self.catalog.store(catalog.clone());
        self.applied.store(Arc::new(tokio::time::Instant::now()));
        let (pools, _) = catalog.models();
        let ids: std::collections::HashSet<&str> = pools.iter().map(|p| p.id.as_str()).collect();
        self.fleet.retain_pools(|id| ids.contains(id));
        self.fleet.prefetch(
            pools
                .iter()
                .filter(|p| p.takes_tickets())
                .map(|p| p.id.as_str()),
        );
        tracing::info!(
            revision = snap.revision,
            pools = snap.pools.len(),
            routes = snap.routes.len(),
            "config loaded"
        );
        self.state.send_replace(SyncState::Live);
    }

    fn stale(&self, why: &str) {
        if *self.state.borrow() == SyncState::Live {
            tracing::warn!(
                reason = why,
                revision = self.catalog.load().revision,
                "config source unreachable; serving the last config"
            );
            self.state.send_replace(SyncState::Stale);
        }
    }
}

async fn load_redis(conn: &mut Conn, keys: &RedisKeys) -> Result<Option<pb::Snapshot>, String> {
    let bytes: Option<Vec<u8>> = redis::cmd("GET")
        .arg(keys.snapshot())
        .query_async(conn)
        .await
        .map_err(|e| e.to_string())?;
    match bytes {
        None => Ok(None),
        Some(b) => pb::Snapshot::decode(b.as_slice())
            .map(Some)
            .map_err(|e| format!("undecodable snapshot: {e}")),
    }
}

async fn stored_revision(conn: &mut Conn, keys: &RedisKeys) -> Result<Option<u64>, String> {
    redis::cmd("GET")
        .arg(keys.snapshot_revision())
        .query_async(conn)
        .await
        .map_err(|e| e.to_string())
}

/// Follows Redis until shutdown.
pub async fn follow_redis(
    client: Redis,
    keys: RedisKeys,
    loader: Loader,
    check_every: Duration,
    shutdown: CancellationToken,
) {
    let channel = keys.changes_channel();
    let mut backoff = Duration::from_millis(100);
    loop {
        let session = async {
            let timeouts = Timeouts {
                connect: Duration::from_secs(2),
                response: Duration::from_secs(5),
            };
            let mut conn = client.connect(timeouts).await.map_err(|e| e.to_string())?;
            // The pub/sub connection takes no config: bound it here.
            let subscribe = async {
                let mut pubsub = client.pubsub(Duration::from_secs(5)).await?;
                pubsub.subscribe(&channel).await?;
                Ok::<_, redis::RedisError>(pubsub)
            };
            let pubsub = tokio::time::timeout(Duration::from_secs(5), subscribe)
                .await
                .map_err(|_| "subscribing to config changes timed out".to_owned())?
                .map_err(|e| e.to_string())?;
            match load_redis(&mut conn, &keys).await? {
                Some(s) => loader.apply(&s),
                None => {
                    tracing::info!("no config snapshot in Redis yet; waiting for the control plane")
                }
            }
            Ok::<_, String>((conn, pubsub))
        };
        let started = tokio::select! {
            () = shutdown.cancelled() => return,
            s = session => s,
        };
        match started {
            Ok((mut conn, pubsub)) => {
                backoff = Duration::from_millis(100);
                let mut messages = pubsub.into_on_message();
                // Without a config the worker looks every 100 ms, so it serves
                // as soon as the control plane (re)stores the snapshot.
                let mut tick = tokio::time::interval(check_every.min(WAITING_CHECK));
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let mut last_check = tokio::time::Instant::now();
                let why = loop {
                    let reload = tokio::select! {
                        () = shutdown.cancelled() => return,
                        m = messages.next() => match m {
                            None => break "change subscription lost".to_owned(),
                            Some(msg) => match serde_json::from_slice::<ChangeMessage>(msg.get_payload_bytes()) {
                                Ok(ev) => ev.revision > loader.catalog.load().revision,
                                Err(err) => {
                                    tracing::warn!(error = %err, "undecodable change message; reloading");
                                    true
                                }
                            },
                        },
                        _ = tick.tick() => {
                            let waiting = *loader.state.borrow() == SyncState::Loading;
                            if !waiting && last_check.elapsed() < check_every {
                                continue;
                            }
                            last_check = tokio::time::Instant::now();
                            match stored_revision(&mut conn, &keys).await {
                                Ok(Some(r)) => r > loader.catalog.load().revision || *loader.state.borrow() != SyncState::Live,
                                Ok(None) => false,
                                Err(e) => break e,
                            }
                        },
                    };
                    if reload {
                        match load_redis(&mut conn, &keys).await {
                            Ok(Some(s)) => loader.apply(&s),
                            Ok(None) => {}
                            Err(e) => break e,
                        }
                    }
                };
                loader.stale(&why);
            }
            Err(e) => {
                loader.stale(&e);
                tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "cannot reach Redis for config");
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// Follows the in-process bus of the embedded default until shutdown.
pub async fn follow_local(
    mut rx: watch::Receiver<Option<Arc<pb::Snapshot>>>,
    loader: Loader,
    shutdown: CancellationToken,
) {
    loop {
        let snap = rx.borrow_and_update().clone();
        if let Some(s) = snap {
            loader.apply(&s);
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            r = rx.changed() => if r.is_err() { return },
        }
    }
}
