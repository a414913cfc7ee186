//! Masked and causal LM losses equal a PyTorch computation on the same weights and batch.
//!
//! Each test trains a tiny model for a few steps on WikiText-2 packed into rows of 128 BERT tokens
//! (so the weights are off their initial values), exports the checkpoint, dumps the evaluation
//! batch (`eval --dump-logits`: inputs after wave-dist's fixed evaluation mask, supervised
//! positions, targets, summed loss), and runs `bench/lm_parity.py`, which recomputes the summed
//! loss with the PyTorch peer (`bench/wave_peer.py`) from the dumped inputs: with the head on the
//! gathered positions, with the head on every position then gathered, and in fp64. All must equal
//! wave-dist's within 1e-4 relative.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use common::*;

/// Rows dumped and compared.
const ROWS: &str = "16";
/// Positions one chunk of wave-dist's chunked token loss holds with the BERT vocabulary
/// (2^22 logits / 30,522 tokens). The dumps must hold more, so that a sum over several chunks is
/// what gets compared.
const ONE_LOSS_CHUNK: u64 = 137;

/// The venv python that has torch and safetensors: `$WAVE_VENV` (set by `launch/env.sh`), else
/// the default venv under `$WAVE_DIST_HOME` or `~/.cache/wave-dist`.
fn venv_python() -> Option<PathBuf> {
    let venv = std::env::var_os("WAVE_VENV")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("WAVE_DIST_HOME")
                .map(PathBuf::from)
                .or_else(|| {
                    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/wave-dist"))
                })
                .map(|home| home.join("venv"))
        });
    let python = venv.map(|v| v.join("bin/python")).filter(|p| p.is_file());
    if python.is_none() {
        wave_testkit::missing("the venv python with torch and safetensors ($WAVE_VENV/bin/python)");
    }
    python
}

/// The first 1,000 lines of WikiText-2 validation, packed into rows of 128 BERT tokens (with a
/// validation split carved out), prepared once per test process.
fn packed_wikitext() -> Option<&'static Path> {
    static DIR: OnceLock<Option<(tempfile::TempDir, PathBuf)>> = OnceLock::new();
    DIR.get_or_init(|| {
        let corpus = shared_data()?.join("wikitext-2/valid.txt");
        if !corpus.is_file() {
            wave_testkit::missing(&corpus.display().to_string());
            return None;
        }
        let tmp = tempfile::tempdir().expect("tempdir");
        let out = tmp.path().join("wiki-packed");
        ok(&wave_dist(&[
            "data",
            "prepare",
            "--format",
            "text",
            "--input",
            corpus.to_str().expect("utf-8 path"),
            "--out",
            out.to_str().expect("utf-8 path"),
            "--tokenizer",
            "bert-base-uncased",
            "--pack-length",
            "128",
            "--max-rows",
            "1000",
        ]));
        Some((tmp, out))
    })
    .as_ref()
    .map(|(_, p)| p.as_path())
}

fn utf8(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// Trains `objective` for 10 steps on `data`, exports the checkpoint and dumps the first
/// evaluation rows. Returns (export folder, dump file).
fn train_export_dump(data: &Path, objective: &str, tmp: &Path) -> (PathBuf, PathBuf) {
    let (run, export, dump) = (
        tmp.join("run"),
        tmp.join("export"),
        tmp.join("wave-dist.json"),
    );
    let sets = [
        format!("data.uri={:?}", utf8(data)),
        format!("train.run_dir={:?}", utf8(&run)),
        format!("train.objective={objective:?}"),
        "data.train_split=\"train\"".into(),
        "data.eval_split=\"validation\"".into(),
        "data.max_length=128".into(),
        "data.batch_size=16".into(),
        "model.max_positions=128".into(),
        "train.max_steps=10".into(),
        "train.warmup_steps=2".into(),
        "train.eval_max_batches=1".into(),
    ];
    let mut args = vec!["train", "--config", "configs/smoke.toml"];
    for s in &sets {
        args.extend(["--set", s.as_str()]);
    }
    let trained = summary(&ok(&wave_dist(&args)));
    assert_eq!(trained["objective"], objective, "{trained}");
    ok(&wave_dist(&[
        "checkpoint",
        "export",
        utf8(&run.join("checkpoints")),
        "--out",
        utf8(&export),
    ]));
    ok(&wave_dist(&[
        "eval",
        "--config",
        utf8(&run.join("config.toml")),
        "--weights",
        utf8(&export.join("model.safetensors")),
        "--dump-logits",
        utf8(&dump),
        "--dump-rows",
        ROWS,
    ]));
    (export, dump)
}

fn parity_script(python: &Path, export: &Path, dump: &Path) -> Output {
    Command::new(python)
        .arg("bench/lm_parity.py")
        .arg(export)
        .arg(dump)
        .current_dir(workspace_root())
        .output()
        .expect("run python")
}

/// Runs the parity script and checks its figures; returns its JSON line.
fn assert_parity(python: &Path, export: &Path, dump: &Path, objective: &str) -> serde_json::Value {
    let out = parity_script(python, export, dump);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        out.status.success(),
        "lm_parity.py failed ({:?}):\n{stdout}\n{stderr}",
        out.status
    );
    let report = summary(&stdout);
    assert_eq!(report["objective"], objective, "{report}");
    assert_eq!(report["ok"], true, "{report}");
    let count = report["count"].as_u64().expect("count");
    assert!(
        count > ONE_LOSS_CHUNK,
        "{count} supervised positions fit in one loss chunk: {report}"
    );
    let ours = report["wave_dist_loss_sum"].as_f64().expect("loss sum");
    // Mean loss per token below ln(vocab) + 1: a real loss, not zeros or garbage.
    assert!(
        ours > 0.0 && ours / (count as f64) < 30_522f64.ln() + 1.0,
        "{report}"
    );
    for peer in ["peer_gathered_head", "peer_all_positions_head", "peer_f64"] {
        let theirs = report[peer].as_f64().expect("peer loss sum");
        assert!(
            (theirs - ours).abs() <= 1e-4 * ours.abs(),
            "wave-dist {ours} vs {peer} {theirs}: {report}"
        );
    }
    report
}

#[test]
fn masked_lm_loss_equals_pytorch_on_the_same_weights_and_mask() {
    let (Some(data), Some(python)) = (packed_wikitext(), venv_python()) else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let (export, dump) = train_export_dump(data, "masked_lm", tmp.path());
    assert_parity(&python, &export, &dump, "masked_lm");

    // The comparison can fail: the same dump with wave-dist's loss off by 1e-3 is refused,
    // naming both values.
    let mut value: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&dump).expect("dump")).expect("json");
    let loss = value["loss_sum"].as_f64().expect("loss_sum");
    value["loss_sum"] = serde_json::json!(loss * 1.001);
    let skewed = tmp.path().join("skewed.json");
    std::fs::write(&skewed, value.to_string()).expect("write");
    let out = parity_script(&python, &export, &skewed);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr:\n{stderr}");
    assert!(
        stderr.contains("loss sum: wave-dist") && stderr.contains("peer_gathered_head"),
        "{stderr}"
    );
}

#[test]
fn causal_lm_loss_equals_pytorch_on_the_same_weights_and_batch() {
    let (Some(data), Some(python)) = (packed_wikitext(), venv_python()) else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let (export, dump) = train_export_dump(data, "causal_lm", tmp.path());
    let report = assert_parity(&python, &export, &dump, "causal_lm");
    // Packed rows are all real tokens: every position but the last of each row is supervised.
    assert_eq!(report["count"], 16 * 127, "{report}");
}
