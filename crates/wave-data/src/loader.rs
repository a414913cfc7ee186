//! The streaming [`Loader`]: rank-sliced, resumable batches prepared by a background thread.
//!
//! Order and slicing are the pure functions of [`crate::order`]; this module only carries them out:
//! when a batch first touches a shuffle window it reads the whole window (the rows of its blocks,
//! one concurrent read per row group, only their pages), keeps it until a later batch has passed
//! it, takes this rank's rows, tokenizes them (or uses pre-tokenized `input_ids`), truncates to
//! `max_length` and pads to the longest row of the batch. Every rank reads whole windows, so the
//! I/O per rank is that of the window, not of its slice (the price of a world-size independent
//! order; a window is 32,768 rows by default).

use std::collections::BTreeMap;
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::DataConfig;
use crate::dataset::{Columns, Dataset, RowGroupData, RowGroupRef};
use crate::error::{Error, Result};
use crate::manifest::{IDS_COLUMN, LABEL_COLUMN, TEXT_COLUMN};
use crate::order::{
    batches_per_epoch, batches_per_epoch_padded, bucket_by_length, rank_slice, window_permutation,
    BlockRef, EpochPlan,
};
use crate::tokenize::{encode_pool, TextEncoder};

/// Label value meaning "no label" (padding rows, unlabelled data), as in PyTorch's `ignore_index`.
pub const IGNORE_LABEL: i64 = -100;
/// Current [`Cursor`] format version.
pub const CURSOR_VERSION: u32 = 1;

/// Everything a [`Loader`] needs besides the dataset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoaderOptions {
    /// Split to stream.
    pub split: String,
    /// Samples per global batch (all ranks together); must divide by `world_size`.
    pub global_batch: usize,
    /// This process's rank.
    pub rank: usize,
    /// Number of ranks.
    pub world_size: usize,
    /// Order seed.
    pub seed: u64,
    /// Shuffle (false = storage order).
    pub shuffle: bool,
    /// Rows shuffled together.
    pub shuffle_window: usize,
    /// Rows of the unit permuted over the whole split.
    pub shuffle_block: usize,
    /// Group similar lengths inside a window.
    pub bucket_by_length: bool,
    /// Tokens per row including special tokens.
    pub max_length: usize,
    /// Stop once the cursor reaches this epoch (absolute count); `None` = forever.
    pub epochs: Option<u64>,
    /// Pad the last partial batch with ignored rows so every sample is seen exactly once (eval).
    pub pad_remainder: bool,
    /// Batches prepared ahead.
    pub prefetch_batches: usize,
    /// Tokenizer threads.
    pub tokenizer_threads: usize,
}

impl LoaderOptions {
    /// Training: the config's train split, shuffled with `seed`, endless, remainder dropped.
    pub fn train(cfg: &DataConfig, seed: u64, rank: usize, world_size: usize) -> Self {
        LoaderOptions {
            split: cfg.train_split.clone(),
            global_batch: cfg.batch_size,
            rank,
            world_size,
            seed,
            shuffle: cfg.shuffle,
            shuffle_window: cfg.shuffle_window,
            shuffle_block: cfg.shuffle_block,
            bucket_by_length: cfg.bucket_by_length,
            max_length: cfg.max_length,
            epochs: None,
            pad_remainder: false,
            prefetch_batches: cfg.prefetch_batches,
            tokenizer_threads: cfg.tokenizer_threads,
        }
    }

    /// Evaluation: the config's eval split in storage order, one epoch, remainder padded.
    pub fn eval(cfg: &DataConfig, rank: usize, world_size: usize) -> Self {
        LoaderOptions {
            split: cfg.eval_split.clone(),
            seed: 0,
            shuffle: false,
            bucket_by_length: false,
            epochs: Some(1),
            pad_remainder: true,
            ..Self::train(cfg, 0, rank, world_size)
        }
    }

