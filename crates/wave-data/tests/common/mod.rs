//! Shared test helpers: locating the shared data folder (skip-or-fail rule), synthetic datasets,
//! and a throw-away SeaweedFS S3 server on loopback.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};

use wave_data::{prepare, InputFormat, PrepareOptions, SourceOptions, TextUnit};
use wave_testkit::missing;

/// The shared data folder (`$WAVE_SHARED_DATA`, default `<workspace>/../shared/data`) or `None`
/// (after printing a skip message) when absent.
pub fn shared(rel: &str) -> Option<PathBuf> {
    let root = std::env::var_os("WAVE_SHARED_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data"));
    let p = root.join(rel);
    if p.exists() {
        Some(p)
    } else {
        missing(&format!("shared data {}", p.display()));
        None
    }
}

/// The BERT uncased tokenizer.json from the shared data.
pub fn bert() -> Option<String> {
    shared("tokenizers/bert-base-uncased/tokenizer.json").map(|p| p.display().to_string())
}

/// Source options for a list of inputs in one format.
pub fn source(format: InputFormat, inputs: &[&Path]) -> SourceOptions {
    SourceOptions {
        format,
        inputs: inputs.iter().map(|p| p.display().to_string()).collect(),
        text_field: "text".into(),
        label_field: None,
        text_unit: TextUnit::Line,
        max_rows: None,
    }
}

/// A JSON Lines file of `n` labelled samples of varying length (labels `i % classes`).
pub fn synthetic_jsonl(dir: &Path, n: usize, classes: usize) -> PathBuf {
    let words = [
        "wave", "network", "token", "river", "signal", "phase", "data", "model", "shard", "epoch",
    ];
    let path = dir.join("synthetic.jsonl");
    let mut f = std::fs::File::create(&path).expect("create jsonl");
    for i in 0..n {
        let len = 3 + (i * 7919) % 41;
        let text: Vec<&str> = (0..len).map(|k| words[(i + k * 3) % words.len()]).collect();
        writeln!(f, "{}", serde_json::json!({"text": format!("sample {i} {}", text.join(" ")), "label": i % classes})).expect("write");
    }
    path
}

/// Prepare `n` synthetic rows into `dir/ds` with small row groups; returns the dataset URI.
pub fn synthetic_dataset(
    dir: &Path,
    n: usize,
    row_group_rows: usize,
    tokenizer: Option<&str>,
) -> String {
    let input = synthetic_jsonl(dir, n, 4);
    let out = dir.join("ds");
    let mut opts = PrepareOptions::new(
        source(InputFormat::Jsonl, &[&input]),
        out.display().to_string(),
    );
    opts.validation_fraction = 0.0;
    opts.row_group_rows = row_group_rows;
    opts.tokenizer = tokenizer.map(String::from);
    prepare(&opts).expect("prepare synthetic");
    out.display().to_string()
}

#[allow(unused_imports)] // not every test binary starts a server
pub use wave_testkit::Weed;

/// Every sample position of one epoch as seen by `world` ranks (rank-major per batch), plus the
/// number of batches each rank got.
pub fn epoch_positions(
    ds: &wave_data::Dataset,
    enc: &std::sync::Arc<wave_data::TextEncoder>,
    opts: &wave_data::LoaderOptions,
) -> (Vec<u64>, Vec<u64>) {
    let mut per_rank: Vec<Vec<Vec<u64>>> = Vec::new();
    for r in 0..opts.world_size {
        let mut o = opts.clone();
        o.rank = r;
        o.epochs = Some(1);
        let mut l = wave_data::Loader::new(
            ds,
            Some(enc.clone()),
            o,
            wave_data::Cursor::start(opts.seed),
        )
        .expect("loader");
        let mut batches = Vec::new();
        while let Some(b) = l.next_batch().expect("batch") {
            batches.push(b.sample_positions);
        }
        per_rank.push(batches);
    }
    let counts = per_rank.iter().map(|b| b.len() as u64).collect();
    let mut all = Vec::new();
    for k in 0..per_rank[0].len() {
        for r in &per_rank {
            all.extend(r[k].iter().copied().filter(|&p| p != u64::MAX));
        }
    }
    (all, counts)
}

/// The label of every row of a split, in storage order.
pub fn labels_of(ds: &wave_data::Dataset, split: &str) -> Vec<i64> {
    let rgs = ds.row_groups(split).expect("row groups");
    let cols = wave_data::Columns {
        text: false,
        label: true,
        ids: false,
    };
    ds.read_row_groups(split, &rgs, cols)
        .expect("read labels")
        .iter()
        .flat_map(|d| d.label.as_ref().expect("label column").values().to_vec())
        .collect()
}
