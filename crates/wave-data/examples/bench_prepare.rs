//! Prepare the two datasets `bench/loader_bench.sh` measures: IMDB train (raw text) and Gutenberg
//! shard 00 packed into 128-token rows (pre-tokenized).
//!
//! ```text
//! cargo run --release -p wave-data --example bench_prepare -- SHARED_DATA_DIR OUT_DIR TOKENIZER_JSON
//! ```

use anyhow::{Context, Result};
use wave_data::{prepare, InputFormat, PrepareOptions, SourceOptions, TextUnit};

fn source(format: InputFormat, input: String) -> SourceOptions {
    SourceOptions {
        format,
        inputs: vec![input],
        text_field: "text".into(),
        label_field: None,
        text_unit: TextUnit::Line,
        max_rows: None,
    }
}

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let (shared, out, tok) = (
        args.next().context("SHARED_DATA_DIR")?,
        args.next().context("OUT_DIR")?,
        args.next().context("TOKENIZER")?,
    );
    let mut imdb = PrepareOptions::new(
        source(
            InputFormat::Imdb,
            format!("{shared}/mirror/aclImdb_v1.tar.gz"),
        ),
        format!("{out}/imdb"),
    );
    imdb.splits = Some(vec!["train".into()]);
    imdb.validation_fraction = 0.0;
    imdb.overwrite = true;
    prepare(&imdb)?;
    let mut gut = PrepareOptions::new(
        source(
            InputFormat::Jsonl,
            format!("{shared}/gutenberg/gutenberg_00.jsonl.gz"),
        ),
        format!("{out}/gutenberg"),
    );
    gut.tokenizer = Some(tok);
    gut.pack_length = Some(128);
    gut.validation_fraction = 0.0;
    gut.tokenizer_threads = 2;
    gut.overwrite = true;
    let m = prepare(&gut)?.manifest;
    println!(
        "prepared {out}/imdb and {out}/gutenberg ({} packed rows)",
        m.splits["train"].rows
    );
    Ok(())
}
