//! The worker's gRPC health: "" and `switchyard.v1.Inference` serve once a
//! config is loaded, `switchyard.config` says whether config is live,
//! `switchyard.fleet` whether shared state is; at shutdown the first two
//! turn NOT_SERVING before anything else stops.

use std::future::Future;

use switchyard_proto::v1::inference_server::InferenceServer;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::service::Routes;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::fleet::LinkState;
use crate::service::InferenceService;
use crate::sync::SyncState;

/// The statuses and the loop that keeps them.
pub(super) struct Health {
    reporter: HealthReporter,
    /// Follows config and fleet state until `stop`.
    pub(super) task: JoinHandle<()>,
}

/// Starts NOT_SERVING and follows `state` and `fleet` until `stop`; the
/// returned routes hold the health service.
pub(super) async fn start(
    mut state: watch::Receiver<SyncState>,
    mut fleet: watch::Receiver<LinkState>,
    stop: CancellationToken,
    tracker: &TaskTracker,
) -> (Health, Routes) {
    let (health, service) = tonic_health::server::health_reporter();
    health
        .set_not_serving::<InferenceServer<InferenceService>>()
        .await;
    health
        .set_service_status("", ServingStatus::NotServing)
        .await;
    let reporter = health.clone();
    let task = tracker.spawn(async move {
        loop {
            let fleet_state = match *fleet.borrow_and_update() {
                LinkState::Up => ServingStatus::Serving,
                LinkState::Degraded => ServingStatus::NotServing,
            };
            health
                .set_service_status("switchyard.fleet", fleet_state)
                .await;
            let (main, config) = match *state.borrow_and_update() {
                SyncState::Loading => (ServingStatus::NotServing, ServingStatus::NotServing),
                SyncState::Live => (ServingStatus::Serving, ServingStatus::Serving),
                SyncState::Stale | SyncState::Degraded => {
                    (ServingStatus::Serving, ServingStatus::NotServing)
                }
            };
            health
                .set_service_status("switchyard.v1.Inference", main)
                .await;
            health.set_service_status("", main).await;
            health.set_service_status("switchyard.config", config).await;
            tokio::select! {
                () = stop.cancelled() => return,
                r = state.changed() => if r.is_err() { return },
                r = fleet.changed() => if r.is_err() { return },
            }
        }
    });
    (Health { reporter, task }, Routes::new(service))
}

impl Health {
    /// Resolves once `shutdown` has and the worker says NOT_SERVING: the
    /// loops in `background` are stopped, then `signalled` tells the
    /// servers to stop accepting and drain.
    pub(super) fn on_shutdown(
        &self,
        shutdown: impl Future<Output = ()> + Send + 'static,
        background: CancellationToken,
        signalled: CancellationToken,
    ) -> impl Future<Output = ()> + Send + 'static {
        let health = self.reporter.clone();
        async move {
            shutdown.await;
            tracing::info!("shutting down: not serving, draining in-flight requests and streams");
            background.cancel();
            health
                .set_service_status("switchyard.v1.Inference", ServingStatus::NotServing)
                .await;
            health
                .set_service_status("", ServingStatus::NotServing)
                .await;
            signalled.cancel();
        }
    }
}
