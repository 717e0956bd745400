//! Errors of the engine, with a protocol-neutral code the server maps to a status.

use serde_json::{Map, Value};

/// What kind of failure an [`EngineError`] is; the server maps each to one HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// The input is malformed (400).
    Invalid,
    /// No credentials were given where they are needed (401).
    Unauthorized,
    /// The credentials given do not allow this, or a blocklist refuses it (403).
    Forbidden,
    /// A rate limit refuses it for now (429, with `retryAfter` seconds).
    TooManyRequests,
    /// The thing named does not exist (404).
    NotFound,
    /// The write conflicts with the stored state (409).
    Conflict,
    /// The input is larger than allowed (413).
    TooLarge,
    /// The content type is not one eddy stores (415).
    UnsupportedMediaType,
    /// The method is not allowed on this resource (405).
    MethodNotAllowed,
    /// The client took too long to send the request (408).
    Timeout,
    /// The feature is not built yet (501).
    NotImplemented,
    /// The server is shutting down (503).
    Unavailable,
    /// Something failed inside the server (500); the cause is logged, not shown.
    Internal,
}

/// An engine failure: a code, one clear sentence, and optional JSON details that the
/// server merges into the error body (`lastIndex`, `lastTimestamp`, `position`...).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct EngineError {
    pub code: ErrorCode,
    pub message: String,
    pub details: Map<String, Value>,
}

impl EngineError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            details: Map::new(),
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Invalid, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Conflict, message)
    }

    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::TooLarge, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Internal, message)
    }

    /// Adds a detail field to the error body.
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.details.insert(key.to_owned(), value.into());
        self
    }

    /// Prefixes the message with where the error happened (`event 3: ...`).
    pub fn context(mut self, prefix: impl std::fmt::Display) -> Self {
        self.message = format!("{prefix}: {}", self.message);
        self
    }
}

impl From<crate::path::PathError> for EngineError {
    fn from(e: crate::path::PathError) -> Self {
        Self::invalid(e.message)
    }
}

impl From<sqlx::Error> for EngineError {
    fn from(e: sqlx::Error) -> Self {
        if connection_lost(&e) {
            tracing::warn!(error = %e, "the database connection failed");
            return Self::new(
                ErrorCode::Unavailable,
                "the database is unreachable; nothing was changed by this request, retry it",
            );
        }
        tracing::error!(error = %e, "storage read failed");
        Self::internal("storage read failed")
    }
}

/// Whether `e` says the database could not be reached or dropped the connection
/// (I/O, pool, protocol errors; PostgreSQL's connection exceptions, class 08, its
/// shutdowns, 57P01-57P03, and the sessions it ends for their idle timeouts, 25P03,
/// 25P04 and 57P05, as it ends a paused node's), rather than refusing a statement.
pub(crate) fn connection_lost(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(d) => d.code().is_some_and(|c| {
            c.starts_with("08")
                || matches!(
                    &*c,
                    "57P01" | "57P02" | "57P03" | "57P05" | "25P03" | "25P04"
                )
        }),
        _ => false,
    }
}

impl From<rusqlite::Error> for EngineError {
    fn from(e: rusqlite::Error) -> Self {
        tracing::error!(error = %e, "storage write failed");
        Self::internal("storage write failed")
    }
}

pub type Result<T, E = EngineError> = std::result::Result<T, E>;
