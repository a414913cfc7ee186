use std::path::Path;

use thiserror::Error;

/// Errors of the trainer.
#[derive(Debug, Error)]
pub enum Error {
    /// The job config is unusable; the message names the key.
    #[error("config: {0}")]
    Config(String),
    /// A file in the run or checkpoint folder could not be read or written.
    #[error("{0}")]
    Io(String),
    /// The data pipeline failed.
    #[error(transparent)]
    Data(#[from] wave_data::Error),
    /// The model rejected its config or inputs.
    #[error(transparent)]
    Model(#[from] wave_model::Error),
    /// A collective failed or the ranks disagree.
    #[error(transparent)]
    Comm(#[from] wave_comm::Error),
    /// libtorch failed.
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
    /// A checkpoint is missing, uncommitted or does not match this job.
    #[error("checkpoint {path}: {reason}")]
    Checkpoint {
        /// The checkpoint folder.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// Rank 0 refused to start (resume point or checkpoint root); every rank reports the reason.
    #[error("{0}")]
    StartRefused(String),
    /// Training produced a non-finite loss.
    #[error("loss became {loss} at step {step}; lower train.lr or check the data")]
    Diverged {
        /// Optimizer step.
        step: u64,
        /// The loss value.
        loss: f64,
    },
}

impl Error {
    pub(crate) fn io(path: &Path, e: std::io::Error) -> Error {
        Error::Io(format!("{}: {e}", path.display()))
    }
}
