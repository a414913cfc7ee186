//! `mpirun -n N wave-dist train`: data parallelism as a user launches it, with real MPI ranks.

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// Smoke-config arguments for 30 steps without dropout, logging every step.
fn job(data: &Path, run_dir: &Path, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "train".into(),
        "--config".into(),
        "configs/smoke.toml".into(),
    ];
    let sets = [
        format!("data.uri={:?}", data.to_str().expect("utf-8")),
        format!("train.run_dir={:?}", run_dir.to_str().expect("utf-8")),
        "model.dropout=0.0".into(),
        "train.max_steps=30".into(),
        "train.log_every_steps=1".into(),
        "checkpoint.every_steps=0".into(),
    ];
    for set in sets.iter().map(String::as_str).chain(extra.iter().copied()) {
        args.push("--set".into());
        args.push(set.to_string());
    }
    args
}

fn weights(run_dir: &Path) -> Vec<(String, tch::Tensor)> {
    let mut w = tch::Tensor::read_safetensors(run_dir.join("model.safetensors")).expect("weights");
    w.sort_by(|a, b| a.0.cmp(&b.0));
    w
}

#[test]
fn training_on_2_and_4_ranks_matches_one_process_with_the_same_global_batch() {
    let Some(data) = agnews_test_split() else {
        return;
    };
    if !mpirun_available() {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let single = tmp.path().join("single");
    let args = job(data, &single, &[]);
    ok(&wave_dist(
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    ));
    let reference = train_losses(&single);
    assert_eq!(reference.len(), 30);

    for ranks in [2, 4] {
        let run = tmp.path().join(format!("ranks-{ranks}"));
        let out = mpirun()
            .args(["-n", &ranks.to_string(), env!("CARGO_BIN_EXE_wave-dist")])
            .args(job(data, &run, &[]))
            .output()
            .expect("mpirun");
        ok(&out);
        let losses = train_losses(&run);
        assert_eq!(
            losses.len(),
            30,
            "{ranks} ranks: one loss line per step from rank 0 only"
        );
        for ((step, a), (_, b)) in reference.iter().zip(&losses) {
            assert!(
                (a - b).abs() <= 1e-4 * a.abs(),
                "{ranks} ranks, step {step}: loss {b} vs {a} in one process"
            );
        }
        for ((name, a), (_, b)) in weights(&single).iter().zip(weights(&run)) {
            let diff = (a - &b).abs().max().double_value(&[]);
            assert!(
                diff <= 1e-4,
                "{ranks} ranks: parameter {name} differs by {diff}"
            );
        }
    }
}

#[test]
fn a_rank_with_a_different_config_stops_every_rank_naming_the_key() {
    let Some(data) = agnews_test_split() else {
        return;
    };
    if !mpirun_available() {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let run = tmp.path().join("run");
    let bin = env!("CARGO_BIN_EXE_wave-dist");
    // MPMD launch: rank 0 and rank 1 get different learning rates.
    let started = Instant::now();
    let out = mpirun()
        .args(["-n", "1", bin])
        .args(job(data, &run, &["train.lr=0.001"]))
        .arg(":")
        .args(["-n", "1", bin])
        .args(job(data, &run, &["train.lr=0.002"]))
        .output()
        .expect("mpirun");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "the job must fail:\n{text}");
    assert!(
        text.contains("train.lr"),
        "the message names the differing key:\n{text}"
    );
    assert!(!text.contains("panicked"), "{text}");
    assert!(started.elapsed() < Duration::from_secs(60));
    assert!(!run.join("metrics.jsonl").exists(), "no step may run");
}

#[test]
fn killing_one_rank_ends_every_rank_within_60_s_naming_it() {
    let Some(data) = agnews_test_split() else {
        return;
    };
    if !mpirun_available() {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let run = tmp.path().join("killed-run");
    let child = mpirun()
        .args(["-n", "2", env!("CARGO_BIN_EXE_wave-dist")])
        .args(job(
            data,
            &run,
            &["train.max_steps=100000", "train.log_every_steps=10"],
        ))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("mpirun");
    // Wait until training runs, then kill -9 one rank (a process whose command line names this run).
    let deadline = Instant::now() + Duration::from_secs(60);
    while !run.join("metrics.jsonl").exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_millis(500));
    let pgrep = Command::new("pgrep")
        .args(["-f", run.to_str().expect("utf-8")])
        .output()
        .expect("pgrep");
    let pids: Vec<String> = String::from_utf8_lossy(&pgrep.stdout)
        .lines()
        .map(str::to_string)
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.trim() == "wave-dist")
        })
        .collect();
    assert_eq!(pids.len(), 2, "two ranks running: {pids:?}");
    let victim = pids.last().expect("a rank");
    let killed_at = Instant::now();
    assert!(Command::new("kill")
        .args(["-9", victim])
        .status()
        .expect("kill")
        .success());
    let out: Output = child.wait_with_output().expect("mpirun ends");
    assert!(
        killed_at.elapsed() < Duration::from_secs(60),
        "took {:?}",
        killed_at.elapsed()
    );
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "the job must fail:\n{text}");
    assert!(text.contains("rank"), "the message names the rank:\n{text}");
    for pid in &pids {
        let alive = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|s| s.split_whitespace().nth(2).is_some_and(|st| st != "Z"));
        assert!(!alive, "rank process {pid} still running");
    }
}

#[test]
fn a_time_budget_stops_every_rank_at_the_same_step() {
    let Some(data) = agnews_test_split() else {
        return;
    };
    if !mpirun_available() {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let run = tmp.path().join("budget");
    let started = Instant::now();
    let out = mpirun()
        .args(["-n", "2", env!("CARGO_BIN_EXE_wave-dist")])
        .args(job(
            data,
            &run,
            &["train.max_steps=1000000", "train.max_seconds=2"],
        ))
        .output()
        .expect("mpirun");
    let steps = summary(&ok(&out))["steps"].as_u64().expect("steps");
    assert!(
        steps > 0 && steps < 1_000_000,
        "stopped by the budget after {steps} steps"
    );
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "took {:?}",
        started.elapsed()
    );
}
