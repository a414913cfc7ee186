//! `wave-dist`: train Wave Network language models from one CPU to many GPUs.
//!
//! The binary is a thin edge: it parses the command line, sets up logging and hands over to the
//! library crates (`wave-train`, `wave-data`, `wave-plot`). Errors become one readable line on
//! stderr and exit code 1.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use wave_train::JobConfig;

mod alloc;
mod checkpoint_cmd;
mod data_cmd;

/// Train and evaluate Wave Network language models (arXiv 2411.02674) with data parallelism.
///
/// Local debugging (one process, CPU):  wave-dist train --config configs/smoke.toml
/// Paper recipe on IMDB:                wave-dist train --config configs/imdb.toml
#[derive(Parser)]
#[command(name = "wave-dist", version, verbatim_doc_comment)]
struct Cli {
    /// Log filter (tracing-subscriber syntax, e.g. `info`, `wave_train=debug`).
    #[arg(long, global = true, env = "WAVE_LOG", default_value = "info")]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train a model as the config says; prints a JSON summary as the last stdout line.
    Train(TrainArgs),
    /// Evaluate trained weights on a split; prints a JSON result.
    Eval(EvalArgs),
    /// Data sets: fetch archives, prepare Parquet shards, inspect them.
    #[command(subcommand)]
    Data(data_cmd::DataCommand),
    /// Tokenizers: train a WordPiece or BPE vocabulary.
    #[command(subcommand)]
    Tokenizer(data_cmd::TokenizerCommand),
    /// Checkpoints: list, inspect, verify, export (model.safetensors + config.json).
    #[command(subcommand)]
    Checkpoint(checkpoint_cmd::CheckpointCommand),
    /// Write PNG curves (loss, accuracy, throughput) from a run folder's metrics.jsonl.
    Plot(PlotArgs),
}

/// Options shared by the commands that read a job config.
#[derive(Args)]
struct ConfigArgs {
    /// Job config (TOML): [model], [data], [train], [checkpoint] sections.
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// Override one config key, e.g. `--set train.max_steps=100` (repeatable; values are TOML).
    #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
    overrides: Vec<String>,
    /// Device: cpu, cuda or cuda:N (shorthand for --set train.device=...).
    #[arg(long)]
    device: Option<String>,
}

impl ConfigArgs {
    fn load(&self) -> Result<JobConfig> {
        let mut overrides = self.overrides.clone();
        if let Some(device) = &self.device {
            overrides.push(format!("train.device=\"{device}\""));
        }
        Ok(JobConfig::load(&self.config, &overrides)?)
    }
}

#[derive(Args)]
struct TrainArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Collective backend: auto, local, mpi or nccl (shorthand for --set comm.backend=...).
    /// auto = NCCL for CUDA when libnccl loads, else MPI under an MPI launcher, else local.
    #[arg(long, value_name = "BACKEND")]
    backend: Option<String>,
    /// This process's rank, overriding the launcher's variables (sets WAVE_RANK).
    #[arg(long)]
    rank: Option<usize>,
    /// Number of ranks, overriding the launcher's variables (sets WAVE_WORLD_SIZE).
    #[arg(long)]
    world_size: Option<usize>,
    /// Rank within this node, overriding the launcher's variables (sets WAVE_LOCAL_RANK).
    #[arg(long)]
    local_rank: Option<usize>,
}

#[derive(Args)]
struct EvalArgs {
    /// A finished run folder: uses its config.toml and model.safetensors.
    #[arg(long, value_name = "DIR", conflicts_with = "config")]
    run: Option<PathBuf>,
    /// Job config (TOML), with --weights.
    #[arg(long, value_name = "FILE", requires = "weights")]
    config: Option<PathBuf>,
    /// Model weights (safetensors) to evaluate, with --config.
    #[arg(long, value_name = "FILE")]
    weights: Option<PathBuf>,
    /// Split to evaluate (default: the config's data.eval_split).
    #[arg(long)]
    split: Option<String>,
    /// Override one config key (repeatable), e.g. `--set data.uri=...`.
    #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
    overrides: Vec<String>,
    /// Device: cpu, cuda or cuda:N.
    #[arg(long)]
    device: Option<String>,
    /// Also score a unigram model (token frequencies of the train split of the data set at URI,
    /// add-one smoothed) on the same positions: the floor a language model must beat.
    #[arg(long, value_name = "URI")]
    unigram_from: Option<String>,
    /// Instead of evaluating, write the first --dump-rows rows' ids, mask and logits as JSON
    /// (for checking another implementation, e.g. bench/peer_logits.py, against this one).
    #[arg(long, value_name = "FILE", hide = true)]
    dump_logits: Option<PathBuf>,
    /// Rows written by --dump-logits.
    #[arg(long, default_value_t = 8, hide = true)]
    dump_rows: usize,
}

