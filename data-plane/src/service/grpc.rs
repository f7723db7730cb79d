//! The gRPC door onto the call layer: a tonic request becomes an `Ask`
//! (its deadline from `grpc-timeout`, its trace context from the metadata,
//! its caller from the request's extensions), an answer a tonic response
//! with the headers as metadata, and an `Unserved` a `Status` — whose code
//! `DpError::code` picks, by variant.

use std::time::Duration;

use futures::StreamExt as _;
use http::HeaderMap;
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status};

use super::call::{Opened, Unserved};
use super::start::{Ask, deadline_after};
use crate::callers::Grant;
use crate::observe::trace::Incoming;
use crate::respond::{EventStream, chunk_event, event};
use switchyard_proto::v1 as pb;

/// The call layer's view of a gRPC request.
pub(super) fn ask<R>(r: Request<R>) -> Ask<R> {
    let deadline = timeout(r.metadata()).and_then(deadline_after);
    let trace = Incoming::from_headers(r.metadata().as_ref());
    let grant = r.extensions().get::<Grant>().cloned();
    Ask {
        message: r.into_inner(),
        grant,
        deadline,
        trace,
    }
}

/// The caller's timeout, from grpc-timeout (`100m`, `5S`, …).
fn timeout(md: &MetadataMap) -> Option<Duration> {
    let v = md.get("grpc-timeout")?.to_str().ok()?;
    let (num, unit) = v.split_at(v.len().checked_sub(1)?);
    let n: u64 = num.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// The caller's status, with the headers as metadata.
pub(super) fn status(u: Unserved) -> Status {
    let mut status = Status::from(u.error);
    status.metadata_mut().as_mut().extend(*u.headers);
    status
}

/// A response with `headers` as its metadata.
pub(super) fn response<T>(message: T, headers: HeaderMap) -> Response<T> {
    let mut resp = Response::new(message);
    *resp.metadata_mut() = MetadataMap::from_headers(headers);
    resp
}

/// A committed stream as gRPC events: the start, an event per chunk, then
/// the status — OK with the headers again as trailers only after the
/// stream finished, else the error that ended it.
pub(super) fn events(opened: Opened) -> EventStream {
    let Opened {
        id,
        served_by,
        attempts,
        meta,
        headers,
        chunks,
    } = opened;
    let start = event(pb::generate_stream_event::Event::Start(pb::StreamStart {
        request_id: id,
        served_by: Some(served_by),
        attempts,
        upstream_id: meta.id.unwrap_or_default(),
        response_model: meta.model.unwrap_or_default(),
        system_fingerprint: meta.system_fingerprint.unwrap_or_default(),
    }));
    let rest = futures::stream::unfold(Some((chunks, headers)), |state| async move {
        let (mut chunks, trailers) = state?;
        loop {
            match chunks.next().await {
                Some(Ok(c)) => {
                    if let Some(ev) = chunk_event(c) {
                        return Some((Ok(ev), Some((chunks, trailers))));
                    }
                }
                Some(Err(e)) => return Some((Err(Status::from(e)), None)),
                None => {
                    let ok = Status::with_metadata(
                        tonic::Code::Ok,
                        "",
                        MetadataMap::from_headers(trailers),
                    );
                    return Some((Err(ok), None));
                }
            }
        }
    });
    Box::pin(futures::stream::once(std::future::ready(Ok(start))).chain(rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeout_units() {
        let t = |v: &'static str| {
            let mut md = MetadataMap::new();
            md.insert("grpc-timeout", v.parse().expect("ascii"));
            timeout(&md)
        };
        assert_eq!(t("250m"), Some(Duration::from_millis(250)));
        assert_eq!(t("5S"), Some(Duration::from_secs(5)));
        assert_eq!(t("2M"), Some(Duration::from_secs(120)));
        assert_eq!(t("7u"), Some(Duration::from_micros(7)));
        assert_eq!(t("5x"), None);
        assert_eq!(t(""), None);
    }
}
