//! The MPI backend (feature `mpi`): rsmpi for broadcast, all-gather and barrier, a C shim for the
//! in-place all-reduce (csrc/allreduce.c). Buffers are CPU tensors; the [`Communicator`] stages
//! CUDA tensors through host memory.
//!
//! The shim saves a gradient-sized scratch buffer and a copy: measured on the 2-core dev machine
//! (2 ranks, busy), a 64 MB sum took 86-101 ms in place against 130-133 ms for rsmpi's
//! `all_reduce_into` plus the copy back, 4 MB 2.8-5.1 ms against 3.6-19 ms.
//!
//! [`Communicator`]: crate::Communicator
#![allow(unsafe_code)] // FFI: the in-place all-reduce shim, MPI_Abort, tensor storage as byte slices

use std::os::raw::c_int;

use mpi::environment::Universe;
use mpi::topology::SimpleCommunicator;
use mpi::traits::{Communicator as _, CommunicatorCollectives, Root};
use mpi::Threading;
use tch::{Device, Tensor};

use crate::comm::Transport;
use crate::watchdog::{mpi_abort_allowed, Watchdog};
use crate::{CommConfig, Error, MpiThreadLevel, Op, RankInfo};

extern "C" {
    /// `MPI_Allreduce(MPI_IN_PLACE, buf, count, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD)`.
    fn wave_comm_allreduce_sum_f32_in_place(buf: *mut f32, count: c_int) -> c_int;
}

/// Largest element count of one MPI call (counts are C ints).
const MAX_COUNT: usize = c_int::MAX as usize;

/// `MPI_COMM_WORLD` of an initialised MPI; finalised on drop.
pub(crate) struct Mpi {
    world: SimpleCommunicator,
    /// The thread level MPI granted.
    granted: MpiThreadLevel,
    // Dropped after `world`: MPI_Finalize.
    _universe: Universe,
}

impl Mpi {
    /// Initialises MPI and checks that it sees the rank and world size the launcher announced.
    pub(crate) fn init(
        info: &RankInfo,
        cfg: &CommConfig,
        watchdog: &Watchdog,
    ) -> Result<Mpi, Error> {
        let fail = |reason: String| Error::Collective {
            rank: info.rank,
            op: Op::Init,
            context: "MPI_Init".into(),
            reason,
        };
        let _armed = watchdog.arm(Op::Init, "MPI_Init", cfg.init_timeout());
        // MULTIPLE (the default) lets the watchdog thread call MPI_Abort while this thread is
        // inside a collective; Open MPI provides it. What MPI grants decides what the watchdog
        // may do, whatever was asked.
        let asked = cfg.mpi_thread_level;
        let (universe, threading) = mpi::initialize_with_threading(to_threading(asked))
            .ok_or_else(|| fail("MPI is already initialised in this process".into()))?;
        let granted = from_threading(threading);
        if granted < MpiThreadLevel::Multiple {
            tracing::warn!(
                rank = info.rank,
                "MPI granted thread level {} (asked {}): a collective that times out ends this rank \
                 by exiting (the launcher then ends the others), not by MPI_Abort from the watchdog thread",
                granted.name(),
                asked.name()
            );
        }
        let rank = info.rank;
        watchdog.add_abort(Box::new(move |caller, code| {
            if !mpi_abort_allowed(granted, caller) {
                eprintln!(
                    "wave-comm: rank {rank}: not calling MPI_Abort from the watchdog thread (MPI granted \
                     thread level {}, not multiple); exiting this rank, the launcher ends the others",
                    granted.name()
                );
                return;
            }
            // SAFETY: MPI is initialised (this closure is added after MPI_Init), the calling
            // thread may call MPI (checked above), and MPI_Abort takes the predefined world
            // communicator, which is valid until MPI_Finalize.
            unsafe {
                mpi::ffi::MPI_Abort(mpi::ffi::RSMPI_COMM_WORLD, code);
            }
        }));
        let world = universe.world();
        let (rank, size) = (world.rank() as usize, world.size() as usize);
        if (rank, size) != (info.rank, info.world_size) {
            return Err(fail(format!(
                "MPI reports rank {rank} of {size} but the launcher ({}) announced rank {} of {}; \
                 under Slurm use `srun --mpi=pmix`, or start the job with mpirun",
                info.launcher, info.rank, info.world_size
            )));
        }
        tracing::debug!(rank, size, thread_level = granted.name(), "MPI initialised");
        Ok(Mpi {
            world,
            granted,
            _universe: universe,
        })
    }

