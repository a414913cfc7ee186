//! `prepare`: raw inputs → Parquet shards + `manifest.json` in any object store, streamed.
//!
//! Two passes, with memory bounded whatever the corpus size:
//! 1. **Read and spool.** [`read_sources`] streams every input (globs expanded); each record is
//!    checked (text, label) and appended to a temporary bucket file by its shuffle key (see
//!    [`crate::shuffle`]). Nothing is written to the output until the whole input has proved
//!    readable, so bad input (a row, a label, a glob that matches nothing, an empty corpus) fails
//!    with nothing written.
//! 2. **Write.** The spool is read back in key order; each document is routed to its split,
//!    tokenized in parallel chunks when asked, packed when asked, and written into row groups and
//!    shards that are stored as they fill.
//!
//! Guarantees:
//! - **Shuffled rows.** By default rows are written in a seeded random order: the sort order of
//!   a 64-bit hash of `(seed, split, position in the source)`. Sources grouped by class, by file
//!   or by topic (archives with one folder per class, several input files) come out mixed, so
//!   every row group is a fair sample of the split. `keep_order` writes the source order instead.
//! - **Deterministic**: the same inputs and options give byte-identical shards and manifest (the
//!   order is a function of the seed and the source order only, not of the bucket count, memory
//!   budget or thread count; writer properties are fixed; no timestamps; a constant `created_by`).
//! - **Atomic**: shards are written first and the manifest last, so a prepare killed at any moment
//!   leaves no manifest (nothing a reader accepts); on an error the shards written so far are
//!   deleted. Temporary files live in a `tempfile` folder removed on success and on error.
//! - **Validation carve**: when the source has no `validation` split, `validation_fraction` of
//!   `train` is moved there. Shuffled: per class (or over all documents when unlabelled) exactly
//!   `round(n * fraction)` documents, taken at evenly spaced ranks of the class in the shuffled
//!   order (rank `r` goes when `round((r+1)·f) > round(r·f)`). The documents at fixed ranks of a
//!   uniformly random order are a uniformly random subset, so this is a stratified random sample,
//!   decided while streaming; and unlike taking the first `round(n·f)` of each class, it leaves no
//!   stretch of train where one class's quota is full and the other's is not (a run of one class).
//!   With `keep_order`: each document independently with probability `fraction`, by a seeded
//!   hash of its position (stable under streaming, approximate counts).
//! - **Packing** (`pack_length`) happens here, not in the loader: documents are tokenized without
//!   special tokens, joined with `[SEP]` and cut into rows of exactly N ids (the last row may be
//!   shorter), after the shuffle, so packed rows mix documents from the whole corpus. Doing it at
//!   prepare time keeps every streamed row a fixed, addressable unit, so the loader's order stays a
//!   pure function of row index and a cursor is just a row count.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Instant;

use crate::error::{Error, Result};
use crate::manifest::{
    Column, ColumnType, Manifest, PrepareInfo, TokenizerInfo, FORMAT_VERSION, IDS_COLUMN,
    LABEL_COLUMN, MANIFEST_FILE, TEXT_COLUMN,
};
use crate::order::SplitMix64;
use crate::shuffle::{Spool, Spooled};
use crate::sources::{read_sources, RawLabel, SourceOptions, SourceRecord, MAX_CLASSES};
use crate::store::Location;
use crate::tokenize::{encode_pool, TextEncoder};
use crate::writer::{SplitWriter, WriterConfig, TOKENIZE_CHUNK_BYTES_PER_THREAD};

pub use crate::writer::PAGE_ROWS;

/// Spool bytes aimed at per bucket file when choosing the bucket count from the input size.
const BUCKET_TARGET_BYTES: u64 = 32 << 20;
/// Assumed expansion of gzip-compressed inputs when estimating the corpus size.
const GZIP_RATIO: u64 = 4;

