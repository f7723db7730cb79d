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
    res
}
