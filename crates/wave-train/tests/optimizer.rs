//! AdamW and the learning-rate schedule, pinned to PyTorch's numbers.

use tch::{Device, Kind, Tensor};
use wave_train::optim::{lr_at, AdamW};
use wave_train::{Schedule, TrainConfig};

fn leaf(values: &[f64], shape: &[i64]) -> Tensor {
    Tensor::from_slice(values)
        .view(shape)
        .set_requires_grad(true)
}

/// Gives `param` exactly `grad` as its gradient (d/dp sum(p * g) = g).
fn set_grad(param: &Tensor, grad: &[f64]) {
    let g = Tensor::from_slice(grad).view(param.size().as_slice());
    (param * g).sum(Kind::Double).backward();
}

fn assert_close(t: &Tensor, want: &[f64]) {
    let got: Vec<f64> = Vec::<f64>::try_from(t.flatten(0, -1)).expect("f64 values");
    for (g, w) in got.iter().zip(want) {
        assert!((g - w).abs() < 1e-12, "got {got:?}, want {want:?}");
    }
}

#[test]
fn adamw_matches_pytorch_with_decay_on_matrices_only() {
    // PyTorch 2.11:
    //   p = Parameter(tensor([[1.0, -2.0], [3.0, 0.5]], dtype=float64)); b = Parameter(tensor([0.25, -0.75], dtype=float64))
    //   opt = AdamW([{'params': [p], 'weight_decay': 0.01}, {'params': [b], 'weight_decay': 0.0}], lr=0.1)
    //   three steps with the gradients below → the values asserted here.
    let p = leaf(&[1.0, -2.0, 3.0, 0.5], &[2, 2]);
    let b = leaf(&[0.25, -0.75], &[2]);
    let cfg = TrainConfig {
        weight_decay: 0.01,
        ..Default::default()
    };
    let mut opt = AdamW::new(
        vec![
            ("b".into(), b.shallow_clone()),
            ("p".into(), p.shallow_clone()),
        ],
        &cfg,
    );
    let grads: [([f64; 4], [f64; 2]); 3] = [
        ([0.5, -1.0, 2.0, 0.1], [1.0, -0.5]),
        ([0.3, 0.2, -1.0, 0.4], [0.2, 0.2]),
        ([-0.1, 0.9, 0.5, -0.3], [-0.4, 1.5]),
    ];
    for (gp, gb) in grads {
        opt.zero_grad();
        set_grad(&p, &gp);
        set_grad(&b, &gb);
        opt.step(0.1);
    }
    assert_eq!(opt.steps(), 3);
    assert_close(
        &p,
        &[
            0.7394092175409823,
            -1.8558423461266214,
            2.8305589128417403,
            0.29268137091568736,
        ],
    );
    assert_close(&b, &[0.03526052917695257, -0.6665503293054988]);
}

#[test]
fn adamw_state_round_trips_exactly() {
    let p = leaf(&[1.0, 2.0, 3.0, 4.0], &[2, 2]);
    let cfg = TrainConfig::default();
    let mut opt = AdamW::new(vec![("p".into(), p.shallow_clone())], &cfg);
    set_grad(&p, &[0.1, 0.2, 0.3, 0.4]);
    opt.step(0.01);
    let (state, step) = opt.state();
    let copy: Vec<(String, Tensor)> = state.iter().map(|(n, t)| (n.clone(), t.copy())).collect();
    let q = leaf(&[1.0, 2.0, 3.0, 4.0], &[2, 2]);
    let mut restored = AdamW::new(vec![("p".into(), q.shallow_clone())], &cfg);
    restored.load_state(&copy, step).expect("same shapes");
    let (again, again_step) = restored.state();
    assert_eq!(again_step, 1);
    for ((_, a), (_, b)) in state.iter().zip(&again) {
        assert!(a.equal(b));
    }
    let wrong = vec![(
        "p.exp_avg".to_string(),
        Tensor::zeros([3], (Kind::Double, Device::Cpu)),
    )];
    assert!(restored.load_state(&wrong, 1).is_err());
}

#[test]
fn gradient_clipping_caps_the_global_norm_and_reports_it_unclipped() {
    let p = leaf(&[0.0, 0.0], &[2]);
    let mut opt = AdamW::new(
        vec![("p".into(), p.shallow_clone())],
        &TrainConfig::default(),
    );
    set_grad(&p, &[3.0, 4.0]);
    assert!((opt.clip_grad_norm(1.0) - 5.0).abs() < 1e-9);
    assert_close(
        &p.grad(),
        &[0.6 * (1.0 / (1.0 + 2e-7)), 0.8 * (1.0 / (1.0 + 2e-7))],
    );
}

