//! `wave-dist data …` and `wave-dist tokenizer …`: thin clap front ends over `wave-data`.
//!
//! ```text
//! wave-dist data fetch imdb --mirror ../shared/data/mirror --out data/raw
//! wave-dist data prepare --format imdb --input data/raw/aclImdb_v1.tar.gz --splits train,validation \
//!     --out data/imdb
//! wave-dist data prepare --format jsonl --input 'corpus/*.jsonl.gz' --tokenizer bert-base-uncased \
//!     --pack-length 128 --tokenizer-threads 2 --validation-fraction 0.01 --out data/corpus
//! wave-dist data inspect data/imdb --tokenizer bert-base-uncased --verify
//! wave-dist tokenizer train --kind wordpiece --vocab-size 8000 --input corpus.txt --out tok/tokenizer.json
//! ```

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use wave_data::{InputFormat, TextUnit};

/// `wave-dist data …`
#[derive(Debug, Subcommand)]
pub enum DataCommand {
    /// Download an official raw archive (or copy it from a mirror folder) and verify its pinned
    /// checksums (datasets/<name>/recipe.toml).
    Fetch(FetchArgs),
    /// Turn raw inputs into Parquet shards + manifest.json in a folder or object store, streamed
    /// (any corpus size) and written in a seeded random order.
    Prepare(PrepareArgs),
    /// Summarise a prepared dataset: manifest, sample rows, token lengths, the class mix of the
    /// training order, shard checksums.
    Inspect(InspectArgs),
}

/// `wave-dist tokenizer …`
#[derive(Debug, Subcommand)]
pub enum TokenizerCommand {
    /// Train a WordPiece or byte-level BPE vocabulary and save it as tokenizer.json.
    Train(TrainTokenizerArgs),
}

/// Data sets with a built-in fetch recipe.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum FetchName {
    /// AG News (ag_news_csv.tgz).
    Agnews,
    /// IMDB movie reviews (aclImdb_v1.tar.gz).
    Imdb,
}

/// Options of `data fetch`.
#[derive(Debug, Args)]
pub struct FetchArgs {
    /// Data set to fetch.
    #[arg(value_enum)]
    pub name: FetchName,
    /// Folder holding the same archive file(s) to copy instead of downloading (offline use).
    #[arg(long, env = "WAVE_DATA_MIRROR")]
    pub mirror: Option<PathBuf>,
    /// Folder to place the verified archive in.
    #[arg(long, default_value = "data/raw")]
    pub out: PathBuf,
}

/// Input formats of `data prepare`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum FormatArg {
    /// ag_news_csv.tgz (ag_news_csv/{train,test}.csv + classes.txt).
    Agnews,
    /// aclImdb_v1.tar.gz (aclImdb/{train,test}/{pos,neg}/*.txt).
    Imdb,
    /// JSON Lines (.jsonl or .jsonl.gz), one sample per line.
    Jsonl,
    /// Plain text: one sample per line or per paragraph (--text-unit).
    Text,
    /// Parquet with a text column and optionally an integer label column (Hugging Face export).
    Parquet,
}

/// What one plain-text sample is.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum TextUnitArg {
    /// Every non-blank line.
    Line,
    /// Every blank-line-separated paragraph.
    Paragraph,
}

