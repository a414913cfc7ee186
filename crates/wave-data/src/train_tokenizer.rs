//! `tokenizer train`: a WordPiece (BERT-style) or byte-level BPE vocabulary from raw text, saved as
//! a Hugging Face `tokenizer.json`. Both kinds use the special tokens `[PAD] [UNK] [CLS] [SEP] [MASK]`
//! (ids 0–4) and the template `[CLS] $A [SEP]`, so they plug into the loader like BERT's.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::decoders::wordpiece::WordPiece as WordPieceDecoder;
use tokenizers::models::bpe::{BpeTrainer, BPE};
use tokenizers::models::wordpiece::{WordPiece, WordPieceTrainer};
use tokenizers::models::TrainerWrapper;
use tokenizers::normalizers::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{AddedToken, Tokenizer};

use crate::error::{Error, Result};
use crate::sources::{read_sources, InputFormat, SourceOptions, TextUnit};

/// Special tokens, in id order.
pub const SPECIAL_TOKENS: [&str; 5] = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"];

/// Vocabulary model to train.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenizerKind {
    /// BERT-style: lowercasing Bert normalizer, Bert pre-tokenizer, `##` continuation pieces.
    WordPiece,
    /// Byte-level BPE (GPT-2 style): no unknown characters.
    Bpe,
}

/// Options of [`train_tokenizer`].
#[derive(Debug, Clone)]
pub struct TrainTokenizerOptions {
    /// Model kind.
    pub kind: TokenizerKind,
    /// Target vocabulary size including special tokens.
    pub vocab_size: usize,
    /// Inputs (format from the extension: `.jsonl[.gz]` → JSON Lines with `text_field`, `.parquet`
    /// → Parquet, anything else → plain text, one sample per line).
    pub inputs: Vec<String>,
    /// JSON / Parquet text field.
    pub text_field: String,
    /// Drop pieces seen fewer times than this.
    pub min_frequency: u64,
    /// Lowercase (WordPiece only).
    pub lowercase: bool,
    /// Output `tokenizer.json`.
    pub out: PathBuf,
}

fn format_of(path: &str) -> InputFormat {
    let p = path.trim_end_matches(".gz");
    if p.ends_with(".jsonl") || p.ends_with(".json") {
        InputFormat::Jsonl
    } else if p.ends_with(".parquet") {
        InputFormat::Parquet
    } else {
        InputFormat::Text
    }
}

/// Train and save a tokenizer; returns the final vocabulary size.
pub fn train_tokenizer(opts: &TrainTokenizerOptions) -> Result<usize> {
    let spec = opts.out.display().to_string();
    if opts.vocab_size <= SPECIAL_TOKENS.len() {
        return Err(Error::config(
            "--vocab-size",
            format!("must exceed the {} special tokens", SPECIAL_TOKENS.len()),
        ));
    }
    let specials: Vec<AddedToken> = SPECIAL_TOKENS
        .iter()
        .map(|t| AddedToken::from(*t, true))
        .collect();
    let (mut tok, mut trainer): (Tokenizer, TrainerWrapper) = match opts.kind {
        TokenizerKind::WordPiece => {
            let model = WordPiece::builder()
                .unk_token("[UNK]".into())
                .build()
                .map_err(|e| Error::tokenizer(&spec, e))?;
            let mut tok = Tokenizer::new(model);
            tok.with_normalizer(Some(BertNormalizer::new(true, true, None, opts.lowercase)))
                .map_err(|e| Error::tokenizer(&spec, e))?;
            tok.with_pre_tokenizer(Some(BertPreTokenizer));
            tok.with_decoder(Some(WordPieceDecoder::default()));
            let trainer = WordPieceTrainer::builder()
                .vocab_size(opts.vocab_size)
                .min_frequency(opts.min_frequency)
                .special_tokens(specials)
                .show_progress(false)
                .build();
            (tok, trainer.into())
        }
        TokenizerKind::Bpe => {
            let mut tok = Tokenizer::new(BPE::default());
            tok.with_pre_tokenizer(Some(ByteLevel::default()));
            tok.with_decoder(Some(ByteLevelDecoder::default()));
            let alphabet: HashSet<char> = ByteLevel::alphabet().into_iter().collect();
            let trainer = BpeTrainer::builder()
                .vocab_size(opts.vocab_size)
                .min_frequency(opts.min_frequency)
                .special_tokens(specials)
                .initial_alphabet(alphabet)
                .show_progress(false)
                .build();
            (tok, trainer.into())
        }
    };
    // The inputs stream through a bounded channel: the trainer keeps word counts, never the corpus.
    let (tx, rx) = std::sync::mpsc::sync_channel::<String>(1024);
    let (inputs, text_field) = (opts.inputs.clone(), opts.text_field.clone());
    let reader = std::thread::spawn(move || -> Result<()> {
        for input in inputs {
            let src = SourceOptions {
                format: format_of(&input),
                inputs: vec![input],
                text_field: text_field.clone(),
                label_field: Some(String::new()),
                text_unit: TextUnit::Line,
                max_rows: None,
            };
            read_sources(&src, &mut |r| {
                tx.send(r.text)
                    .map_err(|_| Error::tokenizer("tokenizer train", "the trainer stopped reading"))
            })?;
        }
        Ok(())
    });
    let trained = tok
        .train(&mut trainer, rx.into_iter())
        .map(|_| ())
        .map_err(|e| Error::tokenizer(&spec, e));
    let read = reader
        .join()
        .map_err(|_| Error::tokenizer(&spec, "the input reader panicked"))?;
    trained?;
    read?;
    let id = |t: &str| {
        tok.token_to_id(t)
            .ok_or_else(|| Error::tokenizer(&spec, format!("trained vocabulary lacks {t}")))
    };
    let (cls, sep) = (id("[CLS]")?, id("[SEP]")?);
    let post = TemplateProcessing::builder()
        .try_single("[CLS] $A [SEP]")
        .and_then(|b| b.try_pair("[CLS] $A [SEP] $B:1 [SEP]:1"))
        .map_err(|e| Error::tokenizer(&spec, e))?
        .special_tokens(vec![("[CLS]", cls), ("[SEP]", sep)])
        .build()
        .map_err(|e| Error::tokenizer(&spec, e))?;
    tok.with_post_processor(Some(post));
    save_atomic(&tok, &opts.out)?;
    Ok(tok.get_vocab_size(true))
}

fn save_atomic(tok: &Tokenizer, out: &Path) -> Result<()> {
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    let tmp = out.with_extension("json.part");
    tok.save(&tmp, false)
        .map_err(|e| Error::tokenizer(out.display().to_string(), e))?;
    std::fs::rename(&tmp, out).map_err(|e| Error::io(out, e))
}
