//! The `switchyard.v1.ControlPlane` gRPC service: thin handlers over the store.

use std::pin::Pin;

use futures::Stream;
use switchyard_proto::v1 as pb;
use switchyard_proto::v1::control_plane_server::ControlPlane;
use switchyard_shared::change::{self, ChangeMessage};
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::{Request, Response, Status};

use std::sync::Arc;

use crate::error::ApiError;
use crate::metrics::CpMetrics;
use crate::store::ACTOR;
use crate::store::Store;
use switchyard_shared::auth::{self, Caller};

/// Retained changes read per outbox query while catching up.
const REPLAY_BATCH: u64 = 500;
/// How often a watcher also reads the outbox, so it progresses while the
/// live feed is down (Redis outage).
const CATCH_UP_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

pub struct ControlPlaneService {
    store: Store,
    feed: broadcast::Sender<ChangeMessage>,
    /// Cancelled at shutdown: ends WatchChanges streams so the server can drain.
    streams: CancellationToken,
    tasks: TaskTracker,
    metrics: Arc<CpMetrics>,
}

impl ControlPlaneService {
    pub fn new(
        store: Store,
        feed: broadcast::Sender<ChangeMessage>,
        streams: CancellationToken,
        tasks: TaskTracker,
        metrics: Arc<CpMetrics>,
    ) -> Self {
        Self {
            store,
            feed,
            streams,
            tasks,
            metrics,
        }
    }
}

type Res<T> = Result<Response<T>, Status>;

fn ok<T>(r: Result<T, ApiError>) -> Res<T> {
    r.map(Response::new).map_err(Status::from)
}

impl ControlPlaneService {
    /// A read's answer. Reads are idempotent: one that lost its database
    /// connection midway is tried once more, on a fresh connection.
    async fn read<T, F, Fut>(&self, f: F) -> Res<T>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T, ApiError>>,
    {
        match f().await {
            Err(e) if e.is_connection_lost() => {
                tracing::warn!(error = %e, "read lost its database connection; retrying once");
                ok(f().await)
            }
            r => ok(r),
        }
    }

    /// A write, made as `actor` (recorded with the change), counted by
    /// resource and result.
    async fn write<T>(
        &self,
        resource: &'static str,
        actor: String,
        f: impl std::future::Future<Output = Result<T, ApiError>>,
    ) -> Res<T> {
        let r = ok(ACTOR.scope(actor, f).await);
        self.metrics.write(
            resource,
            r.as_ref().map_or_else(Status::code, |_| tonic::Code::Ok),
        );
        r
    }
}

/// Who makes a call, as the auth filter named it.
fn actor_of<T>(r: &Request<T>) -> String {
    r.extensions()
        .get::<Caller>()
        .map_or_else(|| "unknown".to_owned(), |c| c.name.clone())
}

pub(crate) fn to_event(m: &ChangeMessage) -> pb::ChangeEvent {
    let resource = match m.resource {
        change::Resource::Provider => pb::ResourceType::Provider,
        change::Resource::Pool => pb::ResourceType::Pool,
        change::Resource::Member => pb::ResourceType::Member,
        change::Resource::Route => pb::ResourceType::Route,
        change::Resource::Config => pb::ResourceType::Config,
        change::Resource::Caller => pb::ResourceType::Caller,
        change::Resource::Other => pb::ResourceType::Unspecified,
    };
    let action = match m.action {
        change::Action::Created => pb::ChangeAction::Created,
        change::Action::Updated => pb::ChangeAction::Updated,
        change::Action::Deleted => pb::ChangeAction::Deleted,
        change::Action::Applied => pb::ChangeAction::Applied,
        change::Action::Other => pb::ChangeAction::Unspecified,
    };
    pb::ChangeEvent {
        revision: m.revision,
        resource: resource.into(),
        action: action.into(),
        id: m.id.clone(),
        name: m.name.clone(),
        commit_time: Some(prost_types::Timestamp {
            seconds: m.commit_time_ms.div_euclid(1000),
            nanos: i32::try_from(m.commit_time_ms.rem_euclid(1000) * 1_000_000).unwrap_or(0),
        }),
        actor: m.actor.clone(),
    }
}

