//! The training program: builds the components in dependency order and runs the loop.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;
use tch::{nn, Device, Kind, Reduction, Tensor};
use wave_ckpt::{Retention, SaveOutcome, Saver, SaverOptions};
use wave_comm::{Communicator, RankInfo};
use wave_data::{Batch, Cursor, Dataset, Loader, LoaderOptions, TextEncoder};
use wave_model::{Head, ModelConfig, ParamCounts, WaveNetwork};

use crate::checkpoint::{self, CheckpointState, CHECKPOINT_VERSION};
use crate::config::{JobConfig, OnFailure};
use crate::device::parse_device;
use crate::metrics::{peak_rss_mb, EvalRecord, MetricsSink, TrainRecord};
use crate::optim::{lr_at, AdamW};
use crate::parallel::{
    agree_on_job, average_gradients, broadcast_parameters, mean_over_ranks, sum_over_ranks,
};
use crate::Error;

/// Labels equal to this are ignored by the loss and the accuracy (padding rows).
const IGNORE: i64 = wave_data::IGNORE_LABEL;

/// Result of an evaluation pass.
#[derive(Clone, Debug, Serialize)]
pub struct EvalResult {
    /// Mean cross-entropy per sample.
    pub loss: f64,
    /// Fraction of correct arg-max predictions.
    pub accuracy: f64,
    /// Samples evaluated.
    pub samples: u64,
}

/// Parameter counts as reported in the summary.
#[derive(Clone, Debug, Serialize)]
pub struct Params {
    /// All trainable parameters.
    pub total: usize,
    /// Without embeddings.
    pub non_embedding: usize,
}

impl From<ParamCounts> for Params {
    fn from(c: ParamCounts) -> Params {
        Params {
            total: c.total,
            non_embedding: c.non_embedding,
        }
    }
}

/// What `wave-dist train` prints as its last stdout line.
#[derive(Clone, Debug, Serialize)]
pub struct RunSummary {
    /// Always `"summary"`.
    pub event: &'static str,
    /// Optimizer steps completed (including those before a resume).
    pub steps: u64,
    /// Mean training loss over the last logging window.
    pub final_loss: f64,
    /// Training samples per second (evaluation excluded) in this process's lifetime.
    pub train_samples_per_s: f64,
    /// Final evaluation.
    pub eval: EvalResult,
    /// Parameter counts.
    pub params: Params,
    /// Peak resident memory of the process, MiB.
    pub peak_rss_mb: f64,
    /// Run folder (metrics.jsonl, config.toml, model.safetensors).
    pub run_dir: PathBuf,
}

/// Fills the sizes a config may leave to the data (`0` = derive) and checks the result.
fn resolve_model(
    cfg: &JobConfig,
    encoder: Option<&TextEncoder>,
    dataset: &Dataset,
) -> Result<ModelConfig, Error> {
    let mut model = cfg.model.clone();
    if model.vocab_size == 0 {
        model.vocab_size = match (encoder, &dataset.manifest().tokenizer) {
            (Some(enc), _) => enc.vocab_size(),
            (None, Some(info)) => info.vocab_size,
            (None, None) => return Err(Error::Config("model.vocab_size: 0, and neither data.tokenizer nor the data set's manifest gives a vocabulary".into())),
        };
    }
    if model.num_classes == 0 && model.head == Head::Classification {
        model.num_classes = dataset.num_classes().ok_or_else(|| {
            Error::Config(format!(
                "model.num_classes: 0, and data set {} has no label names",
                cfg.data.uri
            ))
        })?;
    }
    if model.position != wave_model::PositionEncoding::None
        && cfg.data.max_length > model.max_positions
    {
        return Err(Error::Config(format!(
            "data.max_length = {} exceeds model.max_positions = {}",
            cfg.data.max_length, model.max_positions
        )));
    }
    model.validate()?;
    Ok(model)
}

/// The tensors of one batch on `device`: ids and mask `(B, T)`, labels `(B,)`.
fn to_tensors(batch: &Batch, device: Device) -> (Tensor, Tensor, Tensor) {
    let (b, t) = (batch.rows as i64, batch.seq_len as i64);
    let ids = Tensor::from_slice(&batch.input_ids).view([b, t]).to(device);
    let mask = Tensor::from_slice(&batch.attention_mask)
        .view([b, t])
        .to(device);
    let labels = Tensor::from_slice(&batch.labels).to(device);
    (ids, mask, labels)
}

