//! Rank discovery and collectives for wave-dist's data-parallel training.
//!
//! `wave-comm` is one of the trainer's leaf crates (`wave-train → {wave-model, wave-data,
//! wave-comm, wave-ckpt}`): it knows tensors (tch) but nothing of models, data or checkpoints.
//! It answers two questions:
//!
//! 1. **Who am I?** [`RankInfo::detect`] reads rank, world size, local rank, ranks on this node
//!    and rank 0's address from the environment of Open MPI, MPICH/PMI, Slurm, torchrun-style
//!    launchers or a Kubernetes Indexed Job (`JOB_COMPLETION_INDEX` + `WAVE_WORLD_SIZE` +
//!    `MASTER_ADDR`); `WAVE_RANK`/`WAVE_WORLD_SIZE`/`WAVE_LOCAL_RANK`/`WAVE_LOCAL_SIZE` override.
//!    No launcher means world size 1.
//! 2. **How do ranks agree?** A [`Communicator`] carries the collectives the trainer needs: in-place
//!    sum (or mean) all-reduce of a flat f32 tensor (gradient buckets), broadcast of a tensor or
//!    bytes from rank 0 (initial parameters), all-gather of small byte strings
//!    ([`Communicator::check_same`] proves every rank runs the same config, model and data set),
//!    and a barrier.
//!
//! | backend | feature | tensors | bootstrap |
//! |---|---|---|---|
//! | [`Backend::Local`] | always | any device; no-ops and copies | none (world size 1) |
//! | [`Backend::Mpi`] | `mpi` (default) | CPU directly; CUDA staged through host memory | `mpirun`/`srun` |
//! | [`Backend::Nccl`] | `nccl` | CUDA, one GPU per rank | NCCL id over MPI under an MPI launcher, else over TCP from rank 0 ([`rendezvous`]) |
//!
//! [`Backend::Auto`] picks NCCL for CUDA at world size > 1 when `libnccl.so` loads, else MPI under
//! an MPI launcher, else Local ([`Backend::resolve`]). NCCL and CUDA are loaded at run time
//! (cudarc's dynamic loading), so a `nccl` build runs on machines without CUDA.
//!
//! **Timeouts.** Every collective runs under a watchdog thread (limit `comm.timeout_s`; start-up
//! under `comm.init_timeout_s`). MPI has no timeouts and NCCL kernels cannot be interrupted, so
//! when a collective outlives its limit the watchdog prints an error naming the rank, the operation
//! and the caller's context (such as `"step 120"`), aborts the backend where that is safe from
//! its thread, and exits with status [`TIMEOUT_EXIT_CODE`]. `MPI_Abort` (the launcher then ends
//! every rank at once) is called only when MPI granted `MPI_THREAD_MULTIPLE`
//! ([`MpiThreadLevel`]); otherwise the rank just exits and the launcher ends the others. NCCL is
//! aborted by the training thread itself, which the watchdog asks to, since `ncclCommAbort`
//! would free the communicator under its feet. A rank killed under `mpirun` makes the launcher
//! end the others; a dead peer under the TCP bootstrap stalls the survivors' next collective
//! until their watchdogs fire.
//!
//! ```no_run
//! use tch::{Device, Kind, Tensor};
//! use wave_comm::{CommConfig, Communicator, RankInfo};
//!
//! # fn main() -> Result<(), wave_comm::Error> {
//! let info = RankInfo::from_env()?; // world size 1 without a launcher
//! let comm = Communicator::init(&info, &CommConfig::default(), Device::Cpu)?;
//! comm.check_same("config", b"fingerprint of the resolved config")?;
//! let mut grads = Tensor::ones([1024], (Kind::Float, Device::Cpu));
//! comm.all_reduce_mean_(&mut grads, "step 1")?;
//! # Ok(())
//! # }
//! ```
//!
//! Under `mpirun` the `mpi` feature needs Open MPI (Debian `libopenmpi-dev`) at build time; the
//! example `comm-check` exercises every collective (`mpirun -n 4 comm-check collectives`).

mod comm;
mod config;
mod error;
mod launcher;
#[cfg(feature = "mpi")]
mod mpi;
#[cfg(feature = "nccl")]
mod nccl;
pub mod rendezvous;
mod watchdog;

pub use comm::{nccl_present, Communicator};
pub use config::{Backend, CommConfig, MpiThreadLevel};
pub use error::{Error, Op};
pub use launcher::{
    Launcher, RankInfo, DEFAULT_MASTER_PORT, LOCAL_RANK_VAR, LOCAL_SIZE_VAR, RANK_VAR,
    WORLD_SIZE_VAR,
};
pub use watchdog::TIMEOUT_EXIT_CODE;