#[tonic::async_trait]
impl ControlPlane for ControlPlaneService {
    async fn create_provider(&self, r: Request<pb::CreateProviderRequest>) -> Res<pb::Provider> {
        let actor = actor_of(&r);
        self.write(
            "provider",
            actor,
            self.store.create_provider(r.into_inner().provider),
        )
        .await
    }
    async fn get_provider(&self, r: Request<pb::GetRequest>) -> Res<pb::Provider> {
        let r = r.into_inner();
        self.read(|| self.store.get_provider(&r.id_or_name)).await
    }
    async fn list_providers(
        &self,
        r: Request<pb::ListProvidersRequest>,
    ) -> Res<pb::ListProvidersResponse> {
        let r = r.into_inner();
        self.read(|| self.store.list_providers(&r)).await
    }
    async fn update_provider(&self, r: Request<pb::UpdateProviderRequest>) -> Res<pb::Provider> {
        let actor = actor_of(&r);
        let r = r.into_inner();
        self.write(
            "provider",
            actor,
            self.store.update_provider(r.provider, r.update_mask),
        )
        .await
    }
    async fn delete_provider(&self, r: Request<pb::DeleteProviderRequest>) -> Res<()> {
        let actor = actor_of(&r);
        let r = r.into_inner();
        self.write(
            "provider",
            actor,
            self.store.delete_provider(&r.id_or_name, r.force, &r.etag),
        )
        .await
    }

    async fn create_pool(&self, r: Request<pb::CreatePoolRequest>) -> Res<pb::Pool> {
        let actor = actor_of(&r);
        self.write("pool", actor, self.store.create_pool(r.into_inner().pool))
            .await
    }
    async fn get_pool(&self, r: Request<pb::GetRequest>) -> Res<pb::Pool> {
        let r = r.into_inner();
        self.read(|| self.store.get_pool(&r.id_or_name)).await
    }
    async fn list_pools(&self, r: Request<pb::ListPoolsRequest>) -> Res<pb::ListPoolsResponse> {
        let r = r.into_inner();
        self.read(|| self.store.list_pools(&r)).await
    }
    async fn update_pool(&self, r: Request<pb::UpdatePoolRequest>) -> Res<pb::Pool> {
        let actor = actor_of(&r);
        let r = r.into_inner();
        self.write("pool", actor, self.store.update_pool(r.pool, r.update_mask))
            .await
    }
    async fn delete_pool(&self, r: Request<pb::DeletePoolRequest>) -> Res<()> {
        let actor = actor_of(&r);
        let r = r.into_inner();
        self.write(
            "pool",
            actor,
            self.store.delete_pool(&r.id_or_name, r.force, &r.etag),
        )
        .await
    }

    async fn create_member(&self, r: Request<pb::CreateMemberRequest>) -> Res<pb::Member> {
        let actor = actor_of(&r);
        self.write(
            "member",
            actor,
            self.store.create_member(r.into_inner().member),
        )
        .await
    }
    async fn get_member(&self, r: Request<pb::GetRequest>) -> Res<pb::Member> {
        let r = r.into_inner();
        self.read(|| self.store.get_member(&r.id_or_name)).await
    }
    async fn list_members(
        &self,
        r: Request<pb::ListMembersRequest>,
    ) -> Res<pb::ListMembersResponse> {
        let r = r.into_inner();
        self.read(|| self.store.list_members(&r)).await
    }
    async fn update_member(&self, r: Request<pb::UpdateMemberRequest>) -> Res<pb::Member> {
        let actor = actor_of(&r);
        let r = r.into_inner();
        self.write(
            "member",
            actor,
            self.store.update_member(r.member, r.update_mask),
        )
        .await
    }
    async fn delete_member(&self, r: Request<pb::DeleteMemberRequest>) -> Res<()> {
        let actor = actor_of(&r);
        let r = r.into_inner();
        self.write("member", actor, self.store.delete_member(&r.id, &r.etag))
            .await
    }

