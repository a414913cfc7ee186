//! The training state, built in dependency order and agreed by every rank before step 1:
//! data → model config → objective → (job agreement) → network → optimizer → start point → loader.
//!
//! **The start point is decided once, by rank 0**, and broadcast: a fresh start, a resume (step,
//! loader cursor, optimizer step and the checkpoint's URL), or a refusal that every rank reports.
//! Rank 0 alone reads the checkpoint and then broadcasts parameters and optimizer moments, so the
//! checkpoint root may be any store rank 0 can reach (shared object storage, or a folder on rank
//! 0's node: a restarted job must then find rank 0 on that node again, which is why shared storage
//! is the recommendation for multi-node jobs). Every rank then proves it holds the same
//! parameters (a SHA-256 of all of them, compared across ranks) before step 1.
//!
//! A fresh run refuses a checkpoint root that already holds committed checkpoints (they would
//! shadow its own saves and a later `resume = "auto"` would pick them up), unless
//! `checkpoint.overwrite = true`.

use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tch::{nn, Device, Tensor};
use wave_comm::Communicator;
use wave_data::{Cursor, Dataset, Loader, LoaderOptions, TextEncoder};
use wave_model::{ModelConfig, PositionEncoding, WaveNetwork};

use crate::checkpoint::{self, CheckpointState, CHECKPOINT_VERSION};
use crate::config::{JobConfig, Resume};
use crate::objective::{Objective, ObjectiveKind};
use crate::optim::AdamW;
use crate::parallel::{agree_on_job, broadcast_tensors};
use crate::Error;

/// Everything the loop mutates, plus what it reads at every step.
pub struct TrainState {
    /// The data set being trained on.
    pub dataset: Dataset,
    /// Tokenizer for text columns, if any.
    pub encoder: Option<Arc<TextEncoder>>,
    /// The model config with sizes filled in from the data.
    pub model_cfg: ModelConfig,
    /// The whole job config after resolution, as written to the run folder and checkpoints.
    pub resolved_toml: String,
    /// Owns the parameters.
    pub vs: nn::VarStore,
    /// The network.
    pub net: WaveNetwork,
    /// The optimizer (holds the parameters in a stable order).
    pub opt: AdamW,
    /// What the network learns.
    pub objective: Objective,
    /// The training loader.
    pub loader: Loader,
    /// Loader position after the last *trained* batch (what a checkpoint records).
    pub cursor: Cursor,
    /// Optimizer steps done.
    pub step: u64,
    /// Steps this run will do in total.
    pub total_steps: u64,
    /// Batches per epoch at this world size.
    pub per_epoch: u64,
    /// Device of the parameters.
    pub device: Device,
}

/// Named model variables sorted by name: a stable order for the optimizer and checkpoints.
pub fn named_params(vs: &nn::VarStore) -> Vec<(String, Tensor)> {
    let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    vars
}

/// Opens the data set and the tokenizer named by the config.
pub fn open_data(cfg: &JobConfig) -> Result<(Dataset, Option<Arc<TextEncoder>>), Error> {
    let dataset = Dataset::open(&cfg.data.uri)?;
    let encoder = match cfg.data.tokenizer.as_str() {
        "" => None,
        spec => Some(Arc::new(TextEncoder::load(spec)?)),
    };
    Ok((dataset, encoder))
}

