//! Layers, heads and the whole network.

use tch::nn::{self, Module};
use tch::{Device, Kind, Tensor};

use crate::noise::{dropout_stream, SampleNoise};
use crate::wave::{combine, imaginary_part, modulation_magnitude};
use crate::{Error, Head, Layout, Mode, ModelConfig, Packed, Pooling, PositionEncoding, ToReal};

/// One wave layer: two projections → complex representation → combination → real features →
/// `LayerNorm(h + FFN(h))`.
#[derive(Debug)]
struct WaveLayer {
    proj_u: nn::Linear,
    proj_v: nn::Linear,
    to_real: Option<nn::Linear>,
    ffn_in: nn::Linear,
    ffn_out: nn::Linear,
    norm: nn::LayerNorm,
}

/// A linear layer initialised as PyTorch's `nn.Linear` is: weight and bias uniform in
/// ±1/sqrt(fan_in). tch's default weight init is Kaiming-uniform with the ReLU gain,
/// ±sqrt(6/fan_in), 2.45x wider: the same model then starts from other logits than in PyTorch
/// (`bench/results/shuffle_accuracy.md` measures what that costs in accuracy).
fn linear<'a>(p: impl std::borrow::Borrow<nn::Path<'a>>, fan_in: i64, fan_out: i64) -> nn::Linear {
    let bound = 1.0 / (fan_in as f64).sqrt();
    let uniform = nn::Init::Uniform {
        lo: -bound,
        up: bound,
    };
    nn::linear(
        p,
        fan_in,
        fan_out,
        nn::LinearConfig {
            ws_init: uniform,
            bs_init: Some(uniform),
            bias: true,
        },
    )
}

impl WaveLayer {
    fn new(p: &nn::Path, cfg: &ModelConfig) -> WaveLayer {
        let d = cfg.d_model as i64;
        let hidden = cfg.ffn_hidden() as i64;
        WaveLayer {
            proj_u: linear(p / "proj_u", d, d),
            proj_v: linear(p / "proj_v", d, d),
            to_real: match cfg.to_real {
                ToReal::Concat => Some(linear(p / "to_real", 2 * d, d)),
                ToReal::Magnitude => None,
            },
            ffn_in: linear(p / "ffn_in", d, hidden),
            ffn_out: linear(p / "ffn_out", hidden, d),
            norm: nn::layer_norm(p / "norm", vec![d], Default::default()),
        }
    }

    /// `x`: `(B, T, D)` padded or `(N, D)` packed, as `layout` says, in the residual kind
    /// (fp32). Returns the same shape and kind; matrix products run in `compute`.
    fn forward(&self, x: &Tensor, layout: Layout, cfg: &ModelConfig, compute: Kind) -> Tensor {
        let (u, v) = self.variants(x, layout, compute);
        if per_input_features(cfg) {
            // The magnitude after modulation is G_u * G_v, the same for every token of an input:
            // run the feed-forward block once per input instead of once per token. This
            // halves the matrix products of the paper's best classifier, with identical outputs.
            let h = modulation_magnitude(&u, &v, layout, cfg.eps).to_kind(x.kind());
            let out = self.norm.forward(&(&h + self.ffn(&h, compute)));
            return layout.to_tokens(&out, x);
        }
        let causal = cfg.head == Head::CausalLm;
        let s_u = imaginary_part(&u, layout, causal, cfg.eps);
        let s_v = imaginary_part(&v, layout, causal, cfg.eps);
        self.per_token(&u, &s_u, &v, &s_v, cfg, compute, x.kind())
    }

    /// [`WaveLayer::forward`] of the tokens at flat indices `at` alone, `(K, D)`: the global
    /// norms need every token, but what follows them is per token, so the combination, the map
    /// to real features, the feed-forward block and the layer norm run on K rows instead of all.
    fn forward_at(
        &self,
        x: &Tensor,
        layout: Layout,
        cfg: &ModelConfig,
        compute: Kind,
        at: &Tensor,
    ) -> Tensor {
        if per_input_features(cfg) {
            return layout.gather(&self.forward(x, layout, cfg, compute), at);
        }
        let (u, v) = self.variants(x, layout, compute);
        let causal = cfg.head == Head::CausalLm;
        let s_u = imaginary_part(&u, layout, causal, cfg.eps);
        let s_v = imaginary_part(&v, layout, causal, cfg.eps);
        let [u, s_u, v, s_v] = [&u, &s_u, &v, &s_v].map(|t| layout.gather(t, at));
        self.per_token(&u, &s_u, &v, &s_v, cfg, compute, x.kind())
    }

