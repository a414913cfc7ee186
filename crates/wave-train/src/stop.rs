//! When training stops, decided once per step and agreed by every rank.
//!
//! A rank may want to stop for its own reasons: SIGTERM or SIGUSR1 reached it (Kubernetes node
//! drain, Slurm's `--signal`, `scancel`), its time budget is spent, or its last loss was not finite.
//! If it simply left the loop, the other ranks would wait forever in their next collective. So at
//! every step boundary each rank contributes its reasons to **one small all-reduce** (together with
//! the step's count of supervised units, which the loss needs anyway) and every rank takes the
//! same decision at the same step. With one process the reduction is free.
//!
//! Signals are caught on every rank, in every world size. A rank that was signalled stops waiting
//! for data and skips the rest of an evaluation, so the agreement is reached quickly; the final
//! checkpoint is then committed by rank 0 before the process exits 0. When a rank has died
//! instead, the agreement cannot complete: the collective timeout (`comm.timeout_s`) ends the job,
//! or the launcher kills it.

use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tch::Device;
use wave_comm::Communicator;

use crate::parallel::sum_over_ranks;
use crate::Error;

/// Why the ranks stopped before the planned last step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// SIGTERM or SIGUSR1 on at least one rank (pre-emption): save and exit 0.
    Signal,
    /// `train.max_seconds` spent on at least one rank.
    TimeBudget,
    /// A non-finite loss on at least one rank at the previous step.
    Diverged,
}

/// Set by SIGTERM / SIGUSR1 (which then no longer terminate the process).
///
/// A launcher also sends SIGTERM when a rank has *died* (mpirun does, to the survivors). Waiting
/// for the next step boundary would then wait for a collective that cannot complete, so on a signal
/// the handler first looks at the peers on this host ([`StopSignal::watch_peers`]): if one has
/// exited, this rank says which and exits non-zero at once.
#[derive(Clone, Debug)]
pub struct StopSignal {
    raised: Arc<AtomicBool>,
    which: Arc<AtomicI32>,
    peers: Arc<Mutex<Peers>>,
}

/// The other ranks of the job that run on this host, by process id.
#[derive(Debug, Default)]
struct Peers {
    rank: usize,
    local: Vec<(usize, u32)>,
}

impl Peers {
    /// A peer whose process is gone (or a zombie).
    fn dead(&self) -> Option<(usize, u32)> {
        self.local.iter().copied().find(|(_, pid)| {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |stat| {
                // Field 3, after the parenthesised command name: the state.
                stat.rsplit(')')
                    .next()
                    .and_then(|rest| rest.split_whitespace().next())
                    .is_none_or(|state| state == "Z" || state == "X")
            })
        })
    }
}