/// Options of `data prepare`.
#[derive(Debug, Args)]
pub struct PrepareArgs {
    /// Input format.
    #[arg(long, value_enum)]
    pub format: FormatArg,
    /// Input files: an archive (agnews, imdb) or files as PATH or SPLIT=PATH, where PATH may be a
    /// quoted glob ('corpus/*.jsonl.gz', expanded in sorted order); repeat the flag or list several
    /// (default split: train; Parquet files named train-*/test-*/validation-* go to that split).
    #[arg(long, required = true, num_args = 1..)]
    pub input: Vec<String>,
    /// Output dataset root: a path, file://, s3://bucket/prefix, gs://…, az://… (credentials and
    /// endpoint from the standard environment variables, e.g. AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID).
    #[arg(long)]
    pub out: String,
    /// Dataset name recorded in the manifest (default: the format for archives, else the first
    /// input's stem, or its folder's name for a glob).
    #[arg(long)]
    pub name: Option<String>,
    /// Splits to write, comma-separated (default: train,test for archives — plus validation carved
    /// from train — else every split found). An archive lacking a split is an error; list only the
    /// splits it holds (e.g. --splits test).
    #[arg(long, value_delimiter = ',')]
    pub splits: Option<Vec<String>>,
    /// Pre-tokenize into input_ids with this tokenizer (tokenizer.json path or a name under
    /// $WAVE_DIST_HOME/tokenizers/).
    #[arg(long)]
    pub tokenizer: Option<String>,
    /// Pack documents (joined by [SEP]) into rows of exactly N token ids; needs --tokenizer; drops
    /// text and labels.
    #[arg(long)]
    pub pack_length: Option<usize>,
    /// Fraction of train moved to a validation split when the source has none (0 = off): exactly
    /// this fraction of every class (of all documents when unlabelled), chosen by the seeded
    /// shuffle; with --keep-order each document with this probability.
    #[arg(long, default_value_t = 0.05)]
    pub validation_fraction: f64,
    /// Seed of the row shuffle and of the train/validation split.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Write rows in source order instead of a seeded random order (for sources whose order
    /// matters).
    #[arg(long)]
    pub keep_order: bool,
    /// Folder for the temporary spool of the shuffle (about the corpus' text size; removed at the
    /// end) [default: the system temporary folder, $TMPDIR].
    #[arg(long)]
    pub temp_dir: Option<PathBuf>,
    /// JSON/Parquet field holding the text.
    #[arg(long, default_value = "text")]
    pub text_field: String,
    /// JSON/Parquet field holding the label (default: "label" when present; "" = unlabelled).
    #[arg(long)]
    pub label_field: Option<String>,
    /// Plain-text sample unit.
    #[arg(long, value_enum, default_value = "line")]
    pub text_unit: TextUnitArg,
    /// Maximum rows per shard.
    #[arg(long)]
    pub shard_rows: Option<u64>,
    /// Maximum (uncompressed) bytes per shard.
    #[arg(long, default_value_t = 128 << 20)]
    pub shard_bytes: u64,
    /// Rows per row group.
    #[arg(long, default_value_t = 1024)]
    pub row_group_rows: usize,
    /// Threads used for --tokenizer (documents are tokenized in parallel chunks).
    #[arg(long, default_value_t = 1)]
    pub tokenizer_threads: usize,
    /// Keep only the first N rows of every split (smoke tests).
    #[arg(long)]
    pub max_rows: Option<usize>,
    /// Replace an existing dataset at --out.
    #[arg(long)]
    pub overwrite: bool,
}

/// Options of `data inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Dataset root (path or URL).
    pub uri: String,
    /// Split to sample (default: train, else the first).
    #[arg(long)]
    pub split: Option<String>,
    /// Sample rows to print.
    #[arg(long, default_value_t = 3)]
    pub samples: usize,
    /// Tokenizer for the token-length histogram of raw text (pre-tokenized data needs none).
    #[arg(long)]
    pub tokenizer: Option<String>,
    /// Rows measured for the histogram.
    #[arg(long, default_value_t = 5000)]
    pub histogram_rows: usize,
    /// Recompute every shard's SHA-256 and compare with the manifest (non-zero exit on mismatch).
    #[arg(long)]
    pub verify: bool,
    /// Order report (labelled splits): the seed of the training order (train.seed).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Order report: the epoch.
    #[arg(long, default_value_t = 0)]
    pub epoch: u64,
    /// Order report: the global batch size (data.batch_size).
    #[arg(long, default_value_t = wave_data::DataConfig::new("").batch_size)]
    pub batch_size: usize,
    /// Order report: data.shuffle_window.
    #[arg(long, default_value_t = wave_data::DataConfig::new("").shuffle_window)]
    pub shuffle_window: usize,
    /// Order report: data.shuffle_block.
    #[arg(long, default_value_t = wave_data::DataConfig::new("").shuffle_block)]
    pub shuffle_block: usize,
}

/// Vocabulary models.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum KindArg {
    /// BERT-style WordPiece (lowercasing by default).
    Wordpiece,
    /// Byte-level BPE.
    Bpe,
}

/// Options of `tokenizer train`.
#[derive(Debug, Args)]
pub struct TrainTokenizerArgs {
    /// Model kind.
    #[arg(long, value_enum)]
    pub kind: KindArg,
    /// Vocabulary size including the special tokens [PAD] [UNK] [CLS] [SEP] [MASK].
    #[arg(long)]
    pub vocab_size: usize,
    /// Training text: .jsonl[.gz] (field --text-field), .parquet, or plain text (one sample a line).
    #[arg(long, required = true, num_args = 1..)]
    pub input: Vec<String>,
    /// Output tokenizer.json.
    #[arg(long)]
    pub out: PathBuf,
    /// JSON/Parquet text field.
    #[arg(long, default_value = "text")]
    pub text_field: String,
    /// Minimum frequency of a merged piece.
    #[arg(long, default_value_t = 2)]
    pub min_frequency: u64,
    /// Keep case (WordPiece lowercases by default).
    #[arg(long)]
    pub cased: bool,
}

