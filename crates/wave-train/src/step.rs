//! One optimizer step, top to bottom: micro-batches → loss → backward → gradient sync → clip →
//! AdamW.

use std::time::Instant;

use tch::Device;
use wave_comm::Communicator;
use wave_data::Batch;

use crate::objective::{Objective, Prepared};
use crate::parallel::{GradientBuckets, SyncStats};
use crate::state::TrainState;
use crate::Error;

/// Splits this rank's share of the batch into `micro_batches` row ranges and prepares each
/// (inputs, targets, this step's random keys), packed to real tokens when `unpadded`. Their unit
/// counts sum to the rank's count.
pub fn prepare_micro_batches(
    objective: &Objective,
    batch: &Batch,
    micro_batches: usize,
    (seed, step): (u64, u64),
    unpadded: bool,
    device: Device,
) -> Result<Vec<Prepared>, Error> {
    let per = batch.rows.div_ceil(micro_batches.max(1)).max(1);
    (0..batch.rows)
        .step_by(per)
        .map(|start| {
            let rows = start..(start + per).min(batch.rows);
            let prepared = objective.prepare(batch, rows, seed, step, device);
            if unpadded {
                prepared.into_packed()
            } else {
                Ok(prepared)
            }
        })
        .collect()
}

/// What the step did.
#[derive(Clone, Copy, Debug)]
pub struct StepResult {
    /// This rank's loss sum over the global unit count (the ranks' shares sum to the step loss).
    pub loss_share: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// Gradient synchronisation times.
    pub sync: SyncStats,
    /// Seconds of forward, backward and optimizer (synchronisation excluded).
    pub compute_s: f64,
}

/// Runs one optimizer step on `micro` (this rank's micro-batches) at learning rate `lr`.
/// `global_count` is the step's supervised units summed over ranks: each rank's summed loss is
/// divided by it, so the gradients summed over ranks are the gradient of the global mean loss,
/// whatever each rank holds.
pub fn train_step(
    state: &mut TrainState,
    micro: &[Prepared],
    global_count: f64,
    lr: f64,
    buckets: &GradientBuckets,
    comm: &Communicator,
    grad_clip: f64,
) -> Result<StepResult, Error> {
    let started = Instant::now();
    let scale = 1.0 / global_count.max(1.0);
    let mut loss_sum = 0.0;
    for p in micro {
        loss_sum += state.objective.loss_backward(&state.net, p, scale)?;
    }
    let forward_backward = started.elapsed().as_secs_f64();
    let sync = buckets.reduce(comm, state.step + 1)?;
    let optimizer_start = Instant::now();
    let grad_norm = state.opt.clip_grad_norm(grad_clip);
    state.opt.step(lr);
    state.opt.zero_grad();
    state.step += 1;
    state.cursor = state.loader.cursor();
    Ok(StepResult {
        loss_share: loss_sum * scale,
        grad_norm,
        sync,
        compute_s: forward_backward + optimizer_start.elapsed().as_secs_f64(),
    })
}