#[derive(Args)]
struct PlotArgs {
    /// Run folder holding metrics.jsonl.
    run_dir: PathBuf,
    /// Where to write the PNGs (default: the run folder).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
}

fn print_json(value: &impl serde::Serialize) -> Result<()> {
    let line = serde_json::to_string(value)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()?;
    Ok(())
}

fn train(args: TrainArgs) -> Result<ExitCode> {
    // Explicit flags win over any launcher; wave-comm reads them with the launcher's variables.
    for (var, value) in [
        (wave_comm::RANK_VAR, args.rank),
        (wave_comm::WORLD_SIZE_VAR, args.world_size),
        (wave_comm::LOCAL_RANK_VAR, args.local_rank),
    ] {
        if let Some(v) = value {
            std::env::set_var(var, v.to_string());
        }
    }
    let mut config = args.config;
    if let Some(backend) = &args.backend {
        config.overrides.push(format!("comm.backend=\"{backend}\""));
    }
    let cfg = config.load()?;
    alloc::keep_freed_pages();
    let summary = wave_train::train(&cfg, &alloc::return_free_memory)?;
    print_json(&summary)?;
    Ok(match summary.stopped {
        Some("signal") => ExitCode::from(cfg.train.signal_exit_code),
        _ => ExitCode::SUCCESS,
    })
}

fn eval(args: EvalArgs) -> Result<()> {
    let (config, weights) = match (&args.run, &args.config) {
        (Some(run), _) => (run.join("config.toml"), run.join("model.safetensors")),
        (None, Some(config)) => (
            config.clone(),
            args.weights
                .clone()
                .context("--weights is required with --config")?,
        ),
        (None, None) => bail!("give --run DIR, or --config FILE --weights FILE"),
    };
    let mut overrides = args.overrides.clone();
    if let Some(device) = &args.device {
        overrides.push(format!("train.device=\"{device}\""));
    }
    let cfg = JobConfig::load(&config, &overrides)?;
    let split = args
        .split
        .clone()
        .unwrap_or_else(|| cfg.data.eval_split.clone());
    if let Some(path) = &args.dump_logits {
        let dump = wave_train::logits_of_run(&cfg, &weights, &split, args.dump_rows)?;
        std::fs::write(path, serde_json::to_vec(&dump)?)
            .with_context(|| format!("writing {}", path.display()))?;
        return Ok(());
    }
    let (result, params) = wave_train::evaluate_run(&cfg, &weights, &split)?;
    let mut line = serde_json::json!({ "event": "eval", "split": split, "params": params });
    if let (Some(fields), Some(out)) = (
        serde_json::to_value(&result)?.as_object(),
        line.as_object_mut(),
    ) {
        out.extend(fields.clone());
    }
    if let Some(uri) = &args.unigram_from {
        let baseline = wave_train::unigram_baseline_of_run(&cfg, &weights, &split, uri)?;
        line["unigram"] = serde_json::to_value(&baseline)?;
    }
    print_json(&line)
}

fn plot(args: PlotArgs) -> Result<()> {
    let report = wave_plot::plot_run(&args.run_dir, args.out.as_deref())?;
    for path in &report.written {
        println!("wrote {}", path.display());
    }
    for reason in &report.skipped {
        println!("skipped: {reason}");
    }
    for warning in &report.warnings {
        eprintln!("warning: {warning}");
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_new(&cli.log).unwrap_or_else(|_| "info".into());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .init();
    let result = match cli.command {
        Command::Train(args) => match train(args) {
            Ok(code) => return code,
            Err(e) => Err(e),
        },
        Command::Eval(args) => eval(args),
        Command::Data(cmd) => data_cmd::run_data(cmd),
        Command::Tokenizer(cmd) => data_cmd::run_tokenizer(cmd),
        Command::Checkpoint(cmd) => checkpoint_cmd::run_checkpoint(cmd),
        Command::Plot(args) => plot(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
