//! JSON Lines (gzip), plain text, Parquet exports, pre-tokenization, packing, tokenizer training.

mod common;

use std::path::Path;
use std::sync::Arc;

use wave_data::{
    prepare, train_tokenizer, Cursor, DataConfig, Dataset, InputFormat, Loader, LoaderOptions,
    PrepareOptions, TextEncoder, TextUnit, TokenizerKind, TrainTokenizerOptions,
};

#[test]
fn gutenberg_jsonl_gz_packs_into_fixed_length_rows_separated_by_sep() {
    let (Some(gz), Some(tok)) = (
        common::shared("gutenberg/gutenberg_00.jsonl.gz"),
        common::bert(),
    ) else {
        return;
    };
    let dir = tempfile::tempdir().expect("tmp");
    let mut src = common::source(InputFormat::Jsonl, &[&gz]);
    src.max_rows = Some(3);
    let mut o = PrepareOptions::new(src, dir.path().join("g").display().to_string());
    o.tokenizer = Some(tok.clone());
    o.pack_length = Some(128);
    o.validation_fraction = 0.0;
    o.tokenizer_threads = 2;
    let m = prepare(&o).expect("prepare").manifest;
    assert_eq!(m.pack_length, Some(128));
    assert!(m.label_names.is_none() && !m.has_column("text") && !m.has_column("label"));
    let split = &m.splits["train"];
    assert!(
        split.rows > 1000,
        "three books → many 128-token rows: {}",
        split.rows
    );
    let tokens = split.tokens.expect("token count");
    assert!(
        tokens > (split.rows - 1) * 128 && tokens <= split.rows * 128,
        "all rows but the last are full"
    );
    assert_eq!(m.sources[0].name, "gutenberg_00.jsonl.gz");
    let ds = Dataset::open(&dir.path().join("g").display().to_string()).expect("open");
    let mut cfg = DataConfig::new("x");
    cfg.batch_size = 8;
    cfg.max_length = 128;
    cfg.shuffle = false;
    let mut l = Loader::new(
        &ds,
        None,
        LoaderOptions::train(&cfg, 1, 0, 1),
        Cursor::start(1),
    )
    .expect("loader");
    let b = l.next_batch().expect("ok").expect("batch");
    assert_eq!((b.rows, b.seq_len, b.real_tokens), (8, 128, 8 * 128));
    assert!(b.labels.iter().all(|&x| x == -100), "unlabelled");
    assert_eq!(b.sample_positions, (0..8).collect::<Vec<_>>());
    // With the same tokenizer, the ids are used as they are.
    let enc = Arc::new(TextEncoder::load(&tok).expect("tok"));
    let mut l2 = Loader::new(
        &ds,
        Some(enc),
        LoaderOptions::train(&cfg, 1, 0, 1),
        Cursor::start(1),
    )
    .expect("loader");
    assert_eq!(l2.next_batch().expect("ok").expect("b"), b);
}

#[test]
fn plain_text_by_paragraph_and_by_line() {
    let dir = tempfile::tempdir().expect("tmp");
    let txt = dir.path().join("t.txt");
    std::fs::write(&txt, "first line\nsecond line\n\n\nthird para\n \nlast\n").expect("write");
    for (unit, rows) in [(TextUnit::Paragraph, 3u64), (TextUnit::Line, 4)] {
        let mut src = common::source(InputFormat::Text, &[&txt]);
        src.text_unit = unit;
        let out = dir.path().join(format!("{unit:?}"));
        let mut o = PrepareOptions::new(src, out.display().to_string());
        o.validation_fraction = 0.0;
        let m = prepare(&o).expect("prepare").manifest;
        assert_eq!(m.splits["train"].rows, rows, "{unit:?}");
        assert!(m.label_names.is_none());
    }
}

#[test]
fn wikitext_paragraphs_split_into_train_and_validation() {
    let Some(wt) = common::shared("wikitext-2/valid.txt") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tmp");
    let mut src = common::source(InputFormat::Text, &[&wt]);
    src.text_unit = TextUnit::Line;
    let mut o = PrepareOptions::new(src, dir.path().join("w").display().to_string());
    o.validation_fraction = 0.1;
    o.row_group_rows = 256;
    let m = prepare(&o).expect("prepare").manifest;
    let (t, v) = (m.splits["train"].rows, m.splits["validation"].rows);
    assert_eq!(v, ((t + v) as f64 * 0.1).round() as u64);
    assert!(m.splits["train"].shards[0]
        .row_groups
        .iter()
        .all(|&r| r <= 256));
}

