//! What lies where in a checkpoint root, and the two small JSON documents that bind it together.
//!
//! ```text
//! <root>/step-00000123/<name>          immutable objects, any names but the two below
//! <root>/step-00000123/manifest.json   Manifest: sizes and sha256 of every object
//! <root>/step-00000123/COMMITTED       the manifest's sha256 (hex), written last
//! <root>/latest                        Pointer: {"step": 123, "manifest_sha256": "..."}
//! ```

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// Version of the [`Manifest`] layout this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// Name of the manifest object in a step folder.
pub const MANIFEST: &str = "manifest.json";
/// Name of the commit marker in a step folder.
pub const COMMITTED: &str = "COMMITTED";
/// Name of the pointer object at the root.
pub const LATEST: &str = "latest";

/// Folder name of a step: `step-` and at least 8 digits (`step-00000123`), so names sort by step.
pub fn step_dir(step: u64) -> String {
    format!("step-{step:08}")
}

/// The step of a folder name written by [`step_dir`], or `None` for any other name.
pub fn parse_step_dir(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("step-")?;
    (digits.len() >= 8 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

/// Lower-case hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// One object of a checkpoint as recorded in its manifest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObjectEntry {
    /// Object name inside the step folder.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// Lower-case hex sha256 of the content.
    pub sha256: String,
}

/// `manifest.json`: what a committed step holds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// [`FORMAT_VERSION`] of the writer.
    pub format_version: u32,
    /// Optimizer steps completed when the checkpoint was taken.
    pub step: u64,
    /// Number of ranks of the job that wrote it.
    pub world_size: usize,
    /// Writer identification (program and version).
    pub created_by: String,
    /// Wall-clock time of the save, milliseconds since the Unix epoch.
    pub created_unix_ms: u64,
    /// Every object, in the order given to `save`.
    pub objects: Vec<ObjectEntry>,
    /// Free-form caller metadata.
    pub metadata: serde_json::Value,
}

impl Manifest {
    /// Parses and checks a manifest read from `uri` for `step`.
    pub(crate) fn parse(bytes: &[u8], uri: &str, step: u64) -> Result<Manifest> {
        let m: Manifest = serde_json::from_slice(bytes)
            .map_err(|e| Error::format(uri, format!("unreadable manifest: {e}")))?;
        if m.format_version != FORMAT_VERSION {
            return Err(Error::format(
                uri,
                format!(
                    "format version {} (this build reads {FORMAT_VERSION})",
                    m.format_version
                ),
            ));
        }
        if m.step != step {
            return Err(Error::format(
                uri,
                format!(
                    "manifest is for step {}, found in the folder of step {step}",
                    m.step
                ),
            ));
        }
        Ok(m)
    }

    /// Total size of the objects in bytes.
    pub fn bytes(&self) -> u64 {
        self.objects.iter().map(|o| o.size).sum()
    }
}

/// The `latest` object: which committed step readers should resume from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pointer {
    /// The step.
    pub step: u64,
    /// sha256 of that step's manifest (equal to its commit marker's content).
    pub manifest_sha256: String,
}

impl Pointer {
    pub(crate) fn parse(bytes: &[u8], uri: &str) -> Result<Pointer> {
        serde_json::from_slice(bytes)
            .map_err(|e| Error::format(uri, format!("unreadable latest pointer: {e}")))
    }
}

/// Checks the names of one save: non-empty, no `/`, not reserved, no repeats.
pub(crate) fn check_names<'a>(step: u64, names: impl Iterator<Item = &'a str>) -> Result<()> {
    let mut seen = std::collections::HashSet::new();
    for name in names {
        let bad = |msg: &str| Error::InvalidName {
            name: name.to_string(),
            step,
            msg: msg.to_string(),
        };
        if name.is_empty() || name == "." || name == ".." {
            return Err(bad("must be a non-empty file name"));
        }
        if name.contains('/') || name.contains('\\') || name.chars().any(char::is_control) {
            return Err(bad("must not contain '/', '\\' or control characters"));
        }
        if name == MANIFEST || name == COMMITTED {
            return Err(bad("is reserved for the checkpoint's own files"));
        }
        if !seen.insert(name) {
            return Err(bad("appears twice"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_dirs_round_trip_and_sort_by_step() {
        assert_eq!(step_dir(123), "step-00000123");
        assert_eq!(parse_step_dir("step-00000123"), Some(123));
        assert_eq!(
            parse_step_dir(&step_dir(12_345_678_901)),
            Some(12_345_678_901)
        );
        assert!(step_dir(99) < step_dir(100));
        for other in [
            "step-1",
            "step-0000012x",
            "latest",
            "step-",
            "xstep-00000001",
        ] {
            assert_eq!(parse_step_dir(other), None, "{other}");
        }
    }

    #[test]
    fn reserved_repeated_and_path_like_names_are_rejected() {
        assert!(check_names(1, ["model.safetensors", "state.json"].into_iter()).is_ok());
        for bad in [
            vec!["a/b"],
            vec![""],
            vec![MANIFEST],
            vec![COMMITTED],
            vec!["x", "x"],
            vec![".."],
        ] {
            assert!(
                matches!(
                    check_names(1, bad.clone().into_iter()),
                    Err(Error::InvalidName { .. })
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn sha256_is_lower_hex() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
