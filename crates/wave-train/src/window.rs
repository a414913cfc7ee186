//! The metrics window: what happened since the last log line, reduced over ranks when it is
//! written (one small all-reduce per log line, none per step).

use std::time::Duration;

use tch::Device;
use wave_comm::Communicator;

use crate::metrics::TrainRecord;
use crate::parallel::{sum_over_ranks, SyncStats};
use crate::Error;

/// One optimizer step as the window sees it.
#[derive(Clone, Copy, Debug)]
pub struct StepReport {
    /// This rank's loss sum divided by the global unit count: summed over ranks, the step's loss.
    pub loss_share: f64,
    /// Learning rate used.
    pub lr: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// Epoch of the batch.
    pub epoch: u64,
    /// Rows of this rank's batch.
    pub rows: usize,
    /// Real tokens of this rank's batch.
    pub tokens: usize,
    /// Waiting for the batch.
    pub wait: Duration,
    /// Forward, backward and optimizer.
    pub compute: Duration,
    /// Gradient synchronisation.
    pub sync: SyncStats,
}

/// Accumulates [`StepReport`]s between log lines.
#[derive(Debug, Default)]
pub struct MetricsWindow {
    loss: f64,
    steps: u64,
    rows: usize,
    tokens: usize,
    wait: f64,
    compute: f64,
    reduce: f64,
    skew: f64,
    bytes: usize,
    dense_bytes: usize,
    last: Option<StepReport>,
    /// Training seconds of this process (evaluation and checkpoint copies excluded).
    pub train_secs: f64,
    /// Rows this rank trained on in this process.
    pub total_rows: usize,
    /// Real tokens this rank trained on in this process.
    pub total_tokens: usize,
}

impl MetricsWindow {
    /// Adds one step.
    pub fn observe(&mut self, r: StepReport) {
        let secs = r.wait.as_secs_f64() + r.compute.as_secs_f64() + r.sync.skew_s + r.sync.reduce_s;
        self.loss += r.loss_share;
        self.steps += 1;
        self.rows += r.rows;
        self.tokens += r.tokens;
        self.wait += r.wait.as_secs_f64();
        self.compute += r.compute.as_secs_f64();
        self.reduce += r.sync.reduce_s;
        self.skew += r.sync.skew_s;
        self.bytes += r.sync.bytes;
        self.dense_bytes += r.sync.dense_bytes;
        self.train_secs += secs;
        self.total_rows += r.rows;
        self.total_tokens += r.tokens;
        self.last = Some(r);
    }

    /// Whether any step is waiting to be logged.
    pub fn is_empty(&self) -> bool {
        self.steps == 0
    }

    /// The window as a metrics line (mean loss per unit over its steps, rates over all ranks)
    /// and a fresh window. A collective: every rank must call it at the same step.
    pub fn flush(
        &mut self,
        comm: &Communicator,
        device: Device,
        step: u64,
        flops_per_token: f64,
    ) -> Result<TrainRecord, Error> {
        let totals = sum_over_ranks(
            comm,
            &[
                self.loss,
                self.rows as f64,
                self.tokens as f64,
                self.bytes as f64,
            ],
            device,
            "metrics window reduction",
        )?;
        let (loss, rows, tokens) = (totals[0], totals[1], totals[2]);
        let rank_steps = (self.steps as f64 * comm.world_size() as f64).max(1.0);
        // Every rank spends the same wall time per step (they synchronise every step).
        let secs = (self.wait + self.compute + self.reduce + self.skew).max(1e-9);
        let last = self.last.unwrap_or(StepReport {
            loss_share: f64::NAN,
            lr: 0.0,
            grad_norm: 0.0,
            epoch: 0,
            rows: 0,
            tokens: 0,
            wait: Duration::ZERO,
            compute: Duration::ZERO,
            sync: SyncStats::default(),
        });
        let record = TrainRecord {
            kind: "train",
            step,
            epoch: last.epoch,
            loss: loss / self.steps.max(1) as f64,
            lr: last.lr,
            grad_norm: last.grad_norm,
            samples_per_s: rows / secs,
            tokens_per_s: tokens / secs,
            model_flops_per_s: tokens * flops_per_token / secs,
            elapsed_s: self.train_secs,
            data_wait_s: self.wait,
            compute_s: self.compute,
            comm_s: self.reduce,
            skew_s: self.skew,
            grad_bytes_per_step: totals[3] / rank_steps,
            dense_grad_bytes_per_step: self.dense_bytes as f64 / self.steps.max(1) as f64,
        };
        let (train_secs, total_rows, total_tokens) =
            (self.train_secs, self.total_rows, self.total_tokens);
        *self = MetricsWindow {
            train_secs,
            total_rows,
            total_tokens,
            ..MetricsWindow::default()
        };
        Ok(record)
    }
}