    /// Overwrites `buf` with rank 0's bytes.
    pub(crate) fn broadcast_slice(&self, buf: &mut [u8]) {
        let root = self.world.process_at_rank(0);
        for chunk in buf.chunks_mut(MAX_COUNT) {
            root.broadcast_into(chunk);
        }
    }
}

fn to_threading(level: MpiThreadLevel) -> Threading {
    match level {
        MpiThreadLevel::Single => Threading::Single,
        MpiThreadLevel::Funneled => Threading::Funneled,
        MpiThreadLevel::Serialized => Threading::Serialized,
        MpiThreadLevel::Multiple => Threading::Multiple,
    }
}

fn from_threading(threading: Threading) -> MpiThreadLevel {
    match threading {
        Threading::Single => MpiThreadLevel::Single,
        Threading::Funneled => MpiThreadLevel::Funneled,
        Threading::Serialized => MpiThreadLevel::Serialized,
        Threading::Multiple => MpiThreadLevel::Multiple,
    }
}

/// The storage of a contiguous CPU tensor as bytes.
fn bytes(t: &Tensor) -> &[u8] {
    let len = t.numel() * t.kind().elt_size_in_bytes();
    if len == 0 {
        return &[];
    }
    // SAFETY: the Communicator hands transports contiguous tensors on their device (the CPU for
    // MPI), so `len` bytes from `data_ptr` are this tensor's elements; the slice borrows `t`.
    unsafe { std::slice::from_raw_parts(t.data_ptr().cast::<u8>(), len) }
}

/// [`bytes`], writable.
fn bytes_mut(t: &mut Tensor) -> &mut [u8] {
    let len = t.numel() * t.kind().elt_size_in_bytes();
    if len == 0 {
        return &mut [];
    }
    // SAFETY: as in `bytes`; the exclusive borrow of `t` keeps other Rust code from the storage
    // while the slice lives.
    unsafe { std::slice::from_raw_parts_mut(t.data_ptr().cast::<u8>(), len) }
}

impl Transport for Mpi {
    fn device(&self) -> Option<Device> {
        Some(Device::Cpu)
    }

    fn all_reduce_sum(&self, t: &mut Tensor) -> Result<(), String> {
        let (ptr, n) = (t.data_ptr().cast::<f32>(), t.numel());
        for start in (0..n).step_by(MAX_COUNT) {
            let count = (n - start).min(MAX_COUNT) as c_int;
            // SAFETY: `t` is a contiguous f32 CPU tensor of `n` elements (checked by the
            // Communicator), so `ptr + start .. + count` lies inside its storage, which `&mut`
            // keeps to this call.
            let rc = unsafe { wave_comm_allreduce_sum_f32_in_place(ptr.add(start), count) };
            if rc != 0 {
                return Err(format!("MPI_Allreduce returned error code {rc}"));
            }
        }
        Ok(())
    }

    fn broadcast(&self, t: &mut Tensor) -> Result<(), String> {
        self.broadcast_slice(bytes_mut(t));
        Ok(())
    }

    fn all_gather(&self, send: &Tensor, recv: &mut Tensor) -> Result<(), String> {
        self.world.all_gather_into(bytes(send), bytes_mut(recv));
        Ok(())
    }

    fn barrier(&self) -> Result<(), String> {
        self.world.barrier();
        Ok(())
    }

    fn mpi_thread_level(&self) -> Option<MpiThreadLevel> {
        Some(self.granted)
    }
}
