//! [`Dataset`]: an opened manifest plus its object store, and row-group reads with column projection.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::{Arc, Mutex};

use arrow_array::cast::AsArray;
use arrow_array::types::{Int32Type, Int64Type};
use arrow_array::{Array, Int64Array, ListArray, RecordBatch, StringArray};
use arrow_schema::DataType;
use futures::{StreamExt, TryStreamExt};
use object_store::ObjectStoreExt;
use parquet::arrow::arrow_reader::{RowSelection, RowSelector};
use parquet::arrow::async_reader::ParquetRecordBatchStreamBuilder;
use parquet::arrow::ProjectionMask;
use parquet::file::metadata::ParquetMetaData;

use crate::error::{Error, Result};
use crate::manifest::{
    sha256_hex, Manifest, Shard, IDS_COLUMN, LABEL_COLUMN, MANIFEST_FILE, TEXT_COLUMN,
};
use crate::store::{block_on, Location, ObjectReader};

/// Row-group reads in flight at once: a shuffled window reads a few pages from each of hundreds of
/// row groups, so latency (object stores) is hidden by concurrency, not by bigger reads.
const READ_CONCURRENCY: usize = 16;

/// An opened dataset: its manifest and the store it lives in. Cheap to clone.
#[derive(Clone)]
pub struct Dataset {
    inner: Arc<Inner>,
}

struct Inner {
    loc: Location,
    manifest: Manifest,
    footers: Mutex<HashMap<String, Arc<ParquetMetaData>>>,
}

/// A row group's place in a split.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowGroupRef {
    /// Shard index within the split.
    pub shard: usize,
    /// Row group index within the shard.
    pub row_group: usize,
    /// Dataset row index (within the split) of its first row.
    pub first_row: u64,
    /// Rows.
    pub rows: u64,
}

/// Which columns to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Columns {
    /// `text`.
    pub text: bool,
    /// `label`.
    pub label: bool,
    /// `input_ids`.
    pub ids: bool,
}

/// The decoded columns of one row group (or of the rows of it that were asked for, in order).
#[derive(Debug, Clone)]
pub struct RowGroupData {
    /// URI of the shard (for messages).
    pub shard_uri: String,
    /// Dataset row index of the row group's first row.
    pub first_row: u64,
    /// `text` column when read.
    pub text: Option<StringArray>,
    /// `label` column when read.
    pub label: Option<Int64Array>,
    /// `input_ids` column when read.
    pub ids: Option<ListArray>,
}

impl RowGroupData {
    /// Token ids of row `i` (pre-tokenized data).
    pub fn ids_of(&self, i: usize) -> Option<&[i32]> {
        let l = self.ids.as_ref()?;
        let off = l.value_offsets();
        let vals = l.values().as_primitive::<Int32Type>().values();
        vals.get(off[i] as usize..off[i + 1] as usize)
    }

    /// Length used for bucketing: token count when pre-tokenized, else text bytes.
    pub fn length_of(&self, i: usize) -> usize {
        match (&self.ids, &self.text) {
            (Some(_), _) => self.ids_of(i).map_or(0, <[i32]>::len),
            (None, Some(t)) => t.value(i).len(),
            _ => 0,
        }
    }
}

impl std::fmt::Debug for Dataset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dataset")
            .field("uri", &self.uri())
            .field("fingerprint", &self.fingerprint())
            .finish()
    }
}

