//! Crash safety: `examples/crash_loop.rs` saves checkpoints continuously and is killed with SIGKILL
//! at random moments, on local disk and on S3 (SeaweedFS on loopback; skipped when `weed` is
//! missing); after every kill `latest` must name a committed step that verifies and loads.

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
