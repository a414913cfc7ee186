//! # wave-train
//!
//! The trainer of wave-dist. It owns the job config (whose sections belong to the components
//! that read them: `[model]` to `wave-model`, `[data]` to `wave-data`), the AdamW optimizer
//! written on plain tensors so its state can be checkpointed, the learning-rate schedule, the
//! metrics sink, and the training loop that composes them:
//!
//! ```text
//! lr = lr_at(step) → batch = loader.next() → forward/backward per micro-batch → clip → AdamW
//!    → log → maybe evaluate → maybe checkpoint
//! ```
//!
//! ```no_run
//! use wave_train::{train, JobConfig};
//! let cfg = JobConfig::load("configs/smoke.toml".as_ref(), &["train.max_steps=20".into()])?;
//! // Nothing to hand back to the allocator at the end (see `train`).
//! let summary = train(&cfg, &|| {})?;
//! println!("{}", serde_json::to_string(&summary).unwrap_or_default());
//! # Ok::<(), wave_train::Error>(())
//! ```
//!
//! Determinism: same config and seed ⇒ same losses on CPU (initialisation is seeded, the data
//! order is a pure function of seed and position, dropout is reseeded from (seed, step)).

pub mod checkpoint;
mod config;
mod device;
mod error;
pub mod eval;
pub mod metrics;
pub mod objective;
pub mod optim;
mod parallel;
mod saving;
mod state;
mod step;
pub mod stop;
pub mod tensorboard;
pub mod threads;
mod trainer;
mod window;

pub use config::{
    CheckpointConfig, JobConfig, OnFailure, Precision, Resume, Schedule, TrainConfig,
};
pub use device::parse_device;
pub use error::Error;
pub use eval::{evaluate_run, logits_of_run, unigram_baseline_of_run, EvalResult};
pub use objective::{Objective, ObjectiveKind};
pub use parallel::{GradientBuckets, SyncStats};
pub use state::open_data;
pub use trainer::{train, Params, RunSummary};
