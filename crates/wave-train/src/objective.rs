//! What the model learns to predict: the one pluggable piece of the training loop.
//!
//! An [`Objective`] turns a batch into model inputs and targets ([`Objective::prepare`]), counts the
//! units it supervises (labelled rows, or predicted tokens), and computes the summed loss over them
//! ([`Objective::loss_backward`], [`Objective::eval_sums`]). The trainer divides by the *global*
//! count of supervised units, summed over ranks before the division, so ranks holding unequal
//! numbers of masked or real tokens still average correctly.
//!
//! - **Classification**: pooled features → class logits; one unit per labelled row.
//! - **Masked LM** (BERT): `mask_rate` (15%) of the real, non-special tokens are selected; of those
//!   80% become `[MASK]`, 10% a random token, 10% stay. Every choice is drawn from
//!   [`wave_model::noise`] keyed by (seed, step, global sample index, position), so a resumed run and
//!   an N-rank run mask exactly what the uninterrupted 1-rank run masks. Evaluation uses one fixed
//!   mask (seed [`EVAL_MASK_SEED`], step [`EVAL_MASK_STEP`]). The vocabulary head runs only on the
//!   selected positions (gathered first): its cost scales with the masked tokens. So does most of
//!   the last wave layer: its global norms need every token, but its map to real features and its
//!   feed-forward block run on the selected tokens only ([`WaveNetwork::encode_at`]), which at
//!   d = 768 removes about 28% of a masked-LM step's matrix products.
//! - **Causal LM**: the wave layer's norms become prefix norms (position `j` sees tokens `<= j`),
//!   and every real position that has a real successor predicts it. Packed rows are one stream:
//!   documents are joined by `[SEP]` at prepare time, the prefix norms run across the whole row, and
//!   the token after a separator is predicted like any other (GPT-2-style packing).
//!
//! Both token objectives compute the loss in chunks of positions with a split backward pass
//! ([`TokenLoss`]): features are detached, each chunk's logits are built, reduced and
//! back-propagated into the head at once, and the accumulated feature gradient is then sent
//! through the trunk in one pass. Peak memory of the loss is one chunk's `(rows, vocab)` logits,
//! not `batch x length x vocab`.

use std::cell::RefCell;
use std::ops::Range;

use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Reduction, Tensor};
use wave_data::{Batch, IGNORE_LABEL};
use wave_model::noise::{
    below, uniform, STREAM_MLM_ACTION, STREAM_MLM_RANDOM_TOKEN, STREAM_MLM_SELECT,
};
use wave_model::{Head, Packed, SampleNoise, WaveNetwork};

use crate::Error;

/// Seed of the fixed masked-LM evaluation mask (independent of the training seed, so runs with
/// different seeds are evaluated on the same masked positions).
pub const EVAL_MASK_SEED: u64 = 0x5EED_E7A1;
/// "Step" of the fixed masked-LM evaluation mask.
pub const EVAL_MASK_STEP: u64 = u64::MAX;
/// Logits computed at once by the chunked token loss (`rows x vocab`, 16 MiB in fp32), unless
/// `d` rows are more when training (see [`TokenLoss::compute`]): the size of its logits buffer.
const LOSS_CHUNK_LOGITS: i64 = 1 << 22;

/// `train.objective`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ObjectiveKind {
    /// Sequence classification on labelled rows.
    Classification,
    /// BERT-style masked-token prediction.
    MaskedLm,
    /// Next-token prediction with prefix norms.
    CausalLm,
}

impl ObjectiveKind {
    /// The model head this objective trains.
    pub fn head(self) -> Head {
        match self {
            ObjectiveKind::Classification => Head::Classification,
            ObjectiveKind::MaskedLm => Head::MaskedLm,
            ObjectiveKind::CausalLm => Head::CausalLm,
        }
    }

    /// The objective that trains `head`.
    pub fn for_head(head: Head) -> ObjectiveKind {
        match head {
            Head::Classification => ObjectiveKind::Classification,
            Head::MaskedLm => ObjectiveKind::MaskedLm,
            Head::CausalLm => ObjectiveKind::CausalLm,
        }
    }

    /// The name as written in configs.
    pub fn name(self) -> &'static str {
        match self {
            ObjectiveKind::Classification => "classification",
            ObjectiveKind::MaskedLm => "masked_lm",
            ObjectiveKind::CausalLm => "causal_lm",
        }
    }
}

