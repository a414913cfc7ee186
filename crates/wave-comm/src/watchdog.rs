//! Ends the process when a collective outlives its time limit.
//!
//! MPI collectives cannot be cancelled and NCCL's only wait is a poll, so a thread watches the
//! collective in flight: [`Watchdog::arm`] before the call, the returned guard disarms on drop.
//! When a deadline passes the thread prints [`Error::Timeout`] (rank, operation, caller context)
//! to stderr and through `tracing`, runs the backend's abort and exits with [`TIMEOUT_EXIT_CODE`].
//! Should `exit` itself hang (a driver stuck in its teardown), the process aborts ten seconds later.
//!
//! **Which thread may abort what.** The communicator belongs to the thread that created it (the
//! owner), which may be blocked inside the very collective that timed out. The backends' aborts
//! are told who runs them ([`Caller`]) and touch the communicator from the watchdog thread only
//! where that is safe:
//! - MPI: `MPI_Abort` from a second thread is allowed only when MPI granted
//!   `MPI_THREAD_MULTIPLE` at initialisation ([`mpi_abort_allowed`]). Under a lower level the
//!   watchdog does not call MPI at all: the rank exits on its own, which makes the launcher
//!   (`mpirun`, `srun`) end the other ranks.
//! - NCCL: `ncclCommAbort` frees the communicator, which the owner may be using at that moment,
//!   so the watchdog never calls it. It raises an [`AbortRequest`] instead; the owner, which
//!   polls NCCL while it waits for a collective, aborts the communicator itself and acknowledges.
//!   Without an acknowledgement within [`OWNER_ACK`] (the owner is stuck elsewhere) the process
//!   exits without aborting NCCL; the peers' NCCL then sees the connection close.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::{Error, MpiThreadLevel, Op};

/// Exit status of a process ended by the watchdog (the `timeout` command's).
pub const TIMEOUT_EXIT_CODE: i32 = 124;

/// How long the watchdog waits for the owner thread to abort NCCL itself before exiting anyway.
#[cfg_attr(not(feature = "nccl"), allow(dead_code))] // only the NCCL backend asks the owner
pub(crate) const OWNER_ACK: Duration = Duration::from_secs(5);

/// Which thread runs an abort: the one that owns the communicator (it is not inside a collective
/// then: [`crate::Communicator::abort`]), or the watchdog (the owner may be blocked in one).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Caller {
    /// The communicator's own thread, between collectives.
    Owner,
    /// The watchdog thread, while the owner may be inside a collective.
    Watchdog,
}

/// Backend-specific last words before `exit` (given the caller and the exit status).
pub(crate) type AbortFn = Box<dyn Fn(Caller, i32) + Send + Sync>;

/// Whether `MPI_Abort` may be called by `caller` when MPI granted the thread level `granted`:
/// the owner always may; another thread only under `MPI_THREAD_MULTIPLE` (MPI standard, 12.4.3:
/// under lower levels only the thread that initialised MPI, or one at a time, may call MPI).
#[cfg_attr(not(feature = "mpi"), allow(dead_code))]
pub(crate) fn mpi_abort_allowed(granted: MpiThreadLevel, caller: Caller) -> bool {
    caller == Caller::Owner || granted == MpiThreadLevel::Multiple
}

/// The watchdog's request that the owner thread abort its communicator itself.
#[derive(Default)]
pub(crate) struct AbortRequest {
    requested: AtomicBool,
    done: Mutex<bool>,
    acknowledged: Condvar,
}

