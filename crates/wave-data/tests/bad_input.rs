//! Bad input: every failure is an error naming the culprit (file/shard and row where known), never a
//! panic or a hang, and a failed prepare leaves nothing behind.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use wave_data::{
    prepare, Cursor, DataConfig, Dataset, Error, InputFormat, Loader, LoaderOptions, Manifest,
    PrepareOptions, TextEncoder,
};

fn prep(
    format: InputFormat,
    input: &Path,
    out: &Path,
) -> wave_data::Result<wave_data::PrepareReport> {
    let mut o = PrepareOptions::new(common::source(format, &[input]), out.display().to_string());
    o.validation_fraction = 0.0;
    prepare(&o)
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).expect("write");
    p
}

/// A `.tgz` holding `ag_news_csv/classes.txt` and `ag_news_csv/test.csv` with the given bytes.
fn agnews_tgz(dir: &Path, test_csv: &[u8]) -> PathBuf {
    let path = dir.join("ag_news_csv.tgz");
    let gz = flate2::write::GzEncoder::new(
        std::fs::File::create(&path).expect("create"),
        flate2::Compression::fast(),
    );
    let mut tar = tar::Builder::new(gz);
    for (name, data) in [
        (
            "ag_news_csv/classes.txt",
            &b"World\nSports\nBusiness\nSci/Tech\n"[..],
        ),
        ("ag_news_csv/test.csv", test_csv),
    ] {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        tar.append_data(&mut h, name, data).expect("append");
    }
    tar.into_inner()
        .expect("tar")
        .finish()
        .expect("gz")
        .flush()
        .expect("flush");
    path
}

fn write_parquet(path: &Path, cols: Vec<(&str, ArrayRef)>, metadata: Option<(&str, &str)>) {
    let batch = RecordBatch::try_from_iter(cols).expect("batch");
    let mut schema = (*batch.schema()).clone();
    if let Some((k, v)) = metadata {
        schema = schema.with_metadata(std::collections::HashMap::from([(
            k.to_string(),
            v.to_string(),
        )]));
    }
    let batch = batch.with_schema(Arc::new(schema)).expect("schema");
    let mut w = parquet::arrow::ArrowWriter::try_new(
        std::fs::File::create(path).expect("create"),
        batch.schema(),
        None,
    )
    .expect("writer");
    w.write(&batch).expect("write");
    w.close().expect("close");
}

fn assert_names(err: &Error, parts: &[&str]) {
    let msg = err.to_string();
    for p in parts {
        assert!(msg.contains(p), "message {msg:?} should name {p:?}");
    }
}

#[test]
fn invalid_utf8_in_csv_text_and_jsonl_names_file_and_row() {
    let dir = tempfile::tempdir().expect("tmp");
    let out = dir.path().join("out");
    let csv = agnews_tgz(
        dir.path(),
        b"\"1\",\"ok\",\"fine\"\n\"2\",\"bad \xff title\",\"x\"\n",
    );
    let mut o = PrepareOptions::new(
        common::source(InputFormat::AgNews, &[&csv]),
        out.display().to_string(),
    );
    o.splits = Some(vec!["test".into()]);
    assert_names(
        &prepare(&o).expect_err("csv"),
        &["ag_news_csv/test.csv", "row 2", "invalid UTF-8"],
    );
    let txt = write(dir.path(), "corpus.txt", b"one\ntwo\nth\xc3ree\n");
    assert_names(
        &prep(InputFormat::Text, &txt, &out).expect_err("text"),
        &["corpus.txt", "row 3", "invalid UTF-8"],
    );
    let jl = write(
        dir.path(),
        "c.jsonl",
        b"{\"text\": \"a\"}\n{\"text\": \"b\xfe\"}\n",
    );
    assert_names(
        &prep(InputFormat::Jsonl, &jl, &out).expect_err("jsonl"),
        &["c.jsonl", "row 2", "invalid UTF-8"],
    );
    assert!(!out.join("manifest.json").exists());
}

#[test]
fn empty_text_and_missing_fields_name_the_row() {
    let dir = tempfile::tempdir().expect("tmp");
    let out = dir.path().join("out");
    let jl = write(
        dir.path(),
        "e.jsonl",
        b"{\"text\": \"a\"}\n{\"text\": \"  \"}\n",
    );
    assert_names(
        &prep(InputFormat::Jsonl, &jl, &out).expect_err("empty"),
        &["e.jsonl", "row 2", "empty text"],
    );
    let jl = write(
        dir.path(),
        "m.jsonl",
        b"{\"text\": \"a\"}\n{\"body\": \"b\"}\n",
    );
    assert_names(
        &prep(InputFormat::Jsonl, &jl, &out).expect_err("missing"),
        &["m.jsonl", "row 2", "\"text\""],
    );
}

