//! The NCCL backend (feature `nccl`): raw `ncclAllReduce`/`ncclBroadcast`/`ncclAllGather` on
//! CUDA tensors' device pointers, on the legacy default stream that libtorch computes on, so
//! each collective is ordered after the backward pass without events.
//!
//! NCCL and the CUDA driver are loaded at run time by cudarc. The unique id that joins the ranks
//! is broadcast over MPI when an MPI launcher started the job (feature `mpi`), else sent by rank
//! 0 over TCP ([`crate::rendezvous`]). Each collective is waited for by polling the stream and
//! NCCL's asynchronous error, so the watchdog can time it out and a failed peer is reported.
//!
//! Only the owner thread ever touches the communicator. When a collective times out, the
//! watchdog raises an [`AbortRequest`]; the wait loop sees it, calls `ncclCommAbort` itself (so
//! the kernels and NCCL's proxy threads stop and the peers see the failure), acknowledges, and the
//! watchdog ends the process. `ncclCommAbort` from the watchdog thread would free the
//! communicator while the owner is still polling it.
#![allow(unsafe_code)] // FFI: CUDA driver and NCCL calls on device pointers

use std::cell::Cell;
use std::os::raw::{c_char, c_int};
use std::ptr;
use std::sync::Arc;
use std::time::Duration;

use cudarc::driver::{result as cu, sys as cusys};
use cudarc::nccl::{result as nccl, sys as ncclsys};
use tch::{Device, Kind, Tensor};

use crate::comm::Transport;
use crate::watchdog::{AbortRequest, Caller, Watchdog, OWNER_ACK};
#[cfg(feature = "mpi")]
use crate::MpiThreadLevel;
use crate::{CommConfig, Error, Op, RankInfo};

/// Whether `libnccl.so` can be loaded.
pub(crate) fn present() -> bool {
    // SAFETY: only tries to dlopen the candidate library names; no symbol is called.
    unsafe { ncclsys::is_culib_present() }
}

/// One rank's NCCL communicator on one GPU.
pub(crate) struct Nccl {
    comm: ncclsys::ncclComm_t,
    /// Raised by the watchdog when a collective outlives its limit; answered in [`Nccl::wait`].
    abort_request: Arc<AbortRequest>,
    ctx: cusys::CUcontext,
    device: Device,
    /// Set when NCCL reported an asynchronous error: the communicator can then only be aborted.
    broken: Cell<bool>,
    /// Set once the communicator is aborted (it is freed then: never touch it again).
    aborted: Cell<bool>,
    /// Kept alive (MPI_Finalize on drop, after the communicator) when the id came over MPI.
    #[cfg(feature = "mpi")]
    _bootstrap: Option<crate::mpi::Mpi>,
}

