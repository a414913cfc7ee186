//! The [`Communicator`]: one front for every backend, with staging, timeouts and error context.

use std::collections::BTreeMap;
use std::time::Duration;

use tch::{Device, Kind, TchError, Tensor};

use crate::watchdog::Watchdog;
use crate::{Backend, CommConfig, Error, MpiThreadLevel, Op, RankInfo};

/// What a backend implements. Tensors handed in are contiguous and on [`Transport::device`]
/// (when it names one); errors are the backend's message, which [`Communicator`] wraps with the
/// rank, operation and context.
pub(crate) trait Transport {
    /// Where buffers must live; `None`: anywhere (no data moves).
    fn device(&self) -> Option<Device>;
    /// In-place elementwise sum over ranks of an f32 tensor.
    fn all_reduce_sum(&self, t: &mut Tensor) -> Result<(), String>;
    /// Overwrites `t` (any dtype, as bytes) with rank 0's contents.
    fn broadcast(&self, t: &mut Tensor) -> Result<(), String>;
    /// Rank r's `send` (u8) lands at `recv[r * send.len()..]`.
    fn all_gather(&self, send: &Tensor, recv: &mut Tensor) -> Result<(), String>;
    /// Returns once every rank has entered it.
    fn barrier(&self) -> Result<(), String>;
    /// The thread level MPI granted, for backends that initialised MPI.
    fn mpi_thread_level(&self) -> Option<MpiThreadLevel> {
        None
    }
}

/// World size 1: nothing to exchange.
struct Local;

impl Transport for Local {
    fn device(&self) -> Option<Device> {
        None
    }
    fn all_reduce_sum(&self, _: &mut Tensor) -> Result<(), String> {
        Ok(())
    }
    fn broadcast(&self, _: &mut Tensor) -> Result<(), String> {
        Ok(())
    }
    fn all_gather(&self, send: &Tensor, recv: &mut Tensor) -> Result<(), String> {
        recv.f_copy_(send).map_err(|e| e.to_string())
    }
    fn barrier(&self) -> Result<(), String> {
        Ok(())
    }
}

/// Whether the NCCL library can be loaded (always false without the `nccl` feature). Probing
/// first matters: cudarc panics when asked to use a library it cannot find.
pub fn nccl_present() -> bool {
    #[cfg(feature = "nccl")]
    {
        crate::nccl::present()
    }
    #[cfg(not(feature = "nccl"))]
    {
        false
    }
}

/// The collectives of one rank. Every method takes a `context` (for example `"step 120"`) that
/// errors and timeout messages repeat, so a failure in a 64-rank job names where it happened.
///
/// Every rank must issue the same collectives in the same order. Not `Send`: use it from the
/// thread that created it (the CUDA context and MPI are bound to that thread).
pub struct Communicator {
    transport: Box<dyn Transport>,
    watchdog: Option<Watchdog>,
    info: RankInfo,
    backend: Backend,
    timeout: Duration,
}

impl Communicator {
    /// World size 1, no backend: every collective is a no-op or a copy.
    pub fn local() -> Communicator {
        Communicator::local_for(RankInfo::single(), CommConfig::default().timeout())
    }

    fn local_for(info: RankInfo, timeout: Duration) -> Communicator {
        Communicator {
            transport: Box::new(Local),
            watchdog: None,
            info,
            backend: Backend::Local,
            timeout,
        }
    }

    /// Starts the backend chosen by `cfg.backend` (see [`Backend::resolve`]) for tensors on
    /// `device` (for NCCL, the GPU this rank owns: normally `cuda:{local_rank}`). Blocks until all
    /// ranks have joined, at most `cfg.init_timeout_s`.
    pub fn init(info: &RankInfo, cfg: &CommConfig, device: Device) -> Result<Communicator, Error> {
        cfg.validate()?;
        // Probe (dlopen) NCCL only when it could be chosen: the library is large.
        let nccl = device.is_cuda()
            && matches!(cfg.backend, Backend::Auto | Backend::Nccl)
            && nccl_present();
        let backend = cfg.backend.resolve(info, device, nccl)?;
        if backend == Backend::Local {
            return Ok(Communicator::local_for(info.clone(), cfg.timeout()));
        }
        let watchdog =
            Watchdog::start(info.rank, info.world_size).map_err(|e| Error::Collective {
                rank: info.rank,
                op: Op::Init,
                context: "watchdog thread".into(),
                reason: e.to_string(),
            })?;
        let transport = start_backend(backend, info, cfg, device, &watchdog)?;
        tracing::info!(rank = info.rank, world_size = info.world_size, launcher = %info.launcher, %backend, "communicator ready");
        Ok(Communicator {
            transport,
            watchdog: Some(watchdog),
            info: info.clone(),
            backend,
            timeout: cfg.timeout(),
        })
    }

    /// This process's rank.
    pub fn rank(&self) -> usize {
        self.info.rank
    }

    /// Number of ranks.
    pub fn world_size(&self) -> usize {
        self.info.world_size
    }

    /// Whether this is rank 0 (the one that logs, saves and broadcasts).
    pub fn is_root(&self) -> bool {
        self.info.rank == 0
    }

