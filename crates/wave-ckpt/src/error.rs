//! The crate's single error type.

/// Everything that can go wrong in `wave-ckpt`. Variants carry the object URI and the step so a
/// message alone names the culprit; none carries a credential.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The checkpoint location could not be opened (bad URI, builder rejected the environment).
    #[error(transparent)]
    Location(#[from] wave_store::Error),
    /// An object-store request failed after its retries (unreachable endpoint, permission ...).
    #[error("object store error on {uri} ({op}): {source}")]
    Store {
        /// Full URI of the object or folder.
        uri: String,
        /// The operation (`open`, `put`, `get`, `list`, `delete`).
        op: &'static str,
        /// Underlying error.
        #[source]
        source: object_store::Error,
    },
    /// The step has no commit marker: it was never finished, or is being written.
    #[error("checkpoint step {step} at {uri} is not committed")]
    NotCommitted {
        /// URI of the step folder.
        uri: String,
        /// The step asked for.
        step: u64,
    },
    /// An object's content does not match the manifest (or the manifest does not match the marker).
    #[error("{uri} (step {step}) is corrupt: {detail}")]
    Corrupt {
        /// URI of the object.
        uri: String,
        /// Step of the checkpoint.
        step: u64,
        /// What differs (hash or size, expected and found).
        detail: String,
    },
    /// A manifest, commit marker or `latest` pointer is malformed or inconsistent.
    #[error("{uri}: {msg}")]
    Format {
        /// URI of the file.
        uri: String,
        /// What is wrong.
        msg: String,
    },
    /// The step is already committed with different objects; committed checkpoints are immutable.
    #[error("checkpoint step {step} at {uri} is already committed with different content")]
    StepExists {
        /// URI of the step folder.
        uri: String,
        /// The step.
        step: u64,
    },
    /// An object name cannot be stored (empty, has a `/`, reserved, or repeated).
    #[error("object name {name:?} for step {step}: {msg}")]
    InvalidName {
        /// The name given.
        name: String,
        /// The step being saved.
        step: u64,
        /// Why it is rejected.
        msg: String,
    },
    /// A local file or folder could not be read or removed.
    #[error("I/O error on {}: {source}", path.display())]
    Io {
        /// The local path.
        path: std::path::PathBuf,
        /// Underlying error.
        #[source]
        source: std::io::Error,
    },
    /// An option is out of range; `field` names it.
    #[error("{field} {msg}")]
    Config {
        /// The option.
        field: &'static str,
        /// What is wrong.
        msg: String,
    },
    /// Other writers kept moving `latest` while this save tried to.
    #[error("could not move {uri} to step {step}: it changed under us {attempts} times")]
    LatestContended {
        /// URI of the pointer.
        uri: String,
        /// The step being published.
        step: u64,
        /// Conditional puts tried.
        attempts: u32,
    },
    /// The background saver's thread is gone (it panicked); pending saves are lost.
    #[error("checkpoint saver for {uri} stopped unexpectedly")]
    SaverStopped {
        /// The checkpoint root.
        uri: String,
    },
    /// The I/O runtime or the saver thread could not be started.
    #[error("could not start {what}: {source}")]
    Runtime {
        /// What was being started.
        what: &'static str,
        /// Underlying error.
        #[source]
        source: std::io::Error,
    },
}

/// Shorthand used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn store(
        uri: impl Into<String>,
        op: &'static str,
        source: object_store::Error,
    ) -> Self {
        Error::Store {
            uri: uri.into(),
            op,
            source,
        }
    }

    pub(crate) fn format(uri: impl Into<String>, msg: impl Into<String>) -> Self {
        Error::Format {
            uri: uri.into(),
            msg: msg.into(),
        }
    }

    /// Whether retrying the same save may succeed: network failures and server errors are
    /// transient; missing objects, refused permissions, bad names and corrupt data are not.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Store { source, .. } => matches!(
                source,
                object_store::Error::Generic { .. } | object_store::Error::JoinError { .. }
            ),
            Error::LatestContended { .. } => true,
            _ => false,
        }
    }
}
