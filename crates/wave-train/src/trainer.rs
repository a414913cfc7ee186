//! The training program: the state is built in dependency order ([`TrainState::build`]), then one
//! loop serves every objective:
//!
//! ```text
//! loop {
//!     batch  = loader.next()                       (a stop signal is honoured while waiting)
//!     agreed = stop::agree(signal, budget, count)  (one small all-reduce: same decision everywhere)
//!     step   = train_step(micro-batches, agreed.global_count)
//!     window.observe(step); maybe log; maybe evaluate; maybe checkpoint (never blocking)
//! }
//! final checkpoint queued → final evaluation → wait for the upload → summary
//! ```

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::Serialize;
use tch::Device;
use wave_comm::{Communicator, RankInfo};
use wave_data::{Batch, Fetched, Loader};
use wave_model::ParamCounts;

use crate::config::JobConfig;
use crate::device::parse_device;
use crate::eval::{evaluate, EvalData, EvalResult, SIGNAL_POLL};
use crate::metrics::{peak_rss_mb, EvalRecord, MetricsSink, TrainRecord};
use crate::optim::lr_at;
use crate::parallel::GradientBuckets;
use crate::saving::Checkpointer;
use crate::state::TrainState;
use crate::step::{prepare_micro_batches, train_step};
use crate::stop::{agree, host_and_pid, RankReasons, StopReason, StopSignal};
use crate::tensorboard::EventWriter;
use crate::window::{MetricsWindow, StepReport};
use crate::Error;

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
    /// `classification`, `masked_lm` or `causal_lm`.
    pub objective: &'static str,
    /// Optimizer steps completed (including those before a resume).
    pub steps: u64,
    /// Why training ended before its last step: `"signal"`, `"time_budget"`; absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped: Option<&'static str>,
    /// Mean training loss over the last logging window.
    pub final_loss: f64,
    /// Training samples per second (all ranks; evaluation excluded) in this process's lifetime.
    pub train_samples_per_s: f64,
    /// Real training tokens per second (all ranks) in this process's lifetime.
    pub train_tokens_per_s: f64,
    /// Final evaluation (absent when a stop signal ended the run: the checkpoint came first).
    pub eval: Option<EvalResult>,
    /// Parameter counts.
    pub params: Params,
    /// Peak resident memory of the process, MiB.
    pub peak_rss_mb: f64,
    /// Run folder (metrics.jsonl, config.toml, model.safetensors).
    pub run_dir: PathBuf,
}

/// Trains as configured and returns the summary (also written to the run folder's metrics).
///
/// Ranks come from the launcher's environment (world size 1 without one). With several ranks,
/// an error on any rank aborts the whole job at once, naming that rank, rather than leaving the
/// others waiting in a collective.
///
/// `return_free_memory` is called once no training step follows, before the final checkpoint
/// copies the model and optimizer state out: the binary passes a function that hands its
/// allocator's cached free pages back to the kernel, so that copy does not stack on them and
/// raise the run's peak memory (pass `&|| {}` where there is nothing to hand back).
pub fn train(cfg: &JobConfig, return_free_memory: &dyn Fn()) -> Result<RunSummary, Error> {
    let info = RankInfo::from_env()?;
    let device = match parse_device(&cfg.train.device)? {
        // One GPU per rank on a node.
        Device::Cuda(_) if info.world_size > 1 => Device::Cuda(info.local_rank),
        d => d,
    };
    let threads = crate::threads::apply(cfg.train.threads, &info);
    tracing::debug!(
        threads,
        ranks_on_node = info.local_size,
        "libtorch intra-op threads"
    );
    // Before anything slow: a pre-emption during start-up is then a clean stop at step 0.
    let signal = StopSignal::install()?;
    let comm = Communicator::init(&info, &cfg.comm, device)?;
    let _rank_span =
        (comm.world_size() > 1).then(|| tracing::info_span!("rank", rank = comm.rank()).entered());
    if comm.world_size() > 1 {
        let (host, pid) = host_and_pid();
        match comm.all_gather_bytes(
            format!("{pid} {host}").as_bytes(),
            "host names and process ids",
        ) {
            Ok(all) => {
                let hosts: Vec<(String, u32)> = all
                    .iter()
                    .map(|b| {
                        let text = String::from_utf8_lossy(b);
                        let (pid, host) = text.split_once(' ').unwrap_or(("0", ""));
                        (host.to_string(), pid.parse().unwrap_or(0))
                    })
                    .collect();
                signal.watch_peers(comm.rank(), &hosts);
            }
            Err(e) => comm.abort(&e.to_string(), 1),
        }
    }
    match run(cfg, &comm, device, &signal, return_free_memory) {
        Err(e) if comm.world_size() > 1 => comm.abort(&e.to_string(), 1),
        result => result,
    }
}

