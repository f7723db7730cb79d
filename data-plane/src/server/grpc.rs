//! The gRPC server: the caller check in front, a span per RPC (continuing
//! the caller's trace when spans are exported), plaintext h2c or TLS.

use std::future::Future;

use switchyard_shared::tls::Incoming;
use tonic::service::Routes;

use crate::access::Access;

/// Serves `routes` on `incoming` until `on_signal` resolves, then lets
/// in-flight calls finish (the caller bounds that by the grace period).
pub(super) async fn serve(
    incoming: Incoming,
    routes: Routes,
    access: Access,
    export_spans: bool,
    on_signal: impl Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    let router = tonic::transport::Server::builder()
        .trace_fn(move |req| {
            let span = if export_spans {
                // The server span of every RPC, continuing the caller's trace.
                let span = tracing::info_span!(
                    "rpc",
                    otel.name = %req.uri().path().trim_start_matches('/'),
                    otel.kind = "server",
                    method = %req.uri().path(),
                    client = tracing::field::Empty
                );
                crate::observe::trace::continue_caller(&span, req.headers());
                span
            } else {
                tracing::info_span!("rpc", method = %req.uri().path(), client = tracing::field::Empty)
            };
            switchyard_shared::tls::record_client(&span, req.extensions());
            span
        })
        .layer(switchyard_shared::grpc::front_layers(access))
        .add_routes(routes);
    // Boxed: either future is large, and only one of them runs.
    match incoming {
        Incoming::Plain(tcp) => Box::pin(router.serve_with_incoming_shutdown(tcp, on_signal)).await,
        Incoming::Tls(tls) => Box::pin(router.serve_with_incoming_shutdown(tls, on_signal)).await,
    }
}
