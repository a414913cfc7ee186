//! Raw inputs → records: the AG News CSV archive, the aclImdb tarball, JSON Lines, plain text and
//! Parquet (Hugging Face export layout). Every reader names the file (or archive member) and the
//! row in its errors.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use arrow_array::cast::AsArray;
use arrow_array::types::{Int16Type, Int32Type, Int64Type, Int8Type};
use arrow_array::Array;
use arrow_schema::DataType;
use bytes::Bytes;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::error::{Error, Result};
use crate::manifest::{sha256_hex, SourceFile};

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
}

/// What counts as one sample in plain text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextUnit {
    /// Every non-blank line.
    Line,
    /// Every blank-line-separated paragraph (lines joined with `\n`).
    Paragraph,
}

/// One sample.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Text (never empty).
    pub text: String,
    /// Class label, `0..label_names.len()`.
    pub label: Option<i64>,
}

/// How to read the inputs.
#[derive(Debug, Clone)]
pub struct SourceOptions {
    /// Format of every input.
    pub format: InputFormat,
    /// Inputs: `PATH` or `SPLIT=PATH` (non-archive formats; default split `train`, Parquet files
    /// named `train-*`, `test-*`, `validation-*` go to that split).
    pub inputs: Vec<String>,
    /// JSON / Parquet field holding the text.
    pub text_field: String,
    /// JSON / Parquet field holding the label: `None` = `label` when present, `Some("")` = none.
    pub label_field: Option<String>,
    /// Plain-text sample unit.
    pub text_unit: TextUnit,
    /// Keep at most this many rows per split (smoke tests).
    pub max_rows: Option<usize>,
}

/// Everything read from the inputs.
#[derive(Debug, Clone, Default)]
pub struct SourceData {
    /// Records per split, in a deterministic source order.
    pub splits: BTreeMap<String, Vec<Record>>,
    /// Class names when labelled.
    pub label_names: Option<Vec<String>>,
    /// Input files with checksums.
    pub files: Vec<SourceFile>,
    /// Display name of the (single) archive for messages, or the list of inputs.
    pub origin: String,
}

fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

/// Read a local input file and record its checksum.
fn read_input(path: &Path, files: &mut Vec<SourceFile>) -> Result<Bytes> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    files.push(SourceFile {
        name: file_name(path),
        bytes: bytes.len() as u64,
        sha256: sha256_hex(&bytes),
    });
    Ok(Bytes::from(bytes))
}

fn gunzip_if(name: &str, bytes: Bytes) -> Result<Bytes> {
    if !name.ends_with(".gz") {
        return Ok(bytes);
    }
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(&bytes[..])
        .read_to_end(&mut out)
        .map_err(|e| Error::bad_input(name, None, format!("not valid gzip: {e}")))?;
    Ok(Bytes::from(out))
}

/// Iterate the members of a `.tar.gz` in memory, calling `f(member path, bytes)`.
fn for_each_member(
    name: &str,
    archive: &[u8],
    mut f: impl FnMut(&str, Vec<u8>) -> Result<()>,
) -> Result<()> {
    let bad = |e: std::io::Error| {
        Error::bad_input(name, None, format!("not a readable .tar.gz archive: {e}"))
    };
    let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(archive));
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

fn read_agnews(path: &Path, data: &mut SourceData) -> Result<()> {
    let name = file_name(path);
    let bytes = read_input(path, &mut data.files)?;
    let mut classes: Option<Vec<String>> = None;
    let mut csvs: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for_each_member(&name, &bytes, |member, buf| {
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
        let member = format!("{name}:ag_news_csv/{split}.csv");
        let mut rdr = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .from_reader(&buf[..]);
        let mut recs = Vec::new();
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
            recs.push(Record {
                text,
                label: Some(label),
            });
        }
        data.splits.insert(split, recs);
    }
    data.label_names = Some(names);
    Ok(())
}