    /// The two variants `u`, `v` of `x`. Masked after the projection: the bias would otherwise
    /// put padding into the norms.
    fn variants(&self, x: &Tensor, layout: Layout, compute: Kind) -> (Tensor, Tensor) {
        (
            layout.mask(project(&self.proj_u, x, compute)),
            layout.mask(project(&self.proj_v, x, compute)),
        )
    }

    /// `FFN(h)`, back in `h`'s kind.
    fn ffn(&self, h: &Tensor, compute: Kind) -> Tensor {
        let inner = project(&self.ffn_in, h, compute).gelu("none");
        project(&self.ffn_out, &inner, compute).to_kind(h.kind())
    }

    /// Combination, real features and `LayerNorm(h + FFN(h))` of tokens with their variants and
    /// imaginary parts (any leading shape), in the residual kind `kind`.
    #[allow(clippy::too_many_arguments)]
    fn per_token(
        &self,
        u: &Tensor,
        s_u: &Tensor,
        v: &Tensor,
        s_v: &Tensor,
        cfg: &ModelConfig,
        compute: Kind,
        kind: Kind,
    ) -> Tensor {
        let (re, im) = combine(cfg.mode, u, s_u, v, s_v);
        let h = match &self.to_real {
            Some(linear) => project(linear, &Tensor::cat(&[re, im], -1), compute).to_kind(kind),
            None => (re.square() + im.square() + cfg.eps).sqrt().to_kind(kind),
        };
        // The residual sum and the layer norm stay in the residual kind.
        self.norm.forward(&(&h + self.ffn(&h, compute)))
    }
}

/// Whether a layer's output is one row per input (the magnitude after a full-sequence
/// modulation, see [`WaveLayer::forward`]) rather than per token.
fn per_input_features(cfg: &ModelConfig) -> bool {
    cfg.mode == Mode::Modulation && cfg.to_real == ToReal::Magnitude && cfg.head != Head::CausalLm
}

/// `t` cast to `compute` when that is bfloat16; otherwise `t` itself (fp32, and
/// the f64 of tests compute in the weights' own kind).
fn in_compute(t: &Tensor, compute: Kind) -> Tensor {
    match compute {
        Kind::BFloat16 => t.to_kind(compute),
        _ => t.shallow_clone(),
    }
}

/// `layer(x)` with its matrix product in `compute`: for bfloat16 the layer's
/// (fp32 master) weights and the input are cast for the product, so gradients flow back into
/// the fp32 weights; otherwise it is `layer.forward(x)`.
fn project(layer: &nn::Linear, x: &Tensor, compute: Kind) -> Tensor {
    match compute {
        Kind::BFloat16 => in_compute(x, compute).linear(
            &in_compute(&layer.ws, compute),
            layer.bs.as_ref().map(|b| in_compute(b, compute)),
        ),
        _ => layer.forward(x),
    }
}

/// Sinusoidal table `(n, d)` of Vaswani et al.
fn sinusoidal_table(n: i64, d: i64, device: tch::Device) -> Tensor {
    let pos = Tensor::arange(n, (Kind::Float, device)).unsqueeze(1);
    let i = Tensor::arange(d, (Kind::Float, device));
    // Pairs of features share a frequency: 10000^(-2 floor(i/2) / d).
    let exponent = (i.divide_scalar_mode(2.0, "floor") * 2.0) / (d as f64);
    let inv_freq = (exponent * -(10000f64.ln())).exp().unsqueeze(0);
    let angles = pos * inv_freq;
    let even = Tensor::arange(d, (Kind::Int64, device)).remainder(2).eq(0);
    angles.sin().where_self(&even, &angles.cos())
}

#[derive(Debug)]
enum Position {
    None,
    Learned(nn::Embedding),
    Sinusoidal(Tensor),
}

#[derive(Debug)]
enum OutputHead {
    Classifier(nn::Linear),
    /// Transform, then logits against the (tied) token embedding plus a bias.
    Tokens {
        transform: nn::Linear,
        norm: nn::LayerNorm,
        bias: Tensor,
    },
}

