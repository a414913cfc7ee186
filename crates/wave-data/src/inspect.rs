//! `inspect`: a human-readable summary of a prepared dataset, sample rows, a token-length
//! histogram, and optional shard checksum verification.

use std::fmt::Write as _;

use crate::dataset::{Columns, Dataset};
use crate::error::Result;
use crate::manifest::{IDS_COLUMN, LABEL_COLUMN, TEXT_COLUMN};
use crate::tokenize::TextEncoder;

/// Options of [`inspect`].
#[derive(Debug, Clone)]
pub struct InspectOptions {
    /// Dataset root.
    pub uri: String,
    /// Split for samples and the histogram (default: `train`, else the first split).
    pub split: Option<String>,
    /// Sample rows to show.
    pub samples: usize,
    /// Tokenizer for the length histogram of raw text (pre-tokenized data needs none).
    pub tokenizer: Option<String>,
    /// Rows measured for the histogram.
    pub histogram_rows: usize,
    /// Recompute and check every shard's SHA-256.
    pub verify: bool,
}

impl InspectOptions {
    /// Defaults: 3 samples, 5000 histogram rows, no verification.
    pub fn new(uri: impl Into<String>) -> Self {
        InspectOptions {
            uri: uri.into(),
            split: None,
            samples: 3,
            tokenizer: None,
            histogram_rows: 5000,
            verify: false,
        }
    }
}

/// Summarise a dataset. Verification failures are errors naming the shard.
pub fn inspect(opts: &InspectOptions) -> Result<String> {
    let ds = Dataset::open(&opts.uri)?;
    let m = ds.manifest();
    let mut out = String::new();
    let _ = writeln!(out, "dataset {} at {}", m.name, ds.uri());
    let _ = writeln!(
        out,
        "format {} v{}, fingerprint {}",
        m.format, m.format_version, m.fingerprint
    );
    let cols: Vec<String> = m
        .schema
        .iter()
        .map(|c| format!("{}: {:?}", c.name, c.ty))
        .collect();
    let _ = writeln!(out, "schema: {}", cols.join(", "));
    if let Some(names) = &m.label_names {
        let _ = writeln!(out, "labels ({}): {}", names.len(), names.join(", "));
    }
    if let Some(t) = &m.tokenizer {
        let _ = writeln!(
            out,
            "pre-tokenized: {} (vocab {})",
            t.fingerprint, t.vocab_size
        );
    }
    if let Some(p) = m.pack_length {
        let _ = writeln!(out, "packed into rows of {p} tokens");
    }
    for (name, s) in &m.splits {
        let bytes: u64 = s.shards.iter().map(|x| x.bytes).sum();
        let rgs: usize = s.shards.iter().map(|x| x.row_groups.len()).sum();
        let _ = write!(
            out,
            "split {name}: {} rows, {} shards, {rgs} row groups, {bytes} bytes",
            s.rows,
            s.shards.len()
        );
        if let Some(c) = &s.label_counts {
            let _ = write!(out, ", per label {c:?}");
        }
        if let Some(t) = s.tokens {
            let _ = write!(out, ", {t} tokens");
        }
        out.push('\n');
    }
    for src in &m.sources {
        let _ = writeln!(
            out,
            "source {} ({} bytes, sha256 {})",
            src.name, src.bytes, src.sha256
        );
    }

    let split = match &opts.split {
        Some(s) => s.clone(),
        None if m.splits.contains_key("train") => "train".into(),
        None => m.splits.keys().next().cloned().unwrap_or_default(),
    };
    let rgs = ds.row_groups(&split)?;
    let cols = Columns {
        text: m.has_column(TEXT_COLUMN),
        label: m.has_column(LABEL_COLUMN),
        ids: m.has_column(IDS_COLUMN),
    };
    let enc = opts
        .tokenizer
        .as_deref()
        .map(TextEncoder::load)
        .transpose()?;
    let mut lengths = Vec::new();
    let mut shown = 0;
    for rg in rgs {
        if shown >= opts.samples
            && (lengths.len() >= opts.histogram_rows || (enc.is_none() && !cols.ids))
        {
            break;
        }
        let d = ds.read_row_group(&split, rg, cols)?;
        let mut texts = Vec::new();
        for i in 0..rg.rows as usize {
            if shown < opts.samples {
                shown += 1;
                let label = d.label.as_ref().map(|l| l.value(i));
                let label = label.map(|l| {
                    m.label_names
                        .as_ref()
                        .and_then(|n| n.get(l as usize))
                        .map_or(l.to_string(), |n| format!("{l} ({n})"))
                });
                let body = match (&d.text, d.ids_of(i)) {
                    (Some(t), _) => {
                        format!("{:?}", t.value(i).chars().take(200).collect::<String>())
                    }
                    (None, Some(ids)) => format!("ids {:?}…", &ids[..ids.len().min(16)]),
                    _ => String::new(),
                };
                let _ = writeln!(
                    out,
                    "[{split} row {}] label {}: {body}",
                    d.first_row + i as u64,
                    label.unwrap_or_else(|| "-".into())
                );
            }
            if lengths.len() + texts.len() < opts.histogram_rows {
                match (d.ids_of(i), &d.text, &enc) {
                    (Some(ids), _, _) => lengths.push(ids.len()),
                    (None, Some(t), Some(_)) => texts.push(t.value(i)),
                    _ => {}
                }
            }
        }
        if let Some(e) = &enc {
            lengths.extend(e.encode_batch(&texts, true, None)?.iter().map(Vec::len));
        }
    }
    if !lengths.is_empty() {
        out.push_str(&histogram(&lengths, &split));
    }
    if opts.verify {
        let checked = ds.verify()?;
        let _ = writeln!(
            out,
            "verified sha256 of {} shards: all match the manifest",
            checked.len()
        );
    }
    Ok(out)
}

/// Token-length histogram with power-of-two bins and percentiles.
fn histogram(lengths: &[usize], split: &str) -> String {
    let mut v = lengths.to_vec();
    v.sort_unstable();
    let pct = |p: f64| v[((v.len() - 1) as f64 * p).round() as usize];
    let mut out = format!(
        "token lengths ({} rows of {split}): p50 {} p90 {} p99 {} max {}\n",
        v.len(),
        pct(0.5),
        pct(0.9),
        pct(0.99),
        v[v.len() - 1]
    );
    let mut lo = 0usize;
    let mut hi = 16usize;
    while lo <= v[v.len() - 1] {
        let n = v.iter().filter(|&&x| x >= lo && x < hi).count();
        let bar = "#".repeat((60 * n).div_ceil(v.len()));
        let _ = writeln!(out, "  [{lo:>6}, {hi:>6}) {n:>7} {bar}");
        lo = hi;
        hi *= 2;
    }
    out
}
