//! Real processes: the `comm-check` example under `mpirun` (collectives, a stalled rank, a killed
//! rank) and the TCP rendezvous between separately started processes configured only by
//! environment variables, as a Kubernetes Indexed Job starts them, on one host and across hosts
//! (network namespaces, `wave_testkit::NetLab`; skipped where they cannot be made).
//!
//! The MPI tests skip with a message when `mpirun` is missing (and fail under `CI=true`:
//! `wave_testkit::missing`), and are ignored in builds without the `mpi` feature. They run one
//! at a time (a lock) so that timing checks are not distorted by each other on small machines.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

static SERIAL: Mutex<()> = Mutex::new(());

/// The example binary cargo builds next to the test binaries (`target/release/examples`).
fn comm_check() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target profile folder");
    let path = dir.join("examples").join("comm-check");
    assert!(path.exists(), "{} is missing: cargo test builds examples; run `cargo build --release -p wave-comm --examples`", path.display());
    path
}

/// Whether MPI tests can run; otherwise [`wave_testkit::missing`] (a failure under `CI=true`).
fn mpirun_available() -> bool {
    let ok = Command::new("mpirun")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        wave_testkit::missing("mpirun (Debian package openmpi-bin)");
    }
    ok
}

/// Holds the lock that serialises the MPI tests, or `None` (skip) when they cannot run.
fn mpi_test() -> Option<MutexGuard<'static, ()>> {
    let serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    mpirun_available().then_some(serial)
}

