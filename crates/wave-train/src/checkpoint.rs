//! Checkpoints on local disk: `step-NNNNNNNN/` folders holding the model and optimizer tensors as
//! safetensors plus a small `state.json`, published by renaming a finished temporary folder (the
//! rename is the commit), and a `latest` pointer replaced by rename.
//!
//! A crash at any moment leaves either the previous `latest` or the new one, never a partial
//! folder under a committed name. (Object-storage checkpoints with per-object hashes and a
//! conditional `latest` put are a separate component.)

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tch::Tensor;
use wave_data::Cursor;

use crate::Error;

/// Version of [`CheckpointState`]'s layout.
pub const CHECKPOINT_VERSION: u32 = 1;

/// Everything besides tensors that a resume needs.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointState {
    /// [`CHECKPOINT_VERSION`].
    pub version: u32,
    /// Optimizer steps completed.
    pub step: u64,
    /// Data loader position after `step` steps.
    pub cursor: Cursor,
    /// Fingerprint of the data set trained on.
    pub dataset_fingerprint: String,
    /// The model config, as TOML, to refuse resuming into a different model.
    pub model_toml: String,
    /// World size that wrote it.
    pub world_size: usize,
}

fn step_dir(root: &Path, step: u64) -> PathBuf {
    root.join(format!("step-{step:08}"))
}

fn write_safetensors(path: &Path, tensors: &[(String, Tensor)]) -> Result<(), Error> {
    Tensor::write_safetensors(tensors, path)
        .map_err(|e| Error::Io(format!("{}: {e}", path.display())))
}

/// Writes one checkpoint and moves `latest` to it; deletes all but the newest `keep_last`.
pub fn save(
    root: &Path,
    state: &CheckpointState,
    model: &[(String, Tensor)],
    optimizer: &[(String, Tensor)],
    keep_last: usize,
) -> Result<PathBuf, Error> {
    fs::create_dir_all(root).map_err(|e| Error::io(root, e))?;
    let tmp = root.join(format!(
        ".tmp-step-{:08}-{}",
        state.step,
        std::process::id()
    ));
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    write_safetensors(&tmp.join("model.safetensors"), model)?;
    write_safetensors(&tmp.join("optimizer.safetensors"), optimizer)?;
    let json = serde_json::to_vec_pretty(state).map_err(|e| Error::Io(e.to_string()))?;
    fs::write(tmp.join("state.json"), json).map_err(|e| Error::io(&tmp, e))?;
    let dir = step_dir(root, state.step);
    if dir.exists() {
        fs::remove_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    }
    fs::rename(&tmp, &dir).map_err(|e| Error::io(&dir, e))?;
    let latest_tmp = root.join(format!(".latest-{}", std::process::id()));
    let name = format!("step-{:08}\n", state.step);
    fs::write(&latest_tmp, name)
        .and_then(|_| fs::rename(&latest_tmp, root.join("latest")))
        .map_err(|e| Error::io(root, e))?;
    if keep_last > 0 {
        let mut steps = committed_steps(root)?;
        steps.sort_unstable();
        let excess = steps.len().saturating_sub(keep_last);
        for old in &steps[..excess] {
            let _ = fs::remove_dir_all(step_dir(root, *old));
        }
    }
    Ok(dir)
}

/// Steps with a published folder under `root`.
pub fn committed_steps(root: &Path) -> Result<Vec<u64>, Error> {
    let Ok(entries) = fs::read_dir(root) else {
        return Ok(Vec::new());
    };
    let mut steps = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(root, e))?;
        if let Some(step) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.strip_prefix("step-"))
            .and_then(|n| n.parse().ok())
        {
            steps.push(step);
        }
    }
    Ok(steps)
}

/// The step `latest` points at, if any.
pub fn latest_step(root: &Path) -> Result<Option<u64>, Error> {
    let path = root.join("latest");
    match fs::read_to_string(&path) {
        Ok(text) => text
            .trim()
            .strip_prefix("step-")
            .and_then(|n| n.parse().ok())
            .map(Some)
            .ok_or_else(|| Error::Checkpoint {
                path: path.display().to_string(),
                reason: format!("unreadable pointer {text:?}"),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(&path, e)),
    }
}

/// A loaded checkpoint.
pub struct Loaded {
    /// Its folder.
    pub dir: PathBuf,
    /// Non-tensor state.
    pub state: CheckpointState,
    /// Model tensors by name.
    pub model: Vec<(String, Tensor)>,
    /// Optimizer tensors by name.
    pub optimizer: Vec<(String, Tensor)>,
}

/// Reads the checkpoint of `step`.
pub fn load(root: &Path, step: u64) -> Result<Loaded, Error> {
    let dir = step_dir(root, step);
    let fail = |reason: String| Error::Checkpoint {
        path: dir.display().to_string(),
        reason,
    };
    let state_bytes =
        fs::read(dir.join("state.json")).map_err(|e| fail(format!("state.json: {e}")))?;
    let state: CheckpointState =
        serde_json::from_slice(&state_bytes).map_err(|e| fail(format!("state.json: {e}")))?;
    if state.version != CHECKPOINT_VERSION {
        return Err(fail(format!(
            "layout version {} (this build reads {CHECKPOINT_VERSION})",
            state.version
        )));
    }
    let read = |name: &str| {
        Tensor::read_safetensors(dir.join(name)).map_err(|e| fail(format!("{name}: {e}")))
    };
    Ok(Loaded {
        model: read("model.safetensors")?,
        optimizer: read("optimizer.safetensors")?,
        state,
        dir: dir.clone(),
    })
}
