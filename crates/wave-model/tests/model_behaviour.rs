//! Behaviours of the Wave Network that users and the trainer rely on.

use tch::{nn, Device, Kind, Tensor};
use wave_model::wave::{combine, imaginary_part, modulation_magnitude};
use wave_model::{Head, Layout, Mode, ModelConfig, Pooling, PositionEncoding, ToReal, WaveNetwork};

/// A mask for [`Layout::Padded`] in the pure functions of `wave`, whose inputs are already
/// masked (their reductions do not read it).
fn no_mask() -> Tensor {
    Tensor::ones([1], (Kind::Float, Device::Cpu))
}

fn config(mode: Mode, to_real: ToReal, position: PositionEncoding) -> ModelConfig {
    ModelConfig {
        vocab_size: 50,
        d_model: 16,
        n_layers: 2,
        mode,
        to_real,
        position,
        max_positions: 32,
        num_classes: 3,
        dropout: 0.0,
        ..Default::default()
    }
}

fn all_configs() -> Vec<ModelConfig> {
    let mut out = Vec::new();
    for mode in [Mode::Interference, Mode::Modulation] {
        for to_real in [ToReal::Concat, ToReal::Magnitude] {
            for position in [
                PositionEncoding::None,
                PositionEncoding::Learned,
                PositionEncoding::Sinusoidal,
            ] {
                out.push(config(mode, to_real, position));
            }
        }
    }
    out
}

fn build(cfg: &ModelConfig) -> (nn::VarStore, WaveNetwork) {
    tch::manual_seed(7);
    let vs = nn::VarStore::new(Device::Cpu);
    let net = WaveNetwork::new(&vs.root(), cfg).expect("valid config");
    (vs, net)
}