fn mpirun(ranks: usize, args: &[&str]) -> Command {
    let mut cmd = Command::new("mpirun");
    cmd.args(["--oversubscribe", "-n", &ranks.to_string()])
        .arg(comm_check())
        .args(args)
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// A finished process: status, stdout + stderr, how long it ran.
struct Finished {
    status: ExitStatus,
    output: String,
    elapsed: Duration,
}

/// Collects a child's output and waits at most `limit`, killing it on overrun (the test fails).
/// Stdout lines are also sent to `lines` as they arrive.
fn finish(mut child: Child, limit: Duration, lines: Option<mpsc::Sender<String>>) -> Finished {
    let started = Instant::now();
    let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
    let mut stderr = child.stderr.take().expect("piped stderr");
    let out_thread = std::thread::spawn(move || {
        let mut all = String::new();
        let mut line = String::new();
        while stdout.read_line(&mut line).is_ok_and(|n| n > 0) {
            if let Some(tx) = &lines {
                let _ = tx.send(line.clone());
            }
            all.push_str(&line);
            line.clear();
        }
        all
    });
    let err_thread = std::thread::spawn(move || {
        let mut all = String::new();
        let _ = stderr.read_to_string(&mut all);
        all
    });
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            let partial = out_thread.join().unwrap_or_default();
            panic!("still running after {limit:?}; output so far:\n{partial}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let elapsed = started.elapsed();
    let output = out_thread.join().unwrap_or_default() + &err_thread.join().unwrap_or_default();
    Finished {
        status,
        output,
        elapsed,
    }
}

fn collectives_agree_across(ranks: usize) {
    let Some(_serial) = mpi_test() else { return };
    let child = mpirun(
        ranks,
        &["collectives", "--backend", "mpi", "--timeout", "60"],
    )
    .spawn()
    .expect("mpirun");
    let run = finish(child, Duration::from_secs(90), None);
    assert!(run.status.success(), "mpirun failed:\n{}", run.output);
    for rank in 0..ranks {
        let tag = format!("rank {rank}/{ranks}");
        for check in [
            "backend mpi",
            "all_reduce sum ok",
            "all_reduce mean ok",
            "broadcast ok",
            "all_gather ok",
            "check_same ok",
            "barrier ok",
        ] {
            assert!(
                run.output.contains(&format!("{tag}: {check}")),
                "{tag} did not report {check:?}:\n{}",
                run.output
            );
        }
        assert!(
            run.output.contains(&format!("OK rank {rank}\n")),
            "rank {rank} did not finish:\n{}",
            run.output
        );
    }
}

#[test]
#[cfg_attr(not(feature = "mpi"), ignore = "needs the `mpi` feature")]
fn mpi_collectives_match_cpu_results_on_2_ranks() {
    collectives_agree_across(2);
}

#[test]
#[cfg_attr(not(feature = "mpi"), ignore = "needs the `mpi` feature")]
fn mpi_collectives_match_cpu_results_on_4_ranks() {
    collectives_agree_across(4);
}

/// Rank 1 sleeps 120 s before step 2's all-reduce; rank 0's watchdog must end the job soon after
/// its 3 s limit, naming rank, operation and step. Returns the job's output.
fn stalled_rank_job(extra: &[&str]) -> String {
    let timeout_s = 3.0;
    let mut args = vec![
        "loop",
        "--steps",
        "10",
        "--stall-rank",
        "1",
        "--stall-secs",
        "120",
        "--timeout",
        "3",
    ];
    args.extend_from_slice(extra);
    let child = mpirun(2, &args).spawn().expect("mpirun");
    let run = finish(child, Duration::from_secs(60), None);
    assert!(
        !run.status.success(),
        "a stalled job must fail:\n{}",
        run.output
    );
    // Start-up (~1-2 s) + two steps + the timeout + the launcher tearing down, with slack for a
    // busy machine; the stalled rank alone would sleep 120 s.
    assert!(
        run.elapsed.as_secs_f64() < timeout_s + 20.0,
        "took {:?}:\n{}",
        run.elapsed,
        run.output
    );
    let expected = format!(
        "rank 0: all_reduce (step 2) did not complete within {timeout_s:.1} s: its peer, rank 1, is stuck"
    );
    assert!(
        run.output.contains(&expected),
        "missing {expected:?}:\n{}",
        run.output
    );
    run.output
}

#[test]
#[cfg_attr(not(feature = "mpi"), ignore = "needs the `mpi` feature")]
fn a_stalled_rank_ends_every_rank_soon_after_the_timeout_naming_rank_op_and_step() {
    let Some(_serial) = mpi_test() else { return };
    let output = stalled_rank_job(&[]);
    assert!(
        output.contains("mpi thread level multiple") && !output.contains("not calling MPI_Abort"),
        "MPI granted MULTIPLE, so the watchdog aborts through MPI:\n{output}"
    );
}

#[test]
#[cfg_attr(not(feature = "mpi"), ignore = "needs the `mpi` feature")]
fn below_mpi_thread_multiple_the_watchdog_never_calls_mpi_and_the_launcher_still_ends_every_rank() {
    let Some(_serial) = mpi_test() else { return };
    let output = stalled_rank_job(&["--mpi-thread-level", "funneled"]);
    for expected in [
        "rank 0/2: backend mpi launcher open-mpi",
        "mpi thread level funneled",
        "wave-comm: rank 0: not calling MPI_Abort from the watchdog thread (MPI granted thread level funneled",
    ] {
        assert!(output.contains(expected), "missing {expected:?}:\n{output}");
    }
    // The rank exited on its own: mpirun reports an exit, not an MPI_Abort.
    assert!(!output.contains("MPI_ABORT was invoked"), "{output}");
}

#[test]
#[cfg_attr(not(feature = "mpi"), ignore = "needs the `mpi` feature")]
fn a_rank_that_aborts_ends_every_rank_at_once_naming_itself() {
    let Some(_serial) = mpi_test() else { return };
    let child = mpirun(
        2,
        &[
            "loop",
            "--steps",
            "10",
            "--fail-rank",
            "1",
            "--timeout",
            "300",
        ],
    )
    .spawn()
    .expect("mpirun");
    let run = finish(child, Duration::from_secs(60), None);
    assert!(
        !run.status.success(),
        "an aborted job must fail:\n{}",
        run.output
    );
    // Well before rank 0's 300 s timeout.
    assert!(
        run.elapsed < Duration::from_secs(30),
        "took {:?}:\n{}",
        run.elapsed,
        run.output
    );
    let expected = "rank 1 aborted the job: simulated local error before step 2";
    assert!(
        run.output.contains(expected),
        "missing {expected:?}:\n{}",
        run.output
    );
}

#[test]
#[cfg_attr(not(feature = "mpi"), ignore = "needs the `mpi` feature")]
fn killing_one_rank_ends_every_rank_within_60_s() {
    let Some(_serial) = mpi_test() else { return };
    let ranks = 3;
    // A long collective timeout, so that it is the launcher noticing the death that ends the job.
    let child = mpirun(ranks, &["loop", "--steps", "100000000", "--timeout", "300"])
        .spawn()
        .expect("mpirun");
    let (tx, rx) = mpsc::channel();
    let waiter = std::thread::spawn(move || finish(child, Duration::from_secs(120), Some(tx)));
    let mut pids = HashMap::new();
    while pids.len() < ranks {
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("every rank reports ready within 60 s");
        if let Some((rank, pid)) = line
            .trim()
            .strip_prefix("rank ")
            .and_then(|rest| rest.split_once(" ready pid "))
        {
            pids.insert(
                rank.parse::<usize>().expect("rank"),
                pid.parse::<u32>().expect("pid"),
            );
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    let killed_at = Instant::now();
    let status = Command::new("kill")
        .args(["-9", &pids[&1].to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let run = waiter.join().expect("waiter");
    let gone_after = killed_at.elapsed();
    assert!(
        !run.status.success(),
        "the job must fail when a rank dies:\n{}",
        run.output
    );
    assert!(
        gone_after < Duration::from_secs(60),
        "took {gone_after:?} after the kill"
    );
    // mpirun may return a moment before its daemon has reaped the surviving ranks.
    let alive = |pid: u32| {
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        state.split_whitespace().nth(2).is_some_and(|s| s != "Z")
    };
    while pids.values().any(|&pid| alive(pid)) && killed_at.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(100));
    }
    for (rank, pid) in pids {
        assert!(
            !alive(pid),
            "rank {rank} (pid {pid}) is still running 60 s after the kill"
        );
    }
}

/// A port that was free a moment ago.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// Starts one rank of a Kubernetes-Indexed-Job-style job: only these variables, no launcher.
fn indexed_job_rank(index: usize, world: usize, port: u16) -> Child {
    indexed_job_command(
        Command::new(comm_check()),
        index,
        world,
        "127.0.0.1",
        port,
        30,
    )
    .spawn()
    .expect("start comm-check")
}

/// `comm-check rendezvous` as one rank of an Indexed Job: `cmd` runs comm-check (directly, or
/// inside a test host); its environment is only these variables.
fn indexed_job_command(
    mut cmd: Command,
    index: usize,
    world: usize,
    master: &str,
    port: u16,
    timeout_s: u64,
) -> Command {
    cmd.arg("rendezvous")
        .args(["--timeout", &timeout_s.to_string()])
        .env_clear();
    for keep in ["PATH", "LD_LIBRARY_PATH"] {
        if let Ok(v) = std::env::var(keep) {
            cmd.env(keep, v);
        }
    }
    cmd.env("JOB_COMPLETION_INDEX", index.to_string())
        .env("WAVE_WORLD_SIZE", world.to_string())
        .env("MASTER_ADDR", master)
        .env("MASTER_PORT", port.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// The id `comm-check` derives for the rendezvous test, as it prints it.
fn expected_id() -> String {
    (0..128u32)
        .map(|i| format!("{:02x}", (i * 7 + 3) as u8))
        .collect()
}

#[test]
fn tcp_rendezvous_across_hosts_reaches_rank0_at_another_hosts_address() {
    let Some(lab) = wave_testkit::NetLab::start(3) else {
        return;
    };
    let (world, port, master) = (3, 29500, lab.host(0).addr.to_string());
    // Ranks 1 and 2 on their own hosts first: rank 0's host does not answer yet.
    let others: Vec<Child> = (1..world)
        .map(|i| {
            let mut cmd =
                indexed_job_command(lab.command(i, comm_check()), i, world, &master, port, 30);
            lab.spawn(&mut cmd)
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    let root = lab.spawn(&mut indexed_job_command(
        lab.command(0, comm_check()),
        0,
        world,
        &master,
        port,
        30,
    ));
    for (rank, child) in std::iter::once(root).chain(others).enumerate() {
        let run = finish(child, Duration::from_secs(60), None);
        assert!(run.status.success(), "rank {rank} failed:\n{}", run.output);
        assert!(
            run.output
                .contains(&format!("/{world} id {}\n", expected_id())),
            "rank {rank} got rank 0's id:\n{}",
            run.output
        );
    }
}

#[test]
fn tcp_rendezvous_with_rank0_s_host_cut_off_gives_up_at_the_deadline_naming_its_address() {
    let Some(lab) = wave_testkit::NetLab::start(2) else {
        return;
    };
    let master = lab.host(0).addr.to_string();
    lab.cut(0);
    let started = Instant::now();
    let child = lab.spawn(&mut indexed_job_command(
        lab.command(1, comm_check()),
        1,
        2,
        &master,
        29500,
        4,
    ));
    let run = finish(child, Duration::from_secs(60), None);
    let took = started.elapsed();
    assert!(!run.status.success(), "{}", run.output);
    assert!(
        took < Duration::from_secs(15),
        "gave up after {took:?}:\n{}",
        run.output
    );
    for needle in [
        format!("rank 1: rendezvous with rank 0 at {master}:29500"),
        "gave up".to_string(),
    ] {
        assert!(
            run.output.contains(&needle),
            "missing {needle:?}:\n{}",
            run.output
        );
    }
}

#[test]
fn tcp_rendezvous_hands_rank0_s_id_to_separate_processes_even_when_rank0_starts_late() {
    let (world, port) = (3, free_port());
    let others: Vec<Child> = (1..world)
        .map(|i| indexed_job_rank(i, world, port))
        .collect();
    // Ranks 1 and 2 find nothing listening and must retry.
    std::thread::sleep(Duration::from_millis(1500));
    let root = indexed_job_rank(0, world, port);
    let expected = expected_id();
    for (rank, child) in std::iter::once(root).chain(others).enumerate() {
        let run = finish(child, Duration::from_secs(60), None);
        assert!(run.status.success(), "a rank failed:\n{}", run.output);
        assert!(
            run.output.contains(&format!("/{world} id {expected}\n")),
            "wrong id:\n{}",
            run.output
        );
        assert!(
            run.output.contains("OK rank"),
            "rank {rank}:\n{}",
            run.output
        );
    }
}

#[test]
fn tcp_rendezvous_refuses_a_rank_started_with_another_world_size() {
    let port = free_port();
    let master = ("127.0.0.1".to_string(), port);
    let m = master.clone();
    let root = std::thread::spawn(move || {
        wave_comm::rendezvous::exchange(&m, 0, 2, b"id", Duration::from_secs(20))
    });
    let other = wave_comm::rendezvous::exchange(&master, 1, 3, &[], Duration::from_secs(20));
    let root = root.join().expect("rank 0 thread");
    let other = other.expect_err("rank 1 must be refused").to_string();
    let root = root.expect_err("rank 0 must fail").to_string();
    assert!(
        other.contains("rank 1") && other.contains("world size 3"),
        "{other}"
    );
    assert!(
        root.contains("rank 0") && root.contains("world size 3"),
        "{root}"
    );
}

#[test]
fn tcp_rendezvous_gives_up_at_the_deadline_naming_the_unreachable_rank0() {
    let master = ("127.0.0.1".to_string(), free_port());
    let started = Instant::now();
    let err = wave_comm::rendezvous::exchange(&master, 2, 4, &[], Duration::from_millis(1500))
        .expect_err("nobody listens");
    let msg = err.to_string();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    assert!(
        msg.contains("rank 2")
            && msg.contains(&format!("127.0.0.1:{}", master.1))
            && msg.contains("gave up"),
        "{msg}"
    );
}

#[test]
fn tcp_rendezvous_keeps_retrying_while_rank0_s_name_does_not_resolve() {
    // `.invalid` never resolves (RFC 2606), like a headless Service before its pod is ready.
    let master = ("wave-comm-rank0.invalid".to_string(), 29500);
    let started = Instant::now();
    let err = wave_comm::rendezvous::exchange(&master, 1, 2, &[], Duration::from_millis(1500))
        .expect_err("never resolves");
    let msg = err.to_string();
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "gave up early: {msg}"
    );
    assert!(
        msg.contains("cannot resolve wave-comm-rank0.invalid") && msg.contains("gave up"),
        "{msg}"
    );
}
