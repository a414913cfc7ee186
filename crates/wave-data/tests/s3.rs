//! Prepare, inspect and stream through a real S3-compatible server (SeaweedFS on loopback).

mod common;

use std::sync::Arc;

use wave_data::{
    inspect, prepare, Cursor, DataConfig, Dataset, InputFormat, InspectOptions, Loader,
    LoaderOptions, PrepareOptions, TextEncoder,
};

#[test]
fn prepare_inspect_and_stream_through_s3_match_local_disk() {
    let Some(tok) = common::bert() else { return };
    let Some(weed) = common::Weed::start() else {
        return;
    };
    weed.set_env();
    let dir = tempfile::tempdir().expect("tmp");
    let input = common::synthetic_jsonl(dir.path(), 500, 3);
    let run = |out: &str| {
        let mut o = PrepareOptions::new(common::source(InputFormat::Jsonl, &[&input]), out);
        o.row_group_rows = 40;
        o.shard_rows = Some(200);
        o.validation_fraction = 0.2;
        prepare(&o).expect("prepare")
    };
    let s3 = run("s3://wave-test/datasets/syn");
    let local = run(&dir.path().join("local").display().to_string());
    assert_eq!(
        s3.manifest, local.manifest,
        "same shards and fingerprint on S3 and local disk"
    );
    // 3 classes of 167/167/166 rows → 33 each to validation: 401 train rows in shards of ≤ 200.
    assert_eq!(s3.manifest.splits["train"].rows, 401);
    assert_eq!(
        s3.manifest.splits["train"]
            .shards
            .iter()
            .map(|s| s.rows)
            .collect::<Vec<_>>(),
        [200, 200, 1]
    );
    // A second prepare to the same URL needs --overwrite.
    let mut again = PrepareOptions::new(
        common::source(InputFormat::Jsonl, &[&input]),
        "s3://wave-test/datasets/syn",
    );
    again.validation_fraction = 0.2;
    let err = prepare(&again).expect_err("exists").to_string();
    assert!(err.contains("--overwrite"), "{err}");

    let report = inspect(&InspectOptions {
        verify: true,
        tokenizer: Some(tok.clone()),
        ..InspectOptions::new("s3://wave-test/datasets/syn")
    })
    .expect("inspect");
    assert!(
        report.contains("verified sha256 of 4 shards") && report.contains("token lengths"),
        "{report}"
    );

    let enc = Arc::new(TextEncoder::load(&tok).expect("tok"));
    let mut cfg = DataConfig::new("s3://wave-test/datasets/syn");
    cfg.batch_size = 16;
    cfg.shuffle_window = 64;
    let batches = |uri: &str| {
        let ds = Dataset::open(uri).expect("open");
        let mut l = Loader::new(
            &ds,
            Some(enc.clone()),
            LoaderOptions::train(&cfg, 5, 1, 2),
            Cursor::start(5),
        )
        .expect("loader");
        (0..40)
            .map(|_| l.next_batch().expect("batch").expect("some"))
            .collect::<Vec<_>>()
    };
    assert_eq!(batches("s3://wave-test/datasets/syn"), batches(&local.uri));
    let ds = Dataset::open("s3://wave-test/datasets/syn").expect("open");
    let mut eval = Loader::new(
        &ds,
        Some(enc.clone()),
        LoaderOptions::eval(&cfg, 0, 1),
        Cursor::start(0),
    )
    .expect("eval");
    let mut n = 0;
    while let Some(b) = eval.next_batch().expect("eval batch") {
        n += b
            .sample_positions
            .iter()
            .filter(|&&p| p != u64::MAX)
            .count();
    }
    assert_eq!(n as u64, ds.split_rows("validation").expect("rows"));
    let missing = Dataset::open("s3://wave-test/datasets/nothing-here")
        .expect_err("missing")
        .to_string();
    assert!(
        missing.contains("s3://wave-test/datasets/nothing-here/manifest.json"),
        "{missing}"
    );
}