/// The tied output projection of a language-model head: `logits = hidden E^T * scale + bias`.
#[derive(Debug)]
pub struct LmProjection<'a> {
    /// The token embedding table `E` `(V, D)` (a trainable variable, fp32).
    pub table: &'a Tensor,
    /// The output bias `(V,)` (a trainable variable).
    pub bias: &'a Tensor,
    /// `1 / sqrt(d_model)`.
    pub scale: f64,
    /// The kind the product runs in (see [`WaveNetwork::set_compute_kind`]).
    pub compute: Kind,
}

impl LmProjection<'_> {
    /// `a @ b` with `a` and `b` cast to the compute kind, returned in fp32.
    pub fn product(&self, a: &Tensor, b: &Tensor) -> Tensor {
        in_compute(a, self.compute)
            .mm(&in_compute(b, self.compute))
            .to_kind(Kind::Float)
    }

    /// `out += a @ (alpha * b)` for fp32 `out`, the product in the compute kind (pass the
    /// smaller operand as `b`: it is the one scaled). In fp32 this is one `addmm_` into `out`,
    /// without a temporary of `out`'s size.
    pub fn add_product(&self, out: &mut Tensor, a: &Tensor, b: &Tensor, alpha: f64) {
        let b = b * alpha;
        match self.compute {
            Kind::BFloat16 => {
                let _ = out.g_add_(&self.product(a, &b));
            }
            _ => {
                let _ = out.addmm_(a, &b);
            }
        }
    }

    /// `bias + (scale * hidden) @ table^T`: the logits `(K, V)` of hidden states `(K, D)`, with
    /// gradients (in the kind of `hidden` for fp32 products, fp32 for bfloat16 ones).
    pub fn logits(&self, hidden: &Tensor) -> Tensor {
        let hidden = hidden * self.scale;
        match self.compute {
            Kind::BFloat16 => self.product(&hidden, &self.table.tr()) + self.bias,
            _ => self.bias.addmm(&hidden, &self.table.tr()),
        }
    }

    /// [`LmProjection::logits`] written into fp32 `out` `(K, V)` (in fp32 without a temporary),
    /// without gradients.
    pub fn logits_into(&self, out: &Tensor, hidden: &Tensor) {
        let hidden = hidden * self.scale;
        match self.compute {
            Kind::BFloat16 => {
                let mut out = out.shallow_clone();
                out.copy_(&self.product(&hidden, &self.table.tr()));
                let _ = out.g_add_(self.bias);
            }
            _ => {
                let _ = self.bias.addmm_out(out, &hidden, &self.table.tr());
            }
        }
    }
}

/// Name of the token embedding table among the variables of a network built at the root of a
/// `VarStore` (`vocab x d`; its gradient is row-sparse unless a tied language-model head uses
/// the whole table).
pub const TOKEN_EMBEDDING: &str = "token_embedding.weight";

/// A Wave Network: embedding, position encoding, stacked wave layers, one head.
///
/// Every entry point exists for padded `(B, T)` inputs with a mask and for the varlen layout
/// ([`Packed`]: real tokens only, see [`crate::packed`]); both give the same outputs up to
/// rounding, with the same dropout masks. On the CPU the token embedding produces a sparse
/// (row) gradient, which is accumulated into a dense `.grad` when one exists: the backward pass
/// then touches only the rows the batch used instead of zeroing and adding the whole
/// `vocab x d` table. On CUDA it stays dense, whose backward kernel is deterministic.
#[derive(Debug)]
pub struct WaveNetwork {
    cfg: ModelConfig,
    compute: Kind,
    token_embedding: nn::Embedding,
    position: Position,
    layers: Vec<WaveLayer>,
    head: OutputHead,
}