#[test]
fn label_out_of_range_names_file_and_row() {
    let dir = tempfile::tempdir().expect("tmp");
    let out = dir.path().join("out");
    let csv = agnews_tgz(dir.path(), b"\"1\",\"a\",\"b\"\n\"5\",\"c\",\"d\"\n");
    let mut o = PrepareOptions::new(
        common::source(InputFormat::AgNews, &[&csv]),
        out.display().to_string(),
    );
    o.splits = Some(vec!["test".into()]);
    let err = prepare(&o).expect_err("class 5");
    assert!(
        matches!(
            err,
            Error::LabelOutOfRange {
                row: 2,
                label: 4,
                num_classes: 4,
                ..
            }
        ),
        "{err:?}"
    );
    assert_names(&err, &["test.csv", "row 2"]);
    // Parquet export whose ClassLabel metadata names 2 classes but holds label 5.
    let pq = dir.path().join("train-00000-of-00001.parquet");
    let hf = r#"{"info": {"features": {"text": {"dtype": "string", "_type": "Value"}, "label": {"names": ["neg", "pos"], "_type": "ClassLabel"}}}}"#;
    write_parquet(
        &pq,
        vec![
            (
                "text",
                Arc::new(StringArray::from(vec!["a", "b", "c"])) as ArrayRef,
            ),
            ("label", Arc::new(Int64Array::from(vec![0, 1, 5]))),
        ],
        Some(("huggingface", hf)),
    );
    assert_names(
        &prep(InputFormat::Parquet, &pq, &out).expect_err("label 5"),
        &[
            "train-00000-of-00001.parquet",
            "row 3",
            "label 5",
            "2 classes",
        ],
    );
}

#[test]
fn parquet_input_with_missing_or_mistyped_columns_names_the_column() {
    let dir = tempfile::tempdir().expect("tmp");
    let out = dir.path().join("out");
    let pq = dir.path().join("a.parquet");
    write_parquet(
        &pq,
        vec![("body", Arc::new(StringArray::from(vec!["a"])) as ArrayRef)],
        None,
    );
    assert_names(
        &prep(InputFormat::Parquet, &pq, &out).expect_err("missing"),
        &["a.parquet", "column \"text\"", "missing"],
    );
    write_parquet(
        &pq,
        vec![("text", Arc::new(Int64Array::from(vec![1])) as ArrayRef)],
        None,
    );
    assert_names(
        &prep(InputFormat::Parquet, &pq, &out).expect_err("type"),
        &["a.parquet", "column \"text\"", "Int64"],
    );
    let empty = dir.path().join("empty.parquet");
    write_parquet(
        &empty,
        vec![(
            "text",
            Arc::new(StringArray::from(Vec::<&str>::new())) as ArrayRef,
        )],
        None,
    );
    assert_names(
        &prep(InputFormat::Parquet, &empty, &out).expect_err("empty"),
        &["\"train\"", "no rows"],
    );
    let junk = write(dir.path(), "junk.parquet", b"this is not parquet at all");
    assert_names(
        &prep(InputFormat::Parquet, &junk, &out).expect_err("junk"),
        &["junk.parquet"],
    );
}

struct Prepared {
    _dir: tempfile::TempDir,
    root: PathBuf,
    enc: Arc<TextEncoder>,
}

fn prepared() -> Option<Prepared> {
    let tok = common::bert()?;
    let dir = tempfile::tempdir().expect("tmp");
    let root = PathBuf::from(common::synthetic_dataset(dir.path(), 200, 50, None));
    Some(Prepared {
        _dir: dir,
        root,
        enc: Arc::new(TextEncoder::load(&tok).expect("tok")),
    })
}

fn first_batch(p: &Prepared) -> wave_data::Result<Option<wave_data::Batch>> {
    let ds = Dataset::open(&p.root.display().to_string())?;
    let mut cfg = DataConfig::new("x");
    cfg.batch_size = 200;
    let mut l = Loader::new(
        &ds,
        Some(p.enc.clone()),
        LoaderOptions::train(&cfg, 0, 0, 1),
        Cursor::start(0),
    )?;
    l.next_batch()
}

fn edit_manifest(root: &Path, f: impl FnOnce(&mut Manifest)) {
    let path = root.join("manifest.json");
    let mut m: Manifest =
        serde_json::from_slice(&std::fs::read(&path).expect("read")).expect("parse");
    f(&mut m);
    m.fingerprint = m.compute_fingerprint();
    std::fs::write(&path, m.to_json().expect("json")).expect("write");
}

