//! The varlen (packed) layout computes what the padded layout computes: same logits, token
//! features, gradients and dropout masks, within 1e-5, for every head, mode and complex-to-real
//! map, on batches of unequal lengths with empty rows and holes in the mask.

use std::collections::BTreeMap;

use tch::{nn, Device, Kind, Tensor};
use wave_model::noise::dropout_stream;
use wave_model::{
    Head, Mode, ModelConfig, Packed, Pooling, PositionEncoding, SampleNoise, ToReal, WaveNetwork,
};

const TOLERANCE: f64 = 1e-5;

fn config(mode: Mode, to_real: ToReal, head: Head, pooling: Pooling) -> ModelConfig {
    ModelConfig {
        vocab_size: 60,
        d_model: 16,
        n_layers: 2,
        mode,
        to_real,
        position: PositionEncoding::Learned,
        max_positions: 16,
        num_classes: 3,
        dropout: 0.2,
        head,
        pooling,
        ..Default::default()
    }
}

fn build(cfg: &ModelConfig) -> (nn::VarStore, WaveNetwork) {
    tch::manual_seed(11);
    let vs = nn::VarStore::new(Device::Cpu);
    let net = WaveNetwork::new(&vs.root(), cfg).expect("valid config");
    (vs, net)
}

/// Five rows of unequal length (12, 1, 0, 7 with a hole at position 3, 9), padded to 12.
fn batch() -> (Tensor, Tensor) {
    tch::manual_seed(3);
    let ids = Tensor::randint_low(1, 60, [5, 12], (Kind::Int64, Device::Cpu));
    let lengths = [12i64, 1, 0, 7, 9];
    let mut mask = vec![0i64; 5 * 12];
    for (row, &len) in lengths.iter().enumerate() {
        for pos in 0..len as usize {
            mask[row * 12 + pos] = 1;
        }
    }
    mask[3 * 12 + 3] = 0;
    let mask = Tensor::from_slice(&mask).view([5, 12]);
    // Padding holds [PAD] = 0, as the loader writes it.
    (ids * &mask, mask)
}

fn noise(rows: i64) -> SampleNoise {
    let samples: Vec<u64> = (0..rows as u64).map(|r| 1000 + 7 * r).collect();
    SampleNoise::new(5, 9, &samples, Device::Cpu)
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.size(), b.size(), "shapes differ");
    if a.numel() == 0 {
        return 0.0;
    }
    (a - b).abs().max().double_value(&[])
}

fn classification_configs() -> Vec<ModelConfig> {
    let mut out = Vec::new();
    for mode in [Mode::Interference, Mode::Modulation] {
        for to_real in [ToReal::Concat, ToReal::Magnitude] {
            for pooling in [Pooling::Mean, Pooling::First] {
                out.push(config(mode, to_real, Head::Classification, pooling));
            }
        }
    }
    out
}

/// Every parameter's gradient (dense), after `loss` has been back-propagated, then cleared.
fn take_gradients(vs: &nn::VarStore) -> BTreeMap<String, Tensor> {
    let mut out = BTreeMap::new();
    for (name, var) in vs.variables() {
        let mut grad = var.grad();
        if !grad.defined() {
            continue;
        }
        let dense = if grad.is_sparse() {
            grad.to_dense(None, false)
        } else {
            grad.copy()
        };
        out.insert(name, dense);
        let _ = grad.zero_();
    }
    out
}

fn assert_same_gradients(a: &BTreeMap<String, Tensor>, b: &BTreeMap<String, Tensor>, what: &str) {
    assert_eq!(
        a.keys().collect::<Vec<_>>(),
        b.keys().collect::<Vec<_>>(),
        "{what}: parameters with gradients"
    );
    for (name, ga) in a {
        let diff = max_abs_diff(ga, &b[name]);
        assert!(
            diff <= TOLERANCE,
            "{what}: gradient of {name} differs by {diff}"
        );
    }
    // Not vacuous: the loss reaches the embedding.
    let emb = &a["token_embedding.weight"];
    assert!(emb.abs().sum(Kind::Double).double_value(&[]) > 0.0);
}