#[test]
fn learning_rate_warms_up_linearly_then_decays_to_min_lr() {
    let cfg = TrainConfig {
        lr: 1e-3,
        min_lr: 1e-4,
        warmup_steps: 10,
        schedule: Schedule::Linear,
        ..Default::default()
    };
    assert!((lr_at(&cfg, 0, 110) - 1e-4).abs() < 1e-15);
    assert!((lr_at(&cfg, 9, 110) - 1e-3).abs() < 1e-15);
    assert!((lr_at(&cfg, 60, 110) - 5.5e-4).abs() < 1e-12);
    assert!((lr_at(&cfg, 110, 110) - 1e-4).abs() < 1e-15);
    let cosine = TrainConfig {
        schedule: Schedule::Cosine,
        ..cfg.clone()
    };
    assert!(
        (lr_at(&cosine, 60, 110) - 5.5e-4).abs() < 1e-12,
        "cosine is at the midpoint halfway"
    );
    assert!(lr_at(&cosine, 30, 110) > lr_at(&cfg, 30, 110));
    let constant = TrainConfig {
        schedule: Schedule::Constant,
        ..cfg
    };
    assert_eq!(lr_at(&constant, 100, 110), 1e-3);
}

#[test]
fn adamw_slice_by_slice_gives_the_bits_of_the_whole_tensor_update() {
    // The update as it reads on whole tensors with fresh temporaries (the form the PyTorch pins
    // above were written for); the optimizer runs it slice by slice through one reused buffer
    // and must not change a bit.
    fn reference(p: &Tensor, m: &mut Tensor, v: &mut Tensor, g: &Tensor, t: i32) {
        let (lr, b1, b2, eps) = (3e-3, 0.9f64, 0.999f64, 1e-8);
        // Weight decay (0.01) applies to matrices only.
        let wd = if p.dim() >= 2 { 0.01 } else { 0.0 };
        let step_size = lr / (1.0 - b1.powi(t));
        let bias2 = 1.0 - b2.powi(t);
        tch::no_grad(|| {
            if wd > 0.0 {
                let _ = p.shallow_clone().g_mul_scalar_(1.0 - lr * wd);
            }
            let _ = m.lerp_(g, 1.0 - b1);
            let _ = v.g_mul_scalar_(b2).addcmul_(g, &(g * (1.0 - b2)));
            let mut denom = v.sqrt();
            let _ = denom
                .g_div_scalar_(bias2.sqrt())
                .g_add_scalar_(eps)
                .g_div_scalar_(-step_size);
            let _ = p.shallow_clone().addcdiv_(m, &denom);
        });
    }
    tch::manual_seed(3);
    let opts = (Kind::Float, Device::Cpu);
    // The first shape spans three slices (65,536 elements each) and a partial fourth; odd sizes
    // exercise the kernels' scalar tails.
    let shapes: [&[i64]; 3] = [&[5001, 37], &[37, 5], &[13]];
    let params: Vec<Tensor> = shapes
        .iter()
        .map(|s| Tensor::randn(*s, opts).set_requires_grad(true))
        .collect();
    let copies: Vec<Tensor> = params.iter().map(|p| p.detach().copy()).collect();
    let mut moments: Vec<(Tensor, Tensor)> = params
        .iter()
        .map(|p| (p.zeros_like(), p.zeros_like()))
        .collect();
    let cfg = TrainConfig {
        weight_decay: 0.01,
        ..Default::default()
    };
    let named = params
        .iter()
        .enumerate()
        .map(|(i, p)| (format!("p{i}"), p.shallow_clone()))
        .collect();
    let mut opt = AdamW::new(named, &cfg);
    for t in 1..=4 {
        opt.zero_grad();
        let grads: Vec<Tensor> = params
            .iter()
            .map(|p| Tensor::randn(p.size(), opts))
            .collect();
        for (p, g) in params.iter().zip(&grads) {
            (p * g).sum(Kind::Float).backward();
        }
        opt.step(3e-3);
        assert_eq!(copies.len(), grads.len());
        for ((c, (m, v)), g) in copies.iter().zip(moments.iter_mut()).zip(&grads) {
            reference(c, m, v, g, t);
        }
        for (p, c) in params.iter().zip(&copies) {
            assert!(
                p.detach().equal(c),
                "step {t}: parameters differ from the reference"
            );
        }
    }
}
