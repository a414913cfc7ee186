//! `wave-dist train`, `eval` and `plot` as a user runs them.

mod common;

use common::*;

fn smoke_args<'a>(data: &'a str, run_dir: &'a str, extra: &[&'a str]) -> Vec<String> {
    let mut args: Vec<String> = ["train", "--config", "configs/smoke.toml", "--set"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.push(format!("data.uri={data:?}"));
    args.push("--set".into());
    args.push(format!("train.run_dir={run_dir:?}"));
    for e in extra {
        args.push("--set".into());
        args.push(e.to_string());
    }
    args
}

fn train(data: &std::path::Path, run_dir: &std::path::Path, extra: &[&str]) -> String {
    let args = smoke_args(
        data.to_str().expect("utf-8"),
        run_dir.to_str().expect("utf-8"),
        extra,
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    ok(&wave_dist(&args))
}

#[test]
fn smoke_run_prints_a_complete_summary_and_repeats_exactly_with_the_same_seed() {
    let Some(data) = agnews_test_split() else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    let first = summary(&train(data, &a, &[]));
    let second = summary(&train(data, &b, &[]));

    assert_eq!(first["event"], "summary");
    assert_eq!(first["objective"], "classification");
    assert_eq!(first["steps"], 200);
    for key in ["train_samples_per_s", "train_tokens_per_s", "peak_rss_mb"] {
        assert!(
            first[key]
                .as_f64()
                .is_some_and(|v| v.is_finite() && v > 0.0),
            "{key}: {first}"
        );
    }
    // It learns: uniform guessing over 4 classes is a loss of ln 4 = 1.386 and 25% accuracy.
    let final_loss = first["final_loss"].as_f64().expect("final_loss");
    assert!(final_loss < 1.1, "final training loss {final_loss}");
    let accuracy = first["eval"]["accuracy"].as_f64().expect("accuracy");
    assert!(accuracy > 0.6, "eval accuracy {accuracy} on 4 classes");
    assert!(first["eval"]["loss"].as_f64().is_some_and(|l| l < 1.1));
    assert!(first["params"]["total"].as_u64() > first["params"]["non_embedding"].as_u64());

    let (la, lb) = (train_losses(&a), train_losses(&b));
    assert_eq!(la.len(), 20, "one metrics line every 10 of 200 steps");
    assert_eq!(la, lb, "same seed must give identical losses");
    assert_eq!(first["final_loss"], second["final_loss"]);
    assert_eq!(first["eval"], second["eval"]);

    let other = tmp.path().join("c");
    train(data, &other, &["train.seed=99"]);
    assert_ne!(
        train_losses(&other),
        la,
        "a different seed must change the run"
    );
}

#[test]
fn gradient_accumulation_learns_what_the_full_batch_learns() {
    let Some(data) = agnews_test_split() else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let (whole, split) = (tmp.path().join("whole"), tmp.path().join("split"));
    // Dropout stays on: its masks are keyed by sample and position, so a micro-batch draws the
    // masks its rows would get in the whole batch.
    train(data, &whole, &["train.max_steps=20"]);
    train(
        data,
        &split,
        &["train.max_steps=20", "train.grad_accum_steps=4"],
    );
    let (a, b) = (train_losses(&whole), train_losses(&split));
    assert_eq!(a.len(), b.len(), "both runs log the same steps");
    for ((step, a), (_, b)) in a.into_iter().zip(b) {
        assert!(
            (a - b).abs() <= 1e-4 * a.abs(),
            "step {step}: loss {a} (whole batch) vs {b} (4 micro-batches)"
        );
    }
}

#[test]
fn training_lowers_the_loss() {
    let Some(data) = agnews_test_split() else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    train(data, tmp.path(), &["train.eval_every_steps=0"]);
    let losses = train_losses(tmp.path());
    let (first, last) = (losses[0].1, losses[losses.len() - 1].1);
    // Guessing uniformly over AG News's 4 classes costs ln 4 = 1.386 nats; the smoke run's 200
    // steps end near 0.72.
    assert!(
        last < 0.75 * 4f64.ln() && last < 0.7 * first,
        "loss went from {first} to {last}"
    );
}

#[test]
fn resuming_from_a_checkpoint_continues_the_uninterrupted_trajectory_exactly() {
    let Some(data) = agnews_test_split() else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let (full, resumed) = (tmp.path().join("full"), tmp.path().join("resumed"));
    let ckpt = tmp.path().join("ckpt");
    let ckpt_set = format!("checkpoint.uri={:?}", ckpt.to_str().expect("utf-8"));
    let run = [
        "train.max_steps=40",
        "checkpoint.every_steps=20",
        "checkpoint.keep_last=0",
    ];
    // The uninterrupted run leaves a checkpoint at step 20.
    let uninterrupted = summary(&train(data, &full, &[&ckpt_set, run[0], run[1], run[2]]));
    assert!(ckpt.join("step-00000020").is_dir() && ckpt.join("step-00000040").is_dir());
    let again = summary(&train(
        data,
        &resumed,
        &[&ckpt_set, run[0], run[1], run[2], "train.resume=20"],
    ));

    let tail: Vec<(u64, f64)> = train_losses(&full)
        .into_iter()
        .filter(|(s, _)| *s > 20)
        .collect();
    assert_eq!(
        train_losses(&resumed),
        tail,
        "losses after the resume point must be bit-identical"
    );
    assert_eq!(uninterrupted["eval"], again["eval"]);
    let (wa, wb) = (
        std::fs::read(full.join("model.safetensors")),
        std::fs::read(resumed.join("model.safetensors")),
    );
    assert_eq!(
        wa.expect("weights"),
        wb.expect("weights"),
        "final parameters must be bit-identical"
    );
}

#[test]
fn resume_refuses_a_checkpoint_of_a_different_model() {
    let Some(data) = agnews_test_split() else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let ckpt = tmp.path().join("ckpt");
    let ckpt_set = format!("checkpoint.uri={:?}", ckpt.to_str().expect("utf-8"));
    train(
        data,
        &tmp.path().join("a"),
        &[&ckpt_set, "train.max_steps=5"],
    );
    let args = smoke_args(
        data.to_str().expect("utf-8"),
        tmp.path().join("b").to_str().expect("utf-8"),
        &[&ckpt_set, "train.resume=\"auto\"", "model.d_model=48"],
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    fails_naming(&wave_dist(&args), &["different model", "d_model"]);
}

#[test]
fn eval_of_a_finished_run_reproduces_its_final_evaluation() {
    let Some(data) = agnews_test_split() else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let run = summary(&train(data, tmp.path(), &["train.max_steps=10"]));
    let out = ok(&wave_dist(&[
        "eval",
        "--run",
        tmp.path().to_str().expect("utf-8"),
    ]));
    let eval = summary(&out);
    assert_eq!(eval["accuracy"], run["eval"]["accuracy"]);
    assert_eq!(eval["samples"], run["eval"]["samples"]);
}

#[test]
fn plot_writes_loss_accuracy_and_throughput_pngs() {
    let Some(data) = agnews_test_split() else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    train(data, tmp.path(), &["train.max_steps=20"]);
    ok(&wave_dist(&["plot", tmp.path().to_str().expect("utf-8")]));
    for name in ["loss.png", "accuracy.png", "throughput.png"] {
        let bytes = std::fs::read(tmp.path().join(name)).expect(name);
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "{name} is a PNG");
    }
}

#[test]
fn tensorboard_reads_the_runs_event_file_with_the_metrics_curves() {
    let Some(data) = agnews_test_split() else {
        return;
    };
    let Some(python) = wave_testkit::venv_bin("python") else {
        wave_testkit::missing("the set-up venv's python (WAVE_VENV, from launch/env.sh)");
        return;
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    train(data, tmp.path(), &["train.max_steps=40"]);
    // TensorBoard's own reader, not ours: the file must be what TensorBoard understands.
    let script = r#"
import json, sys
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
acc = EventAccumulator(sys.argv[1], size_guidance={"scalars": 0})
acc.Reload()
print(json.dumps({tag: [[e.step, e.value] for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}))
"#;
    let out = std::process::Command::new(python)
        .args(["-c", script, tmp.path().to_str().expect("utf-8")])
        .output()
        .expect("run python");
    let scalars: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "tensorboard reader failed ({e}): {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let losses = train_losses(tmp.path());
    let tb: Vec<(u64, f64)> =
        serde_json::from_value(scalars["train/loss"].clone()).expect("train/loss");
    assert_eq!(tb.len(), losses.len(), "one event per metrics line");
    for ((s, a), (t, b)) in losses.iter().zip(&tb) {
        assert_eq!(s, t);
        assert!(
            (a - b).abs() <= 1e-6 * a.abs(),
            "step {s}: {a} vs {b} (f32)"
        );
    }
    for tag in [
        "train/lr",
        "train/tokens_per_s",
        "train/model_flops_per_s",
        "eval/test/accuracy",
    ] {
        assert!(
            scalars[tag].as_array().is_some_and(|v| !v.is_empty()),
            "{tag} missing: {scalars}"
        );
    }
}