/// Options of [`prepare`].
#[derive(Debug, Clone)]
pub struct PrepareOptions {
    /// What to read.
    pub source: SourceOptions,
    /// Output dataset root (path or URL).
    pub out: String,
    /// Dataset name (default: the format for archives, else the first input's file stem).
    pub name: Option<String>,
    /// Splits to write (default: the format's standard splits, or every split found).
    pub splits: Option<Vec<String>>,
    /// Pre-tokenize into `input_ids` with this tokenizer (path or name).
    pub tokenizer: Option<String>,
    /// Pack documents into rows of exactly this many ids (needs `tokenizer`).
    pub pack_length: Option<usize>,
    /// Fraction of `train` moved to `validation` when the source has no validation split; 0
    /// disables. See the module documentation for how documents are chosen.
    pub validation_fraction: f64,
    /// Seed of the row shuffle and of the validation carve.
    pub seed: u64,
    /// Write rows in source order instead of a seeded random order.
    pub keep_order: bool,
    /// At most this many rows per shard.
    pub shard_rows: Option<u64>,
    /// At most about this many (uncompressed) bytes per shard.
    pub shard_bytes: u64,
    /// Rows per row group (the unit of per-rank reads).
    pub row_group_rows: usize,
    /// Threads for pre-tokenization.
    pub tokenizer_threads: usize,
    /// Replace an existing dataset at `out` (its manifest is removed once the input has been read
    /// successfully, before new shards are written).
    pub overwrite: bool,
    /// Folder for the temporary spool (about the size of the corpus' text); default: the system's
    /// temporary folder (`TMPDIR`).
    pub temp_dir: Option<PathBuf>,
    /// Spool bytes sorted in memory at once (the shuffle's memory budget).
    pub shuffle_memory_bytes: u64,
}

impl PrepareOptions {
    /// Defaults: shuffled, 5% validation, seed 0, 128 MiB shards, 1024-row row groups, 1 thread,
    /// a 128 MiB shuffle budget.
    pub fn new(source: SourceOptions, out: impl Into<String>) -> Self {
        PrepareOptions {
            source,
            out: out.into(),
            name: None,
            splits: None,
            tokenizer: None,
            pack_length: None,
            validation_fraction: 0.05,
            seed: 0,
            keep_order: false,
            shard_rows: None,
            shard_bytes: 128 << 20,
            row_group_rows: 1024,
            tokenizer_threads: 1,
            overwrite: false,
            temp_dir: None,
            shuffle_memory_bytes: 128 << 20,
        }
    }

    fn validate(&self) -> Result<()> {
        if !(0.0..1.0).contains(&self.validation_fraction) {
            return Err(Error::config(
                "--validation-fraction",
                format!("must be in [0, 1), got {}", self.validation_fraction),
            ));
        }
        if self.row_group_rows == 0 {
            return Err(Error::config("--row-group-rows", "must be > 0"));
        }
        if self.shard_bytes == 0 || self.shard_rows == Some(0) {
            return Err(Error::config("--shard-rows/--shard-bytes", "must be > 0"));
        }
        if self.tokenizer_threads == 0 {
            return Err(Error::config("--tokenizer-threads", "must be > 0"));
        }
        if self.shuffle_memory_bytes == 0 {
            return Err(Error::config("shuffle_memory_bytes", "must be > 0"));
        }
        match (self.pack_length, &self.tokenizer) {
            (Some(n), _) if n < 2 => Err(Error::config("--pack-length", "must be >= 2")),
            (Some(_), None) => Err(Error::config("--pack-length", "needs --tokenizer")),
            _ => Ok(()),
        }
    }
}

/// What [`prepare`] produced.
#[derive(Debug, Clone)]
pub struct PrepareReport {
    /// Dataset root.
    pub uri: String,
    /// The manifest written.
    pub manifest: Manifest,
}

/// Label id of an unlabelled record in the spool.
const NO_LABEL: u32 = u32::MAX;

/// Distinct labels in order of first appearance, with where each was first seen; turned into
/// class names and indices once the whole input has been read.
#[derive(Default)]
struct LabelTable {
    ids: HashMap<RawLabel, u32>,
    seen: Vec<(RawLabel, String, u64)>,
    first_unlabelled: Option<(String, u64)>,
}

impl LabelTable {
    /// The provisional id of a record's label ([`NO_LABEL`] when it has none).
    fn observe(&mut self, label: Option<RawLabel>, source: &str, row: u64) -> Result<u32> {
        let Some(label) = label else {
            if self.first_unlabelled.is_none() {
                self.first_unlabelled = Some((source.to_string(), row));
            }
            return Ok(NO_LABEL);
        };
        if let Some(&id) = self.ids.get(&label) {
            return Ok(id);
        }
        if self.seen.len() >= MAX_CLASSES {
            return Err(Error::bad_input(
                source,
                Some(row),
                format!("label {label} would be class {MAX_CLASSES}; at most {MAX_CLASSES} distinct labels are supported"),
            ));
        }
        let id = self.seen.len() as u32;
        self.ids.insert(label.clone(), id);
        self.seen.push((label, source.to_string(), row));
        Ok(id)
    }

