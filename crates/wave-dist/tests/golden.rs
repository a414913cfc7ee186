//! Golden numbers guard the numerics: the smoke run's loss curve is committed in
//! `tests/golden/smoke_losses.json` and every change must reproduce it. The tolerance (1e-3
//! relative) absorbs the last-bit differences between CPU instruction sets, not a changed model,
//! optimizer or data order. After an intended change: `WAVE_UPDATE_GOLDEN=1 cargo test --release
//! -p wave-dist --test golden`, and say why in the commit.

mod common;

use common::*;

#[test]
fn the_smoke_run_reproduces_the_committed_loss_curve() {
    let Some(data) = agnews_test_split() else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = wave_dist(&[
        "train",
        "--config",
        "configs/smoke.toml",
        "--set",
        &format!("data.uri={:?}", data.to_str().expect("utf-8")),
        "--set",
        &format!("train.run_dir={:?}", tmp.path().to_str().expect("utf-8")),
        "--set",
        "checkpoint.every_steps=0",
    ]);
    let eval_accuracy = summary(&ok(&out))["eval"]["accuracy"]
        .as_f64()
        .expect("accuracy");
    let losses = train_losses(tmp.path());
    let golden_path = workspace_root().join("tests/golden/smoke_losses.json");
    if std::env::var("WAVE_UPDATE_GOLDEN").as_deref() == Ok("1") {
        let json = serde_json::json!({ "config": "configs/smoke.toml", "losses": losses, "eval_accuracy": eval_accuracy });
        std::fs::write(
            &golden_path,
            serde_json::to_string_pretty(&json).expect("json") + "\n",
        )
        .expect("write golden");
        return;
    }
    let golden: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&golden_path).expect("golden file"))
            .expect("golden json");
    let want: Vec<(u64, f64)> = serde_json::from_value(golden["losses"].clone()).expect("losses");
    assert_eq!(losses.len(), want.len(), "number of logged steps");
    for ((step, got), (want_step, want)) in losses.iter().zip(&want) {
        assert_eq!(step, want_step);
        assert!(
            (got - want).abs() <= 1e-3 * want.abs(),
            "step {step}: loss {got}, golden {want}"
        );
    }
    let want_accuracy = golden["eval_accuracy"].as_f64().expect("golden accuracy");
    assert!(
        (eval_accuracy - want_accuracy).abs() <= 0.01,
        "eval accuracy {eval_accuracy}, golden {want_accuracy}"
    );
}