impl Dataset {
    /// Open the dataset whose root (holding `manifest.json`) is `uri`.
    pub fn open(uri: &str) -> Result<Dataset> {
        let loc = Location::parse(uri, false)?;
        let bytes = loc.get(MANIFEST_FILE)?;
        let manifest = Manifest::from_json(&bytes, &loc.uri_of(MANIFEST_FILE))?;
        Ok(Dataset {
            inner: Arc::new(Inner {
                loc,
                manifest,
                footers: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// The manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.inner.manifest
    }

    /// The dataset root URI.
    pub fn uri(&self) -> &str {
        &self.inner.loc.uri
    }

    /// Rows of a split; the error names the split and lists the available ones.
    pub fn split_rows(&self, split: &str) -> Result<u64> {
        self.split(split).map(|s| s.rows)
    }

    pub(crate) fn split(&self, split: &str) -> Result<&crate::manifest::Split> {
        self.inner
            .manifest
            .splits
            .get(split)
            .ok_or_else(|| Error::MissingSplit {
                location: self.uri().to_string(),
                split: split.to_string(),
                available: self.inner.manifest.splits.keys().cloned().collect(),
            })
    }

    /// UTF-8 bytes of source text per token of `split`, when the manifest records both (data
    /// sets pre-tokenized at prepare time); the basis of bits per byte.
    pub fn bytes_per_token(&self, split: &str) -> Option<f64> {
        let s = self.inner.manifest.splits.get(split)?;
        match (s.text_bytes, s.tokens) {
            (Some(bytes), Some(tokens)) if tokens > 0 => Some(bytes as f64 / tokens as f64),
            _ => None,
        }
    }

    /// Number of classes (label names), for labelled data.
    pub fn num_classes(&self) -> Option<usize> {
        self.inner.manifest.label_names.as_ref().map(Vec::len)
    }

    /// The dataset fingerprint recorded in the manifest (checked against its content at open).
    pub fn fingerprint(&self) -> &str {
        &self.inner.manifest.fingerprint
    }

    /// Row groups of a split in storage order.
    pub fn row_groups(&self, split: &str) -> Result<Vec<RowGroupRef>> {
        let mut out = Vec::new();
        let mut first_row = 0;
        for (si, shard) in self.split(split)?.shards.iter().enumerate() {
            for (ri, &rows) in shard.row_groups.iter().enumerate() {
                out.push(RowGroupRef {
                    shard: si,
                    row_group: ri,
                    first_row,
                    rows,
                });
                first_row += rows;
            }
        }
        Ok(out)
    }

    /// Footer of a shard, read once and checked against the manifest (size, row groups, rows).
    async fn footer(&self, shard: &Shard) -> Result<Arc<ParquetMetaData>> {
        if let Some(m) = self
            .inner
            .footers
            .lock()
            .ok()
            .and_then(|g| g.get(&shard.path).cloned())
        {
            return Ok(m);
        }
        let loc = &self.inner.loc;
        let uri = loc.uri_of(&shard.path);
        let path = loc.path(&shard.path);
        let head = loc.store.head(&path).await.map_err(|e| Error::Store {
            uri: uri.clone(),
            source: e,
        })?;
        if head.size != shard.bytes {
            return Err(Error::manifest(
                &uri,
                format!(
                    "shard is {} bytes but the manifest says {}",
                    head.size, shard.bytes
                ),
            ));
        }
        let mut reader = ObjectReader::new(loc.store.clone(), path, shard.bytes, None);
        let meta = parquet::arrow::async_reader::AsyncFileReader::get_metadata(&mut reader, None)
            .await
            .map_err(|e| Error::Parquet {
                uri: uri.clone(),
                source: e,
            })?;
        let rgs: Vec<u64> = meta
            .row_groups()
            .iter()
            .map(|r| r.num_rows() as u64)
            .collect();
        if rgs != shard.row_groups {
            return Err(Error::manifest(
                &uri,
                format!(
                    "shard row groups {rgs:?} differ from the manifest's {:?}",
                    shard.row_groups
                ),
            ));
        }
        if let Ok(mut g) = self.inner.footers.lock() {
            g.insert(shard.path.clone(), Arc::clone(&meta));
        }
        Ok(meta)
    }

    /// Read one row group of a split with column projection (blocking).
    pub fn read_row_group(
        &self,
        split: &str,
        rg: RowGroupRef,
        cols: Columns,
    ) -> Result<RowGroupData> {
        let all = 0..rg.rows;
        block_on(self.read_row_group_async(split, rg, std::slice::from_ref(&all), cols))?
    }

    /// Read several row groups concurrently (blocking).
    pub fn read_row_groups(
        &self,
        split: &str,
        rgs: &[RowGroupRef],
        cols: Columns,
    ) -> Result<Vec<RowGroupData>> {
        let whole: Vec<(RowGroupRef, Vec<Range<u64>>)> = rgs
            .iter()
            .map(|rg| (*rg, std::iter::once(0..rg.rows).collect()))
            .collect();
        self.read_rows(split, &whole, cols)
    }

    /// Read some rows of several row groups concurrently (blocking). Each entry is a row group and
    /// sorted, disjoint ranges of row offsets within it; the data returned holds exactly those rows,
    /// in order. With the shard's offset index only the pages holding them are fetched and decoded.
    pub fn read_rows(
        &self,
        split: &str,
        reads: &[(RowGroupRef, Vec<Range<u64>>)],
        cols: Columns,
    ) -> Result<Vec<RowGroupData>> {
        block_on(async {
            futures::stream::iter(
                reads
                    .iter()
                    .map(|(rg, ranges)| self.read_row_group_async(split, *rg, ranges, cols)),
            )
            .buffered(READ_CONCURRENCY)
            .try_collect::<Vec<_>>()
            .await
        })?
    }

    async fn read_row_group_async(
        &self,
        split: &str,
        rg: RowGroupRef,
        ranges: &[Range<u64>],
        cols: Columns,
    ) -> Result<RowGroupData> {
        let shard = self.split(split)?.shards.get(rg.shard).ok_or_else(|| {
            Error::manifest(
                self.uri(),
                format!("split {split:?} has no shard {}", rg.shard),
            )
        })?;
        let uri = self.inner.loc.uri_of(&shard.path);
        let meta = self.footer(shard).await?;
        let reader = ObjectReader::new(
            self.inner.loc.store.clone(),
            self.inner.loc.path(&shard.path),
            shard.bytes,
            Some(meta),
        );
        let pq = |e| Error::Parquet {
            uri: uri.clone(),
            source: e,
        };
        let selected: u64 = ranges.iter().map(|r| r.end - r.start).sum();
        if ranges.iter().any(|r| r.start > r.end || r.end > rg.rows)
            || ranges.windows(2).any(|w| w[0].end > w[1].start)
        {
            return Err(Error::manifest(
                &uri,
                format!(
                    "row group {}: rows {ranges:?} are not sorted, disjoint ranges of 0..{}",
                    rg.row_group, rg.rows
                ),
            ));
        }
        let builder = ParquetRecordBatchStreamBuilder::new(reader)
            .await
            .map_err(pq)?;
        let schema = builder.schema().clone();
        let mut roots = Vec::new();
        for (want, name, ty) in [
            (cols.text, TEXT_COLUMN, "utf8"),
            (cols.label, LABEL_COLUMN, "int64"),
            (cols.ids, IDS_COLUMN, "list<int32>"),
        ] {
            if !want {
                continue;
            }
            let (idx, field) = schema.column_with_name(name).ok_or_else(|| Error::Schema {
                uri: uri.clone(),
                column: name.into(),
                msg: "is missing from the shard".into(),
            })?;
            let ok = match ty {
                "utf8" => field.data_type() == &DataType::Utf8,
                "int64" => field.data_type() == &DataType::Int64,
                _ => {
                    matches!(field.data_type(), DataType::List(f) if f.data_type() == &DataType::Int32)
                }
            };
            if !ok {
                return Err(Error::Schema {
                    uri: uri.clone(),
                    column: name.into(),
                    msg: format!("has type {}, expected {ty}", field.data_type()),
                });
            }
            roots.push(idx);
        }
        let mask = ProjectionMask::roots(builder.parquet_schema(), roots);
        let mut builder = builder
            .with_row_groups(vec![rg.row_group])
            .with_projection(mask)
            .with_batch_size(selected.max(1) as usize);
        if selected < rg.rows {
            let mut selectors = Vec::with_capacity(2 * ranges.len() + 1);
            let mut at = 0;
            for r in ranges {
                if r.start > at {
                    selectors.push(RowSelector::skip((r.start - at) as usize));
                }
                if r.end > r.start {
                    selectors.push(RowSelector::select((r.end - r.start) as usize));
                }
                at = r.end;
            }
            builder = builder.with_row_selection(RowSelection::from(selectors));
        }
        let stream = builder.build().map_err(pq)?;
        let batches: Vec<RecordBatch> = stream.try_collect().await.map_err(pq)?;
        let batch = match batches.len() {
            1 => batches.into_iter().next(),
            _ => None,
        };
        let batch = batch.ok_or_else(|| {
            Error::manifest(
                &uri,
                format!(
                    "row group {} decoded to an unexpected number of batches",
                    rg.row_group
                ),
            )
        })?;
        if batch.num_rows() as u64 != selected {
            return Err(Error::manifest(
                &uri,
                format!(
                    "row group {} gave {} rows where {selected} of its {} were asked for",
                    rg.row_group,
                    batch.num_rows(),
                    rg.rows
                ),
            ));
        }
        let col = |name: &str| batch.column_by_name(name).cloned();
        let text = col(TEXT_COLUMN).and_then(|a| a.as_string_opt::<i32>().cloned());
        let label = col(LABEL_COLUMN).and_then(|a| a.as_primitive_opt::<Int64Type>().cloned());
        let ids = col(IDS_COLUMN).and_then(|a| a.as_list_opt::<i32>().cloned());
        for (name, present) in [
            (LABEL_COLUMN, label.as_ref().map(|a| a.null_count())),
            (TEXT_COLUMN, text.as_ref().map(|a| a.null_count())),
        ] {
            if present.unwrap_or(0) > 0 {
                return Err(Error::Schema {
                    uri: uri.clone(),
                    column: name.into(),
                    msg: "contains nulls".into(),
                });
            }
        }
        Ok(RowGroupData {
            shard_uri: uri,
            first_row: rg.first_row,
            text,
            label,
            ids,
        })
    }

    /// Recompute every shard's SHA-256 and compare with the manifest. Returns the checked shard
    /// URIs; the first mismatch (or missing shard) is an error naming it.
    pub fn verify(&self) -> Result<Vec<String>> {
        let mut done = Vec::new();
        for split in self.inner.manifest.splits.values() {
            for shard in &split.shards {
                let uri = self.inner.loc.uri_of(&shard.path);
                let bytes = self.inner.loc.get(&shard.path)?;
                let actual = sha256_hex(&bytes);
                if actual != shard.sha256 {
                    return Err(Error::Checksum {
                        uri,
                        expected: format!("sha256:{}", shard.sha256),
                        actual: format!("sha256:{actual}"),
                    });
                }
                done.push(uri);
            }
        }
        Ok(done)
    }
}
