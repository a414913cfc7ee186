//! Pretraining as a user runs it: masked and causal language modelling on packed rows, resumed,
//! on two ranks, then fine-tuning from the pretrained encoder, and the inputs that must be refused.

mod common;

use std::path::Path;

use common::*;

/// A seconds-long version of a shipped pretraining config on the packed test corpus.
fn lm_args(config: &str, data: &Path, run_dir: &Path, extra: &[&str]) -> Vec<String> {
    let mut sets = vec![
        format!("data.uri={:?}", data.to_str().expect("utf-8")),
        format!("train.run_dir={:?}", run_dir.to_str().expect("utf-8")),
        "data.max_length=64".into(),
        "data.batch_size=16".into(),
        "model.d_model=32".into(),
        "train.max_steps=12".into(),
        "train.max_seconds=0".into(),
        "train.warmup_steps=2".into(),
        "train.lr=3e-3".into(),
        "train.log_every_steps=1".into(),
        "train.eval_every_steps=0".into(),
        "train.eval_max_batches=4".into(),
        "train.threads=1".into(),
        "checkpoint.every_steps=0".into(),
        // The causal config names a trained tokenizer; the test corpus is pre-tokenized with BERT's.
        "data.tokenizer=\"bert-base-uncased\"".into(),
    ];
    sets.extend(extra.iter().map(|s| s.to_string()));
    let mut args = vec!["train".to_string(), "--config".into(), config.into()];
    args.extend(set_args(&sets));
    args
}

fn run(args: &[String]) -> std::process::Output {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    wave_dist(&args)
}

const CONFIGS: [(&str, &str); 2] = [
    ("masked_lm", "configs/pretrain-mlm-quick.toml"),
    ("causal_lm", "configs/pretrain-clm-quick.toml"),
];

#[test]
fn masked_and_causal_lm_learn_and_repeat_exactly_with_the_same_seed() {
    let Some(data) = packed_corpus() else { return };
    let tmp = tempfile::tempdir().expect("tempdir");
    for (objective, config) in CONFIGS {
        let (a, b) = (
            tmp.path().join(format!("{objective}-a")),
            tmp.path().join(format!("{objective}-b")),
        );
        let fast = ["train.max_steps=30", "train.lr=3e-2"];
        let first = summary(&ok(&run(&lm_args(config, data, &a, &fast))));
        ok(&run(&lm_args(config, data, &b, &fast)));
        assert_eq!(first["objective"], objective);
        let (la, lb) = (train_losses(&a), train_losses(&b));
        assert_eq!(la.len(), 30);
        assert_eq!(la, lb, "{objective}: same seed must give identical losses");
        // Uniform guessing over BERT's 30,522 tokens costs ln(30522) = 10.33 nats; 30 steps
        // reach about 7.5 (masked) and 7.1 (causal).
        let (start, end) = (la[0].1, la[la.len() - 1].1);
        assert!(
            start > 9.5 && end < start - 2.0,
            "{objective}: loss went from {start} to {end}"
        );
        let eval = &first["eval"];
        let tokens = eval["tokens"].as_u64().expect("eval tokens");
        let perplexity = eval["perplexity"].as_f64().expect("perplexity");
        let loss = eval["loss"].as_f64().expect("eval loss");
        assert!(tokens > 0, "{objective}: {eval}");
        assert!(
            (perplexity - loss.exp()).abs() <= 1e-9 * perplexity,
            "{objective}: perplexity is exp(mean token loss): {eval}"
        );
    }
}

#[test]
fn resuming_a_language_model_mid_epoch_continues_the_uninterrupted_trajectory() {
    let Some(data) = packed_corpus() else { return };
    let tmp = tempfile::tempdir().expect("tempdir");
    for (objective, config) in CONFIGS {
        let ckpt = tmp.path().join(format!("{objective}-ckpt"));
        let ckpt_set = format!("checkpoint.uri={:?}", ckpt.to_str().expect("utf-8"));
        let (full, resumed) = (
            tmp.path().join(format!("{objective}-full")),
            tmp.path().join(format!("{objective}-resumed")),
        );
        let keep = ["checkpoint.every_steps=6", "checkpoint.keep_last=0"];
        ok(&run(&lm_args(
            config,
            data,
            &full,
            &[&ckpt_set, keep[0], keep[1]],
        )));
        // Step 6 of 12 at 16 rows a step lies inside the first epoch of the corpus.
        ok(&run(&lm_args(
            config,
            data,
            &resumed,
            &[&ckpt_set, keep[0], keep[1], "train.resume=6"],
        )));
        let tail: Vec<(u64, f64)> = train_losses(&full)
            .into_iter()
            .filter(|(s, _)| *s > 6)
            .collect();
        assert_eq!(tail.len(), 6);
        assert_eq!(
            train_losses(&resumed),
            tail,
            "{objective}: losses after the resume point"
        );
        assert_eq!(
            std::fs::read(full.join("model.safetensors")).expect("weights"),
            std::fs::read(resumed.join("model.safetensors")).expect("weights"),
            "{objective}: final parameters must be bit-identical"
        );
    }
}

