//! Raw inputs → a stream of records: the AG News CSV archive, the aclImdb tarball, JSON Lines, plain
//! text and Parquet (Hugging Face export layout).
//!
//! [`read_sources`] hands every record to a callback as soon as it is parsed, so a corpus of any size
//! is read with the memory of one record (JSON Lines, text, Parquet batches of 1,024 rows). The two
//! fixed-size archives are the exception: AG News' CSVs (~30 MB) are read whole, and IMDB's reviews
//! are collected and emitted in (split, label, id) order so that the record order does not depend on
//! the archive's member order. Every input's SHA-256 is computed while it is read. Every reader names
//! the file (or archive member) and the row in its errors.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use arrow_array::cast::AsArray;
use arrow_array::types::{Int16Type, Int32Type, Int64Type, Int8Type};
use arrow_array::Array;
use arrow_schema::DataType;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::manifest::SourceFile;

/// Most classes a labelled data set may have. Integer labels are class indices, so they must lie in
/// `0..MAX_CLASSES`; string labels may be anything, but at most this many distinct ones. (The bound
/// keeps per-class tables and the classifier head a sane size; a label beyond it is an input error.)
pub const MAX_CLASSES: usize = 65_536;

/// Supported input formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputFormat {
    /// `ag_news_csv.tgz` (`ag_news_csv/{train,test}.csv`, `classes.txt`).
    AgNews,
    /// `aclImdb_v1.tar.gz` (`aclImdb/{train,test}/{pos,neg}/<id>_<rating>.txt`).
    Imdb,
    /// JSON Lines, optionally gzip-compressed.
    Jsonl,
    /// Plain text, one sample per line or per blank-line-separated paragraph.
    Text,
    /// Parquet with a text column and optionally a label column.
    Parquet,
}

impl InputFormat {
    /// Parse `agnews|imdb|jsonl|text|parquet`.
    pub fn parse(s: &str) -> Result<InputFormat> {
        Ok(match s {
            "agnews" | "ag_news" => InputFormat::AgNews,
            "imdb" => InputFormat::Imdb,
            "jsonl" | "json" => InputFormat::Jsonl,
            "text" | "txt" => InputFormat::Text,
            "parquet" => InputFormat::Parquet,
            other => {
                return Err(Error::config(
                    "--format",
                    format!("{other:?} is not one of agnews, imdb, jsonl, text, parquet"),
                ))
            }
        })
    }

    /// Name as written in the manifest.
    pub fn name(self) -> &'static str {
        match self {
            InputFormat::AgNews => "agnews",
            InputFormat::Imdb => "imdb",
            InputFormat::Jsonl => "jsonl",
            InputFormat::Text => "text",
            InputFormat::Parquet => "parquet",
        }
    }

    /// Splits prepared by default when none are asked for (`None` = whatever the inputs hold).
    pub fn default_splits(self) -> Option<&'static [&'static str]> {
        match self {
            InputFormat::AgNews | InputFormat::Imdb => Some(&["train", "test"]),
            _ => None,
        }
    }

    fn is_archive(self) -> bool {
        matches!(self, InputFormat::AgNews | InputFormat::Imdb)
    }
}

/// What counts as one sample in plain text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextUnit {
    /// Every non-blank line.
    Line,
    /// Every blank-line-separated paragraph (lines joined with `\n`).
    Paragraph,
}

/// How to read the inputs.
#[derive(Debug, Clone)]
pub struct SourceOptions {
    /// Format of every input.
    pub format: InputFormat,
    /// Inputs: `PATH` or `SPLIT=PATH`, where PATH may be a glob pattern (`corpus/*.jsonl.gz`,
    /// expanded in sorted order). Non-archive formats: default split `train`; Parquet files named
    /// `train-*`, `test-*`, `validation-*` go to that split.
    pub inputs: Vec<String>,
    /// JSON / Parquet field holding the text.
    pub text_field: String,
    /// JSON / Parquet field holding the label: `None` = `label` when present, `Some("")` = none.
    pub label_field: Option<String>,
    /// Plain-text sample unit.
    pub text_unit: TextUnit,
    /// Keep at most this many rows per split, in source order (smoke tests).
    pub max_rows: Option<usize>,
}

