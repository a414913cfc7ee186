//! AdamW on plain tensors (so its state can be saved and restored bit-exactly), gradient
//! clipping and the learning-rate schedule.

use tch::{Kind, Tensor};

use crate::config::{Schedule, TrainConfig};

/// Elements per slice of the update. Each of the update's nine element-wise passes over a
/// whole embedding-sized tensor would stream it through memory (tens of MB per operand);
/// slice by slice, the four operands and the temporary (5 x 256 KiB) stay in cache between
/// the passes. Every element goes through the same operations either way, so the result is
/// the same bits (a multiple of every vector width, so vector bodies and tails fall alike).
const SLICE: i64 = 1 << 16;

/// One trainable parameter with its AdamW moments.
struct Slot {
    name: String,
    param: Tensor,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
    decay: bool,
}

/// AdamW (Loshchilov & Hutter) with PyTorch's update rule and bias correction.
pub struct AdamW {
    slots: Vec<Slot>,
    beta1: f64,
    beta2: f64,
    eps: f64,
    weight_decay: f64,
    step: u64,
    /// One reusable buffer of [`SLICE`] elements for the update's temporaries
    /// (`grad * (1 - beta2)`, then the denominator).
    scratch: Option<Tensor>,
}

impl AdamW {
    /// Takes named parameters (sorted by the caller for a stable order). Weight decay applies to
    /// tensors of rank >= 2 (matrices, embeddings), as in nanoGPT, not to biases or norm scales.
    pub fn new(params: Vec<(String, Tensor)>, cfg: &TrainConfig) -> AdamW {
        let slots = params
            .into_iter()
            .map(|(name, param)| Slot {
                decay: param.dim() >= 2,
                exp_avg: param.zeros_like(),
                exp_avg_sq: param.zeros_like(),
                name,
                param,
            })
            .collect();
        AdamW {
            slots,
            beta1: cfg.beta1,
            beta2: cfg.beta2,
            eps: cfg.adam_eps,
            weight_decay: cfg.weight_decay,
            step: 0,
            scratch: None,
        }
    }

    /// Optimizer steps taken so far.
    pub fn steps(&self) -> u64 {
        self.step
    }

    /// Sets the step counter (bias correction) of a state whose moments arrived another way
    /// (broadcast from rank 0 after a resume).
    pub fn set_steps(&mut self, step: u64) {
        self.step = step;
    }

    /// Named parameters, in optimizer order.
    pub fn named_params(&self) -> Vec<(String, Tensor)> {
        self.slots
            .iter()
            .map(|s| (s.name.clone(), s.param.shallow_clone()))
            .collect()
    }

    /// One update with learning rate `lr` from the gradients currently held by the parameters.
    pub fn step(&mut self, lr: f64) {
        self.step += 1;
        let t = self.step as i32;
        let rule = Rule {
            beta1: self.beta1,
            beta2: self.beta2,
            eps: self.eps,
            bias2_sqrt: (1.0 - self.beta2.powi(t)).sqrt(),
            step_size: lr / (1.0 - self.beta1.powi(t)),
        };
        let decayed = 1.0 - lr * self.weight_decay;
        let Some(first) = self.slots.first() else {
            return;
        };
        let scratch = self.scratch.get_or_insert_with(|| {
            Tensor::empty([SLICE], (first.param.kind(), first.param.device()))
        });
        tch::no_grad(|| {
            for s in &mut self.slots {
                let grad = s.param.grad();
                if !grad.defined() {
                    continue;
                }
                let decay = (s.decay && self.weight_decay > 0.0).then_some(decayed);
                let operands = [&s.param, &grad, &s.exp_avg, &s.exp_avg_sq];
                let sliceable = scratch.kind() == s.param.kind()
                    && scratch.device() == s.param.device()
                    && operands.iter().all(|t| t.is_contiguous());
                if !sliceable {
                    let temp = s.param.empty_like();
                    rule.apply(&s.param, &grad, &s.exp_avg, &s.exp_avg_sq, &temp, decay);
                    continue;
                }
                let [param, grad, exp_avg, exp_avg_sq] = operands.map(|t| t.view([-1]));
                let numel = param.numel() as i64;
                let mut start = 0;
                while start < numel {
                    let len = SLICE.min(numel - start);
                    let [p, g, m, v] =
                        [&param, &grad, &exp_avg, &exp_avg_sq].map(|t| t.narrow(0, start, len));
                    rule.apply(&p, &g, &m, &v, &scratch.narrow(0, 0, len), decay);
                    start += len;
                }
            }
        });
    }

    /// Frees the gradients' memory once no step follows: each `.grad` becomes an empty tensor
    /// (a later backward pass into it would fail on its shape).
    pub fn release_gradients(&mut self) {
        for s in &mut self.slots {
            let mut grad = s.param.grad();
            if grad.defined() {
                let _ = grad.set_();
            }
        }
        self.scratch = None;
    }

    /// Clears all gradients.
    pub fn zero_grad(&mut self) {
        for s in &mut self.slots {
            let mut grad = s.param.grad();
            if grad.defined() {
                let _ = grad.detach_().zero_();
            }
        }
    }

