//! The varlen ("unpadded") layout: only the real tokens of a batch, concatenated row by row.
//!
//! A padded batch `(B, T)` computes every token slot, padding included; on AG News at
//! `max_length = 128` only about 45% of the slots of a dynamically padded batch are real tokens.
//! [`Packed`] keeps the `N` real tokens as `(N, D)` features instead, with each token's row and
//! position. Everything a wave layer does per token runs on `N` rows; what it does per input
//! (the global norms, the per-input feed-forward block of the magnitude map, pooling) becomes a
//! segment reduction over each row's run of tokens and a gather back to the tokens:
//!
//! | per input | padded `(B, T, D)` | packed `(N, D)` |
//! |---|---|---|
//! | sum over tokens | `sum(dim 1)` | `segment_reduce(sum, lengths)` → `(B, D)` |
//! | prefix sum (causal) | `cumsum(dim 1)` | `cumsum` over all tokens in f64, minus each row's start |
//! | back to tokens | broadcast | `embedding(per_row, rows)` |
//!
//! The gathers use `embedding` rather than `index_select` because its backward pass is
//! deterministic on CUDA too (sorted, not atomic), and the prefix sum runs in f64 because a
//! running sum over the whole batch would otherwise lose the precision of a short row that
//! follows long ones. Positions are the tokens' columns in the padded layout, so position
//! encodings and the dropout keys of [`crate::noise`] (by sample, position and feature) are
//! the same in both layouts: a packed forward pass equals the padded one up to rounding.

use tch::{Kind, Tensor};

use crate::{Error, SampleNoise};

/// The real tokens of a padded batch, concatenated row by row in position order.
#[derive(Debug)]
pub struct Packed {
    ids: Tensor,
    rows: Tensor,
    positions: Tensor,
    lengths: Tensor,
    starts: Tensor,
    padded_index: Tensor,
    batch: i64,
    seq_len: i64,
    tokens: i64,
}

impl Packed {
    /// Packs ids `(B, T)` (int64) where `mask` `(B, T)` is non-zero. Rows may be empty and the
    /// mask may have holes (a token keeps its column as its position).
    pub fn from_padded(ids: &Tensor, mask: &Tensor) -> Result<Packed, Error> {
        let (shape, mshape) = (ids.size(), mask.size());
        if shape.len() != 2 || shape != mshape {
            return Err(Error::BadInput(format!(
                "ids {shape:?} and mask {mshape:?} must both be (batch, tokens)"
            )));
        }
        let (batch, seq_len) = (shape[0], shape[1]);
        let real = mask.ne(0);
        // Row-major flat indices of the real tokens: grouped by row, in position order.
        let padded_index = real.reshape([-1]).nonzero().reshape([-1]);
        let lengths = real.sum_dim_intlist(&[1i64][..], false, Kind::Int64);
        let starts = lengths.cumsum(0, Kind::Int64) - &lengths;
        Ok(Packed {
            ids: ids.reshape([-1]).index_select(0, &padded_index),
            rows: padded_index.floor_divide_scalar(seq_len.max(1)),
            positions: padded_index.remainder(seq_len.max(1)),
            tokens: padded_index.size()[0],
            lengths,
            starts,
            padded_index,
            batch,
            seq_len,
        })
    }

    /// Token ids `(N,)`.
    pub fn ids(&self) -> &Tensor {
        &self.ids
    }

    /// Row (sample) of each token `(N,)`.
    pub fn rows(&self) -> &Tensor {
        &self.rows
    }

    /// Position (column in the padded layout) of each token `(N,)`.
    pub fn positions(&self) -> &Tensor {
        &self.positions
    }

    /// Real tokens per row `(B,)`.
    pub fn lengths(&self) -> &Tensor {
        &self.lengths
    }

    /// Rows `B`.
    pub fn batch(&self) -> i64 {
        self.batch
    }

