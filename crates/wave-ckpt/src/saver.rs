//! [`Saver`]: checkpoint uploads on a background thread so that training does not wait for them.

use std::sync::mpsc::{self, Receiver, SyncSender};
use std::thread::JoinHandle;

use bytes::Bytes;
use tracing::warn;

use crate::error::{Error, Result};
use crate::retention::Retention;
use crate::store::{CheckpointStore, CommitInfo};

/// How the background saver works.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SaverOptions {
    /// Saves submitted but not finished (queued or uploading) before [`Saver::submit`] blocks;
    /// at least 1. Each holds its objects in memory.
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

struct Job {
    step: u64,
    objects: Vec<(String, Bytes)>,
    metadata: serde_json::Value,
}

/// Uploads checkpoints on one background thread, in submission order, with a bounded number in
/// flight. The trainer calls [`Saver::poll`] once per step and [`Saver::finish`] at the end;
/// dropping a `Saver` also waits for the saves in flight.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use wave_ckpt::{CheckpointStore, RetryPolicy, Saver, SaverOptions};
/// let dir = tempfile::tempdir()?;
/// let store = CheckpointStore::open(&dir.path().display().to_string(), RetryPolicy::default())?;
/// let mut saver = Saver::new(store.clone(), SaverOptions::default())?;
/// for step in [10, 20] {
///     saver.submit(step, vec![("model.safetensors".into(), vec![step as u8; 8].into())], serde_json::json!({}))?;
///     for outcome in saver.poll() {
///         outcome.result?;
///     }
/// }
/// for outcome in saver.finish()? {
///     outcome.result?;
/// }
/// assert_eq!(store.latest()?, Some(20));
/// # Ok(()) }
/// ```
pub struct Saver {
    uri: String,
    jobs: Option<SyncSender<Job>>,
    outcomes: Receiver<SaveOutcome>,
    worker: Option<JoinHandle<()>>,
    pending: usize,
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
        // One save runs while the channel holds the others, hence `max_in_flight - 1` slots.
        let (jobs, job_rx) = mpsc::sync_channel::<Job>(opts.max_in_flight - 1);
        let (outcome_tx, outcomes) = mpsc::channel();
        let worker = std::thread::Builder::new()
            .name("wave-ckpt-saver".into())
            .spawn(move || {
                for job in job_rx {
                    let result = store.save(job.step, job.objects, job.metadata);
                    if let (Ok(_), Some(policy)) = (&result, opts.retention) {
                        if let Err(e) = store.apply_retention(policy) {
                            warn!("checkpoint retention after step {} failed: {e}", job.step);
                        }
                    }
                    if outcome_tx
                        .send(SaveOutcome {
                            step: job.step,
                            result,
                        })
                        .is_err()
                    {
                        break;
                    }
                }
            })
            .map_err(|source| Error::Runtime {
                what: "the checkpoint saver thread",
                source,
            })?;
        Ok(Saver {
            uri,
            jobs: Some(jobs),
            outcomes,
            worker: Some(worker),
            pending: 0,
        })
    }

    /// Queues a save of `objects` as `step`; blocks while `max_in_flight` saves are unfinished.
    pub fn submit(
        &mut self,
        step: u64,
        objects: Vec<(String, Bytes)>,
        metadata: serde_json::Value,
    ) -> Result<()> {
        let stopped = || Error::SaverStopped {
            uri: self.uri.clone(),
        };
        let jobs = self.jobs.as_ref().ok_or_else(stopped)?;
        jobs.send(Job {
            step,
            objects,
            metadata,
        })
        .map_err(|_| stopped())?;
        self.pending += 1;
        Ok(())
    }

    /// Outcomes of the saves finished since the last call, without waiting.
    pub fn poll(&mut self) -> Vec<SaveOutcome> {
        let done: Vec<SaveOutcome> = self.outcomes.try_iter().collect();
        self.pending -= done.len();
        done
    }

    /// Saves submitted whose outcome has not been returned yet.
    pub fn pending(&self) -> usize {
        self.pending
    }

    /// Waits for every submitted save and returns the outcomes not yet polled;
    /// [`Error::SaverStopped`] if the thread died with saves unreported.
    pub fn finish(mut self) -> Result<Vec<SaveOutcome>> {
        self.stop();
        let done = self.poll();
        if self.pending > 0 {
            return Err(Error::SaverStopped {
                uri: self.uri.clone(),
            });
        }
        Ok(done)
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
