//! Pre-emption of a multi-rank job: SIGTERM (Kubernetes, `scancel`) or SIGUSR1 (Slurm's
//! `--signal`) reaching one rank or all of them stops every rank at the same step, rank 0 commits a
//! final checkpoint, every rank exits 0, and the job resumes to the uninterrupted trajectory.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use wave_testkit::{Captured, SpawnCaptured};

fn job(data: &Path, run_dir: &Path, ckpt: &Path, extra: &[&str]) -> Vec<String> {
    let ckpt_set = format!("checkpoint.uri={:?}", ckpt.to_str().expect("utf-8"));
    let sets = [
        ckpt_set.as_str(),
        "train.log_every_steps=1",
        "train.eval_every_steps=0",
        "checkpoint.every_steps=0",
        "checkpoint.keep_last=0",
    ];
    let all: Vec<&str> = sets.iter().chain(extra).copied().collect();
    smoke_train_args(data, run_dir, &all)
}

fn spawn_mpi(ranks: usize, args: &[String]) -> Captured {
    mpirun()
        .args(["-n", &ranks.to_string(), env!("CARGO_BIN_EXE_wave-dist")])
        .args(args)
        .env("WAVE_LOG", "info")
        .spawn_captured()
        .expect("mpirun")
}

/// The step at which each rank says it stopped, from the ranks' own log lines.
fn stop_steps(stderr: &str) -> Vec<(u64, u64)> {
    let field = |line: &str, key: &str| -> Option<u64> {
        let rest = line.split(&format!("{key}=")).nth(1)?;
        rest.split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse()
            .ok()
    };
    let mut steps: Vec<(u64, u64)> = stderr
        .lines()
        .filter(|l| l.contains("every rank stopped at this step"))
        .filter_map(|l| Some((field(l, "rank")?, field(l, "step")?)))
        .collect();
    steps.sort_unstable();
    steps
}

/// Runs 2 ranks until step ≥ 8, signals `victims` (indices into the rank PIDs) with `signal`,
/// and checks the agreed stop; returns the step every rank stopped at.
fn preempt(data: &Path, dir: &Path, signal: &str, victims: &[usize]) -> u64 {
    let (run, ckpt) = (dir.join("run"), dir.join("ckpt"));
    let child = spawn_mpi(2, &job(data, &run, &ckpt, &["train.max_steps=100000"]));
    let deadline = Instant::now() + Duration::from_secs(120);
    while logged_steps(&run).len() < 8 {
        assert!(Instant::now() < deadline, "training did not reach step 8");
        std::thread::sleep(Duration::from_millis(50));
    }
    let pids = rank_pids(&run);
    assert_eq!(pids.len(), 2, "two ranks running: {pids:?}");
    let signalled_at = Instant::now();
    for &v in victims {
        assert!(Command::new("kill")
            .args([&format!("-{signal}"), pids[v].as_str()])
            .status()
            .expect("kill")
            .success());
    }
    let out = child.wait_with_output().expect("mpirun ends");
    let took = signalled_at.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "a pre-empted job that saved exits 0 ({:?}):\n{stderr}",
        out.status
    );
    assert!(took < Duration::from_secs(30), "stopping took {took:?}");
    assert!(stderr.contains(signal), "names the signal:\n{stderr}");
    let stops = stop_steps(&stderr);
    assert_eq!(
        stops.len(),
        2,
        "both ranks report where they stopped:\n{stderr}"
    );
    assert_eq!(
        stops[0].1, stops[1].1,
        "every rank stops at the same step: {stops:?}"
    );
    let step = stops[0].1;
    let text = String::from_utf8_lossy(&out.stdout);
    let s = summary(&text);
    assert_eq!(s["steps"], step);
    assert_eq!(s["stopped"], "signal");
    let latest = std::fs::read_to_string(ckpt.join("latest")).expect("latest");
    let latest: serde_json::Value = serde_json::from_str(&latest).expect("latest json");
    assert_eq!(
        latest["step"], step,
        "the final checkpoint is the stop step"
    );
    ok(&wave_dist(&[
        "checkpoint",
        "verify",
        ckpt.to_str().expect("utf-8"),
    ]));
    step
}

#[test]
fn sigterm_to_one_rank_stops_every_rank_at_the_same_step_and_resume_is_identical() {
    let Some(data) = agnews_test_split() else {
        return;
    };
    if !mpirun_available() {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let step = preempt(data, tmp.path(), "TERM", &[1]);

    // Resume to step + 5 and compare with an uninterrupted 2-rank run to the same step.
    let target = format!("train.max_steps={}", step + 5);
    let (run, ckpt) = (tmp.path().join("run"), tmp.path().join("ckpt"));
    let resumed = tmp.path().join("resumed");
    let mut args = job(data, &resumed, &ckpt, &[&target, "train.resume=\"auto\""]);
    ok(&mpirun()
        .args(["-n", "2", env!("CARGO_BIN_EXE_wave-dist")])
        .args(&args)
        .output()
        .expect("mpirun"));
    let whole = tmp.path().join("whole");
    args = job(data, &whole, &tmp.path().join("ckpt-whole"), &[&target]);
    ok(&mpirun()
        .args(["-n", "2", env!("CARGO_BIN_EXE_wave-dist")])
        .args(&args)
        .output()
        .expect("mpirun"));
    let tail: Vec<(u64, f64)> = train_losses(&whole)
        .into_iter()
        .filter(|(s, _)| *s > step)
        .collect();
    assert_eq!(train_losses(&resumed), tail, "losses after the pre-emption");
    assert_eq!(
        std::fs::read(resumed.join("model.safetensors")).expect("weights"),
        std::fs::read(whole.join("model.safetensors")).expect("weights"),
        "final weights equal the uninterrupted run's"
    );
    // The pre-empted run's own metrics end at the stop step.
    assert_eq!(logged_steps(&run).last(), Some(&step));
}

#[test]
fn sigusr1_to_every_rank_stops_them_at_the_same_step_with_a_committed_checkpoint() {
    let Some(data) = agnews_test_split() else {
        return;
    };
    if !mpirun_available() {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    preempt(data, tmp.path(), "USR1", &[0, 1]);
}

#[test]
fn after_a_stop_signal_the_exit_status_is_train_signal_exit_code_for_schedulers_that_must_restart()
{
    let Some(data) = agnews_test_split() else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let (run, ckpt) = (tmp.path().join("run"), tmp.path().join("ckpt"));
    let child = Command::new(env!("CARGO_BIN_EXE_wave-dist"))
        .args(job(
            data,
            &run,
            &ckpt,
            &["train.max_steps=100000", "train.signal_exit_code=75"],
        ))
        .current_dir(workspace_root())
        .spawn_captured()
        .expect("spawn");
    let deadline = Instant::now() + Duration::from_secs(60);
    while logged_steps(&run).len() < 3 {
        assert!(Instant::now() < deadline, "training did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill")
        .success());
    let out = child.wait_with_output().expect("wait");
    assert_eq!(
        out.status.code(),
        Some(75),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let step = summary(&String::from_utf8_lossy(&out.stdout))["steps"]
        .as_u64()
        .expect("steps");
    let latest = std::fs::read_to_string(ckpt.join("latest")).expect("latest committed");
    let latest: serde_json::Value = serde_json::from_str(&latest).expect("latest json");
    assert_eq!(
        latest["step"], step,
        "the final checkpoint was committed before exiting"
    );
}