fn run(
    cfg: &JobConfig,
    comm: &Communicator,
    device: Device,
    signal: &StopSignal,
    return_free_memory: &dyn Fn(),
) -> Result<RunSummary, Error> {
    let t = &cfg.train;
    let world = comm.world_size();
    let mut state = TrainState::build(cfg, comm, device)?;
    // The run folder is written only once the job is known to be able to start.
    let mut out = RunOutputs::open(cfg, comm)?;
    out.write_config(&state.resolved_toml)?;
    let bucket_bytes = (t.bucket_mb * (1 << 20) as f64) as usize;
    let row_sparse: &[&str] = if t.sparse_embedding_sync {
        &[wave_model::TOKEN_EMBEDDING]
    } else {
        &[]
    };
    let buckets = GradientBuckets::new(comm, &state.opt.named_params(), bucket_bytes, row_sparse)?;
    let mut saves = Checkpointer::start(cfg, comm, state.step)?;
    let params: Params = state.model_cfg.param_counts().into();
    let flops_per_token = state.model_cfg.train_flops_per_token();
    out.start(&state, &params, world);

    let mut window = MetricsWindow::default();
    let (mut stopped, mut diverged, mut last_loss) = (None, false, f64::NAN);
    while state.step < state.total_steps {
        let lr = lr_at(t, state.step, state.total_steps);
        let wait = Instant::now();
        let batch = next_batch(&mut state.loader, signal)?;
        let wait = wait.elapsed();
        let micro = match &batch {
            Some(b) => prepare_micro_batches(
                &state.objective,
                b,
                t.grad_accum_steps,
                (t.seed, state.step),
                t.unpadded,
                device,
            )?,
            None => Vec::new(),
        };
        let mine = RankReasons {
            signal: signal.raised(),
            budget_spent: t.max_seconds > 0.0 && window.train_secs >= t.max_seconds,
            diverged,
            count: micro.iter().map(|p| p.count).sum(),
        };
        let agreed = agree(comm, device, mine, state.step)?;
        if let Some(reason) = agreed.stop {
            stopped = Some(reason);
            break;
        }
        let Some(batch) = batch else {
            return Err(Error::Io("training loader ended early".into()));
        };

        let step = train_step(
            &mut state,
            &micro,
            agreed.global_count,
            lr,
            &buckets,
            comm,
            t.grad_clip,
        )?;
        diverged = !step.loss_share.is_finite();
        window.observe(StepReport {
            loss_share: step.loss_share,
            lr,
            grad_norm: step.grad_norm,
            epoch: batch.epoch,
            rows: batch.rows,
            tokens: batch.real_tokens,
            wait,
            compute: Duration::from_secs_f64(step.compute_s),
            sync: step.sync,
        });
        out.progress(state.step, step.loss_share);

        if state.step % t.log_every_steps == 0 || state.step == state.total_steps {
            let record = window.flush(comm, device, state.step, flops_per_token)?;
            last_loss = record.loss;
            out.train(&record)?;
        }
        if t.eval_every_steps > 0
            && state.step % t.eval_every_steps == 0
            && state.step < state.total_steps
        {
            // None: a signal cut the evaluation short; the next agreement stops the run.
            if let Some(result) = evaluate(
                &eval_data(cfg, &state),
                &state.net,
                &cfg.data.eval_split,
                comm,
                signal,
            )? {
                out.eval(state.step, &cfg.data.eval_split, &result)?;
            }
        }
        saves.after_step(&state, &out.last_metrics)?;
    }
    out.finish_progress();
    if !window.is_empty() {
        // Every rank stops at the same step (agreed above), so this reduction is safe.
        let record = window.flush(comm, device, state.step, flops_per_token)?;
        last_loss = record.loss;
        out.train(&record)?;
    }
    match stopped {
        Some(StopReason::Diverged) => {
            return Err(Error::Diverged {
                step: state.step,
                loss: last_loss,
            })
        }
        Some(StopReason::Signal) => {
            let received = if signal.raised() {
                signal.name()
            } else {
                "none on this rank (another rank's)"
            };
            tracing::warn!(
                step = state.step,
                signal = received,
                "stop signal: every rank stopped at this step; saving a final checkpoint"
            )
        }
        Some(StopReason::TimeBudget) => {
            tracing::info!(step = state.step, "train.max_seconds reached")
        }
        None => {}
    }

    // No step follows: the gradients and the loss's buffers go before the final checkpoint is
    // serialised, so its copy of the weights and optimizer state does not raise the run's peak.
    state.opt.release_gradients();
    state.objective.release_buffers();
    return_free_memory();
    // The final checkpoint uploads while the final evaluation runs; the wait for it comes after
    // the last collective, so no peer times out while rank 0 waits for the store.
    saves.submit_final(&state, &out.last_metrics)?;
    out.write_weights(&state)?;
    let preempted = stopped == Some(StopReason::Signal);
    let eval = if preempted {
        None
    } else {
        let result = evaluate(
            &eval_data(cfg, &state),
            &state.net,
            &cfg.data.eval_split,
            comm,
            signal,
        )?;
        if let Some(r) = &result {
            out.eval(state.step, &cfg.data.eval_split, r)?;
        }
        result
    };
    saves.finish(state.step, preempted)?;
    if preempted {
        tracing::warn!(step = state.step, uri = %cfg.checkpoint_uri(), "final checkpoint committed; exiting normally (resume with train.resume = \"auto\")");
    }
    let secs = window.train_secs.max(1e-9);
    Ok(RunSummary {
        event: "summary",
        objective: cfg.objective().name(),
        steps: state.step,
        stopped: stopped.map(|s| match s {
            StopReason::Signal => "signal",
            StopReason::TimeBudget => "time_budget",
            StopReason::Diverged => "diverged",
        }),
        final_loss: last_loss,
        train_samples_per_s: (window.total_rows * world) as f64 / secs,
        train_tokens_per_s: (window.total_tokens * world) as f64 / secs,
        eval,
        params,
        peak_rss_mb: peak_rss_mb(),
        run_dir: cfg.run_dir(),
    })
}

