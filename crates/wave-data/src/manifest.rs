//! `manifest.json`: what a prepared dataset holds. Written last by `prepare`, so its presence means
//! every shard it lists is complete.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// Current manifest format version.
pub const FORMAT_VERSION: u32 = 1;
/// File name of the manifest inside a dataset root.
pub const MANIFEST_FILE: &str = "manifest.json";
/// Column holding the raw text.
pub const TEXT_COLUMN: &str = "text";
/// Column holding the class label (int64).
pub const LABEL_COLUMN: &str = "label";
/// Column holding pre-tokenized ids (`list<int32>`).
pub const IDS_COLUMN: &str = "input_ids";

/// Column types a dataset may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ColumnType {
    /// UTF-8 string.
    #[serde(rename = "utf8")]
    Utf8,
    /// 64-bit signed integer.
    #[serde(rename = "int64")]
    Int64,
    /// List of 32-bit signed integers.
    #[serde(rename = "list<int32>")]
    ListInt32,
}

/// One column of the schema.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Column {
    /// Column name.
    pub name: String,
    /// Logical type.
    #[serde(rename = "type")]
    pub ty: ColumnType,
}

/// One Parquet shard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Shard {
    /// Path relative to the dataset root (`train/part-00000.parquet`).
    pub path: String,
    /// Rows in the shard.
    pub rows: u64,
    /// Size in bytes.
    pub bytes: u64,
    /// SHA-256 of the file, lowercase hex.
    pub sha256: String,
    /// Rows of each row group, in file order.
    pub row_groups: Vec<u64>,
}

/// One split (train / validation / test ...).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Split {
    /// Total rows.
    pub rows: u64,
    /// Rows per label (index = label), when labelled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_counts: Option<Vec<u64>>,
    /// Total tokens in `input_ids`, when pre-tokenized.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<u64>,
    /// UTF-8 bytes of the source text those tokens encode (for bits per byte), when pre-tokenized.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text_bytes: Option<u64>,
    /// Shards in row order.
    pub shards: Vec<Shard>,
}

/// A raw input file the dataset was prepared from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceFile {
    /// File name (no directories, so the manifest does not depend on where inputs lay).
    pub name: String,
    /// Size in bytes.
    pub bytes: u64,
    /// SHA-256, lowercase hex.
    pub sha256: String,
}

/// Fingerprint of the tokenizer used for `input_ids`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenizerInfo {
    /// [`crate::TextEncoder::fingerprint`] of the tokenizer.
    pub fingerprint: String,
    /// SHA-256 of its `tokenizer.json`.
    pub sha256: String,
    /// Vocabulary size including added tokens.
    pub vocab_size: usize,
    /// Padding id of the tokenizer (used to pad pre-tokenized rows).
    pub pad_id: u32,
    /// Whether special tokens (`[CLS]`/`[SEP]`) were added per row (false when packed).
    pub add_special_tokens: bool,
}

/// How the dataset was prepared (recorded for reproducibility).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrepareInfo {
    /// Input format (`agnews`, `imdb`, `jsonl`, `text`, `parquet`).
    pub format: String,
    /// Seed of the row shuffle and of the train/validation split.
    pub seed: u64,
    /// Rows were written in a seeded random order (false: in source order, `--keep-order`, and
    /// every dataset prepared before the shuffle existed).
    #[serde(default)]
    pub shuffled: bool,
    /// Fraction of train moved to validation (0 when the source had a validation split).
    pub validation_fraction: f64,
    /// Rows per row group.
    pub row_group_rows: usize,
}

/// The dataset manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Always `"wave-data"`.
    pub format: String,
    /// [`FORMAT_VERSION`] at write time.
    pub format_version: u32,
    /// Dataset name.
    pub name: String,
    /// Columns present in every shard.
    pub schema: Vec<Column>,
    /// Class names (index = label), for labelled data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_names: Option<Vec<String>>,
    /// Splits by name.
    pub splits: BTreeMap<String, Split>,
    /// Raw inputs and their checksums.
    pub sources: Vec<SourceFile>,
    /// Tokenizer of `input_ids`, when pre-tokenized.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokenizer: Option<TokenizerInfo>,
    /// Row length in tokens when documents were packed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pack_length: Option<usize>,
    /// Preparation parameters.
    pub prepare: PrepareInfo,
    /// SHA-256 over the schema and every shard hash ([`Manifest::compute_fingerprint`]).
    pub fingerprint: String,
}

