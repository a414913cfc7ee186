//! # wave-data: text datasets for wave-dist
//!
//! Turns raw corpora into **Parquet shards + `manifest.json`** in any object store, and streams them
//! back as **rank-sliced, resumable batches** of token ids. No libtorch: batches are plain `Vec<i64>`
//! that the trainer (`wave-train`) turns into tensors. Siblings: `wave-model` (the network),
//! `wave-train` (composes model, data, communication and checkpoints), `wave-dist` (the CLI, whose
//! `data` and `tokenizer` subcommands call [`fetch()`], [`prepare()`], [`inspect()`] and
//! [`train_tokenizer()`]).
//!
//! ## Pipeline
//! 1. [`fetch()`]: official archive → local file, verified against `datasets/<name>/recipe.toml`.
//! 2. [`prepare()`]: AG News / aclImdb archives, JSON Lines, text or Parquet (files or globs, any
//!    size: streamed, with an external shuffle on local disk) → shards with columns `text` (utf8),
//!    `label` (int64, labelled data) and optionally `input_ids` (`list<int32>`, pre-tokenized or
//!    packed), rows in a seeded random order, plus a [`Manifest`] written last (deterministic and
//!    atomic). See the `prepare` module for the guarantees.
//! 3. [`Dataset::open`] + [`Loader`]: stream one split for one rank.
//!
//! ## Order and resumption (see [`order`])
//! The order is a pure function of `(seed, epoch, global position)`: blocks of `shuffle_block` rows
//! are permuted over the whole split, then rows are permuted inside windows of about
//! `shuffle_window` rows, so even a split stored sorted by class gives batches close to an i.i.d.
//! shuffle ([`inspect()`] reports how close for a labelled split). Global batch `k` is positions
//! `[k*B, (k+1)*B)`; rank `r` of `W` takes `[r*B/W, (r+1)*B/W)`. The last partial global batch of `R`
//! samples gives every rank `floor(R/W)` samples (dropping at most `W-1`) unless `pad_remainder`
//! pads it with ignored rows. A [`Cursor`] is `(epoch, global samples consumed)`, so a run saved at
//! 4 ranks resumes at 2 with no sample repeated or skipped.
//!
//! ## Example
//! ```no_run
//! use std::sync::Arc;
//! use wave_data::{Cursor, DataConfig, Dataset, Loader, LoaderOptions, TextEncoder};
//! # fn main() -> Result<(), wave_data::Error> {
//! let cfg = DataConfig::new("s3://bucket/datasets/imdb");
//! cfg.validate()?;
//! let ds = Dataset::open(&cfg.uri)?;
//! let enc = Arc::new(TextEncoder::load(&cfg.tokenizer)?);
//! let opts = LoaderOptions::train(&cfg, 1234, /* rank */ 0, /* world */ 2);
//! let mut loader = Loader::new(&ds, Some(enc), opts, Cursor::start(1234))?;
//! while let Some(batch) = loader.next_batch()? {
//!     // batch.input_ids: (batch.rows, batch.seq_len), row-major
//!     let _saved = loader.cursor(); // store with the checkpoint
//!     # break;
//! }
//! # Ok(()) }
//! ```
//!
//! ## Storage
//! Paths, `file://`, `s3://` (`AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID`, `AWS_ALLOW_HTTP`, ...), `gs://`,
//! `az://` via `object_store`; Parquet is read through this crate's [`store::ObjectReader`], an
//! `AsyncFileReader` doing ranged GETs of only the selected row groups and columns. Streaming checks
//! each shard's size and footer against the manifest the first time it is opened; full SHA-256
//! verification is [`Dataset::verify`] (`wave-dist data inspect --verify`), since hashing whole shards
//! would defeat row-group reads.

mod config;
mod dataset;
mod error;
mod fetch;
mod inspect;
mod loader;
pub mod manifest;
pub mod order;
mod prepare;
mod shuffle;
pub mod sources;
pub mod store;
mod tokenize;
mod train_tokenizer;
mod writer;

pub use config::DataConfig;
pub use dataset::{Columns, Dataset, RowGroupData, RowGroupRef};
pub use error::{Error, Result};
pub use fetch::{fetch, recipe, verify_archive, FetchReport, Recipe, MIRROR_ENV};
pub use inspect::{inspect, InspectOptions, OrderCheck};
pub use loader::{Batch, Cursor, Fetched, Loader, LoaderOptions, CURSOR_VERSION, IGNORE_LABEL};
pub use manifest::Manifest;
pub use order::batches_per_epoch;
pub use prepare::{prepare, PrepareOptions, PrepareReport, PAGE_ROWS};
pub use sources::{InputFormat, SourceOptions, TextUnit, MAX_CLASSES};
pub use tokenize::{resolve_tokenizer, tokenizer_home, TextEncoder};
pub use train_tokenizer::{train_tokenizer, TokenizerKind, TrainTokenizerOptions, SPECIAL_TOKENS};