    /// Class names and the provisional id → class index map (`None`: unlabelled). Strings become
    /// sorted names; integers are indices into `given` names or into `"0".."max"`.
    fn resolve(&self, given: Option<Vec<String>>) -> Result<Option<(Vec<String>, Vec<i64>)>> {
        if self.seen.is_empty() {
            return Ok(None);
        }
        if let Some((source, row)) = &self.first_unlabelled {
            return Err(Error::bad_input(
                source,
                Some(*row),
                "label missing (other rows have one)",
            ));
        }
        let first_of = |want_str: bool| {
            self.seen
                .iter()
                .find(|(l, _, _)| matches!(l, RawLabel::Str(_)) == want_str)
        };
        if let (Some((s, ss, sr)), Some((i, is, ir))) = (first_of(true), first_of(false)) {
            return Err(Error::bad_input(
                ss,
                Some(*sr),
                format!("labels mix numbers and strings: {s} here, {i} at {is}, row {ir}"),
            ));
        }
        if first_of(true).is_some() {
            let mut names: Vec<&str> = self
                .seen
                .iter()
                .filter_map(|(l, _, _)| match l {
                    RawLabel::Str(s) => Some(s.as_str()),
                    RawLabel::Int(_) => None,
                })
                .collect();
            names.sort_unstable();
            let index = |s: &str| names.binary_search(&s).map_or(0, |i| i as i64);
            let map = self
                .seen
                .iter()
                .map(|(l, _, _)| match l {
                    RawLabel::Str(s) => index(s),
                    RawLabel::Int(_) => 0,
                })
                .collect();
            return Ok(Some((names.into_iter().map(String::from).collect(), map)));
        }
        let ints: Vec<i64> = self
            .seen
            .iter()
            .map(|(l, _, _)| match l {
                RawLabel::Int(i) => *i,
                RawLabel::Str(_) => 0,
            })
            .collect();
        let names = given.unwrap_or_else(|| {
            let max = ints.iter().copied().max().unwrap_or(0);
            (0..=max).map(|i| i.to_string()).collect()
        });
        for ((_, source, row), &i) in self.seen.iter().zip(&ints) {
            if i as usize >= names.len() {
                return Err(Error::LabelOutOfRange {
                    uri: source.clone(),
                    row: *row,
                    label: i,
                    num_classes: names.len(),
                });
            }
        }
        Ok(Some((names, ints)))
    }
}