/// Fills the sizes a config may leave to the data (`0` = derive) and checks that model, tokenizer
/// and data set fit together; every refusal names both sides.
pub fn resolve_model(
    cfg: &JobConfig,
    encoder: Option<&TextEncoder>,
    dataset: &Dataset,
) -> Result<ModelConfig, Error> {
    let mut model = cfg.model.clone();
    let manifest = dataset.manifest();
    let vocab = match (encoder, &manifest.tokenizer) {
        (Some(enc), _) => Some((enc.vocab_size(), format!("tokenizer {}", enc.spec()))),
        (None, Some(info)) => Some((
            info.vocab_size,
            format!("the tokenizer data set {} was prepared with", dataset.uri()),
        )),
        (None, None) => None,
    };
    match (model.vocab_size, &vocab) {
        (0, Some((v, _))) => model.vocab_size = *v,
        (0, None) => return Err(Error::Config("model.vocab_size: 0, and neither data.tokenizer nor the data set's manifest gives a vocabulary".into())),
        (set, Some((v, source))) if set != *v => {
            return Err(Error::Config(format!(
                "model.vocab_size = {set} but {source} has {v} tokens: leave model.vocab_size at 0 or use a matching tokenizer"
            )))
        }
        _ => {}
    }
    let objective = cfg.objective();
    if objective == ObjectiveKind::Classification {
        let classes = dataset.num_classes().ok_or_else(|| {
            Error::Config(format!(
                "train.objective = \"classification\" needs labelled data, but data set {} has no labels{}; use train.objective = \"masked_lm\" or \"causal_lm\"",
                dataset.uri(),
                if manifest.pack_length.is_some() { " (it is packed for language modelling)" } else { "" }
            ))
        })?;
        if model.num_classes == 0 {
            model.num_classes = classes;
        }
    }
    let row_tokens = match manifest.pack_length {
        Some(pack) => {
            if pack > cfg.data.max_length {
                return Err(Error::Config(format!(
                    "data set {} is packed into rows of {pack} tokens (pack_length) but data.max_length = {} would truncate them; raise data.max_length to {pack}",
                    dataset.uri(),
                    cfg.data.max_length
                )));
            }
            pack
        }
        None => cfg.data.max_length,
    };
    if model.position != PositionEncoding::None && row_tokens > model.max_positions {
        let what = match manifest.pack_length {
            Some(pack) => format!("data set {} has pack_length = {pack}", dataset.uri()),
            None => format!("data.max_length = {}", cfg.data.max_length),
        };
        return Err(Error::Config(format!(
            "{what}, which exceeds model.max_positions = {} of the {:?} position encoding",
            model.max_positions, model.position
        )));
    }
    model.validate()?;
    Ok(model)
}

/// The objective of the config, with what it needs from the tokenizer.
pub fn build_objective(
    cfg: &JobConfig,
    encoder: Option<&TextEncoder>,
    model: &ModelConfig,
    device: Device,
) -> Result<Objective, Error> {
    Ok(match cfg.objective() {
        ObjectiveKind::Classification => Objective::Classification,
        ObjectiveKind::CausalLm => Objective::causal_lm(),
        ObjectiveKind::MaskedLm => {
            let enc = encoder.ok_or_else(|| {
                Error::Config("train.objective = \"masked_lm\" needs data.tokenizer (its [MASK] id and special tokens)".into())
            })?;
            let mask_id = enc.mask_id().ok_or_else(|| {
                Error::Config(format!(
                    "train.objective = \"masked_lm\": tokenizer {} has no mask token ([MASK] or <mask>)",
                    enc.spec()
                ))
            })?;
            let mut special = enc.special_ids();
            special.push(enc.pad_id());
            Objective::masked_lm(
                mask_id,
                model.vocab_size,
                &special,
                cfg.train.mask_rate,
                device,
            )
        }
    })
}

/// Where training starts, as decided by rank 0 and broadcast.
#[derive(Debug, Serialize, Deserialize)]
enum StartPoint {
    Fresh,
    Resumed {
        step: u64,
        cursor: Cursor,
        optimizer_step: u64,
        uri: String,
    },
    Refused(String),
}