/// A label as found in the input, before class indices are assigned (see [`crate::prepare`]).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RawLabel {
    /// An integer label: a class index in `0..MAX_CLASSES` (checked when read).
    Int(i64),
    /// A string label: a class name.
    Str(String),
}

impl std::fmt::Display for RawLabel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RawLabel::Int(i) => write!(f, "{i}"),
            RawLabel::Str(s) => write!(f, "{s:?}"),
        }
    }
}

/// One sample, as handed to the callback of [`read_sources`].
#[derive(Debug)]
pub struct SourceRecord<'a> {
    /// Split it belongs to in the source (`train`, `test`, ...).
    pub split: &'a str,
    /// Input file or archive member (for messages).
    pub source: &'a str,
    /// 1-based line, CSV record or Parquet row in `source`.
    pub row: u64,
    /// Text (never blank).
    pub text: String,
    /// Label as found, when labelled.
    pub label: Option<RawLabel>,
}

/// What [`read_sources`] learnt besides the records.
#[derive(Debug, Clone, Default)]
pub struct SourceSummary {
    /// Input files with sizes and checksums, in reading order.
    pub files: Vec<SourceFile>,
    /// Every split an input was assigned to (even if it held no record).
    pub splits: BTreeSet<String>,
    /// Class names given by the source (archive class lists, Hugging Face `ClassLabel` metadata).
    pub label_names: Option<Vec<String>>,
    /// Display name of the (single) archive for messages, or the list of inputs.
    pub origin: String,
}

fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

/// A reader that hashes and counts what passes through it, so an input's checksum costs no extra
/// read. [`Hashed::finish`] drains what the consumer left (e.g. the padding after a tar's end).
struct Hashed<R> {
    inner: R,
    hasher: Sha256,
    bytes: u64,
}

impl<R: Read> Read for Hashed<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

/// An input file opened for hashing while it is read.
struct Input {
    path: PathBuf,
    name: String,
    reader: Hashed<std::fs::File>,
}

impl Input {
    fn open(path: &Path) -> Result<Input> {
        let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        Ok(Input {
            path: path.to_path_buf(),
            name: file_name(path),
            reader: Hashed {
                inner: file,
                hasher: Sha256::new(),
                bytes: 0,
            },
        })
    }

    /// Read what is left, and record the file.
    fn finish(mut self, files: &mut Vec<SourceFile>) -> Result<()> {
        std::io::copy(&mut self.reader, &mut std::io::sink())
            .map_err(|e| Error::io(&self.path, e))?;
        files.push(SourceFile {
            name: self.name,
            bytes: self.reader.bytes,
            sha256: hex::encode(self.reader.hasher.finalize()),
        });
        Ok(())
    }
}

/// Lines of a (possibly gzip-compressed) file, one at a time, with their 1-based numbers.
struct Lines<'a> {
    reader: Box<dyn BufRead + 'a>,
    gz: bool,
    name: &'a str,
    path: &'a Path,
    row: u64,
    buf: Vec<u8>,
}

impl<'a> Lines<'a> {
    fn new(input: &'a mut Input) -> Lines<'a> {
        let gz = input.name.ends_with(".gz");
        let reader: Box<dyn BufRead + 'a> = if gz {
            Box::new(BufReader::with_capacity(
                1 << 16,
                flate2::read::MultiGzDecoder::new(&mut input.reader),
            ))
        } else {
            Box::new(BufReader::with_capacity(1 << 16, &mut input.reader))
        };
        Lines {
            reader,
            gz,
            name: &input.name,
            path: &input.path,
            row: 0,
            buf: Vec::new(),
        }
    }