fn read_imdb(path: &Path, data: &mut SourceData) -> Result<()> {
    let name = file_name(path);
    let bytes = read_input(path, &mut data.files)?;
    // (split, label, id) → text, so the order does not depend on the archive's member order.
    let mut rows: BTreeMap<(String, i64, u64), String> = BTreeMap::new();
    for_each_member(&name, &bytes, |member, buf| {
        let parts: Vec<&str> = member.split('/').collect();
        let [_, split @ ("train" | "test"), class @ ("pos" | "neg"), file] = parts[..] else {
            return Ok(());
        };
        let Some(stem) = file.strip_suffix(".txt") else {
            return Ok(());
        };
        let id: u64 = stem
            .split('_')
            .next()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| {
                Error::bad_input(
                    format!("{name}:{member}"),
                    None,
                    "file name is not <id>_<rating>.txt",
                )
            })?;
        let text = utf8(buf, &format!("{name}:{member}"), None)?
            .replace("<br />", "\n")
            .trim()
            .to_string();
        check_text(&text, &format!("{name}:{member}"), 1)?;
        rows.insert((split.to_string(), i64::from(class == "pos"), id), text);
        Ok(())
    })?;
    for ((split, label, _), text) in rows {
        data.splits.entry(split).or_default().push(Record {
            text,
            label: Some(label),
        });
    }
    data.label_names = Some(vec!["neg".into(), "pos".into()]);
    Ok(())
}

/// A label as found in JSON / Parquet, before names are assigned.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum RawLabel {
    Int(i64),
    Str(String),
}

/// Records with raw labels, per split, and where each came from (for messages).
type RawSplits = BTreeMap<String, Vec<(String, RawLabelled)>>;
type RawLabelled = (String, Option<RawLabel>, u64);

/// Turn raw labels into `0..n` with names: strings → sorted unique names; integers → `"0".."max"`.
fn assign_labels(
    raw: RawSplits,
    given_names: Option<Vec<String>>,
    data: &mut SourceData,
) -> Result<()> {
    let all: Vec<&RawLabel> = raw
        .values()
        .flatten()
        .filter_map(|(_, (_, l, _))| l.as_ref())
        .collect();
    let count = raw.values().flatten().count();
    let labelled = !all.is_empty();
    if labelled && all.len() != count {
        let (src, (_, _, row)) = raw
            .values()
            .flatten()
            .find(|(_, (_, l, _))| l.is_none())
            .map(|(s, r)| (s.clone(), r.clone()))
            .unwrap_or_default();
        return Err(Error::bad_input(
            src,
            Some(row),
            "label missing (other rows have one)",
        ));
    }
    let strings: Vec<String> = {
        let mut s: Vec<String> = all
            .iter()
            .filter_map(|l| {
                if let RawLabel::Str(s) = l {
                    Some(s.clone())
                } else {
                    None
                }
            })
            .collect();
        s.sort();
        s.dedup();
        s
    };
    if !strings.is_empty()
        && strings.len() != all.len()
        && all.iter().any(|l| matches!(l, RawLabel::Int(_)))
    {
        return Err(Error::bad_input(
            data.origin.clone(),
            None,
            "labels mix numbers and strings",
        ));
    }
    let names = if !strings.is_empty() {
        Some(strings.clone())
    } else if labelled {
        given_names.or_else(|| {
            let max = all
                .iter()
                .filter_map(|l| {
                    if let RawLabel::Int(i) = l {
                        Some(*i)
                    } else {
                        None
                    }
                })
                .max()
                .unwrap_or(0);
            Some((0..=max.max(0)).map(|i| i.to_string()).collect())
        })
    } else {
        None
    };
    for (split, recs) in raw {
        let mut out = Vec::with_capacity(recs.len());
        for (src, (text, label, row)) in recs {
            let label = match (label, &names) {
                (Some(RawLabel::Str(s)), _) => strings.binary_search(&s).ok().map(|i| i as i64),
                (Some(RawLabel::Int(i)), Some(n)) => {
                    if i < 0 || i as usize >= n.len() {
                        return Err(Error::LabelOutOfRange {
                            uri: src,
                            row,
                            label: i,
                            num_classes: n.len(),
                        });
                    }
                    Some(i)
                }
                _ => None,
            };
            out.push(Record { text, label });
        }
        data.splits.entry(split).or_default().extend(out);
    }
    data.label_names = names;
    Ok(())
}