impl TrainState {
    /// Builds every component and agrees on the start point with the other ranks.
    pub fn build(
        cfg: &JobConfig,
        comm: &Communicator,
        device: Device,
    ) -> Result<TrainState, Error> {
        let (dataset, encoder) = open_data(cfg)?;
        let model_cfg = resolve_model(cfg, encoder.as_deref(), &dataset)?;
        let objective = build_objective(cfg, encoder.as_deref(), &model_cfg, device)?;
        let mut resolved = cfg.clone();
        resolved.model = model_cfg.clone();
        let resolved_toml = resolved.to_toml()?;
        agree_on_job(comm, &resolved_toml, dataset.fingerprint())?;

        tch::manual_seed(cfg.train.seed as i64);
        let vs = nn::VarStore::new(device);
        let mut net = WaveNetwork::new(&vs.root(), &model_cfg)?;
        net.set_compute_kind(cfg.train.precision.kind())?;
        let mut opt = AdamW::new(named_params(&vs), &cfg.train);

        let world = comm.world_size();
        let train_rows = dataset.split_rows(&cfg.data.train_split)?;
        let per_epoch = wave_data::batches_per_epoch(train_rows, cfg.data.batch_size, world);
        if per_epoch == 0 {
            return Err(Error::Config(format!(
                "data.batch_size = {} exceeds the {train_rows} rows of split {:?}",
                cfg.data.batch_size, cfg.data.train_split
            )));
        }
        let total_steps = match cfg.train.max_steps {
            0 => cfg.train.epochs * per_epoch,
            n => n,
        };

        let start = if comm.is_root() {
            decide_start(cfg, &vs, &mut opt, &dataset, &model_cfg, world)
                .unwrap_or_else(|e| StartPoint::Refused(e.to_string()))
        } else {
            StartPoint::Fresh
        };
        let start = agree_start(comm, &start)?;
        let (step, cursor) = match start {
            StartPoint::Refused(reason) => return Err(Error::StartRefused(reason)),
            StartPoint::Fresh => (0, Cursor::start(cfg.train.seed)),
            StartPoint::Resumed {
                step,
                cursor,
                optimizer_step,
                uri,
            } => {
                opt.set_steps(optimizer_step);
                broadcast_tensors(comm, &opt.state().0, "optimizer state of the resume")?;
                if comm.is_root() {
                    tracing::info!(step, %uri, "resumed");
                }
                (step, cursor)
            }
        };
        broadcast_tensors(comm, &named_params(&vs), "initial parameters")?;
        comm.check_same(
            "parameters before step 1 (SHA-256)",
            parameter_digest(&named_params(&vs))?.as_bytes(),
        )?;

        let options = LoaderOptions::train(&cfg.data, cfg.train.seed, comm.rank(), world);
        let loader = Loader::new(&dataset, encoder.clone(), options, cursor.clone())?;
        Ok(TrainState {
            dataset,
            encoder,
            model_cfg,
            resolved_toml,
            vs,
            net,
            opt,
            objective,
            loader,
            cursor,
            step,
            total_steps,
            per_epoch,
            device,
        })
    }

    /// The objects of a checkpoint of the current step, tensors copied out now.
    pub fn checkpoint_objects(
        &self,
        metrics: &serde_json::Value,
        world_size: usize,
    ) -> Result<Vec<(String, bytes::Bytes)>, Error> {
        let (optimizer, optimizer_step) = self.opt.state();
        let state = CheckpointState {
            version: CHECKPOINT_VERSION,
            step: self.step,
            cursor: self.cursor.clone(),
            dataset_fingerprint: self.dataset.fingerprint().to_string(),
            model_toml: model_toml(&self.model_cfg)?,
            world_size,
            optimizer_step,
        };
        checkpoint::objects(
            &state,
            &named_params(&self.vs),
            &optimizer,
            &self.resolved_toml,
            metrics,
        )
    }
}

/// The model config as TOML: what a checkpoint must match to be resumed into this model.
pub fn model_toml(model: &ModelConfig) -> Result<String, Error> {
    toml::to_string(model).map_err(|e| Error::Config(format!("cannot serialise model config: {e}")))
}