#[test]
fn corrupt_or_truncated_shards_are_errors_naming_the_shard() {
    let Some(p) = prepared() else { return };
    let shard = p.root.join("train/part-00000.parquet");
    let bytes = std::fs::read(&shard).expect("read");
    std::fs::write(&shard, &bytes[..bytes.len() / 2]).expect("truncate");
    assert_names(
        &first_batch(&p).expect_err("truncated"),
        &["train/part-00000.parquet", "bytes"],
    );
    let mut junk = bytes.clone();
    let n = junk.len();
    junk[n - 40..].fill(0x55);
    std::fs::write(&shard, &junk).expect("corrupt footer");
    assert_names(
        &first_batch(&p).expect_err("corrupt"),
        &["train/part-00000.parquet", "Parquet"],
    );
    std::fs::write(&shard, &bytes).expect("restore");
    assert!(first_batch(&p).expect("restored").is_some());
}

#[test]
fn shard_checksum_mismatch_is_reported_by_verify() {
    let Some(p) = prepared() else { return };
    let shard = p.root.join("train/part-00000.parquet");
    let mut bytes = std::fs::read(&shard).expect("read");
    bytes[10] ^= 0xff;
    std::fs::write(&shard, &bytes).expect("flip");
    let ds = Dataset::open(&p.root.display().to_string()).expect("open");
    let err = ds.verify().expect_err("mismatch");
    assert!(matches!(err, Error::Checksum { .. }));
    assert_names(&err, &["train/part-00000.parquet", "sha256:"]);
}

#[test]
fn labels_beyond_the_manifest_label_names_are_errors_naming_shard_and_row() {
    let Some(p) = prepared() else { return };
    edit_manifest(&p.root, |m| {
        m.label_names = Some(vec!["a".into(), "b".into()])
    });
    let err = first_batch(&p).expect_err("label 2 of 2 classes");
    assert!(
        matches!(err, Error::LabelOutOfRange { num_classes: 2, .. }),
        "{err:?}"
    );
    assert_names(&err, &["train/part-00000.parquet", "row"]);
}

#[test]
fn manifest_edits_missing_columns_wrong_types_and_empty_shards_are_rejected() {
    let Some(p) = prepared() else { return };
    let text = std::fs::read_to_string(p.root.join("manifest.json")).expect("read");
    std::fs::write(
        p.root.join("manifest.json"),
        text.replace("\"rows\": 200", "\"rows\": 201"),
    )
    .expect("write");
    assert_names(&first_batch(&p).expect_err("edited"), &["manifest.json"]);
    std::fs::write(p.root.join("manifest.json"), &text).expect("restore");
    // A column the shard does not have.
    edit_manifest(&p.root, |m| {
        m.schema.push(wave_data::manifest::Column {
            name: "input_ids".into(),
            ty: wave_data::manifest::ColumnType::ListInt32,
        })
    });
    let ds = Dataset::open(&p.root.display().to_string()).expect("open");
    let mut cfg = DataConfig::new("x");
    cfg.batch_size = 10;
    let mut l = Loader::new(
        &ds,
        None,
        LoaderOptions::train(&cfg, 0, 0, 1),
        Cursor::start(0),
    )
    .expect("loader");
    assert_names(
        &l.next_batch().expect_err("missing column"),
        &[
            "train/part-00000.parquet",
            "column \"input_ids\"",
            "missing",
        ],
    );
    std::fs::write(p.root.join("manifest.json"), &text).expect("restore");
    // Wrong declared type.
    std::fs::write(
        p.root.join("manifest.json"),
        text.replace("\"type\": \"int64\"", "\"type\": \"utf8\""),
    )
    .expect("write");
    assert_names(
        &first_batch(&p).expect_err("type"),
        &["column \"label\"", "Utf8"],
    );
    // An empty shard.
    std::fs::write(p.root.join("manifest.json"), &text).expect("restore");
    edit_manifest(&p.root, |m| {
        let s = m.splits.get_mut("train").expect("train");
        let mut empty = s.shards[0].clone();
        empty.path = "train/part-00001.parquet".into();
        empty.rows = 0;
        empty.row_groups = vec![];
        s.shards.push(empty);
    });
    assert_names(
        &first_batch(&p).expect_err("empty"),
        &["train/part-00001.parquet", "empty"],
    );
}

#[test]
fn a_prepare_that_fails_midway_removes_its_shards_and_writes_no_manifest() {
    let dir = tempfile::tempdir().expect("tmp");
    let input = common::synthetic_jsonl(dir.path(), 100, 2);
    let out = dir.path().join("out");
    std::fs::create_dir_all(&out).expect("mkdir");
    // "train" is a file, so writing train/part-00000.parquet fails after test/ was written.
    std::fs::write(out.join("train"), b"in the way").expect("block");
    let mut o = PrepareOptions::new(
        common::source(
            InputFormat::Jsonl,
            &[Path::new(&format!("test={}", input.display())), &input],
        ),
        out.display().to_string(),
    );
    o.validation_fraction = 0.0;
    let err = prepare(&o).expect_err("blocked");
    assert_names(&err, &["train/part-00000.parquet"]);
    assert!(!out.join("manifest.json").exists());
    assert!(
        !out.join("test/part-00000.parquet").exists(),
        "written shard removed"
    );
}