impl Nccl {
    /// Binds this thread to `device`, obtains the unique id from rank 0 and creates the communicator.
    pub(crate) fn init(
        info: &RankInfo,
        cfg: &CommConfig,
        device: Device,
        watchdog: &Watchdog,
    ) -> Result<Nccl, Error> {
        let fail = |reason: String| Error::Collective {
            rank: info.rank,
            op: Op::Init,
            context: "nccl".into(),
            reason,
        };
        let Device::Cuda(ordinal) = device else {
            return Err(fail(format!("needs a CUDA device, got {device:?}")));
        };
        // SAFETY: only tries to dlopen the candidate library names.
        if !unsafe { cusys::is_culib_present() } {
            return Err(fail(
                "the CUDA driver library (libcuda.so.1) is not loadable".into(),
            ));
        }
        let ctx = bind_device(ordinal).map_err(fail)?;

        let mine = if info.rank == 0 {
            let id =
                nccl::get_uniqueid().map_err(|e| fail(format!("ncclGetUniqueId: {:?}", e.0)))?;
            id.internal.iter().map(|&c| c as u8).collect()
        } else {
            Vec::new()
        };
        #[cfg(feature = "mpi")]
        let (id_bytes, bootstrap) = if info.launcher.is_mpi() && info.world_size > 1 {
            let mpi = crate::mpi::Mpi::init(info, cfg, watchdog)?;
            let mut buf = mine.clone();
            buf.resize(128, 0);
            let _armed = watchdog.arm(Op::Init, "NCCL id broadcast over MPI", cfg.init_timeout());
            mpi.broadcast_slice(&mut buf);
            (buf, Some(mpi))
        } else {
            (exchange_over_tcp(info, cfg, watchdog, &mine)?, None)
        };
        #[cfg(not(feature = "mpi"))]
        let id_bytes = exchange_over_tcp(info, cfg, watchdog, &mine)?;

        let mut id = ncclsys::ncclUniqueId { internal: [0; 128] };
        if id_bytes.len() != id.internal.len() {
            return Err(fail(format!(
                "rank 0 sent a {}-byte NCCL id, expected 128",
                id_bytes.len()
            )));
        }
        for (dst, &b) in id.internal.iter_mut().zip(&id_bytes) {
            *dst = b as c_char;
        }

        let mut comm: ncclsys::ncclComm_t = ptr::null_mut();
        {
            let _armed = watchdog.arm(Op::Init, "ncclCommInitRank", cfg.init_timeout());
            // SAFETY: `comm` is a valid out-pointer; the id came from rank 0's ncclGetUniqueId and
            // this thread's current context is the device's primary context.
            unsafe {
                nccl::comm_init_rank(&mut comm, info.world_size as c_int, id, info.rank as c_int)
            }
            .map_err(|e| fail(format!("ncclCommInitRank: {:?}", e.0)))?;
        }
        let abort_request = Arc::new(AbortRequest::default());
        let request = Arc::clone(&abort_request);
        let rank = info.rank;
        // The raw communicator as an integer, for the owner's own abort (raw pointers are not Send).
        let owner_comm = comm as usize;
        watchdog.add_abort(Box::new(move |caller, _| match caller {
            Caller::Watchdog => {
                if !request.request_and_wait(OWNER_ACK) {
                    eprintln!(
                        "wave-comm: rank {rank}: the training thread did not abort NCCL within {} s \
                         (it is not waiting for a collective); exiting without ncclCommAbort",
                        OWNER_ACK.as_secs()
                    );
                }
            }
            Caller::Owner => {
                // SAFETY: the owner thread runs this between collectives (Communicator::abort),
                // the communicator is live (Drop has not run: the Communicator that owns it is
                // borrowed by the caller), and the process exits right after.
                let _ = unsafe { nccl::comm_abort(owner_comm as ncclsys::ncclComm_t) };
            }
        }));
        tracing::debug!(rank = info.rank, ordinal, "NCCL communicator ready");
        Ok(Nccl {
            comm,
            abort_request,
            ctx,
            device,
            broken: Cell::new(false),
            aborted: Cell::new(false),
            #[cfg(feature = "mpi")]
            _bootstrap: bootstrap,
        })
    }

    /// Makes the device's primary context current, launches `op` on the default stream, and
    /// waits for it.
    fn launch(
        &self,
        name: &str,
        op: impl FnOnce(
            ncclsys::ncclComm_t,
            ncclsys::cudaStream_t,
        ) -> Result<nccl::NcclStatus, nccl::NcclError>,
    ) -> Result<(), String> {
        if self.aborted.get() {
            return Err(format!(
                "{name}: the communicator was aborted after a timeout"
            ));
        }
        // SAFETY: `ctx` is the retained primary context of this communicator's device.
        unsafe { cu::ctx::set_current(self.ctx) }.map_err(|e| format!("cuCtxSetCurrent: {e}"))?;
        op(self.comm, ptr::null_mut()).map_err(|e| format!("{name}: {:?}", e.0))?;
        self.wait()
    }

    /// Polls the default stream until the collective has finished, failing early on an
    /// asynchronous NCCL error (a peer died, the network broke).
    fn wait(&self) -> Result<(), String> {
        let mut spins = 0u32;
        loop {
            if self.abort_request.requested() {
                // SAFETY: this is the owner thread, which alone uses `comm`; it is live (not yet
                // aborted: `aborted` is set right after) and ncclCommAbort stops its kernels.
                let _ = unsafe { nccl::comm_abort(self.comm) };
                self.aborted.set(true);
                self.abort_request.acknowledge();
                return Err("aborted: the collective outlived its time limit".into());
            }
            // SAFETY: queries the legacy default stream of the current context (set in `launch`).
            match unsafe { cusys::cuStreamQuery(ptr::null_mut()) } {
                cusys::CUresult::CUDA_SUCCESS => return Ok(()),
                cusys::CUresult::CUDA_ERROR_NOT_READY => {}
                other => return Err(format!("CUDA stream: {other:?}")),
            }
            let mut state = ncclsys::ncclResult_t::ncclSuccess;
            // SAFETY: `comm` is live while `self` is; `state` is a valid out-pointer.
            unsafe { ncclsys::ncclCommGetAsyncError(self.comm, &mut state) };
            if !matches!(
                state,
                ncclsys::ncclResult_t::ncclSuccess | ncclsys::ncclResult_t::ncclInProgress
            ) {
                self.broken.set(true);
                return Err(format!(
                    "NCCL asynchronous error {state:?}: a peer failed or the network broke"
                ));
            }
            spins = spins.saturating_add(1);
            if spins < 1000 {
                std::thread::yield_now();
            } else {
                std::thread::sleep(Duration::from_micros(50));
            }
        }
    }
}

