//! Fetch and prepare the offline mirror archives of AG News and IMDB (shared data).

mod common;

use std::path::Path;

use wave_data::{
    fetch, inspect, prepare, Dataset, Error, InputFormat, InspectOptions, PrepareOptions,
};

fn read_all(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for split in std::fs::read_dir(dir).expect("dir") {
        let p = split.expect("entry").path();
        if p.is_dir() {
            out.extend(read_all(&p));
        } else {
            out.push((p.display().to_string(), std::fs::read(&p).expect("read")));
        }
    }
    out.sort();
    out
}

fn agnews_test(out: &Path) -> Option<PrepareOptions> {
    let archive = common::shared("mirror/ag_news_csv.tgz")?;
    let mut o = PrepareOptions::new(
        common::source(InputFormat::AgNews, &[&archive]),
        out.display().to_string(),
    );
    o.splits = Some(vec!["test".into()]);
    Some(o)
}

#[test]
fn agnews_mirror_test_split_has_7600_rows_1900_per_class() {
    let dir = tempfile::tempdir().expect("tmp");
    let Some(mut opts) = agnews_test(&dir.path().join("ag")) else {
        return;
    };
    // Source order, so the first row shown is the CSV's first record.
    opts.keep_order = true;
    let report = prepare(&opts).expect("prepare");
    let m = &report.manifest;
    assert!(!m.prepare.shuffled);
    assert_eq!(
        m.label_names.as_deref(),
        Some(
            &[
                "World".to_string(),
                "Sports".into(),
                "Business".into(),
                "Sci/Tech".into()
            ][..]
        )
    );
    let test = &m.splits["test"];
    assert_eq!(test.rows, 7600);
    assert_eq!(
        test.label_counts.as_deref(),
        Some(&[1900u64, 1900, 1900, 1900][..])
    );
    assert_eq!(m.splits.len(), 1);
    let ds = Dataset::open(&report.uri).expect("open");
    assert_eq!(ds.num_classes(), Some(4));
    assert_eq!(ds.split_rows("test").expect("rows"), 7600);
    let text = inspect(&InspectOptions {
        verify: true,
        ..InspectOptions::new(report.uri.clone())
    })
    .expect("inspect");
    assert!(
        text.contains("split test: 7600 rows") && text.contains("all match"),
        "{text}"
    );
    // First row of test.csv: "3","Fears for T N pension after talks","Unions representing ..."
    assert!(
        text.contains(
            "label 2 (Business): \"Fears for T N pension after talks Unions representing"
        ),
        "{text}"
    );
}

#[test]
fn preparing_the_agnews_mirror_twice_gives_byte_identical_shards_and_manifest() {
    let dir = tempfile::tempdir().expect("tmp");
    let Some(a) = agnews_test(&dir.path().join("a")) else {
        return;
    };
    let Some(b) = agnews_test(&dir.path().join("b")) else {
        return;
    };
    prepare(&a).expect("a");
    prepare(&b).expect("b");
    let (fa, fb) = (
        read_all(&dir.path().join("a")),
        read_all(&dir.path().join("b")),
    );
    assert_eq!(fa.len(), 2, "one shard + manifest");
    for ((_, x), (_, y)) in fa.iter().zip(&fb) {
        assert!(x == y, "files differ");
    }
}

#[test]
fn agnews_mirror_without_train_csv_reports_the_missing_split_and_writes_nothing() {
    let dir = tempfile::tempdir().expect("tmp");
    let out = dir.path().join("ag");
    let Some(mut opts) = agnews_test(&out) else {
        return;
    };
    opts.splits = None;
    let err = prepare(&opts).expect_err("train missing");
    assert!(
        matches!(&err, Error::MissingSplit { split, .. } if split == "train"),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("\"train\"")
            && msg.contains("ag_news_csv.tgz")
            && msg.contains("available: test"),
        "{msg}"
    );
    assert!(
        !out.exists(),
        "the output folder this run created is removed again"
    );
}

#[test]
fn imdb_mirror_train_becomes_train_plus_stratified_validation_of_25000_rows() {
    let Some(archive) = common::shared("mirror/aclImdb_v1.tar.gz") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tmp");
    let mut o = PrepareOptions::new(
        common::source(InputFormat::Imdb, &[&archive]),
        dir.path().join("imdb").display().to_string(),
    );
    o.splits = Some(vec!["train".into(), "validation".into()]);
    o.validation_fraction = 0.1;
    o.seed = 3;
    o.shard_rows = Some(10_000);
    let m = prepare(&o).expect("prepare").manifest;
    let (t, v) = (&m.splits["train"], &m.splits["validation"]);
    assert_eq!(t.rows + v.rows, 25_000);
    assert_eq!(
        v.label_counts.as_deref(),
        Some(&[1250u64, 1250][..]),
        "stratified"
    );
    assert_eq!(t.label_counts.as_deref(), Some(&[11250u64, 11250][..]));
    assert_eq!(t.shards.len(), 3, "22,500 rows in shards of at most 10,000");
    assert!(t
        .shards
        .iter()
        .all(|s| s.row_groups.iter().all(|&r| r <= 1024)));
    assert_eq!(
        m.label_names.as_deref(),
        Some(&["neg".to_string(), "pos".into()][..])
    );
    // Asking for the test split names what the archive holds.
    o.splits = None;
    o.out = dir.path().join("imdb2").display().to_string();
    let msg = prepare(&o).expect_err("no test").to_string();
    assert!(
        msg.contains("\"test\"") && msg.contains("aclImdb_v1.tar.gz"),
        "{msg}"
    );
}

