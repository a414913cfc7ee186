//! Rank 0's checkpoint policy: when to save, and never letting the store stall the collectives.
//!
//! Other ranks wait for rank 0 in the next collective with `comm.timeout_s`; a slow or unreachable
//! store must therefore never hold rank 0 inside the loop. Uploads run in the background
//! (`wave-ckpt`'s `Saver`); a periodic save that finds `checkpoint.max_in_flight` uploads still
//! unfinished is skipped (logged) instead of waiting, and the one wait that remains — for the final
//! checkpoint — happens after the last collective of the run.

use wave_ckpt::{Retention, SaveOutcome, Saver, SaverOptions};
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
    name: String,
    world_size: usize,
    /// The newest step handed to the saver (or resumed from): not saved again at the end.
    last_submitted: Option<u64>,
}

impl Checkpointer {
    /// Rank 0 opens the store and starts the background saver; `resumed` is the start step.
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
            Some(
                Saver::new(
                    store,
                    SaverOptions {
                        max_in_flight: c.max_in_flight,
                        retention,
                    },
                )
                .map_err(|e| checkpoint::store_error(&uri, e))?,
            )
        } else {
            None
        };
        Ok(Checkpointer {
            saver,
            uri,
            every_steps: c.every_steps,
            max_in_flight: c.max_in_flight,
            on_failure: c.on_failure,
            name: cfg.name.clone(),
            world_size: comm.world_size(),
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
        self.report(outcomes)?;
        let due = self.every_steps > 0
            && state.step % self.every_steps == 0
            && state.step < state.total_steps;
        if !due {
            return Ok(());
        }
        if self
            .saver
            .as_ref()
            .is_some_and(|s| s.pending() >= self.max_in_flight)
        {
            tracing::warn!(
                step = state.step,
                uri = %self.uri,
                "checkpoint skipped: {} earlier save(s) still uploading (the store is slow or down)",
                self.max_in_flight
            );
            return Ok(());
        }
        self.submit(state, metrics)
    }

    /// Hands the checkpoint of the current step to the saver (does not block: the caller made sure
    /// a slot is free, or it is the final save).
    fn submit(&mut self, state: &TrainState, metrics: &serde_json::Value) -> Result<(), Error> {
        let Some(saver) = self.saver.as_mut() else {
            return Ok(());
        };
        let objects = state.checkpoint_objects(metrics, self.world_size)?;
        saver
            .submit(
                state.step,
                objects,
                serde_json::json!({ "name": self.name }),
            )
            .map_err(|e| checkpoint::store_error(&self.uri, e))?;
        self.last_submitted = Some(state.step);
        tracing::debug!(step = state.step, "checkpoint queued for upload");
        Ok(())
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

    /// Waits for every upload (call after the last collective). With `must_land` (pre-emption) a
    /// final save that failed is an error whatever `checkpoint.on_failure` says.
    pub fn finish(mut self, step: u64, must_land: bool) -> Result<(), Error> {
        let Some(saver) = self.saver.take() else {
            return Ok(());
        };
        let outcomes = saver
            .finish()
            .map_err(|e| checkpoint::store_error(&self.uri, e))?;
        let landed = outcomes.iter().any(|o| o.step == step && o.result.is_ok());
        let final_failed = outcomes.iter().any(|o| o.step == step && o.result.is_err());
        self.report(outcomes)?;
        if must_land && final_failed && !landed {
            return Err(Error::Checkpoint {
                path: self.uri.clone(),
                reason: format!("stopped at step {step} by a signal, but the final checkpoint could not be saved"),
            });
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
