//! Clients that present a caller key (or any `authorization` value), and
//! the two-pool config the caller tests share.
#![allow(dead_code)]

use switchyard_proto::v1 as pb;
use switchyard_proto::v1::control_plane_client::ControlPlaneClient;
use switchyard_proto::v1::inference_client::InferenceClient;
use switchyard_testkit::harness::ServerProc;
use tonic::transport::Channel;

/// Adds one `authorization` value (or none) to every call.
pub type Header =
    Box<dyn FnMut(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> + Send>;
pub type Cp = ControlPlaneClient<tonic::service::interceptor::InterceptedService<Channel, Header>>;
pub type Dp = InferenceClient<tonic::service::interceptor::InterceptedService<Channel, Header>>;

pub fn with_header(value: Option<String>) -> Header {
    Box::new(move |mut req: tonic::Request<()>| {
        if let Some(v) = &value {
            let v = v
                .parse()
                .map_err(|_| tonic::Status::internal("header value"))?;
            req.metadata_mut().insert("authorization", v);
        }
        Ok(req)
    })
}

/// `Bearer <key>` as a header value.
pub fn bearer(key: &str) -> Option<String> {
    Some(format!("Bearer {key}"))
}

pub async fn plain_channel(addr: &str) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect()
        .await
        .expect("connect")
}

/// The control plane, as the holder of admin `token`.
pub async fn admin_client(cp: &ServerProc, token: &str) -> Cp {
    ControlPlaneClient::with_interceptor(
        plain_channel(&cp.addr.to_string()).await,
        with_header(bearer(token)),
    )
}

/// A worker, as whoever sends `authorization: <header>` (nothing when None).
pub async fn as_caller(w: &ServerProc, header: Option<String>) -> Dp {
    InferenceClient::with_interceptor(
        plain_channel(&w.addr.to_string()).await,
        with_header(header),
    )
}

/// Pools "coding" and "secret-pool" on one fake upstream, in one revision.
pub async fn two_pools(cp: &mut Cp, base_url: &str) -> u64 {
    let member = |pool: &str, model: &str| pb::Member {
        pool: pool.into(),
        provider: "fake".into(),
        upstream_model: model.into(),
        ..Default::default()
    };
    let pool = |name: &str| pb::Pool {
        name: name.into(),
        ..Default::default()
    };
    cp.apply_config(pb::ApplyConfigRequest {
        config: Some(pb::ConfigDocument {
            providers: vec![pb::Provider {
                name: "fake".into(),
                kind: pb::ProviderKind::Openai.into(),
                base_url: base_url.into(),
                ..Default::default()
            }],
            pools: vec![pool("coding"), pool("secret-pool")],
            members: vec![
                member("coding", "m-code"),
                member("secret-pool", "m-secret"),
            ],
            routes: vec![],
        }),
        ..Default::default()
    })
    .await
    .expect("apply")
    .into_inner()
    .revision
}

/// The control plane's latest revision.
pub async fn cp_revision(cp: &mut Cp) -> u64 {
    cp.get_snapshot(pb::GetSnapshotRequest {})
        .await
        .expect("snapshot")
        .into_inner()
        .revision
}

/// Waits (bounded) until the worker behind `dp` (as whichever caller it
/// is) serves `revision`.
pub async fn until_revision(dp: &mut Dp, revision: u64) {
    for _ in 0..100 {
        if dp
            .list_models(pb::ListModelsRequest {})
            .await
            .is_ok_and(|r| r.get_ref().revision >= revision)
        {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("the worker never reached revision {revision}");
}

/// The `authorization` header of the last call the fake upstream got for `model`.
pub fn upstream_authorization(
    up: &switchyard_testkit::FakeUpstream,
    model: &str,
) -> Option<String> {
    up.last_headers(model).and_then(|h| {
        h.get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    })
}