impl WaveNetwork {
    /// Builds the network's variables under `p` (validates `cfg` first).
    pub fn new(p: &nn::Path, cfg: &ModelConfig) -> Result<WaveNetwork, Error> {
        cfg.validate()?;
        let d = cfg.d_model as i64;
        // PyTorch's nn.Embedding default init, N(0, 1), so the Python peer in bench/ matches.
        let emb_cfg = nn::EmbeddingConfig {
            ws_init: nn::Init::Randn {
                mean: 0.0,
                stdev: 1.0,
            },
            ..Default::default()
        };
        let token_embedding = nn::embedding(
            p / "token_embedding",
            cfg.vocab_size as i64,
            d,
            nn::EmbeddingConfig {
                sparse: p.device() == Device::Cpu,
                ..emb_cfg
            },
        );
        let position = match cfg.position {
            PositionEncoding::None => Position::None,
            PositionEncoding::Learned => Position::Learned(nn::embedding(
                p / "position_embedding",
                cfg.max_positions as i64,
                d,
                emb_cfg,
            )),
            PositionEncoding::Sinusoidal => {
                Position::Sinusoidal(sinusoidal_table(cfg.max_positions as i64, d, p.device()))
            }
        };
        let layers = (0..cfg.n_layers)
            .map(|i| WaveLayer::new(&(p / "layers" / i), cfg))
            .collect();
        let head = match cfg.head {
            Head::Classification => {
                OutputHead::Classifier(linear(p / "classifier", d, cfg.num_classes as i64))
            }
            Head::MaskedLm | Head::CausalLm => {
                let hp = p / "lm_head";
                OutputHead::Tokens {
                    transform: linear(&hp / "transform", d, d),
                    norm: nn::layer_norm(&hp / "norm", vec![d], Default::default()),
                    bias: hp.zeros("bias", &[cfg.vocab_size as i64]),
                }
            }
        };
        Ok(WaveNetwork {
            cfg: cfg.clone(),
            compute: Kind::Float,
            token_embedding,
            position,
            layers,
            head,
        })
    }

    /// The configuration the network was built from.
    pub fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    /// Runs the matrix products in `kind`: `Float` (the default) or `BFloat16`. Mixed precision
    /// as the GPU wants it: weights, optimizer state, the residual stream, the wave norm block
    /// (sums of squares, see [`crate::wave`]), layer norms and the loss stay fp32; only the
    /// products' inputs are cast, so gradients reach the fp32 master weights.
    pub fn set_compute_kind(&mut self, kind: Kind) -> Result<(), Error> {
        match kind {
            Kind::Float | Kind::BFloat16 => {
                self.compute = kind;
                Ok(())
            }
            other => Err(Error::BadInput(format!(
                "matrix products run in Float or BFloat16, not {other:?}"
            ))),
        }
    }

    /// The kind the matrix products run in.
    pub fn compute_kind(&self) -> Kind {
        self.compute
    }

    fn check_inputs(&self, ids: &Tensor, mask: &Tensor) -> Result<(), Error> {
        let (shape, mshape) = (ids.size(), mask.size());
        if shape.len() != 2 || shape != mshape {
            return Err(Error::BadInput(format!(
                "ids {shape:?} and mask {mshape:?} must both be (batch, tokens)"
            )));
        }
        self.check_length(shape[1])
    }

    fn check_length(&self, tokens: i64) -> Result<(), Error> {
        if self.cfg.position != PositionEncoding::None && tokens as usize > self.cfg.max_positions {
            return Err(Error::BadInput(format!(
                "{tokens} tokens exceed model.max_positions = {}",
                self.cfg.max_positions
            )));
        }
        Ok(())
    }

    fn check_noise(dropout: Option<&SampleNoise>, rows: i64) -> Result<(), Error> {
        match dropout {
            Some(noise) if noise.rows() != rows => Err(Error::BadInput(format!(
                "dropout keys for {} samples, batch has {rows}",
                noise.rows()
            ))),
            _ => Ok(()),
        }
    }

    /// Token embedding plus the position encoding at `positions` (`(T,)`, broadcast over the
    /// rows of padded ids `(B, T)`, or `(N,)` alongside packed ids `(N,)`).
    fn embed(&self, ids: &Tensor, positions: &Tensor) -> Tensor {
        let x = self.token_embedding.forward(ids);
        match &self.position {
            Position::None => x,
            Position::Learned(table) => x + table.forward(positions),
            Position::Sinusoidal(table) => {
                let kind = x.kind();
                x + table.index_select(0, positions).to_kind(kind)
            }
        }
    }

    /// The stacked layers over embedded tokens `x` laid out as `layout`: features of every
    /// token, or with `at` only of the tokens at those flat indices, `(K, D)` (the last layer then
    /// finishes only those tokens, see [`WaveLayer::forward_at`]).
    fn trunk(
        &self,
        x: Tensor,
        layout: Layout,
        dropout: Option<&SampleNoise>,
        at: Option<&Tensor>,
    ) -> Tensor {
        let mut x = layout.mask(x);
        let last = self.layers.len().checked_sub(1);
        let p = self.cfg.dropout;
        for (l, layer) in self.layers.iter().enumerate() {
            if let (Some(at), true) = (at, Some(l) == last) {
                let out = layer.forward_at(&x, layout, &self.cfg, self.compute, at);
                let out = match dropout {
                    Some(noise) => layout.dropout_at(noise, &out, p, dropout_stream(l), at),
                    None => out,
                };
                return layout.mask_at(layout.gather(&x, at) + out, at);
            }
            let out = layer.forward(&x, layout, &self.cfg, self.compute);
            let out = match dropout {
                Some(noise) => layout.dropout(noise, &out, p, dropout_stream(l)),
                None => out,
            };
            x = layout.mask(&x + out);
        }
        match at {
            Some(at) => layout.mask_at(layout.gather(&x, at), at),
            None => x,
        }
    }