/// The masking rule of masked LM.
#[derive(Debug)]
pub struct MaskRule {
    mask_id: i64,
    vocab: i64,
    /// Sorted ids never selected (the tokenizer's special tokens and padding).
    special: Tensor,
    rate: f64,
}

/// A configured objective (see the module docs).
#[derive(Debug)]
pub enum Objective {
    /// Sequence classification.
    Classification,
    /// Masked LM with its masking rule.
    MaskedLm(MaskRule, TokenLoss),
    /// Causal LM.
    CausalLm(TokenLoss),
}

/// What one evaluated micro-batch adds up to.
#[derive(Clone, Copy, Debug, Default)]
pub struct EvalSums {
    /// Summed cross-entropy (nats) over the supervised units.
    pub loss_sum: f64,
    /// Units whose arg-max prediction is the target.
    pub correct: f64,
    /// Supervised units (labelled rows or predicted tokens).
    pub count: f64,
    /// Rows that are real samples (not padding).
    pub rows: f64,
}

impl EvalSums {
    /// Element-wise sum.
    pub fn add(&mut self, other: EvalSums) {
        self.loss_sum += other.loss_sum;
        self.correct += other.correct;
        self.count += other.count;
        self.rows += other.rows;
    }
}

/// What the loss is computed against.
#[derive(Debug)]
enum Target {
    /// One class label per row `(B,)`; [`IGNORE_LABEL`] rows are skipped.
    Rows(Tensor),
    /// Token targets: flat positions into `(B * T)` and the ids to predict there, both `(N,)`.
    Tokens { index: Tensor, ids: Tensor },
}

/// One micro-batch on the device, ready for the network.
#[derive(Debug)]
pub struct Prepared {
    /// Model input ids `(B, T)` (with masked-LM replacements applied).
    pub ids: Tensor,
    /// 1 for real tokens `(B, T)`.
    pub mask: Tensor,
    /// The real tokens of `ids` alone, when the network runs unpadded ([`Prepared::into_packed`]).
    pub packed: Option<Packed>,
    /// Per-sample keys of this step (dropout masks are drawn from them).
    pub noise: SampleNoise,
    target: Target,
    /// Supervised units in this micro-batch.
    pub count: i64,
}

impl Prepared {
    /// Token positions and target ids of a token objective: flat positions into `(B * T)`, or
    /// indices of the packed tokens once packed.
    pub fn token_targets(&self) -> Option<(&Tensor, &Tensor)> {
        match &self.target {
            Target::Tokens { index, ids } => Some((index, ids)),
            Target::Rows(_) => None,
        }
    }

    /// The same micro-batch for the varlen layout: the network then computes real tokens only
    /// (same results up to rounding, same dropout masks), and token targets address the packed
    /// tokens.
    pub fn into_packed(self) -> Result<Prepared, Error> {
        let packed = Packed::from_padded(&self.ids, &self.mask)?;
        let target = match self.target {
            Target::Tokens { index, ids } => Target::Tokens {
                index: packed.packed_index_of(&index)?,
                ids,
            },
            rows => rows,
        };
        Ok(Prepared {
            packed: Some(packed),
            target,
            ..self
        })
    }

    /// Features `(K, D)` of the tokens at `index` (flat positions into `(B * T)` padded, or
    /// indices of the packed tokens): the network finishes only those.
    fn encode_at(
        &self,
        net: &WaveNetwork,
        index: &Tensor,
        dropout: Option<&SampleNoise>,
    ) -> Result<Tensor, Error> {
        Ok(match &self.packed {
            Some(packed) => net.encode_packed_at(packed, index, dropout)?,
            None => net.encode_at(&self.ids, &self.mask, index, dropout)?,
        })
    }

    /// Class logits `(B, C)`.
    fn classify(&self, net: &WaveNetwork, dropout: Option<&SampleNoise>) -> Result<Tensor, Error> {
        Ok(match &self.packed {
            Some(packed) => net.classify_packed(packed, dropout)?,
            None => net.classify(&self.ids, &self.mask, dropout)?,
        })
    }
}

/// The tensors of rows `rows` of `batch` on `device`: ids and mask `(B, T)`, labels `(B,)`.
fn rows_to_tensors(batch: &Batch, rows: &Range<usize>, device: Device) -> (Tensor, Tensor, Tensor) {
    let (t, n) = (batch.seq_len, rows.len());
    let span = rows.start * t..rows.end * t;
    let shape = [n as i64, t as i64];
    let ids = Tensor::from_slice(&batch.input_ids[span.clone()]).view(shape);
    let mask = Tensor::from_slice(&batch.attention_mask[span]).view(shape);
    let labels = Tensor::from_slice(&batch.labels[rows.clone()]);
    (ids.to(device), mask.to(device), labels.to(device))
}