/// Dropout is reseeded from (seed, step, rank) at every step, so a resumed run draws the same
/// masks as an uninterrupted one without saving generator state.
fn step_seed(seed: u64, step: u64, rank: usize) -> i64 {
    let mut z = seed
        ^ step.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ (rank as u64).wrapping_mul(0xD1B5_4A32_D192_ED03);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    ((z ^ (z >> 31)) >> 1) as i64
}

/// Named model variables sorted by name: a stable order for the optimizer and checkpoints.
fn named_params(vs: &nn::VarStore) -> Vec<(String, Tensor)> {
    let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    vars
}

/// Evaluates `net` on one split, each rank on its share, reduced over ranks: every sample once
/// (the loader pads the last batch with ignored rows).
pub fn evaluate(
    net: &WaveNetwork,
    dataset: &Dataset,
    encoder: Option<Arc<TextEncoder>>,
    cfg: &JobConfig,
    split: &str,
    device: Device,
    comm: &Communicator,
) -> Result<EvalResult, Error> {
    let mut opts = LoaderOptions::eval(&cfg.data, comm.rank(), comm.world_size());
    opts.split = split.to_string();
    let cursor = Cursor::start(opts.seed);
    let mut loader = Loader::new(dataset, encoder, opts, cursor)?;
    let (mut loss_sum, mut correct, mut samples, mut batches) = (0.0, 0i64, 0i64, 0u64);
    tch::no_grad(|| -> Result<(), Error> {
        while let Some(batch) = loader.next_batch()? {
            if cfg.train.eval_max_batches > 0 && batches >= cfg.train.eval_max_batches {
                break;
            }
            let (ids, mask, labels) = to_tensors(&batch, device);
            let logits = net.classify(&ids, &mask, false)?.to_kind(Kind::Float);
            let valid = labels.ne(IGNORE);
            loss_sum += logits
                .cross_entropy_loss::<Tensor>(&labels, None, Reduction::Sum, IGNORE, 0.0)
                .double_value(&[]);
            correct += logits
                .argmax(-1, false)
                .eq_tensor(&labels)
                .logical_and(&valid)
                .sum(Kind::Int64)
                .int64_value(&[]);
            samples += valid.sum(Kind::Int64).int64_value(&[]);
            batches += 1;
        }
        Ok(())
    })?;
    let totals = sum_over_ranks(
        comm,
        &[loss_sum, correct as f64, samples as f64],
        device,
        "evaluation",
    )?;
    let (loss_sum, correct, samples) = (totals[0], totals[1], totals[2]);
    let n = samples.max(1.0);
    Ok(EvalResult {
        loss: loss_sum / n,
        accuracy: correct / n,
        samples: samples as u64,
    })
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

/// Sets libtorch's intra-op threads when configured.
fn set_threads(threads: usize) {
    if threads > 0 {
        tch::set_num_threads(threads as i32);
    }
}

/// Trains as configured and returns the summary (also written to the run folder's metrics).
///
/// Ranks come from the launcher's environment (world size 1 without one). With several ranks,
/// an error on any rank aborts the whole job at once, naming that rank, rather than leaving the
/// others waiting in a collective.
pub fn train(cfg: &JobConfig) -> Result<RunSummary, Error> {
    let info = RankInfo::from_env()?;
    let device = match parse_device(&cfg.train.device)? {
        // One GPU per rank on a node.
        Device::Cuda(_) if info.world_size > 1 => Device::Cuda(info.local_rank),
        d => d,
    };
    set_threads(match cfg.train.threads {
        0 if info.world_size > 1 => 1,
        n => n,
    });
    let comm = Communicator::init(&info, &cfg.comm, device)?;
    let _rank_span =
        (comm.world_size() > 1).then(|| tracing::info_span!("rank", rank = comm.rank()).entered());
    match train_on(cfg, &comm, device) {
        Err(e) if comm.world_size() > 1 => comm.abort(&e.to_string(), 1),
        result => result,
    }
}

fn train_on(cfg: &JobConfig, comm: &Communicator, device: Device) -> Result<RunSummary, Error> {
    let t = &cfg.train;
    let root = comm.is_root();
    let world = comm.world_size();
    let run_dir = cfg.run_dir();
    if root {
        std::fs::create_dir_all(&run_dir).map_err(|e| Error::io(&run_dir, e))?;
    }

    // Components, in dependency order: data → model → optimizer → (resume) → loader.
    let (dataset, encoder) = open_data(cfg)?;
    let model_cfg = resolve_model(cfg, encoder.as_deref(), &dataset)?;
    let mut resolved = cfg.clone();
    resolved.model = model_cfg.clone();
    let resolved_toml = resolved.to_toml()?;
    agree_on_job(comm, &resolved_toml, dataset.fingerprint())?;
    if root {
        let config_path = run_dir.join("config.toml");
        std::fs::write(&config_path, &resolved_toml).map_err(|e| Error::io(&config_path, e))?;
    }

    tch::manual_seed(t.seed as i64);
    let vs = nn::VarStore::new(device);
    let net = WaveNetwork::new(&vs.root(), &model_cfg)?;
    broadcast_parameters(comm, &named_params(&vs))?;
    let mut opt = AdamW::new(named_params(&vs), t);
    let params_in_order: Vec<Tensor> = opt.params().map(Tensor::shallow_clone).collect();
    let bucket_bytes = (t.bucket_mb * (1 << 20) as f64) as usize;
    let params: Params = model_cfg.param_counts().into();
    tracing::info!(
        total = params.total,
        non_embedding = params.non_embedding,
        "model parameters"
    );

    let train_rows = dataset.split_rows(&cfg.data.train_split)?;
    let per_epoch = wave_data::batches_per_epoch(train_rows, cfg.data.batch_size, world);
    if per_epoch == 0 {
        return Err(Error::Config(format!(
            "data.batch_size = {} exceeds the {train_rows} rows of split {:?}",
            cfg.data.batch_size, cfg.data.train_split
        )));
    }
    let total_steps = if t.max_steps > 0 {
        t.max_steps
    } else {
        t.epochs * per_epoch
    };

    let ckpt_uri = cfg.checkpoint_uri();
    let (mut step, cursor) = resume(cfg, &vs, &mut opt, &dataset, &model_cfg, &ckpt_uri, world)?;
    // Rank 0 saves. SIGTERM is caught only by a single-process job: under mpirun the launcher
    // sends SIGTERM to the surviving ranks when one dies, and those must end at once (their next
    // collective can never complete); a multi-rank job resumes from its last periodic checkpoint.
    let mut saver = if root {
        Some(start_saver(cfg, &ckpt_uri, world)?)
    } else {
        None
    };
    let sigterm = if world == 1 {
        Some(checkpoint::sigterm_flag()?)
    } else {
        None
    };
    // The step of the last checkpoint: a resumed step is not saved again at the end.
    let (mut saved_step, mut preempted) = ((step > 0).then_some(step), false);
    let mut last_metrics = serde_json::json!({});
    let options = LoaderOptions::train(&cfg.data, t.seed, comm.rank(), world);
    let mut loader = Loader::new(&dataset, encoder.clone(), options, cursor)?;
    let mut metrics = if root {
        Some(MetricsSink::create(&run_dir)?)
    } else {
        None
    };
    if root {
        tracing::info!(steps = total_steps, per_epoch, start = step, world, run_dir = %run_dir.display(), "training");
    }
    let progress = if root {
        progress_bar(total_steps, step)
    } else {
        None
    };

    // Window accumulators for the metrics line.
    let (mut win_loss, mut win_steps, mut win_samples, mut win_tokens) =
        (0.0, 0u64, 0usize, 0usize);
    let (mut win_wait, mut win_compute, mut win_comm, mut win_skew, mut last_loss) =
        (0.0, 0.0, 0.0, 0.0, f64::NAN);
    let (mut total_samples, mut train_secs) = (0usize, 0.0);
    let started = Instant::now();

    while step < total_steps {
        // Every rank must stop at the same step, or the others would wait in a collective that
        // never completes: the budget is spent when it is spent on any rank.
        if t.max_seconds > 0.0 {
            let spent = f64::from(u8::from(train_secs >= t.max_seconds));
            if sum_over_ranks(comm, &[spent], device, "time budget")?[0] > 0.0 {
                tracing::info!(step, "train.max_seconds reached");
                break;
            }
        }
        let lr = lr_at(t, step, total_steps);
        let wait_start = Instant::now();
        let batch = loader
            .next_batch()?
            .ok_or_else(|| Error::Io("training loader ended early".into()))?;
        let wait = wait_start.elapsed().as_secs_f64();

        // Forward/backward over micro-batches; the loss is summed per sample and divided by the
        // step's sample count, so accumulation gives exactly the full-batch gradient. Every rank
        // holds as many labelled rows as the others, so the mean over ranks is the global mean.
        let compute_start = Instant::now();
        tch::manual_seed(step_seed(t.seed, step, comm.rank()));
        let (ids, mask, labels) = to_tensors(&batch, device);
        let valid = batch.labels.iter().filter(|&&l| l != IGNORE).count().max(1) as f64;
        let micro = batch.rows.div_ceil(t.grad_accum_steps) as i64;
        let mut step_loss = 0.0;
        let mut start = 0i64;
        while start < batch.rows as i64 {
            let len = micro.min(batch.rows as i64 - start);
            let logits = net.classify(
                &ids.narrow(0, start, len),
                &mask.narrow(0, start, len),
                true,
            )?;
            let loss = logits.to_kind(Kind::Float).cross_entropy_loss::<Tensor>(
                &labels.narrow(0, start, len),
                None,
                Reduction::Sum,
                IGNORE,
                0.0,
            ) / valid;
            // Scaled by 1 / world so that summing the ranks' gradients averages them.
            (&loss * (1.0 / world as f64)).backward();
            step_loss += loss.double_value(&[]);
            start += len;
        }
        if !step_loss.is_finite() {
            return Err(Error::Diverged {
                step,
                loss: step_loss,
            });
        }
        let comm_start = Instant::now();
        let sync = average_gradients(comm, &params_in_order, bucket_bytes, step + 1)?;
        let comm_secs = comm_start.elapsed().as_secs_f64();
        win_skew += sync.skew_s;
        let grad_norm = opt.clip_grad_norm(t.grad_clip);
        opt.step(lr);
        opt.zero_grad();
        step += 1;
        let compute = compute_start.elapsed().as_secs_f64() - comm_secs;

        train_secs += wait + compute + comm_secs;
        win_comm += sync.reduce_s;
        total_samples += batch.rows * world;
        (win_loss, win_steps, win_samples, win_tokens) = (
            win_loss + step_loss,
            win_steps + 1,
            win_samples + batch.rows,
            win_tokens + batch.real_tokens,
        );
        (win_wait, win_compute) = (win_wait + wait, win_compute + compute);
        if let Some(bar) = &progress {
            bar.set_position(step);
            bar.set_message(format!("loss {step_loss:.4}"));
        }

        if step % t.log_every_steps == 0 || step == total_steps {
            let secs = (win_wait + win_compute + win_comm + win_skew).max(1e-9);
            last_loss =
                mean_over_ranks(comm, win_loss / win_steps as f64, device, "loss reduction")?;
            // Every rank consumes the same number of rows and tokens per step, in the same time.
            let (global_samples, global_tokens) = (win_samples * world, win_tokens * world);
            let record = TrainRecord {
                kind: "train",
                step,
                epoch: batch.epoch,
                loss: last_loss,
                lr,
                grad_norm,
                samples_per_s: global_samples as f64 / secs,
                tokens_per_s: global_tokens as f64 / secs,
                elapsed_s: train_secs,
                data_wait_s: win_wait,
                compute_s: win_compute,
                comm_s: win_comm,
                skew_s: win_skew,
            };
            if let Some(sink) = metrics.as_mut() {
                last_metrics["train"] = serde_json::to_value(&record).unwrap_or_default();
                tracing::info!(
                    step,
                    loss = format!("{:.5}", record.loss),
                    lr = format!("{lr:.3e}"),
                    grad_norm = format!("{grad_norm:.3}"),
                    samples_per_s = format!("{:.1}", record.samples_per_s),
                    "train"
                );
                sink.write(&record)?;
            }
            (win_loss, win_steps, win_samples, win_tokens) = (0.0, 0, 0, 0);
            (win_wait, win_compute, win_comm, win_skew) = (0.0, 0.0, 0.0, 0.0);
        }
        if t.eval_every_steps > 0 && step % t.eval_every_steps == 0 && step < total_steps {
            let result = evaluate(
                &net,
                &dataset,
                encoder.clone(),
                cfg,
                &cfg.data.eval_split,
                device,
                comm,
            )?;
            log_eval(metrics.as_mut(), step, &cfg.data.eval_split, &result)?;
            last_metrics["eval"] = eval_metrics(step, &cfg.data.eval_split, &result);
        }
        if let Some(saver) = saver.as_mut() {
            if cfg.checkpoint.every_steps > 0
                && step % cfg.checkpoint.every_steps == 0
                && step < total_steps
            {
                let objects = checkpoint_objects(
                    &resolved_toml,
                    &vs,
                    &opt,
                    &loader,
                    &dataset,
                    &model_cfg,
                    step,
                    world,
                    &last_metrics,
                )?;
                submit(saver, step, objects, cfg)?;
                saved_step = Some(step);
            }
            report_saves(saver.poll(), cfg)?;
        }
        if sigterm
            .as_ref()
            .is_some_and(|flag| flag.load(Ordering::SeqCst))
        {
            tracing::warn!(
                step,
                "SIGTERM received: stopping after this step to save a final checkpoint"
            );
            preempted = true;
            break;
        }
    }
    if let Some(bar) = progress {
        bar.finish_and_clear();
    }
    if win_steps > 0 {
        // All ranks stop at the same step (see the time budget above), so this reduction is safe.
        last_loss = mean_over_ranks(comm, win_loss / win_steps as f64, device, "loss reduction")?;
    }

    if let Some(mut saver) = saver.take() {
        if saved_step != Some(step) {
            let objects = checkpoint_objects(
                &resolved_toml,
                &vs,
                &opt,
                &loader,
                &dataset,
                &model_cfg,
                step,
                world,
                &last_metrics,
            )?;
            submit(&mut saver, step, objects, cfg)?;
        }
        // The final save must land before the process exits; a pre-empted job that could not
        // save fails (non-zero) whatever checkpoint.on_failure says.
        let outcomes = saver
            .finish()
            .map_err(|e| checkpoint::store_error(&ckpt_uri, e))?;
        let final_ok = outcomes.iter().all(|o| o.result.is_ok());
        report_saves(outcomes, cfg)?;
        if preempted {
            if !final_ok {
                return Err(Error::Checkpoint {
                    path: ckpt_uri.clone(),
                    reason: format!(
                        "SIGTERM at step {step}: the final checkpoint could not be saved"
                    ),
                });
            }
            tracing::warn!(step, uri = %ckpt_uri, "SIGTERM: final checkpoint committed; exiting normally (resume with train.resume = \"auto\")");
        }
    }
    if root {
        let weights = run_dir.join("model.safetensors");
        vs.save(&weights)
            .map_err(|e| Error::Io(format!("{}: {e}", weights.display())))?;
    }
    let eval = evaluate(
        &net,
        &dataset,
        encoder,
        cfg,
        &cfg.data.eval_split,
        device,
        comm,
    )?;
    log_eval(metrics.as_mut(), step, &cfg.data.eval_split, &eval)?;
    if root {
        tracing::info!(
            wall_s = format!("{:.1}", started.elapsed().as_secs_f64()),
            "done"
        );
    }
    Ok(RunSummary {
        event: "summary",
        steps: step,
        final_loss: last_loss,
        train_samples_per_s: total_samples as f64 / train_secs.max(1e-9),
        eval,
        params,
        peak_rss_mb: peak_rss_mb(),
        run_dir,
    })
}

/// Logs and records an evaluation (rank 0 only: the others pass no sink).
fn log_eval(
    metrics: Option<&mut MetricsSink>,
    step: u64,
    split: &str,
    r: &EvalResult,
) -> Result<(), Error> {
    let Some(metrics) = metrics else {
        return Ok(());
    };
    tracing::info!(
        step,
        split,
        loss = format!("{:.5}", r.loss),
        accuracy = format!("{:.4}", r.accuracy),
        "eval"
    );
    metrics.write(&EvalRecord {
        kind: "eval",
        step,
        split: split.to_string(),
        loss: r.loss,
        accuracy: r.accuracy,
        samples: r.samples,
    })
}

fn progress_bar(total: u64, start: u64) -> Option<indicatif::ProgressBar> {
    if !std::io::stdout().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:40} {pos}/{len} steps  {msg}  [{elapsed_precise} < {eta_precise}]",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_position(start);
    Some(bar)
}

