//! The `[comm]` config section and the choice of backend.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tch::Device;

use crate::{Error, RankInfo};

/// Which implementation carries the collectives: `comm.backend = "auto" | "local" | "mpi" | "nccl"`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    /// NCCL for CUDA tensors at world size > 1 when NCCL is present, else MPI under an MPI
    /// launcher, else Local (see [`Backend::resolve`]).
    #[default]
    Auto,
    /// One process; collectives are no-ops or copies.
    Local,
    /// MPI (feature `mpi`): CPU tensors directly, CUDA tensors staged through host memory.
    Mpi,
    /// NCCL (feature `nccl`): CUDA tensors only, one GPU per rank.
    Nccl,
}

impl Backend {
    /// The config word.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Auto => "auto",
            Backend::Local => "local",
            Backend::Mpi => "mpi",
            Backend::Nccl => "nccl",
        }
    }

    /// The concrete backend for this job (never `Auto`), or why the requested one cannot work.
    ///
    /// A pure function: `nccl_present` is the caller's probe of the NCCL library. `Auto` picks
    /// NCCL for a CUDA device at world size > 1 when NCCL is present, else MPI when the job was
    /// started by an MPI launcher (or Slurm) and the `mpi` feature is compiled in, else Local.
    /// At world size 1 `Auto` is Local even on a GPU: NCCL would only add start-up time and
    /// memory. A world size above 1 with no backend able to reach the peers is an error, never a
    /// silent set of independent runs.
    pub fn resolve(
        self,
        info: &RankInfo,
        device: Device,
        nccl_present: bool,
    ) -> Result<Backend, Error> {
        let unavailable = |backend: Backend, reason: String| Error::Unavailable {
            rank: info.rank,
            backend: backend.name(),
            reason,
        };
        let mpi_launched = info.launcher.is_mpi() || info.launcher == crate::Launcher::Slurm;
        match self {
            Backend::Auto if info.world_size == 1 => Ok(Backend::Local),
            Backend::Auto if device.is_cuda() && cfg!(feature = "nccl") && nccl_present => Ok(Backend::Nccl),
            Backend::Auto if mpi_launched && cfg!(feature = "mpi") => Ok(Backend::Mpi),
            Backend::Auto => Err(unavailable(
                self,
                format!(
                    "world size {} (launcher {}) on device {device:?} needs NCCL (feature `nccl`, a CUDA device, libnccl.so) \
                     or an MPI launcher with feature `mpi`",
                    info.world_size, info.launcher
                ),
            )),
            Backend::Local if info.world_size > 1 => Err(unavailable(
                self,
                format!("world size is {} (launcher {}) but the local backend runs one process", info.world_size, info.launcher),
            )),
            Backend::Local => Ok(Backend::Local),
            Backend::Mpi if !cfg!(feature = "mpi") => Err(unavailable(self, "built without the `mpi` feature".into())),
            Backend::Mpi => Ok(Backend::Mpi),
            Backend::Nccl if !cfg!(feature = "nccl") => Err(unavailable(self, "built without the `nccl` feature".into())),
            Backend::Nccl if !device.is_cuda() => Err(unavailable(self, format!("needs a CUDA device, got {device:?}"))),
            Backend::Nccl if !nccl_present => Err(unavailable(
                self,
                "libnccl.so not found on the library path (pip's nvidia-nccl ships only libnccl.so.2: add a libnccl.so symlink)".into(),
            )),
            Backend::Nccl => Ok(Backend::Nccl),
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Backend {
    type Err = Error;
    fn from_str(s: &str) -> Result<Backend, Error> {
        [Backend::Auto, Backend::Local, Backend::Mpi, Backend::Nccl]
            .into_iter()
            .find(|b| b.name() == s)
            .ok_or_else(|| Error::Config {
                field: "backend",
                reason: format!("expected auto, local, mpi or nccl, got {s:?}"),
            })
    }
}

/// The thread support asked of MPI at initialisation: `comm.mpi_thread_level = "multiple" |
/// "serialized" | "funneled" | "single"` (the MPI standard's levels, lowest last).
///
/// Only `multiple` lets the collective watchdog call `MPI_Abort` from its own thread while the
/// training thread is blocked in MPI, which ends every rank at once. Some MPI stacks are slower
/// or unsupported under `MPI_THREAD_MULTIPLE`; with a lower level (or when MPI grants less than
/// asked) a timed-out rank exits on its own instead, and the launcher ends the others.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MpiThreadLevel {
    /// `MPI_THREAD_SINGLE`: only one thread exists.
    Single,
    /// `MPI_THREAD_FUNNELED`: only the thread that initialised MPI calls it.
    Funneled,
    /// `MPI_THREAD_SERIALIZED`: any thread, one at a time.
    Serialized,
    /// `MPI_THREAD_MULTIPLE`: any thread, concurrently.
    #[default]
    Multiple,
}

impl MpiThreadLevel {
    /// The config word.
    pub fn name(self) -> &'static str {
        match self {
            MpiThreadLevel::Single => "single",
            MpiThreadLevel::Funneled => "funneled",
            MpiThreadLevel::Serialized => "serialized",
            MpiThreadLevel::Multiple => "multiple",
        }
    }
}

impl FromStr for MpiThreadLevel {
    type Err = Error;
    fn from_str(s: &str) -> Result<MpiThreadLevel, Error> {
        [
            MpiThreadLevel::Single,
            MpiThreadLevel::Funneled,
            MpiThreadLevel::Serialized,
            MpiThreadLevel::Multiple,
        ]
        .into_iter()
        .find(|l| l.name() == s)
        .ok_or_else(|| Error::Config {
            field: "mpi_thread_level",
            reason: format!("expected multiple, serialized, funneled or single, got {s:?}"),
        })
    }
}

/// The `[comm]` section: backend and time limits.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CommConfig {
    /// `auto`, `local`, `mpi` or `nccl`.
    pub backend: Backend,
    /// Longest time, in seconds, any one collective may take before the job is aborted.
    pub timeout_s: f64,
    /// Longest time, in seconds, for start-up: the TCP rendezvous (waiting for rank 0's address to
    /// resolve and accept, e.g. while its pod is scheduled) and NCCL communicator creation.
    pub init_timeout_s: f64,
    /// Thread support asked of MPI (see [`MpiThreadLevel`]); `multiple` unless the MPI stack
    /// needs less.
    pub mpi_thread_level: MpiThreadLevel,
}

impl Default for CommConfig {
    fn default() -> CommConfig {
        CommConfig {
            backend: Backend::Auto,
            timeout_s: 300.0,
            init_timeout_s: 600.0,
            mpi_thread_level: MpiThreadLevel::Multiple,
        }
    }
}

impl CommConfig {
    /// Checks the limits are positive and finite.
    pub fn validate(&self) -> Result<(), Error> {
        for (field, v) in [
            ("timeout_s", self.timeout_s),
            ("init_timeout_s", self.init_timeout_s),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return Err(Error::Config {
                    field,
                    reason: format!("must be a positive number of seconds, got {v}"),
                });
            }
        }
        Ok(())
    }

    /// [`CommConfig::timeout_s`] as a duration.
    pub fn timeout(&self) -> Duration {
        Duration::from_secs_f64(self.timeout_s)
    }

    /// [`CommConfig::init_timeout_s`] as a duration.
    pub fn init_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.init_timeout_s)
    }
}