    /// The next line (without its `\n`), checked to be UTF-8; `None` at the end.
    fn next_line(&mut self) -> Result<Option<(u64, &str)>> {
        self.buf.clear();
        let n = match self.reader.read_until(b'\n', &mut self.buf) {
            Ok(n) => n,
            Err(e) if self.gz => {
                return Err(Error::bad_input(
                    self.name,
                    None,
                    format!("not valid gzip: {e}"),
                ))
            }
            Err(e) => return Err(Error::io(self.path, e)),
        };
        if n == 0 {
            return Ok(None);
        }
        self.row += 1;
        if self.buf.last() == Some(&b'\n') {
            self.buf.pop();
        }
        let line = std::str::from_utf8(&self.buf).map_err(|e| {
            Error::bad_input(
                self.name,
                Some(self.row),
                format!("invalid UTF-8 at byte {}", e.valid_up_to()),
            )
        })?;
        Ok(Some((self.row, line)))
    }
}

/// Iterate the members of a `.tar.gz`, calling `f(member path, bytes)`.
fn for_each_member(
    input: &mut Input,
    mut f: impl FnMut(&str, Vec<u8>) -> Result<()>,
) -> Result<()> {
    let name = input.name.clone();
    let bad = |e: std::io::Error| {
        Error::bad_input(&name, None, format!("not a readable .tar.gz archive: {e}"))
    };
    let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(&mut input.reader));
    for entry in ar.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let path = entry
            .path()
            .map_err(bad)?
            .to_string_lossy()
            .trim_start_matches("./")
            .to_string();
        let mut buf = Vec::with_capacity(entry.size() as usize);
        entry.read_to_end(&mut buf).map_err(bad)?;
        f(&path, buf)?;
    }
    Ok(())
}

fn utf8(bytes: Vec<u8>, source: &str, row: Option<u64>) -> Result<String> {
    String::from_utf8(bytes).map_err(|e| {
        Error::bad_input(
            source,
            row,
            format!("invalid UTF-8 at byte {}", e.utf8_error().valid_up_to()),
        )
    })
}

fn check_text(text: &str, source: &str, row: u64) -> Result<()> {
    if text.trim().is_empty() {
        return Err(Error::bad_input(source, Some(row), "empty text"));
    }
    Ok(())
}

/// An integer label must be a class index in `0..MAX_CLASSES`.
fn int_label(value: i64, source: &str, row: u64) -> Result<RawLabel> {
    if value < 0 || value >= MAX_CLASSES as i64 {
        return Err(Error::bad_input(
            source,
            Some(row),
            format!(
                "label {value} is not a class index in 0..{MAX_CLASSES} (integer labels number the \
                 classes from 0; give other identifiers as string labels)"
            ),
        ));
    }
    Ok(RawLabel::Int(value))
}

/// Undo AG News' escapes: `\$` → `$`, `\\` → paragraph break, a lone `\` → line break, and the
/// HTML entities that lost their `&` (` #36;` → `$`, `#39;` → `'`).
pub fn agnews_unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.peek() {
                Some('\\') => {
                    chars.next();
                    out.push_str("\n\n");
                }
                Some('$') => {
                    chars.next();
                    out.push('$');
                }
                _ => out.push('\n'),
            },
            '#' => {
                let digits: String = chars.clone().take_while(char::is_ascii_digit).collect();
                let after = chars.clone().nth(digits.len());
                match (digits.parse::<u32>().ok().and_then(char::from_u32), after) {
                    (Some(ch), Some(';')) if !digits.is_empty() && digits.len() <= 5 => {
                        for _ in 0..=digits.len() {
                            chars.next();
                        }
                        if out.ends_with(' ') && ch == '$' {
                            out.pop();
                            if !out.ends_with(' ') && !out.is_empty() {
                                out.push(' ');
                            }
                        }
                        out.push(ch);
                    }
                    _ => out.push('#'),
                }
            }
            _ => out.push(c),
        }
    }
    out
}

type Sink<'s> = dyn FnMut(SourceRecord<'_>) -> Result<()> + 's;