    /// Padded length `T` the batch was packed from.
    pub fn seq_len(&self) -> i64 {
        self.seq_len
    }

    /// Real tokens `N`.
    pub fn tokens(&self) -> i64 {
        self.tokens
    }

    /// The packed indices `(K,)` of flat padded positions `flat` `(K,)` (into `B * T`, as the
    /// token objectives address their targets); every one must be a real token.
    pub fn packed_index_of(&self, flat: &Tensor) -> Result<Tensor, Error> {
        let device = self.padded_index.device();
        let map = Tensor::full([self.batch * self.seq_len], -1, (Kind::Int64, device)).index_copy(
            0,
            &self.padded_index,
            &Tensor::arange(self.tokens, (Kind::Int64, device)),
        );
        let index = map.index_select(0, flat);
        if flat.numel() > 0 && index.min().int64_value(&[]) < 0 {
            return Err(Error::BadInput(
                "a target position is padding, not a real token".into(),
            ));
        }
        Ok(index)
    }

    /// Packed features `(N, D)` laid out as `(B, T, D)`, zero at padding.
    pub fn unpack(&self, x: &Tensor) -> Tensor {
        let d = x.size().last().copied().unwrap_or(0);
        Tensor::zeros([self.batch * self.seq_len, d], (x.kind(), x.device()))
            .index_copy(0, &self.padded_index, x)
            .view([self.batch, self.seq_len, d])
    }

    /// Sum of each row's tokens `(B, D)` of packed `x` `(N, D)`; empty rows give zeros.
    pub fn row_sum(&self, x: &Tensor) -> Tensor {
        if self.tokens == 0 {
            let d = x.size().last().copied().unwrap_or(0);
            return Tensor::zeros([self.batch, d], (x.kind(), x.device()));
        }
        Tensor::segment_reduce(
            x,
            "sum",
            Some(&self.lengths),
            None::<&Tensor>,
            None::<&Tensor>,
            0,
            false,
            0.0,
        )
    }

    /// One value per row `(B, D)` repeated for each of its tokens `(N, D)`.
    pub fn to_tokens(&self, per_row: &Tensor) -> Tensor {
        Tensor::embedding(per_row, &self.rows, -1, false, false)
    }

    /// Inclusive prefix sum over each row's tokens `(N, D)` of packed `x` `(N, D)`.
    pub fn row_prefix_sum(&self, x: &Tensor) -> Tensor {
        if self.tokens == 0 {
            return x.shallow_clone();
        }
        let wide = x.to_kind(Kind::Double);
        let running = wide.cumsum(0, None::<Kind>);
        // What precedes each row: the exclusive running sum at its first token.
        let before = &running - &wide;
        let first = self.starts.clamp_max(self.tokens - 1);
        let base = Tensor::embedding(&before, &first, -1, false, false);
        (running - self.to_tokens(&base)).to_kind(x.kind())
    }

    /// Features of each row's first position `(B, D)` (zeros where that position is padding,
    /// as in the padded layout, whose padding features are zero).
    pub fn first_token(&self, x: &Tensor) -> Tensor {
        let d = x.size().last().copied().unwrap_or(0);
        if self.tokens == 0 {
            return Tensor::zeros([self.batch, d], (x.kind(), x.device()));
        }
        let first = self.starts.clamp_max(self.tokens - 1);
        let at_zero = self
            .lengths
            .gt(0)
            .logical_and(&self.positions.index_select(0, &first).eq(0))
            .to_kind(x.kind())
            .unsqueeze(1);
        Tensor::embedding(x, &first, -1, false, false) * at_zero
    }
}