impl Objective {
    /// Masked LM over a vocabulary of `vocab` ids with `[MASK]` = `mask_id`; `special` ids (and
    /// padding) are never selected; `rate` of the other real tokens are.
    pub fn masked_lm(
        mask_id: u32,
        vocab: usize,
        special: &[u32],
        rate: f64,
        device: Device,
    ) -> Objective {
        let mut ids: Vec<i64> = special.iter().map(|&s| i64::from(s)).collect();
        ids.push(i64::from(mask_id));
        ids.sort_unstable();
        ids.dedup();
        Objective::MaskedLm(
            MaskRule {
                mask_id: i64::from(mask_id),
                vocab: vocab as i64,
                special: Tensor::from_slice(&ids).to(device),
                rate,
            },
            TokenLoss::default(),
        )
    }

    /// Causal LM.
    pub fn causal_lm() -> Objective {
        Objective::CausalLm(TokenLoss::default())
    }

    /// Which objective this is.
    pub fn kind(&self) -> ObjectiveKind {
        match self {
            Objective::Classification => ObjectiveKind::Classification,
            Objective::MaskedLm(..) => ObjectiveKind::MaskedLm,
            Objective::CausalLm(_) => ObjectiveKind::CausalLm,
        }
    }

    /// Inputs and targets of rows `rows` of `batch` at step `step` (training: `seed` is the run's
    /// seed; evaluation: pass [`EVAL_MASK_SEED`] and [`EVAL_MASK_STEP`]).
    pub fn prepare(
        &self,
        batch: &Batch,
        rows: Range<usize>,
        seed: u64,
        step: u64,
        device: Device,
    ) -> Prepared {
        let (ids, mask, labels) = rows_to_tensors(batch, &rows, device);
        let noise = SampleNoise::new(seed, step, &batch.sample_positions[rows], device);
        let t = ids.size()[1];
        let (ids, target) = match self {
            Objective::Classification => (ids, Target::Rows(labels)),
            Objective::CausalLm(_) => {
                // Position j predicts j + 1 wherever both are real tokens.
                let next_real = mask.narrow(1, 1, t - 1).ne(0);
                let flat = Tensor::arange(ids.numel() as i64, (Kind::Int64, device))
                    .view([-1, t])
                    .narrow(1, 0, t - 1);
                let index = flat.masked_select(&next_real);
                let targets = ids.narrow(1, 1, t - 1).masked_select(&next_real);
                (
                    ids,
                    Target::Tokens {
                        index,
                        ids: targets,
                    },
                )
            }
            Objective::MaskedLm(rule, _) => {
                let eligible =
                    mask.ne(0)
                        .logical_and(&Tensor::isin(&ids, &rule.special, true, true));
                let selected = eligible
                    .logical_and(&below(&noise.token_bits(STREAM_MLM_SELECT, t), rule.rate));
                let action = uniform(&noise.token_bits(STREAM_MLM_ACTION, t));
                let random_ids = noise
                    .token_bits(STREAM_MLM_RANDOM_TOKEN, t)
                    .to_kind(Kind::Int64)
                    .bitwise_and(0xFFFF_FFFFi64)
                    .remainder(rule.vocab);
                let to_mask = selected.logical_and(&action.lt(0.8));
                let to_random = selected.logical_and(&action.ge(0.8).logical_and(&action.lt(0.9)));
                let inputs = ids
                    .where_self(&to_mask.logical_not(), &ids.full_like(rule.mask_id))
                    .where_self(&to_random.logical_not(), &random_ids);
                let index = Tensor::arange(ids.numel() as i64, (Kind::Int64, device))
                    .masked_select(&selected.view([-1]));
                let targets = ids.masked_select(&selected);
                (
                    inputs,
                    Target::Tokens {
                        index,
                        ids: targets,
                    },
                )
            }
        };
        let count = match &target {
            Target::Rows(labels) => labels.ne(IGNORE_LABEL).sum(Kind::Int64).int64_value(&[]),
            Target::Tokens { index, .. } => index.numel() as i64,
        };
        Prepared {
            ids,
            mask,
            packed: None,
            noise,
            target,
            count,
        }
    }