fn read_agnews(input: &mut Input, summary: &mut SourceSummary, f: &mut Sink<'_>) -> Result<()> {
    let name = input.name.clone();
    let mut classes: Option<Vec<String>> = None;
    let mut csvs: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for_each_member(input, |member, buf| {
        match member.rsplit('/').next() {
            Some("classes.txt") => {
                let s = utf8(buf, member, None)?;
                classes = Some(
                    s.lines()
                        .map(str::trim)
                        .filter(|l| !l.is_empty())
                        .map(String::from)
                        .collect(),
                );
            }
            Some(f @ ("train.csv" | "test.csv")) => {
                csvs.insert(f.trim_end_matches(".csv").to_string(), buf);
            }
            _ => {}
        }
        Ok(())
    })?;
    let names = classes
        .ok_or_else(|| Error::bad_input(&name, None, "archive has no ag_news_csv/classes.txt"))?;
    for (split, buf) in csvs {
        summary.splits.insert(split.clone());
        let member = format!("{name}:ag_news_csv/{split}.csv");
        let mut rdr = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .from_reader(&buf[..]);
        for (i, rec) in rdr.byte_records().enumerate() {
            let row = i as u64 + 1;
            let rec = rec
                .map_err(|e| Error::bad_input(&member, Some(row), format!("malformed CSV: {e}")))?;
            if rec.len() != 3 {
                return Err(Error::bad_input(
                    &member,
                    Some(row),
                    format!(
                        "expected 3 fields (class, title, description), found {}",
                        rec.len()
                    ),
                ));
            }
            let field = |k: usize| utf8(rec[k].to_vec(), &member, Some(row));
            let class = field(0)?;
            let class: i64 = class.trim().parse().map_err(|_| {
                Error::bad_input(
                    &member,
                    Some(row),
                    format!("class {class:?} is not a number"),
                )
            })?;
            let label = class - 1;
            if label < 0 || label as usize >= names.len() {
                return Err(Error::LabelOutOfRange {
                    uri: member.clone(),
                    row,
                    label,
                    num_classes: names.len(),
                });
            }
            let text = format!(
                "{} {}",
                agnews_unescape(field(1)?.trim()),
                agnews_unescape(field(2)?.trim())
            )
            .trim()
            .to_string();
            check_text(&text, &member, row)?;
            f(SourceRecord {
                split: &split,
                source: &member,
                row,
                text,
                label: Some(RawLabel::Int(label)),
            })?;
        }
    }
    summary.label_names = Some(names);
    Ok(())
}

fn read_imdb(input: &mut Input, summary: &mut SourceSummary, f: &mut Sink<'_>) -> Result<()> {
    let name = input.name.clone();
    // (split, label, id) → (member, text): the archive holds at most 50,000 reviews, and this order
    // keeps the records independent of the archive's member order.
    let mut rows: BTreeMap<(String, i64, u64), (String, String)> = BTreeMap::new();
    for_each_member(input, |member, buf| {
        let parts: Vec<&str> = member.split('/').collect();
        let [_, split @ ("train" | "test"), class @ ("pos" | "neg"), file] = parts[..] else {
            return Ok(());
        };
        let Some(stem) = file.strip_suffix(".txt") else {
            return Ok(());
        };
        let source = format!("{name}:{member}");
        let id: u64 = stem
            .split('_')
            .next()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| Error::bad_input(&source, None, "file name is not <id>_<rating>.txt"))?;
        let text = utf8(buf, &source, None)?
            .replace("<br />", "\n")
            .trim()
            .to_string();
        check_text(&text, &source, 1)?;
        rows.insert(
            (split.to_string(), i64::from(class == "pos"), id),
            (source, text),
        );
        Ok(())
    })?;
    for ((split, label, _), (source, text)) in rows {
        summary.splits.insert(split.clone());
        f(SourceRecord {
            split: &split,
            source: &source,
            row: 1,
            text,
            label: Some(RawLabel::Int(label)),
        })?;
    }
    summary.label_names = Some(vec!["neg".into(), "pos".into()]);
    Ok(())
}

