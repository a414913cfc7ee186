//! The crate's single error type.

use std::path::PathBuf;

/// Everything that can go wrong in `wave-data`. Variants carry the object URI, source file, row,
/// field or split involved so that a message alone names the culprit.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration value is invalid; `field` is the dotted config key (`data.batch_size`).
    #[error("{field} {msg}")]
    Config {
        /// Dotted name of the offending field.
        field: String,
        /// What is wrong with it.
        msg: String,
    },
    /// A dataset URI or output location could not be understood.
    #[error("invalid dataset location {uri:?}: {msg}")]
    Uri {
        /// The URI as given.
        uri: String,
        /// Why it was rejected.
        msg: String,
    },
    /// An object store operation failed (unreachable endpoint, missing object, permission ...).
    #[error("object store error on {uri}: {source}")]
    Store {
        /// Full URI of the object.
        uri: String,
        /// Underlying error.
        #[source]
        source: object_store::Error,
    },
    /// A local file could not be read or written.
    #[error("I/O error on {}: {source}", path.display())]
    Io {
        /// The local path.
        path: PathBuf,
        /// Underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A Parquet file is corrupt, truncated or not Parquet at all.
    #[error("bad Parquet data in {uri}: {source}")]
    Parquet {
        /// Full URI of the file or shard.
        uri: String,
        /// Underlying error.
        #[source]
        source: parquet::errors::ParquetError,
    },
    /// Arrow rejected a batch (schema mismatch while building or decoding).
    #[error("Arrow error in {uri}: {source}")]
    Arrow {
        /// Full URI of the file or shard.
        uri: String,
        /// Underlying error.
        #[source]
        source: arrow_schema::ArrowError,
    },
    /// A column is missing or has the wrong type.
    #[error("{uri}: column {column:?} {msg}")]
    Schema {
        /// File, shard or manifest URI.
        uri: String,
        /// Column name.
        column: String,
        /// What is wrong (missing, wrong type ...).
        msg: String,
    },
    /// A raw input record is unusable (invalid UTF-8, empty text, malformed line ...).
    #[error("{source_name}{}: {msg}", row.map(|r| format!(", row {r}")).unwrap_or_default())]
    BadInput {
        /// Input file or archive member.
        source_name: String,
        /// 1-based row or line number where known.
        row: Option<u64>,
        /// What is wrong.
        msg: String,
    },
    /// A label is outside `0..num_classes`.
    #[error("{uri}, row {row}: label {label} is out of range for {num_classes} classes")]
    LabelOutOfRange {
        /// File or shard URI.
        uri: String,
        /// Row number (input: 1-based line/record; shard: dataset row index).
        row: u64,
        /// The offending label.
        label: i64,
        /// Number of label names.
        num_classes: usize,
    },
    /// `manifest.json` is missing, malformed or inconsistent with a shard.
    #[error("manifest {uri}: {msg}")]
    Manifest {
        /// Manifest or shard URI.
        uri: String,
        /// What is inconsistent.
        msg: String,
    },
    /// Content does not match its pinned or recorded checksum.
    #[error("checksum mismatch for {uri}: expected {expected}, found {actual}")]
    Checksum {
        /// File, archive member or shard URI.
        uri: String,
        /// Expected digest (with algorithm prefix).
        expected: String,
        /// Digest of what was read.
        actual: String,
    },
    /// A split that was asked for does not exist.
    #[error("split {split:?} not found in {location}; available: {}", available.join(", "))]
    MissingSplit {
        /// Dataset URI or source archive.
        location: String,
        /// The split asked for.
        split: String,
        /// The splits that do exist.
        available: Vec<String>,
    },
    /// A tokenizer could not be found, loaded, trained or applied.
    #[error("tokenizer {spec}: {msg}")]
    Tokenizer {
        /// Path or name of the tokenizer.
        spec: String,
        /// What failed.
        msg: String,
    },
    /// Downloading or copying a raw data set archive failed.
    #[error("fetch {what}: {msg}")]
    Fetch {
        /// URL or mirror path.
        what: String,
        /// What failed.
        msg: String,
    },
    /// A saved loader cursor cannot be used with these options.
    #[error("loader cursor: {msg}")]
    Cursor {
        /// Why.
        msg: String,
    },
    /// The background loader thread stopped without reporting an error (it panicked).
    #[error("data loader thread for split {split:?} stopped unexpectedly")]
    LoaderStopped {
        /// The split being streamed.
        split: String,
    },
}

/// Locations are parsed by `wave-store`; its errors keep their variant here.
impl From<wave_store::Error> for Error {
    fn from(e: wave_store::Error) -> Self {
        match e {
            wave_store::Error::Uri { uri, msg } => Error::Uri { uri, msg },
            wave_store::Error::Store { uri, source } => Error::Store { uri, source },
            wave_store::Error::Io { path, source } => Error::Io { path, source },
        }
    }
}

/// Shorthand used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn config(field: &str, msg: impl Into<String>) -> Self {
        Error::Config {
            field: field.to_string(),
            msg: msg.into(),
        }
    }
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
    pub(crate) fn bad_input(
        source_name: impl Into<String>,
        row: Option<u64>,
        msg: impl Into<String>,
    ) -> Self {
        Error::BadInput {
            source_name: source_name.into(),
            row,
            msg: msg.into(),
        }
    }
    pub(crate) fn manifest(uri: impl Into<String>, msg: impl Into<String>) -> Self {
        Error::Manifest {
            uri: uri.into(),
            msg: msg.into(),
        }
    }
    pub(crate) fn tokenizer(spec: impl Into<String>, msg: impl std::fmt::Display) -> Self {
        Error::Tokenizer {
            spec: spec.into(),
            msg: msg.to_string(),
        }
    }
}