#[test]
fn two_ranks_under_mpirun_learn_what_one_rank_learns_with_dropout_on() {
    let Some(data) = packed_corpus() else { return };
    if !mpirun_available() {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    for (objective, config) in CONFIGS {
        let (one, two) = (
            tmp.path().join(format!("{objective}-1")),
            tmp.path().join(format!("{objective}-2")),
        );
        ok(&run(&lm_args(config, data, &one, &[])));
        let out = mpirun()
            .args(["-n", "2", env!("CARGO_BIN_EXE_wave-dist")])
            .args(lm_args(config, data, &two, &[]))
            .output()
            .expect("mpirun");
        ok(&out);
        let (a, b) = (train_losses(&one), train_losses(&two));
        assert_eq!(a.len(), b.len(), "{objective}: both runs log every step");
        for ((step, x), (_, y)) in a.iter().zip(&b) {
            assert!(
                (x - y).abs() <= 1e-4 * x.abs(),
                "{objective} step {step}: 1 rank {x}, 2 ranks {y}"
            );
        }
    }
}

#[test]
fn a_classifier_fine_tunes_from_a_pretrained_encoder_and_starts_its_head_fresh() {
    let (Some(corpus), Some(agnews)) = (packed_corpus(), agnews_test_split()) else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let pretrained = tmp.path().join("mlm");
    ok(&run(&lm_args(
        CONFIGS[0].1,
        corpus,
        &pretrained,
        &["model.position=\"none\""],
    )));
    let finetuned = tmp.path().join("cls");
    let out = wave_dist(&[
        "train",
        "--config",
        "configs/smoke.toml",
        "--set",
        &format!("data.uri={:?}", agnews.to_str().expect("utf-8")),
        "--set",
        &format!("train.run_dir={:?}", finetuned.to_str().expect("utf-8")),
        "--set",
        &format!("train.init_from={:?}", pretrained.to_str().expect("utf-8")),
        "--set",
        "model.position=\"none\"",
        "--set",
        "model.n_layers=1",
        "--set",
        "train.max_steps=5",
    ]);
    ok(&out);
    let log = String::from_utf8_lossy(&out.stderr);
    let line = log
        .lines()
        .find(|l| l.contains("train.init_from"))
        .unwrap_or_else(|| panic!("no init_from line:\n{log}"));
    assert!(line.contains("token_embedding.weight"), "{line}");
    assert!(line.contains("layers.0.proj_u.weight"), "{line}");
    // The classifier does not exist in the masked-LM run, and its head does not exist here.
    let fresh = line.split("initialised fresh").nth(1).expect("fresh list");
    assert!(fresh.contains("classifier.weight"), "{line}");
    let skipped = line.split("skipped").nth(1).expect("skipped list");
    assert!(skipped.contains("lm_head"), "{line}");
}

#[test]
fn inputs_that_cannot_train_are_refused_before_step_one() {
    let (Some(corpus), Some(agnews)) = (packed_corpus(), agnews_test_split()) else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let nothing_written =
        |dir: &Path| assert!(!dir.join("metrics.jsonl").exists() || train_losses(dir).is_empty());

    // Packed rows have no labels.
    let dir = tmp.path().join("packed-cls");
    fails_naming(
        &run(&lm_args(
            CONFIGS[0].1,
            corpus,
            &dir,
            &["train.objective=\"classification\""],
        )),
        &["classification", "no labels", "packed"],
    );
    nothing_written(&dir);

    // Masked LM without a mask token: BERT's tokenizer with [MASK] renamed.
    let tok_src = shared_data()
        .expect("shared data")
        .join("tokenizers/bert-base-uncased/tokenizer.json");
    let no_mask = tmp.path().join("no-mask.json");
    let text = std::fs::read_to_string(tok_src)
        .expect("tokenizer")
        .replace("[MASK]", "[MASQUE]");
    std::fs::write(&no_mask, text).expect("write tokenizer");
    let dir = tmp.path().join("no-mask");
    fails_naming(
        &run(&lm_args(
            CONFIGS[0].1,
            corpus,
            &dir,
            &[&format!(
                "data.tokenizer={:?}",
                no_mask.to_str().expect("utf-8")
            )],
        )),
        &["masked_lm", "no mask token", "no-mask.json"],
    );
    nothing_written(&dir);

    // Rows of 64 tokens do not fit a learned position table of 32.
    let dir = tmp.path().join("positions");
    fails_naming(
        &run(&lm_args(
            CONFIGS[1].1,
            corpus,
            &dir,
            &["model.max_positions=32"],
        )),
        &["pack_length = 64", "model.max_positions = 32"],
    );
    nothing_written(&dir);

    // init_from a model with another vocabulary.
    let small_tok = tmp.path().join("small.json");
    ok(&wave_dist(&[
        "tokenizer",
        "train",
        "--kind",
        "wordpiece",
        "--vocab-size",
        "400",
        "--input",
        shared_data()
            .expect("shared data")
            .join("wikitext-2/valid.txt")
            .to_str()
            .expect("utf-8"),
        "--out",
        small_tok.to_str().expect("utf-8"),
    ]));
    let pretrained = tmp.path().join("mlm");
    ok(&run(&lm_args(
        CONFIGS[0].1,
        corpus,
        &pretrained,
        &["train.max_steps=2", "model.position=\"none\""],
    )));
    let dir = tmp.path().join("other-vocab");
    let out = wave_dist(&[
        "train",
        "--config",
        "configs/smoke.toml",
        "--set",
        &format!("data.uri={:?}", agnews.to_str().expect("utf-8")),
        "--set",
        &format!("data.tokenizer={:?}", small_tok.to_str().expect("utf-8")),
        "--set",
        &format!("train.run_dir={:?}", dir.to_str().expect("utf-8")),
        "--set",
        &format!("train.init_from={:?}", pretrained.to_str().expect("utf-8")),
    ]);
    fails_naming(
        &out,
        &["train.init_from", "30522 tokens", "this model's 400"],
    );
    nothing_written(&dir);
}

#[test]
fn eval_scores_a_unigram_baseline_on_the_same_tokens_as_the_model() {
    let Some(data) = packed_corpus() else { return };
    let tmp = tempfile::tempdir().expect("tempdir");
    let run_dir = tmp.path().join("clm");
    ok(&run(&lm_args(
        CONFIGS[1].1,
        data,
        &run_dir,
        &["train.max_steps=2"],
    )));
    let out = ok(&wave_dist(&[
        "eval",
        "--run",
        run_dir.to_str().expect("utf-8"),
        "--set",
        "train.eval_max_batches=0",
        "--unigram-from",
        data.to_str().expect("utf-8"),
    ]));
    let line = summary(&out);
    let (model, unigram) = (&line, &line["unigram"]);
    assert_eq!(model["tokens"], unigram["tokens"], "same positions: {line}");
    assert!(model["tokens"].as_u64().is_some_and(|t| t > 1000), "{line}");
    // Frequencies beat uniform guessing over 30,522 tokens (10.33 nats) by a wide margin; a
    // 2-step model has not learned them yet.
    let u = unigram["loss"].as_f64().expect("unigram loss");
    assert!(u < 7.5, "unigram loss {u}");
    assert!(model["loss"].as_f64().expect("model loss") > u, "{line}");
    // Bits per byte: the summed loss in bits over the bytes of text the predicted tokens stand
    // for, from the validation split's bytes per token recorded at prepare time.
    let manifest: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(data.join("manifest.json")).expect("manifest"),
    )
    .expect("manifest json");
    let split = &manifest["splits"]["validation"];
    let bytes_per_token = split["text_bytes"].as_f64().expect("text_bytes recorded")
        / split["tokens"].as_f64().expect("tokens recorded");
    assert!(
        (3.0..6.0).contains(&bytes_per_token),
        "{bytes_per_token} bytes per BERT token"
    );
    for figures in [model, unigram] {
        let loss = figures["loss"].as_f64().expect("loss");
        let bpb = figures["bits_per_byte"].as_f64().expect("bits per byte");
        let want = loss / std::f64::consts::LN_2 / bytes_per_token;
        assert!(
            (bpb - want).abs() <= 1e-9 * want,
            "bits per byte {bpb}, expected {want}"
        );
    }
}