/// `SPLIT=PATH` or `PATH` → (split, path).
fn split_and_path(input: &str) -> (String, &str) {
    if let Some((split, path)) = input.split_once('=') {
        if !split.is_empty() && !split.contains('/') {
            return (split.to_string(), path);
        }
    }
    ("train".to_string(), input)
}

/// The split of a Parquet export from its file name (`train-00000-of-00001.parquet`).
fn parquet_split(path: &Path) -> Option<&'static str> {
    let stem = file_name(path);
    [
        ("train", "train"),
        ("test", "test"),
        ("validation", "validation"),
        ("valid", "validation"),
    ]
    .into_iter()
    .find(|(prefix, _)| {
        stem.starts_with(&format!("{prefix}-")) || stem.starts_with(&format!("{prefix}."))
    })
    .map(|(_, split)| split)
}

/// Inputs → (split, file) in reading order, glob patterns expanded (sorted). A pattern that matches
/// no file is an error naming it.
pub fn expand_inputs(opts: &SourceOptions) -> Result<Vec<(String, PathBuf)>> {
    if opts.inputs.is_empty() {
        return Err(Error::config("--input", "at least one input is required"));
    }
    let mut out = Vec::new();
    for input in &opts.inputs {
        let (split, pattern) = split_and_path(input);
        let explicit = input.len() != pattern.len();
        let paths: Vec<PathBuf> = if pattern.contains(['*', '?', '[']) {
            let mut v = glob::glob(pattern)
                .map_err(|e| {
                    Error::config("--input", format!("bad glob pattern {pattern:?}: {e}"))
                })?
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| {
                    let path = e.path().to_path_buf();
                    Error::io(path, e.into())
                })?;
            v.retain(|p| p.is_file());
            v.sort();
            if v.is_empty() {
                return Err(Error::config(
                    "--input",
                    format!("pattern {pattern:?} matches no file"),
                ));
            }
            v
        } else {
            vec![PathBuf::from(pattern)]
        };
        for p in paths {
            let split = match (explicit, opts.format) {
                (false, InputFormat::Parquet) => parquet_split(&p).unwrap_or("train").to_string(),
                _ => split.clone(),
            };
            out.push((split, p));
        }
    }
    if opts.format.is_archive() && out.len() != 1 {
        return Err(Error::config(
            "--input",
            format!("{} takes exactly one archive", opts.format.name()),
        ));
    }
    Ok(out)
}

/// The label of a JSON row: a string, or an integer class index.
fn json_label(v: &serde_json::Value, field: &str, src: &str, row: u64) -> Result<RawLabel> {
    match v.get(field) {
        Some(serde_json::Value::String(s)) => Ok(RawLabel::Str(s.clone())),
        Some(n @ serde_json::Value::Number(_)) => match n.as_i64() {
            Some(i) => int_label(i, src, row),
            None => Err(Error::bad_input(
                src,
                Some(row),
                format!("label {n} is not a class index in 0..{MAX_CLASSES}"),
            )),
        },
        _ => Err(Error::bad_input(
            src,
            Some(row),
            format!("label field {field:?} is missing or not an integer/string"),
        )),
    }
}

fn read_jsonl(
    input: &mut Input,
    split: &str,
    opts: &SourceOptions,
    f: &mut Sink<'_>,
) -> Result<()> {
    let mut label_field = opts.label_field.clone();
    let mut lines = Lines::new(input);
    let src = lines.name;
    while let Some((row, line)) = lines.next_line()? {
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(line)
            .map_err(|e| Error::bad_input(src, Some(row), format!("invalid JSON: {e}")))?;
        let text = v
            .get(&opts.text_field)
            .and_then(|t| t.as_str())
            .ok_or_else(|| {
                Error::bad_input(
                    src,
                    Some(row),
                    format!("field {:?} is missing or not a string", opts.text_field),
                )
            })?;
        check_text(text, src, row)?;
        if label_field.is_none() {
            label_field = Some(if v.get("label").is_some() {
                "label".into()
            } else {
                String::new()
            });
        }
        let label = match label_field.as_deref() {
            Some("") | None => None,
            Some(field) => Some(json_label(&v, field, src, row)?),
        };
        f(SourceRecord {
            split,
            source: src,
            row,
            text: text.to_string(),
            label,
        })?;
    }
    Ok(())
}

