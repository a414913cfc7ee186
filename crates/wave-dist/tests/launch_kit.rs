//! The cluster launch kit as a user meets it: `launch/slurm.sbatch` and `launch/mpirun-hosts.sh`
//! (what their dry runs say they would execute, and one real mpirun-hosts run on this host),
//! `launch/validate-k8s.py` on broken manifests, and `launch/image.sh` on bad input. The image
//! itself is built and checked in real containers by `launch/image.sh` (run by launch/test.sh).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::*;

fn script(rel: &str) -> PathBuf {
    workspace_root().join(rel)
}

/// Runs `bash <script> args` from the workspace root with exactly `env` (plus PATH and HOME).
fn bash(rel: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new("bash");
    cmd.arg(script(rel))
        .args(args)
        .current_dir(workspace_root())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", std::env::var("HOME").unwrap_or_default())
        .envs(env.iter().copied())
        .stdin(Stdio::null());
    cmd.output().expect("run bash")
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The `would run:` line of a dry run.
fn would_run(out: &Output) -> String {
    let (stdout, stderr) = text(out);
    assert!(out.status.success(), "dry run failed:\n{stdout}\n{stderr}");
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("would run: "))
        .unwrap_or_else(|| panic!("no `would run:` line:\n{stdout}"))
        .to_string()
}

/// Fails naming every needle on stderr, exit code 1.
fn fails_with(out: &Output, needles: &[&str]) {
    let (stdout, stderr) = text(out);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    for n in needles {
        assert!(stderr.contains(n), "stderr should contain {n:?}:\n{stderr}");
    }
}

/// Every `--flag` after `wave-dist train` in `line` is one `wave-dist train --help` lists.
fn train_flags_exist(line: &str) {
    let help = Command::new(env!("CARGO_BIN_EXE_wave-dist"))
        .args(["train", "--help"])
        .output()
        .expect("train --help");
    let help = String::from_utf8_lossy(&help.stdout);
    let after = line.split(" train ").nth(1).expect("a train command");
    for flag in after.split_whitespace().filter(|a| a.starts_with("--")) {
        assert!(
            help.contains(flag),
            "`wave-dist train --help` has no {flag}"
        );
    }
}

const SLURM: &str = "launch/slurm.sbatch";

#[test]
fn slurm_dry_run_starts_one_rank_per_gpu_with_rank_0_on_the_first_node() {
    let env = [
        ("SLURM_JOB_ID", "1234"),
        ("SLURM_JOB_NODELIST", "gpu[07-08,10]"),
        ("SLURM_JOB_NUM_NODES", "3"),
        ("SLURM_GPUS_ON_NODE", "4"),
        ("WAVE_DRY_RUN", "1"),
        // A leftover torchrun variable must not reach the ranks (it would override srun's).
        ("RANK", "5"),
    ];
    let out = bash(
        SLURM,
        &["configs/smoke.toml", "--set", "train.max_steps=5"],
        &env,
    );
    let line = would_run(&out);
    assert_eq!(
        line,
        "MASTER_ADDR=gpu07 MASTER_PORT=21234 srun --nodes=3 --ntasks-per-node=4 --ntasks=12 \
         --kill-on-bad-exit=1 wave-dist train --config configs/smoke.toml --device cuda --backend nccl \
         --set train.max_steps=5"
    );
    train_flags_exist(&line);
    let (stdout, _) = text(&out);
    assert!(
        stdout.contains("12 ranks (3 node(s) x 4 GPU(s))"),
        "{stdout}"
    );
    // Pre-emption: SIGUSR1 to every rank (not only the batch shell) before the time limit.
    let header = std::fs::read_to_string(script(SLURM)).expect("read sbatch");
    assert!(
        header
            .lines()
            .any(|l| l.starts_with("#SBATCH --signal=USR1@")),
        "no --signal line"
    );
    // A plain node list, and the port override.
    let out = bash(
        SLURM,
        &["configs/smoke.toml"],
        &[
            ("SLURM_JOB_ID", "7"),
            ("SLURM_JOB_NODELIST", "alpha,beta"),
            ("SLURM_NNODES", "2"),
            ("WAVE_GPUS_PER_NODE", "8"),
            ("WAVE_MASTER_PORT", "29999"),
            ("WAVE_DRY_RUN", "1"),
        ],
    );
    assert!(would_run(&out).starts_with(
        "MASTER_ADDR=alpha MASTER_PORT=29999 srun --nodes=2 --ntasks-per-node=8 --ntasks=16 "
    ));
}

#[test]
fn slurm_refuses_to_start_outside_an_allocation_without_gpus_or_config() {
    let alloc = [("SLURM_JOB_ID", "1"), ("SLURM_JOB_NODELIST", "n1")];
    fails_with(
        &bash(SLURM, &["configs/smoke.toml"], &[]),
        &["not inside a Slurm allocation"],
    );
    fails_with(
        &bash(SLURM, &["configs/nope.toml"], &alloc),
        &["config configs/nope.toml does not exist"],
    );
    fails_with(
        &bash(SLURM, &["configs/smoke.toml"], &alloc),
        &["no GPU count", "--gpus-per-node"],
    );
    fails_with(&bash(SLURM, &[], &alloc), &["usage:"]);
}

