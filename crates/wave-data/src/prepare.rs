//! `prepare`: raw inputs → Parquet shards + `manifest.json` in any object store.
//!
//! Guarantees:
//! - **Deterministic**: the same inputs and options give byte-identical shards and manifest (source
//!   order is fixed, the split is seeded, writer properties are fixed, no timestamps, a constant
//!   `created_by`, file names only in the manifest).
//! - **Atomic**: shards are written first and the manifest last; on any failure the shards written so
//!   far are deleted, so no manifest ever points at missing or partial shards. Local files are
//!   written under a temporary name and renamed by `object_store`'s `LocalFileSystem`.
//! - **Packing** (`pack_length`) happens here, not in the loader: documents are tokenized without
//!   special tokens, joined with `[SEP]` and cut into rows of exactly N ids (the last row may be
//!   shorter). Doing it at prepare time keeps every streamed row a fixed, addressable unit, so the
//!   streaming order stays a pure function of row index and a cursor is just a row count.

use std::sync::Arc;

use arrow_array::builder::{Int32Builder, ListBuilder};
use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};

use crate::error::{Error, Result};
use crate::manifest::{
    sha256_hex, Column, ColumnType, Manifest, PrepareInfo, Shard, Split, TokenizerInfo,
    FORMAT_VERSION, IDS_COLUMN, LABEL_COLUMN, MANIFEST_FILE, TEXT_COLUMN,
};
use crate::order::SplitMix64;
use crate::sources::{read_sources, Record, SourceOptions};
use crate::store::Location;
use crate::tokenize::{encode_pool, TextEncoder};

/// Row groups are also cut when their (uncompressed) data passes this size, so one row group of
/// long documents stays a small read.
pub const ROW_GROUP_MAX_BYTES: u64 = 16 << 20;
/// `created_by` written into every shard: constant, so shards do not change with the crate version.
pub const CREATED_BY: &str = "wave-data (format 1)";

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
    /// Fraction of `train` moved to `validation` (stratified by label) when the source has no
    /// validation split; 0 disables.
    pub validation_fraction: f64,
    /// Seed of that split.
    pub seed: u64,
    /// At most this many rows per shard.
    pub shard_rows: Option<u64>,
    /// At most about this many (uncompressed) bytes per shard.
    pub shard_bytes: u64,
    /// Rows per row group (the unit of shuffling and of rank reads).
    pub row_group_rows: usize,
    /// Threads for pre-tokenization.
    pub tokenizer_threads: usize,
    /// Replace an existing dataset at `out` (its manifest is removed before new shards are written).
    pub overwrite: bool,
}

impl PrepareOptions {
    /// Defaults: 5% validation, seed 0, 128 MiB shards, 1024-row row groups, 1 thread.
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
            shard_rows: None,
            shard_bytes: 128 << 20,
            row_group_rows: 1024,
            tokenizer_threads: 1,
            overwrite: false,
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
        match (self.pack_length, &self.tokenizer) {
            (Some(n), _) if n < 2 => Err(Error::config("--pack-length", "must be >= 2")),
            (Some(_), None) => Err(Error::config("--pack-length", "needs --tokenizer")),
            _ => Ok(()),
        }
    }
}

/// Which rows of `labels` go to validation: per label (in label order) the rows are shuffled with a
/// seeded RNG and the first `round(n * fraction)` are taken. Pure function of its inputs.
pub fn stratified_split(labels: &[Option<i64>], fraction: f64, seed: u64) -> Vec<bool> {
    let mut groups: std::collections::BTreeMap<Option<i64>, Vec<usize>> =
        std::collections::BTreeMap::new();
    for (i, l) in labels.iter().enumerate() {
        groups.entry(*l).or_default().push(i);
    }
    let mut val = vec![false; labels.len()];
    for (label, mut idx) in groups {
        SplitMix64::derive(seed, &[3, label.map_or(u64::MAX, |l| l as u64)]).shuffle(&mut idx);
        let n = (idx.len() as f64 * fraction).round() as usize;
        for &i in &idx[..n.min(idx.len())] {
            val[i] = true;
        }
    }
    val
}