fn read_text(input: &mut Input, split: &str, unit: TextUnit, f: &mut Sink<'_>) -> Result<()> {
    let mut lines = Lines::new(input);
    let src = lines.name;
    let mut para = String::new();
    let mut para_row = 0;
    while let Some((row, line)) = lines.next_line()? {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            if !para.is_empty() {
                let text = std::mem::take(&mut para);
                f(SourceRecord {
                    split,
                    source: src,
                    row: para_row,
                    text,
                    label: None,
                })?;
            }
            continue;
        }
        match unit {
            TextUnit::Line => f(SourceRecord {
                split,
                source: src,
                row,
                text: line.trim().to_string(),
                label: None,
            })?,
            TextUnit::Paragraph => {
                if para.is_empty() {
                    para_row = row;
                } else {
                    para.push('\n');
                }
                para.push_str(line.trim());
            }
        }
    }
    if !para.is_empty() {
        f(SourceRecord {
            split,
            source: src,
            row: para_row,
            text: para,
            label: None,
        })?;
    }
    Ok(())
}

fn read_parquet(
    input: &mut Input,
    split: &str,
    opts: &SourceOptions,
    names: &mut Option<Vec<String>>,
    f: &mut Sink<'_>,
) -> Result<()> {
    let src = input.name.clone();
    let pq = |e| Error::Parquet {
        uri: src.clone(),
        source: e,
    };
    // A handle of its own: the Parquet reader seeks, while `input` hashes the file front to back.
    let file = std::fs::File::open(&input.path).map_err(|e| Error::io(&input.path, e))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(pq)?;
    let schema = builder.schema().clone();
    let text_idx = schema
        .index_of(&opts.text_field)
        .map_err(|_| Error::Schema {
            uri: src.clone(),
            column: opts.text_field.clone(),
            msg: "is missing".into(),
        })?;
    let label_name = match opts.label_field.as_deref() {
        None => schema.index_of("label").ok().map(|_| "label".to_string()),
        Some("") => None,
        Some(field) => Some(field.to_string()),
    };
    let label_idx = match &label_name {
        Some(field) => Some(schema.index_of(field).map_err(|_| Error::Schema {
            uri: src.clone(),
            column: field.clone(),
            msg: "is missing".into(),
        })?),
        None => None,
    };
    if let Some(field) = &label_name {
        *names = hf_class_names(schema.metadata().get("huggingface"), field).or(names.take());
    }
    let mut row = 0u64;
    for batch in builder.with_batch_size(1024).build().map_err(pq)? {
        let batch = batch.map_err(|e| Error::Arrow {
            uri: src.clone(),
            source: e,
        })?;
        let col = batch.column(text_idx);
        let texts: Vec<Option<&str>> = match col.data_type() {
            DataType::Utf8 => col.as_string::<i32>().iter().collect(),
            DataType::LargeUtf8 => col.as_string::<i64>().iter().collect(),
            DataType::Utf8View => col.as_string_view().iter().collect(),
            other => {
                return Err(Error::Schema {
                    uri: src.clone(),
                    column: opts.text_field.clone(),
                    msg: format!("has type {other}, expected a string"),
                })
            }
        };
        let labels: Option<Vec<Option<i64>>> = match label_idx {
            None => None,
            Some(i) => {
                let c = batch.column(i);
                Some(match c.data_type() {
                    DataType::Int64 => c.as_primitive::<Int64Type>().iter().collect(),
                    DataType::Int32 => c
                        .as_primitive::<Int32Type>()
                        .iter()
                        .map(|v| v.map(i64::from))
                        .collect(),
                    DataType::Int16 => c
                        .as_primitive::<Int16Type>()
                        .iter()
                        .map(|v| v.map(i64::from))
                        .collect(),
                    DataType::Int8 => c
                        .as_primitive::<Int8Type>()
                        .iter()
                        .map(|v| v.map(i64::from))
                        .collect(),
                    other => {
                        return Err(Error::Schema {
                            uri: src.clone(),
                            column: label_name.clone().unwrap_or_default(),
                            msg: format!("has type {other}, expected an integer"),
                        })
                    }
                })
            }
        };
        for (i, t) in texts.into_iter().enumerate() {
            row += 1;
            let t = t.ok_or_else(|| Error::bad_input(&src, Some(row), "null text"))?;
            check_text(t, &src, row)?;
            let label = match &labels {
                Some(l) => {
                    let v = l[i].ok_or_else(|| Error::bad_input(&src, Some(row), "null label"))?;
                    Some(int_label(v, &src, row)?)
                }
                None => None,
            };
            f(SourceRecord {
                split,
                source: &src,
                row,
                text: t.to_string(),
                label,
            })?;
        }
    }
    Ok(())
}