#[cfg_attr(not(feature = "nccl"), allow(dead_code))] // only the NCCL backend asks the owner
impl AbortRequest {
    /// Watchdog side: raises the request and waits up to `limit` for the owner's
    /// acknowledgement; returns whether it came.
    pub(crate) fn request_and_wait(&self, limit: Duration) -> bool {
        self.requested.store(true, Ordering::SeqCst);
        let deadline = Instant::now() + limit;
        let mut done = self.done.lock().unwrap_or_else(PoisonError::into_inner);
        while !*done {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            done = self
                .acknowledged
                .wait_timeout(done, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        true
    }

    /// Owner side, polled while waiting for a collective: whether the watchdog asks for an abort.
    pub(crate) fn requested(&self) -> bool {
        self.requested.load(Ordering::SeqCst)
    }

    /// Owner side: the communicator is aborted; the watchdog may exit.
    pub(crate) fn acknowledge(&self) {
        *self.done.lock().unwrap_or_else(PoisonError::into_inner) = true;
        self.acknowledged.notify_all();
    }
}

/// The collective in flight.
struct Armed {
    op: Op,
    context: String,
    deadline: Instant,
    limit: Duration,
}

#[derive(Default)]
struct State {
    armed: Option<Armed>,
    shutdown: bool,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    /// Added by the backends once they have something to abort (`MPI_Abort`, `ncclCommAbort`).
    aborts: Mutex<Vec<AbortFn>>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // The state stays consistent even if a holder panicked: every write is a single assignment.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Reports `err`, runs the backend's aborts as `caller` and ends the process.
    fn fail(&self, err: &Error, code: i32, caller: Caller) -> ! {
        eprintln!("wave-comm: {err}");
        tracing::error!("{err}");
        // If exit blocks (for example in a CUDA driver's teardown behind a stuck kernel), abort.
        let _ = std::thread::Builder::new().spawn(|| {
            std::thread::sleep(Duration::from_secs(10));
            std::process::abort();
        });
        // Newest first: NCCL's communicator before the MPI job it was bootstrapped through.
        for abort in self
            .aborts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .rev()
        {
            abort(caller, code);
        }
        std::process::exit(code);
    }
}

/// The watching thread; stops when dropped.
pub(crate) struct Watchdog {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// Disarms the watchdog when the collective returns (or unwinds).
pub(crate) struct ArmGuard<'a>(&'a Shared);

impl Drop for ArmGuard<'_> {
    fn drop(&mut self) {
        self.0.lock().armed = None;
    }
}

impl Watchdog {
    /// Starts the thread for `rank` of `world_size`.
    pub(crate) fn start(rank: usize, world_size: usize) -> Result<Watchdog, std::io::Error> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
            aborts: Mutex::new(Vec::new()),
        });
        let watched = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name(format!("wave-comm-watchdog-{rank}"))
            .spawn(move || watch(&watched, rank, world_size))?;
        Ok(Watchdog {
            shared,
            thread: Some(thread),
        })
    }

    /// Adds to what a timeout (or [`Watchdog::fail`]) runs before `exit`.
    #[cfg_attr(not(any(feature = "mpi", feature = "nccl")), allow(dead_code))] // only backends add aborts
    pub(crate) fn add_abort(&self, abort: AbortFn) {
        self.shared
            .aborts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(abort);
    }

    /// Reports `err`, aborts the backend (ending the peers under MPI) and exits with `code`.
    /// Called by the communicator's owner thread, between collectives.
    pub(crate) fn fail(&self, err: &Error, code: i32) -> ! {
        self.shared.fail(err, code, Caller::Owner)
    }

    /// Watches `op` for at most `limit`, until the guard is dropped.
    pub(crate) fn arm(&self, op: Op, context: &str, limit: Duration) -> ArmGuard<'_> {
        let armed = Armed {
            op,
            context: context.to_string(),
            deadline: Instant::now() + limit,
            limit,
        };
        self.shared.lock().armed = Some(armed);
        self.shared.wake.notify_one();
        ArmGuard(&self.shared)
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.shared.lock().shutdown = true;
        self.shared.wake.notify_one();
        if let Some(thread) = self.thread.take() {
            // A panicked watchdog thread has nothing left to clean up.
            let _ = thread.join();
        }
    }
}

fn watch(shared: &Shared, rank: usize, world_size: usize) {
    let mut state = shared.lock();
    loop {
        if state.shutdown {
            return;
        }
        let now = Instant::now();
        state = match state.armed.as_ref().map(|a| a.deadline) {
            None => shared
                .wake
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner),
            Some(deadline) if now < deadline => {
                shared
                    .wake
                    .wait_timeout(state, deadline - now)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0
            }
            Some(_) => {
                let err = match state.armed.take() {
                    Some(a) => Error::Timeout {
                        rank,
                        world_size,
                        op: a.op,
                        context: a.context,
                        timeout_s: a.limit.as_secs_f64(),
                    },
                    None => continue,
                };
                drop(state);
                shared.fail(&err, TIMEOUT_EXIT_CODE, Caller::Watchdog);
            }
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mpi_abort_from_the_watchdog_needs_thread_multiple() {
        for level in [
            MpiThreadLevel::Single,
            MpiThreadLevel::Funneled,
            MpiThreadLevel::Serialized,
        ] {
            assert!(!mpi_abort_allowed(level, Caller::Watchdog), "{level:?}");
            assert!(mpi_abort_allowed(level, Caller::Owner), "{level:?}");
        }
        assert!(mpi_abort_allowed(
            MpiThreadLevel::Multiple,
            Caller::Watchdog
        ));
        assert!(MpiThreadLevel::Funneled < MpiThreadLevel::Multiple);
    }

    #[test]
    fn an_abort_request_is_acknowledged_by_a_polling_owner() {
        let request = Arc::new(AbortRequest::default());
        let owner = {
            let request = Arc::clone(&request);
            // The owner's wait loop: poll, and on a request abort (here: note it) and acknowledge.
            std::thread::spawn(move || {
                let started = Instant::now();
                while !request.requested() {
                    assert!(
                        started.elapsed() < Duration::from_secs(10),
                        "never requested"
                    );
                    std::thread::sleep(Duration::from_millis(1));
                }
                request.acknowledge();
            })
        };
        let started = Instant::now();
        assert!(request.request_and_wait(Duration::from_secs(10)));
        assert!(started.elapsed() < Duration::from_secs(5));
        owner.join().expect("owner thread");
    }

    #[test]
    fn an_abort_request_gives_up_when_the_owner_does_not_poll() {
        let request = AbortRequest::default();
        let started = Instant::now();
        assert!(!request.request_and_wait(Duration::from_millis(300)));
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(300) && waited < Duration::from_secs(3),
            "{waited:?}"
        );
        assert!(
            request.requested(),
            "the request stays raised for a late owner"
        );
    }
}
