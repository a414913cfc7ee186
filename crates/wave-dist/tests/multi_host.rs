//! wave-dist across "hosts": Linux network namespaces on one machine, each with its own address
//! (`wave_testkit::NetLab`), so that what crosses a network really does: `mpirun` reaching its
//! daemons and the ranks exchanging gradients over TCP between hosts, the torchrun / Indexed-Job
//! environment pointing at another host, and a host's link cut in the middle of a run.
//!
//! Every scenario trains the smoke config on AG News' test split (the shared data) with the real
//! binary. Skips (failing under `CI=true`) where namespaces cannot be made, `mpirun` is missing or
//! the shared data is absent. The tests run one at a time: their timing checks assume the machine
//! is not also running another multi-rank job of theirs.
//!
//! Dropout stays on (the smoke config's 0.1): its masks are keyed by sample and position, so 2
//! ranks reproduce 1 rank with it.

mod common;

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use common::*;
use wave_testkit::{record_rank_script, NetLab, RankRecord};

static SERIAL: Mutex<()> = Mutex::new(());

/// The lock that runs these tests one at a time, the prepared data and a two-host lab; `None`
/// (after a skip message) when a prerequisite is missing.
fn two_hosts(needs_mpi: bool) -> Option<(MutexGuard<'static, ()>, &'static Path, NetLab)> {
    let serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let data = agnews_test_split()?;
    if needs_mpi && !mpirun_available() {
        return None;
    }
    let lab = NetLab::start(2)?;
    Some((serial, data, lab))
}

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_wave-dist")
}

/// Waits for `child` (its output piped) at most `limit`; on overrun ends everything the lab
/// started and fails.
fn finish(lab: &NetLab, child: Child, limit: Duration) -> Output {
    let id = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => out.expect("wait for the job"),
        Err(_) => {
            lab.kill_all();
            let out = rx.recv_timeout(Duration::from_secs(20));
            let text = out
                .ok()
                .and_then(Result::ok)
                .map(|o| both(&o))
                .unwrap_or_default();
            panic!("process {id} still ran after {limit:?}; its output:\n{text}");
        }
    }
}

