//! Bad configs and bad inputs end with a clear message, a non-zero exit and no panic.

mod common;

use common::*;

fn write_config(dir: &std::path::Path, text: &str) -> String {
    let path = dir.join("job.toml");
    std::fs::write(&path, text).expect("write config");
    path.to_str().expect("utf-8").to_string()
}

const MINIMAL: &str = "[data]\nuri = \"/nonexistent/wave-data\"\n";

#[test]
fn a_missing_config_file_is_named() {
    fails_naming(
        &wave_dist(&["train", "--config", "/nonexistent/job.toml"]),
        &["/nonexistent/job.toml"],
    );
}

#[test]
fn an_unknown_key_is_named_with_its_section() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cfg = write_config(tmp.path(), &format!("{MINIMAL}[model]\nd_modle = 64\n"));
    fails_naming(
        &wave_dist(&["train", "--config", &cfg]),
        &["model", "d_modle"],
    );
    let cfg = write_config(tmp.path(), MINIMAL);
    fails_naming(
        &wave_dist(&["train", "--config", &cfg, "--set", "train.epoch=3"]),
        &["train", "epoch"],
    );
}

#[test]
fn a_value_of_the_wrong_type_is_named() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cfg = write_config(
        tmp.path(),
        &format!("{MINIMAL}[train]\nmax_steps = \"ten\"\n"),
    );
    fails_naming(
        &wave_dist(&["train", "--config", &cfg]),
        &["train.max_steps"],
    );
}

#[test]
fn a_zero_batch_size_is_rejected() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cfg = write_config(tmp.path(), MINIMAL);
    fails_naming(
        &wave_dist(&["train", "--config", &cfg, "--set", "data.batch_size=0"]),
        &["data.batch_size"],
    );
}

#[test]
fn an_unknown_mode_is_rejected_with_the_valid_ones() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cfg = write_config(tmp.path(), MINIMAL);
    fails_naming(
        &wave_dist(&[
            "train",
            "--config",
            &cfg,
            "--set",
            "model.mode=\"superposition\"",
        ]),
        &["model.mode", "superposition", "interference", "modulation"],
    );
}

#[test]
fn an_unknown_device_is_rejected() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cfg = write_config(tmp.path(), MINIMAL);
    fails_naming(
        &wave_dist(&["train", "--config", &cfg, "--device", "tpu"]),
        &["train.device", "tpu"],
    );
}

#[test]
fn unreadable_data_is_named() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cfg = write_config(tmp.path(), MINIMAL);
    fails_naming(
        &wave_dist(&["train", "--config", &cfg]),
        &["/nonexistent/wave-data"],
    );
    // A manifest that is not JSON.
    let data = tmp.path().join("broken");
    std::fs::create_dir_all(&data).expect("mkdir");
    std::fs::write(data.join("manifest.json"), "{ not json").expect("write");
    let set = format!("data.uri={:?}", data.to_str().expect("utf-8"));
    fails_naming(
        &wave_dist(&["train", "--config", &cfg, "--set", &set]),
        &["manifest.json"],
    );
}

#[test]
fn every_subcommand_documents_its_options() {
    let top = ok(&wave_dist(&["--help"]));
    for cmd in ["train", "eval", "data", "tokenizer", "plot"] {
        assert!(top.contains(cmd), "--help lists {cmd}");
    }
    let train = ok(&wave_dist(&["train", "--help"]));
    for opt in ["--config", "--set", "--device"] {
        assert!(train.contains(opt), "train --help lists {opt}");
    }
    let eval = ok(&wave_dist(&["eval", "--help"]));
    for opt in ["--run", "--config", "--weights", "--split"] {
        assert!(eval.contains(opt), "eval --help lists {opt}");
    }
}

#[test]
fn an_unknown_backend_is_rejected_with_the_valid_ones() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cfg = write_config(tmp.path(), MINIMAL);
    fails_naming(
        &wave_dist(&["train", "--config", &cfg, "--backend", "gloo"]),
        &["comm", "gloo"],
    );
}

#[test]
fn a_rank_outside_the_world_is_rejected_naming_the_flags() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cfg = write_config(tmp.path(), MINIMAL);
    fails_naming(
        &wave_dist(&[
            "train",
            "--config",
            &cfg,
            "--rank",
            "3",
            "--world-size",
            "2",
        ]),
        &["WAVE_RANK"],
    );
}

#[test]
fn a_model_vocabulary_that_differs_from_the_tokenizers_is_refused_naming_both() {
    let Some(data) = agnews_test_split() else {
        return;
    };
    let out = wave_dist(&[
        "train",
        "--config",
        "configs/smoke.toml",
        "--set",
        &format!("data.uri={:?}", data.to_str().expect("utf-8")),
        "--set",
        "model.vocab_size=1000",
    ]);
    fails_naming(
        &out,
        &[
            "model.vocab_size = 1000",
            "bert-base-uncased",
            "30522 tokens",
        ],
    );
}