#[test]
fn imdb_prepare_is_byte_identical_across_runs_and_its_shards_are_no_longer_class_sorted() {
    let Some(archive) = common::shared("mirror/aclImdb_v1.tar.gz") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tmp");
    let run = |name: &str| {
        let mut o = PrepareOptions::new(
            common::source(InputFormat::Imdb, &[&archive]),
            dir.path().join(name).display().to_string(),
        );
        o.splits = Some(vec!["train".into(), "validation".into()]);
        o.validation_fraction = 0.2;
        prepare(&o).expect("prepare").manifest
    };
    let m = run("a");
    run("b");
    let (fa, fb) = (
        read_all(&dir.path().join("a")),
        read_all(&dir.path().join("b")),
    );
    assert_eq!(fa.len(), fb.len());
    assert_eq!(fa.len(), 3, "a shard per split + manifest");
    for ((_, x), (_, y)) in fa.iter().zip(&fb) {
        assert!(x == y, "files differ");
    }
    assert!(m.prepare.shuffled);
    // The quickstart's 5,000-review validation split, exactly stratified.
    assert_eq!(
        m.splits["validation"].label_counts.as_deref(),
        Some(&[2500u64, 2500][..])
    );
    // The archive is sorted neg then pos; the shards are not: every row group of 1,024 rows is
    // within 10 points of half positive (binomial sd 1.6 points), and no run of one label is
    // longer than 30 rows (chance of one in a uniform order: about 1e-5).
    let ds = Dataset::open(&dir.path().join("a").display().to_string()).expect("open");
    for split in ["train", "validation"] {
        let labels = common::labels_of(&ds, split);
        let mut start = 0;
        for rg in ds.row_groups(split).expect("rgs") {
            let rows = &labels[start..start + rg.rows as usize];
            start += rg.rows as usize;
            let pos = rows.iter().filter(|&&l| l == 1).count() as f64 / rows.len() as f64;
            if rows.len() >= 512 {
                assert!(
                    (0.4..=0.6).contains(&pos),
                    "{split}: a row group is {pos:.2} positive"
                );
            }
        }
        let longest = labels
            .chunk_by(|a, b| a == b)
            .map(<[i64]>::len)
            .max()
            .unwrap_or(0);
        assert!(longest <= 30, "{split}: a run of {longest} equal labels");
    }
}

#[test]
fn fetch_copies_from_a_mirror_and_verifies_pinned_checksums() {
    let Some(mirror) = common::shared("mirror") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tmp");
    let r = fetch("agnews", Some(&mirror), dir.path()).expect("agnews");
    assert_eq!(r.splits, ["test"]);
    assert!(r.variant.contains("mirror"));
    assert_eq!(
        r.members_checked,
        ["ag_news_csv/test.csv"],
        "official test.csv MD5 verified"
    );
    assert!(dir.path().join("ag_news_csv.tgz").is_file());
    let r = fetch("imdb", Some(&mirror), dir.path()).expect("imdb");
    assert_eq!(r.splits, ["train"]);
    // A tampered archive is rejected and removed.
    let bad = tempfile::tempdir().expect("tmp");
    std::fs::write(bad.path().join("aclImdb_v1.tar.gz"), b"not an archive").expect("write");
    let out = tempfile::tempdir().expect("tmp");
    let err = fetch("imdb", Some(bad.path()), out.path())
        .expect_err("bad")
        .to_string();
    assert!(err.contains("aclImdb_v1.tar.gz"), "{err}");
    assert!(
        !out.path().join("aclImdb_v1.tar.gz").exists()
            && !out.path().join("aclImdb_v1.tar.gz.part").exists()
    );
    let err = fetch("nope", Some(bad.path()), out.path())
        .expect_err("unknown")
        .to_string();
    assert!(err.contains("agnews, imdb"), "{err}");
}

#[test]
fn fetch_without_network_fails_fast_with_a_clear_message() {
    let out = tempfile::tempdir().expect("tmp");
    std::env::remove_var(wave_data::MIRROR_ENV);
    let t = std::time::Instant::now();
    let err = fetch("agnews", None, out.path())
        .expect_err("no network here")
        .to_string();
    assert!(t.elapsed().as_secs() < 60, "bounded: {:?}", t.elapsed());
    assert!(
        err.contains("s3.amazonaws.com") && err.contains("--mirror"),
        "{err}"
    );
    assert!(
        std::fs::read_dir(out.path()).expect("dir").next().is_none(),
        "nothing left behind"
    );
}
