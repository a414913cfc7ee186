//! Parameter and FLOP counts, computed from the config alone (no tensors needed).

use crate::{Head, ModelConfig, PositionEncoding, ToReal};

/// Parameter counts of a network built from a config.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ParamCounts {
    /// Every trainable parameter.
    pub total: usize,
    /// Without token and position embeddings (the paper's "2.4M" counts these only).
    pub non_embedding: usize,
}

fn linear(i: usize, o: usize) -> usize {
    i * o + o
}

impl ModelConfig {
    /// Trainable parameters of the network this config builds.
    pub fn param_counts(&self) -> ParamCounts {
        let d = self.d_model;
        let h = self.ffn_hidden();
        let to_real = match self.to_real {
            ToReal::Concat => linear(2 * d, d),
            ToReal::Magnitude => 0,
        };
        let layer = 2 * linear(d, d) + to_real + linear(d, h) + linear(h, d) + 2 * d;
        let head = match self.head {
            Head::Classification => linear(d, self.num_classes),
            Head::MaskedLm | Head::CausalLm => linear(d, d) + 2 * d + self.vocab_size,
        };
        let embedding = self.vocab_size * d
            + match self.position {
                PositionEncoding::Learned => self.max_positions * d,
                PositionEncoding::None | PositionEncoding::Sinusoidal => 0,
            };
        let non_embedding = self.n_layers * layer + head;
        ParamCounts {
            total: embedding + non_embedding,
            non_embedding,
        }
    }

    /// Approximate training FLOPs per token (forward + backward = 3x the forward's
    /// `2 * multiply-adds`) of the matrix products, which dominate; used to state model FLOP
    /// utilisation. The tied token head's `d x V` product is included when present.
    pub fn train_flops_per_token(&self) -> f64 {
        let d = self.d_model as f64;
        let h = self.ffn_hidden() as f64;
        let to_real = match self.to_real {
            ToReal::Concat => 2.0 * d * d,
            ToReal::Magnitude => 0.0,
        };
        let layer = 2.0 * d * d + to_real + 2.0 * d * h;
        let head = match self.head {
            Head::Classification => 0.0,
            Head::MaskedLm | Head::CausalLm => d * d + d * self.vocab_size as f64,
        };
        6.0 * (self.n_layers as f64 * layer + head)
    }
}
