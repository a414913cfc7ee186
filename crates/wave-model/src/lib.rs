//! # wave-model
//!
//! The Wave Network of Zhang & Sheng, "Wave Network: An Ultra-Small Language Model"
//! (arXiv 2411.02674), on libtorch through `tch`. This crate knows nothing about data sources,
//! ranks or storage: it maps token ids and a mask to features, class logits or vocabulary logits.
//!
//! Per layer, tokens `x (B, T, D)` become two variants `u = x W1 + b1`, `v = x W2 + b2` (masked
//! after the projection). Each variant is a complex vector whose real part is the token and whose
//! imaginary part `s = sqrt(G^2 - u^2)` is the energy of all *other* tokens in that dimension
//! ([`wave::imaginary_part`]); the two are added (interference) or multiplied (modulation)
//! ([`wave::combine`]), mapped back to real features (concat + linear, or magnitude) and passed
//! through `LayerNorm(h + FFN(h))`. Layers stack residually.
//!
//! Batches come padded (`(B, T)` ids and a mask) or packed ([`Packed`], the varlen layout of
//! [`packed`]: only the real tokens, per-input sums as segment reductions), which skips all
//! work on padding and gives the same outputs up to rounding.
//!
//! ```no_run
//! use tch::{nn, Device, Kind, Tensor};
//! use wave_model::{ModelConfig, WaveNetwork};
//!
//! let cfg = ModelConfig { vocab_size: 30522, d_model: 256, num_classes: 2, ..Default::default() };
//! let vs = nn::VarStore::new(Device::Cpu);
//! let net = WaveNetwork::new(&vs.root(), &cfg)?;
//! let ids = Tensor::from_slice(&[101i64, 2023, 2003, 102]).view([1, 4]);
//! let mask = Tensor::ones([1, 4], (Kind::Int64, Device::Cpu));
//! let logits = net.classify(&ids, &mask, None)?; // (1, 2)
//! println!("{:?}, {:?}", logits.size(), cfg.param_counts());
//! # Ok::<(), wave_model::Error>(())
//! ```
//!
//! Siblings: `wave-data` produces the `(ids, mask, labels)` batches, `wave-train` owns the
//! optimizer and the training loop.

mod config;
mod counts;
mod error;
mod network;
pub mod noise;
pub mod packed;
pub mod wave;

pub use config::{Head, Mode, ModelConfig, Pooling, PositionEncoding, ToReal};
pub use counts::ParamCounts;
pub use error::Error;
pub use network::{LmProjection, WaveNetwork, TOKEN_EMBEDDING};
pub use noise::SampleNoise;
pub use packed::{Layout, Packed};