    async fn create_route(&self, r: Request<pb::CreateRouteRequest>) -> Res<pb::Route> {
        let actor = actor_of(&r);
        self.write(
            "route",
            actor,
            self.store.create_route(r.into_inner().route),
        )
        .await
    }
    async fn get_route(&self, r: Request<pb::GetRequest>) -> Res<pb::Route> {
        let r = r.into_inner();
        self.read(|| self.store.get_route(&r.id_or_name)).await
    }
    async fn list_routes(&self, r: Request<pb::ListRoutesRequest>) -> Res<pb::ListRoutesResponse> {
        let r = r.into_inner();
        self.read(|| self.store.list_routes(&r)).await
    }
    async fn update_route(&self, r: Request<pb::UpdateRouteRequest>) -> Res<pb::Route> {
        let actor = actor_of(&r);
        let r = r.into_inner();
        self.write(
            "route",
            actor,
            self.store.update_route(r.route, r.update_mask),
        )
        .await
    }
    async fn delete_route(&self, r: Request<pb::DeleteRouteRequest>) -> Res<()> {
        let actor = actor_of(&r);
        let r = r.into_inner();
        self.write(
            "route",
            actor,
            self.store.delete_route(&r.id_or_name, &r.etag),
        )
        .await
    }

    async fn get_snapshot(&self, _r: Request<pb::GetSnapshotRequest>) -> Res<pb::Snapshot> {
        self.read(|| self.store.snapshot(false)).await
    }

    async fn create_caller(&self, r: Request<pb::CreateCallerRequest>) -> Res<pb::CallerWithKey> {
        let actor = actor_of(&r);
        self.write(
            "caller",
            actor,
            self.store.create_caller(r.into_inner().caller),
        )
        .await
    }
    async fn get_caller(&self, r: Request<pb::GetRequest>) -> Res<pb::Caller> {
        let r = r.into_inner();
        self.read(|| self.store.get_caller(&r.id_or_name)).await
    }
    async fn list_callers(
        &self,
        r: Request<pb::ListCallersRequest>,
    ) -> Res<pb::ListCallersResponse> {
        let r = r.into_inner();
        self.read(|| self.store.list_callers(&r)).await
    }
    async fn update_caller(&self, r: Request<pb::UpdateCallerRequest>) -> Res<pb::Caller> {
        let actor = actor_of(&r);
        let r = r.into_inner();
        self.write(
            "caller",
            actor,
            self.store.update_caller(r.caller, r.update_mask),
        )
        .await
    }
    async fn delete_caller(&self, r: Request<pb::DeleteCallerRequest>) -> Res<()> {
        let actor = actor_of(&r);
        let r = r.into_inner();
        self.write(
            "caller",
            actor,
            self.store.delete_caller(&r.id_or_name, &r.etag),
        )
        .await
    }
    async fn rotate_caller_key(
        &self,
        r: Request<pb::RotateCallerKeyRequest>,
    ) -> Res<pb::CallerWithKey> {
        let actor = actor_of(&r);
        let r = r.into_inner();
        self.write("caller", actor, self.store.rotate_caller_key(&r))
            .await
    }

    async fn apply_config(
        &self,
        r: Request<pb::ApplyConfigRequest>,
    ) -> Res<pb::ApplyConfigResponse> {
        let actor = actor_of(&r);
        let caller = r.extensions().get::<Caller>().cloned();
        let r = r.into_inner();
        auth::reader_may_apply(caller.as_ref(), r.dry_run)?;
        if r.dry_run {
            return ok(ACTOR.scope(actor, self.store.apply_config(r)).await);
        }
        self.write("config", actor, self.store.apply_config(r))
            .await
    }

    async fn export_config(
        &self,
        _r: Request<pb::ExportConfigRequest>,
    ) -> Res<pb::ExportConfigResponse> {
        self.read(|| self.store.export_config()).await
    }

    type WatchChangesStream =
        Pin<Box<dyn Stream<Item = Result<pb::ChangeEvent, Status>> + Send + 'static>>;

