//! The engine's one error type. Binaries map it once at their edge (gRPC status, HTTP response,
//! exit code); nothing here knows about transports.

use std::path::PathBuf;

use crate::policy_store::Diagnostic;

/// Everything that can go wrong inside the engine.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A request named a policy store that is not loaded.
    #[error("unknown policy store `{0}`")]
    UnknownStore(String),

    /// A policy store failed to load or validate; nothing of it was applied.
    #[error("policy store `{store}` is invalid:\n{}", render_diagnostics(.diagnostics))]
    InvalidStore {
        /// Store name (its folder name).
        store: String,
        /// Every problem found, with file and line.
        diagnostics: Vec<Diagnostic>,
    },

    /// Reading a file or folder failed.
    #[error("cannot read `{}`: {source}", path.display())]
    Io {
        /// The path that could not be read.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },

    /// A policy test file is malformed.
    #[error("{}: {message}", file.display())]
    InvalidTestFile {
        /// The test file.
        file: PathBuf,
        /// What is wrong with it.
        message: String,
    },

    /// A request is malformed (bad entity id, unknown action, context of the wrong shape, ...).
    #[error("invalid request: {0}")]
    InvalidRequest(String),

    /// The policy folder watcher could not be started.
    #[error("cannot watch policy folder: {0}")]
    Watch(#[from] notify::Error),

    /// Configuration is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),

    /// The database failed or is unreachable. The message is for logs, not for callers.
    #[error("database error: {0}")]
    Database(String),

    /// The engine cannot answer safely right now (database unreachable beyond the staleness
    /// bound, audit log unwritable for a critical decision, shutting down).
    #[error("unavailable: {0}")]
    Unavailable(String),

    /// A consistency token is malformed or names another store.
    #[error("invalid consistency token: {0}")]
    InvalidToken(String),

    /// A signed media URL failed verification.
    #[error("media URL rejected: {0}")]
    MediaUrl(&'static str),

    /// The signing key ring cannot be read or written.
    #[error("signing keys: {0}")]
    Keys(String),

    /// The audit log cannot be written or read.
    #[error("audit log: {0}")]
    Audit(String),
}

fn render_diagnostics(diagnostics: &[Diagnostic]) -> String {
    diagnostics
        .iter()
        .map(|d| format!("  {d}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Shorthand for results whose error is [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
