//! The training order is close to an i.i.d. shuffle even when the shards are sorted by class.

mod common;

use std::io::Write;
use std::path::Path;

use wave_data::order::EpochPlan;
use wave_data::{
    prepare, Cursor, DataConfig, Dataset, InputFormat, Loader, LoaderOptions, PrepareOptions,
};

/// Three default windows and a bit: windows do not cover the split.
const ROWS: usize = 100_000;
const BATCH: usize = 64;

/// A split of `ROWS` short rows stored sorted by class (`classes` equal runs), pre-tokenized so
/// the loader only reads.
fn class_sorted_split(dir: &Path, classes: usize, tokenizer: &str) -> Dataset {
    let input = dir.join(format!("sorted-{classes}.jsonl"));
    let mut f = std::io::BufWriter::new(std::fs::File::create(&input).expect("create"));
    for i in 0..ROWS {
        let label = i * classes / ROWS;
        writeln!(
            f,
            "{{\"text\": \"row {i} of class {label}\", \"label\": {label}}}"
        )
        .expect("write");
    }
    drop(f);
    let out = dir.join(format!("ds-{classes}"));
    let mut o = PrepareOptions::new(
        common::source(InputFormat::Jsonl, &[&input]),
        out.display().to_string(),
    );
    o.keep_order = true;
    o.validation_fraction = 0.0;
    o.tokenizer = Some(tokenizer.to_string());
    prepare(&o).expect("prepare");
    Dataset::open(&out.display().to_string()).expect("open")
}

/// Per-batch class-fraction standard deviation (root mean square over classes) of full batches of
/// `labels` taken in order, and the value an i.i.d. shuffle gives, `sqrt(mean_c p_c(1-p_c)/B)`.
fn spread(labels: &[i64], classes: usize) -> (f64, f64) {
    let batches: Vec<&[i64]> = labels.chunks_exact(BATCH).collect();
    let (mut measured, mut iid) = (0.0, 0.0);
    for c in 0..classes as i64 {
        let p = labels.iter().filter(|&&l| l == c).count() as f64 / labels.len() as f64;
        let var = batches
            .iter()
            .map(|b| {
                let f = b.iter().filter(|&&l| l == c).count() as f64 / BATCH as f64;
                (f - p).powi(2)
            })
            .sum::<f64>()
            / batches.len() as f64;
        measured += var / classes as f64;
        iid += p * (1.0 - p) / BATCH as f64 / classes as f64;
    }
    (measured.sqrt(), iid.sqrt())
}

#[test]
fn on_a_class_sorted_split_the_default_shuffle_gives_batches_within_15_percent_of_iid() {
    let Some(tok) = common::bert() else { return };
    let dir = tempfile::tempdir().expect("tmp");
    for classes in [2usize, 4] {
        let ds = class_sorted_split(dir.path(), classes, &tok);
        let stored = common::labels_of(&ds, "train");
        assert!(
            stored.windows(2).all(|w| w[0] <= w[1]),
            "the split is stored sorted by class"
        );
        let rg_rows: Vec<u64> = ds
            .row_groups("train")
            .expect("row groups")
            .iter()
            .map(|r| r.rows)
            .collect();
        let cfg = DataConfig::new("unused");
        for seed in [1u64, 2, 3] {
            let mut opts = LoaderOptions::train(&cfg, seed, 0, 1);
            opts.epochs = Some(1);
            let mut l = Loader::new(&ds, None, opts, Cursor::start(seed)).expect("loader");
            let mut labels = Vec::new();
            while let Some(b) = l.next_batch().expect("batch") {
                labels.extend(b.labels);
            }
            assert_eq!(labels.len(), ROWS);
            let (measured, iid) = spread(&labels, classes);
            let ratio = measured / iid;
            assert!(
                (0.85..=1.15).contains(&ratio),
                "{classes} classes, seed {seed}: per-batch std {measured:.4} vs i.i.d. {iid:.4} (ratio {ratio:.3})"
            );
            // Negative control: windows of one row group each cannot mix a sorted split, and the
            // same measurement says so (the bound above can fail).
            let plan = EpochPlan::new(&rg_rows, seed, 0, true, 1024, 1024);
            let coarse: Vec<i64> = plan
                .epoch_rows()
                .iter()
                .map(|&r| stored[r as usize])
                .collect();
            let (m, i) = spread(&coarse, classes);
            assert!(m / i > 3.0, "one-row-group windows: ratio {:.3}", m / i);
        }
    }
}