#[test]
fn an_unreachable_s3_endpoint_fails_within_bounded_time_naming_the_object() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    std::env::set_var("AWS_ENDPOINT_URL", format!("http://127.0.0.1:{port}"));
    std::env::set_var("AWS_ALLOW_HTTP", "true");
    std::env::set_var("AWS_ACCESS_KEY_ID", "k");
    std::env::set_var("AWS_SECRET_ACCESS_KEY", "s");
    std::env::set_var("AWS_REGION", "us-east-1");
    let t = std::time::Instant::now();
    let err = Dataset::open("s3://nobucket/some/ds").expect_err("unreachable");
    assert!(t.elapsed().as_secs() < 30, "took {:?}", t.elapsed());
    assert_names(&err, &["s3://nobucket/some/ds/manifest.json"]);
    assert!(!err.to_string().contains("\"s\""), "no secret in messages");
    let dir = tempfile::tempdir().expect("tmp");
    let input = common::synthetic_jsonl(dir.path(), 10, 2);
    let mut o = PrepareOptions::new(
        common::source(InputFormat::Jsonl, &[&input]),
        "s3://nobucket/out",
    );
    o.validation_fraction = 0.0;
    let t = std::time::Instant::now();
    assert_names(
        &prepare(&o).expect_err("unreachable"),
        &["s3://nobucket/out/manifest.json"],
    );
    assert!(t.elapsed().as_secs() < 30);
}

#[test]
fn a_glob_that_matches_nothing_and_an_empty_corpus_fail_naming_them_and_write_nothing() {
    let dir = tempfile::tempdir().expect("tmp");
    let out = dir.path().join("out");
    let pattern = format!("{}/corpus/*.jsonl.gz", dir.path().display());
    let mut o = PrepareOptions::new(
        common::source(InputFormat::Jsonl, &[]),
        out.display().to_string(),
    );
    o.source.inputs = vec![pattern.clone()];
    assert_names(
        &prepare(&o).expect_err("no match"),
        &["--input", &pattern, "matches no file"],
    );
    assert!(!out.exists(), "nothing written");
    // Files that hold no record: blank lines only, and a gzip member of nothing.
    let blank = write(dir.path(), "blank.jsonl", b"\n  \n\n");
    assert_names(
        &prep(InputFormat::Jsonl, &blank, &out).expect_err("empty"),
        &["blank.jsonl", "\"train\"", "no rows"],
    );
    let gz = dir.path().join("empty.jsonl.gz");
    flate2::write::GzEncoder::new(
        std::fs::File::create(&gz).expect("create"),
        flate2::Compression::fast(),
    )
    .finish()
    .expect("gz");
    assert_names(
        &prep(InputFormat::Jsonl, &gz, &out).expect_err("empty gz"),
        &["empty.jsonl.gz", "no rows"],
    );
    assert!(!out.exists(), "nothing written");
}

#[test]
fn integer_labels_outside_the_class_bound_name_file_row_and_value_before_anything_is_written() {
    let dir = tempfile::tempdir().expect("tmp");
    let out = dir.path().join("out");
    // (label as written, as the message shows it)
    for (value, shown) in [
        ("99999999999", "99999999999"),
        ("-1", "-1"),
        ("65536", "65536"),
        ("1e3", "1000.0"),
    ] {
        let jl = write(
            dir.path(),
            "big.jsonl",
            format!("{{\"text\": \"a\", \"label\": 0}}\n{{\"text\": \"b\", \"label\": 1}}\n{{\"text\": \"c\", \"label\": {value}}}\n").as_bytes(),
        );
        let err = prep(InputFormat::Jsonl, &jl, &out).expect_err("label beyond the bound");
        assert_names(&err, &["big.jsonl", "row 3", &format!("label {shown}")]);
        assert!(!out.exists(), "nothing written for label {value}");
    }
    // The largest class index is fine.
    let jl = write(
        dir.path(),
        "edge.jsonl",
        b"{\"text\": \"a\", \"label\": 0}\n{\"text\": \"b\", \"label\": 65535}\n",
    );
    let m = prep(InputFormat::Jsonl, &jl, &out)
        .expect("65535 is a class index")
        .manifest;
    assert_eq!(m.label_names.map(|n| n.len()), Some(wave_data::MAX_CLASSES));
}
