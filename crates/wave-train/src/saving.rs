//! Rank 0's checkpoint policy: when to save, and never letting the store stall the collectives.
//!
//! Other ranks wait for rank 0 in the next collective with `comm.timeout_s`; a slow or unreachable
//! store must therefore never hold rank 0 inside the loop. Uploads run in the background
//! (`wave-ckpt`'s `Saver`); a periodic save that finds `checkpoint.max_in_flight` uploads still
//! unfinished is skipped (logged) instead of waiting. The one wait that remains — for the final
//! checkpoint — comes after the last collective of the run and is bounded by 3/4 of
//! `comm.timeout_s`, since the other ranks may be waiting for rank 0 in the launcher's teardown.

use std::time::Duration;

use wave_ckpt::{Retention, SaveOutcome, Saver, SaverOptions, Submitted, RUN_KEY};
use wave_comm::Communicator;

use crate::checkpoint;
use crate::config::{JobConfig, OnFailure};
use crate::state::TrainState;
use crate::Error;

/// Periodic and final checkpoints (a no-op on ranks other than 0).
pub struct Checkpointer {
    saver: Option<Saver>,
    uri: String,
    every_steps: u64,
    max_in_flight: usize,
    on_failure: OnFailure,
    /// Checkpoint metadata: the run's name, and what identifies this run (a later fresh run into
    /// the same root is refused naming it).
    metadata: serde_json::Value,
    world_size: usize,
    /// Longest wait for the final uploads.
    final_wait: Duration,
    /// The newest step handed to the saver (or resumed from): not saved again at the end.
    last_submitted: Option<u64>,
}

impl Checkpointer {
    /// Rank 0 opens the store and starts the background saver; `start_step` is where the run
    /// starts (a resumed step is not saved again).
    pub fn start(
        cfg: &JobConfig,
        comm: &Communicator,
        start_step: u64,
    ) -> Result<Checkpointer, Error> {
        let c = &cfg.checkpoint;
        let uri = cfg.checkpoint_uri();
        let saver = if comm.is_root() {
            // keep_last = 0 with keep_every = 0 keeps everything; wave-ckpt reads keep_last = 0 as
            // "none".
            let retention = (c.keep_last > 0 || c.keep_every > 0).then_some(Retention {
                keep_last: c.keep_last,
                keep_every: c.keep_every,
            });
            let store = checkpoint::open(&uri, comm.world_size())?;
            let options = SaverOptions {
                max_in_flight: c.max_in_flight,
                retention,
            };
            Some(Saver::new(store, options).map_err(|e| checkpoint::store_error(&uri, e))?)
        } else {
            None
        };
        let run = format!(
            "{} (seed {}, run folder {})",
            cfg.name,
            cfg.train.seed,
            cfg.run_dir().display()
        );
        Ok(Checkpointer {
            saver,
            uri,
            every_steps: c.every_steps,
            max_in_flight: c.max_in_flight,
            on_failure: c.on_failure,
            metadata: serde_json::json!({ "name": cfg.name, RUN_KEY: run }),
            world_size: comm.world_size(),
            final_wait: cfg.comm.timeout().mul_f64(0.75),
            last_submitted: (start_step > 0).then_some(start_step),
        })
    }

    /// After a step: reports finished uploads and starts a periodic save when one is due (unless
    /// the store is still busy with earlier ones).
    pub fn after_step(
        &mut self,
        state: &TrainState,
        metrics: &serde_json::Value,
    ) -> Result<(), Error> {
        let Some(saver) = self.saver.as_mut() else {
            return Ok(());
        };
        let outcomes = saver.poll();
        let busy = saver.in_flight() >= self.max_in_flight;
        self.report(outcomes)?;
        let due = self.every_steps > 0
            && state.step.is_multiple_of(self.every_steps)
            && state.step < state.total_steps;
        match (due, busy) {
            (false, _) => Ok(()),
            // Checked before copying the state out: a busy store costs the loop nothing.
            (true, true) => {
                self.skipped(state.step);
                Ok(())
            }
            (true, false) => self.submit(state, metrics),
        }
    }

    /// Queues the final checkpoint of the current step (if not saved yet) without waiting: the
    /// upload overlaps the final evaluation.
    pub fn submit_final(
        &mut self,
        state: &TrainState,
        metrics: &serde_json::Value,
    ) -> Result<(), Error> {
        if self.saver.is_some() && self.last_submitted != Some(state.step) {
            self.submit(state, metrics)?;
        }
        Ok(())
    }

    /// Waits for the uploads (call after the last collective), at most 3/4 of `comm.timeout_s`.
    /// A final checkpoint that did not land is an error under pre-emption (`must_land`) or with
    /// `checkpoint.on_failure = "stop"`, and logged otherwise (the previous one stays).
    pub fn finish(mut self, step: u64, must_land: bool) -> Result<(), Error> {
        let Some(saver) = self.saver.take() else {
            return Ok(());
        };
        let report = saver
            .finish_within(self.final_wait)
            .map_err(|e| checkpoint::store_error(&self.uri, e))?;
        let landed = report
            .outcomes
            .iter()
            .any(|o| o.step == step && o.result.is_ok());
        if !report.unfinished.is_empty() {
            tracing::error!(
                uri = %self.uri,
                steps = ?report.unfinished,
                "checkpoint uploads unfinished after {:.0} s were abandoned; the last committed checkpoint stays",
                self.final_wait.as_secs_f64()
            );
        }
        self.report(report.outcomes)?;
        let owed = self.last_submitted == Some(step) && !landed;
        if owed && (must_land || self.on_failure == OnFailure::Stop) {
            return Err(Error::Checkpoint {
                path: self.uri.clone(),
                reason: format!("the final checkpoint of step {step} could not be saved"),
            });
        }
        Ok(())
    }

    fn skipped(&self, step: u64) {
        tracing::warn!(
            step,
            uri = %self.uri,
            "checkpoint skipped: {} earlier save(s) still uploading (the store is slow or down)",
            self.max_in_flight
        );
    }

    /// Hands the checkpoint of the current step to the saver; never waits for the store.
    fn submit(&mut self, state: &TrainState, metrics: &serde_json::Value) -> Result<(), Error> {
        let Some(saver) = self.saver.as_mut() else {
            return Ok(());
        };
        let objects = state.checkpoint_objects(metrics, self.world_size)?;
        let submitted = saver
            .try_submit(state.step, objects, self.metadata.clone())
            .map_err(|e| checkpoint::store_error(&self.uri, e))?;
        match submitted {
            Submitted::Queued => {
                self.last_submitted = Some(state.step);
                tracing::debug!(step = state.step, "checkpoint queued for upload");
            }
            Submitted::Busy { .. } => self.skipped(state.step),
        }
        Ok(())
    }

    /// Logs finished saves; a failed one is an error only with `checkpoint.on_failure = "stop"`.
    fn report(&self, outcomes: Vec<SaveOutcome>) -> Result<(), Error> {
        for outcome in outcomes {
            match outcome.result {
                Ok(info) => {
                    tracing::info!(step = outcome.step, uri = %info.uri, attempts = info.attempts, "checkpoint saved")
                }
                Err(e) => {
                    if self.on_failure == OnFailure::Stop {
                        return Err(Error::Checkpoint {
                            path: self.uri.clone(),
                            reason: format!("saving step {} failed: {e}", outcome.step),
                        });
                    }
                    tracing::error!(step = outcome.step, uri = %self.uri, "checkpoint save failed; training continues (checkpoint.on_failure = \"continue\"): {e}");
                }
            }
        }
        Ok(())
    }
}
