//! The token loss writes the tied projection's backward pass out by hand: its loss and every
//! parameter gradient must be what autograd gives for the cross-entropy of the head's logits.

use std::collections::BTreeMap;

use tch::{nn, Device, Kind, Reduction, Tensor};
use wave_model::{Head, Mode, ModelConfig, PositionEncoding, ToReal, WaveNetwork};
use wave_train::objective::TokenLoss;

/// BERT's vocabulary at a small width: 30,522 x 16 logits per token make the loss run in
/// several chunks once there are more than a few hundred tokens.
fn network(head: Head) -> (nn::VarStore, WaveNetwork) {
    tch::manual_seed(21);
    let vs = nn::VarStore::new(Device::Cpu);
    let cfg = ModelConfig {
        vocab_size: 30522,
        d_model: 16,
        n_layers: 1,
        mode: Mode::Modulation,
        to_real: ToReal::Concat,
        position: PositionEncoding::Learned,
        max_positions: 64,
        dropout: 0.0,
        head,
        ..Default::default()
    };
    let net = WaveNetwork::new(&vs.root(), &cfg).expect("valid config");
    (vs, net)
}

/// Every parameter's dense gradient, then cleared.
fn take_gradients(vs: &nn::VarStore) -> BTreeMap<String, Tensor> {
    let mut out = BTreeMap::new();
    for (name, var) in vs.variables() {
        let mut grad = var.grad();
        if grad.defined() {
            out.insert(name, grad.to_dense(None, false).copy());
            let _ = grad.zero_();
        }
    }
    out
}

/// Compares the token loss with autograd's cross-entropy over `tokens` tokens (every other one
/// supervised), matrix products in `compute`; gradients within `relative` of their largest entry.
fn check(head: Head, tokens: i64, compute: Kind, relative: f64) {
    let (vs, mut net) = network(head);
    net.set_compute_kind(compute).expect("compute kind");
    tch::manual_seed(5);
    let ids = Tensor::randint_low(1, 30522, [tokens / 32, 32], (Kind::Int64, Device::Cpu));
    let mask = ids.ones_like();
    // Every other token supervised, as a loss sees them: gathered features and their targets.
    let at = Tensor::arange_start_step(0, tokens, 2, (Kind::Int64, Device::Cpu));
    let targets = Tensor::randint_low(0, 30522, [at.size()[0]], (Kind::Int64, Device::Cpu));
    let scale = 1.0 / 7.0;

    let features = net.encode_at(&ids, &mask, &at, None).expect("forward");
    let want_loss = net
        .lm_logits(&features)
        .expect("logits")
        .cross_entropy_loss::<Tensor>(&targets, None, Reduction::Sum, -100, 0.0);
    (&want_loss * scale).backward();
    let want = take_gradients(&vs);

    let loss = TokenLoss::default();
    let features = net.encode_at(&ids, &mask, &at, None).expect("forward");
    let (got_loss, _) = loss
        .compute(&net, &features, &targets, Some(scale))
        .expect("loss");
    let got = take_gradients(&vs);

    let want_loss = want_loss.double_value(&[]);
    assert!(
        (got_loss - want_loss).abs() <= relative * want_loss.abs(),
        "{head:?}: loss {got_loss} vs autograd {want_loss}"
    );
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>(),
        "{head:?}: parameters with gradients"
    );
    for (name, g) in &want {
        let bound = relative * g.abs().max().double_value(&[]).max(1e-3);
        let diff = (g - &got[name]).abs().max().double_value(&[]);
        assert!(
            diff <= bound,
            "{head:?}: gradient of {name} differs by {diff} (bound {bound})"
        );
    }
    // Not vacuous: the table's gradient has the head's dense part, not only looked-up rows.
    let table = &got["token_embedding.weight"];
    let rows_touched = table
        .abs()
        .sum_dim_intlist([1i64].as_slice(), false, Kind::Float)
        .gt(0.0);
    assert!(rows_touched.sum(Kind::Int64).int64_value(&[]) > 30_000);

    // A second step into the now existing (zeroed) gradients gives the same again.
    let features = net.encode_at(&ids, &mask, &at, None).expect("forward");
    loss.compute(&net, &features, &targets, Some(scale))
        .expect("loss");
    let again = take_gradients(&vs);
    for (name, g) in &got {
        let diff = (g - &again[name]).abs().max().double_value(&[]);
        assert_eq!(
            diff, 0.0,
            "{head:?}: second step's gradient of {name} differs"
        );
    }
}

#[test]
fn masked_lm_loss_and_gradients_equal_autograd_cross_entropy_in_one_chunk() {
    check(Head::MaskedLm, 128, Kind::Float, 1e-4);
}

#[test]
fn causal_lm_loss_and_gradients_equal_autograd_cross_entropy_over_several_chunks() {
    // 640 supervised tokens, chunks of 137: five chunks, the last one partial. Relative to the
    // largest entry: the chunks add into the table's gradient one after the other, where autograd
    // sums all tokens in one product (measured: ~1e-5 apart).
    check(Head::CausalLm, 1280, Kind::Float, 1e-4);
}

#[test]
fn with_bf16_products_the_loss_and_gradients_follow_autograd_within_bf16_rounding() {
    check(Head::MaskedLm, 256, Kind::BFloat16, 2e-2);
}

#[test]
fn evaluation_counts_the_arg_max_hits_of_the_head_logits() {
    let (_vs, net) = network(Head::MaskedLm);
    tch::manual_seed(6);
    let ids = Tensor::randint_low(1, 30522, [4, 32], (Kind::Int64, Device::Cpu));
    let at = Tensor::arange(128, (Kind::Int64, Device::Cpu));
    let features =
        tch::no_grad(|| net.encode_at(&ids, &ids.ones_like(), &at, None)).expect("forward");
    let logits = tch::no_grad(|| net.lm_logits(&features)).expect("logits");
    // Half the targets are the arg-max, half are not.
    let best = logits.argmax(-1, false);
    let targets = Tensor::cat(
        &[
            best.narrow(0, 0, 64),
            (best.narrow(0, 64, 64) + 1).remainder(30522),
        ],
        0,
    );
    let (_, correct) =
        tch::no_grad(|| TokenLoss::default().compute(&net, &features, &targets, None))
            .expect("loss");
    assert_eq!(correct, 64);
}
