//! Evaluation: every sample of a split once, each rank on its share, reduced over ranks.
//!
//! Figures per objective:
//! - classification: mean cross-entropy per sample and accuracy;
//! - masked LM: mean cross-entropy per masked token, masked-token accuracy and perplexity, over
//!   one fixed evaluation mask (the same positions in every evaluation of every run);
//! - causal LM: mean cross-entropy per predicted token, next-token accuracy, perplexity and bits per
//!   byte.
//!
//! Perplexity is `exp` of the mean token loss over the whole evaluation set (not a mean of per-batch
//! perplexities). Bits per byte divides the summed loss (in bits) by the UTF-8 bytes the predicted
//! tokens stand for, using the split's bytes-per-token ratio recorded at prepare time; unlike
//! perplexity it does not depend on the tokenizer, so runs with different vocabularies compare.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tch::{nn, Device, Kind, Tensor};
use wave_comm::Communicator;
use wave_data::{Cursor, Dataset, Fetched, Loader, LoaderOptions, TextEncoder};
use wave_model::{ModelConfig, WaveNetwork};

use crate::config::JobConfig;
use crate::device::parse_device;
use crate::objective::{
    EvalSums, Objective, ObjectiveKind, Prepared, EVAL_MASK_SEED, EVAL_MASK_STEP,
};
use crate::parallel::sum_over_ranks;
use crate::state::{build_objective, open_data, resolve_model};
use crate::stop::StopSignal;
use crate::trainer::Params;
use crate::Error;

/// How often a loader wait looks at the stop signal.
pub(crate) const SIGNAL_POLL: Duration = Duration::from_millis(100);

/// Result of an evaluation pass.
#[derive(Clone, Debug, Serialize)]
pub struct EvalResult {
    /// Mean cross-entropy (nats) per supervised unit: per sample (classification) or per
    /// predicted token (language models).
    pub loss: f64,
    /// Fraction of supervised units whose arg-max prediction is right.
    pub accuracy: f64,
    /// Samples (rows) evaluated.
    pub samples: u64,
    /// Predicted tokens (language models).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokens: Option<u64>,
    /// `exp(loss)` over the whole set (language models).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub perplexity: Option<f64>,
    /// Summed loss in bits per byte of text (causal LM, when the split records its bytes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bits_per_byte: Option<f64>,
}

impl EvalResult {
    /// The figures of `sums` (already reduced over ranks) for `objective`; `bytes_per_token` is
    /// the split's UTF-8 bytes per token, when known.
    pub fn from_sums(
        objective: ObjectiveKind,
        sums: EvalSums,
        bytes_per_token: Option<f64>,
    ) -> EvalResult {
        let n = sums.count.max(1.0);
        let loss = sums.loss_sum / n;
        let lm = objective != ObjectiveKind::Classification;
        EvalResult {
            loss,
            accuracy: sums.correct / n,
            samples: sums.rows as u64,
            tokens: lm.then_some(sums.count as u64),
            perplexity: lm.then(|| loss.exp()),
            bits_per_byte: (objective == ObjectiveKind::CausalLm)
                .then_some(bytes_per_token)
                .flatten()
                .map(|b| sums.loss_sum / std::f64::consts::LN_2 / (sums.count.max(1.0) * b)),
        }
    }
}

/// The data an evaluation reads and how.
pub struct EvalData<'a> {
    /// The data set.
    pub dataset: &'a Dataset,
    /// Tokenizer for text columns (or `None` for pre-tokenized data).
    pub encoder: Option<Arc<TextEncoder>>,
    /// The job config (`[data]` and `train.eval_max_batches`).
    pub cfg: &'a JobConfig,
    /// The objective whose figures are computed.
    pub objective: &'a Objective,
    /// Device of the network.
    pub device: Device,
}

/// UTF-8 bytes per token of `split`, when its manifest records both.
pub fn bytes_per_token(dataset: &Dataset, split: &str) -> Option<f64> {
    dataset.bytes_per_token(split)
}

