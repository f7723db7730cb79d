//! The stream pump: forwards a committed stream's chunks to the caller's
//! door and ends it with exactly one outcome. It ends cleanly (the chunks
//! simply end) only after the upstream's finish event; a break, a stall or
//! a caller that stops reading ends it with an error — never a replay
//! elsewhere (the first chunk committed it).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use futures::{Stream, StreamExt as _};
use switchyard_proto::v1 as pb;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;

use crate::attempt::OpenStream;
use crate::error::DpError;
use crate::failover::Rules;
use crate::failover::verdict::Judge;
use crate::fleet::Fleet;
use crate::model::{Candidate, Pool};
use crate::observe::Watch;
use crate::observe::metrics::{Inflight, Metrics};
use crate::settle::Reserved;
use crate::upstream::{Chunk, ChunkStream, ErrorClass, Usage};

/// A committed stream as its door reads it: the chunks (no `Meta`: the
/// upstream's id and model went out with the start), then either nothing
/// (it finished) or the one error that ended it.
pub type Chunks = std::pin::Pin<Box<dyn Stream<Item = Result<Chunk, DpError>> + Send + 'static>>;

type Tx = mpsc::Sender<Result<Chunk, DpError>>;

/// One committed stream on its way to the caller.
pub struct Pump {
    pub fleet: Fleet,
    /// The worker's failover rules: a broken or stalled stream is judged
    /// by them like a failed attempt.
    pub rules: Rules,
    /// The request's watch, who served it and what was tried, and the
    /// member's in-flight count: the stream's end is the request's end.
    pub watch: Option<(Watch, pb::ServedBy, Vec<pb::Attempt>, Inflight)>,
    pub member: Arc<Candidate>,
    pub pool: Arc<Pool>,
    pub metrics: Arc<Metrics>,
    /// Tokens reserved ahead from the member's `tpm_limit`, settled at usage.
    pub reserved_tokens: u64,
    /// What the stream is charged if it ends without reporting usage.
    pub bound: u64,
    /// The prompt's token estimate: with what was streamed, the least the
    /// stream used.
    pub prompt: u64,
    /// Characters of content, reasoning and tool arguments forwarded.
    pub streamed: AtomicU64,
    /// The caller's own reservation, settled on the same usage.
    pub admission: Option<crate::access::Admission>,
    pub request_id: String,
    /// Longest silence between two chunks.
    pub idle: Duration,
    pub deadline: Option<Instant>,
}

/// Why the pump stopped without finishing.
enum Cut {
    /// The caller left or stopped reading: nobody to tell.
    CallerGone,
    /// The stream failed: the caller gets this.
    Failed(DpError),
}

impl Pump {
    /// Runs the pump on `tasks`; returns the chunks.
    pub fn spawn(mut self, tasks: &TaskTracker, open: OpenStream, span: tracing::Span) -> Chunks {
        let (tx, rx) = mpsc::channel(32);
        let finished = Arc::new(AtomicBool::new(false));
        let done = finished.clone();
        tasks.spawn(
            async move {
                // The hold counts the stream at its member until this task
                // ends, however it ends.
                let OpenStream {
                    first, rest, hold, ..
                } = open;
                // Dropping `rest` (at the end of this task) closes the upstream
                // connection: a caller that left cancels the upstream at once.
                let mut usage: Option<Usage> = None;
                let watch = self.watch.take();
                // The first chunk goes out right after the start event.
                let ttft = watch.as_ref().map(|(w, ..)| w.started().elapsed());
                let end = self.run(&tx, first, rest, &mut usage).await;
                if let (Ok(()), Some(hold)) = (&end, hold) {
                    hold.finished();
                }
                // The stream's health success (failover reported none when
                // it committed, unless it was a probe): it finished, or the
                // caller left while the upstream was still serving it.
                if matches!(end, Ok(()) | Err(Cut::CallerGone)) && !self.member.ephemeral {
                    self.fleet.success(&self.member.member_id, None);
                }
                // Settled once, on the last usage the stream reported; a
                // stream that reported none (cut, or an upstream that sends
                // no usage frame) is charged its upper bound.
                Reserved {
                    pool: &self.pool,
                    member: &self.member,
                    tokens: self.reserved_tokens,
                    bound: self.bound,
                    seen: self
                        .prompt
                        .saturating_add(self.streamed.load(Ordering::Relaxed).div_ceil(4)),
                }
                .settle(
                    &self.fleet,
                    &self.metrics,
                    self.admission.take(),
                    usage.map(|u| u.total()),
                );
                let code = match &end {
                    Ok(()) => tonic::Code::Ok,
                    Err(Cut::Failed(e)) => e.code(),
                    Err(Cut::CallerGone) => tonic::Code::Cancelled,
                };
                if let Some((w, served_by, attempts, busy)) = watch {
                    drop(busy);
                    w.finish(code, Some(&served_by), usage, ttft, &attempts);
                }
                match end {
                    Ok(()) => finished.store(true, Ordering::Release),
                    // The closing error gets a moment of its own even past
                    // the deadline, so a stream never looks finished when it
                    // was cut.
                    Err(Cut::Failed(e)) => {
                        let _ = tokio::time::timeout(Duration::from_secs(1), tx.send(Err(e))).await;
                    }
                    Err(Cut::CallerGone) => {}
                }
            }
            .instrument(span),
        );
        // If the pump ends without handing over an outcome (it gave up on a
        // caller that stopped reading), the stream ends cut, never finished.
        let tail = futures::stream::once(async move {
            (!done.load(Ordering::Acquire)).then_some(Err(DpError::StreamCut))
        })
        .filter_map(std::future::ready);
        Box::pin(ReceiverStream::new(rx).chain(tail))
    }