impl Manifest {
    /// The dataset fingerprint: SHA-256 over the schema, label names, tokenizer, pack length and,
    /// per split in name order, every shard's path and hash. Two datasets with equal fingerprints
    /// stream identical samples.
    pub fn compute_fingerprint(&self) -> String {
        let mut h = Sha256::new();
        for c in &self.schema {
            h.update(format!("col:{}:{:?};", c.name, c.ty));
        }
        for n in self.label_names.iter().flatten() {
            h.update(format!("label:{n};"));
        }
        if let Some(t) = &self.tokenizer {
            h.update(format!("tok:{};", t.fingerprint));
        }
        if let Some(p) = self.pack_length {
            h.update(format!("pack:{p};"));
        }
        for (name, split) in &self.splits {
            h.update(format!("split:{name}:{};", split.rows));
            for s in &split.shards {
                h.update(format!("shard:{}:{};", s.path, s.sha256));
            }
        }
        format!("sha256:{}", hex::encode(h.finalize()))
    }

    /// Whether a column is present.
    pub fn has_column(&self, name: &str) -> bool {
        self.schema.iter().any(|c| c.name == name)
    }

    /// Parse and check a manifest (`uri` names it in errors).
    pub fn from_json(bytes: &[u8], uri: &str) -> Result<Manifest> {
        let m: Manifest = serde_json::from_slice(bytes)
            .map_err(|e| Error::manifest(uri, format!("not a valid manifest: {e}")))?;
        m.check(uri)?;
        Ok(m)
    }

    /// Serialize deterministically (pretty JSON, fixed field order, trailing newline).
    pub fn to_json(&self) -> Result<Vec<u8>> {
        let mut v = serde_json::to_vec_pretty(self)
            .map_err(|e| Error::manifest(&self.name, e.to_string()))?;
        v.push(b'\n');
        Ok(v)
    }

    /// Internal consistency: version, column types, shard row counts, label counts, fingerprint.
    pub fn check(&self, uri: &str) -> Result<()> {
        if self.format != "wave-data" {
            return Err(Error::manifest(
                uri,
                format!("format is {:?}, expected \"wave-data\"", self.format),
            ));
        }
        if self.format_version != FORMAT_VERSION {
            return Err(Error::manifest(
                uri,
                format!(
                    "format_version {} is not supported (this build reads {FORMAT_VERSION})",
                    self.format_version
                ),
            ));
        }
        let expect = [
            (TEXT_COLUMN, ColumnType::Utf8),
            (LABEL_COLUMN, ColumnType::Int64),
            (IDS_COLUMN, ColumnType::ListInt32),
        ];
        for c in &self.schema {
            match expect.iter().find(|(n, _)| *n == c.name) {
                Some((_, ty)) if *ty == c.ty => {}
                Some((_, ty)) => {
                    return Err(Error::Schema {
                        uri: uri.into(),
                        column: c.name.clone(),
                        msg: format!("has type {:?}, expected {ty:?}", c.ty),
                    })
                }
                None => {
                    return Err(Error::Schema {
                        uri: uri.into(),
                        column: c.name.clone(),
                        msg: "is not a known column".into(),
                    })
                }
            }
        }
        if !self.has_column(TEXT_COLUMN) && !self.has_column(IDS_COLUMN) {
            return Err(Error::Schema {
                uri: uri.into(),
                column: TEXT_COLUMN.into(),
                msg: "missing (and no input_ids either)".into(),
            });
        }
        for (name, split) in &self.splits {
            let sum: u64 = split.shards.iter().map(|s| s.rows).sum();
            if sum != split.rows {
                return Err(Error::manifest(
                    uri,
                    format!(
                        "split {name:?} lists {} rows but its shards hold {sum}",
                        split.rows
                    ),
                ));
            }
            for s in &split.shards {
                if s.rows == 0 || s.row_groups.is_empty() {
                    return Err(Error::manifest(uri, format!("shard {} is empty", s.path)));
                }
                if s.row_groups.iter().sum::<u64>() != s.rows {
                    return Err(Error::manifest(
                        uri,
                        format!(
                            "shard {}: row groups do not add up to {} rows",
                            s.path, s.rows
                        ),
                    ));
                }
            }
        }
        if self.fingerprint != self.compute_fingerprint() {
            return Err(Error::manifest(
                uri,
                "fingerprint does not match its content (edited by hand?)",
            ));
        }
        Ok(())
    }
}

/// SHA-256 of a byte slice, lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}
