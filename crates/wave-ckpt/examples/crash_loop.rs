//! Saves checkpoints in an endless loop through the background saver, printing `committed STEP`
//! for every finished save: the program the crash-safety test kills with SIGKILL at random moments.
//!
//! ```sh
//! cargo run --release -p wave-ckpt --example crash_loop -- /tmp/ckpt 1   # root, first step
//! ```
//!
//! Objects: `model.safetensors` of 1-3 MB, `optimizer.safetensors` twice that, and `state.json`
//! holding the step, so a reader can tell which step it loaded.

use std::io::Write;

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use wave_ckpt::{CheckpointStore, Retention, RetryPolicy, Saver, SaverOptions};

/// The objects saved for `step`.
fn objects(step: u64) -> Vec<(String, Bytes)> {
    let n = 1_000_000 + (step as usize % 3) * 1_000_000;
    let fill = |len: usize, salt: u64| -> Bytes {
        (0..len)
            .map(|i| (i as u64 ^ step.wrapping_mul(salt)) as u8)
            .collect::<Vec<u8>>()
            .into()
    };
    vec![
        ("model.safetensors".into(), fill(n, 7)),
        ("optimizer.safetensors".into(), fill(2 * n, 13)),
        (
            "state.json".into(),
            Bytes::from(format!("{{\"step\":{step}}}")),
        ),
    ]
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, root, first] = args.as_slice() else {
        bail!("usage: crash_loop ROOT FIRST_STEP")
    };
    let first: u64 = first.parse().context("FIRST_STEP")?;
    let store = CheckpointStore::open(root, RetryPolicy::default())?.with_writer(1, "crash_loop");
    let opts = SaverOptions {
        max_in_flight: 2,
        retention: Some(Retention {
            keep_last: 3,
            keep_every: 0,
        }),
    };
    let mut saver = Saver::new(store, opts)?;
    let mut stdout = std::io::stdout();
    for step in first.. {
        saver.submit(
            step,
            objects(step),
            serde_json::json!({"writer": "crash_loop"}),
        )?;
        for outcome in saver.poll() {
            let info = outcome
                .result
                .with_context(|| format!("saving step {}", outcome.step))?;
            writeln!(stdout, "committed {}", info.step)?;
            stdout.flush()?;
        }
    }
    Ok(())
}