/// FNV-1a of a split name: a stable stream id for its shuffle keys.
fn name_hash(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Shuffle key of the `ordinal`-th record of split `split_hash`.
fn shuffle_key(seed: u64, split_hash: u64, ordinal: u64) -> u64 {
    SplitMix64::derive(seed, &[4, split_hash, ordinal]).next_u64()
}

/// Bucket bits for a corpus of about `bytes` of text: buckets of about [`BUCKET_TARGET_BYTES`].
fn bucket_bits(bytes: u64) -> u32 {
    let buckets = bytes.div_ceil(BUCKET_TARGET_BYTES).max(1);
    (64 - (buckets - 1).leading_zeros()).min(8)
}

/// Per split seen in the input: name and records spooled.
struct SplitCounts {
    names: Vec<String>,
    rows: Vec<u64>,
}

impl SplitCounts {
    fn id(&mut self, name: &str) -> Result<u16> {
        if let Some(i) = self.names.iter().position(|n| n == name) {
            return Ok(i as u16);
        }
        if self.names.len() >= usize::from(u16::MAX) {
            return Err(Error::config("--input", "too many splits"));
        }
        self.names.push(name.to_string());
        self.rows.push(0);
        Ok((self.names.len() - 1) as u16)
    }
    fn rows_of(&self, name: &str) -> u64 {
        self.names
            .iter()
            .position(|n| n == name)
            .map_or(0, |i| self.rows[i])
    }
}

/// Prepare a dataset; see the module documentation for the guarantees.
pub fn prepare(opts: &PrepareOptions) -> Result<PrepareReport> {
    opts.validate()?;
    let local_missing = !opts.out.contains("://") && !std::path::Path::new(&opts.out).exists();
    let loc = Location::parse(&opts.out, true)?;
    let result = prepare_into(opts, &loc);
    if result.is_err() && local_missing {
        // Only removes the folder if this run created it and left it empty.
        let _ = std::fs::remove_dir(&opts.out);
    }
    result
}

fn prepare_into(opts: &PrepareOptions, loc: &Location) -> Result<PrepareReport> {
    let had_manifest = loc.size(MANIFEST_FILE)?.is_some();
    if had_manifest && !opts.overwrite {
        return Err(Error::config(
            "--out",
            format!(
                "{} already holds a dataset (manifest.json); pass --overwrite to replace it",
                loc.uri
            ),
        ));
    }
    let enc = opts
        .tokenizer
        .as_deref()
        .map(TextEncoder::load)
        .transpose()?;
    let pack = match (opts.pack_length, &enc) {
        (Some(n), Some(e)) => Some((
            n,
            e.sep_id().ok_or_else(|| {
                Error::tokenizer(
                    e.spec(),
                    "has no [SEP]/</s> token to separate packed documents",
                )
            })?,
        )),
        _ => None,
    };
    let pool = encode_pool(opts.tokenizer_threads)?;
    let tmp = {
        let mut b = tempfile::Builder::new();
        b.prefix("wave-prepare-");
        let dir = opts.temp_dir.clone().unwrap_or_else(std::env::temp_dir);
        b.tempdir_in(&dir).map_err(|e| Error::io(&dir, e))?
    };

    // Pass 1: read, check and spool every record.
    let started = Instant::now();
    let inputs = crate::sources::expand_inputs(&opts.source)?;
    let estimate: u64 = inputs
        .iter()
        .map(|(_, p)| {
            let size = std::fs::metadata(p).map_or(0, |m| m.len());
            let name = p.to_string_lossy();
            if name.ends_with(".gz") || name.ends_with(".tgz") {
                size * GZIP_RATIO
            } else {
                size
            }
        })
        .sum();
    let bits = if opts.keep_order {
        0
    } else {
        bucket_bits(estimate)
    };
    let mut spool = Spool::create(&tmp.path().join("spool"), bits)?;
    let wanted_known: Option<Vec<String>> = opts.splits.clone().or_else(|| {
        opts.source
            .format
            .default_splits()
            .map(|d| d.iter().map(|s| s.to_string()).collect())
    });
    let mut counts = SplitCounts {
        names: Vec::new(),
        rows: Vec::new(),
    };
    let mut labels = LabelTable::default();
    let summary = read_sources(&opts.source, &mut |rec: SourceRecord<'_>| {
        if wanted_known
            .as_ref()
            .is_some_and(|w| !w.iter().any(|s| s == rec.split))
        {
            return Ok(());
        }
        let sid = counts.id(rec.split)?;
        let ordinal = counts.rows[usize::from(sid)];
        if opts.source.max_rows.is_some_and(|m| ordinal >= m as u64) {
            return Ok(());
        }
        let label = labels.observe(rec.label, rec.source, rec.row)?;
        counts.rows[usize::from(sid)] += 1;
        let key = if opts.keep_order {
            ordinal
        } else {
            shuffle_key(opts.seed, name_hash(rec.split), ordinal)
        };
        spool.push(&Spooled {
            key,
            ordinal,
            split: sid,
            label,
            text: &rec.text,
        })
    })?;
    let (records, spooled) = spool.totals();
    let buckets = spool.finish()?;
    tracing::info!(
        "read {records} records ({:.1} MB of text) from {} files in {:.1}s",
        spooled as f64 / 1e6,
        summary.files.len(),
        started.elapsed().as_secs_f64()
    );

    // Decide the output splits and the classes before anything is written.
    let wanted: Vec<String> =
        wanted_known.unwrap_or_else(|| summary.splits.iter().cloned().collect());
    let carve = opts.validation_fraction > 0.0
        && !summary.splits.contains("validation")
        && wanted.iter().any(|s| s == "train")
        && (opts.splits.is_none() || wanted.iter().any(|s| s == "validation"));
    let mut outputs: Vec<String> = Vec::new();
    for name in &wanted {
        if name == "validation" && carve {
            continue;
        }
        if !summary.splits.contains(name) {
            return Err(Error::MissingSplit {
                location: summary.origin.clone(),
                split: name.clone(),
                available: summary.splits.iter().cloned().collect(),
            });
        }
        if counts.rows_of(name) == 0 {
            return Err(Error::bad_input(
                &summary.origin,
                None,
                format!("split {name:?} has no rows"),
            ));
        }
        outputs.push(name.clone());
    }
    if carve {
        outputs.push("validation".into());
    }
    outputs.sort();
    outputs.dedup();
    let classes = labels.resolve(summary.label_names.clone())?;
    let labelled = classes.is_some() && opts.pack_length.is_none();
    let class_of = |provisional: u32| -> i64 {
        classes
            .as_ref()
            .and_then(|(_, map)| map.get(provisional as usize).copied())
            .unwrap_or(0)
    };

    // Pass 2: the spool in key order → split writers → shards.
    if had_manifest {
        loc.delete(MANIFEST_FILE)?;
    }
    let shards_dir = tmp.path().join("shards");
    std::fs::create_dir_all(&shards_dir).map_err(|e| Error::io(&shards_dir, e))?;
    let cfg = WriterConfig {
        loc,
        tmp: &shards_dir,
        enc: enc.as_ref(),
        pool: pool.as_ref(),
        chunk_bytes: TOKENIZE_CHUNK_BYTES_PER_THREAD * opts.tokenizer_threads,
        pack,
        classes: labelled
            .then(|| classes.as_ref().map(|(n, _)| n.len()))
            .flatten(),
        row_group_rows: opts.row_group_rows,
        shard_rows: opts.shard_rows,
        shard_bytes: opts.shard_bytes,
    };
    let mut writers: Vec<SplitWriter<'_>> =
        outputs.iter().map(|n| SplitWriter::new(n, &cfg)).collect();
    let writer_of = |name: &str| outputs.iter().position(|n| n == name);
    let route: Vec<Option<usize>> = counts.names.iter().map(|n| writer_of(n)).collect();
    let train_sid = counts
        .names
        .iter()
        .position(|n| n == "train")
        .map(|i| i as u16);
    let validation = writer_of("validation");
    // Validation carve: in the shuffled order, every `1/fraction`-th document of each class (rank
    // r goes when round((r+1)f) > round(rf)); with keep_order, a hash threshold per document.
    let f = opts.validation_fraction;
    let mut rank: HashMap<u32, u64> = HashMap::new();
    let threshold = (f * 2f64.powi(64)) as u64;
    let mut emit = |r: Spooled<'_>| -> Result<()> {
        let Some(mut dest) = route[usize::from(r.split)] else {
            return Ok(());
        };
        if carve && Some(r.split) == train_sid {
            let to_validation = if opts.keep_order {
                SplitMix64::derive(opts.seed, &[5, r.ordinal]).next_u64() < threshold
            } else {
                let k = rank.entry(r.label).or_default();
                let step = |i: u64| (i as f64 * f + 0.5).floor();
                let take = step(*k + 1) > step(*k);
                *k += 1;
                take
            };
            if to_validation {
                dest = validation.unwrap_or(dest);
            }
        }
        writers[dest].push(r.text, class_of(r.label))
    };
    let written = if opts.keep_order {
        buckets.drain_in_order(&mut emit)
    } else {
        buckets.drain_sorted(opts.shuffle_memory_bytes, &mut emit)
    }
    .and_then(|()| {
        let mut splits = std::collections::BTreeMap::new();
        for (i, w) in writers.iter_mut().enumerate() {
            splits.insert(outputs[i].clone(), w.finish()?);
        }
        Ok(splits)
    });
    let result = written.and_then(|splits| {
        let mut schema = Vec::new();
        if opts.pack_length.is_none() {
            schema.push(Column {
                name: TEXT_COLUMN.into(),
                ty: ColumnType::Utf8,
            });
        }
        if labelled {
            schema.push(Column {
                name: LABEL_COLUMN.into(),
                ty: ColumnType::Int64,
            });
        }
        if enc.is_some() {
            schema.push(Column {
                name: IDS_COLUMN.into(),
                ty: ColumnType::ListInt32,
            });
        }
        let mut manifest = Manifest {
            format: "wave-data".into(),
            format_version: FORMAT_VERSION,
            name: opts.name.clone().unwrap_or_else(|| default_name(opts)),
            schema,
            label_names: if labelled {
                classes.as_ref().map(|(n, _)| n.clone())
            } else {
                None
            },
            splits,
            sources: summary.files.clone(),
            tokenizer: enc.as_ref().map(|e| TokenizerInfo {
                fingerprint: e.fingerprint(),
                sha256: e.sha256().to_string(),
                vocab_size: e.vocab_size(),
                pad_id: e.pad_id(),
                add_special_tokens: opts.pack_length.is_none(),
            }),
            pack_length: opts.pack_length,
            prepare: PrepareInfo {
                format: opts.source.format.name().into(),
                seed: opts.seed,
                shuffled: !opts.keep_order,
                validation_fraction: if carve { opts.validation_fraction } else { 0.0 },
                row_group_rows: opts.row_group_rows,
            },
            fingerprint: String::new(),
        };
        manifest.fingerprint = manifest.compute_fingerprint();
        loc.put(MANIFEST_FILE, manifest.to_json()?)?;
        Ok(manifest)
    });
    match result {
        Ok(manifest) => {
            tracing::info!(
                "wrote {} in {:.1}s",
                loc.uri,
                started.elapsed().as_secs_f64()
            );
            Ok(PrepareReport {
                uri: loc.uri.clone(),
                manifest,
            })
        }
        Err(e) => {
            for rel in writers.iter().flat_map(|w| w.uploaded.iter()) {
                if let Err(d) = loc.delete(rel) {
                    tracing::warn!("could not remove partial shard {}: {d}", loc.uri_of(rel));
                }
            }
            Err(e)
        }
    }
}

