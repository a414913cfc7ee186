//! Reading `metrics.jsonl`: one JSON object per line, written by the trainer.
//!
//! Only `"kind": "train"` and `"kind": "eval"` lines are read; other kinds, lines without a
//! `kind`, and keys this crate does not plot are ignored, so the trainer can add fields
//! (`data_wait_s`, `comm_s`, …) and record kinds without breaking plots.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::Error;

/// One `"kind": "train"` line: what the trainer logged at a step.
///
/// A missing or `null` value is `None` and simply leaves a gap in its curve.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct TrainRecord {
    /// Optimizer step the line was logged at.
    pub step: u64,
    /// Training loss (mean over the logging window, as the trainer logs it).
    #[serde(default)]
    pub loss: Option<f64>,
    /// Training throughput, samples per second (all ranks).
    #[serde(default)]
    pub samples_per_s: Option<f64>,
    /// Training throughput, tokens per second (all ranks).
    #[serde(default)]
    pub tokens_per_s: Option<f64>,
}

/// One `"kind": "eval"` line: the result of evaluating one split at a step.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct EvalRecord {
    /// Optimizer step the evaluation ran after.
    pub step: u64,
    /// Which split was evaluated (`"validation"`, `"test"`, …); `"eval"` when the line has none.
    #[serde(default = "default_split")]
    pub split: String,
    /// Mean loss over the split.
    #[serde(default)]
    pub loss: Option<f64>,
    /// Accuracy over the split, a fraction in `[0, 1]`.
    #[serde(default)]
    pub accuracy: Option<f64>,
    /// `exp` of the mean token loss (language models).
    #[serde(default)]
    pub perplexity: Option<f64>,
    /// Loss in bits per byte of text (causal language models).
    #[serde(default)]
    pub bits_per_byte: Option<f64>,
}

fn default_split() -> String {
    "eval".to_owned()
}

/// The train and eval records of one run, sorted by step.
///
/// A run resumed from a checkpoint logs some steps twice; for each step (and, for eval, each
/// split) the record that comes last in the file wins, since it belongs to the run that went on.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Metrics {
    /// Train records, ascending by step, one per step.
    pub train: Vec<TrainRecord>,
    /// Eval records, ascending by step, one per (split, step).
    pub eval: Vec<EvalRecord>,
}

impl Metrics {
    /// Eval records grouped by split (splits in name order), each ascending by step.
    pub fn eval_by_split(&self) -> BTreeMap<&str, Vec<&EvalRecord>> {
        let mut out: BTreeMap<&str, Vec<&EvalRecord>> = BTreeMap::new();
        for record in &self.eval {
            out.entry(record.split.as_str()).or_default().push(record);
        }
        out
    }
}

/// Reads a `metrics.jsonl` file.
///
/// Blank lines are skipped. Errors: [`Error::Read`] when the file cannot be read,
/// [`Error::Line`] (with the 1-based line number) when a line is not JSON or a train/eval line
/// has a field of the wrong type or no `step`, [`Error::Empty`] when there is no train or eval
/// record at all.
pub fn read_metrics(path: &Path) -> Result<Metrics, Error> {
    let read_err = |source| Error::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_err)?;
    let mut metrics = Metrics::default();
    for (index, line) in BufReader::new(file).lines().enumerate() {
        let line = line.map_err(read_err)?;
        let line_no = index + 1;
        if line.trim().is_empty() {
            continue;
        }
        let value: serde_json::Value =
            serde_json::from_str(&line).map_err(|source| line_err(path, line_no, source))?;
        match value.get("kind").and_then(serde_json::Value::as_str) {
            Some("train") => metrics.train.push(
                serde_json::from_value(value).map_err(|source| line_err(path, line_no, source))?,
            ),
            Some("eval") => metrics.eval.push(
                serde_json::from_value(value).map_err(|source| line_err(path, line_no, source))?,
            ),
            _ => {}
        }
    }
    if metrics.train.is_empty() && metrics.eval.is_empty() {
        return Err(Error::Empty {
            path: path.to_path_buf(),
        });
    }
    keep_last_per_key(&mut metrics.train, |r| (r.step, String::new()));
    keep_last_per_key(&mut metrics.eval, |r| (r.step, r.split.clone()));
    Ok(metrics)
}

fn line_err(path: &Path, line: usize, source: serde_json::Error) -> Error {
    Error::Line {
        path: PathBuf::from(path),
        line,
        source,
    }
}

/// Sorts by key (stably) and keeps, among records with equal keys, the one that came last.
fn keep_last_per_key<T, K: Ord>(records: &mut Vec<T>, key: impl Fn(&T) -> K) {
    records.sort_by_key(|r| key(r));
    let mut out: Vec<T> = Vec::with_capacity(records.len());
    for record in records.drain(..) {
        match out.last_mut() {
            Some(last) if key(last) == key(&record) => *last = record,
            _ => out.push(record),
        }
    }
    *records = out;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resumed_steps_keep_the_last_logged_record() {
        let mut v = vec![(1, 'a'), (2, 'a'), (3, 'a'), (2, 'b'), (3, 'b'), (4, 'b')];
        keep_last_per_key(&mut v, |r| r.0);
        assert_eq!(v, vec![(1, 'a'), (2, 'b'), (3, 'b'), (4, 'b')]);
    }
}
