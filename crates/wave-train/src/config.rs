//! The job config: one TOML file whose sections belong to the components that read them.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use wave_comm::CommConfig;
use wave_data::DataConfig;
use wave_model::ModelConfig;

use crate::objective::ObjectiveKind;
use crate::Error;

/// Learning-rate decay after warmup.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Schedule {
    /// Linear from `lr` down to `min_lr` at the last step.
    Linear,
    /// Half a cosine from `lr` down to `min_lr` at the last step.
    Cosine,
    /// `lr` after warmup, unchanged.
    Constant,
}

/// `train.precision`: the kind the matrix products run in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    /// Everything in fp32.
    #[default]
    Fp32,
    /// Matrix products in bfloat16; weights, optimizer state, residual stream, the wave norm
    /// block, layer norms and the loss in fp32 (meant for GPUs: CPUs without bf16 units emulate
    /// it slowly).
    Bf16,
}

impl Precision {
    /// The tensor kind of the matrix products.
    pub fn kind(self) -> tch::Kind {
        match self {
            Precision::Fp32 => tch::Kind::Float,
            Precision::Bf16 => tch::Kind::BFloat16,
        }
    }
}

/// Where training starts: `train.resume = "never" | "auto" | <step> | "<checkpoint URL>"`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "ResumeValue", into = "ResumeValue")]
pub enum Resume {
    /// Start from step 0 whatever checkpoints exist.
    Never,
    /// Continue from the latest committed checkpoint under `checkpoint.uri`, or start fresh if
    /// there is none.
    Auto,
    /// Continue from the checkpoint of this step under `checkpoint.uri` (an error if it does not
    /// exist).
    Step(u64),
    /// Continue from another store: a step folder (`s3://bucket/run/step-00000120`) or a
    /// checkpoint root, whose `latest` is used (an error if there is none). New checkpoints still
    /// go to `checkpoint.uri`.
    Uri(String),
}

/// How `train.resume` is written in TOML: a word, a step number or a URL.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(untagged)]
enum ResumeValue {
    Step(u64),
    Word(String),
}

impl TryFrom<ResumeValue> for Resume {
    type Error = String;
    fn try_from(v: ResumeValue) -> Result<Resume, String> {
        match v {
            ResumeValue::Step(step) => Ok(Resume::Step(step)),
            ResumeValue::Word(w) => match w.as_str() {
                "never" => Ok(Resume::Never),
                "auto" => Ok(Resume::Auto),
                // A URL or path has a `/`; a bare word that is not a number is a typo.
                other if other.contains('/') => Ok(Resume::Uri(other.to_string())),
                other => other.parse().map(Resume::Step).map_err(|_| {
                    format!("expected \"never\", \"auto\", a step number or a checkpoint URL/path (with a `/`), got {other:?}")
                }),
            },
        }
    }
}

impl From<Resume> for ResumeValue {
    fn from(r: Resume) -> ResumeValue {
        match r {
            Resume::Never => ResumeValue::Word("never".into()),
            Resume::Auto => ResumeValue::Word("auto".into()),
            Resume::Step(step) => ResumeValue::Step(step),
            Resume::Uri(uri) => ResumeValue::Word(uri),
        }
    }
}