    async fn run(
        &self,
        tx: &Tx,
        first: Chunk,
        mut rest: ChunkStream,
        usage: &mut Option<Usage>,
    ) -> Result<(), Cut> {
        // A caller that stops reading holds the upstream open no longer than
        // the stream may last.
        let request_end = Instant::now() + self.member.target.timeouts.total;
        let end = self.deadline.map_or(request_end, |d| d.min(request_end));
        let send = |chunk| async move {
            match tokio::time::timeout_at(end, tx.send(Ok(chunk))).await {
                Ok(Ok(())) => Ok(()),
                _ => Err(Cut::CallerGone),
            }
        };
        if self.forward(first, &send, usage).await? {
            return Ok(());
        }
        loop {
            // The silence allowed: the idle limit, within the caller's
            // deadline and the provider's whole-request timeout.
            let limit = self.idle.min(end.saturating_duration_since(Instant::now()));
            let next = tokio::select! {
                () = tx.closed() => return Err(Cut::CallerGone),
                n = tokio::time::timeout(limit, rest.next()) => n,
            };
            match next {
                Ok(Some(Ok(chunk))) => {
                    if self.forward(chunk, &send, usage).await? {
                        return Ok(());
                    }
                }
                Ok(Some(Err(err))) => {
                    tracing::warn!(request_id = %self.request_id, member = %self.member.member_id, error = %err, "upstream failed after the first chunk");
                    self.judge().failed(
                        &self.pool,
                        &self.member,
                        err.class(),
                        err.retry_after(),
                        None,
                    );
                    return Err(Cut::Failed(DpError::StreamBroken {
                        member: self.member.member_id.clone(),
                        detail: err.to_string(),
                    }));
                }
                Ok(None) => {
                    return Err(Cut::Failed(DpError::StreamBroken {
                        member: self.member.member_id.clone(),
                        detail: "it ended the stream before finishing".into(),
                    }));
                }
                Err(_) => return Err(Cut::Failed(self.timed_out(limit, request_end))),
            }
        }
    }

    /// Sends one chunk; true when it was the finish.
    async fn forward<F, Fut>(
        &self,
        chunk: Chunk,
        send: &F,
        usage: &mut Option<Usage>,
    ) -> Result<bool, Cut>
    where
        F: Fn(Chunk) -> Fut,
        Fut: std::future::Future<Output = Result<(), Cut>>,
    {
        let chars = match &chunk {
            Chunk::Usage(u) => {
                *usage = Some(*u);
                0
            }
            Chunk::Text(t) => t.len(),
            Chunk::Reasoning { text, .. } => text.len(),
            Chunk::ToolCall { arguments, .. } => arguments.len(),
            Chunk::Meta(_) | Chunk::Finish(_) => 0,
        };
        self.streamed
            .fetch_add(u64::try_from(chars).unwrap_or(u64::MAX), Ordering::Relaxed);
        let finished = matches!(chunk, Chunk::Finish(_));
        // A late `Meta` is not forwarded: the id and model went out with the start.
        if !matches!(chunk, Chunk::Meta(_)) {
            send(chunk).await?;
        }
        Ok(finished)
    }

    fn judge(&self) -> Judge<'_> {
        Judge {
            fleet: &self.fleet,
            metrics: &self.metrics,
            rules: &self.rules,
        }
    }

    fn timed_out(&self, limit: Duration, request_end: Instant) -> DpError {
        let now = Instant::now();
        let m = &self.member.member_id;
        let msg = if self.deadline.is_some_and(|d| now >= d) {
            // The caller's deadline: not the member's fault.
            "deadline passed while streaming".to_owned()
        } else if now >= request_end {
            format!("member {m} exceeded the provider's request timeout")
        } else {
            tracing::warn!(request_id = %self.request_id, member = %m, "stream stalled");
            self.judge()
                .failed(&self.pool, &self.member, ErrorClass::Transient, None, None);
            format!("no chunk from member {m} for {} ms", limit.as_millis())
        };
        DpError::StreamTimedOut(msg)
    }
}
