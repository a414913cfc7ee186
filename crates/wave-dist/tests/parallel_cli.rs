//! `mpirun -n N wave-dist train`: data parallelism as a user launches it, with real MPI ranks.

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::*;
use wave_testkit::SpawnCaptured;

/// Smoke-config arguments for 30 steps, logging every step. Dropout stays on (0.1): its masks are
/// keyed by sample and position, so they do not depend on which rank holds a sample.
fn job(data: &Path, run_dir: &Path, extra: &[&str]) -> Vec<String> {
    let sets = [
        // Adam divides by sqrt(v): the last-bit differences of summing gradients in another order
        // move near-zero-gradient parameters by whole steps. At the smoke config's lr = 1e-2 that
        // drift reaches 1e-4 within 30 steps; at 3e-3 it stays well below.
        "train.lr=3e-3",
        "train.max_steps=30",
        "train.log_every_steps=1",
        "checkpoint.every_steps=0",
    ];
    let all: Vec<&str> = sets.iter().chain(extra).copied().collect();
    smoke_train_args(data, run_dir, &all)
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
        .spawn_captured()
        .expect("mpirun");
    // Wait until training runs, then kill -9 one rank (a process whose command line names this run).
    let deadline = Instant::now() + Duration::from_secs(60);
    while !run.join("metrics.jsonl").exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_millis(500));
    let pids = rank_pids(&run);
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
    // wave-dist's own words, not only mpirun's: the survivor names the rank that died.
    let named = text
        .lines()
        .find(|l| l.contains(&format!("(pid {victim} on this host) has exited")))
        .unwrap_or_else(|| panic!("no survivor named the dead rank:\n{text}"));
    assert!(named.starts_with("wave-dist: rank "), "{named}");
    for pid in &pids {
        let alive = || {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .is_ok_and(|s| s.split_whitespace().nth(2).is_some_and(|st| st != "Z"))
        };
        while alive() && killed_at.elapsed() < Duration::from_secs(60) {
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(
            !alive(),
            "rank process {pid} still running 60 s after the kill"
        );
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

#[test]
fn a_checkpoint_written_at_4_ranks_resumes_at_2_with_losses_within_1e_5_of_the_uninterrupted_run() {
    let Some(data) = agnews_test_split() else {
        return;
    };
    if !mpirun_available() {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let ckpt = tmp.path().join("ckpt");
    let ckpt_set = format!("checkpoint.uri={:?}", ckpt.to_str().expect("utf-8"));
    let mpi = |ranks: usize, run: &Path, extra: &[&str]| {
        ok(&mpirun()
            .args(["-n", &ranks.to_string(), env!("CARGO_BIN_EXE_wave-dist")])
            .args(job(data, run, extra))
            .output()
            .expect("mpirun"))
    };
    // Same 30-step schedule everywhere; the 4-rank run leaves a checkpoint at step 15.
    let every = ["checkpoint.every_steps=15", "checkpoint.keep_last=0"];
    mpi(
        4,
        &tmp.path().join("four"),
        &[&ckpt_set, every[0], every[1]],
    );
    let resumed = tmp.path().join("resumed");
    mpi(
        2,
        &resumed,
        &[&ckpt_set, every[0], every[1], "train.resume=15"],
    );
    let whole = tmp.path().join("whole");
    mpi(2, &whole, &[]);
    let tail: Vec<(u64, f64)> = train_losses(&whole)
        .into_iter()
        .filter(|(s, _)| *s > 15)
        .collect();
    let got = train_losses(&resumed);
    assert_eq!(got.len(), tail.len(), "steps 16..30 logged");
    for ((step, a), (_, b)) in tail.iter().zip(&got) {
        assert!(
            (a - b).abs() <= 1e-5 * a.abs(),
            "step {step}: {b} resumed vs {a} uninterrupted"
        );
    }
    let (w_whole, w_resumed) = (weights(&whole), weights(&resumed));
    assert_eq!(w_whole.len(), w_resumed.len());
    for ((name, a), (_, b)) in w_whole.iter().zip(&w_resumed) {
        // The first 15 steps summed gradients over 4 ranks, the reference over 2: last-bit
        // differences that Adam's normalisation lifts to ~1e-5 on rarely seen embedding rows.
        let diff = (a - b).abs().max().double_value(&[]);
        assert!(diff <= 1e-4, "parameter {name} differs by {diff}");
    }
}

#[test]
fn rank_0_decides_the_resume_and_ranks_that_cannot_see_the_checkpoint_follow_it() {
    let Some(data) = agnews_test_split() else {
        return;
    };
    if !mpirun_available() {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    // Two "nodes": each rank runs in its own folder, and the checkpoint root `ckpt` is relative,
    // so only rank 0's node holds the checkpoints (a node-local root).
    let (node0, node1) = (tmp.path().join("node0"), tmp.path().join("node1"));
    std::fs::create_dir_all(&node0).expect("node0");
    std::fs::create_dir_all(&node1).expect("node1");
    let config = workspace_root().join("configs/smoke.toml");
    let args = |extra: &[&str]| {
        let mut sets = vec![
            format!("data.uri={:?}", data.to_str().expect("utf-8")),
            "train.run_dir=\"run\"".to_string(),
            "checkpoint.uri=\"ckpt\"".to_string(),
            "train.lr=3e-3".to_string(),
            "train.max_steps=30".to_string(),
            "train.log_every_steps=1".to_string(),
            "checkpoint.every_steps=15".to_string(),
            "checkpoint.keep_last=0".to_string(),
        ];
        sets.extend(extra.iter().map(|s| s.to_string()));
        let mut a = vec![
            "train".to_string(),
            "--config".into(),
            config.to_str().expect("utf-8").into(),
        ];
        a.extend(set_args(&sets));
        a
    };
    let bin = env!("CARGO_BIN_EXE_wave-dist");
    // One process on node 0 trains 30 steps, leaving checkpoints at 15 and 30 there.
    let single = std::process::Command::new(bin)
        .args(args(&[]))
        .current_dir(&node0)
        .output()
        .expect("single");
    ok(&single);
    let reference = train_losses(&node0.join("run"));
    std::fs::rename(node0.join("run"), tmp.path().join("single-run")).expect("move run");
    // Resume from step 15 on two ranks, one per node.
    let resume = args(&["train.resume=15"]);
    let out = mpirun()
        .args(["-n", "1", "-wdir", node0.to_str().expect("utf-8"), bin])
        .args(&resume)
        .arg(":")
        .args(["-n", "1", "-wdir", node1.to_str().expect("utf-8"), bin])
        .args(&resume)
        .output()
        .expect("mpirun");
    ok(&out);
    assert!(
        !node1.join("ckpt").join("step-00000015").exists(),
        "rank 1 never had the checkpoint"
    );
    let resumed = train_losses(&node0.join("run"));
    let tail: Vec<&(u64, f64)> = reference.iter().filter(|(s, _)| *s > 15).collect();
    assert_eq!(resumed.len(), tail.len(), "steps 16..30");
    for ((step, a), (_, b)) in tail.iter().map(|p| (p.0, p.1)).zip(&resumed) {
        assert!(
            (a - b).abs() <= 1e-4 * a.abs(),
            "step {step}: 2 ranks from rank 0's checkpoint {b}, one process {a}"
        );
    }
}
