//! [`Saver`]: checkpoint uploads on a background thread so that training does not wait for them.
//!
//! A store can be slow or stop answering for much longer than a training step (an outage, a
//! server that accepts connections and never replies: each request then waits for its timeout,
//! then is retried). A caller whose peers wait for it in a collective with a time limit must
//! therefore never block on the saver for long. Two ways to submit and two ways to finish:
//!
//! | call | when `max_in_flight` saves are unfinished | use |
//! |---|---|---|
//! | [`Saver::try_submit`] | returns [`Submitted::Busy`] at once; the caller skips or defers that save | periodic saves in a multi-rank job |
//! | [`Saver::submit`] | blocks until one finishes | a single process that prefers a late checkpoint to none |
//! | [`Saver::finish_within`] | waits at most a given time, then reports which steps did not land | the end of a job with a grace period |
//! | [`Saver::finish`] | waits for every save | no deadline |
//!
//! [`Saver::poll`] returns the outcomes finished since the last call, without waiting.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tracing::warn;

use crate::error::{Error, Result};
use crate::retention::Retention;
use crate::store::{CheckpointStore, CommitInfo};

/// How the background saver works.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SaverOptions {
    /// Saves submitted but not finished (queued or uploading) at most; at least 1. Beyond it
    /// [`Saver::submit`] blocks and [`Saver::try_submit`] answers [`Submitted::Busy`]. Each holds
    /// its objects in memory.
    pub max_in_flight: usize,
    /// Retention applied after every successful save (failures are logged, not reported).
    pub retention: Option<Retention>,
}

impl Default for SaverOptions {
    /// Two saves in flight, no retention.
    fn default() -> Self {
        SaverOptions {
            max_in_flight: 2,
            retention: None,
        }
    }
}

/// The result of one submitted save.
#[derive(Debug)]
pub struct SaveOutcome {
    /// The step submitted.
    pub step: u64,
    /// What [`CheckpointStore::save`] returned (after its retries).
    pub result: Result<CommitInfo>,
}

/// What [`Saver::try_submit`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Submitted {
    /// The save is queued (or already running).
    Queued,
    /// `in_flight` saves are unfinished (the limit): nothing was queued.
    Busy {
        /// Saves queued or uploading.
        in_flight: usize,
    },
}

/// What [`Saver::finish_within`] found at its deadline.
#[derive(Debug, Default)]
pub struct FinishReport {
    /// Outcomes of the saves that finished (successfully or not) and had not been polled, in
    /// submission order.
    pub outcomes: Vec<SaveOutcome>,
    /// Steps submitted whose save had not finished by the deadline, ascending by submission. They
    /// were abandoned: the one uploading may still complete in the background until the process
    /// exits, the queued ones never start. Readers never see a partial one (no commit marker).
    pub unfinished: Vec<u64>,
}

struct Job {
    step: u64,
    objects: Vec<(String, Bytes)>,
    metadata: serde_json::Value,
}