/// Evaluates `net` on `split`. Returns `None` when a stop signal on any rank cut it short (the
/// caller stops at the next step boundary; a partial figure would mislead).
pub fn evaluate(
    data: &EvalData<'_>,
    net: &WaveNetwork,
    split: &str,
    comm: &Communicator,
    signal: &StopSignal,
) -> Result<Option<EvalResult>, Error> {
    let (sums, interrupted) = eval_batches(data, split, comm, signal, |prepared| {
        data.objective.eval_sums(net, prepared)
    })?;
    let totals = sum_over_ranks(
        comm,
        &[
            sums.loss_sum,
            sums.correct,
            sums.count,
            sums.rows,
            f64::from(u8::from(interrupted)),
        ],
        data.device,
        "evaluation",
    )?;
    if totals[4] > 0.0 {
        return Ok(None);
    }
    let sums = EvalSums {
        loss_sum: totals[0],
        correct: totals[1],
        count: totals[2],
        rows: totals[3],
    };
    Ok(Some(EvalResult::from_sums(
        data.objective.kind(),
        sums,
        bytes_per_token(data.dataset, split),
    )))
}

/// This rank's share of `split` (every sample once, padded rows ignored) in evaluation order, each
/// batch prepared with the objective's fixed evaluation mask and scored by `score`; stops early at
/// a stop signal (second value) or `train.eval_max_batches`.
fn eval_batches(
    data: &EvalData<'_>,
    split: &str,
    comm: &Communicator,
    signal: &StopSignal,
    mut score: impl FnMut(&Prepared) -> Result<EvalSums, Error>,
) -> Result<(EvalSums, bool), Error> {
    let mut opts = LoaderOptions::eval(&data.cfg.data, comm.rank(), comm.world_size());
    opts.split = split.to_string();
    let cursor = Cursor::start(opts.seed);
    let mut loader = Loader::new(data.dataset, data.encoder.clone(), opts, cursor)?;
    let max_batches = data.cfg.train.eval_max_batches;
    let (mut sums, mut batches) = (EvalSums::default(), 0u64);
    loop {
        if signal.raised() {
            return Ok((sums, true));
        }
        if max_batches > 0 && batches >= max_batches {
            return Ok((sums, false));
        }
        let batch = match loader.next_batch_within(SIGNAL_POLL)? {
            Fetched::Batch(b) => b,
            Fetched::End => return Ok((sums, false)),
            Fetched::Waiting => continue,
        };
        let mut prepared = data.objective.prepare(
            &batch,
            0..batch.rows,
            EVAL_MASK_SEED,
            EVAL_MASK_STEP,
            data.device,
        );
        if data.cfg.train.unpadded {
            prepared = prepared.into_packed()?;
        }
        sums.add(score(&prepared)?);
        batches += 1;
    }
}

/// How often each token id occurs in `split` of the data (every real token of every row, as the
/// loader delivers them), over a vocabulary of `vocab` ids.
pub fn token_counts(data: &EvalData<'_>, split: &str, vocab: usize) -> Result<Vec<u64>, Error> {
    let mut opts = LoaderOptions::eval(&data.cfg.data, 0, 1);
    opts.split = split.to_string();
    let mut loader = Loader::new(data.dataset, data.encoder.clone(), opts, Cursor::start(0))?;
    let mut counts = vec![0u64; vocab];
    while let Some(batch) = loader.next_batch()? {
        for (&id, &real) in batch.input_ids.iter().zip(&batch.attention_mask) {
            if real != 0 {
                let slot = counts.get_mut(id as usize).ok_or_else(|| {
                    Error::Config(format!(
                        "token id {id} in split {split:?} of {} is outside the vocabulary of {vocab}",
                        data.dataset.uri()
                    ))
                })?;
                *slot += 1;
            }
        }
    }
    Ok(counts)
}