    /// Rank, world size, launcher and rank 0's address.
    pub fn info(&self) -> &RankInfo {
        &self.info
    }

    /// The backend in use (never `Auto`).
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The thread level MPI granted (`None` when this backend did not initialise MPI). Below
    /// [`MpiThreadLevel::Multiple`] a timed-out collective ends this rank by exiting rather than by
    /// `MPI_Abort` (see the crate docs).
    pub fn mpi_thread_level(&self) -> Option<MpiThreadLevel> {
        self.transport.mpi_thread_level()
    }

    /// Sums a contiguous or strided f32 tensor over all ranks, in place. CUDA tensors go straight
    /// to NCCL; under MPI they are staged through host memory.
    pub fn all_reduce_sum_(&self, t: &mut Tensor, context: &str) -> Result<(), Error> {
        if t.kind() != Kind::Float {
            return Err(self.tensor_error(
                Op::AllReduce,
                context,
                format!("expected f32, got {:?}", t.kind()),
            ));
        }
        self.on_transport(Op::AllReduce, context, t, |tr, t| tr.all_reduce_sum(t))
    }

    /// [`Communicator::all_reduce_sum_`], then divides by the world size: the data-parallel
    /// gradient average.
    pub fn all_reduce_mean_(&self, t: &mut Tensor, context: &str) -> Result<(), Error> {
        self.all_reduce_sum_(t, context)?;
        if self.world_size() > 1 {
            // The returned handle aliases `t`, which is already divided in place.
            let _alias = t
                .f_div_scalar_(self.world_size() as f64)
                .map_err(|e| self.tensor_error(Op::AllReduce, context, e.to_string()))?;
        }
        Ok(())
    }

    /// Overwrites `t` (any dtype and shape, same on every rank) with rank 0's values: initial
    /// parameters, for example.
    pub fn broadcast_(&self, t: &mut Tensor, context: &str) -> Result<(), Error> {
        self.on_transport(Op::Broadcast, context, t, |tr, t| tr.broadcast(t))
    }

    /// Returns rank 0's `bytes` on every rank (other ranks' `bytes` are ignored).
    pub fn broadcast_bytes(&self, bytes: &[u8], context: &str) -> Result<Vec<u8>, Error> {
        let len = if self.is_root() {
            bytes.len() as i64
        } else {
            0
        };
        let mut len_t = Tensor::from_slice(&[len]);
        self.broadcast_(&mut len_t, context)?;
        let len = len_t.int64_value(&[0]).max(0) as usize;
        let mut buf = if self.is_root() {
            Tensor::from_slice(bytes)
        } else {
            Tensor::zeros([len as i64], (Kind::Uint8, Device::Cpu))
        };
        if len > 0 {
            self.broadcast_(&mut buf, context)?;
        }
        to_bytes(&buf).map_err(|e| self.tensor_error(Op::Broadcast, context, e.to_string()))
    }

    /// Every rank's `bytes`, indexed by rank. Meant for small values (fingerprints, sizes): each
    /// rank receives world size × the longest value.
    pub fn all_gather_bytes(&self, bytes: &[u8], context: &str) -> Result<Vec<Vec<u8>>, Error> {
        let lens = self.all_gather_fixed(&(bytes.len() as u64).to_le_bytes(), context)?;
        let lens: Vec<usize> = lens
            .chunks_exact(8)
            .map(|c| {
                c.iter()
                    .rev()
                    .fold(0usize, |acc, &b| (acc << 8) | b as usize)
            })
            .collect();
        let longest = lens.iter().copied().max().unwrap_or(0);
        let mut padded = bytes.to_vec();
        padded.resize(longest, 0);
        let all = if longest == 0 {
            Vec::new()
        } else {
            self.all_gather_fixed(&padded, context)?
        };
        Ok(lens
            .iter()
            .enumerate()
            .map(|(r, &len)| {
                all.get(r * longest..r * longest + len)
                    .unwrap_or_default()
                    .to_vec()
            })
            .collect())
    }

    /// Returns once every rank has called it.
    pub fn barrier(&self, context: &str) -> Result<(), Error> {
        self.run(Op::Barrier, context, |tr| tr.barrier())
    }

    /// Fails on every rank unless all ranks pass the same `value` (a fingerprint of the config,
    /// model shape or data set); the error lists which ranks hold which value.
    pub fn check_same(&self, what: &str, value: &[u8]) -> Result<(), Error> {
        let all = self.all_gather_bytes(value, &format!("check_same {what}"))?;
        if all.iter().all(|v| v == &all[0]) {
            return Ok(());
        }
        let mut groups: BTreeMap<&[u8], Vec<usize>> = BTreeMap::new();
        for (rank, v) in all.iter().enumerate() {
            groups.entry(v).or_default().push(rank);
        }
        let detail: Vec<String> = groups
            .iter()
            .map(|(v, ranks)| format!("ranks {ranks:?} have {}", show(v)))
            .collect();
        Err(Error::Mismatch {
            rank: self.rank(),
            what: what.to_string(),
            detail: detail.join("; "),
        })
    }