/// Makes `ordinal`'s primary context (the one libtorch uses) current on this thread.
fn bind_device(ordinal: usize) -> Result<cusys::CUcontext, String> {
    cu::init().map_err(|e| format!("cuInit: {e}"))?;
    let dev =
        cu::device::get(ordinal as c_int).map_err(|e| format!("cuDeviceGet({ordinal}): {e}"))?;
    // SAFETY: `dev` is a valid device handle; the primary context stays retained for the
    // process's lifetime (libtorch holds it as well).
    let ctx = unsafe { cu::primary_ctx::retain(dev) }
        .map_err(|e| format!("cuDevicePrimaryCtxRetain: {e}"))?;
    // SAFETY: `ctx` was just retained.
    unsafe { cu::ctx::set_current(ctx) }.map_err(|e| format!("cuCtxSetCurrent: {e}"))?;
    Ok(ctx)
}

/// Rank 0 serves its id over TCP; the others fetch it (world size 1: nothing to exchange).
fn exchange_over_tcp(
    info: &RankInfo,
    cfg: &CommConfig,
    watchdog: &Watchdog,
    mine: &[u8],
) -> Result<Vec<u8>, Error> {
    if info.world_size == 1 {
        return Ok(mine.to_vec());
    }
    let master = info.master.as_ref().ok_or_else(|| Error::Rendezvous {
        rank: info.rank,
        addr: "<unset>".into(),
        reason: "world size > 1 without an MPI launcher needs rank 0's address in MASTER_ADDR (and MASTER_PORT)".into(),
    })?;
    // The rendezvous has its own deadline; the watchdog is only a backstop a little later.
    let _armed = watchdog.arm(
        Op::Init,
        "NCCL id rendezvous",
        cfg.init_timeout() + Duration::from_secs(30),
    );
    crate::rendezvous::exchange(master, info.rank, info.world_size, mine, cfg.init_timeout())
}

impl Drop for Nccl {
    fn drop(&mut self) {
        if self.aborted.get() {
            return;
        }
        // SAFETY: the communicator is live (only this thread aborts it, and it has not) and no
        // collective is in flight (`launch` waits). A broken one would hang in destroy, so it is
        // aborted instead.
        let _ = unsafe {
            if self.broken.get() {
                nccl::comm_abort(self.comm)
            } else {
                nccl::comm_destroy(self.comm)
            }
        };
    }
}

/// A tensor's device pointer (the Communicator hands in contiguous tensors on this device).
fn dptr(t: &Tensor) -> *mut std::ffi::c_void {
    t.data_ptr()
}

impl Transport for Nccl {
    fn device(&self) -> Option<Device> {
        Some(self.device)
    }

    fn all_reduce_sum(&self, t: &mut Tensor) -> Result<(), String> {
        let (p, n) = (dptr(t), t.numel());
        self.launch("ncclAllReduce", |comm, stream| {
            // SAFETY: `p` points at `n` contiguous f32 values on this communicator's device,
            // exclusively borrowed for the call, which `launch` waits for.
            unsafe {
                nccl::all_reduce(
                    p,
                    p,
                    n,
                    ncclsys::ncclDataType_t::ncclFloat32,
                    ncclsys::ncclRedOp_t::ncclSum,
                    comm,
                    stream,
                )
            }
        })
    }

    fn broadcast(&self, t: &mut Tensor) -> Result<(), String> {
        let (p, n) = (dptr(t), t.numel() * t.kind().elt_size_in_bytes());
        self.launch("ncclBroadcast", |comm, stream| {
            // SAFETY: `p` points at `n` contiguous bytes on this device, exclusively borrowed.
            unsafe { nccl::broadcast(p, p, n, ncclsys::ncclDataType_t::ncclUint8, 0, comm, stream) }
        })
    }

    fn all_gather(&self, send: &Tensor, recv: &mut Tensor) -> Result<(), String> {
        let (s, r, n) = (dptr(send), dptr(recv), send.numel());
        self.launch("ncclAllGather", |comm, stream| {
            // SAFETY: `send` holds `n` bytes and `recv` world size × `n` bytes (allocated so by the
            // Communicator), both contiguous on this device.
            unsafe { nccl::all_gather(s, r, n, ncclsys::ncclDataType_t::ncclUint8, comm, stream) }
        })
    }

    #[cfg(feature = "mpi")]
    fn mpi_thread_level(&self) -> Option<MpiThreadLevel> {
        self._bootstrap.as_ref().and_then(|m| m.mpi_thread_level())
    }

    fn barrier(&self) -> Result<(), String> {
        let mut token =
            Tensor::f_zeros([1], (Kind::Float, self.device)).map_err(|e| e.to_string())?;
        self.all_reduce_sum(&mut token)
    }
}