/// One split's columns, ready to write.
struct SplitRows {
    texts: Option<Vec<String>>,
    labels: Option<Vec<i64>>,
    ids: Option<Vec<Vec<u32>>>,
}

impl SplitRows {
    fn len(&self) -> usize {
        self.ids
            .as_ref()
            .map(Vec::len)
            .or(self.texts.as_ref().map(Vec::len))
            .unwrap_or(0)
    }
    fn row_bytes(&self, i: usize) -> u64 {
        let t = self.texts.as_ref().map_or(0, |t| t[i].len());
        let d = self.ids.as_ref().map_or(0, |d| 4 * d[i].len());
        (t + d + 16) as u64
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

/// Prepare a dataset; see the module documentation for the guarantees.
pub fn prepare(opts: &PrepareOptions) -> Result<PrepareReport> {
    opts.validate()?;
    let loc = Location::parse(&opts.out, true)?;
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
    let data = read_sources(&opts.source)?;
    let wanted: Vec<String> = match &opts.splits {
        Some(s) => s.clone(),
        None => match opts.source.format.default_splits() {
            Some(d) => d.iter().map(|s| s.to_string()).collect(),
            None => data.splits.keys().cloned().collect(),
        },
    };
    let carve = opts.validation_fraction > 0.0
        && !data.splits.contains_key("validation")
        && wanted.iter().any(|s| s == "train")
        && (opts.splits.is_none() || wanted.iter().any(|s| s == "validation"));
    let mut selected: Vec<(String, Vec<Record>)> = Vec::new();
    let mut splits = data.splits;
    for name in &wanted {
        if name == "validation" && carve {
            continue;
        }
        let recs = splits.remove(name).ok_or_else(|| Error::MissingSplit {
            location: data.origin.clone(),
            split: name.clone(),
            available: {
                let mut a: Vec<String> = splits
                    .keys()
                    .cloned()
                    .chain(selected.iter().map(|(n, _)| n.clone()))
                    .collect();
                a.sort();
                a
            },
        })?;
        if recs.is_empty() {
            return Err(Error::bad_input(
                &data.origin,
                None,
                format!("split {name:?} has no rows"),
            ));
        }
        if name == "train" && carve {
            let labels: Vec<Option<i64>> = recs.iter().map(|r| r.label).collect();
            let is_val = stratified_split(&labels, opts.validation_fraction, opts.seed);
            let (mut train, mut val) = (Vec::new(), Vec::new());
            for (r, v) in recs.into_iter().zip(is_val) {
                if v {
                    val.push(r)
                } else {
                    train.push(r)
                }
            }
            selected.push(("train".into(), train));
            selected.push(("validation".into(), val));
        } else {
            selected.push((name.clone(), recs));
        }
    }
    selected.sort_by(|a, b| a.0.cmp(&b.0));

    let enc = opts
        .tokenizer
        .as_deref()
        .map(TextEncoder::load)
        .transpose()?;
    let pool = encode_pool(opts.tokenizer_threads)?;
    let labelled = data.label_names.is_some() && opts.pack_length.is_none();
    let mut rows_by_split = Vec::new();
    for (name, recs) in selected {
        let label_counts = labelled.then(|| {
            let mut c = vec![0u64; data.label_names.as_ref().map_or(0, Vec::len)];
            for r in &recs {
                if let Some(slot) = r.label.and_then(|l| c.get_mut(l as usize)) {
                    *slot += 1;
                }
            }
            c
        });
        let rows = to_rows(
            recs,
            enc.as_ref(),
            pool.as_ref(),
            opts.pack_length,
            labelled,
        )?;
        rows_by_split.push((name, rows, label_counts));
    }

    let mut schema_cols = Vec::new();
    if opts.pack_length.is_none() {
        schema_cols.push(Column {
            name: TEXT_COLUMN.into(),
            ty: ColumnType::Utf8,
        });
    }
    if labelled {
        schema_cols.push(Column {
            name: LABEL_COLUMN.into(),
            ty: ColumnType::Int64,
        });
    }
    if enc.is_some() {
        schema_cols.push(Column {
            name: IDS_COLUMN.into(),
            ty: ColumnType::ListInt32,
        });
    }

    if had_manifest {
        loc.delete(MANIFEST_FILE)?;
    }
    let mut written: Vec<String> = Vec::new();
    let result = write_all(&loc, opts, &rows_by_split, &mut written).and_then(|splits| {
        let mut manifest = Manifest {
            format: "wave-data".into(),
            format_version: FORMAT_VERSION,
            name: opts.name.clone().unwrap_or_else(|| default_name(opts)),
            schema: schema_cols,
            label_names: if labelled {
                data.label_names.clone()
            } else {
                None
            },
            splits,
            sources: data.files.clone(),
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
        Ok(manifest) => Ok(PrepareReport {
            uri: loc.uri.clone(),
            manifest,
        }),
        Err(e) => {
            for rel in &written {
                if let Err(d) = loc.delete(rel) {
                    tracing::warn!("could not remove partial shard {}: {d}", loc.uri_of(rel));
                }
            }
            Err(e)
        }
    }
}

fn default_name(opts: &PrepareOptions) -> String {
    use crate::sources::InputFormat::*;
    match opts.source.format {
        AgNews => "agnews".into(),
        Imdb => "imdb".into(),
        _ => opts
            .source
            .inputs
            .first()
            .map(|i| i.rsplit_once('=').map_or(i.as_str(), |(_, p)| p))
            .and_then(|p| std::path::Path::new(p).file_name())
            .map(|n| {
                n.to_string_lossy()
                    .split('.')
                    .next()
                    .unwrap_or_default()
                    .to_string()
            })
            .unwrap_or_else(|| "dataset".into()),
    }
}

/// Records → columns, tokenizing and packing when asked.
fn to_rows(
    recs: Vec<Record>,
    enc: Option<&TextEncoder>,
    pool: Option<&rayon::ThreadPool>,
    pack: Option<usize>,
    labelled: bool,
) -> Result<SplitRows> {
    let ids = match enc {
        None => None,
        Some(e) => {
            let mut all = Vec::with_capacity(recs.len());
            for chunk in recs.chunks(1024) {
                let texts: Vec<&str> = chunk.iter().map(|r| r.text.as_str()).collect();
                all.extend(e.encode_batch(&texts, pack.is_none(), pool)?);
            }
            Some(all)
        }
    };
    if let (Some(n), Some(docs), Some(e)) = (pack, &ids, enc) {
        let sep = e.sep_id().ok_or_else(|| {
            Error::tokenizer(
                e.spec(),
                "has no [SEP]/</s> token to separate packed documents",
            )
        })?;
        let mut rows = Vec::new();
        let mut cur: Vec<u32> = Vec::with_capacity(n);
        for doc in docs {
            for &t in doc.iter().chain(std::iter::once(&sep)) {
                cur.push(t);
                if cur.len() == n {
                    rows.push(std::mem::replace(&mut cur, Vec::with_capacity(n)));
                }
            }
        }
        if !cur.is_empty() {
            rows.push(cur);
        }
        return Ok(SplitRows {
            texts: None,
            labels: None,
            ids: Some(rows),
        });
    }
    let labels = labelled.then(|| recs.iter().map(|r| r.label.unwrap_or(0)).collect());
    Ok(SplitRows {
        texts: Some(recs.into_iter().map(|r| r.text).collect()),
        labels,
        ids,
    })
}

/// Write every split's shards; returns the manifest's split table. `written` collects the paths of
/// shards already stored (for cleanup on failure).
fn write_all(
    loc: &Location,
    opts: &PrepareOptions,
    splits: &[(String, SplitRows, Option<Vec<u64>>)],
    written: &mut Vec<String>,
) -> Result<std::collections::BTreeMap<String, Split>> {
    let mut out = std::collections::BTreeMap::new();
    for (name, rows, label_counts) in splits {
        let mut shards = Vec::new();
        let n = rows.len();
        let mut start = 0;
        while start < n {
            // Shard [start, end): bounded by rows and bytes.
            let (mut end, mut bytes) = (start, 0u64);
            while end < n
                && (end == start
                    || (bytes < opts.shard_bytes
                        && opts.shard_rows.is_none_or(|m| ((end - start) as u64) < m)))
            {
                bytes += rows.row_bytes(end);
                end += 1;
            }
            let rel = format!("{name}/part-{:05}.parquet", shards.len());
            let (file, rg_rows) =
                encode_shard(rows, start..end, opts.row_group_rows, &loc.uri_of(&rel))?;
            let shard = Shard {
                path: rel.clone(),
                rows: (end - start) as u64,
                bytes: file.len() as u64,
                sha256: sha256_hex(&file),
                row_groups: rg_rows,
            };
            written.push(rel.clone());
            loc.put(&rel, file)?;
            shards.push(shard);
            start = end;
        }
        let tokens = rows
            .ids
            .as_ref()
            .map(|d| d.iter().map(|r| r.len() as u64).sum());
        out.insert(
            name.clone(),
            Split {
                rows: n as u64,
                label_counts: label_counts.clone(),
                tokens,
                text_bytes: None,
                shards,
            },
        );
    }
    Ok(out)
}

/// Encode rows `range` as one Parquet file, one row group per `row_group_rows` rows (or
/// [`ROW_GROUP_MAX_BYTES`]). Returns the bytes and the row-group row counts.
fn encode_shard(
    rows: &SplitRows,
    range: std::ops::Range<usize>,
    row_group_rows: usize,
    uri: &str,
) -> Result<(Vec<u8>, Vec<u64>)> {
    let mut fields = Vec::new();
    if rows.texts.is_some() {
        fields.push(Field::new(TEXT_COLUMN, DataType::Utf8, false));
    }
    if rows.labels.is_some() {
        fields.push(Field::new(LABEL_COLUMN, DataType::Int64, false));
    }
    if rows.ids.is_some() {
        fields.push(Field::new(
            IDS_COLUMN,
            DataType::List(Arc::new(Field::new("item", DataType::Int32, true))),
            false,
        ));
    }
    let schema = Arc::new(Schema::new(fields));
    let props = WriterProperties::builder()
        .set_created_by(CREATED_BY.into())
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(3).map_err(|e| {
            Error::Parquet {
                uri: uri.into(),
                source: e,
            }
        })?))
        .set_statistics_enabled(EnabledStatistics::None)
        .set_max_row_group_row_count(None)
        .set_max_row_group_bytes(None)
        .build();
    let pq = |e| Error::Parquet {
        uri: uri.to_string(),
        source: e,
    };
    let mut file: Vec<u8> = Vec::new();
    let mut writer =
        ArrowWriter::try_new(&mut file, Arc::clone(&schema), Some(props)).map_err(pq)?;
    let mut rg_rows = Vec::new();
    let mut s = range.start;
    while s < range.end {
        let (mut e, mut bytes) = (s, 0u64);
        while e < range.end && (e == s || (e - s < row_group_rows && bytes < ROW_GROUP_MAX_BYTES)) {
            bytes += rows.row_bytes(e);
            e += 1;
        }
        let mut cols: Vec<ArrayRef> = Vec::new();
        if let Some(t) = &rows.texts {
            cols.push(Arc::new(StringArray::from_iter_values(t[s..e].iter())));
        }
        if let Some(l) = &rows.labels {
            cols.push(Arc::new(Int64Array::from(l[s..e].to_vec())));
        }
        if let Some(d) = &rows.ids {
            let mut b = ListBuilder::new(Int32Builder::new());
            for row in &d[s..e] {
                b.values()
                    .append_slice(&row.iter().map(|&x| x as i32).collect::<Vec<_>>());
                b.append(true);
            }
            cols.push(Arc::new(b.finish()));
        }
        let batch = RecordBatch::try_new(Arc::clone(&schema), cols).map_err(|e| Error::Arrow {
            uri: uri.into(),
            source: e,
        })?;
        writer.write(&batch).map_err(pq)?;
        writer.flush().map_err(pq)?;
        rg_rows.push((e - s) as u64);
        s = e;
    }
    let meta = writer.close().map_err(pq)?;
    let actual: Vec<u64> = meta
        .row_groups()
        .iter()
        .map(|r| r.num_rows() as u64)
        .collect();
    if actual != rg_rows {
        return Err(Error::manifest(
            uri,
            format!("writer produced row groups {actual:?}, expected {rg_rows:?}"),
        ));
    }
    Ok((file, rg_rows))
}