/// The background saver for `uri` with `[checkpoint]`'s retention and in-flight bound.
fn start_saver(cfg: &JobConfig, uri: &str, world: usize) -> Result<Saver, Error> {
    let c = &cfg.checkpoint;
    // keep_last = 0 with keep_every = 0 keeps everything; wave-ckpt reads keep_last = 0 as "none".
    let retention = (c.keep_last > 0 || c.keep_every > 0).then_some(Retention {
        keep_last: c.keep_last,
        keep_every: c.keep_every,
    });
    let store = checkpoint::open(uri, world)?;
    Saver::new(
        store,
        SaverOptions {
            max_in_flight: c.max_in_flight,
            retention,
        },
    )
    .map_err(|e| checkpoint::store_error(uri, e))
}

/// The objects of the checkpoint of `step`, tensors copied out now.
#[allow(clippy::too_many_arguments)]
fn checkpoint_objects(
    config_toml: &str,
    vs: &nn::VarStore,
    opt: &AdamW,
    loader: &Loader,
    dataset: &Dataset,
    model_cfg: &ModelConfig,
    step: u64,
    world_size: usize,
    metrics: &serde_json::Value,
) -> Result<Vec<(String, bytes::Bytes)>, Error> {
    let (optimizer, optimizer_step) = opt.state();
    let state = CheckpointState {
        version: CHECKPOINT_VERSION,
        step,
        cursor: loader.cursor(),
        dataset_fingerprint: dataset.fingerprint().to_string(),
        model_toml: model_toml(model_cfg)?,
        world_size,
        optimizer_step,
    };
    checkpoint::objects(&state, &named_params(vs), &optimizer, config_toml, metrics)
}

