//! `inspect`: a human-readable summary of a prepared dataset, sample rows, a token-length
//! histogram, the quality of the training order of a labelled split, and optional shard checksum
//! verification.

use std::fmt::Write as _;

use crate::config::DataConfig;
use crate::dataset::{Columns, Dataset};
use crate::error::{Error, Result};
use crate::manifest::{IDS_COLUMN, LABEL_COLUMN, TEXT_COLUMN};
use crate::order::{class_spread, EpochPlan};
use crate::tokenize::TextEncoder;

/// The training order whose class mix [`inspect`] reports (what the loader streams for these
/// settings, at any world size; length bucketing aside).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderCheck {
    /// Order seed (`train.seed`).
    pub seed: u64,
    /// Epoch.
    pub epoch: u64,
    /// Global batch size (`data.batch_size`).
    pub global_batch: usize,
    /// `data.shuffle_window`.
    pub shuffle_window: usize,
    /// `data.shuffle_block`.
    pub shuffle_block: usize,
}

impl Default for OrderCheck {
    /// Seed 0, epoch 0 and the `[data]` defaults.
    fn default() -> Self {
        let d = DataConfig::new("");
        OrderCheck {
            seed: 0,
            epoch: 0,
            global_batch: d.batch_size,
            shuffle_window: d.shuffle_window,
            shuffle_block: d.shuffle_block,
        }
    }
}

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
    /// Report the class mix of the training order of a labelled split (`None`: skip).
    pub order: Option<OrderCheck>,
}

impl InspectOptions {
    /// Defaults: 3 samples, 5000 histogram rows, the order report for the default shuffle, no
    /// verification.
    pub fn new(uri: impl Into<String>) -> Self {
        InspectOptions {
            uri: uri.into(),
            split: None,
            samples: 3,
            tokenizer: None,
            histogram_rows: 5000,
            verify: false,
            order: Some(OrderCheck::default()),
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
    if let (Some(check), Some(names)) = (&opts.order, &m.label_names) {
        if cols.label {
            out.push_str(&order_report(&ds, &split, names, check)?);
        }
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

/// Class mix of the global batches of one epoch of `split` under `check`'s shuffle.
fn order_report(ds: &Dataset, split: &str, names: &[String], check: &OrderCheck) -> Result<String> {
    if check.global_batch == 0 || check.shuffle_window == 0 || check.shuffle_block == 0 {
        return Err(Error::config(
            "--batch-size/--shuffle-window/--shuffle-block",
            "must be > 0",
        ));
    }
    let rgs = ds.row_groups(split)?;
    let only_labels = Columns {
        text: false,
        label: true,
        ids: false,
    };
    let mut stored = Vec::new();
    for d in ds.read_row_groups(split, &rgs, only_labels)? {
        if let Some(l) = &d.label {
            stored.extend_from_slice(l.values());
        }
    }
    let rg_rows: Vec<u64> = rgs.iter().map(|r| r.rows).collect();
    let plan = EpochPlan::new(
        &rg_rows,
        check.seed,
        check.epoch,
        true,
        check.shuffle_window,
        check.shuffle_block,
    );
    let labels: Vec<i64> = plan
        .epoch_rows()
        .into_iter()
        .map(|r| stored.get(r as usize).copied().unwrap_or(-1))
        .collect();
    let s = class_spread(&labels, names.len(), check.global_batch);
    let mut out = format!(
        "training order of {split} (seed {}, epoch {}, global batch {}, shuffle_window {}, shuffle_block {}):\n",
        check.seed, check.epoch, check.global_batch, check.shuffle_window, check.shuffle_block
    );
    if s.batches == 0 {
        let _ = writeln!(out, "  no full batch of {} rows", check.global_batch);
        return Ok(out);
    }
    let _ = writeln!(
        out,
        "  per-batch class-fraction std {:.4} (root mean square over classes) vs {:.4} for an i.i.d. shuffle: {:.2}x, over {} full batches",
        s.std,
        s.iid,
        s.std / s.iid.max(f64::MIN_POSITIVE),
        s.batches
    );
    if let Some((i, counts)) = &s.worst {
        let b = check.global_batch as u64;
        let mix: Vec<String> = names
            .iter()
            .zip(counts)
            .zip(&s.fractions)
            .map(|((n, k), p)| format!("{n} {k} (expected {:.1})", p * b as f64))
            .collect();
        let _ = writeln!(
            out,
            "  worst batch {i} (positions {}..{}): {}",
            *i as u64 * b,
            (*i as u64 + 1) * b,
            mix.join(", ")
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
