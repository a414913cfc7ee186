//! Helpers shared by the CLI tests: the binary, the shared data folder, a prepared smoke data set.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

/// The workspace root (two levels above this crate).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("workspace root")
}

/// `$WAVE_SHARED_DATA`, default `<workspace>/../shared/data`. Absent: [`wave_testkit::missing`]
/// (a failure under `CI=true`, else a skip message) and None.
pub fn shared_data() -> Option<PathBuf> {
    let dir = std::env::var_os("WAVE_SHARED_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("../shared/data"));
    if dir.join("mirror/ag_news_csv.tgz").is_file() {
        return Some(dir);
    }
    wave_testkit::missing(&format!(
        "shared test data at {} (set WAVE_SHARED_DATA)",
        dir.display()
    ));
    None
}

/// Runs the wave-dist binary from the workspace root.
pub fn wave_dist(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_wave-dist"))
        .args(args)
        .current_dir(workspace_root())
        .env("WAVE_LOG", "info")
        .output()
        .expect("run wave-dist")
}

/// Asserts success and returns stdout.
pub fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "wave-dist failed ({:?})\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Asserts a clean failure (exit code 1 or 2, no panic) whose stderr mentions every `needle`.
pub fn fails_naming(out: &Output, needles: &[&str]) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "expected failure, got success; stderr:\n{stderr}"
    );
    assert!(
        matches!(out.status.code(), Some(1) | Some(2)),
        "exit code {:?}; stderr:\n{stderr}",
        out.status.code()
    );
    assert!(!stderr.contains("panicked"), "panicked:\n{stderr}");
    for needle in needles {
        assert!(
            stderr.contains(needle),
            "stderr should name {needle:?}:\n{stderr}"
        );
    }
}

/// AG News' test split (the only AG News split offline), prepared once per test process.
pub fn agnews_test_split() -> Option<&'static Path> {
    static DIR: OnceLock<Option<(tempfile::TempDir, PathBuf)>> = OnceLock::new();
    DIR.get_or_init(|| {
        let data = shared_data()?;
        let tmp = tempfile::tempdir().expect("tempdir");
        let out = tmp.path().join("agnews-test");
        let archive = data.join("mirror/ag_news_csv.tgz");
        ok(&wave_dist(&[
            "data",
            "prepare",
            "--format",
            "agnews",
            "--splits",
            "test",
            "--input",
            archive.to_str().expect("utf-8 path"),
            "--out",
            out.to_str().expect("utf-8 path"),
        ]));
        Some((tmp, out))
    })
    .as_ref()
    .map(|(_, p)| p.as_path())
}

/// Parses the JSON summary on the last stdout line.
pub fn summary(stdout: &str) -> serde_json::Value {
    let last = stdout.lines().last().expect("stdout has a last line");
    serde_json::from_str(last).unwrap_or_else(|e| panic!("last line is not JSON ({e}): {last}"))
}

/// The `loss` of every `kind = "train"` line of a run's metrics.jsonl.
pub fn train_losses(run_dir: &Path) -> Vec<(u64, f64)> {
    std::fs::read_to_string(run_dir.join("metrics.jsonl"))
        .expect("metrics.jsonl")
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("json line"))
        .filter(|v| v["kind"] == "train")
        .map(|v| {
            (
                v["step"].as_u64().expect("step"),
                v["loss"].as_f64().expect("loss"),
            )
        })
        .collect()
}

/// `mpirun` if it is installed; otherwise skip (or fail under `CI=true`).
pub fn mpirun_available() -> bool {
    let ok = Command::new("mpirun")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        wave_testkit::missing("mpirun (install openmpi-bin)");
    }
    ok
}

/// `mpirun --oversubscribe` from the workspace root, allowed to run as root.
pub fn mpirun() -> Command {
    let mut cmd = Command::new("mpirun");
    cmd.arg("--oversubscribe")
        .current_dir(workspace_root())
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .stdin(Stdio::null());
    cmd
}

/// A small corpus (the first 400 KB of the Gutenberg sample) packed into rows of 64 BERT tokens,
/// with a 5% validation part: prepared once per test process.
pub fn packed_corpus() -> Option<&'static Path> {
    static DIR: OnceLock<Option<(tempfile::TempDir, PathBuf)>> = OnceLock::new();
    DIR.get_or_init(|| {
        let data = shared_data()?;
        let tmp = tempfile::tempdir().expect("tempdir");
        let text = std::fs::read(data.join("gutenberg/gutenberg_sample_10MB.txt"))
            .expect("gutenberg sample");
        let mut end = 400_000.min(text.len());
        while end < text.len() && text[end] != b'\n' {
            end += 1;
        }
        let input = tmp.path().join("corpus.txt");
        std::fs::write(&input, &text[..end]).expect("write corpus");
        let out = tmp.path().join("packed");
        ok(&wave_dist(&[
            "data",
            "prepare",
            "--format",
            "text",
            "--text-unit",
            "paragraph",
            "--input",
            input.to_str().expect("utf-8 path"),
            "--out",
            out.to_str().expect("utf-8 path"),
            "--tokenizer",
            "bert-base-uncased",
            "--pack-length",
            "64",
        ]));
        Some((tmp, out))
    })
    .as_ref()
    .map(|(_, p)| p.as_path())
}

/// `--set` arguments for every `key=value` in `sets`.
pub fn set_args(sets: &[String]) -> Vec<String> {
    sets.iter()
        .flat_map(|s| ["--set".to_string(), s.clone()])
        .collect()
}

/// Steps of the train lines a running job has written so far (a partially written last line is
/// skipped, not an error).
pub fn logged_steps(run_dir: &Path) -> Vec<u64> {
    std::fs::read_to_string(run_dir.join("metrics.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["kind"] == "train")
        .filter_map(|v| v["step"].as_u64())
        .collect()
}

/// The PIDs of the wave-dist processes (ranks) whose command line names `run_dir`.
pub fn rank_pids(run_dir: &Path) -> Vec<String> {
    let pgrep = Command::new("pgrep")
        .args(["-f", run_dir.to_str().expect("utf-8")])
        .output()
        .expect("pgrep");
    String::from_utf8_lossy(&pgrep.stdout)
        .lines()
        .map(str::to_string)
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.trim() == "wave-dist")
        })
        .collect()
}

/// `train --config configs/smoke.toml` with `data.uri`, `train.run_dir` and each of `sets` as a
/// `--set` override.
pub fn smoke_train_args(data: &Path, run_dir: &Path, sets: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = ["train", "--config", "configs/smoke.toml"]
        .map(String::from)
        .to_vec();
    let paths = [
        format!("data.uri={:?}", data.to_str().expect("utf-8")),
        format!("train.run_dir={:?}", run_dir.to_str().expect("utf-8")),
    ];
    for set in paths.iter().map(String::as_str).chain(sets.iter().copied()) {
        args.push("--set".into());
        args.push(set.to_string());
    }
    args
}