/// Hands a checkpoint to the saver (blocks while `checkpoint.max_in_flight` saves are unfinished).
fn submit(
    saver: &mut Saver,
    step: u64,
    objects: Vec<(String, bytes::Bytes)>,
    cfg: &JobConfig,
) -> Result<(), Error> {
    let metadata = serde_json::json!({ "name": cfg.name });
    saver
        .submit(step, objects, metadata)
        .map_err(|e| checkpoint::store_error(&cfg.checkpoint_uri(), e))?;
    tracing::debug!(step, "checkpoint queued for upload");
    Ok(())
}

/// Logs finished saves; a failed one is an error only with `checkpoint.on_failure = "stop"`.
fn report_saves(outcomes: Vec<SaveOutcome>, cfg: &JobConfig) -> Result<(), Error> {
    for outcome in outcomes {
        match outcome.result {
            Ok(info) => {
                tracing::info!(step = outcome.step, uri = %info.uri, attempts = info.attempts, "checkpoint saved")
            }
            Err(e) => {
                let uri = cfg.checkpoint_uri();
                if cfg.checkpoint.on_failure == OnFailure::Stop {
                    return Err(Error::Checkpoint {
                        path: uri,
                        reason: format!("saving step {} failed: {e}", outcome.step),
                    });
                }
                tracing::error!(step = outcome.step, %uri, "checkpoint save failed; training continues (checkpoint.on_failure = \"continue\"): {e}");
            }
        }
    }
    Ok(())
}

