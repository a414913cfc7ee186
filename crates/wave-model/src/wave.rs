//! The complex token representation and its two combinations, as pure tensor functions.
//!
//! The paper writes a token as `G_k e^{i alpha_jk}` with `G_k = ||u_{.k}||` over the tokens of one
//! input and `alpha_jk = atan2(sqrt(1 - (u_jk/G_k)^2), u_jk/G_k)`. Its Cartesian form is
//! `(u_jk, sqrt(G_k^2 - u_jk^2))`, which is what we compute: no trigonometry, no complex dtype.

use tch::{Kind, Tensor};

use crate::{Layout, Mode};

/// Kind the norm block runs in: fp32 for half types (sums of squares overflow fp16, and bf16
/// cancels badly in `S - u^2`), otherwise the input's own kind (f64 stays f64 for tests).
fn block_kind(kind: Kind) -> Kind {
    match kind {
        Kind::Half | Kind::BFloat16 => Kind::Float,
        k => k,
    }
}

/// Imaginary part `s = sqrt(clamp(S - u^2, 0) + eps)` of every token, where `S` is the sum of
/// squares over the token's input (or over its prefix `<= j` when `causal`).
///
/// `u`: `(B, T, D)` in [`Layout::Padded`], already multiplied by the mask so padding contributes
/// nothing to `S`; `(N, D)` in [`Layout::Packed`]. The eps sits inside the root because
/// `d sqrt(x)/dx` is infinite at 0 and a clamp alone still lets that through (one-token inputs and
/// identical tokens hit exactly 0).
pub fn imaginary_part(u: &Tensor, layout: Layout, causal: bool, eps: f64) -> Tensor {
    let u = u.to_kind(block_kind(u.kind()));
    let sq = u.square();
    let total = layout.sequence_sum(&sq, causal);
    ((total - &sq).clamp_min(0.0) + eps).sqrt()
}

/// Combines the variants `(u, s_u)` and `(v, s_v)` into `(R, I)`, all `(B, T, D)`.
pub fn combine(mode: Mode, u: &Tensor, s_u: &Tensor, v: &Tensor, s_v: &Tensor) -> (Tensor, Tensor) {
    let kind = s_u.kind();
    let (u, v) = (u.to_kind(kind), v.to_kind(kind));
    match mode {
        Mode::Interference => (&u + &v, s_u + s_v),
        Mode::Modulation => (&u * &v - s_u * s_v, &u * s_v + &v * s_u),
    }
}

/// `sqrt(R^2 + I^2 + eps)` of the modulation of two full-sequence (non-causal) variants, without
/// forming `R` and `I`: `|Z_u Z_v|^2 = (u^2 + s_u^2)(v^2 + s_v^2) = (S_u + eps)(S_v + eps)` for
/// every token, so the result is one row per input: `(B, 1, D)` padded, `(B, D)` packed
/// ([`Layout::input_sum`]).
///
/// `u`, `v`: masked `(B, T, D)` or packed `(N, D)`. Equal to the general path up to rounding
/// (tested).
pub fn modulation_magnitude(u: &Tensor, v: &Tensor, layout: Layout, eps: f64) -> Tensor {
    let kind = block_kind(u.kind());
    let energy = |t: &Tensor| layout.input_sum(&t.to_kind(kind).square()) + eps;
    (energy(u) * energy(v) + eps).sqrt()
}
