//! Checkpoints in object storage for wave-dist: named byte blobs per step, a hashed manifest, a
//! commit marker written last, and a `latest` pointer moved with a conditional put.
//!
//! The crate knows nothing about tensors: the trainer (`wave-train`) turns model and optimizer
//! state into safetensors bytes, cursor and RNG state into JSON, and hands them over as
//! `(name, bytes)` pairs. Storage goes through `wave-store` (shared with `wave-data`): a local
//! folder, `file://`, `s3://`, `gs://` or `az://`, with credentials and endpoint from the
//! standard environment variables (`AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID`, …), never logged.
//!
//! ```text
//! <root>/step-00000123/model.safetensors   objects named by the caller, immutable
//! <root>/step-00000123/manifest.json       format version, step, world size, writer, every
//!                                          object's size and sha256, caller metadata
//! <root>/step-00000123/COMMITTED           the manifest's sha256, written last
//! <root>/latest                            {"step":123,"manifest_sha256":"…"}
//! ```
//!
//! Guarantees: a reader trusts only committed steps and checks every object's size and sha256;
//! a save interrupted at any moment leaves the previous `latest` loadable and at most an
//! uncommitted folder, which readers ignore and the next save (or [`CheckpointStore::apply_retention`])
//! removes; `latest` never names an uncommitted step and never moves backwards. Every request is
//! bounded by timeouts and retries ([`RetryPolicy`]); transient failures of a whole save are
//! retried with exponential backoff. Details of the write order are in [`CheckpointStore`]'s
//! module (`store.rs`).
//!
//! Parts:
//! - [`CheckpointStore`]: blocking `save`, `latest`, `list`, `load`, `verify`, `apply_retention`,
//!   and `describe` ([`RootSummary`]: the committed steps, the step to resume from and who wrote
//!   it, so a trainer can refuse to start a fresh run over another run's checkpoints);
//! - [`Saver`]: the same saves on a background thread with a bounded number in flight. A caller
//!   whose peers wait for it (a rank in a collective with a time limit) uses the calls that never
//!   wait for the store: `try_submit` answers [`Submitted::Busy`] instead of blocking when
//!   `max_in_flight` saves are unfinished (skip or defer that save), `poll` each step, and
//!   `finish_within` a deadline, which reports the steps that did not land ([`FinishReport`]).
//!   `submit` and `finish` block until there is room, or everything landed;
//! - [`retention()`]: which committed steps to delete, as a pure function;
//! - [`Manifest`], [`Pointer`]: the JSON documents; [`Error`]: the one error type.
//!
//! On a local folder every object, manifest, marker and pointer is fsynced together with its
//! folder before the next write (so `COMMITTED` never reaches the disk before what it commits),
//! and a damaged `latest` falls back to the newest committed step with a warning.
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use wave_ckpt::{CheckpointStore, Retention, RetryPolicy};
//! let dir = tempfile::tempdir()?;
//! let store = CheckpointStore::open(&dir.path().display().to_string(), RetryPolicy::default())?
//!     .with_writer(1, "doc example");
//! for step in [100, 200, 300] {
//!     let objects = vec![("model.safetensors".to_string(), bytes::Bytes::from(vec![1u8; 64])),
//!                        ("state.json".to_string(), bytes::Bytes::from(format!("{{\"step\":{step}}}")))];
//!     store.save(step, objects, serde_json::json!({"loss": 0.5}))?;
//! }
//! let step = store.latest()?.expect("a committed step");
//! let ckpt = store.load(step)?; // every object verified against the manifest
//! assert_eq!(ckpt.object("state.json").map(|b| b.as_ref()), Some(&b"{\"step\":300}"[..]));
//! store.apply_retention(Retention { keep_last: 2, keep_every: 0 })?;
//! assert_eq!(store.list()?.iter().map(|c| c.step).collect::<Vec<_>>(), vec![200, 300]);
//! # Ok(()) }
//! ```
//!
//! Tests against a real S3 server (SeaweedFS on loopback) skip when the `weed` binary is missing
//! and fail under `CI=true`; `examples/crash_loop.rs` is the program the crash-safety test kills.

mod error;
mod layout;
mod retention;
mod saver;
mod store;

pub use error::{Error, Result};
pub use layout::{
    parse_step_dir, sha256_hex, step_dir, Manifest, ObjectEntry, Pointer, COMMITTED,
    FORMAT_VERSION, LATEST, MANIFEST,
};
pub use retention::{retention, Retention};
pub use saver::{FinishReport, SaveOutcome, Saver, SaverOptions, Submitted};
pub use store::{
    CheckpointInfo, CheckpointStore, CommitInfo, Loaded, RetentionReport, RetryPolicy, RootSummary,
    RUN_KEY,
};
pub use wave_store::StoreOptions;
