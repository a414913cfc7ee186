//! One split's output in `prepare`: documents in → (tokenized, packed) rows → row groups →
//! Parquet shards uploaded as they fill.
//!
//! Memory is bounded by one tokenization chunk ([`TOKENIZE_CHUNK_BYTES_PER_THREAD`] of text per
//! thread), one row group
//! and the Parquet writer's buffers: a shard is written to a local temporary file and streamed to
//! the store when it closes. The rows written do not depend on how documents were chunked for the
//! tokenizer, so the output is the same at any thread count.

use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use arrow_array::builder::{Int32Builder, ListBuilder};
use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::manifest::{Shard, Split, IDS_COLUMN, LABEL_COLUMN, TEXT_COLUMN};
use crate::store::Location;
use crate::tokenize::TextEncoder;

/// Row groups are also cut when their (uncompressed) data passes this size, so one row group of
/// long documents stays a small read.
pub const ROW_GROUP_MAX_BYTES: u64 = 16 << 20;
/// `created_by` written into every shard: constant, so shards do not change with the crate version.
pub const CREATED_BY: &str = "wave-data (format 1)";
/// Rows per Parquet data page (at most). With the offset index every shard carries, a reader that
/// wants a few rows of a row group fetches and decodes only their pages: the loader's shuffle
/// blocks ([`crate::DataConfig::shuffle_block`]) are whole pages.
pub const PAGE_ROWS: usize = 32;
/// Text handed to the tokenizer at once, per tokenizer thread (the threads share a chunk out by
/// documents). The tokenizer's own buffers run to tens of bytes per byte of text (alignments,
/// per-token records), so this bounds them: about 100 MB per thread.
pub const TOKENIZE_CHUNK_BYTES_PER_THREAD: usize = 1 << 20;
/// Documents handed to the tokenizer at once, at most.
const TOKENIZE_CHUNK_DOCS: usize = 4096;

/// What every split writer of one `prepare` shares.
pub(crate) struct WriterConfig<'a> {
    /// Output dataset root.
    pub loc: &'a Location,
    /// Local folder for shards being written.
    pub tmp: &'a Path,
    /// Tokenizer for `input_ids`.
    pub enc: Option<&'a TextEncoder>,
    /// Its thread pool (`None`: the calling thread).
    pub pool: Option<&'a rayon::ThreadPool>,
    /// Text per tokenizer call ([`TOKENIZE_CHUNK_BYTES_PER_THREAD`] × threads).
    pub chunk_bytes: usize,
    /// Pack documents into rows of this many ids, separated by `sep`.
    pub pack: Option<(usize, u32)>,
    /// Number of classes when the `label` column is written (`None`: unlabelled or packed).
    pub classes: Option<usize>,
    /// Rows per row group.
    pub row_group_rows: usize,
    /// At most this many rows per shard.
    pub shard_rows: Option<u64>,
    /// About this many (uncompressed) bytes per shard.
    pub shard_bytes: u64,
}

impl WriterConfig<'_> {
    fn schema(&self) -> Arc<Schema> {
        let mut fields = Vec::new();
        if self.pack.is_none() {
            fields.push(Field::new(TEXT_COLUMN, DataType::Utf8, false));
        }
        if self.classes.is_some() {
            fields.push(Field::new(LABEL_COLUMN, DataType::Int64, false));
        }
        if self.enc.is_some() {
            fields.push(Field::new(
                IDS_COLUMN,
                DataType::List(Arc::new(Field::new("item", DataType::Int32, true))),
                false,
            ));
        }
        Arc::new(Schema::new(fields))
    }
}

/// Fixed writer properties: the same rows always give the same bytes.
fn writer_properties(uri: &str) -> Result<WriterProperties> {
    let level = ZstdLevel::try_new(3).map_err(|e| Error::Parquet {
        uri: uri.into(),
        source: e,
    })?;
    Ok(WriterProperties::builder()
        .set_created_by(CREATED_BY.into())
        .set_compression(Compression::ZSTD(level))
        .set_statistics_enabled(EnabledStatistics::None)
        // Texts are nearly all distinct: a dictionary only costs a fallback.
        .set_dictionary_enabled(false)
        .set_data_page_row_count_limit(PAGE_ROWS)
        .set_write_batch_size(PAGE_ROWS)
        .set_max_row_group_row_count(None)
        .set_max_row_group_bytes(None)
        .build())
}

/// Rows of the row group being filled.
#[derive(Default)]
struct RowGroupRows {
    texts: Vec<String>,
    labels: Vec<i64>,
    ids: Vec<Vec<u32>>,
    rows: usize,
    bytes: u64,
}

