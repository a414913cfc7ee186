//! `wave-dist checkpoint …`: a thin clap front end over `wave-ckpt` to list, inspect, verify and
//! export checkpoints in any store (credentials and endpoint from the usual `AWS_*`/`GOOGLE_*`/
//! `AZURE_*` variables).
//!
//! ```text
//! wave-dist checkpoint ls s3://bucket/runs/imdb/ckpt
//! wave-dist checkpoint inspect runs/imdb/ckpt --step 2000
//! wave-dist checkpoint verify runs/imdb/ckpt --all
//! wave-dist checkpoint export s3://bucket/runs/imdb/ckpt --out exported/   # model.safetensors + config.json
//! ```

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use wave_ckpt::{CheckpointStore, RetryPolicy};

/// `wave-dist checkpoint …`
#[derive(Debug, Subcommand)]
pub enum CheckpointCommand {
    /// List the step folders under a checkpoint root: committed or not, objects, bytes, latest.
    Ls(LsArgs),
    /// Print a checkpoint's manifest (objects with sizes and sha256, writer, metadata) as JSON.
    Inspect(StepArgs),
    /// Check every object of a checkpoint against its manifest; fails naming the first bad object.
    Verify(VerifyArgs),
    /// Write a checkpoint's model.safetensors and a config.json (its config.toml's [model]
    /// section) into a folder, for PyTorch (bench/wave_peer.py) or `wave-dist eval --weights`.
    Export(ExportArgs),
}

/// Options of `checkpoint ls`.
#[derive(Debug, Args)]
pub struct LsArgs {
    /// Checkpoint root: a folder, file://, s3://, gs:// or az:// URL.
    pub uri: String,
}

/// A checkpoint root and a step in it.
#[derive(Debug, Args)]
pub struct StepArgs {
    /// Checkpoint root: a folder, file://, s3://, gs:// or az:// URL.
    pub uri: String,
    /// Step to use (default: the one `latest` points at).
    #[arg(long)]
    pub step: Option<u64>,
}

/// Options of `checkpoint verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub at: StepArgs,
    /// Verify every committed step instead of one.
    #[arg(long, conflicts_with = "step")]
    pub all: bool,
}

/// Options of `checkpoint export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    #[command(flatten)]
    pub at: StepArgs,
    /// Output folder (created if missing; existing files of the same names are replaced).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

/// Runs one `checkpoint` subcommand.
pub fn run_checkpoint(cmd: CheckpointCommand) -> Result<()> {
    match cmd {
        CheckpointCommand::Ls(args) => ls(&args),
        CheckpointCommand::Inspect(args) => {
            let (store, step) = open_at(&args)?;
            let manifest = store.verify(step)?;
            println!("{}", serde_json::to_string_pretty(&manifest)?);
            Ok(())
        }
        CheckpointCommand::Verify(args) => verify(&args),
        CheckpointCommand::Export(args) => export(&args),
    }
}

fn open(uri: &str) -> Result<CheckpointStore> {
    Ok(CheckpointStore::open(uri, RetryPolicy::default())?)
}

/// The store and the step asked for, or the one `latest` names.
fn open_at(args: &StepArgs) -> Result<(CheckpointStore, u64)> {
    let store = open(&args.uri)?;
    let step = match args.step {
        Some(step) => step,
        None => store.latest()?.with_context(|| {
            format!(
                "no committed checkpoint at {} (no `latest` pointer)",
                args.uri
            )
        })?,
    };
    Ok((store, step))
}

fn ls(args: &LsArgs) -> Result<()> {
    let store = open(&args.uri)?;
    let latest = store.latest()?;
    println!(
        "{:>10}  {:<11}  {:>7}  {:>14}  uri",
        "step", "state", "objects", "bytes"
    );
    for c in store.list()? {
        let state = match (c.committed, Some(c.step) == latest) {
            (true, true) => "latest",
            (true, false) => "committed",
            (false, _) => "unfinished",
        };
        println!(
            "{:>10}  {state:<11}  {:>7}  {:>14}  {}",
            c.step, c.objects, c.bytes, c.uri
        );
    }
    Ok(())
}

fn verify(args: &VerifyArgs) -> Result<()> {
    let (store, steps) = if args.all {
        let store = open(&args.at.uri)?;
        let steps: Vec<u64> = store
            .list()?
            .into_iter()
            .filter(|c| c.committed)
            .map(|c| c.step)
            .collect();
        if steps.is_empty() {
            bail!("no committed checkpoint at {}", args.at.uri);
        }
        (store, steps)
    } else {
        let (store, step) = open_at(&args.at)?;
        (store, vec![step])
    };
    for step in steps {
        let m = store.verify(step)?;
        println!(
            "step {step}: ok ({} objects, {} bytes)",
            m.objects.len(),
            m.bytes()
        );
    }
    Ok(())
}