const HOSTS: &str = "launch/mpirun-hosts.sh";

fn hostfile(dir: &Path, text: &str) -> String {
    let p = dir.join("hosts");
    std::fs::write(&p, text).expect("hostfile");
    p.display().to_string()
}

#[test]
fn mpirun_hosts_dry_run_places_one_rank_per_gpu_and_forwards_the_environment_by_name() {
    let tmp = tempfile::tempdir().expect("tmp");
    let hosts = hostfile(
        tmp.path(),
        "# two GPU hosts\ngpu-a slots=4\n\ngpu-b slots=2   # a smaller one\n",
    );
    let secret = "s3cr3t-never-printed";
    let env = [
        ("AWS_SECRET_ACCESS_KEY", secret),
        ("AWS_ENDPOINT_URL", "http://store:9000"),
        ("WAVE_LOG", "info"),
        ("NCCL_DEBUG", "WARN"),
        ("UNRELATED", "x"),
    ];
    let out = bash(
        HOSTS,
        &[
            "--dry-run",
            &hosts,
            "configs/smoke.toml",
            "--set",
            "train.max_steps=5",
        ],
        &env,
    );
    let line = would_run(&out);
    assert_eq!(
        line,
        format!(
            "mpirun -n 6 --hostfile {hosts} --map-by slot --bind-to none --mca rtc_hwloc_vmhole none -x AWS_ENDPOINT_URL \
             -x AWS_SECRET_ACCESS_KEY -x NCCL_DEBUG -x WAVE_LOG wave-dist train --config \
             configs/smoke.toml --device cuda --backend nccl --set train.max_steps=5"
        )
    );
    train_flags_exist(&line);
    let (stdout, stderr) = text(&out);
    assert!(!stdout.contains(secret) && !stderr.contains(secret));
    assert!(
        stdout.contains("6 ranks on 2 host(s) (gpu-a:4 gpu-b:2)"),
        "{stdout}"
    );
    let cpu = would_run(&bash(
        HOSTS,
        &["--dry-run", "--cpu", &hosts, "configs/smoke.toml"],
        &[],
    ));
    assert!(cpu.ends_with("--device cpu --backend mpi"), "{cpu}");
}

#[test]
fn mpirun_hosts_names_the_bad_hostfile_line() {
    let tmp = tempfile::tempdir().expect("tmp");
    let bad = hostfile(tmp.path(), "gpu-a slots=4\ngpu-b 4\n");
    fails_with(
        &bash(HOSTS, &["--dry-run", &bad, "configs/smoke.toml"], &[]),
        &[&format!("{bad} line 2"), "HOST slots=N", "gpu-b 4"],
    );
    let empty = hostfile(tmp.path(), "# nothing\n");
    fails_with(
        &bash(HOSTS, &["--dry-run", &empty, "configs/smoke.toml"], &[]),
        &["lists no hosts"],
    );
    fails_with(
        &bash(
            HOSTS,
            &["--dry-run", "/nonexistent/hosts", "configs/smoke.toml"],
            &[],
        ),
        &["hostfile /nonexistent/hosts does not exist"],
    );
}

#[test]
fn mpirun_hosts_really_trains_two_cpu_ranks_on_this_host() {
    let Some(data) = agnews_test_split() else {
        return;
    };
    if !mpirun_available() {
        return;
    }
    let tmp = tempfile::tempdir().expect("tmp");
    let hosts = hostfile(tmp.path(), "localhost slots=2\n");
    let run = tmp.path().join("run");
    let out = bash(
        HOSTS,
        &[
            "--cpu",
            &hosts,
            "configs/smoke.toml",
            "--set",
            &format!("data.uri={:?}", data.to_str().expect("utf-8")),
            "--set",
            &format!("train.run_dir={:?}", run.to_str().expect("utf-8")),
            "--set",
            "train.max_steps=6",
            "--set",
            "train.eval_every_steps=0",
        ],
        &[
            ("WAVE_DIST", env!("CARGO_BIN_EXE_wave-dist")),
            ("OMPI_ALLOW_RUN_AS_ROOT", "1"),
            ("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1"),
            (
                "LD_LIBRARY_PATH",
                &std::env::var("LD_LIBRARY_PATH").unwrap_or_default(),
            ),
        ],
    );
    let stdout = ok(&out);
    assert_eq!(summary(&stdout)["steps"], 6);
    let (_, stderr) = text(&out);
    assert!(
        stderr.contains("world=2"),
        "the trainer should log world=2:\n{stderr}"
    );
}

