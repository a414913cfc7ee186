//! Counter-based randomness keyed by sample, not by rank or generator state.
//!
//! Every random decision of training (a dropout mask, which tokens masked-LM hides) is a pure
//! function of `(seed, step, stream, global sample index, position, feature)`. The same sample at
//! the same step therefore draws the same bits whichever rank holds it, at any world size, after a
//! resume, and on CPU or GPU: "N ranks = 1 rank" and exact elastic resume hold with dropout on.
//! No generator state needs saving.
//!
//! The bits come from a 32-bit integer hash (Wellons' "lowbias32", two multiply-xorshift rounds)
//! evaluated with int32 tensor ops, which wrap modulo 2^32 on every libtorch backend. Keys are
//! built in three levels, each a hash of the previous one plus a per-index constant:
//! `sample (B,) → token (B, T) → element (B, T, D)`, so the bits of an element depend only on its
//! (sample, position, feature) and not on the batch layout (padded or packed, row order, batch
//! size).

use tch::{Device, Kind, Tensor};

const GOLDEN64: u64 = 0x9E37_79B9_7F4A_7C15;

fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A 64-bit hash of a sequence of words (the scalar keys: seed, step, stream, sample).
fn hash_words(words: &[u64]) -> u64 {
    words
        .iter()
        .fold(GOLDEN64, |h, &w| mix64(h ^ w.wrapping_add(GOLDEN64)))
}

/// lowbias32 (Chris Wellons): a well-mixing bijection on 32-bit words. The reference for the
/// tensor version, which must agree with it bit for bit.
pub fn mix32(mut x: u32) -> u32 {
    x ^= x >> 16;
    x = x.wrapping_mul(0x7feb_352d);
    x ^= x >> 15;
    x = x.wrapping_mul(0x846c_a68b);
    x ^= x >> 16;
    x
}

/// Logical right shift of int32 words (libtorch shifts signed integers arithmetically).
fn shr(x: &Tensor, k: i64) -> Tensor {
    x.bitwise_right_shift_tensor_scalar(k)
        .bitwise_and((1i64 << (32 - k)) - 1)
}

/// [`mix32`] on an int32 tensor, element-wise (the u32 word reinterpreted as i32).
pub fn mix32_tensor(x: &Tensor) -> Tensor {
    let x = x.bitwise_xor_tensor(&shr(x, 16));
    let x = x * i64::from(0x7feb_352du32 as i32);
    let x = x.bitwise_xor_tensor(&shr(&x, 15));
    let x = x * i64::from(0x846c_a68bu32 as i32);
    x.bitwise_xor_tensor(&shr(&x, 16))
}

/// `n` per-index constants `mix32(i * φ + salt)` as an int32 tensor `(n,)`.
fn index_constants(n: i64, salt: u32, device: Device) -> Tensor {
    let values: Vec<i32> = (0..n.max(0) as u32)
        .map(|i| mix32(i.wrapping_mul(0x9E37_79B9).wrapping_add(salt)) as i32)
        .collect();
    Tensor::from_slice(&values).to(device)
}

/// Stream of masked-LM's choice of positions (which tokens are predicted).
pub const STREAM_MLM_SELECT: u64 = 1;
/// Stream of masked-LM's 80/10/10 choice between `[MASK]`, a random token and the token itself.
pub const STREAM_MLM_ACTION: u64 = 2;
/// Stream of masked-LM's random replacement tokens.
pub const STREAM_MLM_RANDOM_TOKEN: u64 = 3;

/// Stream of the dropout site `site` (layer outputs `0..n_layers`, then the classifier input).
pub fn dropout_stream(site: usize) -> u64 {
    0x100 + site as u64
}

/// The int32 threshold below which uniformly random words fall with probability `p`.
fn threshold(p: f64) -> i64 {
    let scaled = (p.clamp(0.0, 1.0) * 4_294_967_296.0).floor() as i64;
    scaled - (1i64 << 31)
}

/// Boolean tensor: where the random words `bits` fall below probability `p` (true with
/// probability `p`, independently per element).
pub fn below(bits: &Tensor, p: f64) -> Tensor {
    bits.lt(threshold(p))
}

/// Uniform floats in `[0, 1)` from random words (24 significant bits, exact in fp32).
pub fn uniform(bits: &Tensor) -> Tensor {
    // The top 24 bits of the unsigned word.
    (shr(bits, 8).to_kind(Kind::Float)) * (1.0 / 16_777_216.0)
}

/// The random keys of one step's samples: everything a draw needs besides its stream.
#[derive(Debug)]
pub struct SampleNoise {
    seed: u64,
    step: u64,
    /// `(B,)` int32: a 32-bit key per sample, hashed from (seed, step, global sample index).
    keys: Tensor,
}

impl SampleNoise {
    /// Keys for the samples `samples` (global indices; any value, padding rows included) of
    /// optimizer step `step` under `seed`.
    pub fn new(seed: u64, step: u64, samples: &[u64], device: Device) -> SampleNoise {
        let keys: Vec<i32> = samples
            .iter()
            .map(|&s| hash_words(&[seed, step, s]) as u32 as i32)
            .collect();
        SampleNoise {
            seed,
            step,
            keys: Tensor::from_slice(&keys).to(device),
        }
    }