/// An evaluation as it appears in a checkpoint's `metrics.json`.
fn eval_metrics(step: u64, split: &str, r: &EvalResult) -> serde_json::Value {
    serde_json::json!({ "step": step, "split": split, "loss": r.loss, "accuracy": r.accuracy, "samples": r.samples })
}

fn model_toml(model: &ModelConfig) -> Result<String, Error> {
    toml::to_string(model).map_err(|e| Error::Config(format!("cannot serialise model config: {e}")))
}

/// Applies `train.resume`; returns the step to start from and the loader cursor. Every object
/// is verified against the checkpoint's manifest; a different model or data set is refused.
fn resume(
    cfg: &JobConfig,
    vs: &nn::VarStore,
    opt: &mut AdamW,
    dataset: &Dataset,
    model_cfg: &ModelConfig,
    uri: &str,
    world: usize,
) -> Result<(u64, Cursor), Error> {
    let Some((store, step)) = checkpoint::locate(&cfg.train.resume, uri, world)? else {
        return Ok((0, Cursor::start(cfg.train.seed)));
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
            "resuming at a different world size; the data cursor reshards"
        );
    }
    tracing::info!(step, uri = %loaded.uri, "resumed");
    Ok((loaded.state.step, loaded.state.cursor))
}

/// A trained network rebuilt from a job config and its saved weights, with its data.
struct LoadedRun {
    device: Device,
    dataset: Dataset,
    encoder: Option<Arc<TextEncoder>>,
    model_cfg: ModelConfig,
    net: WaveNetwork,
}

