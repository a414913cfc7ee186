//! The trainer's side of checkpoints: what goes into one and how it comes back. Storage, hashes,
//! the commit marker, the `latest` pointer, background uploads and retention are `wave-ckpt`'s.
//!
//! A checkpoint of step N is five objects under `<checkpoint.uri>/step-000000NN/`:
//!
//! ```text
//! model.safetensors       model parameters by name (what `checkpoint export` hands to PyTorch)
//! optimizer.safetensors   AdamW moments `<param>.exp_avg` / `<param>.exp_avg_sq`
//! state.json              CheckpointState: step, loader cursor, world size, data fingerprint, …
//! config.toml             the resolved job config (what `checkpoint export` reads [model] from)
//! metrics.json            the last train and eval metrics lines
//! ```
//!
//! Pre-emption (SIGTERM/SIGUSR1 on any rank) is agreed by all ranks at a step boundary (see
//! `stop`); rank 0 then commits a final checkpoint and every rank exits 0, so the scheduler's retry
//! resumes cleanly; a final save that fails exits non-zero.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tch::{Device, Tensor};
use wave_ckpt::{CheckpointStore, RetryPolicy};
use wave_data::Cursor;

use crate::config::Resume;
use crate::Error;

/// Version of [`CheckpointState`]'s layout.
pub const CHECKPOINT_VERSION: u32 = 2;
/// Object holding the model parameters.
pub const MODEL: &str = "model.safetensors";
/// Object holding the optimizer moments.
pub const OPTIMIZER: &str = "optimizer.safetensors";
/// Object holding [`CheckpointState`] as JSON.
pub const STATE: &str = "state.json";
/// Object holding the resolved job config.
pub const CONFIG: &str = "config.toml";
/// Object holding the last metrics lines.
pub const METRICS: &str = "metrics.json";

/// Everything besides tensors that a resume needs.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointState {
    /// [`CHECKPOINT_VERSION`].
    pub version: u32,
    /// Optimizer steps completed.
    pub step: u64,
    /// Data loader position after `step` steps (valid at any world size).
    pub cursor: Cursor,
    /// Fingerprint of the data set trained on.
    pub dataset_fingerprint: String,
    /// The model config, as TOML, to refuse resuming into a different model.
    pub model_toml: String,
    /// World size that wrote it.
    pub world_size: usize,
    /// The optimizer's own step counter (bias correction).
    pub optimizer_step: u64,
}

/// Opens the checkpoint root `uri` (folder, `file://`, `s3://`, …) for a job of `world_size` ranks.
pub fn open(uri: &str, world_size: usize) -> Result<CheckpointStore, Error> {
    CheckpointStore::open(uri, RetryPolicy::default())
        .map(|s| s.with_writer(world_size, concat!("wave-dist ", env!("CARGO_PKG_VERSION"))))
        .map_err(|e| store_error(uri, e))
}

/// A `wave-ckpt` error as the trainer's, naming the checkpoint root.
pub fn store_error(uri: &str, e: wave_ckpt::Error) -> Error {
    Error::Checkpoint {
        path: uri.to_string(),
        reason: e.to_string(),
    }
}

/// Serialises tensors (copied to the CPU) into safetensors bytes; the same tensors give the same
/// bytes.
pub fn to_safetensors(tensors: &[(String, Tensor)]) -> Result<Bytes, Error> {
    let cpu: Vec<(String, Tensor)> = tensors
        .iter()
        .map(|(n, t)| (n.clone(), t.to_device(Device::Cpu)))
        .collect();
    let tmp = tempfile::NamedTempFile::new()
        .map_err(|e| Error::Io(format!("temporary file for safetensors: {e}")))?;
    Tensor::write_safetensors(&cpu, tmp.path())
        .map_err(|e| Error::Io(format!("{}: {e}", tmp.path().display())))?;
    std::fs::read(tmp.path())
        .map(Bytes::from)
        .map_err(|e| Error::io(tmp.path(), e))
}

/// Parses safetensors bytes into CPU tensors.
fn from_safetensors(bytes: &[u8]) -> Result<Vec<(String, Tensor)>, String> {
    let tmp = tempfile::NamedTempFile::new().map_err(|e| format!("temporary file: {e}"))?;
    std::fs::write(tmp.path(), bytes).map_err(|e| format!("{}: {e}", tmp.path().display()))?;
    Tensor::read_safetensors(tmp.path()).map_err(|e| e.to_string())
}