/// The `[train]` section: optimisation, evaluation cadence, device, run folder.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    /// What to learn: `"classification"`, `"masked_lm"` or `"causal_lm"`. The model head follows
    /// from it (`model.head` may be left out; if given, it must agree). Unset = `model.head`'s.
    pub objective: Option<ObjectiveKind>,
    /// Masked LM: fraction of real, non-special tokens selected for prediction (BERT: 0.15).
    pub mask_rate: f64,
    /// Start from the weights of another run: a run folder (its `model.safetensors`) or a
    /// checkpoint (root or step folder, any store). Every tensor whose name and shape match is
    /// loaded; heads that differ start fresh; the optimizer always starts fresh. "" = random init.
    pub init_from: String,
    /// Seeds initialisation, data order, dropout and masking. Same seed ⇒ same losses on CPU.
    pub seed: u64,
    /// Passes over the training split (used when `max_steps` is 0).
    pub epochs: u64,
    /// Optimizer steps to run; 0 = `epochs` × batches per epoch.
    pub max_steps: u64,
    /// Wall-clock budget for training in seconds (evaluation excluded); 0 = none. The run stops
    /// after the step that crosses it, then evaluates and reports as usual.
    pub max_seconds: f64,
    /// Peak learning rate.
    pub lr: f64,
    /// Learning rate reached at the last step.
    pub min_lr: f64,
    /// Steps of linear warmup from 0 to `lr`.
    pub warmup_steps: u64,
    /// Decay after warmup.
    pub schedule: Schedule,
    /// Decoupled (AdamW) weight decay, applied to matrices and embeddings, not to biases or norms.
    pub weight_decay: f64,
    /// Adam β1.
    pub beta1: f64,
    /// Adam β2.
    pub beta2: f64,
    /// Adam ε.
    pub adam_eps: f64,
    /// Clip the global gradient norm to this value; 0 = no clipping.
    pub grad_clip: f64,
    /// Micro-batches per optimizer step; each rank's batch is split into this many.
    pub grad_accum_steps: usize,
    /// Gradient all-reduce bucket size in MiB (one collective per bucket, after the last micro-batch).
    pub bucket_mb: f64,
    /// Run the network on the real tokens only (the varlen layout of `wave_model::packed`):
    /// the same losses and dropout masks as padded batches up to rounding, without computing a
    /// single padding slot. `false` computes the padded `(batch, length)` grid.
    pub unpadded: bool,
    /// Reduce only the token-embedding rows that some rank's batch touched (the ranks agree on
    /// them every step; the other rows' gradients are zero everywhere). A table whose gradient
    /// turns out dense (a tied language-model head) takes the dense all-reduce automatically;
    /// `false` always all-reduces the whole table.
    pub sparse_embedding_sync: bool,
    /// `"fp32"` or `"bf16"` (matrix products in bfloat16 with fp32 master weights, optimizer,
    /// norms and loss; see [`Precision`]).
    pub precision: Precision,
    /// Evaluate every N optimizer steps (and always at the end); 0 = only at the end.
    pub eval_every_steps: u64,
    /// Cap on evaluation batches per evaluation; 0 = the whole split.
    pub eval_max_batches: u64,
    /// Log a metrics line every N optimizer steps.
    pub log_every_steps: u64,
    /// `cpu`, `cuda` or `cuda:N`.
    pub device: String,
    /// libtorch intra-op threads per rank; 0 = an equal share of the node's cores for each of
    /// the ranks on it (from the launcher's local size), capped by the cores this process may
    /// use, at least 1. libgomp spin-waits, so ranks that together ask for more threads than
    /// cores get several times slower ([`crate::threads`]).
    pub threads: usize,
    /// Folder for metrics, the resolved config and the final weights; "" = `runs/<name>`.
    pub run_dir: String,
    /// Exit status once a stop signal (SIGTERM/SIGUSR1) has ended training and the final
    /// checkpoint is committed. 0 says "ended cleanly"; a scheduler that must then restart the job
    /// needs another value: a Kubernetes Indexed Job counts exit 0 as a completed index, so its
    /// manifest sets 75 (EX_TEMPFAIL) together with a `podFailurePolicy` rule that ignores it.
    pub signal_exit_code: u8,
    /// `"never"`, `"auto"` (latest committed checkpoint under `checkpoint.uri`, if any), a step
    /// number under `checkpoint.uri`, or a checkpoint URL/path: a step folder
    /// (`"s3://bucket/run/step-00000120"`) or another checkpoint root (its `latest`).
    pub resume: Resume,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            objective: None,
            mask_rate: 0.15,
            init_from: String::new(),
            seed: 0,
            epochs: 1,
            max_steps: 0,
            max_seconds: 0.0,
            lr: 1e-3,
            min_lr: 0.0,
            warmup_steps: 100,
            schedule: Schedule::Linear,
            weight_decay: 0.01,
            beta1: 0.9,
            beta2: 0.999,
            adam_eps: 1e-8,
            grad_clip: 1.0,
            grad_accum_steps: 1,
            bucket_mb: 25.0,
            unpadded: true,
            sparse_embedding_sync: true,
            precision: Precision::Fp32,
            eval_every_steps: 0,
            eval_max_batches: 0,
            log_every_steps: 10,
            device: "cpu".into(),
            threads: 0,
            run_dir: String::new(),
            signal_exit_code: 0,
            resume: Resume::Never,
        }
    }
}

