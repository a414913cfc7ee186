//! Unpadded (varlen) training follows the padded trajectory: the same losses step by step, with
//! dropout on, up to the rounding of a different summation order.

mod common;

use common::*;

#[test]
fn unpadded_and_padded_training_follow_the_same_loss_curve() {
    let Some(data) = agnews_test_split() else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut curves = Vec::new();
    for unpadded in [true, false] {
        let run = tmp.path().join(format!("unpadded-{unpadded}"));
        let unpadded_set = format!("train.unpadded={unpadded}");
        let args = smoke_train_args(
            data,
            &run,
            &[
                &unpadded_set,
                // As in the rank-parity tests: Adam turns last-bit differences into whole steps on
                // near-zero gradients; at lr 3e-3 that drift stays well below the tolerance.
                "train.lr=3e-3",
                "train.max_steps=30",
                "train.log_every_steps=1",
                "train.eval_every_steps=0",
                "checkpoint.every_steps=0",
            ],
        );
        ok(&wave_dist(
            &args.iter().map(String::as_str).collect::<Vec<_>>(),
        ));
        curves.push(train_losses(&run));
    }
    let (unpadded, padded) = (&curves[0], &curves[1]);
    assert_eq!(unpadded.len(), 30);
    assert_eq!(unpadded.len(), padded.len());
    for ((step, a), (_, b)) in unpadded.iter().zip(padded) {
        assert!(
            (a - b).abs() <= 1e-4 * b.abs(),
            "step {step}: unpadded loss {a}, padded {b}"
        );
    }
}
