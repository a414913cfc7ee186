//! `[data]` section of the job config.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// `[data]` section of the job config. Every field but `uri` has a default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// Dataset root holding `manifest.json` (path, `file://`, `s3://`, `gs://`, `az://`).
    pub uri: String,
    /// Split streamed for training.
    #[serde(default = "default_train_split")]
    pub train_split: String,
    /// Split used for evaluation.
    #[serde(default = "default_eval_split")]
    pub eval_split: String,
    /// GLOBAL samples per optimizer step (all ranks together); must divide by the world size.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// Tokens per sample including special tokens; longer samples are truncated.
    #[serde(default = "default_max_length")]
    pub max_length: usize,
    /// `tokenizer.json` path, or a name resolved as `$WAVE_DIST_HOME/tokenizers/<name>/tokenizer.json`;
    /// empty = use the dataset's pre-tokenized `input_ids`.
    #[serde(default = "default_tokenizer")]
    pub tokenizer: String,
    /// Threads used to tokenize on the fly, per rank.
    #[serde(default = "default_one")]
    pub tokenizer_threads: usize,
    /// Shuffle the training order (seeded; a pure function of seed, epoch and position).
    #[serde(default = "default_true")]
    pub shuffle: bool,
    /// Rows shuffled together in memory, at most (a window of blocks dealt from the whole split),
    /// in samples.
    #[serde(default = "default_shuffle_window")]
    pub shuffle_window: usize,
    /// Rows of the unit dealt into windows (consecutive rows of one row group), in samples. Each
    /// window takes one block from every run of consecutive blocks, so it is a sample of the whole
    /// split; see the `order` module for the measured batch statistics.
    #[serde(default = "default_shuffle_block")]
    pub shuffle_block: usize,
    /// Group similar lengths inside a shuffle window to cut padding.
    #[serde(default)]
    pub bucket_by_length: bool,
    /// Batches prepared ahead by the background thread (bounds memory).
    #[serde(default = "default_prefetch")]
    pub prefetch_batches: usize,
}

fn default_train_split() -> String {
    "train".into()
}
fn default_eval_split() -> String {
    "validation".into()
}
fn default_batch_size() -> usize {
    64
}
fn default_max_length() -> usize {
    128
}
fn default_tokenizer() -> String {
    "bert-base-uncased".into()
}
fn default_one() -> usize {
    1
}
fn default_true() -> bool {
    true
}
fn default_shuffle_window() -> usize {
    32768
}
fn default_shuffle_block() -> usize {
    32
}
fn default_prefetch() -> usize {
    4
}

impl DataConfig {
    /// A config for `uri` with every other field at its default.
    pub fn new(uri: impl Into<String>) -> Self {
        DataConfig {
            uri: uri.into(),
            train_split: default_train_split(),
            eval_split: default_eval_split(),
            batch_size: default_batch_size(),
            max_length: default_max_length(),
            tokenizer: default_tokenizer(),
            tokenizer_threads: default_one(),
            shuffle: true,
            shuffle_window: default_shuffle_window(),
            shuffle_block: default_shuffle_block(),
            bucket_by_length: false,
            prefetch_batches: default_prefetch(),
        }
    }

    /// Check every field; the error names it (`data.batch_size must be > 0`).
    pub fn validate(&self) -> Result<()> {
        if self.uri.trim().is_empty() {
            return Err(Error::config("data.uri", "must not be empty"));
        }
        for (field, v) in [
            ("data.train_split", &self.train_split),
            ("data.eval_split", &self.eval_split),
        ] {
            if v.trim().is_empty() {
                return Err(Error::config(field, "must not be empty"));
            }
        }
        for (field, v) in [
            ("data.batch_size", self.batch_size),
            ("data.tokenizer_threads", self.tokenizer_threads),
            ("data.shuffle_window", self.shuffle_window),
            ("data.shuffle_block", self.shuffle_block),
            ("data.prefetch_batches", self.prefetch_batches),
        ] {
            if v == 0 {
                return Err(Error::config(field, "must be > 0"));
            }
        }
        if self.max_length < 2 {
            return Err(Error::config(
                "data.max_length",
                format!(
                    "must be >= 2 (room for [CLS] and [SEP]), got {}",
                    self.max_length
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_fill_everything_but_uri() {
        let c: DataConfig = toml::from_str("uri = \"/d\"").expect("parse");
        assert_eq!(c, DataConfig::new("/d"));
        assert!(c.validate().is_ok());
        assert!(toml::from_str::<DataConfig>("uri = \"/d\"\nbogus = 1").is_err());
    }

    #[test]
    fn validate_names_the_field() {
        let mut c = DataConfig::new("/d");
        c.batch_size = 0;
        assert_eq!(
            c.validate().expect_err("invalid").to_string(),
            "data.batch_size must be > 0"
        );
    }
}
