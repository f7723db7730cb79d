//! An engine in process over a fleet kept in memory, with the worker's
//! default rules: for the tests that drive failover and admission without a
//! worker binary or Redis.

use std::sync::Arc;

use arc_swap::ArcSwap;
use switchyard_data_plane::catalog::Catalog;
use switchyard_data_plane::credentials::Resolver;
use switchyard_data_plane::failover::{Engine, Parts};
use switchyard_data_plane::fleet::Fleet;
use switchyard_data_plane::fleet::slots::Slots;
use switchyard_data_plane::server::defaults;
use switchyard_proto::v1 as pb;

/// The engine serving `snapshot`, each pool's admission queue holding
/// `queue` requests. Call it inside a runtime: the fleet's pusher runs on it.
pub fn in_memory(snapshot: &pb::Snapshot, queue: usize) -> Engine {
    let (fleet, pusher) = Fleet::in_memory();
    // A test's runtime ends with the test: nothing outlives it.
    #[allow(clippy::disallowed_methods)]
    tokio::spawn(pusher);
    let catalog = Catalog::build(snapshot, &Resolver::default());
    Engine::new(Parts {
        catalog: Arc::new(ArcSwap::from_pointee(catalog)),
        fleet,
        rules: defaults::rules(),
        observer: switchyard_data_plane::observe::Observer::detached(),
        export_spans: false,
        signals: Default::default(),
        slots: Slots::new(false, queue),
    })
}