impl StopSignal {
    /// Installs the handlers on a small background thread.
    pub fn install() -> Result<StopSignal, Error> {
        let signal = StopSignal::never();
        let (raised, which, peers) = (
            signal.raised.clone(),
            signal.which.clone(),
            signal.peers.clone(),
        );
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), String>>();
        std::thread::Builder::new()
            .name("wave-signals".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_io()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.to_string()));
                        return;
                    }
                };
                rt.block_on(async move {
                    use tokio::signal::unix::{signal, SignalKind};
                    let (mut term, mut usr1) = match (
                        signal(SignalKind::terminate()),
                        signal(SignalKind::user_defined1()),
                    ) {
                        (Ok(t), Ok(u)) => (t, u),
                        (Err(e), _) | (_, Err(e)) => {
                            let _ = ready_tx.send(Err(e.to_string()));
                            return;
                        }
                    };
                    let _ = ready_tx.send(Ok(()));
                    loop {
                        let number = tokio::select! {
                            s = term.recv() => s.map(|_| 15),
                            s = usr1.recv() => s.map(|_| 10),
                        };
                        let Some(number) = number else { return };
                        which.store(number, Ordering::SeqCst);
                        raised.store(true, Ordering::SeqCst);
                        end_if_a_peer_died(&peers);
                    }
                });
            })
            .map_err(|e| Error::Io(format!("cannot start the signal thread: {e}")))?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(signal),
            Ok(Err(e)) => Err(Error::Io(format!("cannot install signal handlers: {e}"))),
            Err(_) => Err(Error::Io(
                "the signal thread stopped before installing its handlers".into(),
            )),
        }
    }

    /// A signal that is never raised (evaluation outside training).
    pub fn never() -> StopSignal {
        StopSignal {
            raised: Arc::new(AtomicBool::new(false)),
            which: Arc::new(AtomicI32::new(0)),
            peers: Arc::new(Mutex::new(Peers::default())),
        }
    }

    /// Learns where every rank runs: `hosts[r]` is rank `r`'s `(host name, process id)`. The ranks
    /// on this rank's host are checked when a signal arrives.
    pub fn watch_peers(&self, rank: usize, hosts: &[(String, u32)]) {
        let Some((my_host, _)) = hosts.get(rank) else {
            return;
        };
        let local = hosts
            .iter()
            .enumerate()
            .filter(|(r, (host, _))| *r != rank && host == my_host)
            .map(|(r, (_, pid))| (r, *pid))
            .collect();
        *self.peers.lock().unwrap_or_else(PoisonError::into_inner) = Peers { rank, local };
    }

    /// Whether SIGTERM or SIGUSR1 has arrived.
    pub fn raised(&self) -> bool {
        self.raised.load(Ordering::SeqCst)
    }

    /// The name of the last signal received (for logs).
    pub fn name(&self) -> &'static str {
        match self.which.load(Ordering::SeqCst) {
            10 => "SIGUSR1",
            15 => "SIGTERM",
            _ => "no signal",
        }
    }
}

/// On a signal: if a rank on this host has exited, the job is dead; say which rank and end now.
fn end_if_a_peer_died(peers: &Mutex<Peers>) {
    let peers = peers.lock().unwrap_or_else(PoisonError::into_inner);
    let Some((dead, pid)) = peers.dead() else {
        return;
    };
    let msg = format!(
        "rank {}: stop signal received and rank {dead} (pid {pid} on this host) has exited: the job cannot reach its next step; exiting without a final checkpoint (resume from the last committed one)",
        peers.rank
    );
    eprintln!("wave-dist: {msg}");
    tracing::error!("{msg}");
    // exit runs the MPI library's teardown, which may wait for the dead peer: bound it.
    let _ = std::thread::Builder::new().spawn(|| {
        std::thread::sleep(Duration::from_secs(5));
        std::process::abort();
    });
    std::process::exit(1);
}

/// This process's host name and id, for [`StopSignal::watch_peers`].
pub fn host_and_pid() -> (String, u32) {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default();
    (host, std::process::id())
}

/// One step's agreement.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepAgreement {
    /// Stop before this step, on every rank.
    pub stop: Option<StopReason>,
    /// The step's supervised units (labelled rows or predicted tokens) over all ranks.
    pub global_count: f64,
}

/// What this rank brings to the agreement of one step.
#[derive(Clone, Copy, Debug, Default)]
pub struct RankReasons {
    /// A stop signal arrived.
    pub signal: bool,
    /// The time budget is spent.
    pub budget_spent: bool,
    /// The previous step's loss was not finite.
    pub diverged: bool,
    /// This rank's supervised units in its share of the step (0 when stopping).
    pub count: i64,
}

/// The one per-step reduction: every rank's reasons and counts summed; the same decision
/// everywhere. Divergence wins over a signal, which wins over the time budget.
pub fn agree(
    comm: &Communicator,
    device: Device,
    mine: RankReasons,
    step: u64,
) -> Result<StepAgreement, Error> {
    let flag = |b: bool| f64::from(u8::from(b));
    let totals = sum_over_ranks(
        comm,
        &[
            flag(mine.diverged),
            flag(mine.signal),
            flag(mine.budget_spent),
            mine.count as f64,
        ],
        device,
        &format!("stop agreement before step {}", step + 1),
    )?;
    let stop = if totals[0] > 0.0 {
        Some(StopReason::Diverged)
    } else if totals[1] > 0.0 {
        Some(StopReason::Signal)
    } else if totals[2] > 0.0 {
        Some(StopReason::TimeBudget)
    } else {
        None
    };
    Ok(StepAgreement {
        stop,
        global_count: totals[3],
    })
}