/// Run `wave-dist data …`.
pub fn run_data(cmd: DataCommand) -> Result<()> {
    match cmd {
        DataCommand::Fetch(a) => {
            let name = match a.name {
                FetchName::Agnews => "agnews",
                FetchName::Imdb => "imdb",
            };
            let r = wave_data::fetch(name, a.mirror.as_deref(), &a.out)?;
            println!(
                "{}: {} ({}; splits {}; sha256 {}; member MD5s checked: {})",
                name,
                r.path.display(),
                r.variant,
                r.splits.join(","),
                r.sha256,
                if r.members_checked.is_empty() {
                    "none".into()
                } else {
                    r.members_checked.join(", ")
                }
            );
            Ok(())
        }
        DataCommand::Prepare(a) => {
            let source = wave_data::SourceOptions {
                format: match a.format {
                    FormatArg::Agnews => InputFormat::AgNews,
                    FormatArg::Imdb => InputFormat::Imdb,
                    FormatArg::Jsonl => InputFormat::Jsonl,
                    FormatArg::Text => InputFormat::Text,
                    FormatArg::Parquet => InputFormat::Parquet,
                },
                inputs: a.input,
                text_field: a.text_field,
                label_field: a.label_field,
                text_unit: match a.text_unit {
                    TextUnitArg::Line => TextUnit::Line,
                    TextUnitArg::Paragraph => TextUnit::Paragraph,
                },
                max_rows: a.max_rows,
            };
            let mut o = wave_data::PrepareOptions::new(source, a.out);
            o.name = a.name;
            o.splits = a.splits;
            o.tokenizer = a.tokenizer;
            o.pack_length = a.pack_length;
            o.validation_fraction = a.validation_fraction;
            o.seed = a.seed;
            o.keep_order = a.keep_order;
            o.temp_dir = a.temp_dir;
            o.shard_rows = a.shard_rows;
            o.shard_bytes = a.shard_bytes;
            o.row_group_rows = a.row_group_rows;
            o.tokenizer_threads = a.tokenizer_threads;
            o.overwrite = a.overwrite;
            let r = wave_data::prepare(&o).map_err(|e| match &e {
                wave_data::Error::MissingSplit { available, .. } if !available.is_empty() => {
                    anyhow::anyhow!(
                        "{e}\nhint: prepare only the splits this input holds, e.g. --splits {}",
                        available.join(",")
                    )
                }
                _ => anyhow::Error::new(e),
            })?;
            for (name, s) in &r.manifest.splits {
                println!("{name}: {} rows in {} shards", s.rows, s.shards.len());
            }
            println!(
                "rows {} (seed {})",
                if r.manifest.prepare.shuffled {
                    "shuffled"
                } else {
                    "in source order"
                },
                r.manifest.prepare.seed
            );
            println!(
                "wrote {}/manifest.json (fingerprint {})",
                r.uri, r.manifest.fingerprint
            );
            Ok(())
        }
        DataCommand::Inspect(a) => {
            let opts = wave_data::InspectOptions {
                uri: a.uri,
                split: a.split,
                samples: a.samples,
                tokenizer: a.tokenizer,
                histogram_rows: a.histogram_rows,
                verify: a.verify,
                order: Some(wave_data::OrderCheck {
                    seed: a.seed,
                    epoch: a.epoch,
                    global_batch: a.batch_size,
                    shuffle_window: a.shuffle_window,
                    shuffle_block: a.shuffle_block,
                }),
            };
            print!("{}", wave_data::inspect(&opts).context("inspect failed")?);
            Ok(())
        }
    }
}

/// Run `wave-dist tokenizer …`.
pub fn run_tokenizer(cmd: TokenizerCommand) -> Result<()> {
    match cmd {
        TokenizerCommand::Train(a) => {
            let opts = wave_data::TrainTokenizerOptions {
                kind: match a.kind {
                    KindArg::Wordpiece => wave_data::TokenizerKind::WordPiece,
                    KindArg::Bpe => wave_data::TokenizerKind::Bpe,
                },
                vocab_size: a.vocab_size,
                inputs: a.input,
                text_field: a.text_field,
                min_frequency: a.min_frequency,
                lowercase: !a.cased,
                out: a.out.clone(),
            };
            let n = wave_data::train_tokenizer(&opts)?;
            println!("wrote {} ({n} tokens)", a.out.display());
            Ok(())
        }
    }
}