/// A shard being written to a local file.
struct OpenShard {
    writer: ArrowWriter<std::fs::File>,
    file: std::path::PathBuf,
    rel: String,
    row_groups: Vec<u64>,
}

/// Writes one split.
pub(crate) struct SplitWriter<'a> {
    name: String,
    cfg: &'a WriterConfig<'a>,
    schema: Arc<Schema>,
    /// Documents waiting for the tokenizer: (text, label).
    pending: Vec<(String, i64)>,
    pending_bytes: usize,
    /// The packed row being filled.
    packed: Vec<u32>,
    rg: RowGroupRows,
    shard: Option<OpenShard>,
    /// Rows and bytes of the current shard, rows not yet flushed included.
    shard_rows: u64,
    shard_bytes: u64,
    shards: Vec<Shard>,
    /// Shards already stored (to remove if the prepare fails).
    pub uploaded: Vec<String>,
    rows: u64,
    tokens: u64,
    /// UTF-8 bytes of the tokenized documents (plus one per packing separator, which stands for
    /// the line break between documents): what `tokens` encode, for bits per byte.
    text_bytes: u64,
    label_counts: Vec<u64>,
}

impl<'a> SplitWriter<'a> {
    /// A writer of split `name`.
    pub fn new(name: &str, cfg: &'a WriterConfig<'a>) -> Self {
        SplitWriter {
            name: name.to_string(),
            cfg,
            schema: cfg.schema(),
            pending: Vec::new(),
            pending_bytes: 0,
            packed: Vec::new(),
            rg: RowGroupRows::default(),
            shard: None,
            shard_rows: 0,
            shard_bytes: 0,
            shards: Vec::new(),
            uploaded: Vec::new(),
            rows: 0,
            tokens: 0,
            text_bytes: 0,
            label_counts: vec![0; cfg.classes.unwrap_or(0)],
        }
    }

    /// Add one document (`label`: its class index; ignored for unlabelled output).
    pub fn push(&mut self, text: &str, label: i64) -> Result<()> {
        if self.cfg.enc.is_none() {
            return self.add_row(Some(text.to_string()), label, None);
        }
        self.pending_bytes += text.len();
        self.pending.push((text.to_string(), label));
        if self.pending_bytes >= self.cfg.chunk_bytes || self.pending.len() >= TOKENIZE_CHUNK_DOCS {
            self.tokenize_pending()?;
        }
        Ok(())
    }

    fn tokenize_pending(&mut self) -> Result<()> {
        let Some(enc) = self.cfg.enc else {
            return Ok(());
        };
        if self.pending.is_empty() {
            return Ok(());
        }
        let docs = std::mem::take(&mut self.pending);
        self.pending_bytes = 0;
        let texts: Vec<&str> = docs.iter().map(|(t, _)| t.as_str()).collect();
        let encoded = enc.encode_batch(&texts, self.cfg.pack.is_none(), self.cfg.pool)?;
        drop(texts);
        for ((text, label), ids) in docs.into_iter().zip(encoded) {
            self.text_bytes += text.len() as u64 + u64::from(self.cfg.pack.is_some());
            match self.cfg.pack {
                Some((n, sep)) => {
                    for t in ids.into_iter().chain(std::iter::once(sep)) {
                        self.packed.push(t);
                        if self.packed.len() == n {
                            let row = std::mem::replace(&mut self.packed, Vec::with_capacity(n));
                            self.add_row(None, 0, Some(row))?;
                        }
                    }
                }
                None => self.add_row(Some(text), label, Some(ids))?,
            }
        }
        Ok(())
    }

    /// Append a row; closes the shard or the row group first when it is full (the same cut rules
    /// as a split written all at once: a shard or row group takes a row while below its limits).
    fn add_row(&mut self, text: Option<String>, label: i64, ids: Option<Vec<u32>>) -> Result<()> {
        let bytes = (text.as_ref().map_or(0, String::len)
            + ids.as_ref().map_or(0, |d| 4 * d.len())
            + 16) as u64;
        if self.shard_rows > 0
            && (self.shard_bytes >= self.cfg.shard_bytes
                || self.cfg.shard_rows.is_some_and(|m| self.shard_rows >= m))
        {
            self.flush_row_group()?;
            self.close_shard()?;
        }
        if self.rg.rows > 0
            && (self.rg.rows >= self.cfg.row_group_rows || self.rg.bytes >= ROW_GROUP_MAX_BYTES)
        {
            self.flush_row_group()?;
        }
        if let Some(t) = text {
            self.rg.texts.push(t);
        }
        if self.cfg.classes.is_some() {
            self.rg.labels.push(label);
            if let Some(c) = self.label_counts.get_mut(label as usize) {
                *c += 1;
            }
        }
        if let Some(d) = ids {
            self.tokens += d.len() as u64;
            self.rg.ids.push(d);
        }
        self.rg.rows += 1;
        self.rg.bytes += bytes;
        self.shard_rows += 1;
        self.shard_bytes += bytes;
        self.rows += 1;
        Ok(())
    }