    fn validate(&self) -> Result<()> {
        if self.global_batch == 0 {
            return Err(Error::config("data.batch_size", "must be > 0"));
        }
        if self.world_size == 0 || self.rank >= self.world_size {
            return Err(Error::config(
                "world_size",
                format!(
                    "rank {} is not in a world of {}",
                    self.rank, self.world_size
                ),
            ));
        }
        if !self.global_batch.is_multiple_of(self.world_size) {
            return Err(Error::config(
                "data.batch_size",
                format!(
                    "(global batch {}) must be divisible by the world size {}",
                    self.global_batch, self.world_size
                ),
            ));
        }
        if self.max_length == 0 {
            return Err(Error::config("data.max_length", "must be > 0"));
        }
        if self.prefetch_batches == 0 {
            return Err(Error::config("data.prefetch_batches", "must be > 0"));
        }
        if self.shuffle_window == 0 || self.shuffle_block == 0 {
            return Err(Error::config(
                "data.shuffle_window/data.shuffle_block",
                "must be > 0",
            ));
        }
        Ok(())
    }
}

/// One rank's slice of one global batch. Row-major `(rows, seq_len)`; `seq_len` is the longest row
/// of the batch (at most `max_length`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// Token ids `(rows, seq_len)`, padded with the tokenizer's pad id.
    pub input_ids: Vec<i64>,
    /// 1 for real tokens, 0 for padding `(rows, seq_len)`.
    pub attention_mask: Vec<i64>,
    /// Class label per row; [`IGNORE_LABEL`] for padding rows or unlabelled data.
    pub labels: Vec<i64>,
    /// Rows in this rank's slice.
    pub rows: usize,
    /// Padded sequence length.
    pub seq_len: usize,
    /// Dataset row index (within the split) of each row; `u64::MAX` for padding rows.
    pub sample_positions: Vec<u64>,
    /// Epoch this batch belongs to.
    pub epoch: u64,
    /// Real (non-padding) tokens in this slice.
    pub real_tokens: usize,
}

/// Resumable loader state: small, serde, versioned. `samples_in_epoch` counts GLOBAL samples, so a
/// cursor saved at one world size resumes the identical sequence at another.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cursor {
    /// [`CURSOR_VERSION`].
    pub version: u32,
    /// Order seed.
    pub seed: u64,
    /// Current epoch.
    pub epoch: u64,
    /// Global samples consumed in this epoch (including the ≤ W−1 dropped at an epoch's end).
    pub samples_in_epoch: u64,
    /// World size it was written with (0 = not written by a loader yet).
    pub world_size: usize,
    /// Global batch it was written with (0 = not written by a loader yet).
    pub global_batch: usize,
}

impl Cursor {
    /// The start of epoch 0.
    pub fn start(seed: u64) -> Cursor {
        Cursor {
            version: CURSOR_VERSION,
            seed,
            epoch: 0,
            samples_in_epoch: 0,
            world_size: 0,
            global_batch: 0,
        }
    }
}

/// What [`Loader::next_batch_within`] found.
#[derive(Debug)]
pub enum Fetched {
    /// The next batch.
    Batch(Batch),
    /// The loader has delivered its last batch.
    End,
    /// Nothing arrived within the wait; ask again.
    Waiting,
}

enum Msg {
    Batch(Batch, Cursor),
    End,
    Failed(Error),
}

/// Streams batches of one split for one rank. A background thread prefetches up to
/// `prefetch_batches` batches; dropping the loader stops it.
pub struct Loader {
    rx: Option<Receiver<Msg>>,
    handle: Option<JoinHandle<()>>,
    cursor: Cursor,
    finished: bool,
    batches_per_epoch: u64,
    split: String,
}