#[test]
fn classification_logits_and_gradients_equal_the_padded_path_with_dropout() {
    let (ids, mask) = batch();
    let packed = Packed::from_padded(&ids, &mask).expect("pack");
    let labels = Tensor::from_slice(&[0i64, 2, 1, 1, 0]);
    for cfg in classification_configs() {
        let (vs, net) = build(&cfg);
        let what = format!("{:?}/{:?}/{:?}", cfg.mode, cfg.to_real, cfg.pooling);
        let noise = noise(5);
        let padded = net.classify(&ids, &mask, Some(&noise)).expect("padded");
        padded.cross_entropy_for_logits(&labels).backward();
        let padded_grads = take_gradients(&vs);
        let varlen = net.classify_packed(&packed, Some(&noise)).expect("packed");
        varlen.cross_entropy_for_logits(&labels).backward();
        let varlen_grads = take_gradients(&vs);
        let diff = max_abs_diff(&padded, &varlen);
        assert!(diff <= TOLERANCE, "{what}: logits differ by {diff}");
        assert_same_gradients(&padded_grads, &varlen_grads, &what);

        // Without dropout too (inference), and the dropout really changed the logits.
        let plain = net.classify_packed(&packed, None).expect("packed");
        let diff = max_abs_diff(&net.classify(&ids, &mask, None).expect("padded"), &plain);
        assert!(
            diff <= TOLERANCE,
            "{what}: inference logits differ by {diff}"
        );
        assert!(
            max_abs_diff(&plain, &varlen) > 1e-4,
            "{what}: dropout had no effect"
        );
    }
}

#[test]
fn token_features_equal_the_padded_path_including_causal_prefix_norms() {
    let (ids, mask) = batch();
    let packed = Packed::from_padded(&ids, &mask).expect("pack");
    let mut cfgs = classification_configs();
    for mode in [Mode::Interference, Mode::Modulation] {
        for head in [Head::MaskedLm, Head::CausalLm] {
            cfgs.push(config(mode, ToReal::Concat, head, Pooling::Mean));
        }
    }
    // Magnitude keeps per-token information under causal prefix norms only after interference.
    cfgs.push(config(
        Mode::Interference,
        ToReal::Magnitude,
        Head::CausalLm,
        Pooling::Mean,
    ));
    for cfg in cfgs {
        let (_vs, net) = build(&cfg);
        let what = format!("{:?}/{:?}/{:?}", cfg.head, cfg.mode, cfg.to_real);
        let noise = noise(5);
        let padded = net.encode(&ids, &mask, Some(&noise)).expect("padded");
        let varlen = net.encode_packed(&packed, Some(&noise)).expect("packed");
        assert_eq!(varlen.size(), vec![packed.tokens(), 16]);
        let diff = max_abs_diff(&padded, &packed.unpack(&varlen));
        assert!(diff <= TOLERANCE, "{what}: token features differ by {diff}");
    }
}

#[test]
fn causal_prefix_norms_of_a_short_row_after_long_ones_keep_their_precision() {
    // A running sum over the whole packed batch in f32 would bury the short last row's small
    // prefix under the long rows' large totals; the per-row prefix must stay exact.
    let cfg = config(
        Mode::Modulation,
        ToReal::Concat,
        Head::CausalLm,
        Pooling::Mean,
    );
    let cfg = ModelConfig {
        max_positions: 512,
        dropout: 0.0,
        ..cfg
    };
    let (_vs, net) = build(&cfg);
    tch::manual_seed(4);
    let ids = Tensor::randint_low(1, 60, [9, 512], (Kind::Int64, Device::Cpu));
    let lengths = Tensor::from_slice(&[512i64, 512, 512, 512, 512, 512, 512, 512, 3]);
    let mask = Tensor::arange(512, (Kind::Int64, Device::Cpu))
        .unsqueeze(0)
        .lt_tensor(&lengths.unsqueeze(1))
        .to_kind(Kind::Int64);
    let packed = Packed::from_padded(&ids, &mask).expect("pack");
    let padded = net.encode(&ids, &mask, None).expect("padded");
    let varlen = packed.unpack(&net.encode_packed(&packed, None).expect("packed"));
    let diff = max_abs_diff(&padded.get(8), &varlen.get(8));
    assert!(diff <= TOLERANCE, "short row differs by {diff}");
}