/// `SPLIT=PATH` or `PATH` → (split, path).
fn split_and_path(input: &str, format: InputFormat) -> (String, &Path) {
    if let Some((split, path)) = input.split_once('=') {
        if !split.is_empty() && !split.contains('/') {
            return (split.to_string(), Path::new(path));
        }
    }
    let path = Path::new(input);
    if format == InputFormat::Parquet {
        let stem = file_name(path);
        for (prefix, split) in [
            ("train", "train"),
            ("test", "test"),
            ("validation", "validation"),
            ("valid", "validation"),
        ] {
            if stem.starts_with(&format!("{prefix}-")) || stem.starts_with(&format!("{prefix}.")) {
                return (split.to_string(), path);
            }
        }
    }
    ("train".to_string(), path)
}

fn read_jsonl(
    src: &str,
    bytes: &[u8],
    opts: &SourceOptions,
    out: &mut Vec<(String, RawLabelled)>,
) -> Result<()> {
    let mut label_field = opts.label_field.clone();
    for (i, line) in bytes.split(|&b| b == b'\n').enumerate() {
        let row = i as u64 + 1;
        let line = std::str::from_utf8(line).map_err(|e| {
            Error::bad_input(
                src,
                Some(row),
                format!("invalid UTF-8 at byte {}", e.valid_up_to()),
            )
        })?;
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
            Some(f) => Some(match v.get(f) {
                Some(serde_json::Value::String(s)) => RawLabel::Str(s.clone()),
                Some(n) if n.as_i64().is_some() => RawLabel::Int(n.as_i64().unwrap_or_default()),
                _ => {
                    return Err(Error::bad_input(
                        src,
                        Some(row),
                        format!("label field {f:?} is missing or not an integer/string"),
                    ))
                }
            }),
        };
        out.push((src.to_string(), (text.to_string(), label, row)));
    }
    Ok(())
}

fn read_text(
    src: &str,
    bytes: &[u8],
    unit: TextUnit,
    out: &mut Vec<(String, RawLabelled)>,
) -> Result<()> {
    let mut para: Vec<&str> = Vec::new();
    let mut para_row = 0;
    let flush = |para: &mut Vec<&str>, row: u64, out: &mut Vec<(String, RawLabelled)>| {
        if !para.is_empty() {
            out.push((src.to_string(), (para.join("\n"), None, row)));
            para.clear();
        }
    };
    for (i, line) in bytes.split(|&b| b == b'\n').enumerate() {
        let row = i as u64 + 1;
        let line = std::str::from_utf8(line).map_err(|e| {
            Error::bad_input(
                src,
                Some(row),
                format!("invalid UTF-8 at byte {}", e.valid_up_to()),
            )
        })?;
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            flush(&mut para, para_row, out);
            continue;
        }
        match unit {
            TextUnit::Line => out.push((src.to_string(), (line.trim().to_string(), None, row))),
            TextUnit::Paragraph => {
                if para.is_empty() {
                    para_row = row;
                }
                para.push(line.trim());
            }
        }
    }
    flush(&mut para, para_row, out);
    Ok(())
}