#[test]
fn language_models_also_train_on_unpacked_text_tokenized_on_the_fly() {
    let Some(agnews) = agnews_test_split() else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    for (objective, config) in CONFIGS {
        let run_dir = tmp.path().join(objective);
        // AG News rows are texts with labels; the labels are simply not used.
        let out = ok(&run(&lm_args(
            config,
            agnews,
            &run_dir,
            &[
                "train.max_steps=40",
                "train.lr=3e-2",
                "data.train_split=\"test\"",
                "data.eval_split=\"test\"",
            ],
        )));
        let s = summary(&out);
        assert_eq!(s["objective"], objective);
        assert!(s["eval"]["tokens"].as_u64().is_some_and(|t| t > 100), "{s}");
        // One step's masked-token loss is noisy (about 150 masked tokens a batch): compare means.
        // Uniform guessing over BERT's 30,522 tokens costs ln(30522) = 10.33 nats; 40 steps reach
        // about 8.3 (masked) and 7.8 (causal) on AG News.
        let losses: Vec<f64> = train_losses(&run_dir).iter().map(|(_, l)| *l).collect();
        assert_eq!(losses.len(), 40, "{objective}: one loss per step");
        let mean = |l: &[f64]| l.iter().sum::<f64>() / l.len() as f64;
        let (start, end) = (mean(&losses[..3]), mean(&losses[35..]));
        assert!(
            end < 30522f64.ln() - 1.5 && end < start - 1.5,
            "{objective}: mean loss went from {start} (first 3 steps) to {end} (last 5)"
        );
    }
}
