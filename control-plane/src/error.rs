//! The control plane's one error type and its one mapping to `tonic::Status`.

use sea_orm::{DbErr, SqlErr};
use tonic::Status;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The caller's input is wrong; the message names the field and what to do.
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    /// The system is not in a state that allows this (e.g. a provider still in use).
    #[error("{0}")]
    FailedPrecondition(String),
    /// A stale etag: somebody else changed the resource first.
    #[error("{0}")]
    Aborted(String),
    #[error("database: {0}")]
    Database(#[from] DbErr),
    /// A bug or a broken invariant; the caller gets a generic message.
    #[error("internal: {0}")]
    Internal(String),
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn invalid(msg: impl Into<String>) -> Self {
        Self::InvalidArgument(msg.into())
    }
    pub fn not_found(msg: impl Into<String>) -> Self {
        Self::NotFound(msg.into())
    }

    /// The same error with `what` in front of a caller-facing message
    /// (which resource of a whole-config apply it is about).
    pub fn context(self, what: &str) -> Self {
        match self {
            Self::InvalidArgument(m) => Self::InvalidArgument(format!("{what}: {m}")),
            Self::NotFound(m) => Self::NotFound(format!("{what}: {m}")),
            Self::AlreadyExists(m) => Self::AlreadyExists(format!("{what}: {m}")),
            Self::FailedPrecondition(m) => Self::FailedPrecondition(format!("{what}: {m}")),
            Self::Aborted(m) => Self::Aborted(format!("{what}: {m}")),
            other => other,
        }
    }
}

impl From<ApiError> for Status {
    fn from(err: ApiError) -> Self {
        match err {
            ApiError::InvalidArgument(m) => Status::invalid_argument(m),
            ApiError::NotFound(m) => Status::not_found(m),
            ApiError::AlreadyExists(m) => Status::already_exists(m),
            ApiError::FailedPrecondition(m) => Status::failed_precondition(m),
            ApiError::Aborted(m) => Status::aborted(m),
            ApiError::Database(db) => db_status(&db),
            ApiError::Internal(m) => {
                tracing::error!(error = %m, "internal error");
                Status::internal("internal error; see the control-plane logs")
            }
        }
    }
}

/// Database errors that reach here were not foreseen by a pre-check (which
/// gives a better message); still map them on purpose.
fn db_status(db: &DbErr) -> Status {
    match db.sql_err() {
        Some(SqlErr::UniqueConstraintViolation(_)) => {
            Status::already_exists("a resource with the same unique key already exists")
        }
        Some(SqlErr::ForeignKeyConstraintViolation(_)) => Status::failed_precondition(
            "the change conflicts with a resource that refers to it, or that it refers to",
        ),
        _ => match db {
            _ if connection_lost(db) => {
                tracing::error!(error = %db, "config store unreachable");
                Status::unavailable("config store unavailable; retry later")
            }
            _ => {
                tracing::error!(error = %db, "database error");
                Status::internal("internal error; see the control-plane logs")
            }
        },
    }
}

/// Whether the database (not the request) failed: no connection, or the one
/// in use was lost mid-statement (a restart, a failover, an administrator
/// terminating it). Retryable: UNAVAILABLE.
pub fn connection_lost(db: &DbErr) -> bool {
    use sea_orm::sqlx;
    let runtime = match db {
        DbErr::Conn(_) | DbErr::ConnectionAcquire(_) => return true,
        DbErr::Query(r) | DbErr::Exec(r) => r,
        _ => return false,
    };
    let sea_orm::RuntimeErr::SqlxError(e) = runtime else {
        return false;
    };
    match e.as_ref() {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        // Class 08: connection exception; 57P01-57P03: shut down or
        // terminated by an administrator, cannot connect now.
        sqlx::Error::Database(d) => d
            .code()
            .is_some_and(|c| c.starts_with("08") || matches!(&*c, "57P01" | "57P02" | "57P03")),
        _ => false,
    }
}

impl ApiError {
    /// A lost connection (see [`connection_lost`]): worth one retry on a
    /// fresh connection for a read.
    pub fn is_connection_lost(&self) -> bool {
        matches!(self, ApiError::Database(db) if connection_lost(db))
    }
}
