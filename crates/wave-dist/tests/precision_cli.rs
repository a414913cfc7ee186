//! `train.precision = "bf16"`: matrix products in bfloat16 with fp32 master weights, optimizer,
//! norm block and loss. On the CPU (emulated bf16) it must train and stay close to fp32; speed
//! and memory are GPU checks (`launch/gpu-check.sh`).

mod common;

use common::*;

#[test]
fn bf16_training_follows_the_fp32_loss_curve() {
    let Some(data) = agnews_test_split() else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut curves = Vec::new();
    for precision in ["fp32", "bf16"] {
        let run = tmp.path().join(precision);
        let precision_set = format!("train.precision={precision:?}");
        let args = smoke_train_args(
            data,
            &run,
            &[
                &precision_set,
                "train.max_steps=120",
                "train.log_every_steps=20",
                "train.eval_every_steps=0",
                "checkpoint.every_steps=0",
            ],
        );
        let out = wave_dist(&args.iter().map(String::as_str).collect::<Vec<_>>());
        let s = summary(&ok(&out));
        assert!(
            s["eval"]["accuracy"].as_f64().expect("accuracy") > 0.4,
            "{precision}: {s}"
        );
        curves.push(train_losses(&run));
    }
    let (fp32, bf16) = (&curves[0], &curves[1]);
    assert_eq!(fp32.len(), 6);
    assert_eq!(fp32.len(), bf16.len());
    for ((step, a), (_, b)) in fp32.iter().zip(bf16) {
        assert!(b.is_finite(), "step {step}: bf16 loss {b}");
        assert!(
            (a - b).abs() <= 0.05 * a,
            "step {step}: bf16 loss {b}, fp32 {a}"
        );
    }
    assert!(bf16[5].1 < bf16[0].1 - 0.1, "bf16 learns: {bf16:?}");
    assert_ne!(fp32, bf16, "bf16 ran in bf16");
}