/// The next training batch; `None` when a stop signal arrived while waiting for it.
fn next_batch(loader: &mut Loader, signal: &StopSignal) -> Result<Option<Batch>, Error> {
    loop {
        match loader.next_batch_within(SIGNAL_POLL)? {
            Fetched::Batch(b) => return Ok(Some(b)),
            Fetched::End => return Err(Error::Io("training loader ended early".into())),
            Fetched::Waiting if signal.raised() => return Ok(None),
            Fetched::Waiting => {}
        }
    }
}

fn eval_data<'a>(cfg: &'a JobConfig, state: &'a TrainState) -> EvalData<'a> {
    EvalData {
        dataset: &state.dataset,
        encoder: state.encoder.clone(),
        cfg,
        objective: &state.objective,
        device: state.device,
    }
}

/// What rank 0 writes while training: the run folder (config, metrics as JSON lines and as
/// TensorBoard events, weights), logs and the progress bar. Other ranks hold an inert one.
struct RunOutputs {
    run_dir: PathBuf,
    sink: Option<MetricsSink>,
    events: Option<EventWriter>,
    progress: Option<indicatif::ProgressBar>,
    /// The last train and eval lines (stored in checkpoints as `metrics.json`).
    last_metrics: serde_json::Value,
}

impl RunOutputs {
    fn open(cfg: &JobConfig, comm: &Communicator) -> Result<RunOutputs, Error> {
        let run_dir = cfg.run_dir();
        let (sink, events) = if comm.is_root() {
            std::fs::create_dir_all(&run_dir).map_err(|e| Error::io(&run_dir, e))?;
            (
                Some(MetricsSink::create(&run_dir)?),
                Some(EventWriter::create(&run_dir)?),
            )
        } else {
            (None, None)
        };
        Ok(RunOutputs {
            run_dir,
            sink,
            events,
            progress: None,
            last_metrics: serde_json::json!({}),
        })
    }