    /// Token features `(B, T, D)` for ids `(B, T)` (int64) and mask `(B, T)` (1 = real token).
    /// `dropout`: the step's per-sample keys when training (masks are drawn from them, see
    /// [`crate::noise`]); `None` for inference.
    pub fn encode(
        &self,
        ids: &Tensor,
        mask: &Tensor,
        dropout: Option<&SampleNoise>,
    ) -> Result<Tensor, Error> {
        self.run_padded(ids, mask, dropout, None)
    }

    fn run_padded(
        &self,
        ids: &Tensor,
        mask: &Tensor,
        dropout: Option<&SampleNoise>,
        at: Option<&Tensor>,
    ) -> Result<Tensor, Error> {
        self.check_inputs(ids, mask)?;
        Self::check_noise(dropout, ids.size()[0])?;
        let positions = Tensor::arange(ids.size()[1], (Kind::Int64, ids.device()));
        let x = self.embed(ids, &positions);
        let m = mask.to_kind(x.kind()).unsqueeze(-1);
        Ok(self.trunk(x, Layout::Padded(&m), dropout, at))
    }

    /// Token features `(N, D)` of the packed tokens (the varlen layout): equal, token for token,
    /// to [`WaveNetwork::encode`] of the padded batch they were packed from.
    pub fn encode_packed(
        &self,
        packed: &Packed,
        dropout: Option<&SampleNoise>,
    ) -> Result<Tensor, Error> {
        self.run_packed(packed, dropout, None)
    }

    fn run_packed(
        &self,
        packed: &Packed,
        dropout: Option<&SampleNoise>,
        at: Option<&Tensor>,
    ) -> Result<Tensor, Error> {
        self.check_length(packed.seq_len())?;
        Self::check_noise(dropout, packed.batch())?;
        let x = self.embed(packed.ids(), packed.positions());
        Ok(self.trunk(x, Layout::Packed(packed), dropout, at))
    }

    /// Features `(K, D)` of the tokens at flat positions `at` `(K,)` (into `B * T`) alone: rows
    /// `at` of [`WaveNetwork::encode`], up to rounding, with the same dropout masks. The
    /// last layer finishes only these tokens: a masked-LM step that supervises 15% of the tokens
    /// runs that layer's map to real features and feed-forward block on 15% of them.
    pub fn encode_at(
        &self,
        ids: &Tensor,
        mask: &Tensor,
        at: &Tensor,
        dropout: Option<&SampleNoise>,
    ) -> Result<Tensor, Error> {
        self.run_padded(ids, mask, dropout, Some(at))
    }

    /// [`WaveNetwork::encode_at`] of a packed batch: `at` indexes its `N` tokens.
    pub fn encode_packed_at(
        &self,
        packed: &Packed,
        at: &Tensor,
        dropout: Option<&SampleNoise>,
    ) -> Result<Tensor, Error> {
        self.run_packed(packed, dropout, Some(at))
    }

    /// Pooled features `(B, D)`: masked mean, or the first token. Fully masked rows give zeros.
    pub fn pool(&self, features: &Tensor, mask: &Tensor) -> Tensor {
        match self.cfg.pooling {
            Pooling::First => features.select(1, 0),
            Pooling::Mean => {
                let m = mask.to_kind(features.kind()).unsqueeze(-1);
                let count = m
                    .sum_dim_intlist(&[1i64][..], false, None::<Kind>)
                    .clamp_min(1.0);
                (features * m).sum_dim_intlist(&[1i64][..], false, None::<Kind>) / count
            }
        }
    }

    /// [`WaveNetwork::pool`] of packed features `(N, D)`.
    pub fn pool_packed(&self, features: &Tensor, packed: &Packed) -> Tensor {
        match self.cfg.pooling {
            Pooling::First => packed.first_token(features),
            Pooling::Mean => {
                let count = packed
                    .lengths()
                    .to_kind(features.kind())
                    .clamp_min(1.0)
                    .unsqueeze(1);
                packed.row_sum(features) / count
            }
        }
    }