#[test]
fn token_logits_at_gathered_positions_equal_the_padded_path() {
    let (ids, mask) = batch();
    let packed = Packed::from_padded(&ids, &mask).expect("pack");
    let cfg = config(
        Mode::Modulation,
        ToReal::Concat,
        Head::MaskedLm,
        Pooling::Mean,
    );
    let (_vs, net) = build(&cfg);
    // Flat padded positions of some real tokens (row 0 pos 5, row 1 pos 0, row 3 pos 6).
    let flat = Tensor::from_slice(&[5i64, 12, 3 * 12 + 6]);
    let index = packed.packed_index_of(&flat).expect("real tokens");
    let padded = net.encode(&ids, &mask, None).expect("padded");
    let varlen = net.encode_packed(&packed, None).expect("packed");
    let want = net
        .lm_logits(&padded.view([-1, 16]).index_select(0, &flat))
        .expect("logits");
    let got = net
        .lm_logits(&varlen.index_select(0, &index))
        .expect("logits");
    let diff = max_abs_diff(&want, &got);
    assert!(diff <= TOLERANCE, "logits differ by {diff}");
    // A padding position has no packed token.
    let err = packed
        .packed_index_of(&Tensor::from_slice(&[2i64 * 12]))
        .expect_err("padding")
        .to_string();
    assert!(err.contains("padding"), "{err}");
}

#[test]
fn packed_dropout_masks_are_the_padded_masks_at_the_same_tokens() {
    let (ids, mask) = batch();
    let packed = Packed::from_padded(&ids, &mask).expect("pack");
    let noise = noise(5);
    let stream = dropout_stream(1);
    let padded = noise.dropout(
        &Tensor::ones([5, 12, 32], (Kind::Float, Device::Cpu)),
        0.3,
        stream,
    );
    let varlen = noise.dropout_at(
        &Tensor::ones([packed.tokens(), 32], (Kind::Float, Device::Cpu)),
        0.3,
        stream,
        packed.rows(),
        packed.positions(),
    );
    let padded_at_tokens = padded
        .view([-1, 32])
        .index_select(0, &mask.reshape([-1]).nonzero().reshape([-1]));
    assert!(
        padded_at_tokens.equal(&varlen),
        "dropout masks differ between layouts"
    );
    let dropped = varlen.eq(0.0).to_kind(Kind::Double).mean(Kind::Double);
    assert!((dropped.double_value(&[]) - 0.3).abs() < 0.05);
}

#[test]
fn packing_keeps_row_order_positions_and_lengths() {
    let (ids, mask) = batch();
    let packed = Packed::from_padded(&ids, &mask).expect("pack");
    assert_eq!(packed.batch(), 5);
    assert_eq!(packed.seq_len(), 12);
    assert_eq!(packed.tokens(), 12 + 1 + 6 + 9);
    assert_eq!(
        Vec::<i64>::try_from(packed.lengths()).expect("lengths"),
        vec![12, 1, 0, 6, 9]
    );
    let rows = Vec::<i64>::try_from(packed.rows()).expect("rows");
    let positions = Vec::<i64>::try_from(packed.positions()).expect("positions");
    assert_eq!(rows.len(), positions.len());
    // Row 3 skips its hole at position 3.
    let row3: Vec<i64> = rows
        .iter()
        .zip(&positions)
        .filter(|(r, _)| **r == 3)
        .map(|(_, p)| *p)
        .collect();
    assert_eq!(row3, vec![0, 1, 2, 4, 5, 6]);
    assert!(rows.windows(2).all(|w| w[0] <= w[1]), "rows in order");
    assert!(packed.ids().equal(&ids.masked_select(&mask.ne(0))));
    // Mismatched shapes are refused.
    assert!(Packed::from_padded(&ids, &mask.narrow(1, 0, 5)).is_err());
}