/// Rank 0's decision, broadcast; every rank returns the same value.
fn agree_start(comm: &Communicator, mine: &StartPoint) -> Result<StartPoint, Error> {
    if comm.world_size() == 1 {
        return serde_json::to_vec(mine)
            .and_then(|b| serde_json::from_slice(&b))
            .map_err(|e| Error::Io(format!("start point: {e}")));
    }
    let bytes = serde_json::to_vec(mine).map_err(|e| Error::Io(format!("start point: {e}")))?;
    let agreed = comm.broadcast_bytes(&bytes, "start point (resume decision) from rank 0")?;
    serde_json::from_slice(&agreed).map_err(|e| Error::Io(format!("start point from rank 0: {e}")))
}

/// SHA-256 over every parameter's name, shape and values (on the CPU).
fn parameter_digest(params: &[(String, Tensor)]) -> Result<String, Error> {
    let mut hasher = Sha256::new();
    for (name, t) in params {
        hasher.update(name.as_bytes());
        hasher.update(format!("{:?}", t.size()).as_bytes());
        let values = Vec::<f32>::try_from(
            t.to_device(Device::Cpu)
                .to_kind(tch::Kind::Float)
                .flatten(0, -1),
        )?;
        for v in values {
            hasher.update(v.to_le_bytes());
        }
    }
    Ok(hex::encode(hasher.finalize()))
}

/// Rank 0: applies `train.resume` (loading into `vs` and `opt`) and `train.init_from`, and refuses
/// a fresh start over another run's checkpoints.
fn decide_start(
    cfg: &JobConfig,
    vs: &nn::VarStore,
    opt: &mut AdamW,
    dataset: &Dataset,
    model_cfg: &ModelConfig,
    world: usize,
) -> Result<StartPoint, Error> {
    let own_uri = cfg.checkpoint_uri();
    let located = checkpoint::locate(&cfg.train.resume, &own_uri, 1)?;
    let resuming_own =
        matches!(cfg.train.resume, Resume::Auto | Resume::Step(_)) && located.is_some();
    if !resuming_own {
        guard_fresh_root(cfg, &own_uri)?;
    }
    let Some((store, step)) = located else {
        if !cfg.train.init_from.is_empty() {
            init_from(&cfg.train.init_from, vs, model_cfg)?;
        }
        return Ok(StartPoint::Fresh);
    };
    let loaded = checkpoint::load(&store, step)?;
    let refuse = |reason: String| Error::Checkpoint {
        path: loaded.uri.clone(),
        reason,
    };
    if loaded.state.model_toml != model_toml(model_cfg)? {
        return Err(refuse(format!(
            "written for a different model:\n--- checkpoint\n{}--- this job\n{}",
            loaded.state.model_toml,
            model_toml(model_cfg)?
        )));
    }
    if loaded.state.dataset_fingerprint != dataset.fingerprint() {
        return Err(refuse(format!(
            "written for data set {} but data.uri = {} has fingerprint {}",
            loaded.state.dataset_fingerprint,
            cfg.data.uri,
            dataset.fingerprint()
        )));
    }
    let mut vars = vs.variables();
    for (name, tensor) in &loaded.model {
        let var = vars
            .get_mut(name)
            .ok_or_else(|| refuse(format!("unknown tensor {name}")))?;
        tch::no_grad(|| var.f_copy_(tensor)).map_err(|e| refuse(format!("{name}: {e}")))?;
    }
    opt.load_state(&loaded.optimizer, loaded.state.optimizer_step)
        .map_err(refuse)?;
    if loaded.state.world_size != world {
        tracing::info!(
            from = loaded.state.world_size,
            to = world,
            "resuming a checkpoint written at a different world size; the data cursor reshards"
        );
    }
    Ok(StartPoint::Resumed {
        step: loaded.state.step,
        cursor: loaded.state.cursor.clone(),
        optimizer_step: loaded.state.optimizer_step,
        uri: loaded.uri.clone(),
    })
}

