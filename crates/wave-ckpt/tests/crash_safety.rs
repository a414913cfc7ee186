//! Crash safety: `examples/crash_loop.rs` saves checkpoints continuously and is killed with SIGKILL
//! at random moments, on local disk and on S3 (SeaweedFS on loopback; skipped when `weed` is
//! missing); after every kill `latest` must name a committed step that verifies and loads. On
//! local disk, `strace` shows that every object, the manifest and the step folder reach the disk
//! before the commit marker, and the marker before `latest` (skipped when strace is missing).

mod common;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{open_s3, Weed};
use wave_ckpt::{CheckpointStore, RetryPolicy};

/// The example binary, built by `cargo test` next to the test binaries (`<profile>/examples/`).
fn crash_loop_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>");
    let bin = profile_dir.join("examples").join("crash_loop");
    assert!(
        bin.is_file(),
        "{} is missing: run `cargo test -p wave-ckpt`, which builds the examples",
        bin.display()
    );
    bin
}

/// xorshift64: random kill delays without a dependency; the seed is printed for reruns.
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

#[test]
fn kill_9_during_background_saves_on_local_disk_always_leaves_a_loadable_latest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("ckpt").display().to_string();
    kill_repeatedly(
        &root,
        &[],
        || CheckpointStore::open(&root, RetryPolicy::default()).expect("open"),
        250,
    );
}

#[test]
fn kill_9_during_background_saves_on_s3_always_leaves_a_loadable_latest() {
    let Some(weed) = Weed::start() else { return };
    let env = [
        ("AWS_ENDPOINT_URL", weed.endpoint.as_str()),
        ("AWS_ALLOW_HTTP", "true"),
        ("AWS_ACCESS_KEY_ID", common::FAKE_KEY_ID),
        ("AWS_SECRET_ACCESS_KEY", common::FAKE_SECRET),
        ("AWS_REGION", "us-east-1"),
    ];
    let open = || open_s3(&weed.endpoint, "wave-test/crash", RetryPolicy::default()).expect("open");
    kill_repeatedly("s3://wave-test/crash", &env, open, 600);
}

/// Runs `crash_loop` on `root` 12 times, killing it at a random moment within `max_delay_ms` after
/// its first commit, and checks the checkpoints after every kill.
fn kill_repeatedly(
    root: &str,
    env: &[(&str, &str)],
    open: impl Fn() -> CheckpointStore,
    max_delay_ms: u64,
) {
    let bin = crash_loop_binary();
    let mut rng = std::env::var("WAVE_CKPT_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
                | 1
        });
    eprintln!("{root}: crash seed (WAVE_CKPT_CRASH_SEED): {rng}");
    let mut next_step = 1;
    for kill in 0..12 {
        let mut cmd = Command::new(&bin);
        cmd.arg(root)
            .arg(next_step.to_string())
            .stdout(Stdio::piped());
        cmd.envs(env.iter().copied());
        let mut child = cmd.spawn().expect("spawn crash_loop");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(step) = line
                    .strip_prefix("committed ")
                    .and_then(|s| s.parse::<u64>().ok())
                {
                    let _ = tx.send(step);
                }
            }
        });
        let first = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("crash_loop committed nothing within 60 s");
        // Kill somewhere inside the following saves (crash_loop saves without pause).
        std::thread::sleep(Duration::from_millis(next(&mut rng) % max_delay_ms));
        child.kill().expect("SIGKILL");
        child.wait().expect("reap");
        reader.join().expect("reader");
        let last_reported = rx.try_iter().last().unwrap_or(first);

        let store = open();
        let latest = store
            .latest()
            .expect("latest readable")
            .expect("latest exists after a kill");
        assert!(
            latest >= last_reported,
            "kill {kill}: latest {latest} is older than the reported commit {last_reported}"
        );
        let loaded = store
            .load(latest)
            .unwrap_or_else(|e| panic!("kill {kill}: latest step {latest} does not load: {e}"));
        assert_eq!(
            loaded.object("state.json").map(|b| b.to_vec()),
            Some(format!("{{\"step\":{latest}}}").into_bytes())
        );
        for c in store
            .list()
            .expect("list")
            .into_iter()
            .filter(|c| c.committed)
        {
            store.verify(c.step).unwrap_or_else(|e| {
                panic!(
                    "kill {kill}: committed step {} does not verify: {e}",
                    c.step
                )
            });
        }
        eprintln!("{root}: kill {kill}: latest {latest} (last reported {last_reported}) verified");
        next_step = latest + 1;
    }
    // Leftovers of killed saves are cleaned by later saves: at most those of the last kill remain
    // (two saves in flight), besides the 3 retained committed steps and possibly one committed
    // step that `latest` did not reach before the kill.
    let listed = open().list().expect("list");
    assert!(
        listed.iter().filter(|c| !c.committed).count() <= 2,
        "{listed:?}"
    );
    assert!(
        listed.iter().filter(|c| c.committed).count() <= 4,
        "{listed:?}"
    );
}

