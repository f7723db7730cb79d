//! Fault injection: what a fake model does instead of answering normally.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

/// A misbehaviour the fake upstream applies to requests for one model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Answer with this HTTP status (before any stream starts). `retry_after_secs` sets a
    /// `Retry-After` header; `body` replaces the provider-shaped error JSON.
    Status {
        code: u16,
        retry_after_secs: Option<u64>,
        body: Option<String>,
    },
    /// Sleep this long before sending the response headers, then answer normally.
    DelayFirstByte(Duration),
    /// A model that slows down under load: wait `ttft` before the response
    /// headers while at most `knee` requests for this model are in flight
    /// (this one included), `slow` beyond that. `knee: usize::MAX` never slows.
    Latency {
        ttft: Duration,
        knee: usize,
        slow: Duration,
    },
    /// Streams: send N content chunks, then abort the connection without finishing
    /// (no `[DONE]` / `message_stop`). Unary: send half of the JSON body, then abort.
    DropAfter(usize),
    /// Streams: send N content chunks, then hang until the client disconnects (or the server
    /// shuts down). Unary: never send headers, same ending.
    StallAfter(usize),
    /// 200 and a stream whose first event is a provider error object. Unary requests get a
    /// 500 with the same error object.
    ErrorEvent,
    /// 404 with the provider's model-not-found error JSON.
    UnknownModel,
    /// Answer as the real APIs do a top-level body field they do not know:
    /// 400 naming it (OpenAI "Unrecognized request argument supplied: X",
    /// Anthropic "X: Extra inputs are not permitted"); known bodies are
    /// served normally.
    StrictFields,
    /// Answer normally but report no usage: no usage chunk in an OpenAI
    /// stream (even when asked for), no `usage` in a unary body.
    NoUsage,
    /// 200 with exactly this body: `json` for a unary request, `sse` (the
    /// raw event stream, as the provider would send it) for a streaming
    /// one. For tests of how an answer is read.
    Reply { json: String, sse: String },
    /// A budget of `rpm` requests and `tpm` tokens a minute (from the first
    /// call), told on every answer in the provider's own rate-limit headers;
    /// a 429 with `retry-after` once it is spent (`testkit/src/ratelimit.rs`).
    RateLimit { rpm: u64, tpm: u64 },
}

#[derive(Debug, Default)]
struct ModelFaults {
    persistent: Option<Fault>,
    /// A fault for the next `n` calls, taking precedence over `persistent`.
    times: Option<(Fault, usize)>,
}

/// Per-model fault settings, shared between the handle and the handlers.
#[derive(Debug, Default)]
pub(crate) struct FaultTable {
    models: Mutex<HashMap<String, ModelFaults>>,
}

impl FaultTable {
    pub(crate) fn set(&self, model: &str, fault: Fault) {
        let mut models = self.models.lock().unwrap_or_else(PoisonError::into_inner);
        models.entry(model.to_owned()).or_default().persistent = Some(fault);
    }

    pub(crate) fn set_times(&self, model: &str, fault: Fault, times: usize) {
        let mut models = self.models.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = models.entry(model.to_owned()).or_default();
        entry.times = (times > 0).then_some((fault, times));
    }

    pub(crate) fn clear(&self, model: &str) {
        let mut models = self.models.lock().unwrap_or_else(PoisonError::into_inner);
        models.remove(model);
    }

    /// The fault for one call to `model`, consuming one use of a counted fault.
    pub(crate) fn take(&self, model: &str) -> Option<Fault> {
        let mut models = self.models.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = models.get_mut(model)?;
        if let Some((fault, left)) = entry.times.as_mut() {
            let fault = fault.clone();
            *left -= 1;
            if *left == 0 {
                entry.times = None;
            }
            return Some(fault);
        }
        entry.persistent.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counted_fault_expires_then_persistent_applies() {
        let table = FaultTable::default();
        table.set("m", Fault::UnknownModel);
        table.set_times("m", Fault::ErrorEvent, 2);
        assert_eq!(table.take("m"), Some(Fault::ErrorEvent));
        assert_eq!(table.take("m"), Some(Fault::ErrorEvent));
        assert_eq!(table.take("m"), Some(Fault::UnknownModel));
        table.clear("m");
        assert_eq!(table.take("m"), None);
        assert_eq!(table.take("other"), None);
    }
}