/// The format for archives, else the first input's file stem (its folder's name for a glob).
fn default_name(opts: &PrepareOptions) -> String {
    use crate::sources::InputFormat::*;
    let stem = |input: &str| -> Option<String> {
        let path = std::path::Path::new(input.rsplit_once('=').map_or(input, |(_, p)| p));
        let name = path.file_name()?.to_string_lossy().into_owned();
        let name = if name.contains(['*', '?', '[']) {
            path.parent()?.file_name()?.to_string_lossy().into_owned()
        } else {
            name
        };
        name.split('.')
            .next()
            .filter(|s| !s.is_empty())
            .map(String::from)
    };
    match opts.source.format {
        AgNews => "agnews".into(),
        Imdb => "imdb".into(),
        _ => opts
            .source
            .inputs
            .first()
            .and_then(|i| stem(i))
            .unwrap_or_else(|| "dataset".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_count_follows_the_corpus_size() {
        assert_eq!(bucket_bits(0), 0);
        assert_eq!(bucket_bits(BUCKET_TARGET_BYTES), 0);
        assert_eq!(bucket_bits(BUCKET_TARGET_BYTES + 1), 1);
        assert_eq!(bucket_bits(100 * BUCKET_TARGET_BYTES), 7);
        assert_eq!(bucket_bits(u64::MAX / 2), 8);
    }

    #[test]
    fn labels_resolve_to_sorted_names_or_indices() {
        let mut t = LabelTable::default();
        let ids: Vec<u32> = ["pos", "neg", "pos", "mid"]
            .iter()
            .map(|s| {
                t.observe(Some(RawLabel::Str(s.to_string())), "f", 1)
                    .expect("ok")
            })
            .collect();
        assert_eq!(ids, [0, 1, 0, 2]);
        let (names, map) = t.resolve(None).expect("ok").expect("labelled");
        assert_eq!(names, ["mid", "neg", "pos"]);
        assert_eq!(map, [2, 1, 0]);
        let mut t = LabelTable::default();
        t.observe(Some(RawLabel::Int(3)), "f", 1).expect("ok");
        assert_eq!(t.resolve(None).expect("ok").expect("labelled").0.len(), 4);
        let err = t
            .resolve(Some(vec!["a".into(), "b".into()]))
            .expect_err("3 of 2 classes")
            .to_string();
        assert!(
            err.contains("label 3") && err.contains("2 classes"),
            "{err}"
        );
        t.observe(Some(RawLabel::Str("x".into())), "g", 9)
            .expect("ok");
        let err = t.resolve(None).expect_err("mixed").to_string();
        assert!(err.contains("g, row 9") && err.contains("mix"), "{err}");
    }
}
