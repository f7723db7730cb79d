//! What keeps a worker's config and fleet state live: the fleet's backend
//! (Redis, or memory in the embedded default) and the loops that follow it.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use switchyard_proto::v1 as pb;
use switchyard_shared::keys::RedisKeys;
use switchyard_shared::redis_client::Redis;
use tokio::sync::watch;

use super::{Loops, Source, StartError};
use crate::catalog::Catalog;
use crate::fleet::memory::MemoryBackend;
use crate::fleet::redis::RedisBackend;
use crate::fleet::slots::Slots;
use crate::fleet::timed::Timed;
use crate::fleet::{Backend, Fleet};
use crate::observe::Metrics;
use crate::observe::stats::{MemoryStore, RedisStore, Store};
use crate::signals::Signals;
use crate::sync::Loader;

/// Where the worker follows config and fleet state from, once connected.
pub(super) enum Follow {
    Redis {
        client: Box<Redis>,
        prefix: String,
        keys: RedisKeys,
        backend: Arc<RedisBackend>,
    },
    Local(watch::Receiver<Option<Arc<pb::Snapshot>>>),
}

/// Where fleet state lives and what to follow, for one source.
pub(super) struct Opened {
    /// The fleet's backend (timed on Redis).
    pub backend: Arc<dyn Backend>,
    /// Where pool statistics are flushed.
    pub stats: Arc<dyn Store>,
    pub follow: Follow,
}

/// Opens `source`: checks the Redis URL, connects nothing yet.
pub(super) fn open(source: Source, metrics: &Metrics) -> Result<Opened, StartError> {
    Ok(match source {
        Source::Redis { redis, prefix } => {
            let client = Redis::open(&redis).map_err(|e| StartError::RedisUrl(e.to_string()))?;
            let keys = RedisKeys::new(prefix.clone());
            let backend = Arc::new(RedisBackend::new(client.clone(), keys.clone()));
            let timed = Arc::new(Timed::new(backend.clone(), metrics.redis.clone()));
            let stats = Arc::new(RedisStore {
                redis: client.clone(),
                keys: keys.clone(),
                conn: tokio::sync::OnceCell::new(),
            });
            Opened {
                backend: timed,
                stats,
                follow: Follow::Redis {
                    client: Box::new(client),
                    prefix,
                    keys,
                    backend,
                },
            }
        }
        Source::Local(rx) => Opened {
            backend: Arc::new(MemoryBackend::default()),
            stats: Arc::new(MemoryStore::default()),
            follow: Follow::Local(rx),
        },
    })
}

/// What the following loops keep live.
pub(super) struct Shared<'a> {
    pub catalog: &'a Arc<ArcSwap<Catalog>>,
    pub fleet: &'a Fleet,
    pub signals: &'a Arc<Signals>,
    pub slots: &'a Arc<Slots>,
}

impl Follow {
    /// Whether the fleet is shared through Redis (concurrency caps are
    /// then leased from it).
    pub(super) fn is_shared(&self) -> bool {
        matches!(self, Follow::Redis { .. })
    }

    /// Starts config sync (through `loader`) and, on Redis, the loops that
    /// share live signals, slot leases and headroom and follow the fleet.
    pub(super) fn start(
        self,
        live: Shared<'_>,
        loader: Loader,
        check_every: Duration,
        authenticated: bool,
        loops: &mut Loops,
    ) {
        let (client, prefix, keys, backend) = match self {
            Follow::Redis {
                client,
                prefix,
                keys,
                backend,
            } => (client, prefix, keys, backend),
            Follow::Local(rx) => {
                let sync = crate::sync::follow_local(rx, loader, loops.background.clone());
                loops.spawn("config sync", sync);
                return;
            }
        };
        // Until in-flight requests are done (their load still counts).
        loops.spawn(
            "live signals",
            crate::signals::share::run(
                live.signals.clone(),
                crate::signals::share::Board::new((*client).clone(), &keys),
                live.fleet.worker_id().to_owned(),
                loops.pusher_stop.clone(),
            ),
        );
        if !authenticated {
            tracing::warn!(
                "no master key: the config snapshot in Redis is not authenticated; anyone who \
                 can write Redis can change what this worker serves (give SWITCHYARD_MASTER_KEY)"
            );
        }
        // Until in-flight requests are done (their slots are still held).
        loops.spawn(
            "slot leases",
            crate::fleet::slots::lease::run(
                live.slots.clone(),
                live.catalog.clone(),
                crate::fleet::slots::lease::Lessor::new((*client).clone(), keys.clone()),
                live.fleet.worker_id().to_owned(),
                loops.pusher_stop.clone(),
            ),
        );
        loops.spawn(
            "fleet follower",
            crate::fleet::follow::follow(
                (*client).clone(),
                backend,
                live.fleet.clone(),
                check_every,
                loops.background.clone(),
            ),
        );
        loops.spawn(
            "headroom sharer",
            crate::fleet::headroom::share(
                (*client).clone(),
                keys.clone(),
                live.fleet.headroom().clone(),
                loops.background.clone(),
            ),
        );
        loops.spawn(
            "config sync",
            crate::sync::follow_redis(
                *client,
                prefix,
                keys,
                loader,
                check_every,
                loops.background.clone(),
            ),
        );
    }
}