/// The objects of one checkpoint, in the order they are listed in the module docs. Tensors are
/// copied out synchronously, so training may change them as soon as this returns.
pub fn objects(
    state: &CheckpointState,
    model: &[(String, Tensor)],
    optimizer: &[(String, Tensor)],
    config_toml: &str,
    metrics: &serde_json::Value,
) -> Result<Vec<(String, Bytes)>, Error> {
    Ok(vec![
        (MODEL.to_string(), to_safetensors(model)?),
        (OPTIMIZER.to_string(), to_safetensors(optimizer)?),
        (STATE.to_string(), json(state)?),
        (CONFIG.to_string(), Bytes::from(config_toml.to_string())),
        (METRICS.to_string(), json(metrics)?),
    ])
}

/// Pretty JSON bytes of a checkpoint document.
fn json<T: Serialize>(value: &T) -> Result<Bytes, Error> {
    serde_json::to_vec_pretty(value)
        .map(Bytes::from)
        .map_err(|e| Error::Io(format!("checkpoint JSON: {e}")))
}

/// A checkpoint read back and verified.
pub struct Loaded {
    /// The step folder's URL (for messages).
    pub uri: String,
    /// Non-tensor state.
    pub state: CheckpointState,
    /// Model tensors by name (on the CPU).
    pub model: Vec<(String, Tensor)>,
    /// Optimizer tensors by name (on the CPU).
    pub optimizer: Vec<(String, Tensor)>,
}

/// Reads the committed checkpoint of `step`; `wave-ckpt` checks every object's size and sha256,
/// and any failure names the step folder and the object.
pub fn load(store: &CheckpointStore, step: u64) -> Result<Loaded, Error> {
    let uri = format!(
        "{}/{}",
        store.uri().trim_end_matches('/'),
        wave_ckpt::step_dir(step)
    );
    let ckpt = store.load(step).map_err(|e| store_error(store.uri(), e))?;
    let fail = |reason: String| Error::Checkpoint {
        path: uri.clone(),
        reason,
    };
    let object = |name: &str| {
        ckpt.object(name)
            .ok_or_else(|| fail(format!("has no {name}")))
    };
    let state: CheckpointState =
        serde_json::from_slice(object(STATE)?).map_err(|e| fail(format!("{STATE}: {e}")))?;
    if state.version != CHECKPOINT_VERSION {
        return Err(fail(format!(
            "{STATE}: layout version {} (this build reads {CHECKPOINT_VERSION})",
            state.version
        )));
    }
    if state.step != step {
        return Err(fail(format!("{STATE} says step {}", state.step)));
    }
    let tensors =
        |name: &str| from_safetensors(object(name)?).map_err(|e| fail(format!("{name}: {e}")));
    Ok(Loaded {
        model: tensors(MODEL)?,
        optimizer: tensors(OPTIMIZER)?,
        state,
        uri: uri.clone(),
    })
}

/// Where `train.resume` points: the store and step to load, or `None` to start fresh. `own_uri`
/// is `checkpoint.uri` (resolved), used by `auto` and a bare step.
pub fn locate(
    resume: &Resume,
    own_uri: &str,
    world_size: usize,
) -> Result<Option<(CheckpointStore, u64)>, Error> {
    let latest = |store: CheckpointStore| -> Result<Option<(CheckpointStore, u64)>, Error> {
        let step = store.latest().map_err(|e| store_error(store.uri(), e))?;
        Ok(step.map(|s| (store, s)))
    };
    match resume {
        Resume::Never => Ok(None),
        Resume::Auto => {
            let found = latest(open(own_uri, world_size)?)?;
            if found.is_none() {
                tracing::info!(
                    uri = own_uri,
                    "no checkpoint to resume from; starting fresh"
                );
            }
            Ok(found)
        }
        Resume::Step(step) => Ok(Some((open(own_uri, world_size)?, *step))),
        Resume::Uri(uri) => {
            let trimmed = uri.trim_end_matches('/');
            let (root, last) = trimmed.rsplit_once('/').unwrap_or(("", trimmed));
            if let Some(step) = wave_ckpt::parse_step_dir(last).filter(|_| !root.is_empty()) {
                return Ok(Some((open(root, world_size)?, step)));
            }
            latest(open(uri, world_size)?)?
                .map(Some)
                .ok_or_else(|| Error::Checkpoint {
                    path: uri.clone(),
                    reason: "train.resume names a checkpoint root without a committed `latest`"
                        .into(),
                })
        }
    }
}

/// Deletes every checkpoint under `store`'s root (`checkpoint.overwrite = true`).
pub fn clear(store: &CheckpointStore) -> Result<(), Error> {
    store
        .clear()
        .map(|_| ())
        .map_err(|e| store_error(store.uri(), e))
}