fn ids(rows: &[&[i64]]) -> Tensor {
    let t = rows[0].len() as i64;
    let flat: Vec<i64> = rows.iter().flat_map(|r| r.iter().copied()).collect();
    Tensor::from_slice(&flat).view([rows.len() as i64, t])
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

/// The paper's polar form, in f64: `G e^{i alpha}` with `alpha = atan2(sqrt(1 - (u/G)^2), u/G)`.
fn polar(u: &Tensor) -> (Tensor, Tensor) {
    let g = u
        .square()
        .sum_dim_intlist(&[1i64][..], true, None::<Kind>)
        .sqrt();
    let c = u / &g;
    let alpha = (c.square().neg() + 1.0).clamp_min(0.0).sqrt().atan2(&c);
    (&g * alpha.cos(), &g * alpha.sin())
}

#[test]
fn cartesian_form_equals_the_papers_polar_formula_in_both_modes() {
    tch::manual_seed(1);
    let opts = (Kind::Double, Device::Cpu);
    let u = Tensor::randn([3, 9, 8], opts);
    let v = Tensor::randn([3, 9, 8], opts);
    let (s_u, s_v) = (
        imaginary_part(&u, Layout::Padded(&no_mask()), false, 1e-6),
        imaginary_part(&v, Layout::Padded(&no_mask()), false, 1e-6),
    );
    let ((ru, iu), (rv, iv)) = (polar(&u), polar(&v));
    for mode in [Mode::Interference, Mode::Modulation] {
        let (re, im) = combine(mode, &u, &s_u, &v, &s_v);
        let (want_re, want_im) = match mode {
            Mode::Interference => (&ru + &rv, &iu + &iv),
            Mode::Modulation => (&ru * &rv - &iu * &iv, &ru * &iv + &rv * &iu),
        };
        assert!(max_abs_diff(&re, &want_re) < 1e-5, "{mode:?} real part");
        assert!(
            max_abs_diff(&im, &want_im) < 1e-5,
            "{mode:?} imaginary part"
        );
    }
}

#[test]
fn modulation_magnitude_shortcut_equals_the_general_path() {
    tch::manual_seed(2);
    let u = Tensor::randn([2, 11, 6], (Kind::Float, Device::Cpu));
    let v = Tensor::randn([2, 11, 6], (Kind::Float, Device::Cpu));
    let eps = 1e-6;
    let (re, im) = combine(
        Mode::Modulation,
        &u,
        &imaginary_part(&u, Layout::Padded(&no_mask()), false, eps),
        &v,
        &imaginary_part(&v, Layout::Padded(&no_mask()), false, eps),
    );
    let general = (re.square() + im.square() + eps).sqrt();
    let shortcut =
        modulation_magnitude(&u, &v, Layout::Padded(&no_mask()), eps).expand_as(&general);
    let rel = ((&general - &shortcut).abs() / &general)
        .max()
        .double_value(&[]);
    assert!(rel < 1e-5, "relative difference {rel}");
}

#[test]
fn norm_block_runs_in_fp32_for_half_precision_inputs() {
    let u = Tensor::randn([2, 4, 8], (Kind::Float, Device::Cpu)).to_kind(Kind::BFloat16);
    assert_eq!(
        imaginary_part(&u, Layout::Padded(&no_mask()), false, 1e-6).kind(),
        Kind::Float
    );
}

#[test]
fn appending_padding_does_not_change_outputs() {
    for cfg in all_configs() {
        let (_vs, net) = build(&cfg);
        let short = ids(&[&[5, 9, 3, 7, 11]]);
        let long = ids(&[&[5, 9, 3, 7, 11, 0, 0, 0]]);
        let short_mask = Tensor::ones([1, 5], (Kind::Int64, Device::Cpu));
        let long_mask = ids(&[&[1, 1, 1, 1, 1, 0, 0, 0]]);
        let a = net.classify(&short, &short_mask, None).expect("forward");
        let b = net.classify(&long, &long_mask, None).expect("forward");
        assert!(
            max_abs_diff(&a, &b) < 1e-5,
            "logits changed with padding for {cfg:?}"
        );
        let fa = net.encode(&short, &short_mask, None).expect("forward");
        let fb = net
            .encode(&long, &long_mask, None)
            .expect("forward")
            .narrow(1, 0, 5);
        assert!(
            max_abs_diff(&fa, &fb) < 1e-5,
            "token features changed with padding for {cfg:?}"
        );
    }
}

fn assert_finite_gradients(cfg: &ModelConfig, ids: &Tensor, mask: &Tensor, what: &str) {
    let (vs, net) = build(cfg);
    let rows = ids.size()[0] as u64;
    let noise = wave_model::SampleNoise::new(1, 0, &(0..rows).collect::<Vec<_>>(), ids.device());
    let logits = net.classify(ids, mask, Some(&noise)).expect("forward");
    assert!(
        bool::try_from(logits.isfinite().all()).expect("bool"),
        "{what}: logits not finite for {cfg:?}"
    );
    logits.sum(Kind::Float).backward();
    for (name, var) in vs.variables() {
        let grad = var.grad();
        if grad.defined() {
            // The token embedding's gradient is sparse (rows) on the CPU.
            let grad = if grad.is_sparse() {
                grad.to_dense(None, false)
            } else {
                grad
            };
            let finite = bool::try_from(grad.isfinite().all()).expect("bool");
            assert!(finite, "{what}: gradient of {name} not finite for {cfg:?}");
        }
    }
}

#[test]
fn gradients_stay_finite_for_one_token_identical_tokens_and_all_padding_rows() {
    for cfg in all_configs() {
        assert_finite_gradients(&cfg, &ids(&[&[42]]), &ids(&[&[1]]), "one-token input");
        assert_finite_gradients(
            &cfg,
            &ids(&[&[7, 7, 7, 7, 7, 7]]),
            &ids(&[&[1, 1, 1, 1, 1, 1]]),
            "identical tokens",
        );
        assert_finite_gradients(
            &cfg,
            &ids(&[&[3, 4, 5], &[0, 0, 0]]),
            &ids(&[&[1, 1, 1], &[0, 0, 0]]),
            "all-padding row",
        );
    }
}

#[test]
fn pooled_output_ignores_token_order_only_without_position_encoding() {
    for cfg in all_configs() {
        let (_vs, net) = build(&cfg);
        let mask = Tensor::ones([1, 6], (Kind::Int64, Device::Cpu));
        let a = net
            .classify(&ids(&[&[1, 2, 3, 4, 5, 6]]), &mask, None)
            .expect("forward");
        let b = net
            .classify(&ids(&[&[6, 4, 2, 5, 3, 1]]), &mask, None)
            .expect("forward");
        let diff = max_abs_diff(&a, &b);
        match cfg.position {
            PositionEncoding::None => assert!(
                diff < 1e-5,
                "order changed the output without positions: {cfg:?}"
            ),
            _ => assert!(
                diff > 1e-4,
                "order did not change the output with positions: {cfg:?}"
            ),
        }
    }
}

#[test]
fn first_token_pooling_reads_position_zero() {
    let cfg = ModelConfig {
        pooling: Pooling::First,
        ..config(Mode::Modulation, ToReal::Concat, PositionEncoding::None)
    };
    let (_vs, net) = build(&cfg);
    let mask = Tensor::ones([1, 3], (Kind::Int64, Device::Cpu));
    let features = net
        .encode(&ids(&[&[1, 2, 3]]), &mask, None)
        .expect("forward");
    assert!(max_abs_diff(&net.pool(&features, &mask), &features.select(1, 0)) == 0.0);
}

#[test]
fn causal_head_lets_a_position_see_only_itself_and_earlier_tokens() {
    let cfg = ModelConfig {
        head: Head::CausalLm,
        ..config(Mode::Modulation, ToReal::Concat, PositionEncoding::Learned)
    };
    let (_vs, net) = build(&cfg);
    let mask = Tensor::ones([1, 6], (Kind::Int64, Device::Cpu));
    let a = net
        .token_logits(&ids(&[&[1, 2, 3, 4, 5, 6]]), &mask, None)
        .expect("forward");
    let b = net
        .token_logits(&ids(&[&[1, 2, 3, 9, 9, 9]]), &mask, None)
        .expect("forward");
    assert_eq!(a.size(), vec![1, 6, 50]);
    assert!(
        max_abs_diff(&a.narrow(1, 0, 3), &b.narrow(1, 0, 3)) < 1e-5,
        "future tokens leaked"
    );
    assert!(max_abs_diff(&a.narrow(1, 3, 3), &b.narrow(1, 3, 3)) > 1e-4);
}

#[test]
fn masked_lm_head_is_tied_to_the_token_embedding() {
    let cfg = ModelConfig {
        head: Head::MaskedLm,
        ..config(Mode::Interference, ToReal::Concat, PositionEncoding::None)
    };
    let (vs, _net) = build(&cfg);
    let names: Vec<String> = vs.variables().into_keys().collect();
    assert!(!names
        .iter()
        .any(|n| n.contains("lm_head") && n.ends_with("weight") && n.contains("decoder")));
    let vocab_sized: Vec<&String> = names
        .iter()
        .filter(|n| vs.variables()[*n].size().first() == Some(&50))
        .collect();
    assert_eq!(
        vocab_sized.len(),
        2,
        "only the embedding and the output bias scale with the vocabulary: {vocab_sized:?}"
    );
}

#[test]
fn parameter_counts_match_the_built_network() {
    let mut cfgs = all_configs();
    cfgs.push(ModelConfig {
        head: Head::MaskedLm,
        ..config(Mode::Modulation, ToReal::Concat, PositionEncoding::Learned)
    });
    for cfg in cfgs {
        let (vs, _net) = build(&cfg);
        let built: i64 = vs
            .trainable_variables()
            .iter()
            .map(|t| t.numel() as i64)
            .sum();
        assert_eq!(built as usize, cfg.param_counts().total, "{cfg:?}");
    }
    let bert = ModelConfig {
        vocab_size: 30522,
        num_classes: 4,
        ..Default::default()
    };
    let counts = bert.param_counts();
    assert_eq!(counts.total - counts.non_embedding, 30522 * 768);
}

#[test]
fn invalid_configs_name_the_field() {
    let base = config(Mode::Modulation, ToReal::Concat, PositionEncoding::None);
    let cases = [
        (
            ModelConfig {
                d_model: 0,
                ..base.clone()
            },
            "model.d_model",
        ),
        (
            ModelConfig {
                n_layers: 0,
                ..base.clone()
            },
            "model.n_layers",
        ),
        (
            ModelConfig {
                dropout: 1.5,
                ..base.clone()
            },
            "model.dropout",
        ),
        (
            ModelConfig {
                num_classes: 1,
                ..base.clone()
            },
            "model.num_classes",
        ),
        (
            ModelConfig {
                vocab_size: 0,
                ..base.clone()
            },
            "model.vocab_size",
        ),
        (
            ModelConfig {
                head: Head::MaskedLm,
                to_real: ToReal::Magnitude,
                ..base.clone()
            },
            "model.to_real",
        ),
    ];
    for (cfg, field) in cases {
        let err = cfg.validate().expect_err("must be rejected").to_string();
        assert!(err.starts_with(field), "{err:?} should name {field}");
    }
}

#[test]
fn inputs_longer_than_the_position_table_are_rejected() {
    let (_vs, net) = build(&config(
        Mode::Modulation,
        ToReal::Concat,
        PositionEncoding::Learned,
    ));
    let long = Tensor::ones([1, 40], (Kind::Int64, Device::Cpu));
    let err = net
        .classify(&long, &long, None)
        .expect_err("too long")
        .to_string();
    assert!(err.contains("max_positions"), "{err}");
}

#[test]
fn bf16_products_stay_close_to_fp32_and_train_fp32_master_weights() {
    let cases = [
        config(Mode::Modulation, ToReal::Concat, PositionEncoding::Learned),
        config(Mode::Modulation, ToReal::Magnitude, PositionEncoding::None),
        ModelConfig {
            head: Head::CausalLm,
            ..config(
                Mode::Interference,
                ToReal::Concat,
                PositionEncoding::Sinusoidal,
            )
        },
    ];
    let input = ids(&[&[5, 9, 3, 7, 11, 2], &[4, 8, 15, 16, 0, 0]]);
    let mask = ids(&[&[1, 1, 1, 1, 1, 1], &[1, 1, 1, 1, 0, 0]]);
    for cfg in cases {
        let (vs, mut net) = build(&cfg);
        let out = |net: &WaveNetwork| match cfg.head {
            Head::Classification => net.classify(&input, &mask, None),
            _ => net.token_logits(&input, &mask, None),
        };
        let full = out(&net).expect("fp32");
        net.set_compute_kind(Kind::BFloat16).expect("bf16");
        let half = out(&net).expect("bf16");
        assert_eq!(half.kind(), Kind::Float, "outputs come back in fp32");
        assert!(bool::try_from(half.isfinite().all()).expect("bool"));
        let scale = full.abs().max().double_value(&[]).max(1.0);
        let diff = max_abs_diff(&full, &half);
        // bf16 keeps 8 significant bits: ~0.4% per product.
        assert!(
            diff <= 0.05 * scale,
            "{cfg:?}: bf16 off by {diff} (scale {scale})"
        );
        assert!(diff > 0.0, "{cfg:?}: bf16 changed nothing");
        half.sum(Kind::Float).backward();
        for (name, var) in vs.variables() {
            assert_eq!(var.kind(), Kind::Float, "{name}: master weights stay fp32");
            let grad = var.grad();
            if grad.defined() {
                let grad = if grad.is_sparse() {
                    grad.to_dense(None, false)
                } else {
                    grad
                };
                assert_eq!(grad.kind(), Kind::Float, "{name}: gradient kind");
                assert!(
                    bool::try_from(grad.isfinite().all()).expect("bool"),
                    "{name}"
                );
            }
        }
    }
    let (_vs, mut net) = build(&config(
        Mode::Modulation,
        ToReal::Concat,
        PositionEncoding::None,
    ));
    assert!(net.set_compute_kind(Kind::Int64).is_err());
}

#[test]
fn linear_layers_start_as_pytorch_initialises_them() {
    // PyTorch's nn.Linear: weight and bias uniform in ±1/sqrt(fan_in), so a weight's standard
    // deviation is 1/sqrt(3 fan_in). tch's default weight init is sqrt(6) = 2.45x wider.
    let cfg = ModelConfig {
        d_model: 256,
        ..config(Mode::Modulation, ToReal::Concat, PositionEncoding::None)
    };
    let (vs, _net) = build(&cfg);
    let mut linears = 0;
    for (name, t) in vs.variables() {
        let Some(layer) = name.strip_suffix(".weight") else {
            continue;
        };
        if t.dim() != 2 || name.contains("embedding") {
            continue;
        }
        linears += 1;
        let fan_in = t.size()[1] as f64;
        let bound = 1.0 / fan_in.sqrt();
        let largest = t.abs().max().double_value(&[]);
        assert!(
            largest <= bound,
            "{name}: |w| up to {largest}, bound {bound}"
        );
        let std = t.std(true).double_value(&[]);
        let want = bound / 3f64.sqrt();
        assert!(
            (std / want - 1.0).abs() < 0.1,
            "{name}: std {std}, PyTorch's {want}"
        );
        let bias = &vs.variables()[&format!("{layer}.bias")];
        let largest = bias.abs().max().double_value(&[]);
        assert!(
            largest <= bound,
            "{layer}.bias: up to {largest}, bound {bound}"
        );
    }
    // proj_u, proj_v, to_real, ffn_in, ffn_out in each of 2 layers, and the classifier.
    assert_eq!(linears, 11);
}