/// Where a batch's tokens are and how a layer reduces over each input's tokens.
#[derive(Clone, Copy, Debug)]
pub enum Layout<'a> {
    /// `(B, T, D)` tensors; the mask `(B, T, 1)` in the features' kind zeroes padding.
    Padded(&'a Tensor),
    /// `(N, D)` tensors of real tokens only.
    Packed(&'a Packed),
}

impl Layout<'_> {
    /// `x` with padding zeroed (packed tensors have none).
    pub fn mask(&self, x: Tensor) -> Tensor {
        match self {
            Layout::Padded(mask) => x * *mask,
            Layout::Packed(_) => x,
        }
    }

    /// Per-input sums of `x`: `(B, 1, D)` padded (padding must already be zero), `(B, D)`
    /// packed. [`Layout::to_tokens`] brings them back to the tokens.
    pub fn input_sum(&self, x: &Tensor) -> Tensor {
        match self {
            Layout::Padded(_) => x.sum_dim_intlist(&[1i64][..], true, None::<Kind>),
            Layout::Packed(p) => p.row_sum(x),
        }
    }

    /// Per-input values from [`Layout::input_sum`] (or computed from them) for every token,
    /// shaped like `like`.
    pub fn to_tokens(&self, per_input: &Tensor, like: &Tensor) -> Tensor {
        match self {
            Layout::Padded(_) => per_input.expand_as(like),
            Layout::Packed(p) => p.to_tokens(per_input),
        }
    }

    /// Rows `at` of token features `x` as `(K, D)`: `at` holds flat token indices (into `B * T`
    /// padded, into `N` packed), as the token objectives address their targets.
    pub fn gather(&self, x: &Tensor, at: &Tensor) -> Tensor {
        let d = x.size().last().copied().unwrap_or(0);
        // `embedding`, not `index_select`: its backward is deterministic on CUDA too.
        Tensor::embedding(&x.reshape([-1, d]), at, -1, false, false)
    }

    /// Gathered features `x` `(K, D)` of the tokens at `at` with padding zeroed, as
    /// [`Layout::mask`] zeroes it in the whole batch.
    pub fn mask_at(&self, x: Tensor, at: &Tensor) -> Tensor {
        match self {
            Layout::Padded(mask) => x * self.gather(mask, at),
            Layout::Packed(_) => x,
        }
    }

    /// Dropout of gathered features `x` `(K, D)` of the tokens at `at`: the same masks as
    /// [`Layout::dropout`] draws for those tokens in the whole batch.
    pub fn dropout_at(
        &self,
        noise: &SampleNoise,
        x: &Tensor,
        p: f64,
        stream: u64,
        at: &Tensor,
    ) -> Tensor {
        let (rows, positions) = match self {
            Layout::Padded(mask) => {
                let t = mask.size()[1].max(1);
                (at.floor_divide_scalar(t), at.remainder(t))
            }
            Layout::Packed(packed) => (
                packed.rows().index_select(0, at),
                packed.positions().index_select(0, at),
            ),
        };
        noise.dropout_at(x, p, stream, &rows, &positions)
    }

    /// Dropout of layer output `x` with probability `p` from `stream` of `noise`, keyed by each
    /// token's (sample, position, feature) in either layout, so both draw the same masks.
    pub fn dropout(&self, noise: &SampleNoise, x: &Tensor, p: f64, stream: u64) -> Tensor {
        match self {
            Layout::Padded(_) => noise.dropout(x, p, stream),
            Layout::Packed(packed) => {
                noise.dropout_at(x, p, stream, packed.rows(), packed.positions())
            }
        }
    }

    /// Each token's sum over its input (`causal = false`) or over the tokens at or before it
    /// (`causal = true`), broadcastable against `x`.
    pub fn sequence_sum(&self, x: &Tensor, causal: bool) -> Tensor {
        match (self, causal) {
            (Layout::Padded(_), true) => x.cumsum(1, None::<Kind>),
            (Layout::Padded(_), false) => self.input_sum(x),
            (Layout::Packed(p), true) => p.row_prefix_sum(x),
            (Layout::Packed(p), false) => p.to_tokens(&p.row_sum(x)),
        }
    }
}
