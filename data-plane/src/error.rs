//! The data plane's one error type and its one mapping to `tonic::Status`.

use tonic::{Code, Status};

#[derive(Debug, thiserror::Error)]
pub enum DpError {
    #[error("{0}")]
    InvalidArgument(String),
    /// The model name resolves to nothing.
    #[error("{0}")]
    NotFound(String),
    /// Disabled, or no active member.
    #[error("{0}")]
    FailedPrecondition(String),
    /// No config loaded yet.
    #[error("{0}")]
    NotReady(String),
    /// Every candidate failed or was benched; the message lists each reason.
    #[error("{0}")]
    Exhausted(String),
    /// A permanent upstream error, mapped to its gRPC meaning.
    #[error("{message}")]
    Upstream { code: Code, message: String },
    /// Every member is over its rpm/tpm limit this minute.
    #[error("{0}")]
    QuotaExhausted(String),
    /// The caller's deadline passed.
    #[error("{0}")]
    Deadline(String),
}

impl From<DpError> for Status {
    fn from(e: DpError) -> Self {
        match e {
            DpError::InvalidArgument(m) => Status::invalid_argument(m),
            DpError::NotFound(m) => Status::not_found(m),
            DpError::FailedPrecondition(m) => Status::failed_precondition(m),
            DpError::NotReady(m) | DpError::Exhausted(m) => Status::unavailable(m),
            DpError::Upstream { code, message } => Status::new(code, message),
            DpError::Deadline(m) => Status::deadline_exceeded(m),
            DpError::QuotaExhausted(m) => Status::resource_exhausted(m),
        }
    }
}