    /// Frees what only training steps need (the token loss's logits buffer).
    pub fn release_buffers(&self) {
        if let Ok(loss) = self.tokens() {
            loss.release();
        }
    }

    /// The token loss of a language-model objective.
    fn tokens(&self) -> Result<&TokenLoss, Error> {
        match self {
            Objective::MaskedLm(_, loss) | Objective::CausalLm(loss) => Ok(loss),
            Objective::Classification => Err(Error::Model(wave_model::Error::BadInput(
                "token targets need a language-model objective".into(),
            ))),
        }
    }

    /// Training: forward with dropout, the summed loss over the supervised units, and its
    /// gradient scaled by `scale` (1 / the global unit count) accumulated into the parameters.
    /// Returns the unscaled loss sum.
    pub fn loss_backward(&self, net: &WaveNetwork, p: &Prepared, scale: f64) -> Result<f64, Error> {
        match &p.target {
            Target::Rows(labels) => {
                let logits = p.classify(net, Some(&p.noise))?;
                let loss = logits.to_kind(Kind::Float).cross_entropy_loss::<Tensor>(
                    labels,
                    None,
                    Reduction::Sum,
                    IGNORE_LABEL,
                    0.0,
                );
                (&loss * scale).backward();
                Ok(loss.double_value(&[]))
            }
            Target::Tokens { index, ids } => {
                let features = p.encode_at(net, index, Some(&p.noise))?;
                Ok(self.tokens()?.compute(net, &features, ids, Some(scale))?.0)
            }
        }
    }

    /// Evaluation (no dropout, no gradients): loss sum, correct predictions and units.
    pub fn eval_sums(&self, net: &WaveNetwork, p: &Prepared) -> Result<EvalSums, Error> {
        tch::no_grad(|| {
            let rows = p
                .mask
                .sum_dim_intlist(&[1i64][..], false, Kind::Int64)
                .gt(0);
            let rows = rows.sum(Kind::Int64).int64_value(&[]) as f64;
            let (loss_sum, correct) = match &p.target {
                Target::Rows(labels) => {
                    let logits = p.classify(net, None)?.to_kind(Kind::Float);
                    let loss = logits
                        .cross_entropy_loss::<Tensor>(
                            labels,
                            None,
                            Reduction::Sum,
                            IGNORE_LABEL,
                            0.0,
                        )
                        .double_value(&[]);
                    let correct = logits
                        .argmax(-1, false)
                        .eq_tensor(labels)
                        .logical_and(&labels.ne(IGNORE_LABEL))
                        .sum(Kind::Int64)
                        .int64_value(&[]);
                    (loss, correct)
                }
                Target::Tokens { index, ids } => {
                    let features = p.encode_at(net, index, None)?;
                    self.tokens()?.compute(net, &features, ids, None)?
                }
            };
            Ok(EvalSums {
                loss_sum,
                correct: correct as f64,
                count: p.count as f64,
                rows,
            })
        })
    }
}

/// The cross-entropy of the vocabulary head over gathered tokens, in chunks of tokens, with the
/// tied projection's backward pass written out.
///
/// Autograd would build, per chunk, the logits, their log-softmax, the gradient of each and a
/// fresh `(V, D)` gradient for the embedding table, then add that into the table's `.grad`: five
/// buffers of tens of MB, each mapped and page-faulted anew every step. Here the chunk's logits
/// go into one buffer kept from step to step, become `softmax - one_hot` in place, and the
/// table's gradient is accumulated into its `.grad` by one `addmm_`. Autograd still runs the
/// head's transform and layer norm and, once at the end, the trunk.
#[derive(Debug, Default)]
pub struct TokenLoss {
    logits: RefCell<Option<Tensor>>,
}

