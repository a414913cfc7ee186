//! The `[model]` section of a job config.

use serde::{Deserialize, Serialize};

use crate::Error;

/// How the two complex variants of a token are combined (paper §3.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Complex addition: `R = u + v`, `I = s_u + s_v`.
    Interference,
    /// Complex multiplication: `R = u v - s_u s_v`, `I = u s_v + v s_u`.
    Modulation,
}

/// How the complex representation is mapped back to real features.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToReal {
    /// `Linear(2d, d)` over `concat[R, I]`: keeps per-token information (needed for token heads).
    Concat,
    /// `sqrt(R^2 + I^2 + eps)`: after modulation this equals `G_u * G_v` for every token, which
    /// is cheap and works well for pooled classification but carries no per-token signal.
    Magnitude,
}

/// Position information added to the token embedding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PositionEncoding {
    /// No position information: a pooled output is invariant to token order.
    None,
    /// A learned `(max_positions, d)` table.
    Learned,
    /// The fixed sinusoidal table of "Attention is all you need".
    Sinusoidal,
}

/// How token features are pooled for the classification head.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pooling {
    /// Mean over real (unmasked) tokens.
    Mean,
    /// The first token (`[CLS]` with BERT tokenizers).
    First,
}

/// Which output head the network carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Head {
    /// Pooled features → `Linear(d, num_classes)`.
    Classification,
    /// Per-token logits over the vocabulary, tied to the token embedding (masked-token prediction).
    MaskedLm,
    /// Like `MaskedLm`, but every global norm becomes a prefix norm so position `j` sees only
    /// tokens `<= j` (next-token prediction).
    CausalLm,
}

/// Shape and behaviour of a Wave Network. Units are tokens and features.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    /// Vocabulary size; `0` = take it from the tokenizer.
    pub vocab_size: usize,
    /// Embedding width `d` (paper: 768).
    pub d_model: usize,
    /// Number of stacked wave layers (paper: 1).
    pub n_layers: usize,
    /// Combination of the two variants.
    pub mode: Mode,
    /// Complex-to-real map.
    pub to_real: ToReal,
    /// Position encoding.
    pub position: PositionEncoding,
    /// Longest sequence the position table covers, in tokens.
    pub max_positions: usize,
    /// Hidden width of the feed-forward block; `0` = `d_model`.
    pub ffn_dim: usize,
    /// Dropout probability on layer outputs and before the classifier.
    pub dropout: f64,
    /// Output head.
    pub head: Head,
    /// Pooling for the classification head.
    pub pooling: Pooling,
    /// Number of classes; `0` = take it from the data set's label names.
    pub num_classes: usize,
    /// Added under every square root of the norm block (keeps gradients finite at zero).
    pub eps: f64,
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig {
            vocab_size: 0,
            d_model: 768,
            n_layers: 1,
            mode: Mode::Modulation,
            to_real: ToReal::Magnitude,
            position: PositionEncoding::None,
            max_positions: 512,
            ffn_dim: 0,
            dropout: 0.1,
            head: Head::Classification,
            pooling: Pooling::Mean,
            num_classes: 0,
            eps: 1e-6,
        }
    }
}

impl ModelConfig {
    /// Checks every field; the error names the first bad one as `model.<field>`.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |field: &'static str, reason: String| Err(Error::InvalidConfig { field, reason });
        if self.vocab_size == 0 {
            return bad(
                "vocab_size",
                "must be > 0 (set it or let the tokenizer provide it)".into(),
            );
        }
        if self.d_model == 0 {
            return bad("d_model", "must be > 0".into());
        }
        if self.n_layers == 0 {
            return bad("n_layers", "must be >= 1".into());
        }
        if self.max_positions == 0 {
            return bad("max_positions", "must be > 0".into());
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return bad(
                "dropout",
                format!("must be in [0, 1), got {}", self.dropout),
            );
        }
        if !(self.eps > 0.0 && self.eps.is_finite()) {
            return bad(
                "eps",
                format!("must be a positive number, got {}", self.eps),
            );
        }
        if self.head == Head::Classification && self.num_classes < 2 {
            return bad(
                "num_classes",
                format!("a classifier needs >= 2 classes, got {}", self.num_classes),
            );
        }
        if self.head != Head::Classification
            && self.to_real == ToReal::Magnitude
            && self.mode == Mode::Modulation
        {
            return bad(
                "to_real",
                "`magnitude` after `modulation` is the same for every token; token heads need `concat`".into(),
            );
        }
        Ok(())
    }

    /// Feed-forward hidden width after applying the `0 = d_model` default.
    pub fn ffn_hidden(&self) -> usize {
        if self.ffn_dim == 0 {
            self.d_model
        } else {
            self.ffn_dim
        }
    }
}