/// `python launch/validate-k8s.py` on manifests edited by `edit`; (exit code, stderr).
fn validate_edited(file: &str, edit: impl Fn(&str) -> String) -> Option<(Option<i32>, String)> {
    let python = ["python", "python3"].into_iter().find(|p| {
        Command::new(p)
            .args(["-c", "import yaml"])
            .output()
            .is_ok_and(|o| o.status.success())
    });
    let Some(python) = python else {
        wave_testkit::missing("a python with PyYAML (the set-up venv)");
        return None;
    };
    let tmp = tempfile::tempdir().expect("tmp");
    let original = std::fs::read_to_string(script(file)).expect("manifest");
    let edited = edit(&original);
    assert_ne!(edited, original, "the edit changed nothing");
    let path = tmp.path().join("edited.yaml");
    std::fs::write(&path, edited).expect("write");
    let out = Command::new(python)
        .arg(script("launch/validate-k8s.py"))
        .arg(&path)
        .env("WAVE_DIST_BIN", env!("CARGO_BIN_EXE_wave-dist"))
        .output()
        .expect("validate-k8s.py");
    Some((
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

#[test]
fn validate_k8s_passes_the_shipped_manifests_and_names_each_broken_contract() {
    let Some((code, stderr)) =
        validate_edited("k8s/indexed-job.yaml", |s| s.replace("# Data", "# data"))
    else {
        return;
    };
    assert_eq!(code, Some(0), "{stderr}");
    let cases: [(&str, &str, &str, &str); 7] = [
        (
            "k8s/indexed-job.yaml",
            "              value: \"4\"",
            "              value: \"3\"",
            "WAVE_WORLD_SIZE 3 must agree",
        ),
        (
            "k8s/indexed-job.yaml",
            "              mountPath: /etc/wave-dist",
            "              mountPath: /etc/other",
            "the config path /etc/wave-dist/job.toml is not under any volumeMount",
        ),
        (
            "k8s/mpijob.yaml",
            "                  mountPath: /etc/wave-dist",
            "                  mountPath: /config",
            "MPIJob wave-dist-cpu workers: the config path /etc/wave-dist/job.toml is not under any volumeMount",
        ),
        (
            "k8s/indexed-job.yaml",
            "terminationGracePeriodSeconds: 120",
            "terminationGracePeriodSeconds: 10",
            "terminationGracePeriodSeconds 10 leaves no time for a final checkpoint",
        ),
        (
            "k8s/indexed-job.yaml",
            "    resume = \"auto\"",
            "    resume = \"never\"",
            "train.resume must be \"auto\"",
        ),
        (
            "k8s/indexed-job.yaml",
            "    signal_exit_code = 75",
            "    signal_exit_code = 0",
            "train.signal_exit_code must be non-zero",
        ),
        (
            "k8s/mpijob.yaml",
            "\"-x\", \"AWS_SECRET_ACCESS_KEY\", ",
            "",
            "env AWS_SECRET_ACCESS_KEY is not forwarded by `mpirun -x`",
        ),
    ];
    for (file, from, to, needle) in cases {
        let (code, stderr) =
            validate_edited(file, |s| s.replacen(from, to, 1)).expect("python checked above");
        assert_eq!(code, Some(1), "{file}: {from} -> {to}:\n{stderr}");
        assert!(
            stderr.contains(needle),
            "{file}: expected {needle:?}:\n{stderr}"
        );
    }
}

/// A folder of links to the few tools launch/image.sh needs before it looks for podman.
fn path_without_podman(dir: &Path) -> String {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).expect("bin");
    for tool in ["bash", "dirname", "mkdir", "cat", "mv"] {
        let found = ["/usr/bin", "/bin"]
            .iter()
            .map(|d| Path::new(d).join(tool))
            .find(|p| p.exists())
            .unwrap_or_else(|| panic!("{tool} not found"));
        std::os::unix::fs::symlink(found, bin.join(tool)).expect("link");
    }
    bin.display().to_string()
}

#[test]
fn image_script_says_what_is_missing_podman_buildah_or_the_base_image() {
    let tmp = tempfile::tempdir().expect("tmp");
    let home = tmp.path().join("home").display().to_string();
    let path = path_without_podman(tmp.path());
    let run = |args: &[&str], path: &str| {
        Command::new("bash")
            .arg(script("launch/image.sh"))
            .args(args)
            .env_clear()
            .env("PATH", path)
            .env("HOME", &home)
            .env("WAVE_DIST_HOME", &home)
            .stdin(Stdio::null())
            .output()
            .expect("image.sh")
    };
    fails_with(
        &run(&["build"], &path),
        &["buildah is not installed", "launch/setup.sh"],
    );
    fails_with(&run(&["check"], &path), &["podman is not installed"]);
    fails_with(&run(&["nonsense"], &path), &["unknown command 'nonsense'"]);
    fails_with(
        &run(&["build", "--variant", "tpu"], &path),
        &["--variant must be cpu or cuda"],
    );
    let works = Command::new("podman")
        .args([
            "image",
            "exists",
            "localhost/wave-dist-test-no-such-image:0",
        ])
        .output()
        .is_ok_and(|o| o.status.code() == Some(1));
    if !works {
        wave_testkit::missing("a working podman (launch/setup.sh installs it)");
        return;
    }
    let full_path = std::env::var("PATH").unwrap_or_default();
    fails_with(
        &run(&["build", "--base", "localhost/no-such-base:1"], &full_path),
        &[
            "base image localhost/no-such-base:1 is not in local storage",
            "launch/image.sh base",
        ],
    );
}
