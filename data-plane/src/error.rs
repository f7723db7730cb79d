//! The data plane's one error type and its one mapping to `tonic::Status`.
//! Stages report what happened; only `From<DpError> for Status` picks codes.

use tonic::Status;

use crate::upstream::Refusal;

/// Why one candidate did not serve, kept for the "all failed" message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reason {
    /// `provider/model (member id)`.
    pub member: String,
    pub why: String,
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.member, self.why)
    }
}

fn join(reasons: &[Reason]) -> String {
    if reasons.is_empty() {
        return "no candidate could be tried".into();
    }
    reasons
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

#[derive(Debug, thiserror::Error)]
pub enum DpError {
    #[error("{0}")]
    InvalidArgument(String),
    /// One field of the request is wrong: `field` (its path in the gRPC
    /// request, e.g. `messages[1].parts[0].image.url`) and what is wrong
    /// with it. The status carries the field as a `google.rpc.BadRequest`
    /// violation, so the HTTP door can name it as OpenAI's SDKs expect.
    #[error("{field} {problem}")]
    InvalidField { field: String, problem: String },
    /// The model name resolves to nothing.
    #[error("{0}")]
    NotFound(String),
    /// Disabled, or no active member.
    #[error("{0}")]
    FailedPrecondition(String),
    /// The caller's key does not cover this model (or direct calls).
    #[error("{0}")]
    Forbidden(String),
    /// The caller is over its own rpm/tpm limit or token budget.
    #[error("{message}")]
    CallerLimit {
        message: String,
        retry_after: std::time::Duration,
    },
    /// No usable caller key (or certificate): what is wrong with it.
    #[error("{0}")]
    Unauthenticated(&'static str),
    /// No config loaded yet.
    #[error("this worker has not loaded a config yet; retry shortly")]
    NotReady,
    /// Every candidate failed, was benched or was being probed.
    /// `retry_after`: when the soonest benched member is due back.
    #[error("every candidate for '{model}' failed: {}", join(.reasons))]
    AllCandidatesFailed {
        model: String,
        reasons: Vec<Reason>,
        retry_after: Option<std::time::Duration>,
    },
    /// Every member that was tried said the prompt is longer than its context.
    #[error("the request is longer than the context of every member of '{model}': {}", join(.reasons))]
    ContextTooLong { model: String, reasons: Vec<Reason> },
    /// No member can take what the request asks for (nothing was sent).
    #[error("no member of '{model}' can take this request: {}", join(.reasons))]
    Unsupported { model: String, reasons: Vec<Reason> },
    /// Every member answered that it does not know the model.
    #[error("no member of '{model}' knows the model: {}", join(.reasons))]
    NoMemberKnowsModel { model: String, reasons: Vec<Reason> },
    /// Every member is over its rpm/tpm limit this minute.
    #[error("every member of '{model}' used up its limit for this minute: {}", join(.reasons))]
    QuotaExhausted {
        model: String,
        reasons: Vec<Reason>,
        retry_after: Option<std::time::Duration>,
    },
    /// Every member left is at its concurrency cap, and no slot came free
    /// for this request: `why` (its pool's admission queue is full, or its
    /// deadline came first). `retry_after`: about when one should.
    #[error("every member of '{model}' is at its concurrency cap ({why}): {}", join(.reasons))]
    Busy {
        model: String,
        why: &'static str,
        reasons: Vec<Reason>,
        retry_after: std::time::Duration,
    },
    /// The attempt cap was reached.
    #[error("attempt cap of {cap} reached for '{model}': {}", join(.reasons))]
    AttemptCap {
        model: String,
        cap: u32,
        reasons: Vec<Reason>,
    },
    /// An upstream refused the request itself.
    #[error("{member}: {message}")]
    Refused {
        refusal: Refusal,
        member: String,
        message: String,
    },
    /// The caller's deadline passed.
    #[error("deadline passed after {attempts} attempts for '{model}'")]
    Deadline { model: String, attempts: usize },
    /// A committed stream broke: never replayed elsewhere.
    #[error("member {member} failed mid-stream: {detail}; the stream is not replayed elsewhere")]
    StreamBroken { member: String, detail: String },
    /// The stream was given up (its caller stopped reading) before it finished.
    #[error("the stream was cut before it finished")]
    StreamCut,
    /// A committed stream went silent or ran past a timeout.
    #[error("{0}")]
    StreamTimedOut(String),
}

impl DpError {
    /// The gRPC code of this error, exhaustively by variant: the gRPC door
    /// answers with it and metrics and statistics count outcomes by it.
    pub fn code(&self) -> tonic::Code {
        use tonic::Code;
        match self {
            Self::InvalidArgument(_)
            | Self::InvalidField { .. }
            | Self::ContextTooLong { .. }
            | Self::Unsupported { .. } => Code::InvalidArgument,
            Self::NotFound(_) | Self::NoMemberKnowsModel { .. } => Code::NotFound,
            Self::FailedPrecondition(_) => Code::FailedPrecondition,
            Self::NotReady
            | Self::AllCandidatesFailed { .. }
            | Self::AttemptCap { .. }
            | Self::StreamBroken { .. }
            | Self::StreamCut => Code::Unavailable,
            Self::QuotaExhausted { .. } | Self::CallerLimit { .. } | Self::Busy { .. } => {
                Code::ResourceExhausted
            }
            Self::Forbidden(_) => Code::PermissionDenied,
            Self::Unauthenticated(_) => Code::Unauthenticated,
            Self::Deadline { .. } | Self::StreamTimedOut(_) => Code::DeadlineExceeded,
            Self::Refused { refusal, .. } => match refusal {
                Refusal::BadRequest => Code::InvalidArgument,
                Refusal::Unauthenticated => Code::Unauthenticated,
                Refusal::Forbidden => Code::PermissionDenied,
                Refusal::Billing | Refusal::Other => Code::FailedPrecondition,
            },
        }
    }

    /// When a retry may succeed, for the variants that know: gRPC's
    /// `grpc-retry-pushback-ms`, HTTP's `Retry-After`.
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            Self::AllCandidatesFailed { retry_after, .. }
            | Self::QuotaExhausted { retry_after, .. } => *retry_after,
            Self::CallerLimit { retry_after, .. } | Self::Busy { retry_after, .. } => {
                Some(*retry_after)
            }
            Self::InvalidArgument(_)
            | Self::InvalidField { .. }
            | Self::NotFound(_)
            | Self::FailedPrecondition(_)
            | Self::Forbidden(_)
            | Self::Unauthenticated(_)
            | Self::NotReady
            | Self::ContextTooLong { .. }
            | Self::Unsupported { .. }
            | Self::NoMemberKnowsModel { .. }
            | Self::AttemptCap { .. }
            | Self::Refused { .. }
            | Self::Deadline { .. }
            | Self::StreamBroken { .. }
            | Self::StreamCut
            | Self::StreamTimedOut(_) => None,
        }
    }
}

