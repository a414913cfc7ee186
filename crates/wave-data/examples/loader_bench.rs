//! Loader throughput: samples/s and tokens/s of `wave_data::Loader` on a prepared dataset.
//!
//! ```text
//! cargo run --release -p wave-data --example loader_bench -- \
//!     --uri data/imdb --tokenizer bert-base-uncased --max-length 128 --batch 64 --threads 1 --seconds 10
//! ```
//! `--tokenizer ""` streams pre-tokenized `input_ids`; `--shuffle true` streams the training order
//! (`--shuffle-window`, `--shuffle-block`: the `[data]` knobs). Prints one JSON line. Run by
//! `bench/loader_bench.sh` side by side with `bench/loader_peer.py`.

use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use wave_data::{Cursor, DataConfig, Dataset, Loader, LoaderOptions, TextEncoder};

fn main() -> Result<()> {
    let mut cfg = DataConfig::new("");
    cfg.shuffle = false;
    let mut seconds = 10.0f64;
    let mut split = "train".to_string();
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let v = args
            .next()
            .with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--uri" => cfg.uri = v,
            "--tokenizer" => cfg.tokenizer = v,
            "--max-length" => cfg.max_length = v.parse()?,
            "--batch" => cfg.batch_size = v.parse()?,
            "--threads" => cfg.tokenizer_threads = v.parse()?,
            "--seconds" => seconds = v.parse()?,
            "--shuffle" => cfg.shuffle = v.parse()?,
            "--shuffle-window" => cfg.shuffle_window = v.parse()?,
            "--shuffle-block" => cfg.shuffle_block = v.parse()?,
            "--split" => split = v,
            other => bail!("unknown flag {other}"),
        }
    }
    cfg.train_split = split;
    cfg.validate()?;
    let ds = Dataset::open(&cfg.uri)?;
    let enc = if cfg.tokenizer.is_empty() {
        None
    } else {
        Some(Arc::new(TextEncoder::load(&cfg.tokenizer)?))
    };
    let mut loader = Loader::new(
        &ds,
        enc,
        LoaderOptions::train(&cfg, 0, 0, 1),
        Cursor::start(0),
    )?;
    // Warm-up: the first batch includes opening shards and starting the prefetch thread.
    loader.next_batch()?;
    let start = Instant::now();
    let (mut samples, mut tokens) = (0usize, 0usize);
    while start.elapsed().as_secs_f64() < seconds {
        let b = loader.next_batch()?.context("endless loader ended")?;
        samples += b.rows;
        tokens += b.real_tokens;
    }
    let s = start.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({
            "impl": "rust", "uri": cfg.uri, "threads": cfg.tokenizer_threads, "shuffle": cfg.shuffle,
            "shuffle_window": cfg.shuffle_window, "shuffle_block": cfg.shuffle_block,
            "max_length": cfg.max_length, "batch": cfg.batch_size, "samples": samples, "tokens": tokens,
            "seconds": s, "samples_per_s": samples as f64 / s, "tokens_per_s": tokens as f64 / s,
        })
    );
    Ok(())
}