    /// Rows (samples) these keys cover.
    pub fn rows(&self) -> i64 {
        self.keys.size()[0]
    }

    /// The two halves of a token key of `stream`: per sample `(B,)` and per position `(t,)`.
    /// A token's key is `mix32(sample part + position part)`, whatever the layout.
    fn key_parts(&self, stream: u64, t: i64) -> (Tensor, Tensor) {
        let salt = hash_words(&[self.seed, self.step, stream]);
        let per_sample = mix32_tensor(&self.keys.bitwise_xor(i64::from(salt as u32 as i32)));
        let positions = index_constants(t, (salt >> 32) as u32, self.keys.device());
        (per_sample, positions)
    }

    /// Per-(sample, position) keys `(B, T)` of `stream`, for positions `0..t`.
    pub fn token_keys(&self, stream: u64, t: i64) -> Tensor {
        let (per_sample, positions) = self.key_parts(stream, t);
        mix32_tensor(&(per_sample.unsqueeze(1) + positions.unsqueeze(0)))
    }

    /// Keys `(N,)` of `stream` for tokens at rows `rows` (indices into these samples) and
    /// positions `positions`, both `(N,)` int64: the entries of [`SampleNoise::token_keys`] at
    /// those coordinates, without building the padded `(B, T)` grid (the varlen layout).
    pub fn token_keys_at(&self, stream: u64, rows: &Tensor, positions: &Tensor) -> Tensor {
        let t = if positions.numel() == 0 {
            0
        } else {
            positions.max().int64_value(&[]) + 1
        };
        let (per_sample, table) = self.key_parts(stream, t);
        mix32_tensor(&(per_sample.index_select(0, rows) + table.index_select(0, positions)))
    }

    /// Salt of the per-feature constants of `stream`.
    fn feature_salt(&self, stream: u64) -> u32 {
        hash_words(&[self.seed, self.step, stream, 1]) as u32
    }

    /// Random words per feature `(..., d)` from token keys `(...)`.
    fn feature_bits(&self, stream: u64, tokens: &Tensor, d: i64) -> Tensor {
        let features = index_constants(d, self.feature_salt(stream), tokens.device());
        let mut shape = vec![1i64; tokens.dim()];
        shape.push(d);
        mix32_tensor(&(tokens.unsqueeze(-1) + features.view(shape.as_slice())))
    }

    /// The inverted-dropout multiplier `(..., d)` in `kind` for token keys `(...)`: `1 / (1 - p)`
    /// where the element's random word is not below `p`, else 0.
    ///
    /// On the CPU, for fp32, the words are hashed in one pass over host memory with [`mix32`]
    /// (the tensor version takes a dozen passes over `(..., d)` int32 tensors, a sizeable part of
    /// a layer's element-wise work); elsewhere with the tensor version. Both give the same bits
    /// (tested).
    fn dropout_multiplier(
        &self,
        stream: u64,
        tokens: &Tensor,
        d: i64,
        p: f64,
        kind: Kind,
    ) -> Tensor {
        let scale = 1.0 / (1.0 - p);
        let mut shape = tokens.size();
        shape.push(d);
        let host_keys = (tokens.device() == Device::Cpu && kind == Kind::Float)
            .then(|| Vec::<i32>::try_from(tokens.reshape([-1])).ok())
            .flatten();
        let Some(keys) = host_keys else {
            let keep = below(&self.feature_bits(stream, tokens, d), p).logical_not();
            return keep.to_kind(kind) * scale;
        };
        let salt = self.feature_salt(stream);
        let features: Vec<u32> = (0..d.max(0) as u32)
            .map(|i| mix32(i.wrapping_mul(0x9E37_79B9).wrapping_add(salt)))
            .collect();
        let threshold = threshold(p);
        // The scalar the tensor version multiplies by: `scale` rounded to fp32.
        let keep = scale as f32;
        let mut out = Vec::with_capacity(keys.len() * features.len());
        for key in keys {
            out.extend(features.iter().map(|&f| {
                let word = mix32((key as u32).wrapping_add(f)) as i32;
                if i64::from(word) < threshold {
                    0.0
                } else {
                    keep
                }
            }));
        }
        Tensor::from_slice(&out).view(shape.as_slice())
    }

    /// Random words for every (sample, position) of `stream`: `(B, T)` int32.
    pub fn token_bits(&self, stream: u64, t: i64) -> Tensor {
        self.token_keys(stream, t)
    }

    /// Random words for every (sample, position, feature) of `stream`: `(B, T, D)` int32.
    pub fn element_bits(&self, stream: u64, t: i64, d: i64) -> Tensor {
        self.feature_bits(stream, &self.token_keys(stream, t), d)
    }

