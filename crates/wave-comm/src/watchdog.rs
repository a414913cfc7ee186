//! Ends the process when a collective outlives its time limit.
//!
//! MPI collectives cannot be cancelled and NCCL's only wait is a poll, so a thread watches the
//! collective in flight: [`Watchdog::arm`] before the call, the returned guard disarms on drop.
//! When a deadline passes the thread prints [`Error::Timeout`] (rank, operation, caller context)
//! to stderr and through `tracing`, runs the backend's abort (`MPI_Abort`, which makes the launcher
//! end every rank; `ncclCommAbort`) and exits with [`TIMEOUT_EXIT_CODE`]. Should `exit` itself hang
//! (a driver stuck in its teardown), the process aborts ten seconds later.

use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::{Error, Op};

/// Exit status of a process ended by the watchdog (the `timeout` command's).
pub const TIMEOUT_EXIT_CODE: i32 = 124;

/// Backend-specific last words before `exit` (given the exit status), run on the watchdog thread.
pub(crate) type AbortFn = Box<dyn Fn(i32) + Send + Sync>;

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

    /// Reports `err`, runs the backend's abort and ends the process.
    fn fail(&self, err: &Error, code: i32) -> ! {
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
            abort(code);
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
    /// Starts the thread for `rank`.
    pub(crate) fn start(rank: usize) -> Result<Watchdog, std::io::Error> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
            aborts: Mutex::new(Vec::new()),
        });
        let watched = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name(format!("wave-comm-watchdog-{rank}"))
            .spawn(move || watch(&watched, rank))?;
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
    pub(crate) fn fail(&self, err: &Error, code: i32) -> ! {
        self.shared.fail(err, code)
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

fn watch(shared: &Shared, rank: usize) {
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
                        op: a.op,
                        context: a.context,
                        timeout_s: a.limit.as_secs_f64(),
                    },
                    None => continue,
                };
                drop(state);
                shared.fail(&err, TIMEOUT_EXIT_CODE);
            }
        };
    }
}