impl Loader {
    /// Start streaming `opts.split` of `ds` from `cursor`. `enc` tokenizes the text column; without
    /// it the dataset must be pre-tokenized. A pre-tokenized dataset is used as is when `enc` has the
    /// same fingerprint; otherwise its text is re-tokenized with `enc`.
    pub fn new(
        ds: &Dataset,
        enc: Option<Arc<TextEncoder>>,
        opts: LoaderOptions,
        cursor: Cursor,
    ) -> Result<Loader> {
        opts.validate()?;
        let rows = ds.split_rows(&opts.split)?;
        let m = ds.manifest();
        let same_tok = match (&enc, &m.tokenizer) {
            (Some(e), Some(t)) => e.fingerprint() == t.fingerprint,
            _ => false,
        };
        let use_ids =
            m.has_column(IDS_COLUMN) && (enc.is_none() || same_tok || !m.has_column(TEXT_COLUMN));
        let (pad_id, enc) = if use_ids {
            if let (Some(e), Some(t), false) = (&enc, &m.tokenizer, same_tok) {
                return Err(Error::tokenizer(
                    e.spec(),
                    format!(
                        "dataset {} is pre-tokenized with another tokenizer ({}) and has no text column; use that tokenizer or data.tokenizer = \"\"",
                        ds.uri(),
                        t.fingerprint
                    ),
                ));
            }
            (m.tokenizer.as_ref().map_or(0, |t| t.pad_id), None)
        } else {
            let e = enc.ok_or_else(|| {
                Error::config(
                    "data.tokenizer",
                    format!(
                        "is empty but dataset {} has no pre-tokenized input_ids",
                        ds.uri()
                    ),
                )
            })?;
            (e.pad_id(), Some(e.truncating(opts.max_length)?))
        };
        if cursor.version != CURSOR_VERSION {
            return Err(Error::Cursor {
                msg: format!(
                    "version {} is not supported (expected {CURSOR_VERSION})",
                    cursor.version
                ),
            });
        }
        if cursor.seed != opts.seed {
            return Err(Error::Cursor {
                msg: format!(
                    "written with seed {} but the loader uses seed {}",
                    cursor.seed, opts.seed
                ),
            });
        }
        if cursor.samples_in_epoch > rows {
            return Err(Error::Cursor {
                msg: format!(
                    "is at sample {} of an epoch, but split {:?} has only {rows} rows",
                    cursor.samples_in_epoch, opts.split
                ),
            });
        }
        let per_epoch = if opts.pad_remainder {
            batches_per_epoch_padded(rows, opts.global_batch)
        } else {
            batches_per_epoch(rows, opts.global_batch, opts.world_size)
        };
        if per_epoch == 0 {
            return Err(Error::config(
                "data.batch_size",
                format!(
                    "split {:?} has {rows} rows: not enough for one batch across {} ranks",
                    opts.split, opts.world_size
                ),
            ));
        }
        let num_classes = ds.num_classes();
        let has_label = m.has_column(LABEL_COLUMN);
        let producer = Producer {
            ds: ds.clone(),
            rgs: ds.row_groups(&opts.split)?,
            cols: Columns {
                text: !use_ids,
                label: has_label,
                ids: use_ids,
            },
            rows,
            num_classes,
            pad_id: i64::from(pad_id),
            keep_last: use_ids && m.tokenizer.as_ref().is_some_and(|t| t.add_special_tokens),
            pool: encode_pool(opts.tokenizer_threads)?,
            enc,
            plan: None,
            windows: BTreeMap::new(),
            opts: opts.clone(),
        };
        let (tx, rx) = sync_channel(opts.prefetch_batches);
        let start = cursor.clone();
        let handle = std::thread::Builder::new()
            .name(format!("wave-data-{}-r{}", opts.split, opts.rank))
            .spawn(move || producer.run(start, tx))
            .map_err(|e| Error::io("loader thread", e))?;
        let mut cursor = cursor;
        cursor.world_size = opts.world_size;
        cursor.global_batch = opts.global_batch;
        Ok(Loader {
            rx: Some(rx),
            handle: Some(handle),
            cursor,
            finished: false,
            batches_per_epoch: per_epoch,
            split: opts.split,
        })
    }

    /// The next batch; `None` once `epochs` are exhausted. Errors from the background thread
    /// (unreadable shard, bad row ...) surface here.
    pub fn next_batch(&mut self) -> Result<Option<Batch>> {
        loop {
            match self.next_batch_within(Duration::from_secs(3600))? {
                Fetched::Batch(b) => return Ok(Some(b)),
                Fetched::End => return Ok(None),
                Fetched::Waiting => {}
            }
        }
    }