    fn write_config(&self, resolved_toml: &str) -> Result<(), Error> {
        if self.sink.is_none() {
            return Ok(());
        }
        let path = self.run_dir.join("config.toml");
        std::fs::write(&path, resolved_toml).map_err(|e| Error::io(&path, e))
    }

    fn start(&mut self, state: &TrainState, params: &Params, world: usize) {
        if self.sink.is_none() {
            return;
        }
        tracing::info!(
            total = params.total,
            non_embedding = params.non_embedding,
            "model parameters"
        );
        tracing::info!(steps = state.total_steps, per_epoch = state.per_epoch, start = state.step, world, run_dir = %self.run_dir.display(), "training");
        if std::io::stdout().is_terminal() {
            let bar = indicatif::ProgressBar::new(state.total_steps);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{bar:40} {pos}/{len} steps  {msg}  [{elapsed_precise} < {eta_precise}]",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            bar.set_position(state.step);
            self.progress = Some(bar);
        }
    }

    fn progress(&self, step: u64, loss_share: f64) {
        if let Some(bar) = &self.progress {
            bar.set_position(step);
            bar.set_message(format!("loss {loss_share:.4}"));
        }
    }

    fn finish_progress(&mut self) {
        if let Some(bar) = self.progress.take() {
            bar.finish_and_clear();
        }
    }

    fn train(&mut self, record: &TrainRecord) -> Result<(), Error> {
        let Some(sink) = self.sink.as_mut() else {
            return Ok(());
        };
        self.last_metrics["train"] = serde_json::to_value(record).unwrap_or_default();
        tracing::info!(
            step = record.step,
            loss = format!("{:.5}", record.loss),
            lr = format!("{:.3e}", record.lr),
            grad_norm = format!("{:.3}", record.grad_norm),
            samples_per_s = format!("{:.1}", record.samples_per_s),
            tokens_per_s = format!("{:.0}", record.tokens_per_s),
            "train"
        );
        sink.write(record)?;
        if let Some(events) = self.events.as_mut() {
            events.scalars(
                record.step,
                &[
                    ("train/loss", record.loss),
                    ("train/lr", record.lr),
                    ("train/grad_norm", record.grad_norm),
                    ("train/samples_per_s", record.samples_per_s),
                    ("train/tokens_per_s", record.tokens_per_s),
                    ("train/model_flops_per_s", record.model_flops_per_s),
                ],
            )?;
        }
        Ok(())
    }

    fn eval(&mut self, step: u64, split: &str, result: &EvalResult) -> Result<(), Error> {
        let Some(sink) = self.sink.as_mut() else {
            return Ok(());
        };
        let record = EvalRecord {
            kind: "eval",
            step,
            split: split.to_string(),
            result: result.clone(),
        };
        self.last_metrics["eval"] = serde_json::to_value(&record).unwrap_or_default();
        tracing::info!(
            step,
            split,
            loss = format!("{:.5}", result.loss),
            accuracy = format!("{:.4}", result.accuracy),
            perplexity = ?result.perplexity,
            bits_per_byte = ?result.bits_per_byte,
            "eval"
        );
        sink.write(&record)?;
        if let Some(events) = self.events.as_mut() {
            let tag = |name: &str| format!("eval/{split}/{name}");
            let (loss, accuracy, perplexity, bpb) = (
                tag("loss"),
                tag("accuracy"),
                tag("perplexity"),
                tag("bits_per_byte"),
            );
            events.scalars(
                step,
                &[
                    (loss.as_str(), result.loss),
                    (accuracy.as_str(), result.accuracy),
                    (perplexity.as_str(), result.perplexity.unwrap_or(f64::NAN)),
                    (bpb.as_str(), result.bits_per_byte.unwrap_or(f64::NAN)),
                ],
            )?;
        }
        Ok(())
    }

    fn write_weights(&self, state: &TrainState) -> Result<(), Error> {
        if self.sink.is_none() {
            return Ok(());
        }
        let weights = self.run_dir.join("model.safetensors");
        state
            .vs
            .save(&weights)
            .map_err(|e| Error::Io(format!("{}: {e}", weights.display())))
    }
}