/// A fresh start must not write into a root holding another run's committed checkpoints.
fn guard_fresh_root(cfg: &JobConfig, uri: &str) -> Result<(), Error> {
    let store = checkpoint::open(uri, 1)?;
    let held = match store.describe() {
        Ok(held) if held.is_empty() => return Ok(()),
        Ok(held) => held,
        // An unreachable store is checkpoint.on_failure's business at the first save; a start
        // must not depend on it.
        Err(e) if e.is_transient() => {
            tracing::warn!(
                uri,
                "cannot check the checkpoint root for another run's checkpoints: {e}"
            );
            return Ok(());
        }
        Err(e) => return Err(checkpoint::store_error(uri, e)),
    };
    if cfg.checkpoint.overwrite {
        tracing::warn!("checkpoint.overwrite = true: deleting what {held}");
        return checkpoint::clear(&store);
    }
    Err(Error::Checkpoint {
        path: uri.to_string(),
        reason: format!(
            "this run starts fresh (train.resume = {}) but {held}; continue that run with train.resume = \"auto\", choose a new checkpoint.uri, or set checkpoint.overwrite = true to delete them",
            resume_toml(&cfg.train.resume)
        ),
    })
}

/// `train.resume` as written in TOML.
fn resume_toml(resume: &Resume) -> String {
    match resume {
        Resume::Never => "\"never\"".into(),
        Resume::Auto => "\"auto\"".into(),
        Resume::Step(s) => s.to_string(),
        Resume::Uri(u) => format!("{u:?}"),
    }
}

/// `train.init_from`: copies every tensor whose name and shape match from a run folder's
/// `model.safetensors` or a checkpoint (root or step folder); refuses another vocabulary.
fn init_from(source: &str, vs: &nn::VarStore, model_cfg: &ModelConfig) -> Result<(), Error> {
    let weights = Path::new(source).join("model.safetensors");
    let (origin, tensors) = if weights.is_file() {
        let tensors = Tensor::read_safetensors(&weights)
            .map_err(|e| Error::Io(format!("train.init_from {}: {e}", weights.display())))?;
        (weights.display().to_string(), tensors)
    } else {
        let (store, step) = checkpoint::locate(&Resume::Uri(source.to_string()), source, 1)?
            .ok_or_else(|| {
                Error::Config(format!(
                    "train.init_from = {source:?}: no committed checkpoint there"
                ))
            })?;
        let loaded = checkpoint::load(&store, step)?;
        (loaded.uri, loaded.model)
    };
    let mut vars = vs.variables();
    let (mut loaded, mut skipped) = (Vec::new(), Vec::new());
    for (name, tensor) in &tensors {
        match vars.get_mut(name) {
            Some(var) if var.size() == tensor.size() => {
                tch::no_grad(|| var.f_copy_(tensor))?;
                loaded.push(name.clone());
            }
            Some(var) if name == "token_embedding.weight" => {
                return Err(Error::Config(format!(
                    "train.init_from {origin}: its vocabulary has {} tokens, this model's {} (model.vocab_size {}): pretrain and fine-tune with the same tokenizer",
                    tensor.size()[0],
                    var.size()[0],
                    model_cfg.vocab_size
                )));
            }
            Some(var) => skipped.push(format!(
                "{name} (shape {:?} vs {:?})",
                tensor.size(),
                var.size()
            )),
            None => skipped.push(format!("{name} (not in this model)")),
        }
    }
    let fresh: Vec<&String> = vars.keys().filter(|k| !loaded.contains(k)).collect();
    tracing::info!(from = %origin, loaded = loaded.len(), "train.init_from: loaded {loaded:?}; skipped {skipped:?}; initialised fresh {fresh:?}");
    if loaded.is_empty() {
        return Err(Error::Config(format!(
            "train.init_from {origin}: no tensor matches this model by name and shape"
        )));
    }
    Ok(())
}