/// What the trainer does when a checkpoint save fails after the saver's retries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnFailure {
    /// Log an error naming the step and URL and keep training (the previous checkpoint stays).
    #[default]
    Continue,
    /// Stop training with an error (non-zero exit).
    Stop,
}

/// The `[checkpoint]` section.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CheckpointConfig {
    /// Where checkpoints go: a folder path, `file://`, `s3://`, `gs://` or `az://` URL (credentials
    /// and endpoint from the usual environment variables); "" = `<run_dir>/checkpoints`.
    pub uri: String,
    /// Save every N optimizer steps; 0 = only at the end of training (and on SIGTERM).
    pub every_steps: u64,
    /// Newest committed checkpoints to keep; 0 = keep all (subject to `keep_every`).
    pub keep_last: usize,
    /// Also keep every checkpoint whose step is a multiple of this; 0 = off.
    pub keep_every: u64,
    /// Saves uploading or queued before the training loop waits for one; at least 1. Each holds
    /// a copy of the model and optimizer state in memory.
    pub max_in_flight: usize,
    /// `"continue"` (default) or `"stop"` when a save fails after its retries.
    pub on_failure: OnFailure,
    /// A fresh run (`train.resume = "never"`, or `"auto"` finding nothing of its own) refuses a
    /// root that already holds committed checkpoints; `true` deletes them first instead.
    pub overwrite: bool,
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        CheckpointConfig {
            uri: String::new(),
            every_steps: 0,
            keep_last: 3,
            keep_every: 0,
            max_in_flight: 2,
            on_failure: OnFailure::Continue,
            overwrite: false,
        }
    }
}

/// A whole job: what `wave-dist train --config FILE` reads.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobConfig {
    /// Run name; names the default run folder.
    #[serde(default = "default_name")]
    pub name: String,
    /// `[model]`
    #[serde(default)]
    pub model: ModelConfig,
    /// `[data]`
    pub data: DataConfig,
    /// `[train]`
    #[serde(default)]
    pub train: TrainConfig,
    /// `[checkpoint]`
    #[serde(default)]
    pub checkpoint: CheckpointConfig,
    /// `[comm]`: collective backend and timeouts (data parallelism).
    #[serde(default)]
    pub comm: CommConfig,
}

fn default_name() -> String {
    "wave".into()
}