    async fn watch_changes(
        &self,
        r: Request<pb::WatchChangesRequest>,
    ) -> Res<Self::WatchChangesStream> {
        let r = r.into_inner();
        if r.from_earliest && r.since_revision > 0 {
            return Err(Status::invalid_argument(
                "give since_revision or from_earliest, not both",
            ));
        }
        // Subscribe before reading history, so nothing falls in between.
        let live = self.feed.subscribe();
        let current = self.store.revision().await.map_err(Status::from)?;
        // From the earliest change still retained: start just before it.
        let mut replay_from = None;
        let since = if r.from_earliest {
            let first = self.store.changes_after(0, 1).await.map_err(Status::from)?;
            match first.first() {
                Some(e) => {
                    replay_from = Some(e.revision);
                    e.revision - 1
                }
                None => {
                    // Nothing retained: the replay starts with the next change.
                    replay_from = Some(current + 1);
                    current
                }
            }
        } else {
            r.since_revision
        };
        if since > current {
            return Err(Status::invalid_argument(format!(
                "since_revision {since} is ahead of the latest revision {current}"
            )));
        }
        if since > 0 && since < current && replay_from.is_none() {
            let first = self
                .store
                .changes_after(since, 1)
                .await
                .map_err(Status::from)?;
            if first.first().is_none_or(|e| e.revision != since + 1) {
                return Err(Status::out_of_range(format!(
                    "changes after revision {since} are no longer retained; call GetSnapshot and watch from its revision"
                )));
            }
        }
        let start = if since == 0 && replay_from.is_none() {
            current
        } else {
            since
        };
        let (tx, rx) = mpsc::channel(64);
        let watch = Watch {
            store: self.store.clone(),
            tx,
            last: start,
        };
        let stop = self.streams.clone();
        self.tasks.spawn(watch.run(live, stop));
        let mut resp = Response::new(Box::pin(ReceiverStream::new(rx)) as Self::WatchChangesStream);
        if let Some(from) = replay_from
            && let Ok(v) = from.to_string().parse()
        {
            resp.metadata_mut().insert("x-switchyard-replay-from", v);
        }
        Ok(resp)
    }
}

/// One WatchChanges stream: replays retained history, then follows the live
/// feed, filling any gap (a lost or lagged message) from the outbox.
struct Watch {
    store: Store,
    tx: mpsc::Sender<Result<pb::ChangeEvent, Status>>,
    last: u64,
}

impl Watch {
    async fn run(mut self, mut live: broadcast::Receiver<ChangeMessage>, stop: CancellationToken) {
        if self.catch_up(u64::MAX).await.is_err() {
            return;
        }
        let mut poll = tokio::time::interval(CATCH_UP_EVERY);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let next = tokio::select! {
                _ = poll.tick() => {
                    if self.catch_up(u64::MAX).await.is_err() {
                        return;
                    }
                    continue;
                }
                () = stop.cancelled() => {
                    let _ = self.tx.send(Err(Status::unavailable("server shutting down; watch again from the last revision you saw"))).await;
                    return;
                }
                () = self.tx.closed() => return,
                n = live.recv() => n,
            };
            let ok = match next {
                Ok(ev) if ev.revision <= self.last => Ok(()),
                Ok(ev) => match self.catch_up(ev.revision).await {
                    Ok(()) => self.send(&ev).await,
                    Err(()) => Err(()),
                },
                Err(broadcast::error::RecvError::Lagged(_)) => self.catch_up(u64::MAX).await,
                Err(broadcast::error::RecvError::Closed) => return,
            };
            if ok.is_err() {
                return;
            }
        }
    }

    /// Sends retained changes after `last` and before `until`.
    async fn catch_up(&mut self, until: u64) -> Result<(), ()> {
        while self.last + 1 < until {
            let batch = match self.store.changes_after(self.last, REPLAY_BATCH).await {
                Ok(b) => b,
                Err(e) => {
                    let _ = self.tx.send(Err(Status::from(e))).await;
                    return Err(());
                }
            };
            let mut progressed = false;
            for ev in batch.iter().filter(|e| e.revision < until) {
                self.send(ev).await?;
                progressed = true;
            }
            if !progressed {
                break;
            }
        }
        Ok(())
    }

    async fn send(&mut self, ev: &ChangeMessage) -> Result<(), ()> {
        if ev.revision <= self.last {
            return Ok(());
        }
        self.tx.send(Ok(to_event(ev))).await.map_err(|_| ())?;
        self.last = ev.revision;
        Ok(())
    }
}
