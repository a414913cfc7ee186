use std::fmt;

use thiserror::Error;

/// The collective (or set-up step) an error or timeout happened in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// Backend start-up: MPI initialisation, NCCL communicator creation, the TCP rendezvous.
    Init,
    /// Sum (or mean) all-reduce of an f32 tensor.
    AllReduce,
    /// Broadcast from rank 0.
    Broadcast,
    /// All-gather of byte strings.
    AllGather,
    /// Barrier.
    Barrier,
    /// Backend shutdown (`MPI_Finalize`, NCCL communicator destruction).
    Shutdown,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Op::Init => "init",
            Op::AllReduce => "all_reduce",
            Op::Broadcast => "broadcast",
            Op::AllGather => "all_gather",
            Op::Barrier => "barrier",
            Op::Shutdown => "shutdown",
        })
    }
}

/// Errors of wave-comm. Collective errors carry the rank that reports them, the operation and
/// the caller's context (for example `"step 120"`).
#[derive(Debug, Error)]
pub enum Error {
    /// The launcher's environment variables are missing, unparsable or inconsistent.
    #[error("launcher environment ({vars}): {reason}")]
    Launcher {
        /// The variables involved, as `NAME=value` pairs.
        vars: String,
        /// What is wrong.
        reason: String,
    },
    /// A `[comm]` config value is invalid; `field` is the key.
    #[error("comm.{field}: {reason}")]
    Config {
        /// The config key.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The requested backend cannot run here (feature not compiled in, library missing, wrong device).
    #[error("rank {rank}: backend {backend} unavailable: {reason}")]
    Unavailable {
        /// The rank reporting it.
        rank: usize,
        /// The backend asked for.
        backend: &'static str,
        /// Why it cannot be used.
        reason: String,
    },
    /// A collective (or the backend's start-up, `op = init`) failed.
    #[error("rank {rank}: {op} failed ({context}): {reason}")]
    Collective {
        /// The rank reporting it.
        rank: usize,
        /// The operation.
        op: Op,
        /// The caller's context, such as the training step.
        context: String,
        /// The backend's message.
        reason: String,
    },
    /// A collective did not complete in time. The watchdog prints this and ends the process; it is
    /// never returned, because the blocked call cannot be interrupted.
    #[error("rank {rank}: {op} ({context}) did not complete within {timeout_s:.1} s: {}; aborting the job", waited_for(*.rank, *.world_size))]
    Timeout {
        /// The rank reporting it.
        rank: usize,
        /// Ranks in the job (with two, the peer that did not take part is known).
        world_size: usize,
        /// The operation.
        op: Op,
        /// The caller's context, such as the training step.
        context: String,
        /// The configured limit in seconds.
        timeout_s: f64,
    },
    /// This rank ended the job through [`crate::Communicator::abort`].
    #[error("rank {rank} aborted the job: {reason}")]
    Aborted {
        /// The rank that aborted.
        rank: usize,
        /// Why.
        reason: String,
    },
    /// The TCP rendezvous with rank 0 failed.
    #[error("rank {rank}: rendezvous with rank 0 at {addr}: {reason}")]
    Rendezvous {
        /// The rank reporting it.
        rank: usize,
        /// `host:port` of rank 0.
        addr: String,
        /// What failed.
        reason: String,
    },
    /// Ranks disagree on a value that must be identical (config, model shape, data set fingerprint).
    #[error("rank {rank}: ranks disagree on {what}: {detail}")]
    Mismatch {
        /// The rank reporting it.
        rank: usize,
        /// What was compared.
        what: String,
        /// Which ranks hold which value.
        detail: String,
    },
    /// A tensor handed to a collective is unusable (wrong dtype) or libtorch failed while staging it.
    #[error("rank {rank}: {op} ({context}): tensor: {reason}")]
    Tensor {
        /// The rank reporting it.
        rank: usize,
        /// The operation.
        op: Op,
        /// The caller's context.
        context: String,
        /// What is wrong.
        reason: String,
    },
}

/// Who a timed-out collective waited for. A collective cannot tell which of the others failed to
/// take part, except when there is only one other.
fn waited_for(rank: usize, world_size: usize) -> String {
    match world_size {
        2 => format!(
            "its peer, rank {}, is stuck, slow, dead or unreachable",
            1 - rank.min(1)
        ),
        n => format!(
            "one of the other {} ranks is stuck, slow, dead or unreachable",
            n.saturating_sub(1)
        ),
    }
}