impl JobConfig {
    /// Reads a TOML file and applies `section.key=value` overrides (values are TOML literals;
    /// anything that does not parse as one is taken as a string).
    pub fn load(path: &Path, overrides: &[String]) -> Result<JobConfig, Error> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::Config(format!("cannot read config file {}: {e}", path.display()))
        })?;
        Self::from_toml(&text, overrides).map_err(|e| match e {
            Error::Config(msg) => Error::Config(format!("{}: {msg}", path.display())),
            other => other,
        })
    }

    /// Parses TOML text with overrides; the error names the offending key.
    pub fn from_toml(text: &str, overrides: &[String]) -> Result<JobConfig, Error> {
        let mut doc: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| Error::Config(e.to_string()))?;
        for item in overrides {
            apply_override(&mut doc, item)?;
        }
        let head_given = doc
            .get("model")
            .and_then(toml::Value::as_table)
            .is_some_and(|m| m.contains_key("head"));
        let mut cfg: JobConfig = serde_path_to_error::deserialize(toml::Value::Table(doc))
            .map_err(|e| {
                let path = e.path().to_string();
                let inner = e.into_inner().message().trim().to_string();
                if path == "." || path.is_empty() {
                    Error::Config(inner)
                } else {
                    Error::Config(format!("{path}: {inner}"))
                }
            })?;
        cfg.resolve_objective(head_given)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// `train.objective` decides the head; an explicit `model.head` that says otherwise is refused.
    fn resolve_objective(&mut self, head_given: bool) -> Result<(), Error> {
        match self.train.objective {
            None => self.train.objective = Some(ObjectiveKind::for_head(self.model.head)),
            Some(objective) if head_given && objective.head() != self.model.head => {
                return Err(Error::Config(format!(
                    "train.objective = {:?} needs model.head = {:?}, but model.head = {:?}: leave model.head out or make them agree",
                    objective.name(),
                    ObjectiveKind::for_head(objective.head()).name(),
                    ObjectiveKind::for_head(self.model.head).name(),
                )));
            }
            Some(objective) => self.model.head = objective.head(),
        }
        Ok(())
    }

    /// The objective (resolved when the config was loaded).
    pub fn objective(&self) -> ObjectiveKind {
        self.train
            .objective
            .unwrap_or(ObjectiveKind::for_head(self.model.head))
    }

    /// Checks what can be checked before any data or tensor exists; names the key.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |key: &str, reason: &str| Err(Error::Config(format!("{key}: {reason}")));
        self.data
            .validate()
            .map_err(|e| Error::Config(e.to_string()))?;
        let t = &self.train;
        if !(t.lr > 0.0 && t.lr.is_finite()) {
            return bad("train.lr", "must be a positive number");
        }
        if t.min_lr < 0.0 || t.min_lr > t.lr {
            return bad("train.min_lr", "must be in [0, train.lr]");
        }
        if !(t.bucket_mb > 0.0 && t.bucket_mb.is_finite()) {
            return bad("train.bucket_mb", "must be a positive number");
        }
        self.comm
            .validate()
            .map_err(|e| Error::Config(format!("comm: {e}")))?;
        if t.grad_accum_steps == 0 {
            return bad("train.grad_accum_steps", "must be >= 1");
        }
        if t.epochs == 0 && t.max_steps == 0 {
            return bad("train.epochs", "must be >= 1 when train.max_steps is 0");
        }
        if t.log_every_steps == 0 {
            return bad("train.log_every_steps", "must be >= 1");
        }
        if t.grad_clip < 0.0 || t.weight_decay < 0.0 || t.max_seconds < 0.0 {
            return bad(
                "train",
                "grad_clip, weight_decay and max_seconds must be >= 0",
            );
        }
        if !(t.mask_rate > 0.0 && t.mask_rate < 1.0) {
            return bad("train.mask_rate", "must be in (0, 1)");
        }
        if !(0.0..1.0).contains(&t.beta1) || !(0.0..1.0).contains(&t.beta2) {
            return bad("train.beta1/beta2", "must be in [0, 1)");
        }
        crate::device::parse_device(&t.device)?;
        if self.checkpoint.max_in_flight == 0 {
            return bad("checkpoint.max_in_flight", "must be >= 1");
        }
        Ok(())
    }

    /// The run folder: `train.run_dir`, or `runs/<name>`.
    pub fn run_dir(&self) -> PathBuf {
        if self.train.run_dir.is_empty() {
            PathBuf::from("runs").join(&self.name)
        } else {
            PathBuf::from(&self.train.run_dir)
        }
    }

    /// The checkpoint root: `checkpoint.uri`, or the folder `<run_dir>/checkpoints`.
    pub fn checkpoint_uri(&self) -> String {
        match self.checkpoint.uri.as_str() {
            "" => self.run_dir().join("checkpoints").display().to_string(),
            uri => uri.to_string(),
        }
    }

    /// The config as TOML (written into the run folder so `eval` rebuilds the same model).
    pub fn to_toml(&self) -> Result<String, Error> {
        toml::to_string(self).map_err(|e| Error::Config(format!("cannot serialise config: {e}")))
    }
}

fn apply_override(doc: &mut toml::Table, item: &str) -> Result<(), Error> {
    let (key, raw) = item
        .split_once('=')
        .ok_or_else(|| Error::Config(format!("--set {item:?}: expected section.key=value")))?;
    let key = key.trim();
    let value = format!("v = {raw}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()));
    let parts: Vec<&str> = key.split('.').collect();
    if parts.iter().any(|p| p.is_empty()) {
        return Err(Error::Config(format!("--set {item:?}: empty key segment")));
    }
    let (last, sections) = parts
        .split_last()
        .ok_or_else(|| Error::Config(format!("--set {item:?}: empty key")))?;
    let mut table = doc;
    for section in sections {
        let entry = table
            .entry(section.to_string())
            .or_insert_with(|| toml::Value::Table(Default::default()));
        table = entry
            .as_table_mut()
            .ok_or_else(|| Error::Config(format!("--set {key}: `{section}` is not a section")))?;
    }
    table.insert(last.to_string(), value);
    Ok(())
}