fn export(args: &ExportArgs) -> Result<()> {
    let (store, step) = open_at(&args.at)?;
    let ckpt = store.load(step)?;
    let names = || {
        ckpt.objects
            .iter()
            .map(|(n, _)| n.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let object = |name: &str| {
        ckpt.object(name).with_context(|| {
            format!(
                "checkpoint step {step} at {} has no {name} (it has: {})",
                args.at.uri,
                names()
            )
        })
    };
    let model = object("model.safetensors")?;
    let config_toml =
        std::str::from_utf8(object("config.toml")?).context("config.toml is not UTF-8")?;
    let config_json = model_config_json(config_toml)
        .with_context(|| format!("config.toml of checkpoint step {step} at {}", args.at.uri))?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let model_path = args.out.join("model.safetensors");
    let config_path = args.out.join("config.json");
    std::fs::write(&model_path, model)
        .with_context(|| format!("writing {}", model_path.display()))?;
    std::fs::write(&config_path, config_json)
        .with_context(|| format!("writing {}", config_path.display()))?;
    let summary = serde_json::json!({"step": step, "model": model_path, "config": config_path});
    println!("{summary}");
    Ok(())
}

/// The `[model]` section of a job config as the JSON the PyTorch peer reads: every
/// `wave_model::ModelConfig` key, defaults filled in, validated.
fn model_config_json(config_toml: &str) -> Result<String> {
    let doc: toml::Table = config_toml.parse()?;
    let section = doc.get("model").cloned().context("no [model] section")?;
    let model: wave_model::ModelConfig = section.try_into().context("[model]")?;
    model.validate()?;
    Ok(serde_json::to_string_pretty(&model)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_section_becomes_complete_peer_json() {
        let text =
            "[model]\nvocab_size = 30522\nd_model = 64\nnum_classes = 2\n\n[train]\nlr = 1e-3\n";
        let json: serde_json::Value =
            serde_json::from_str(&model_config_json(text).expect("convert")).expect("json");
        for key in [
            "vocab_size",
            "d_model",
            "n_layers",
            "mode",
            "to_real",
            "position",
            "max_positions",
            "ffn_dim",
            "dropout",
            "head",
            "pooling",
            "num_classes",
            "eps",
        ] {
            assert!(json.get(key).is_some(), "config.json lacks {key}: {json}");
        }
        assert_eq!(
            (json["d_model"].as_u64(), json["mode"].as_str()),
            (Some(64), Some("modulation"))
        );
        assert!(model_config_json("[train]\nlr = 1\n").is_err());
        assert!(
            model_config_json("[model]\nd_model = 8\nnum_classes = 2\n").is_err(),
            "vocab_size 0 is rejected"
        );
    }

    #[test]
    fn export_writes_the_latest_model_and_config_json_and_other_commands_run() {
        let dir = tempfile::tempdir().expect("tempdir");
        let uri = dir.path().join("ckpt").display().to_string();
        let store = CheckpointStore::open(&uri, RetryPolicy::default()).expect("open");
        let config = "[model]\nvocab_size = 100\nd_model = 8\nnum_classes = 2\n";
        for step in [1, 2] {
            let objects = vec![
                ("model.safetensors".to_string(), vec![step as u8; 32].into()),
                ("config.toml".to_string(), config.as_bytes().to_vec().into()),
            ];
            store
                .save(step, objects, serde_json::json!({}))
                .expect("save");
        }
        let at = |step| StepArgs {
            uri: uri.clone(),
            step,
        };
        let out = dir.path().join("export");
        run_checkpoint(CheckpointCommand::Export(ExportArgs {
            at: at(None),
            out: out.clone(),
        }))
        .expect("export");
        assert_eq!(
            std::fs::read(out.join("model.safetensors")).expect("model"),
            vec![2u8; 32]
        );
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join("config.json")).expect("config"))
                .expect("json");
        assert_eq!(json["vocab_size"], 100);
        run_checkpoint(CheckpointCommand::Ls(LsArgs { uri: uri.clone() })).expect("ls");
        run_checkpoint(CheckpointCommand::Inspect(at(Some(1)))).expect("inspect");
        run_checkpoint(CheckpointCommand::Verify(VerifyArgs {
            at: at(None),
            all: true,
        }))
        .expect("verify");
        let err = run_checkpoint(CheckpointCommand::Export(ExportArgs {
            at: at(Some(7)),
            out,
        }))
        .expect_err("no step 7");
        assert!(err.to_string().contains("step 7"), "{err}");
    }
}