/// One traced system call: its name and the path(s) in its arguments (strace `-y` decodes file
/// descriptors into paths).
#[derive(Debug)]
struct Call {
    name: String,
    paths: Vec<String>,
}

/// Parses the entry of every call of an `strace -f -y` log (resumed halves are skipped; the entry
/// order is the program's order, since each awaited write finishes before the next begins).
fn traced_calls(log: &str) -> Vec<Call> {
    log.lines()
        .filter_map(|line| {
            // "1234  fsync(5</tmp/x/step-00000001/a#7>) = 0", "1234  linkat(AT_FDCWD, \"/a#1\", ..."
            let rest = line
                .split_once(char::is_whitespace)
                .map_or(line, |(_, r)| r)
                .trim_start();
            let (name, args) = rest.split_once('(')?;
            if name.starts_with('<') || !name.chars().all(|c| c.is_ascii_alphanumeric()) {
                return None;
            }
            let mut paths = Vec::new();
            for piece in args.split(['"', '<', '>']).filter(|p| p.starts_with('/')) {
                paths.push(piece.to_string());
            }
            Some(Call {
                name: name.to_string(),
                paths,
            })
        })
        .collect()
}

#[test]
fn local_saves_fsync_objects_manifest_and_folder_before_the_commit_marker_and_latest() {
    let strace_ok = Command::new("strace")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success());
    if !strace_ok {
        common::missing("strace (Debian package strace)");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    // object_store resolves symbolic links in the root; strace shows resolved paths.
    let root = dir
        .path()
        .canonicalize()
        .expect("canonical tempdir")
        .join("ckpt");
    let log = dir.path().join("strace.log");
    let mut child = Command::new("strace")
        .args([
            "-f",
            "-qq",
            "-y",
            "-e",
            "trace=fsync,fdatasync,rename,renameat,renameat2,link,linkat",
        ])
        .arg("-o")
        .arg(&log)
        .arg(crash_loop_binary())
        .arg(&root)
        .arg("1")
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn strace");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let committed_two = lines.any(|l| l.is_ok_and(|l| l == "committed 2"));
    child.kill().expect("kill");
    child.wait().expect("reap");
    assert!(
        committed_two,
        "crash_loop under strace did not commit step 2"
    );
    let calls = traced_calls(&std::fs::read_to_string(&log).expect("strace log"));

    let root = root.display().to_string();
    let step = format!("{root}/step-00000001");
    fn synced(path: &str) -> impl Fn(&Call) -> bool + '_ {
        move |c: &Call| c.name.contains("sync") && c.paths.first().is_some_and(|p| p == path)
    }
    let position = |what: &str, pred: &dyn Fn(&Call) -> bool| {
        calls
            .iter()
            .position(pred)
            .unwrap_or_else(|| panic!("no {what} in the trace: {calls:#?}"))
    };
    let marker = position("link of COMMITTED", &|c| {
        c.name.starts_with("link")
            && c.paths
                .last()
                .is_some_and(|p| *p == format!("{step}/COMMITTED"))
    });
    let pointer = position("rename of latest", &|c| {
        c.name.starts_with("rename")
            && c.paths
                .last()
                .is_some_and(|p| *p == format!("{root}/latest"))
    });
    assert!(marker < pointer, "COMMITTED before latest");
    for name in [
        "model.safetensors",
        "optimizer.safetensors",
        "state.json",
        "manifest.json",
    ] {
        let target = format!("{step}/{name}");
        let rename = position(&format!("rename of {name}"), &|c| {
            c.name.starts_with("rename") && c.paths.last() == Some(&target)
        });
        let staged = calls[rename].paths.first().cloned().expect("staging path");
        let file_synced = position(&format!("fsync of {name}'s content"), &synced(&staged));
        let folder_synced = rename
            + calls[rename..]
                .iter()
                .position(synced(&step))
                .unwrap_or_else(|| {
                    panic!("the step folder is not fsynced after {name} is renamed into it")
                });
        assert!(file_synced < rename && folder_synced < marker, "{name}: content {file_synced}, rename {rename}, folder {folder_synced}, COMMITTED {marker}");
    }
    let marker_synced = marker
        + calls[marker..]
            .iter()
            .position(synced(&step))
            .expect("folder fsynced after COMMITTED");
    assert!(
        marker_synced < pointer,
        "COMMITTED is durable before latest moves"
    );
    let first_folder = position("fsync of the new step folder's parent", &synced(&root));
    assert!(
        first_folder < marker,
        "the root, which gained the step folder, is fsynced before COMMITTED"
    );
    assert!(
        calls[pointer..].iter().any(synced(&root)),
        "the root is fsynced after latest is renamed"
    );
}