fn both(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `mpirun` placing one rank in each host of `lab`, every rank first printing the address it
/// runs at (`rank R at <ip -o addr line>`) on stderr, then becoming `wave-dist ARGS`.
fn mpirun_wave_dist(lab: &NetLab, args: &[String], record: Option<&Path>) -> Command {
    let mut cmd = lab.mpirun();
    cmd.current_dir(workspace_root()).env("WAVE_LOG", "info");
    if let Some(dir) = record {
        cmd.arg(record_rank_script()).arg(dir);
    }
    cmd.args([
        "sh",
        "-c",
        "echo \"rank $OMPI_COMM_WORLD_RANK at $(ip -4 -o addr show eth0)\" >&2; exec \"$0\" \"$@\"",
    ])
    .arg(bin())
    .args(args)
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    cmd
}

/// Asserts that rank r ran in host r, from the lines `mpirun_wave_dist` makes ranks print.
fn assert_rank_per_host(lab: &NetLab, output: &str) {
    for (rank, host) in lab.hosts().iter().enumerate() {
        let line = output
            .lines()
            .find(|l| l.starts_with(&format!("rank {rank} at ")))
            .unwrap_or_else(|| panic!("rank {rank} did not say where it runs:\n{output}"));
        assert!(
            line.contains(&format!(" {}/24 ", host.addr)),
            "rank {rank} runs in host {rank} ({}): {line}",
            host.addr
        );
    }
}

#[test]
fn mpirun_across_two_hosts_trains_to_the_losses_of_one_process() {
    let Some((_serial, data, lab)) = two_hosts(true) else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let sets = [
        "train.max_steps=30",
        "train.log_every_steps=1",
        "checkpoint.every_steps=0",
    ];
    let single = tmp.path().join("single");
    let args = smoke_train_args(data, &single, &sets);
    ok(&wave_dist(
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    ));
    let reference = train_losses(&single);
    assert_eq!(reference.len(), 30);

    let across = tmp.path().join("across");
    let args = smoke_train_args(data, &across, &sets);
    let out = finish(
        &lab,
        lab.spawn(&mut mpirun_wave_dist(&lab, &args, None)),
        Duration::from_secs(180),
    );
    let text = both(&out);
    assert!(out.status.success(), "the job failed:\n{text}");
    assert_rank_per_host(&lab, &text);
    let losses = train_losses(&across);
    assert_eq!(losses.len(), reference.len(), "one loss line per step");
    for ((step, a), (_, b)) in reference.iter().zip(&losses) {
        assert!(
            (a - b).abs() <= 1e-4 * a.abs(),
            "step {step}: loss {b} across two hosts vs {a} in one process"
        );
    }
    let weights = |dir: &Path| {
        let mut w = tch::Tensor::read_safetensors(dir.join("model.safetensors")).expect("weights");
        w.sort_by(|x, y| x.0.cmp(&y.0));
        w
    };
    let (one, two) = (weights(&single), weights(&across));
    assert_eq!(one.len(), two.len());
    for ((name, a), (_, b)) in one.iter().zip(&two) {
        let diff = (a - b).abs().max().double_value(&[]);
        assert!(diff <= 1e-4, "parameter {name} differs by {diff}");
    }
}

#[test]
fn torchrun_environment_across_hosts_fails_at_once_naming_the_missing_cpu_collective() {
    let Some((_serial, data, lab)) = two_hosts(false) else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let master = lab.host(0).addr.to_string();
    let args = smoke_train_args(data, &tmp.path().join("run"), &[]);
    // Rank 1 first, as a pod that is scheduled before rank 0's; both on CPU, where today only MPI
    // carries collectives (NCCL needs GPUs).
    let started = Instant::now();
    let ranks: Vec<Child> = [1usize, 0]
        .into_iter()
        .map(|rank| {
            let mut cmd = lab.command(rank, bin());
            cmd.args(&args)
                .args(["--device", "cpu"])
                .current_dir(workspace_root())
                .env("RANK", rank.to_string())
                .env("WORLD_SIZE", "2")
                .env("LOCAL_RANK", "0")
                .env("MASTER_ADDR", &master)
                .env("MASTER_PORT", "29500")
                .env("WAVE_LOG", "info")
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            lab.spawn(&mut cmd)
        })
        .collect();
    for (child, rank) in ranks.into_iter().zip([1usize, 0]) {
        let out = finish(&lab, child, Duration::from_secs(60));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "rank {rank}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
        for needle in [
            format!("rank {rank}: backend auto unavailable"),
            "world size 2 (launcher torchrun)".to_string(),
            "needs NCCL".to_string(),
            "an MPI launcher".to_string(),
        ] {
            assert!(
                stderr.contains(&needle),
                "rank {rank} should say {needle:?}:\n{stderr}"
            );
        }
    }
    eprintln!("both ranks exited after {:?}", started.elapsed());
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "no rank waits for a peer it cannot use: {:?}",
        started.elapsed()
    );
}

/// The step `<root>/latest` names, if any.
fn latest_step(root: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(root.join("latest")).ok()?;
    serde_json::from_str::<serde_json::Value>(&text).ok()?["step"].as_u64()
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'))
    })
}

/// The job of the link-cut and SIGTERM scenarios: 120 steps, a checkpoint every 10, resume
/// "auto", collectives limited to `timeout_s`.
fn resumable_job(data: &Path, run: &Path, ckpt: &Path, timeout_s: u64) -> Vec<String> {
    let sets = [
        "train.max_steps=120".to_string(),
        "train.log_every_steps=1".into(),
        "train.eval_every_steps=0".into(),
        "checkpoint.every_steps=10".into(),
        "checkpoint.keep_last=0".into(),
        "train.resume=\"auto\"".into(),
        format!("checkpoint.uri={:?}", ckpt.to_str().expect("utf-8")),
        format!("comm.timeout_s={timeout_s}"),
    ];
    smoke_train_args(
        data,
        run,
        &sets.iter().map(String::as_str).collect::<Vec<_>>(),
    )
}