    /// Ends the whole job now: prints `reason` with this rank, aborts the backend (under MPI the
    /// launcher then ends every rank at once instead of waiting for their timeouts) and exits with
    /// `code`. For a rank that hits an error the others cannot know about.
    pub fn abort(&self, reason: &str, code: i32) -> ! {
        let err = Error::Aborted {
            rank: self.rank(),
            reason: reason.to_string(),
        };
        match &self.watchdog {
            Some(w) => w.fail(&err, code),
            None => {
                eprintln!("wave-comm: {err}");
                std::process::exit(code)
            }
        }
    }

    /// Runs `f` under the watchdog and adds rank, operation and context to its error.
    fn run<T>(
        &self,
        op: Op,
        context: &str,
        f: impl FnOnce(&dyn Transport) -> Result<T, String>,
    ) -> Result<T, Error> {
        let _armed = self
            .watchdog
            .as_ref()
            .map(|w| w.arm(op, context, self.timeout));
        f(self.transport.as_ref()).map_err(|reason| Error::Collective {
            rank: self.rank(),
            op,
            context: context.to_string(),
            reason,
        })
    }

    /// Runs `f` on `t` itself when it is contiguous on the backend's device, else on a staged copy
    /// that is copied back.
    fn on_transport(
        &self,
        op: Op,
        context: &str,
        t: &mut Tensor,
        f: impl FnOnce(&dyn Transport, &mut Tensor) -> Result<(), String>,
    ) -> Result<(), Error> {
        let target = self.transport.device().unwrap_or_else(|| t.device());
        if t.device() == target && t.is_contiguous() {
            return self.run(op, context, |tr| f(tr, t));
        }
        let tensor_err = |e: TchError| self.tensor_error(op, context, e.to_string());
        let mut staged = t
            .f_to_device(target)
            .and_then(|s| s.f_contiguous())
            .map_err(tensor_err)?;
        self.run(op, context, |tr| f(tr, &mut staged))?;
        t.f_copy_(&staged).map_err(tensor_err)
    }

    /// All-gather of equal-length byte strings: rank r's `bytes` at `[r * len..]`.
    fn all_gather_fixed(&self, bytes: &[u8], context: &str) -> Result<Vec<u8>, Error> {
        let tensor_err = |e: TchError| self.tensor_error(Op::AllGather, context, e.to_string());
        let device = self.transport.device().unwrap_or(Device::Cpu);
        let send = Tensor::f_from_slice(bytes)
            .and_then(|t| t.f_to_device(device))
            .map_err(tensor_err)?;
        let total = (bytes.len() * self.world_size()) as i64;
        let mut recv = Tensor::f_zeros([total], (Kind::Uint8, device)).map_err(tensor_err)?;
        self.run(Op::AllGather, context, |tr| tr.all_gather(&send, &mut recv))?;
        to_bytes(&recv).map_err(tensor_err)
    }

    fn tensor_error(&self, op: Op, context: &str, reason: String) -> Error {
        Error::Tensor {
            rank: self.rank(),
            op,
            context: context.to_string(),
            reason,
        }
    }
}

impl Drop for Communicator {
    /// Shuts the backend down under the watchdog: `MPI_Finalize` waits for peers that may be stuck.
    fn drop(&mut self) {
        let _armed = self
            .watchdog
            .as_ref()
            .map(|w| w.arm(Op::Shutdown, "finalize", self.timeout));
        self.transport = Box::new(Local);
    }
}

fn to_bytes(t: &Tensor) -> Result<Vec<u8>, TchError> {
    Vec::<u8>::try_from(&t.f_to_device(Device::Cpu)?)
}

/// A value for a mismatch message: the text when short and printable, else its length and hash.
fn show(v: &[u8]) -> String {
    match std::str::from_utf8(v) {
        Ok(s) if s.len() <= 80 && !s.chars().any(char::is_control) => format!("{s:?}"),
        _ => {
            // FNV-1a: enough to tell values apart in a message.
            let hash = v.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
                (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
            });
            format!("{} bytes, fnv {hash:016x}", v.len())
        }
    }
}

#[allow(unused_variables)] // without backend features only Local exists, and `resolve` never picks the others
fn start_backend(
    backend: Backend,
    info: &RankInfo,
    cfg: &CommConfig,
    device: Device,
    watchdog: &Watchdog,
) -> Result<Box<dyn Transport>, Error> {
    let unavailable = |reason: &str| Error::Unavailable {
        rank: info.rank,
        backend: backend.name(),
        reason: reason.to_string(),
    };
    match backend {
        #[cfg(feature = "mpi")]
        Backend::Mpi => Ok(Box::new(crate::mpi::Mpi::init(info, cfg, watchdog)?)),
        #[cfg(feature = "nccl")]
        Backend::Nccl => Ok(Box::new(crate::nccl::Nccl::init(
            info, cfg, device, watchdog,
        )?)),
        Backend::Local | Backend::Auto => Ok(Box::new(Local)),
        #[allow(unreachable_patterns)]
        _ => Err(unavailable("not compiled in")),
    }
}