    fn classifier(&self) -> Result<&nn::Linear, Error> {
        match &self.head {
            OutputHead::Classifier(classifier) => Ok(classifier),
            OutputHead::Tokens { .. } => Err(Error::BadInput(
                "classify() needs model.head = \"classification\"".into(),
            )),
        }
    }

    /// Class logits of pooled features `(B, D)`, with the classifier-input dropout.
    fn classify_pooled(
        &self,
        pooled: Tensor,
        dropout: Option<&SampleNoise>,
    ) -> Result<Tensor, Error> {
        let classifier = self.classifier()?;
        let pooled = match dropout {
            Some(noise) => {
                noise.dropout(&pooled, self.cfg.dropout, dropout_stream(self.cfg.n_layers))
            }
            None => pooled,
        };
        Ok(project(classifier, &pooled, self.compute).to_kind(pooled.kind()))
    }

    /// Class logits `(B, C)`. Errors if the network has no classification head.
    pub fn classify(
        &self,
        ids: &Tensor,
        mask: &Tensor,
        dropout: Option<&SampleNoise>,
    ) -> Result<Tensor, Error> {
        self.classifier()?;
        let pooled = self.pool(&self.encode(ids, mask, dropout)?, mask);
        self.classify_pooled(pooled, dropout)
    }

    /// [`WaveNetwork::classify`] of a packed batch: class logits `(B, C)`.
    pub fn classify_packed(
        &self,
        packed: &Packed,
        dropout: Option<&SampleNoise>,
    ) -> Result<Tensor, Error> {
        self.classifier()?;
        let pooled = self.pool_packed(&self.encode_packed(packed, dropout)?, packed);
        self.classify_pooled(pooled, dropout)
    }

    /// Vocabulary logits `(..., V)` of token features `(..., D)` (any leading shape, e.g. only the
    /// gathered positions a loss needs), from the head tied to the token embedding:
    /// `LayerNorm(GELU(h W + b)) E^T / sqrt(d) + bias`.
    pub fn lm_logits(&self, features: &Tensor) -> Result<Tensor, Error> {
        let hidden = self.lm_hidden(features)?;
        let size = hidden.size();
        let (leading, d) = size.split_at(size.len().saturating_sub(1));
        let logits = self
            .lm_projection()?
            .logits(&hidden.reshape([-1, d.first().copied().unwrap_or(0)]));
        let shape: Vec<i64> = leading
            .iter()
            .copied()
            .chain([self.cfg.vocab_size as i64])
            .collect();
        Ok(logits.view(shape.as_slice()))
    }

    /// The language-model head's hidden states `LayerNorm(GELU(h W + b))` `(..., D)` of token
    /// features `(..., D)`, in their kind: what [`LmProjection`] maps to vocabulary logits.
    pub fn lm_hidden(&self, features: &Tensor) -> Result<Tensor, Error> {
        let OutputHead::Tokens {
            transform, norm, ..
        } = &self.head
        else {
            return Err(Error::BadInput(
                "token logits need a masked_lm or causal_lm head".into(),
            ));
        };
        Ok(norm.forward(
            &project(transform, features, self.compute)
                .gelu("none")
                .to_kind(features.kind()),
        ))
    }

    /// The language-model head's output projection, tied to the token embedding, for a loss that
    /// computes the logits and their gradients itself.
    pub fn lm_projection(&self) -> Result<LmProjection<'_>, Error> {
        let OutputHead::Tokens { bias, .. } = &self.head else {
            return Err(Error::BadInput(
                "token logits need a masked_lm or causal_lm head".into(),
            ));
        };
        Ok(LmProjection {
            table: &self.token_embedding.ws,
            bias,
            // The embedding rows are N(0, 1) (PyTorch's default, kept for the input side), so
            // h·e has variance d: scaling by 1/sqrt(d) starts the logits at unit scale
            // (loss ≈ ln V).
            scale: 1.0 / (self.cfg.d_model as f64).sqrt(),
            compute: self.compute,
        })
    }

    /// Vocabulary logits `(B, T, V)` at every position (tests and small inputs; training gathers
    /// the supervised positions first and calls [`WaveNetwork::lm_logits`]).
    pub fn token_logits(
        &self,
        ids: &Tensor,
        mask: &Tensor,
        dropout: Option<&SampleNoise>,
    ) -> Result<Tensor, Error> {
        self.lm_logits(&self.encode(ids, mask, dropout)?)
    }
}
