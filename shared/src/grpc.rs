//! gRPC details both servers share.

/// tonic reports a request over the size limit as OUT_OF_RANGE; the gRPC
/// status-code guide says RESOURCE_EXHAUSTED, which is what clients retry on
/// differently. The decode error is a trailers-only response, so the status
/// is in the headers.
pub fn oversize_is_resource_exhausted<B>(mut res: http::Response<B>) -> http::Response<B> {
    let h = res.headers();
    let oversize = h.get("grpc-status").is_some_and(|v| v.as_bytes() == b"11")
        && h.get("grpc-message").is_some_and(|m| {
            let m = String::from_utf8_lossy(m.as_bytes());
            m.contains("too%20large") || m.contains("too large")
        });
    if oversize {
        res.headers_mut()
            .insert("grpc-status", http::HeaderValue::from_static("8"));
    }
    // A request that does not decode (a string field that is not UTF-8, a
    // truncated message) is the caller's mistake, not INTERNAL.
    let undecodable = h_status(&res, b"13")
        && res.headers().get("grpc-message").is_some_and(|m| {
            let m = String::from_utf8_lossy(m.as_bytes());
            m.contains("failed%20to%20decode") || m.contains("failed to decode")
        });
    if undecodable {
        res.headers_mut()
            .insert("grpc-status", http::HeaderValue::from_static("3"));
    }
    res
}

fn h_status<B>(res: &http::Response<B>, code: &[u8]) -> bool {
    res.headers()
        .get("grpc-status")
        .is_some_and(|v| v.as_bytes() == code)
}

/// The layers in front of every service, outermost first: 1. the bearer-token
/// filter (refuses before any decoding); 2. the over-size status fix-up.
pub type FrontLayers<P = crate::auth::Authorizer> = tower::layer::util::Stack<
    tower::util::MapResponseLayer<
        fn(http::Response<tonic::body::Body>) -> http::Response<tonic::body::Body>,
    >,
    tower::layer::util::Stack<tower::filter::FilterLayer<P>, tower::layer::util::Identity>,
>;

/// `auth`: the control plane's token filter, or the data plane's caller check.
pub fn front_layers<P>(auth: P) -> FrontLayers<P> {
    tower::ServiceBuilder::new()
        .layer(tower::filter::FilterLayer::new(auth))
        .map_response(oversize_is_resource_exhausted as fn(_) -> _)
        .into_inner()
}