    /// Inverted dropout of `x` (`(B, T, D)` or `(B, D)`) with probability `p`, its mask drawn
    /// from `stream` (one stream per dropout site). A pooled `(B, D)` tensor uses position 0.
    pub fn dropout(&self, x: &Tensor, p: f64, stream: u64) -> Tensor {
        if p <= 0.0 {
            return x.shallow_clone();
        }
        let size = x.size();
        let multiplier = match size.as_slice() {
            [_, t, d] => {
                self.dropout_multiplier(stream, &self.token_keys(stream, *t), *d, p, x.kind())
            }
            [_, d] => self
                .dropout_multiplier(stream, &self.token_keys(stream, 1), *d, p, x.kind())
                .squeeze_dim(1),
            _ => return x.shallow_clone(),
        };
        x * multiplier
    }

    /// Inverted dropout of packed token features `x` `(N, D)` whose tokens sit at `rows` and
    /// `positions` (`(N,)` each): the same mask, element for element, as [`SampleNoise::dropout`]
    /// draws for those tokens in the padded layout.
    pub fn dropout_at(
        &self,
        x: &Tensor,
        p: f64,
        stream: u64,
        rows: &Tensor,
        positions: &Tensor,
    ) -> Tensor {
        if p <= 0.0 || x.dim() != 2 {
            return x.shallow_clone();
        }
        let tokens = self.token_keys_at(stream, rows, positions);
        x * self.dropout_multiplier(stream, &tokens, x.size()[1], p, x.kind())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tensor_hash_matches_the_scalar_reference_bit_for_bit() {
        // Enough values to exercise libtorch's vectorised body and its scalar tail.
        let words: Vec<u32> = (0..10_007u32)
            .map(|i| i.wrapping_mul(2_654_435_761).wrapping_add(i >> 3))
            .chain([0, 1, u32::MAX, 0x8000_0000, 0x7fff_ffff])
            .collect();
        let input: Vec<i32> = words.iter().map(|&w| w as i32).collect();
        let out = Vec::<i32>::try_from(mix32_tensor(&Tensor::from_slice(&input))).expect("i32");
        assert_eq!(out.len(), words.len());
        for (w, o) in words.iter().zip(&out) {
            assert_eq!(mix32(*w), *o as u32, "word {w:#x}");
        }
    }

    #[test]
    fn dropout_keeps_about_one_minus_p_and_rescales() {
        let noise = SampleNoise::new(7, 3, &(0..64).collect::<Vec<u64>>(), Device::Cpu);
        let x = Tensor::ones([64, 32, 48], (Kind::Float, Device::Cpu));
        let y = noise.dropout(&x, 0.25, 0);
        let kept = y
            .ne(0.0)
            .to_kind(Kind::Double)
            .mean(Kind::Double)
            .double_value(&[]);
        assert!((kept - 0.75).abs() < 0.01, "kept fraction {kept}");
        let max = y.max().double_value(&[]);
        assert!(
            (max - 1.0 / 0.75).abs() < 1e-6,
            "kept values are rescaled, got {max}"
        );
    }

    #[test]
    fn the_host_dropout_mask_equals_the_tensor_mask_bit_for_bit() {
        let noise = SampleNoise::new(9, 4, &(0..37).collect::<Vec<u64>>(), Device::Cpu);
        let tokens = noise.token_keys(3, 29);
        for p in [0.1, 0.5, 0.9] {
            let host = noise.dropout_multiplier(3, &tokens, 61, p, Kind::Float);
            // The tensor version (as on a GPU), and the historical `x * keep * scale` on ones.
            let keep = below(&noise.feature_bits(3, &tokens, 61), p).logical_not();
            let tensor = keep.to_kind(Kind::Float) * (1.0 / (1.0 - p));
            let ones = Tensor::ones([37, 29, 61], (Kind::Float, Device::Cpu));
            let historical = &ones * keep.to_kind(Kind::Float) * (1.0 / (1.0 - p));
            assert_eq!(host.size(), vec![37, 29, 61]);
            assert!(host.equal(&tensor), "p = {p}: host and tensor masks differ");
            assert!((ones * &host).equal(&historical), "p = {p}");
        }
        // Other kinds take the tensor version.
        let double = noise.dropout_multiplier(3, &tokens, 61, 0.5, Kind::Double);
        assert_eq!(double.kind(), Kind::Double);
    }

    #[test]
    fn a_samples_bits_do_not_depend_on_its_batch_or_row() {
        let a = SampleNoise::new(1, 5, &[10, 11, 12], Device::Cpu).element_bits(4, 6, 8);
        let b = SampleNoise::new(1, 5, &[99, 12], Device::Cpu).element_bits(4, 9, 8);
        // Sample 12 is row 2 of `a` and row 1 of `b`; positions 0..6 agree.
        let diff = (a.get(2) - b.get(1).narrow(0, 0, 6))
            .abs()
            .sum(Kind::Int64)
            .int64_value(&[]);
        assert_eq!(diff, 0);
        let other_step = SampleNoise::new(1, 6, &[10, 11, 12], Device::Cpu).element_bits(4, 6, 8);
        assert_ne!(
            (a - other_step).abs().sum(Kind::Int64).int64_value(&[]),
            0,
            "another step draws other bits"
        );
    }
}