/// State shared with the worker thread.
struct Shared {
    /// Saves submitted and not finished yet.
    unfinished: Mutex<usize>,
    /// Signalled whenever `unfinished` drops or the worker stops.
    changed: Condvar,
    /// Set when the worker thread ends (normally or by a panic).
    stopped: AtomicBool,
    /// Set by [`Saver::finish_within`] at its deadline: queued saves are not started.
    abandoned: AtomicBool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, usize> {
        // A counter stays consistent even if a holder panicked.
        self.unfinished
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// Marks the worker stopped when it ends, panics included, and wakes any waiter.
struct StopGuard(Arc<Shared>);

impl Drop for StopGuard {
    fn drop(&mut self) {
        self.0.stopped.store(true, Ordering::SeqCst);
        let _guard = self.0.lock();
        self.0.changed.notify_all();
    }
}

/// Uploads checkpoints on one background thread, in submission order, with a bounded number in
/// flight (see the module docs for the blocking and non-blocking calls). Dropping a `Saver`
/// waits for the saves in flight, like [`Saver::finish`]; use [`Saver::finish_within`] to bound
/// that wait.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::Duration;
/// use wave_ckpt::{CheckpointStore, RetryPolicy, Saver, SaverOptions, Submitted};
/// let dir = tempfile::tempdir()?;
/// let store = CheckpointStore::open(&dir.path().display().to_string(), RetryPolicy::default())?;
/// let mut saver = Saver::new(store.clone(), SaverOptions::default())?;
/// for step in [10, 20] {
///     let objects = vec![("model.safetensors".into(), vec![step as u8; 8].into())];
///     if let Submitted::Busy { in_flight } = saver.try_submit(step, objects, serde_json::json!({}))? {
///         eprintln!("step {step}: {in_flight} saves still uploading; skipping this one");
///     }
///     for outcome in saver.poll() {
///         outcome.result?;
///     }
/// }
/// let report = saver.finish_within(Duration::from_secs(60))?;
/// assert!(report.unfinished.is_empty());
/// for outcome in report.outcomes {
///     outcome.result?;
/// }
/// assert_eq!(store.latest()?, Some(20));
/// # Ok(()) }
/// ```
pub struct Saver {
    uri: String,
    max_in_flight: usize,
    jobs: Option<Sender<Job>>,
    outcomes: Receiver<SaveOutcome>,
    worker: Option<JoinHandle<()>>,
    shared: Arc<Shared>,
    /// Steps submitted whose outcome has not been returned yet, in submission order.
    unreported: VecDeque<u64>,
}

impl Saver {
    /// Starts the background thread saving into `store`.
    pub fn new(store: CheckpointStore, opts: SaverOptions) -> Result<Saver> {
        if opts.max_in_flight == 0 {
            return Err(Error::Config {
                field: "saver.max_in_flight",
                msg: "must be at least 1".into(),
            });
        }
        let uri = store.uri().to_string();
        let shared = Arc::new(Shared {
            unfinished: Mutex::new(0),
            changed: Condvar::new(),
            stopped: AtomicBool::new(false),
            abandoned: AtomicBool::new(false),
        });
        // Unbounded: the in-flight limit is kept by `unfinished`, which also counts the save
        // that is running, so `try_submit` can answer without touching the channel.
        let (jobs, job_rx) = mpsc::channel::<Job>();
        let (outcome_tx, outcomes) = mpsc::channel();
        let worker = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("wave-ckpt-saver".into())
                .spawn(move || {
                    let _stop = StopGuard(Arc::clone(&shared));
                    for job in job_rx {
                        if shared.abandoned.load(Ordering::SeqCst) {
                            break;
                        }
                        let result = store.save(job.step, job.objects, job.metadata);
                        if let (Ok(_), Some(policy)) = (&result, opts.retention) {
                            if let Err(e) = store.apply_retention(policy) {
                                warn!("checkpoint retention after step {} failed: {e}", job.step);
                            }
                        }
                        let step = job.step;
                        // The outcome is sent before the count drops, so a waiter that sees the
                        // count drop finds the outcome.
                        let receiver_gone = outcome_tx.send(SaveOutcome { step, result }).is_err();
                        *shared.lock() -= 1;
                        shared.changed.notify_all();
                        if receiver_gone {
                            break;
                        }
                    }
                })
                .map_err(|source| Error::Runtime {
                    what: "the checkpoint saver thread",
                    source,
                })?
        };
        Ok(Saver {
            uri,
            max_in_flight: opts.max_in_flight,
            jobs: Some(jobs),
            outcomes,
            worker: Some(worker),
            shared,
            unreported: VecDeque::new(),
        })
    }

    /// Queues a save of `objects` as `step`; blocks while `max_in_flight` saves are unfinished.
    /// [`Error::SaverStopped`] if the background thread is gone.
    pub fn submit(
        &mut self,
        step: u64,
        objects: Vec<(String, Bytes)>,
        metadata: serde_json::Value,
    ) -> Result<()> {
        let shared = Arc::clone(&self.shared);
        let mut unfinished = shared.lock();
        while *unfinished >= self.max_in_flight && !shared.stopped.load(Ordering::SeqCst) {
            unfinished = shared
                .changed
                .wait(unfinished)
                .unwrap_or_else(PoisonError::into_inner);
        }
        self.enqueue(unfinished, step, objects, metadata)
    }

    /// Queues a save of `objects` as `step` unless `max_in_flight` saves are unfinished, in which
    /// case nothing is queued and the answer is [`Submitted::Busy`]. Never waits for the store.
    /// [`Error::SaverStopped`] if the background thread is gone.
    pub fn try_submit(
        &mut self,
        step: u64,
        objects: Vec<(String, Bytes)>,
        metadata: serde_json::Value,
    ) -> Result<Submitted> {
        let shared = Arc::clone(&self.shared);
        let unfinished = shared.lock();
        if *unfinished >= self.max_in_flight && !shared.stopped.load(Ordering::SeqCst) {
            return Ok(Submitted::Busy {
                in_flight: *unfinished,
            });
        }
        self.enqueue(unfinished, step, objects, metadata)?;
        Ok(Submitted::Queued)
    }

    /// Counts the job (under the lock just held) and hands it to the worker.
    fn enqueue(
        &mut self,
        mut unfinished: MutexGuard<'_, usize>,
        step: u64,
        objects: Vec<(String, Bytes)>,
        metadata: serde_json::Value,
    ) -> Result<()> {
        let stopped = || Error::SaverStopped {
            uri: self.uri.clone(),
        };
        if self.shared.stopped.load(Ordering::SeqCst) {
            return Err(stopped());
        }
        let jobs = self.jobs.as_ref().ok_or_else(stopped)?;
        jobs.send(Job {
            step,
            objects,
            metadata,
        })
        .map_err(|_| stopped())?;
        *unfinished += 1;
        drop(unfinished);
        self.unreported.push_back(step);
        Ok(())
    }

    /// Outcomes of the saves finished since the last call, without waiting.
    pub fn poll(&mut self) -> Vec<SaveOutcome> {
        let done: Vec<SaveOutcome> = self.outcomes.try_iter().collect();
        // Outcomes arrive in submission order.
        self.unreported
            .drain(..done.len().min(self.unreported.len()));
        done
    }

    /// Saves submitted whose outcome has not been returned yet.
    pub fn pending(&self) -> usize {
        self.unreported.len()
    }

    /// Saves queued or uploading now (finished ones count out even before they are polled).
    pub fn in_flight(&self) -> usize {
        *self.shared.lock()
    }

    /// Waits for every submitted save and returns the outcomes not yet polled;
    /// [`Error::SaverStopped`] if the thread died with saves unreported.
    pub fn finish(mut self) -> Result<Vec<SaveOutcome>> {
        self.stop();
        let done = self.poll();
        if !self.unreported.is_empty() {
            return Err(Error::SaverStopped {
                uri: self.uri.clone(),
            });
        }
        Ok(done)
    }

    /// Waits at most `limit` for the submitted saves, then returns the outcomes not yet polled
    /// and the steps that did not finish, which are abandoned (see [`FinishReport`]); the
    /// background thread is then left to end on its own. [`Error::SaverStopped`] if the thread
    /// died with saves unreported.
    pub fn finish_within(mut self, limit: Duration) -> Result<FinishReport> {
        let deadline = Instant::now() + limit;
        {
            let mut unfinished = self.shared.lock();
            while *unfinished > 0 && !self.shared.stopped.load(Ordering::SeqCst) {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                unfinished = self
                    .shared
                    .changed
                    .wait_timeout(unfinished, left)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
        }
        // The worker only ends on its own (before `stop`) by panicking.
        let crashed = self.shared.stopped.load(Ordering::SeqCst);
        if crashed || self.in_flight() == 0 {
            self.stop();
        } else {
            // The running save cannot be interrupted; it is detached rather than waited for.
            self.shared.abandoned.store(true, Ordering::SeqCst);
            self.jobs = None;
            drop(self.worker.take());
        }
        let outcomes = self.poll();
        let unfinished: Vec<u64> = self.unreported.iter().copied().collect();
        if crashed && !unfinished.is_empty() {
            return Err(Error::SaverStopped {
                uri: self.uri.clone(),
            });
        }
        if !unfinished.is_empty() {
            warn!(
                "checkpoint saves of steps {unfinished:?} to {} did not finish within {:.1} s; abandoned",
                self.uri,
                limit.as_secs_f64()
            );
        }
        self.unreported.clear();
        Ok(FinishReport {
            outcomes,
            unfinished,
        })
    }

    fn stop(&mut self) {
        self.jobs = None;
        if let Some(worker) = self.worker.take() {
            if worker.join().is_err() {
                warn!("checkpoint saver thread for {} panicked", self.uri);
            }
        }
    }
}

impl Drop for Saver {
    fn drop(&mut self) {
        self.stop();
    }
}