/// The unigram model of `counts` (add-one smoothed: `p(t) = (c_t + 1) / (N + V)`) scored on the
/// positions and targets the objective supervises in `split`: the floor any language model must
/// beat, computed by the same code path as the model's own figures.
pub fn evaluate_unigram(
    data: &EvalData<'_>,
    counts: &[u64],
    split: &str,
) -> Result<EvalResult, Error> {
    let total: u64 = counts.iter().sum();
    let denominator = (total + counts.len() as u64) as f64;
    let nll: Vec<f64> = counts
        .iter()
        .map(|&c| -((c + 1) as f64 / denominator).ln())
        .collect();
    let most_frequent = (0..counts.len()).max_by_key(|&i| counts[i]).unwrap_or(0) as i64;
    let comm = Communicator::local();
    let (sums, _) = eval_batches(data, split, &comm, &StopSignal::never(), |p| {
        let Some((_, targets)) = p.token_targets() else {
            return Err(Error::Config(
                "a unigram baseline needs a language-model objective".into(),
            ));
        };
        let targets = Vec::<i64>::try_from(&targets.to_device(Device::Cpu))?;
        let mut s = EvalSums {
            count: targets.len() as f64,
            rows: p
                .mask
                .sum_dim_intlist(&[1i64][..], false, Kind::Int64)
                .gt(0)
                .sum(Kind::Int64)
                .int64_value(&[]) as f64,
            ..EvalSums::default()
        };
        for t in targets {
            s.loss_sum += nll.get(t as usize).copied().unwrap_or(f64::INFINITY);
            s.correct += f64::from(u8::from(t == most_frequent));
        }
        Ok(s)
    })?;
    Ok(EvalResult::from_sums(
        data.objective.kind(),
        sums,
        bytes_per_token(data.dataset, split),
    ))
}

/// A trained network rebuilt from a job config and its saved weights, with its data.
struct LoadedRun {
    device: Device,
    dataset: Dataset,
    encoder: Option<Arc<TextEncoder>>,
    model_cfg: ModelConfig,
    objective: Objective,
    net: WaveNetwork,
}

impl LoadedRun {
    /// The run's data set and objective under `cfg`, for evaluation.
    fn eval_data<'a>(&'a self, cfg: &'a JobConfig) -> EvalData<'a> {
        EvalData {
            dataset: &self.dataset,
            encoder: self.encoder.clone(),
            cfg,
            objective: &self.objective,
            device: self.device,
        }
    }
}

fn load_run(cfg: &JobConfig, weights: &Path) -> Result<LoadedRun, Error> {
    let device = parse_device(&cfg.train.device)?;
    crate::threads::apply(cfg.train.threads, &wave_comm::RankInfo::single());
    let (dataset, encoder) = open_data(cfg)?;
    let model_cfg = resolve_model(cfg, encoder.as_deref(), &dataset)?;
    let objective = build_objective(cfg, encoder.as_deref(), &model_cfg, device)?;
    let mut vs = nn::VarStore::new(device);
    let net = WaveNetwork::new(&vs.root(), &model_cfg)?;
    vs.load(weights)
        .map_err(|e| Error::Io(format!("{}: {e}", weights.display())))?;
    // `net` holds its own handles on the loaded tensors; the store can go.
    Ok(LoadedRun {
        device,
        dataset,
        encoder,
        model_cfg,
        objective,
        net,
    })
}

/// Loads `model.safetensors` of a finished run and evaluates it on `split` of the config's data
/// set (any prepared data set: override `data.uri`).
pub fn evaluate_run(
    cfg: &JobConfig,
    weights: &Path,
    split: &str,
) -> Result<(EvalResult, Params), Error> {
    let run = load_run(cfg, weights)?;
    let data = run.eval_data(cfg);
    let result = evaluate(
        &data,
        &run.net,
        split,
        &Communicator::local(),
        &StopSignal::never(),
    )?
    .ok_or_else(|| Error::Io("evaluation interrupted".into()))?;
    Ok((result, run.model_cfg.param_counts().into()))
}

