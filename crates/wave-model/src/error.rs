use thiserror::Error;

/// Errors of the model crate.
#[derive(Debug, Error)]
pub enum Error {
    /// A `[model]` field has an unusable value.
    #[error("model.{field}: {reason}")]
    InvalidConfig {
        /// Field name inside `[model]`.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// Inputs do not fit the model (wrong rank, too long for the position table, ...).
    #[error("model input: {0}")]
    BadInput(String),
    /// libtorch reported an error.
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
}
