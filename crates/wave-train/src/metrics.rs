//! Metrics as JSON lines in the run folder, and process memory figures.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::Error;

/// Appends one JSON object per line to `<run_dir>/metrics.jsonl` (flushed per line, so a
/// crashed run still leaves readable curves for `wave-dist plot`).
pub struct MetricsSink {
    path: PathBuf,
    out: BufWriter<File>,
}

impl MetricsSink {
    /// Creates (truncates) the metrics file.
    pub fn create(run_dir: &Path) -> Result<MetricsSink, Error> {
        let path = run_dir.join("metrics.jsonl");
        let file = File::create(&path).map_err(|e| Error::io(&path, e))?;
        Ok(MetricsSink {
            path,
            out: BufWriter::new(file),
        })
    }

    /// Writes one record.
    pub fn write<T: Serialize>(&mut self, record: &T) -> Result<(), Error> {
        let line = serde_json::to_string(record)
            .map_err(|e| Error::Io(format!("{}: {e}", self.path.display())))?;
        writeln!(self.out, "{line}")
            .and_then(|_| self.out.flush())
            .map_err(|e| Error::io(&self.path, e))
    }
}

/// One `kind = "train"` metrics line, covering the steps since the previous one.
#[derive(Debug, Serialize)]
pub struct TrainRecord {
    /// Always `"train"`.
    pub kind: &'static str,
    /// Optimizer steps completed.
    pub step: u64,
    /// Epoch of the last batch.
    pub epoch: u64,
    /// Mean training loss over the window.
    pub loss: f64,
    /// Learning rate of the last step.
    pub lr: f64,
    /// Global gradient norm (before clipping) of the last step.
    pub grad_norm: f64,
    /// Samples per second over the window.
    pub samples_per_s: f64,
    /// Real (non-padding) tokens per second over the window.
    pub tokens_per_s: f64,
    /// Model FLOP/s: real tokens per second times the model's training FLOPs per token
    /// (`ModelConfig::train_flops_per_token`: matrix products, forward and backward).
    pub model_flops_per_s: f64,
    /// Seconds since training started (evaluation excluded).
    pub elapsed_s: f64,
    /// Seconds of the window spent waiting for data.
    pub data_wait_s: f64,
    /// Seconds of the window spent in forward, backward and the optimizer.
    pub compute_s: f64,
    /// Seconds of the window spent averaging gradients over ranks (the reduction itself).
    pub comm_s: f64,
    /// Seconds of the window spent waiting for slower ranks before averaging.
    pub skew_s: f64,
    /// Bytes one rank put into the gradient collectives per step, averaged over the window and
    /// the ranks (0 with one rank: nothing is sent). Row-sparse embedding sync sends only the
    /// touched rows plus one flag per table row.
    pub grad_bytes_per_step: f64,
    /// What the dense all-reduce of every gradient puts in per step (4 bytes per parameter),
    /// for comparison with `grad_bytes_per_step`.
    pub dense_grad_bytes_per_step: f64,
}

/// One `kind = "eval"` metrics line.
#[derive(Clone, Debug, Serialize)]
pub struct EvalRecord {
    /// Always `"eval"`.
    pub kind: &'static str,
    /// Optimizer steps completed when evaluated.
    pub step: u64,
    /// Split evaluated.
    pub split: String,
    /// The evaluation's figures (loss, accuracy, samples, and for language models tokens,
    /// perplexity and bits per byte).
    #[serde(flatten)]
    pub result: crate::eval::EvalResult,
}

/// Peak resident set size of this process in MiB (Linux `VmHWM`; 0 where unavailable).
pub fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|kb| kb.parse::<f64>().ok())
            })
        })
        .map_or(0.0, |kb| kb / 1024.0)
}