#[test]
fn an_all_padding_batch_gives_the_padded_logits() {
    let ids = Tensor::zeros([2, 4], (Kind::Int64, Device::Cpu));
    let packed = Packed::from_padded(&ids, &ids).expect("pack");
    assert_eq!(packed.tokens(), 0);
    for cfg in classification_configs() {
        let (_vs, net) = build(&cfg);
        let padded = net.classify(&ids, &ids, None).expect("padded");
        let varlen = net.classify_packed(&packed, None).expect("packed");
        let diff = max_abs_diff(&padded, &varlen);
        assert!(diff <= TOLERANCE, "{cfg:?}: {diff}");
    }
}

/// Every valid combination of mode, map to real features and head.
fn all_configs() -> Vec<ModelConfig> {
    let mut cfgs = Vec::new();
    for mode in [Mode::Interference, Mode::Modulation] {
        for to_real in [ToReal::Concat, ToReal::Magnitude] {
            for head in [Head::Classification, Head::MaskedLm, Head::CausalLm] {
                cfgs.push(config(mode, to_real, head, Pooling::Mean));
            }
        }
    }
    cfgs.retain(|c| c.validate().is_ok());
    assert_eq!(cfgs.len(), 10, "valid configs");
    cfgs
}

#[test]
fn features_of_gathered_tokens_equal_those_rows_of_the_whole_batch_with_the_same_dropout_and_gradients(
) {
    // The last layer finishes only the gathered tokens (a masked-LM step's 15%): its outputs,
    // dropout masks and the gradients they send back must be those of the whole batch's rows.
    let (ids, mask) = batch();
    let packed = Packed::from_padded(&ids, &mask).expect("pack");
    // Real tokens in rows 0, 1, 3 and 4, out of order and with a repeat.
    let flat = Tensor::from_slice(&[5i64, 12, 3 * 12 + 6, 0, 4 * 12 + 8, 11, 5]);
    let index = packed.packed_index_of(&flat).expect("real tokens");
    tch::manual_seed(8);
    let weights = Tensor::randn([7, 16], (Kind::Double, Device::Cpu));
    for cfg in all_configs() {
        let what = format!("{:?}/{:?}/{:?}", cfg.head, cfg.mode, cfg.to_real);
        // In f64: the whole batch sums its weight gradients over more (zero) rows than the
        // gathered tokens do, and in f32 that reordering alone moves them by ~1e-5.
        let (mut vs, net) = build(&cfg);
        vs.double();
        let noise = noise(5);
        let whole = net.encode(&ids, &mask, Some(&noise)).expect("padded");
        let want = whole.view([-1, 16]).index_select(0, &flat);
        (&want * &weights).sum(Kind::Double).backward();
        let want_grads = take_gradients(&vs);
        for (layout, got) in [
            ("padded", net.encode_at(&ids, &mask, &flat, Some(&noise))),
            (
                "packed",
                net.encode_packed_at(&packed, &index, Some(&noise)),
            ),
        ] {
            let got = got.expect("gathered forward");
            let diff = max_abs_diff(&want, &got);
            assert!(
                diff <= TOLERANCE,
                "{what} {layout}: features differ by {diff}"
            );
            (&got * &weights).sum(Kind::Double).backward();
            assert_same_gradients(
                &want_grads,
                &take_gradients(&vs),
                &format!("{what} {layout}"),
            );
        }
    }
}