#[test]
fn parquet_exports_keep_their_splits_and_class_names_and_string_labels_get_names() {
    let dir = tempfile::tempdir().expect("tmp");
    // Round trip: prepare jsonl with string labels → shards → prepare those shards as Parquet input.
    let jl = dir.path().join("s.jsonl");
    std::fs::write(&jl, "{\"text\":\"good film\",\"label\":\"pos\"}\n{\"text\":\"bad film\",\"label\":\"neg\"}\n{\"text\":\"fine\",\"label\":\"pos\"}\n")
        .expect("write");
    let mut o = PrepareOptions::new(
        common::source(InputFormat::Jsonl, &[&jl]),
        dir.path().join("a").display().to_string(),
    );
    o.validation_fraction = 0.0;
    let m = prepare(&o).expect("jsonl").manifest;
    assert_eq!(
        m.label_names.as_deref(),
        Some(&["neg".to_string(), "pos".into()][..])
    );
    assert_eq!(
        m.splits["train"].label_counts.as_deref(),
        Some(&[1u64, 2][..])
    );
    let shard = dir.path().join("a/train/part-00000.parquet");
    let test_copy = dir.path().join("test-00000-of-00001.parquet");
    std::fs::copy(&shard, &test_copy).expect("copy");
    let mut o = PrepareOptions::new(
        common::source(InputFormat::Parquet, &[&shard, &test_copy]),
        dir.path().join("b").display().to_string(),
    );
    o.validation_fraction = 0.0;
    let m2 = prepare(&o).expect("parquet").manifest;
    assert_eq!(m2.splits.keys().collect::<Vec<_>>(), ["test", "train"]);
    assert_eq!(m2.splits["test"].rows, 3);
}

#[test]
fn trained_wordpiece_and_bpe_tokenizers_load_and_encode() {
    let dir = tempfile::tempdir().expect("tmp");
    let corpus = common::synthetic_jsonl(dir.path(), 400, 2);
    for kind in [TokenizerKind::WordPiece, TokenizerKind::Bpe] {
        let out = dir.path().join(format!("{kind:?}/tokenizer.json"));
        let opts = TrainTokenizerOptions {
            kind,
            vocab_size: 300,
            inputs: vec![corpus.display().to_string()],
            text_field: "text".into(),
            min_frequency: 1,
            lowercase: true,
            out: out.clone(),
        };
        let n = train_tokenizer(&opts).expect("train");
        assert!(n > 50 && n <= 300, "{kind:?} vocab {n}");
        let enc = TextEncoder::load(&out.display().to_string()).expect("load");
        assert_eq!((enc.pad_id(), enc.mask_id()), (0, Some(4)));
        let ids = enc
            .encode_batch(&["wave network signal"], true, None)
            .expect("encode");
        assert_eq!(
            (ids[0][0], *ids[0].last().expect("ids")),
            (2, 3),
            "[CLS] … [SEP]"
        );
        // Usable by prepare via the directory path too.
        let mut o = PrepareOptions::new(
            common::source(InputFormat::Jsonl, &[&corpus]),
            dir.path()
                .join(format!("ds-{kind:?}"))
                .display()
                .to_string(),
        );
        o.tokenizer = Some(out.parent().unwrap_or(Path::new(".")).display().to_string());
        assert!(prepare(&o).expect("prepare").manifest.tokenizer.is_some());
    }
}

#[test]
fn named_tokenizers_resolve_under_wave_dist_home_and_missing_ones_say_where_they_looked() {
    let Some(tok) = common::bert() else { return };
    let home = tempfile::tempdir().expect("tmp");
    let d = home.path().join("tokenizers/bert-base-uncased");
    std::fs::create_dir_all(&d).expect("mkdir");
    std::fs::copy(&tok, d.join("tokenizer.json")).expect("copy");
    std::env::set_var("WAVE_DIST_HOME", home.path());
    let enc = TextEncoder::load("bert-base-uncased").expect("named");
    assert_eq!(
        (enc.vocab_size(), enc.pad_id(), enc.mask_id()),
        (30522, 0, Some(103))
    );
    assert!(
        enc.fingerprint().starts_with("sha256:be50c362")
            && enc.fingerprint().ends_with("vocab=30522")
    );
    let err = TextEncoder::load("no-such-tokenizer")
        .expect_err("missing")
        .to_string();
    assert!(
        err.contains("no-such-tokenizer/tokenizer.json") && err.contains("WAVE_DIST_HOME"),
        "{err}"
    );
    // Padding and truncation from the file are disabled: long text is not cut at 128.
    let long = "word ".repeat(300);
    assert!(enc.encode_batch(&[long.as_str()], true, None).expect("enc")[0].len() > 300);
}