    /// Like [`Loader::next_batch`], but waits at most `wait`: a caller that must react to
    /// something else (a stop signal) while data is slow polls with this.
    pub fn next_batch_within(&mut self, wait: Duration) -> Result<Fetched> {
        if self.finished {
            return Ok(Fetched::End);
        }
        let msg = self.rx.as_ref().map(|rx| rx.recv_timeout(wait));
        match msg {
            Some(Ok(Msg::Batch(b, c))) => {
                self.cursor = c;
                Ok(Fetched::Batch(b))
            }
            Some(Ok(Msg::End)) => {
                self.finished = true;
                Ok(Fetched::End)
            }
            Some(Ok(Msg::Failed(e))) => {
                self.finished = true;
                Err(e)
            }
            Some(Err(RecvTimeoutError::Timeout)) => Ok(Fetched::Waiting),
            Some(Err(RecvTimeoutError::Disconnected)) | None => {
                self.finished = true;
                Err(Error::LoaderStopped {
                    split: self.split.clone(),
                })
            }
        }
    }

    /// Loader state just after the last batch returned (what a checkpoint saves).
    pub fn cursor(&self) -> Cursor {
        self.cursor.clone()
    }

    /// Batches every rank receives per epoch.
    pub fn batches_per_epoch(&self) -> u64 {
        self.batches_per_epoch
    }
}