fn load_run(cfg: &JobConfig, weights: &Path) -> Result<LoadedRun, Error> {
    let device = parse_device(&cfg.train.device)?;
    set_threads(cfg.train.threads);
    let (dataset, encoder) = open_data(cfg)?;
    let model_cfg = resolve_model(cfg, encoder.as_deref(), &dataset)?;
    let mut vs = nn::VarStore::new(device);
    let net = WaveNetwork::new(&vs.root(), &model_cfg)?;
    vs.load(weights)
        .map_err(|e| Error::Io(format!("{}: {e}", weights.display())))?;
    // `net` holds its own handles on the loaded tensors; the store can go.
    Ok(LoadedRun {
        device,
        dataset,
        encoder,
        model_cfg,
        net,
    })
}

/// Loads `model.safetensors` from a finished run folder and evaluates it on `split`.
pub fn evaluate_run(
    cfg: &JobConfig,
    weights: &Path,
    split: &str,
) -> Result<(EvalResult, Params), Error> {
    let LoadedRun {
        device,
        dataset,
        encoder,
        model_cfg,
        net,
    } = load_run(cfg, weights)?;
    let result = evaluate(
        &net,
        &dataset,
        encoder,
        cfg,
        split,
        device,
        &Communicator::local(),
    )?;
    Ok((result, model_cfg.param_counts().into()))
}