    fn flush_row_group(&mut self) -> Result<()> {
        if self.rg.rows == 0 {
            return Ok(());
        }
        if self.shard.is_none() {
            let rel = format!("{}/part-{:05}.parquet", self.name, self.shards.len());
            let file = self
                .cfg
                .tmp
                .join(format!("{}-{:05}.parquet", self.name, self.shards.len()));
            let uri = self.cfg.loc.uri_of(&rel);
            let f = std::fs::File::create(&file).map_err(|e| Error::io(&file, e))?;
            let writer =
                ArrowWriter::try_new(f, Arc::clone(&self.schema), Some(writer_properties(&uri)?))
                    .map_err(|e| Error::Parquet { uri, source: e })?;
            self.shard = Some(OpenShard {
                writer,
                file,
                rel,
                row_groups: Vec::new(),
            });
        }
        let rg = std::mem::take(&mut self.rg);
        let Some(shard) = self.shard.as_mut() else {
            return Ok(());
        };
        let uri = self.cfg.loc.uri_of(&shard.rel);
        let mut cols: Vec<ArrayRef> = Vec::new();
        if self.cfg.pack.is_none() {
            cols.push(Arc::new(StringArray::from_iter_values(rg.texts.iter())));
        }
        if self.cfg.classes.is_some() {
            cols.push(Arc::new(Int64Array::from(rg.labels)));
        }
        if self.cfg.enc.is_some() {
            let mut b = ListBuilder::new(Int32Builder::new());
            for row in &rg.ids {
                for &x in row {
                    b.values().append_value(x as i32);
                }
                b.append(true);
            }
            cols.push(Arc::new(b.finish()));
        }
        let batch =
            RecordBatch::try_new(Arc::clone(&self.schema), cols).map_err(|e| Error::Arrow {
                uri: uri.clone(),
                source: e,
            })?;
        let pq = |e| Error::Parquet {
            uri: uri.clone(),
            source: e,
        };
        shard.writer.write(&batch).map_err(pq)?;
        shard.writer.flush().map_err(pq)?;
        shard.row_groups.push(rg.rows as u64);
        Ok(())
    }

    /// Finish the current shard: close the file, hash it, store it, forget the local copy.
    fn close_shard(&mut self) -> Result<()> {
        let Some(shard) = self.shard.take() else {
            return Ok(());
        };
        let uri = self.cfg.loc.uri_of(&shard.rel);
        let meta = shard.writer.close().map_err(|e| Error::Parquet {
            uri: uri.clone(),
            source: e,
        })?;
        let actual: Vec<u64> = meta
            .row_groups()
            .iter()
            .map(|r| r.num_rows() as u64)
            .collect();
        if actual != shard.row_groups {
            return Err(Error::manifest(
                &uri,
                format!(
                    "writer produced row groups {actual:?}, expected {:?}",
                    shard.row_groups
                ),
            ));
        }
        let (bytes, sha256) = hash_file(&shard.file)?;
        self.uploaded.push(shard.rel.clone());
        self.cfg.loc.put_file(&shard.rel, &shard.file)?;
        std::fs::remove_file(&shard.file).map_err(|e| Error::io(&shard.file, e))?;
        self.shards.push(Shard {
            path: shard.rel,
            rows: self.shard_rows,
            bytes,
            sha256,
            row_groups: shard.row_groups,
        });
        self.shard_rows = 0;
        self.shard_bytes = 0;
        Ok(())
    }

    /// Flush everything (a last partial packed row included) and describe the split.
    pub fn finish(&mut self) -> Result<Split> {
        self.tokenize_pending()?;
        if !self.packed.is_empty() {
            let row = std::mem::take(&mut self.packed);
            self.add_row(None, 0, Some(row))?;
        }
        self.flush_row_group()?;
        self.close_shard()?;
        Ok(Split {
            rows: self.rows,
            label_counts: self.cfg.classes.map(|_| self.label_counts.clone()),
            tokens: self.cfg.enc.is_some().then_some(self.tokens),
            text_bytes: self.cfg.enc.is_some().then_some(self.text_bytes),
            shards: std::mem::take(&mut self.shards),
        })
    }
}

/// Size and SHA-256 (hex) of a local file, read in 1 MiB pieces.
fn hash_file(path: &Path) -> Result<(u64, String)> {
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        total += n as u64;
    }
    Ok((total, hex::encode(h.finalize())))
}