impl From<DpError> for Status {
    fn from(e: DpError) -> Self {
        let message = e.to_string();
        let code = e.code();
        let after = e.retry_after();
        // A wrong field also names it, as a `google.rpc.BadRequest` violation.
        let mut status = if let DpError::InvalidField { field, problem } = e {
            use tonic_types::{ErrorDetails, StatusExt as _};
            Status::with_error_details(
                code,
                message,
                ErrorDetails::with_bad_request_violation(field, problem),
            )
        } else {
            Status::new(code, message)
        };
        // gRPC's retry pushback: clients that retry wait this long.
        if let Some(after) = after
            && let Ok(v) = after.as_millis().to_string().parse()
        {
            status.metadata_mut().insert("grpc-retry-pushback-ms", v);
        }
        status
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_failed_lists_every_reason_and_is_unavailable() {
        let e = DpError::AllCandidatesFailed {
            retry_after: Some(std::time::Duration::from_millis(1500)),
            model: "coding".into(),
            reasons: vec![
                Reason {
                    member: "a/x (member 1)".into(),
                    why: "HTTP 503: busy".into(),
                },
                Reason {
                    member: "b/y (member 2)".into(),
                    why: "benched for 2.0s more".into(),
                },
            ],
        };
        let s = Status::from(e);
        assert_eq!(s.code(), tonic::Code::Unavailable);
        assert_eq!(
            s.message(),
            "every candidate for 'coding' failed: a/x (member 1): HTTP 503: busy; b/y (member 2): benched for 2.0s more"
        );
        assert_eq!(
            s.metadata()
                .get("grpc-retry-pushback-ms")
                .and_then(|v| v.to_str().ok()),
            Some("1500"),
            "a retry hint"
        );
    }

    #[test]
    fn at_the_cap_is_resource_exhausted_with_a_retry_hint() {
        let e = DpError::Busy {
            model: "coding".into(),
            why: "its admission queue is full",
            reasons: vec![Reason {
                member: "a/x (member 1)".into(),
                why: "at its concurrency cap (4 in flight)".into(),
            }],
            retry_after: std::time::Duration::from_millis(700),
        };
        let s = Status::from(e);
        assert_eq!(s.code(), tonic::Code::ResourceExhausted);
        assert_eq!(
            s.message(),
            "every member of 'coding' is at its concurrency cap (its admission queue is full): \
             a/x (member 1): at its concurrency cap (4 in flight)"
        );
        assert_eq!(
            s.metadata()
                .get("grpc-retry-pushback-ms")
                .and_then(|v| v.to_str().ok()),
            Some("700")
        );
        let door = crate::door::DoorError::from(DpError::Busy {
            model: "coding".into(),
            why: "its admission queue is full",
            reasons: Vec::new(),
            retry_after: std::time::Duration::from_millis(700),
        });
        assert_eq!(door.status.as_u16(), 429, "HTTP 429 on the door");
        assert_eq!(
            door.headers.get("retry-after").map(|v| v.as_bytes()),
            Some(&b"1"[..])
        );
    }
}