/// Inputs and logits of the first `rows` rows of `split` (eval order, no dropout) under the
/// weights in `weights`: what `wave-dist eval --dump-logits` writes so that another
/// implementation (bench/peer_logits.py) can be checked against this one.
pub fn logits_of_run(
    cfg: &JobConfig,
    weights: &Path,
    split: &str,
    rows: usize,
) -> Result<serde_json::Value, Error> {
    let LoadedRun {
        device,
        dataset,
        encoder,
        net,
        ..
    } = load_run(cfg, weights)?;
    let mut opts = LoaderOptions::eval(&cfg.data, 0, 1);
    opts.split = split.to_string();
    let cursor = Cursor::start(opts.seed);
    let mut loader = Loader::new(&dataset, encoder, opts, cursor)?;
    let batch = loader
        .next_batch()?
        .ok_or_else(|| Error::Config(format!("split {split:?} is empty")))?;
    let rows = rows.min(batch.rows);
    let width = batch.seq_len;
    let logits = tch::no_grad(|| -> Result<Tensor, Error> {
        let (ids, mask, _) = to_tensors(&batch, device);
        Ok(net
            .classify(
                &ids.narrow(0, 0, rows as i64),
                &mask.narrow(0, 0, rows as i64),
                false,
            )?
            .to_kind(Kind::Float)
            .to_device(Device::Cpu))
    })?;
    let classes = logits.size().last().copied().unwrap_or(0) as usize;
    let flat = Vec::<f32>::try_from(&logits.flatten(0, -1))?;
    let table = |v: &[i64]| {
        v.chunks(width)
            .take(rows)
            .map(<[i64]>::to_vec)
            .collect::<Vec<_>>()
    };
    Ok(serde_json::json!({
        "ids": table(&batch.input_ids),
        "mask": table(&batch.attention_mask),
        "logits": flat.chunks(classes.max(1)).map(<[f32]>::to_vec).collect::<Vec<_>>(),
    }))
}