impl TokenLoss {
    /// Cross-entropy of the supervised tokens' features `gathered` `(K, D)` against `targets`
    /// `(K,)`, summed. With `scale`, back-propagates `scale * loss` into the head, the embedding
    /// table and, through `gathered`, the trunk; without, only evaluates. Returns the loss sum and
    /// the number of arg-max hits (counted only when evaluating).
    pub fn compute(
        &self,
        net: &WaveNetwork,
        gathered: &Tensor,
        targets: &Tensor,
        scale: Option<f64>,
    ) -> Result<(f64, i64), Error> {
        let (n, d) = match gathered.size().as_slice() {
            &[n, d] => (n, d),
            other => {
                return Err(Error::Model(wave_model::Error::BadInput(format!(
                    "the token loss needs gathered features (tokens, d), got {other:?}"
                ))))
            }
        };
        if n == 0 {
            return Ok((0.0, 0));
        }
        let projection = net.lm_projection()?;
        let vocab = projection.table.size()[0];
        // Training: at least d tokens per chunk, since each chunk's backward is a pass over the
        // whole (V, d) gradient of the table, and a smaller logits chunk saves less than it costs.
        let chunk = match scale {
            Some(_) => (LOSS_CHUNK_LOGITS / vocab).max(d),
            None => (LOSS_CHUNK_LOGITS / vocab).max(1),
        }
        .min(n);
        let buffer = self.buffer(chunk * vocab, projection.table.device());
        // Backward through the head chunk by chunk into a detached copy of the features, then
        // once through the trunk.
        let detached = match scale {
            Some(_) => gathered.detach().set_requires_grad(true),
            None => gathered.shallow_clone(),
        };
        let (mut table_grad, mut bias_grad) = match scale {
            Some(_) => (dense_grad(projection.table), dense_grad(projection.bias)),
            None => (Tensor::new(), Tensor::new()),
        };
        let (mut loss_sum, mut correct) = (0.0, 0i64);
        let mut start = 0;
        while start < n {
            let len = chunk.min(n - start);
            let hidden = net.lm_hidden(&detached.narrow(0, start, len))?;
            let target = targets.narrow(0, start, len);
            let mut logits = buffer.narrow(0, 0, len * vocab).view([len, vocab]);
            let hidden_grad = tch::no_grad(|| {
                let h = hidden.detach();
                projection.logits_into(&logits, &h);
                let lse = logits.logsumexp([-1i64].as_slice(), false);
                let picked = logits.gather(1, &target.unsqueeze(1), false).squeeze_dim(1);
                loss_sum += (&lse - picked).sum(Kind::Double).double_value(&[]);
                let Some(s) = scale else {
                    correct += logits
                        .argmax(-1, false)
                        .eq_tensor(&target)
                        .sum(Kind::Int64)
                        .int64_value(&[]);
                    return None;
                };
                // d(loss)/d(logits) = softmax - one_hot, in place; times `s` from here on.
                let _ = logits.g_sub_(&lse.unsqueeze(1)).exp_();
                let minus_one = Tensor::full([len, 1], -1.0, (Kind::Float, logits.device()));
                let _ = logits.scatter_add_(1, &target.unsqueeze(1), &minus_one);
                let _ = bias_grad
                    .g_add_(&(logits.sum_dim_intlist([0i64].as_slice(), false, Kind::Float) * s));
                let alpha = s * projection.scale;
                projection.add_product(&mut table_grad, &logits.tr(), &h, alpha);
                Some(projection.product(&logits, projection.table) * alpha)
            });
            if let Some(grad) = hidden_grad {
                // Through the head's transform and norm, into their weights and `detached`.
                (hidden * grad).sum(Kind::Float).backward();
            }
            start += len;
        }
        if scale.is_some() {
            // d(loss)/d(features) now sits in detached.grad(); a surrogate whose gradient with
            // respect to `gathered` is exactly that carries it through the trunk.
            (gathered * detached.grad()).sum(Kind::Float).backward();
        }
        Ok((loss_sum, correct))
    }

    /// Frees the logits buffer (the next call allocates one again).
    pub fn release(&self) {
        self.logits.borrow_mut().take();
    }

    /// The logits buffer, at least `numel` fp32 values on `device`.
    fn buffer(&self, numel: i64, device: Device) -> Tensor {
        let mut slot = self.logits.borrow_mut();
        match slot.as_ref() {
            Some(t) if t.numel() as i64 >= numel && t.device() == device => t.shallow_clone(),
            _ => {
                let t = Tensor::empty([numel], (Kind::Float, device));
                *slot = Some(t.shallow_clone());
                t
            }
        }
    }
}

/// The `.grad` of a trainable tensor, created (dense, zero) where no backward pass has reached
/// it yet, for a loss that accumulates into it in place.
fn dense_grad(param: &Tensor) -> Tensor {
    if !param.grad().defined() {
        // What autograd does on a first backward pass: a zero-weighted sum creates the gradient.
        (param.sum(Kind::Float) * 0.0).backward();
    }
    param.grad()
}
