//! Checkpoints as a user meets them: `wave-dist train` saving through wave-ckpt to local disk and
//! S3, resuming (also at another world size), pre-emption by SIGTERM, `kill -9` at random moments,
//! and `wave-dist checkpoint ls|verify` on what the trainer wrote.

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;
use wave_testkit::{Captured, SpawnCaptured, Weed};

/// `train --config configs/smoke.toml` with `data.uri`, `train.run_dir` and `extra` overrides.
fn train(data: &Path, run_dir: &Path, extra: &[&str]) -> Output {
    let args = smoke_train_args(data, run_dir, extra);
    wave_dist(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

/// The trainer as a child process (stdout/stderr captured) for signals and kills.
fn spawn_train(data: &Path, run_dir: &Path, extra: &[&str]) -> Captured {
    Command::new(env!("CARGO_BIN_EXE_wave-dist"))
        .args(smoke_train_args(data, run_dir, extra))
        .current_dir(workspace_root())
        .env("WAVE_LOG", "info")
        .stdin(Stdio::null())
        .spawn_captured()
        .expect("spawn wave-dist train")
}

fn set(key: &str, path: &Path) -> String {
    format!("{key}={:?}", path.to_str().expect("utf-8"))
}

/// The step `<root>/latest` names (local disk), if any.
fn latest_step(root: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(root.join("latest")).ok()?;
    serde_json::from_str::<serde_json::Value>(&text).ok()?["step"].as_u64()
}

fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn weights(run_dir: &Path) -> Vec<u8> {
    std::fs::read(run_dir.join("model.safetensors")).expect("final weights")
}

/// `mpirun --oversubscribe -n <ranks> wave-dist train …` to completion.
fn train_mpi(ranks: usize, data: &Path, run_dir: &Path, extra: &[&str]) -> Output {
    mpirun()
        .args(["-n", &ranks.to_string(), env!("CARGO_BIN_EXE_wave-dist")])
        .args(smoke_train_args(data, run_dir, extra))
        .env("WAVE_LOG", "info")
        .output()
        .expect("run mpirun")
}

#[test]
fn resuming_on_2_ranks_continues_the_uninterrupted_trajectory_exactly() {
    let Some(data) = agnews_test_split() else {
        return;
    };
    if !mpirun_available() {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let (full, resumed, ckpt) = (
        tmp.path().join("full"),
        tmp.path().join("resumed"),
        tmp.path().join("ckpt"),
    );
    let common = [
        set("checkpoint.uri", &ckpt),
        "train.max_steps=20".into(),
        "checkpoint.every_steps=10".into(),
        "checkpoint.keep_last=0".into(),
    ];
    let mut extra: Vec<&str> = common.iter().map(String::as_str).collect();
    ok(&train_mpi(2, data, &full, &extra));
    extra.push("train.resume=10");
    ok(&train_mpi(2, data, &resumed, &extra));

    let tail: Vec<(u64, f64)> = train_losses(&full)
        .into_iter()
        .filter(|(s, _)| *s > 10)
        .collect();
    assert_eq!(
        train_losses(&resumed),
        tail,
        "losses after the resume point must be bit-identical"
    );
    assert_eq!(
        weights(&full),
        weights(&resumed),
        "final parameters must be bit-identical"
    );
}

#[test]
fn a_checkpoint_written_at_2_ranks_resumes_at_1_rank_within_the_same_epoch() {
    let Some(data) = agnews_test_split() else {
        return;
    };
    if !mpirun_available() {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let ckpt = tmp.path().join("ckpt");
    let uri = set("checkpoint.uri", &ckpt);
    ok(&train_mpi(
        2,
        data,
        &tmp.path().join("two"),
        &[&uri, "train.max_steps=10", "checkpoint.every_steps=0"],
    ));
    assert_eq!(latest_step(&ckpt), Some(10));

    let one = tmp.path().join("one");
    let out = train(
        data,
        &one,
        &[
            &uri,
            "train.max_steps=20",
            "train.resume=\"auto\"",
            "train.log_every_steps=5",
        ],
    );
    let stdout = ok(&out);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("different world size"),
        "the reshard is reported"
    );
    assert_eq!(summary(&stdout)["steps"], 20);
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(one.join("metrics.jsonl"))
        .expect("metrics")
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .filter(|v: &serde_json::Value| v["kind"] == "train")
        .collect();
    assert_eq!(
        lines.first().and_then(|v| v["step"].as_u64()),
        Some(15),
        "resumed after step 10"
    );
    assert!(
        lines.iter().all(|v| v["epoch"] == 0),
        "still in the first epoch: {lines:?}"
    );
    assert_eq!(latest_step(&ckpt), Some(20));
}

#[test]
fn kill_9_at_random_moments_while_saving_leaves_a_verified_latest_that_resumes() {
    let Some(data) = agnews_test_split() else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let ckpt = tmp.path().join("ckpt");
    let uri = set("checkpoint.uri", &ckpt);
    let root = ckpt.to_str().expect("utf-8");
    let extra = [
        uri.as_str(),
        "train.max_steps=100000",
        "checkpoint.every_steps=1",
        "checkpoint.keep_last=2",
        "train.eval_every_steps=0",
        "train.resume=\"auto\"",
    ];
    // A cheap pseudo-random source: the clock's nanoseconds.
    let jitter = || {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        Duration::from_millis(u64::from(nanos / 1000) % 400)
    };
    let mut previous = None;
    for round in 0..10 {
        // Each round resumes from what the previous kill left, so every round also proves that
        // a resume from it runs: it must commit a newer step before being killed again.
        let mut child = spawn_train(data, &tmp.path().join("run"), &extra);
        let seen = previous;
        wait_for("a new committed step", Duration::from_secs(60), || {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("trainer exited early in round {round}: {status:?}");
            }
            latest_step(&ckpt) > seen
        });
        std::thread::sleep(jitter());
        child.kill().expect("kill -9");
        child.wait_with_output().expect("wait");
        let verified = ok(&wave_dist(&["checkpoint", "verify", root]));
        assert!(verified.contains(": ok"), "round {round}: {verified}");
        previous = latest_step(&ckpt);
        assert!(previous > seen, "round {round}: latest moved forward");
    }
    let last = previous.expect("a committed step");
    let finish = format!("train.max_steps={}", last + 2);
    let out = train(
        data,
        &tmp.path().join("run"),
        &[
            &uri,
            &finish,
            "checkpoint.every_steps=1",
            "train.resume=\"auto\"",
        ],
    );
    assert_eq!(summary(&ok(&out))["steps"], last + 2);
}

#[test]
fn sigterm_commits_a_final_checkpoint_exits_0_and_resume_continues_from_it() {
    let Some(data) = agnews_test_split() else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let (ckpt, run) = (tmp.path().join("ckpt"), tmp.path().join("run"));
    let uri = set("checkpoint.uri", &ckpt);
    let child = spawn_train(
        data,
        &run,
        &[
            &uri,
            "train.max_steps=100000",
            "checkpoint.every_steps=0",
            "train.eval_every_steps=0",
        ],
    );
    wait_for("the first metrics line", Duration::from_secs(60), || {
        has_train_line(&run)
    });
    assert_eq!(
        latest_step(&ckpt),
        None,
        "no periodic checkpoints in this run"
    );
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill -TERM");
    assert!(status.success());
    let out = child.wait_with_output().expect("wait");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "a pre-empted run that saved exits 0: {:?}\n{stderr}",
        out.status
    );
    assert!(stderr.contains("SIGTERM"), "says what happened:\n{stderr}");
    let step = latest_step(&ckpt).expect("a final checkpoint is committed");
    assert!((5..100000).contains(&step), "step {step}");
    ok(&wave_dist(&[
        "checkpoint",
        "verify",
        ckpt.to_str().expect("utf-8"),
    ]));

    let resumed = tmp.path().join("resumed");
    let target = format!("train.max_steps={}", step + 5);
    let out = train(
        data,
        &resumed,
        &[
            &uri,
            &target,
            "train.resume=\"auto\"",
            "train.log_every_steps=1",
        ],
    );
    assert_eq!(summary(&ok(&out))["steps"], step + 5);
    assert_eq!(
        train_losses(&resumed).first().map(|(s, _)| *s),
        Some(step + 1),
        "continues after the saved step"
    );
}

/// Whether the run has written a train metrics line yet (the file may hold a partial line).
fn has_train_line(run_dir: &Path) -> bool {
    std::fs::read_to_string(run_dir.join("metrics.jsonl"))
        .is_ok_and(|t| t.contains("\"kind\":\"train\""))
}

#[test]
fn a_modified_object_fails_verify_and_resume_naming_the_object() {
    let Some(data) = agnews_test_split() else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let ckpt = tmp.path().join("ckpt");
    let uri = set("checkpoint.uri", &ckpt);
    ok(&train(
        data,
        &tmp.path().join("a"),
        &[&uri, "train.max_steps=5"],
    ));
    let object = ckpt.join("step-00000005/optimizer.safetensors");
    let mut bytes = std::fs::read(&object).expect("object");
    let last = bytes.len() - 1;
    bytes[last] ^= 0x55;
    std::fs::write(&object, bytes).expect("modify");

    fails_naming(
        &wave_dist(&["checkpoint", "verify", ckpt.to_str().expect("utf-8")]),
        &["optimizer.safetensors", "step-00000005"],
    );
    fails_naming(
        &train(
            data,
            &tmp.path().join("b"),
            &[&uri, "train.max_steps=10", "train.resume=\"auto\""],
        ),
        &["optimizer.safetensors", "step-00000005"],
    );
}

#[test]
fn resume_accepts_a_step_folder_url_from_another_root() {
    let Some(data) = agnews_test_split() else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let (old, new) = (tmp.path().join("old"), tmp.path().join("new"));
    ok(&train(
        data,
        &tmp.path().join("a"),
        &[
            &set("checkpoint.uri", &old),
            "train.max_steps=10",
            "checkpoint.every_steps=5",
            "checkpoint.keep_last=0",
        ],
    ));
    let from = format!("train.resume=\"file://{}/step-00000005\"", old.display());
    let out = train(
        data,
        &tmp.path().join("b"),
        &[&set("checkpoint.uri", &new), "train.max_steps=10", &from],
    );
    assert_eq!(summary(&ok(&out))["steps"], 10);
    assert_eq!(
        latest_step(&new),
        Some(10),
        "new checkpoints go to checkpoint.uri"
    );
}

// ---- S3 -------------------------------------------------------------------------------------

/// Recognisable fake credentials; SeaweedFS accepts any.
const FAKE_KEY_ID: &str = "AKIAWAVETESTKEYID0001";
/// The secret that must never show up in output.
const FAKE_SECRET: &str = "wAvEsEcReT/DoNotLog+4f7c2a9e1b";

/// wave-dist with the S3 environment pointing at `weed` (fake credentials).
fn s3_command(weed: &Weed, args: &[String]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wave-dist"));
    cmd.args(args)
        .current_dir(workspace_root())
        .env("WAVE_LOG", "debug")
        .envs(weed.s3_env(FAKE_KEY_ID, FAKE_SECRET))
        .stdin(Stdio::null());
    cmd
}

/// Runs wave-dist against `weed` to completion.
fn s3_wave_dist(weed: &Weed, args: &[String]) -> Output {
    s3_command(weed, args).output().expect("run wave-dist")
}

/// The step `latest` names in `uri`, from `checkpoint ls`.
fn s3_latest(weed: &Weed, uri: &str) -> Option<u64> {
    let out = s3_wave_dist(weed, &["checkpoint".into(), "ls".into(), uri.into()]);
    let listing = String::from_utf8_lossy(&out.stdout).into_owned();
    listing
        .lines()
        .find(|l| l.contains(" latest "))
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
}

fn no_credentials(out: &Output) {
    for text in [
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    ] {
        assert!(
            !text.contains(FAKE_SECRET) && !text.contains(FAKE_KEY_ID),
            "credentials leaked:\n{text}"
        );
    }
}

#[test]
fn training_saves_to_s3_ls_lists_the_steps_and_resume_from_s3_continues() {
    let Some(data) = agnews_test_split() else {
        return;
    };
    let Some(weed) = Weed::start() else { return };
    let tmp = tempfile::tempdir().expect("tempdir");
    let uri = "s3://wave-test/run";
    let first = smoke_train_args(
        data,
        &tmp.path().join("a"),
        &[
            &format!("checkpoint.uri={uri:?}"),
            "train.max_steps=20",
            "checkpoint.every_steps=10",
        ],
    );
    let out = s3_wave_dist(&weed, &first);
    no_credentials(&out);
    ok(&out);

    let out = s3_wave_dist(&weed, &["checkpoint".into(), "ls".into(), uri.into()]);
    no_credentials(&out);
    let listing = ok(&out);
    for step in ["step-00000010", "step-00000020"] {
        assert!(listing.contains(step), "ls lists {step}:\n{listing}");
    }
    assert!(
        listing
            .lines()
            .any(|l| l.contains("latest") && l.contains("step-00000020")),
        "{listing}"
    );

    let second = smoke_train_args(
        data,
        &tmp.path().join("b"),
        &[
            &format!("checkpoint.uri={uri:?}"),
            "train.max_steps=30",
            "train.resume=\"auto\"",
        ],
    );
    let out = s3_wave_dist(&weed, &second);
    no_credentials(&out);
    assert_eq!(summary(&ok(&out))["steps"], 30);
    assert!(String::from_utf8_lossy(&out.stderr).contains("resumed"));
    let listing = ok(&s3_wave_dist(
        &weed,
        &["checkpoint".into(), "ls".into(), uri.into()],
    ));
    assert!(
        listing
            .lines()
            .any(|l| l.contains("latest") && l.contains("step-00000030")),
        "{listing}"
    );
}

#[test]
fn a_20_s_object_store_outage_mid_run_neither_stops_training_nor_corrupts_a_checkpoint() {
    let Some(data) = agnews_test_split() else {
        return;
    };
    let Some(mut weed) = Weed::start() else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let (uri, run) = ("s3://wave-test/outage", tmp.path().join("run"));
    let args = smoke_train_args(
        data,
        &run,
        &[
            &format!("checkpoint.uri={uri:?}"),
            "train.max_steps=100000",
            "checkpoint.every_steps=25",
            "train.eval_every_steps=0",
        ],
    );
    let child = s3_command(&weed, &args)
        .spawn_captured()
        .expect("spawn trainer");
    wait_for("a first committed step", Duration::from_secs(60), || {
        s3_latest(&weed, uri).is_some()
    });
    weed.kill();
    std::thread::sleep(Duration::from_secs(20));
    weed.restart();
    // Let a save go through after the outage, then pre-empt: the final save must commit.
    let after_outage = s3_latest(&weed, uri);
    wait_for("a save after the outage", Duration::from_secs(120), || {
        s3_latest(&weed, uri) > after_outage
    });
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill -TERM");
    let out = child.wait_with_output().expect("wait");
    no_credentials(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "training survived the outage: {:?}\n{stderr}",
        out.status
    );
    assert!(
        stderr.contains("retrying") || stderr.contains("checkpoint save failed"),
        "the outage is visible in the log:\n{stderr}"
    );
    let verified = ok(&s3_wave_dist(
        &weed,
        &[
            "checkpoint".into(),
            "verify".into(),
            uri.into(),
            "--all".into(),
        ],
    ));
    assert!(
        verified.lines().count() >= 2
            && verified
                .lines()
                .all(|l| l.ends_with(")") && l.contains(": ok")),
        "{verified}"
    );
}

#[test]
fn with_on_failure_stop_a_save_that_keeps_failing_stops_training_naming_step_and_url() {
    let Some(data) = agnews_test_split() else {
        return;
    };
    // A loopback port nobody listens on: every request is refused, so the save fails after the
    // saver's retries (about 20 s).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let tmp = tempfile::tempdir().expect("tempdir");
    let args = smoke_train_args(
        data,
        &tmp.path().join("run"),
        &[
            "checkpoint.uri=\"s3://wave-test/dead\"",
            "checkpoint.on_failure=\"stop\"",
            "checkpoint.every_steps=5",
            "train.max_steps=100000",
            "train.eval_every_steps=0",
        ],
    );
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_wave-dist"))
        .args(args)
        .current_dir(workspace_root())
        .env("AWS_ENDPOINT_URL", format!("http://127.0.0.1:{port}"))
        .envs([
            ("AWS_ALLOW_HTTP", "true"),
            ("AWS_ACCESS_KEY_ID", FAKE_KEY_ID),
            ("AWS_SECRET_ACCESS_KEY", FAKE_SECRET),
            ("AWS_REGION", "us-east-1"),
        ])
        .output()
        .expect("run wave-dist");
    assert!(
        started.elapsed() < Duration::from_secs(90),
        "took {:?}",
        started.elapsed()
    );
    no_credentials(&out);
    fails_naming(&out, &["s3://wave-test/dead", "saving step 5 failed"]);
}

// ---- interop --------------------------------------------------------------------------------

#[test]
fn an_exported_checkpoint_gives_the_same_logits_in_pytorch() {
    let Some(data) = agnews_test_split() else {
        return;
    };
    let Some(python) = wave_testkit::venv_bin("python") else {
        wave_testkit::missing(
            "the set-up venv's python with torch (WAVE_VENV, from launch/env.sh)",
        );
        return;
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let (run, ckpt, export) = (
        tmp.path().join("run"),
        tmp.path().join("ckpt"),
        tmp.path().join("export"),
    );
    ok(&train(
        data,
        &run,
        &[&set("checkpoint.uri", &ckpt), "train.max_steps=10"],
    ));
    let p = |path: &Path| path.to_str().expect("utf-8").to_string();
    ok(&wave_dist(&[
        "checkpoint",
        "export",
        &p(&ckpt),
        "--out",
        &p(&export),
    ]));
    let dump = tmp.path().join("rust.json");
    let weights = export.join("model.safetensors");
    let config = run.join("config.toml");
    ok(&wave_dist(&[
        "eval",
        "--config",
        &p(&config),
        "--weights",
        &p(&weights),
        "--dump-logits",
        &p(&dump),
        "--dump-rows",
        "6",
    ]));
    let peer = Command::new(python)
        .arg("bench/peer_logits.py")
        .arg(&export)
        .arg(&dump)
        .current_dir(workspace_root())
        .output()
        .expect("run python");
    assert!(
        peer.status.success(),
        "peer_logits.py failed:\n{}",
        String::from_utf8_lossy(&peer.stderr)
    );

    let rows = |v: &serde_json::Value| -> Vec<Vec<f64>> {
        v["logits"]
            .as_array()
            .expect("rows")
            .iter()
            .map(|r| {
                r.as_array()
                    .expect("row")
                    .iter()
                    .map(|x| x.as_f64().expect("number"))
                    .collect()
            })
            .collect()
    };
    let ours = rows(&serde_json::from_slice(&std::fs::read(&dump).expect("dump")).expect("json"));
    let theirs = rows(&serde_json::from_slice(&peer.stdout).expect("peer json"));
    assert_eq!(
        (ours.len(), ours[0].len()),
        (6, 4),
        "6 rows of 4 AG News classes"
    );
    assert_eq!(ours.len(), theirs.len());
    for (i, (a, b)) in ours.iter().zip(&theirs).enumerate() {
        for (x, y) in a.iter().zip(b) {
            assert!(
                (x - y).abs() <= 1e-4,
                "row {i}: wave-dist {a:?} vs PyTorch {b:?}"
            );
        }
    }
}

#[test]
fn on_2_ranks_a_store_down_longer_than_the_collective_timeout_does_not_stop_training() {
    let Some(data) = agnews_test_split() else {
        return;
    };
    if !mpirun_available() {
        return;
    }
    let Some(mut weed) = Weed::start() else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let (uri, run) = ("s3://wave-test/outage-2", tmp.path().join("run"));
    let args = smoke_train_args(
        data,
        &run,
        &[
            &format!("checkpoint.uri={uri:?}"),
            "train.max_steps=100000",
            "checkpoint.every_steps=5",
            "train.eval_every_steps=0",
            "train.log_every_steps=1",
            "comm.timeout_s=20",
        ],
    );
    let child = mpirun()
        .args(["-n", "2", env!("CARGO_BIN_EXE_wave-dist")])
        .args(&args)
        .envs(weed.s3_env(FAKE_KEY_ID, FAKE_SECRET))
        .env("WAVE_LOG", "info")
        .spawn_captured()
        .expect("spawn mpirun");
    wait_for("a first committed step", Duration::from_secs(60), || {
        s3_latest(&weed, uri).is_some()
    });
    weed.kill();
    let down_from = logged_steps(&run).last().copied().unwrap_or(0);
    // Down for longer than comm.timeout_s: rank 0 must never make rank 1 wait that long.
    std::thread::sleep(Duration::from_secs(25));
    let down_to = logged_steps(&run).last().copied().unwrap_or(0);
    weed.restart();
    let after_outage = s3_latest(&weed, uri);
    wait_for("a save after the outage", Duration::from_secs(120), || {
        s3_latest(&weed, uri) > after_outage
    });
    for pid in rank_pids(&run) {
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill -TERM");
    }
    let out = child.wait_with_output().expect("wait");
    no_credentials(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "both ranks survived the outage: {:?}\n{stderr}",
        out.status
    );
    assert!(
        down_to > down_from + 20,
        "training went on while the store was down (steps {down_from} → {down_to})"
    );
    assert!(
        stderr.contains("checkpoint skipped") || stderr.contains("checkpoint save failed"),
        "the outage is visible in the log:\n{stderr}"
    );
    let verified = ok(&s3_wave_dist(
        &weed,
        &[
            "checkpoint".into(),
            "verify".into(),
            uri.into(),
            "--all".into(),
        ],
    ));
    assert!(verified.lines().all(|l| l.contains(": ok")), "{verified}");
}

#[test]
fn a_fresh_run_into_a_root_holding_another_runs_checkpoints_is_refused_unless_told_to_overwrite() {
    let Some(data) = agnews_test_split() else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let ckpt = tmp.path().join("ckpt");
    let uri = set("checkpoint.uri", &ckpt);
    let short = [
        "train.max_steps=10",
        "checkpoint.every_steps=5",
        "checkpoint.keep_last=0",
    ];
    let first = tmp.path().join("first");
    ok(&train(data, &first, &[&uri, short[0], short[1], short[2]]));
    assert_eq!(latest_step(&ckpt), Some(10));

    let second = tmp.path().join("second");
    let out = train(
        data,
        &second,
        &[&uri, short[0], short[1], short[2], "train.seed=7"],
    );
    fails_naming(
        &out,
        &[
            ckpt.to_str().expect("utf-8"),
            "latest step 10",
            "train.resume = \"auto\"",
            "checkpoint.overwrite",
        ],
    );
    assert!(
        !second.join("metrics.jsonl").exists(),
        "nothing written by the refused run"
    );
    assert_eq!(latest_step(&ckpt), Some(10));

    ok(&train(
        data,
        &second,
        &[
            &uri,
            "train.max_steps=6",
            "checkpoint.every_steps=3",
            "checkpoint.keep_last=0",
            "train.seed=7",
            "checkpoint.overwrite=true",
        ],
    ));
    let listing = ok(&wave_dist(&[
        "checkpoint",
        "ls",
        ckpt.to_str().expect("utf-8"),
    ]));
    assert!(
        listing.contains("step-00000006") && listing.contains("step-00000003"),
        "{listing}"
    );
    assert!(
        !listing.contains("step-00000010"),
        "the first run's steps are gone:\n{listing}"
    );
    assert_eq!(latest_step(&ckpt), Some(6));
}

#[test]
fn on_2_ranks_a_slow_resetting_failing_then_silent_store_never_ends_the_job() {
    use wave_testkit::{Fault, FaultProxy};
    let Some(data) = agnews_test_split() else {
        return;
    };
    if !mpirun_available() {
        return;
    }
    let Some(weed) = Weed::start() else {
        return;
    };
    let proxy = FaultProxy::start(&weed.endpoint);
    let tmp = tempfile::tempdir().expect("tempdir");
    let (uri, run) = ("s3://wave-test/faults", tmp.path().join("run"));
    let args = smoke_train_args(
        data,
        &run,
        &[
            &format!("checkpoint.uri={uri:?}"),
            "train.max_steps=1000000",
            "train.max_seconds=30",
            "checkpoint.every_steps=5",
            "train.eval_every_steps=0",
            "comm.timeout_s=10",
        ],
    );
    let mut env = weed.s3_env(FAKE_KEY_ID, FAKE_SECRET);
    for (var, value) in env.iter_mut() {
        if *var == "AWS_ENDPOINT_URL" {
            *value = proxy.endpoint();
        }
    }
    let started = Instant::now();
    let child = mpirun()
        .args(["-n", "2", env!("CARGO_BIN_EXE_wave-dist")])
        .args(&args)
        .envs(env)
        .env("WAVE_LOG", "info")
        .spawn_captured()
        .expect("spawn mpirun");
    wait_for("a first committed step", Duration::from_secs(60), || {
        s3_latest(&weed, uri).is_some()
    });
    // Each fault lasts longer than a step; the last one (silence) outlives the run and the
    // 10 s collective timeout.
    for (fault, secs) in [
        (Fault::Latency(Duration::from_secs(3)), 6),
        (Fault::Reset, 4),
        (Fault::HttpStatus(503), 4),
    ] {
        proxy.set(fault);
        std::thread::sleep(Duration::from_secs(secs));
    }
    proxy.set(Fault::Blackhole);
    let out = child.wait_with_output().expect("wait");
    let took = started.elapsed();
    no_credentials(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the job ends normally: {:?}\n{stderr}",
        out.status
    );
    assert!(
        !stderr.contains("did not complete within"),
        "no collective timed out:\n{stderr}"
    );
    assert!(
        stderr.contains("abandoned"),
        "the final upload into the silent store is given up, bounded:\n{stderr}"
    );
    // 30 s of training, then at most 3/4 of the 10 s timeout for the final upload.
    assert!(took < Duration::from_secs(75), "took {took:?}");
    let verified = ok(&s3_wave_dist(
        &weed,
        &[
            "checkpoint".into(),
            "verify".into(),
            uri.into(),
            "--all".into(),
        ],
    ));
    assert!(
        !verified.is_empty() && verified.lines().all(|l| l.contains(": ok")),
        "{verified}"
    );
}