/// The unigram baseline for a finished run's evaluation on `split`: token frequencies counted in
/// the training split of the data set at `train_uri` (with the run's tokenizer settings).
pub fn unigram_baseline_of_run(
    cfg: &JobConfig,
    weights: &Path,
    split: &str,
    train_uri: &str,
) -> Result<EvalResult, Error> {
    let run = load_run(cfg, weights)?;
    let mut train_cfg = cfg.clone();
    train_cfg.data.uri = train_uri.to_string();
    let (train_set, train_encoder) = open_data(&train_cfg)?;
    let counts = token_counts(
        &EvalData {
            dataset: &train_set,
            encoder: train_encoder,
            cfg: &train_cfg,
            objective: &run.objective,
            device: run.device,
        },
        &cfg.data.train_split,
        run.model_cfg.vocab_size,
    )?;
    evaluate_unigram(&run.eval_data(cfg), &counts, split)
}

/// Inputs and outputs of the first `rows` rows of `split` (evaluation order, no dropout) under
/// the weights in `weights`: what `wave-dist eval --dump-logits` writes so that another
/// implementation (`bench/peer_logits.py`) can be checked against this one. Classification: class
/// logits. Language models: the model inputs (after the fixed evaluation mask), the supervised
/// positions (flat into rows x length), their targets, and the summed loss over them.
pub fn logits_of_run(
    cfg: &JobConfig,
    weights: &Path,
    split: &str,
    rows: usize,
) -> Result<serde_json::Value, Error> {
    let run = load_run(cfg, weights)?;
    let mut opts = LoaderOptions::eval(&cfg.data, 0, 1);
    opts.split = split.to_string();
    let cursor = Cursor::start(opts.seed);
    let mut loader = Loader::new(&run.dataset, run.encoder.clone(), opts, cursor)?;
    let batch = loader
        .next_batch()?
        .ok_or_else(|| Error::Config(format!("split {split:?} is empty")))?;
    let rows = rows.min(batch.rows);
    let p = run
        .objective
        .prepare(&batch, 0..rows, EVAL_MASK_SEED, EVAL_MASK_STEP, run.device);
    let table = |t: &Tensor| -> Result<Vec<Vec<i64>>, Error> {
        let width = t.size()[1] as usize;
        let flat = Vec::<i64>::try_from(&t.to_device(Device::Cpu).flatten(0, -1))?;
        Ok(flat.chunks(width.max(1)).map(<[i64]>::to_vec).collect())
    };
    let mut dump = serde_json::json!({
        "objective": run.objective.kind().name(),
        "ids": table(&p.ids)?,
        "mask": table(&p.mask)?,
    });
    tch::no_grad(|| -> Result<(), Error> {
        match run.objective.kind() {
            ObjectiveKind::Classification => {
                let logits = run
                    .net
                    .classify(&p.ids, &p.mask, None)?
                    .to_kind(Kind::Float)
                    .to_device(Device::Cpu);
                let classes = logits.size().last().copied().unwrap_or(1).max(1) as usize;
                let flat = Vec::<f32>::try_from(&logits.flatten(0, -1))?;
                dump["logits"] = serde_json::json!(flat
                    .chunks(classes)
                    .map(<[f32]>::to_vec)
                    .collect::<Vec<_>>());
            }
            ObjectiveKind::MaskedLm | ObjectiveKind::CausalLm => {
                let (index, targets) = p.token_targets().ok_or_else(|| {
                    Error::Io("a language-model batch without token targets".into())
                })?;
                let sums = run.objective.eval_sums(&run.net, &p)?;
                dump["positions"] =
                    serde_json::json!(Vec::<i64>::try_from(&index.to_device(Device::Cpu))?);
                dump["targets"] =
                    serde_json::json!(Vec::<i64>::try_from(&targets.to_device(Device::Cpu))?);
                dump["loss_sum"] = serde_json::json!(sums.loss_sum);
                dump["count"] = serde_json::json!(sums.count);
            }
        }
        Ok(())
    })?;
    Ok(dump)
}
