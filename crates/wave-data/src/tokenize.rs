//! [`TextEncoder`]: a Hugging Face `tokenizer.json` with padding and truncation disabled (this crate
//! pads per batch and truncates per loader), plus thread-capped batch encoding.

use std::path::{Path, PathBuf};

use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

use crate::error::{Error, Result};
use crate::manifest::sha256_hex;

/// Where named tokenizers live: `$WAVE_DIST_HOME/tokenizers/<name>/tokenizer.json`
/// (`WAVE_DIST_HOME` defaults to `~/.cache/wave-dist`).
pub fn tokenizer_home() -> PathBuf {
    if let Some(h) = std::env::var_os("WAVE_DIST_HOME").filter(|h| !h.is_empty()) {
        return PathBuf::from(h).join("tokenizers");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    home.join(".cache").join("wave-dist").join("tokenizers")
}

/// Resolve a tokenizer spec (path to a `tokenizer.json`, or a name) to a file path.
pub fn resolve_tokenizer(spec: &str) -> Result<PathBuf> {
    let direct = Path::new(spec);
    if direct.is_file() {
        return Ok(direct.to_path_buf());
    }
    if direct.is_dir() && direct.join("tokenizer.json").is_file() {
        return Ok(direct.join("tokenizer.json"));
    }
    let named = tokenizer_home().join(spec).join("tokenizer.json");
    if !spec.contains('/') && !spec.is_empty() && named.is_file() {
        return Ok(named);
    }
    Err(Error::tokenizer(
        spec,
        format!(
            "not found: neither a tokenizer.json file nor {} exists (set WAVE_DIST_HOME or give a path)",
            named.display()
        ),
    ))
}

/// A loaded tokenizer. Padding and truncation configured in the file are switched off.
#[derive(Clone)]
pub struct TextEncoder {
    tokenizer: Tokenizer,
    spec: String,
    sha256: String,
    pad_id: u32,
}

impl std::fmt::Debug for TextEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextEncoder")
            .field("spec", &self.spec)
            .field("fingerprint", &self.fingerprint())
            .finish()
    }
}

impl TextEncoder {
    /// Load from a path to `tokenizer.json` (or its folder) or a name under [`tokenizer_home`].
    pub fn load(spec: &str) -> Result<TextEncoder> {
        let path = resolve_tokenizer(spec)?;
        let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
        Self::from_bytes(&bytes, spec)
    }

    /// Load from the bytes of a `tokenizer.json`; `spec` names it in messages.
    pub fn from_bytes(bytes: &[u8], spec: &str) -> Result<TextEncoder> {
        let mut tokenizer = Tokenizer::from_bytes(bytes).map_err(|e| Error::tokenizer(spec, e))?;
        let configured_pad = tokenizer.get_padding().map(|p| p.pad_id);
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(None)
            .map_err(|e| Error::tokenizer(spec, e))?;
        let pad_id = configured_pad
            .or_else(|| {
                ["[PAD]", "<pad>", "<|pad|>"]
                    .iter()
                    .find_map(|t| tokenizer.token_to_id(t))
            })
            .unwrap_or(0);
        Ok(TextEncoder {
            tokenizer,
            spec: spec.to_string(),
            sha256: sha256_hex(bytes),
            pad_id,
        })
    }

    /// Vocabulary size including added tokens.
    pub fn vocab_size(&self) -> usize {
        self.tokenizer.get_vocab_size(true)
    }

    /// Id used for padding (`[PAD]`, or the file's padding id, else 0).
    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    /// Id of the mask token (`[MASK]` or `<mask>`), for masked-token objectives.
    pub fn mask_id(&self) -> Option<u32> {
        ["[MASK]", "<mask>"]
            .iter()
            .find_map(|t| self.tokenizer.token_to_id(t))
    }

    /// Ids of the tokenizer's special tokens (`[CLS]`, `[SEP]`, `[PAD]`, `[MASK]`, `[UNK]` …: the
    /// added tokens flagged special), ascending. Masked LM never selects these.
    pub fn special_ids(&self) -> Vec<u32> {
        let mut ids: Vec<u32> = self
            .tokenizer
            .get_added_tokens_decoder()
            .into_iter()
            .filter(|(_, t)| t.special)
            .map(|(id, _)| id)
            .collect();
        ids.sort_unstable();
        ids
    }

    /// Id of the separator placed between packed documents (`[SEP]`, `</s>` or `<|endoftext|>`).
    pub fn sep_id(&self) -> Option<u32> {
        ["[SEP]", "</s>", "<|endoftext|>"]
            .iter()
            .find_map(|t| self.tokenizer.token_to_id(t))
    }

    /// `sha256:<hex of tokenizer.json>;vocab=<size>`: equal fingerprints encode identically.
    pub fn fingerprint(&self) -> String {
        format!("sha256:{};vocab={}", self.sha256, self.vocab_size())
    }

    /// SHA-256 of the `tokenizer.json` bytes.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// The spec it was loaded from.
    pub fn spec(&self) -> &str {
        &self.spec
    }

    /// The underlying tokenizer (padding and truncation disabled).
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// A copy that truncates to `max_length` tokens including special tokens (so `[SEP]` survives).
    pub fn truncating(&self, max_length: usize) -> Result<TextEncoder> {
        let mut t = self.clone();
        t.tokenizer
            .with_truncation(Some(TruncationParams {
                max_length,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
                direction: TruncationDirection::Right,
            }))
            .map_err(|e| Error::tokenizer(&self.spec, e))?;
        Ok(t)
    }

    /// Encode texts to ids with at most `pool`'s threads (serially without a pool).
    pub fn encode_batch(
        &self,
        texts: &[&str],
        add_special_tokens: bool,
        pool: Option<&rayon::ThreadPool>,
    ) -> Result<Vec<Vec<u32>>> {
        let run = || -> Result<Vec<Vec<u32>>> {
            let inputs: Vec<&str> = texts.to_vec();
            let encs = self
                .tokenizer
                .encode_batch_fast(inputs, add_special_tokens)
                .map_err(|e| Error::tokenizer(&self.spec, e))?;
            Ok(encs.into_iter().map(|e| e.get_ids().to_vec()).collect())
        };
        match pool {
            Some(p) => p.install(run),
            None => texts
                .iter()
                .map(|t| {
                    self.tokenizer
                        .encode_fast(*t, add_special_tokens)
                        .map(|e| e.get_ids().to_vec())
                        .map_err(|e| Error::tokenizer(&self.spec, e))
                })
                .collect(),
        }
    }
}

/// A rayon pool of `threads` workers, or `None` for 1 (encode serially on the caller's thread).
pub fn encode_pool(threads: usize) -> Result<Option<rayon::ThreadPool>> {
    if threads <= 1 {
        return Ok(None);
    }
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("wave-data-tok-{i}"))
        .build()
        .map(Some)
        .map_err(|e| {
            Error::config(
                "data.tokenizer_threads",
                format!("cannot start {threads} threads: {e}"),
            )
        })
}