fn read_parquet(
    src: &str,
    bytes: Bytes,
    opts: &SourceOptions,
    out: &mut Vec<(String, RawLabelled)>,
    names: &mut Option<Vec<String>>,
) -> Result<()> {
    let pq = |e| Error::Parquet {
        uri: src.to_string(),
        source: e,
    };
    let builder = ParquetRecordBatchReaderBuilder::try_new(bytes).map_err(pq)?;
    let schema = builder.schema().clone();
    let text_idx = schema
        .index_of(&opts.text_field)
        .map_err(|_| Error::Schema {
            uri: src.into(),
            column: opts.text_field.clone(),
            msg: "is missing".into(),
        })?;
    let label_name = match opts.label_field.as_deref() {
        None => schema.index_of("label").ok().map(|_| "label".to_string()),
        Some("") => None,
        Some(f) => Some(f.to_string()),
    };
    let label_idx = match &label_name {
        Some(f) => Some(schema.index_of(f).map_err(|_| Error::Schema {
            uri: src.into(),
            column: f.clone(),
            msg: "is missing".into(),
        })?),
        None => None,
    };
    if let Some(f) = &label_name {
        *names = hf_class_names(schema.metadata().get("huggingface"), f).or(names.take());
    }
    let mut row = 0u64;
    for batch in builder.with_batch_size(4096).build().map_err(pq)? {
        let batch = batch.map_err(|e| Error::Arrow {
            uri: src.into(),
            source: e,
        })?;
        let col = batch.column(text_idx);
        let texts: Vec<Option<&str>> = match col.data_type() {
            DataType::Utf8 => col.as_string::<i32>().iter().collect(),
            DataType::LargeUtf8 => col.as_string::<i64>().iter().collect(),
            DataType::Utf8View => col.as_string_view().iter().collect(),
            other => {
                return Err(Error::Schema {
                    uri: src.into(),
                    column: opts.text_field.clone(),
                    msg: format!("has type {other}, expected a string"),
                })
            }
        };
        let labels: Option<Vec<Option<i64>>> = match label_idx {
            None => None,
            Some(i) => {
                let c = batch.column(i);
                let f = label_name.clone().unwrap_or_default();
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
                            uri: src.into(),
                            column: f,
                            msg: format!("has type {other}, expected an integer"),
                        })
                    }
                })
            }
        };
        for (i, t) in texts.into_iter().enumerate() {
            row += 1;
            let t = t.ok_or_else(|| Error::bad_input(src, Some(row), "null text"))?;
            check_text(t, src, row)?;
            let label = match &labels {
                Some(l) => {
                    Some(RawLabel::Int(l[i].ok_or_else(|| {
                        Error::bad_input(src, Some(row), "null label")
                    })?))
                }
                None => None,
            };
            out.push((src.to_string(), (t.to_string(), label, row)));
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

/// Read every input into per-split records.
pub fn read_sources(opts: &SourceOptions) -> Result<SourceData> {
    let mut data = SourceData {
        origin: opts.inputs.join(", "),
        ..SourceData::default()
    };
    if opts.inputs.is_empty() {
        return Err(Error::config("--input", "at least one input is required"));
    }
    match opts.format {
        InputFormat::AgNews | InputFormat::Imdb => {
            if opts.inputs.len() != 1 {
                return Err(Error::config(
                    "--input",
                    format!("{} takes exactly one archive", opts.format.name()),
                ));
            }
            let path = Path::new(&opts.inputs[0]);
            data.origin = file_name(path);
            if opts.format == InputFormat::AgNews {
                read_agnews(path, &mut data)?;
            } else {
                read_imdb(path, &mut data)?;
            }
        }
        InputFormat::Jsonl | InputFormat::Text | InputFormat::Parquet => {
            let mut raw: RawSplits = BTreeMap::new();
            let mut names = None;
            for input in &opts.inputs {
                let (split, path) = split_and_path(input, opts.format);
                let src = file_name(path);
                let bytes = read_input(path, &mut data.files)?;
                let out = raw.entry(split).or_default();
                match opts.format {
                    InputFormat::Jsonl => read_jsonl(&src, &gunzip_if(&src, bytes)?, opts, out)?,
                    InputFormat::Text => {
                        read_text(&src, &gunzip_if(&src, bytes)?, opts.text_unit, out)?
                    }
                    _ => read_parquet(&src, bytes, opts, out, &mut names)?,
                }
            }
            assign_labels(raw, names, &mut data)?;
        }
    }
    if let Some(n) = opts.max_rows {
        for recs in data.splits.values_mut() {
            recs.truncate(n);
        }
    }
    Ok(data)
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
}