    /// Scales gradients so their global L2 norm is at most `max_norm` (0 = no clipping).
    /// Returns the norm before clipping.
    pub fn clip_grad_norm(&mut self, max_norm: f64) -> f64 {
        let grads: Vec<Tensor> = self
            .slots
            .iter()
            .map(|s| s.param.grad())
            .filter(|g| g.defined())
            .collect();
        if grads.is_empty() {
            return 0.0;
        }
        let norm = tch::no_grad(|| {
            let norms: Vec<Tensor> = grads
                .iter()
                .map(|g| g.norm().to_kind(Kind::Double))
                .collect();
            Tensor::stack(&norms, 0).norm().double_value(&[])
        });
        if max_norm > 0.0 && norm > max_norm {
            let scale = max_norm / (norm + 1e-6);
            tch::no_grad(|| {
                for mut g in grads {
                    let _ = g.g_mul_scalar_(scale);
                }
            });
        }
        norm
    }

    /// Named state tensors (`<param>.exp_avg`, `<param>.exp_avg_sq`) plus the step count, for
    /// checkpoints.
    pub fn state(&self) -> (Vec<(String, Tensor)>, u64) {
        let mut out = Vec::with_capacity(2 * self.slots.len());
        for s in &self.slots {
            out.push((format!("{}.exp_avg", s.name), s.exp_avg.shallow_clone()));
            out.push((
                format!("{}.exp_avg_sq", s.name),
                s.exp_avg_sq.shallow_clone(),
            ));
        }
        (out, self.step)
    }

    /// Restores what [`AdamW::state`] returned; every slot must be present with its shape.
    pub fn load_state(&mut self, tensors: &[(String, Tensor)], step: u64) -> Result<(), String> {
        let find = |name: &str| tensors.iter().find(|(n, _)| n == name).map(|(_, t)| t);
        for s in &mut self.slots {
            for (suffix, dst) in [
                ("exp_avg", &mut s.exp_avg),
                ("exp_avg_sq", &mut s.exp_avg_sq),
            ] {
                let key = format!("{}.{suffix}", s.name);
                let src = find(&key).ok_or_else(|| format!("optimizer state lacks {key}"))?;
                if src.size() != dst.size() {
                    return Err(format!(
                        "optimizer state {key}: shape {:?}, model has {:?}",
                        src.size(),
                        dst.size()
                    ));
                }
                tch::no_grad(|| dst.copy_(src));
            }
        }
        self.step = step;
        Ok(())
    }
}

/// The update of one optimizer step, applied to a whole tensor or to one slice of it.
struct Rule {
    beta1: f64,
    beta2: f64,
    eps: f64,
    bias2_sqrt: f64,
    step_size: f64,
}

impl Rule {
    /// Updates `param`, `exp_avg` and `exp_avg_sq` in place from `grad`, as torch.optim.AdamW's
    /// single-tensor path does: `decay` is the weight-decay factor `1 - lr * wd` where it applies;
    /// `temp` (same shape) holds the temporaries, so no pass allocates.
    fn apply(
        &self,
        param: &Tensor,
        grad: &Tensor,
        exp_avg: &Tensor,
        exp_avg_sq: &Tensor,
        temp: &Tensor,
        decay: Option<f64>,
    ) {
        let (mut param, mut exp_avg, mut exp_avg_sq) = (
            param.shallow_clone(),
            exp_avg.shallow_clone(),
            exp_avg_sq.shallow_clone(),
        );
        if let Some(factor) = decay {
            let _ = param.g_mul_scalar_(factor);
        }
        let _ = exp_avg.lerp_(grad, 1.0 - self.beta1);
        let scaled = grad.mul_scalar_out(temp, 1.0 - self.beta2);
        let _ = exp_avg_sq.g_mul_scalar_(self.beta2).addcmul_(grad, &scaled);
        // param -= step_size * exp_avg / (sqrt(exp_avg_sq / bias2) + eps), with the negative
        // step folded into the denominator so addcdiv_ can run in place.
        let mut denom = exp_avg_sq.sqrt_out(temp);
        let _ = denom
            .g_div_scalar_(self.bias2_sqrt)
            .g_add_scalar_(self.eps)
            .g_div_scalar_(-self.step_size);
        let _ = param.addcdiv_(&exp_avg, &denom);
    }
}

/// Learning rate at optimizer step `step` (0-based) of `total` steps: linear warmup to `lr`
/// over `warmup_steps`, then the configured decay to `min_lr` at the last step. A pure function.
pub fn lr_at(cfg: &TrainConfig, step: u64, total: u64) -> f64 {
    if step < cfg.warmup_steps {
        return cfg.lr * (step + 1) as f64 / cfg.warmup_steps as f64;
    }
    let span = total.saturating_sub(cfg.warmup_steps).max(1) as f64;
    let progress = ((step - cfg.warmup_steps) as f64 / span).min(1.0);
    let ratio = match cfg.schedule {
        Schedule::Constant => 1.0,
        Schedule::Linear => 1.0 - progress,
        Schedule::Cosine => 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()),
    };
    cfg.min_lr + (cfg.lr - cfg.min_lr) * ratio
}