#[test]
fn cutting_a_hosts_link_ends_every_rank_naming_it_and_the_rerun_resumes_to_identical_weights() {
    let Some((_serial, data, lab)) = two_hosts(true) else {
        return;
    };
    let timeout_s = 10;
    let tmp = tempfile::tempdir().expect("tempdir");

    // The uninterrupted run of the same job, for the final weights.
    let (full_run, full_ckpt) = (tmp.path().join("full"), tmp.path().join("full-ckpt"));
    let job = resumable_job(data, &full_run, &full_ckpt, timeout_s);
    let out = finish(
        &lab,
        lab.spawn(&mut mpirun_wave_dist(&lab, &job, None)),
        Duration::from_secs(300),
    );
    assert!(out.status.success(), "uninterrupted run:\n{}", both(&out));
    let reference = std::fs::read(full_run.join("model.safetensors")).expect("weights");

    // The same job, host 1's link cut once a few checkpoints are committed.
    let (run, ckpt, records) = (
        tmp.path().join("run"),
        tmp.path().join("ckpt"),
        tmp.path().join("ranks"),
    );
    std::fs::create_dir(&records).expect("records folder");
    let job = resumable_job(data, &run, &ckpt, timeout_s);
    let mut mpirun = lab.spawn(&mut mpirun_wave_dist(&lab, &job, Some(&records)));
    let deadline = Instant::now() + Duration::from_secs(120);
    while latest_step(&ckpt).is_none_or(|s| s < 30) {
        assert!(
            Instant::now() < deadline,
            "no checkpoint of step 30 within 120 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let pids: Vec<u32> = (0..2)
        .map(|r| RankRecord::read(&records, r).pid.expect("rank pid"))
        .collect();
    lab.cut(1);
    let cut_at = Instant::now();
    let committed_at_cut = latest_step(&ckpt).expect("a committed step");
    let mut exited = [None::<Duration>; 2];
    while exited.contains(&None) && cut_at.elapsed() < Duration::from_secs(timeout_s + 60) {
        for (rank, &pid) in pids.iter().enumerate() {
            if exited[rank].is_none() && !alive(pid) {
                exited[rank] = Some(cut_at.elapsed());
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // mpirun itself may wait for host 1's unreachable daemon forever: the lab ends it.
    lab.kill_all();
    mpirun.wait().expect("reap mpirun");
    lab.restore(1);

    let last_step = train_losses(&run).last().map_or(0, |(s, _)| *s);
    eprintln!(
        "link cut at step ~{last_step}, last committed step {committed_at_cut} (steps lost: {}); \
         ranks exited {:?} after the cut (limit {timeout_s} s + 10 s)",
        last_step.saturating_sub(committed_at_cut),
        exited
    );
    for (rank, exited) in exited.iter().enumerate() {
        let record = RankRecord::read(&records, rank);
        let after = exited.unwrap_or_else(|| {
            panic!(
                "rank {rank} still ran {timeout_s} s + 60 s after the cut:\n{}",
                record.stderr
            )
        });
        assert!(
            after <= Duration::from_secs(timeout_s + 10),
            "rank {rank} exited {after:?} after the cut:\n{}",
            record.stderr
        );
        let status = record
            .status
            .unwrap_or_else(|| panic!("rank {rank}: no exit status recorded:\n{}", record.stderr));
        assert_ne!(status, 0, "rank {rank} must fail:\n{}", record.stderr);
        eprintln!(
            "rank {rank}: exit status {status}; {}",
            record
                .stderr
                .lines()
                .find(|l| l.starts_with("wave-comm:"))
                .unwrap_or("")
        );
        // wave-dist's own words (through wave-comm), not the launcher's: this rank, the
        // collective it was stuck in, and the peer (an MPI collective cannot tell which peer
        // failed to take part; with two ranks it is the other one).
        let (own, peer) = (
            format!("wave-comm: rank {rank}: "),
            format!(
                "its peer, rank {}, is stuck, slow, dead or unreachable",
                1 - rank
            ),
        );
        assert!(
            record.stderr.lines().any(|l| l.starts_with(&own)
                && l.contains("did not complete within 10.0 s")
                && l.contains(&peer)),
            "rank {rank} names itself, the collective and its peer:\n{}",
            record.stderr
        );
    }

    let verified = ok(&wave_dist(&[
        "checkpoint",
        "verify",
        ckpt.to_str().expect("utf-8"),
        "--all",
    ]));
    assert!(
        verified.lines().count() >= 3 && verified.lines().all(|l| l.contains(": ok")),
        "every committed checkpoint verifies:\n{verified}"
    );

    // The same command again, the link back: it resumes from `latest` and ends where the
    // uninterrupted run ended, bit for bit.
    let out = finish(
        &lab,
        lab.spawn(&mut mpirun_wave_dist(&lab, &job, None)),
        Duration::from_secs(300),
    );
    let text = both(&out);
    assert!(out.status.success(), "the rerun failed:\n{text}");
    assert!(text.contains("resumed"), "the rerun resumed:\n{text}");
    assert_eq!(
        summary(&String::from_utf8_lossy(&out.stdout))["steps"],
        120,
        "{text}"
    );
    assert_eq!(
        std::fs::read(run.join("model.safetensors")).expect("weights"),
        reference,
        "final weights after the cut and the rerun equal the uninterrupted run's"
    );
}

// ---- pre-emption by SIGTERM (needs the trainer's coordinated stop) ----------------------------

/// Which ranks the scheduler signals.
#[derive(Clone, Copy, Debug)]
enum Signalled {
    One(usize),
    All,
}

/// Starts the resumable job across two hosts, sends SIGTERM to the given ranks once a checkpoint
/// is committed, and checks the coordinated stop: every rank exits 0 within the grace period at
/// the same step, that step is committed, and rerunning the command resumes to the weights of an
/// uninterrupted run.
fn sigterm_scenario(signalled: Signalled) {
    let Some((_serial, data, lab)) = two_hosts(true) else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let grace = Duration::from_secs(30);
    let (full_run, full_ckpt) = (tmp.path().join("full"), tmp.path().join("full-ckpt"));
    let out = finish(
        &lab,
        lab.spawn(&mut mpirun_wave_dist(
            &lab,
            &resumable_job(data, &full_run, &full_ckpt, 30),
            None,
        )),
        Duration::from_secs(300),
    );
    assert!(out.status.success(), "uninterrupted run:\n{}", both(&out));

    let (run, ckpt, records) = (
        tmp.path().join("run"),
        tmp.path().join("ckpt"),
        tmp.path().join("ranks"),
    );
    std::fs::create_dir(&records).expect("records folder");
    let job = resumable_job(data, &run, &ckpt, 30);
    let mpirun = lab.spawn(&mut mpirun_wave_dist(&lab, &job, Some(&records)));
    let deadline = Instant::now() + Duration::from_secs(120);
    while latest_step(&ckpt).is_none_or(|s| s < 20) {
        assert!(
            Instant::now() < deadline,
            "no checkpoint of step 20 within 120 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let targets: Vec<usize> = match signalled {
        Signalled::One(rank) => vec![rank],
        Signalled::All => vec![0, 1],
    };
    let logged_at_signal = train_losses(&run).last().map_or(0, |(step, _)| *step);
    let signalled_at = Instant::now();
    for rank in targets {
        let pid = RankRecord::read(&records, rank).pid.expect("rank pid");
        let sent = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("kill");
        assert!(sent.success());
    }
    let out = finish(&lab, mpirun, grace + Duration::from_secs(30));
    let took = signalled_at.elapsed();
    assert!(took <= grace, "stopped within the grace period");
    assert!(
        out.status.success(),
        "{signalled:?}: the job exits 0:\n{}",
        both(&out)
    );
    let steps: Vec<u64> = (0..2)
        .map(|rank| {
            let record = RankRecord::read(&records, rank);
            assert_eq!(record.status, Some(0), "rank {rank}:\n{}", record.stderr);
            summary(&record.stdout)["steps"].as_u64().expect("steps")
        })
        .collect();
    assert_eq!(steps[0], steps[1], "every rank stopped at the same step");
    eprintln!(
        "{signalled:?}: signalled after step {logged_at_signal} was logged; every rank stopped at \
         step {} and exited 0 {took:?} later, that step committed (steps lost: 0)",
        steps[0]
    );
    assert_eq!(
        latest_step(&ckpt),
        Some(steps[0]),
        "the stop step is committed"
    );

    let out = finish(
        &lab,
        lab.spawn(&mut mpirun_wave_dist(&lab, &job, None)),
        Duration::from_secs(300),
    );
    assert!(out.status.success(), "the rerun:\n{}", both(&out));
    assert_eq!(
        std::fs::read(run.join("model.safetensors")).expect("weights"),
        std::fs::read(full_run.join("model.safetensors")).expect("weights"),
        "resumed to the uninterrupted run's weights"
    );
}

#[test]
fn sigterm_to_one_rank_stops_every_rank_at_the_same_step_commits_and_resumes_identically() {
    sigterm_scenario(Signalled::One(1));
}

#[test]
fn sigterm_to_all_ranks_stops_every_rank_at_the_same_step_commits_and_resumes_identically() {
    sigterm_scenario(Signalled::All);
}