impl Drop for Loader {
    fn drop(&mut self) {
        // Closing the channel makes the producer's next send fail, which ends its loop.
        drop(self.rx.take());
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// One window, read: its row permutation and the decoded rows of its blocks.
struct WindowState {
    perm: Vec<u32>,
    /// Window-local first row of each block (window order).
    starts: Vec<u64>,
    /// Per block: (chunk, index of its first row in the chunk, dataset row of its first row).
    at: Vec<(usize, usize, u64)>,
    /// One chunk per row group the window touches: the rows of its blocks, in row order.
    chunks: Vec<RowGroupData>,
}

impl WindowState {
    /// (chunk, row in chunk, dataset row) of window-local row `r`.
    fn locate(&self, r: u64) -> (usize, usize, u64) {
        let k = self.starts.partition_point(|&s| s <= r) - 1;
        let (chunk, first, row) = self.at[k];
        let off = r - self.starts[k];
        (chunk, first + off as usize, row + off)
    }
}

struct Producer {
    ds: Dataset,
    opts: LoaderOptions,
    enc: Option<TextEncoder>,
    cols: Columns,
    rgs: Vec<RowGroupRef>,
    rows: u64,
    num_classes: Option<usize>,
    pad_id: i64,
    /// Rows end with a special token ([SEP]) that truncation must keep, as the tokenizer would.
    keep_last: bool,
    pool: Option<rayon::ThreadPool>,
    plan: Option<EpochPlan>,
    windows: BTreeMap<usize, WindowState>,
}

/// One row of a batch before padding.
struct Row {
    ids: Vec<i64>,
    label: i64,
    position: u64,
}

impl Producer {
    fn run(mut self, mut cursor: Cursor, tx: SyncSender<Msg>) {
        cursor.world_size = self.opts.world_size;
        cursor.global_batch = self.opts.global_batch;
        loop {
            let msg = match self.next(&mut cursor) {
                Ok(Some(b)) => Msg::Batch(b, cursor.clone()),
                Ok(None) => Msg::End,
                Err(e) => Msg::Failed(e),
            };
            let last = !matches!(msg, Msg::Batch(..));
            if tx.send(msg).is_err() || last {
                return;
            }
        }
    }

    fn next(&mut self, cursor: &mut Cursor) -> Result<Option<Batch>> {
        loop {
            if self.opts.epochs.is_some_and(|n| cursor.epoch >= n) {
                return Ok(None);
            }
            let o = &self.opts;
            let Some(slice) = rank_slice(
                self.rows,
                cursor.samples_in_epoch,
                o.global_batch,
                o.rank,
                o.world_size,
                o.pad_remainder,
            ) else {
                cursor.epoch += 1;
                cursor.samples_in_epoch = 0;
                continue;
            };
            let epoch = cursor.epoch;
            let batch = self.build(epoch, slice.positions.clone(), slice.pad_rows)?;
            if slice.next_pos >= self.rows {
                cursor.epoch += 1;
                cursor.samples_in_epoch = 0;
            } else {
                cursor.samples_in_epoch = slice.next_pos;
            }
            return Ok(Some(batch));
        }
    }

    /// Build the epoch plan when the epoch changes (and drop the previous epoch's windows).
    fn ensure_plan(&mut self, epoch: u64) {
        if self.plan.as_ref().is_none_or(|p| p.epoch != epoch) {
            let rg_rows: Vec<u64> = self.rgs.iter().map(|r| r.rows).collect();
            self.plan = Some(EpochPlan::new(
                &rg_rows,
                self.opts.seed,
                epoch,
                self.opts.shuffle,
                self.opts.shuffle_window,
                self.opts.shuffle_block,
            ));
            self.windows.clear();
        }
    }

    /// Read window `w` of the current plan: the rows of all its blocks, one read per row group
    /// touched (its blocks' row ranges), all row groups concurrently.
    fn load_window(&mut self, w: usize) -> Result<()> {
        let Some(plan) = self.plan.as_ref() else {
            return Err(Error::LoaderStopped {
                split: self.opts.split.clone(),
            });
        };
        let blocks: Vec<BlockRef> = plan.window_blocks(w).collect();
        // Row group → its blocks (window index, offset, rows), in row order.
        let mut by_rg: BTreeMap<usize, Vec<(usize, u64, u64)>> = BTreeMap::new();
        for (k, b) in blocks.iter().enumerate() {
            by_rg
                .entry(b.row_group)
                .or_default()
                .push((k, b.offset, b.rows));
        }
        let mut at = vec![(0usize, 0usize, 0u64); blocks.len()];
        let mut reads = Vec::with_capacity(by_rg.len());
        for (chunk, (g, mut parts)) in by_rg.into_iter().enumerate() {
            parts.sort_unstable_by_key(|&(_, offset, _)| offset);
            let mut ranges: Vec<std::ops::Range<u64>> = Vec::new();
            let mut in_chunk = 0usize;
            for (k, offset, rows) in parts {
                at[k] = (chunk, in_chunk, blocks[k].first_row);
                in_chunk += rows as usize;
                match ranges.last_mut() {
                    Some(r) if r.end == offset => r.end += rows,
                    _ => ranges.push(offset..offset + rows),
                }
            }
            reads.push((self.rgs[g], ranges));
        }
        let mut starts = Vec::with_capacity(blocks.len());
        let mut acc = 0;
        for b in &blocks {
            starts.push(acc);
            acc += b.rows;
        }
        let chunks = self.ds.read_rows(&self.opts.split, &reads, self.cols)?;
        let mut state = WindowState {
            perm: window_permutation(plan, w),
            starts,
            at,
            chunks,
        };
        if self.opts.bucket_by_length {
            let lengths: Vec<usize> = (0..acc)
                .map(|r| {
                    let (c, i, _) = state.locate(r);
                    state.chunks[c].length_of(i)
                })
                .collect();
            bucket_by_length(
                &mut state.perm,
                &lengths,
                plan.windows[w].start,
                self.opts.global_batch,
                plan.seed,
                plan.epoch,
                w,
            );
        }
        self.windows.insert(w, state);
        Ok(())
    }

    /// Build this rank's batch from epoch positions `positions` plus `pad_rows` padding rows.
    fn build(
        &mut self,
        epoch: u64,
        positions: std::ops::Range<u64>,
        pad_rows: usize,
    ) -> Result<Batch> {
        self.ensure_plan(epoch);
        // (window, chunk, row in chunk, dataset row) for every position.
        let mut locs = Vec::with_capacity((positions.end - positions.start) as usize);
        for p in positions.clone() {
            let (w, local) = match self.plan.as_ref() {
                Some(plan) => {
                    let w = plan.window_of(p);
                    (w, p - plan.windows[w].start)
                }
                None => {
                    return Err(Error::LoaderStopped {
                        split: self.opts.split.clone(),
                    })
                }
            };
            if !self.windows.contains_key(&w) {
                self.load_window(w)?;
            }
            let state = &self.windows[&w];
            let (c, i, row) = state.locate(u64::from(state.perm[local as usize]));
            locs.push((w, c, i, row));
        }
        // Windows before this batch's first are done with.
        if let Some(&(first_w, ..)) = locs.first() {
            self.windows.retain(|&w, _| w >= first_w);
        }
        let mut texts: Vec<&str> = Vec::new();
        let mut rows: Vec<Row> = Vec::with_capacity(locs.len() + pad_rows);
        for &(w, c, off, position) in &locs {
            let d = &self.windows[&w].chunks[c];
            let label = match &d.label {
                Some(l) => {
                    let v = l.value(off);
                    if let Some(n) = self.num_classes.filter(|&n| v < 0 || v as usize >= n) {
                        return Err(Error::LabelOutOfRange {
                            uri: d.shard_uri.clone(),
                            row: position,
                            label: v,
                            num_classes: n,
                        });
                    }
                    v
                }
                None => IGNORE_LABEL,
            };
            let ids = match (&d.ids, &d.text) {
                (Some(_), _) => truncate_ids(
                    d.ids_of(off).unwrap_or(&[]),
                    self.opts.max_length,
                    self.keep_last,
                ),
                (None, Some(t)) => {
                    let s = t.value(off);
                    if s.is_empty() {
                        return Err(Error::bad_input(&d.shard_uri, Some(position), "empty text"));
                    }
                    texts.push(prefix_for(s, self.opts.max_length));
                    Vec::new()
                }
                (None, None) => Vec::new(),
            };
            rows.push(Row {
                ids,
                label,
                position,
            });
        }
        if let Some(enc) = &self.enc {
            let encoded = enc.encode_batch(&texts, true, self.pool.as_ref())?;
            for (row, ids) in rows.iter_mut().zip(encoded) {
                row.ids = ids.into_iter().map(i64::from).collect();
            }
        }
        for _ in 0..pad_rows {
            rows.push(Row {
                ids: Vec::new(),
                label: IGNORE_LABEL,
                position: u64::MAX,
            });
        }
        Ok(pad_batch(rows, self.pad_id, epoch))
    }
}

/// Cut very long texts before tokenizing: a row keeps at most `max_length` tokens, and the first
/// `max_length` tokens of real text lie far inside the first `1024 + 32*max_length` bytes (tokens
/// average 4–6 bytes of English). Saves tokenizing whole books to keep 128 tokens.
fn prefix_for(s: &str, max_length: usize) -> &str {
    let mut cut = 1024 + 32 * max_length;
    if s.len() <= cut {
        return s;
    }
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    &s[..cut]
}

/// Truncate pre-tokenized ids to `max` tokens; with `keep_last` the final special token survives,
/// matching what the tokenizer's own truncation does for `[CLS] text [SEP]`.
fn truncate_ids(ids: &[i32], max: usize, keep_last: bool) -> Vec<i64> {
    let mut out: Vec<i64> = ids[..ids.len().min(max)]
        .iter()
        .map(|&x| i64::from(x))
        .collect();
    if keep_last && ids.len() > max && max > 0 {
        out[max - 1] = i64::from(ids[ids.len() - 1]);
    }
    out
}

fn pad_batch(rows: Vec<Row>, pad_id: i64, epoch: u64) -> Batch {
    let seq_len = rows.iter().map(|r| r.ids.len()).max().unwrap_or(0).max(1);
    let n = rows.len();
    let mut b = Batch {
        input_ids: vec![pad_id; n * seq_len],
        attention_mask: vec![0; n * seq_len],
        labels: Vec::with_capacity(n),
        rows: n,
        seq_len,
        sample_positions: Vec::with_capacity(n),
        epoch,
        real_tokens: 0,
    };
    for (i, r) in rows.into_iter().enumerate() {
        let at = i * seq_len;
        b.input_ids[at..at + r.ids.len()].copy_from_slice(&r.ids);
        b.attention_mask[at..at + r.ids.len()].fill(1);
        b.real_tokens += r.ids.len();
        b.labels.push(r.label);
        b.sample_positions.push(r.position);
    }
    b
}