/// Class names from a Hugging Face `datasets` Parquet export (`ClassLabel` feature metadata).
fn hf_class_names(meta: Option<&String>, field: &str) -> Option<Vec<String>> {
    let v: serde_json::Value = serde_json::from_str(meta?).ok()?;
    let names = v
        .get("info")?
        .get("features")?
        .get(field)?
        .get("names")?
        .as_array()?;
    names.iter().map(|n| n.as_str().map(String::from)).collect()
}

/// Read every input, handing each record to `f` in a deterministic order (inputs in the given
/// order, globs sorted, records in file order; IMDB by (split, label, id)). Stops at the first
/// error, from a reader or from `f`.
pub fn read_sources(
    opts: &SourceOptions,
    f: &mut dyn FnMut(SourceRecord<'_>) -> Result<()>,
) -> Result<SourceSummary> {
    let inputs = expand_inputs(opts)?;
    let mut summary = SourceSummary {
        origin: opts.inputs.join(", "),
        ..SourceSummary::default()
    };
    let mut names = None;
    for (split, path) in &inputs {
        let mut input = Input::open(path)?;
        match opts.format {
            InputFormat::AgNews | InputFormat::Imdb => {
                summary.origin = input.name.clone();
                if opts.format == InputFormat::AgNews {
                    read_agnews(&mut input, &mut summary, f)?;
                } else {
                    read_imdb(&mut input, &mut summary, f)?;
                }
            }
            format => {
                summary.splits.insert(split.clone());
                match format {
                    InputFormat::Jsonl => read_jsonl(&mut input, split, opts, f)?,
                    InputFormat::Text => read_text(&mut input, split, opts.text_unit, f)?,
                    _ => read_parquet(&mut input, split, opts, &mut names, f)?,
                }
            }
        }
        input.finish(&mut summary.files)?;
    }
    if names.is_some() {
        summary.label_names = names;
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agnews_escapes_are_undone() {
        assert_eq!(agnews_unescape(r"a second\team"), "a second\nteam");
        assert_eq!(agnews_unescape(r"Grabs \$1B"), "Grabs $1B");
        assert_eq!(agnews_unescape(r"x.\\I think"), "x.\n\nI think");
        assert_eq!(
            agnews_unescape("for the  #36;10 million"),
            "for the $10 million"
        );
        assert_eq!(agnews_unescape("it#39;s #1"), "it's #1");
    }

    #[test]
    fn integer_labels_outside_the_class_bound_name_the_value() {
        assert_eq!(int_label(3, "f", 1).expect("ok"), RawLabel::Int(3));
        for bad in [-1, MAX_CLASSES as i64, 99_999_999_999] {
            let msg = int_label(bad, "f.jsonl", 7)
                .expect_err("out of bound")
                .to_string();
            assert!(
                msg.contains("f.jsonl") && msg.contains("row 7") && msg.contains(&bad.to_string()),
                "{msg}"
            );
        }
    }
}
