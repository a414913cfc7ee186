//! `wave-dist data …` and `wave-dist tokenizer …` as a user runs them.

mod common;

use common::*;

#[test]
fn fetch_takes_the_archive_from_a_mirror_and_checks_its_checksum() {
    let Some(data) = shared_data() else { return };
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = tmp.path().to_str().expect("utf-8");
    let mirror = data.join("mirror");
    let stdout = ok(&wave_dist(&[
        "data",
        "fetch",
        "imdb",
        "--mirror",
        mirror.to_str().expect("utf-8"),
        "--out",
        out,
    ]));
    assert!(stdout.contains("sha256"), "{stdout}");
    let fetched = std::fs::read(tmp.path().join("aclImdb_v1.tar.gz")).expect("archive copied");
    assert_eq!(
        fetched.len() as u64,
        std::fs::metadata(mirror.join("aclImdb_v1.tar.gz"))
            .expect("mirror")
            .len()
    );
}

#[test]
fn fetch_rejects_an_archive_whose_checksum_does_not_match() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mirror = tmp.path().join("mirror");
    std::fs::create_dir_all(&mirror).expect("mkdir");
    std::fs::write(mirror.join("ag_news_csv.tgz"), b"not the archive").expect("write");
    let out = tmp.path().join("out");
    fails_naming(
        &wave_dist(&[
            "data",
            "fetch",
            "agnews",
            "--mirror",
            mirror.to_str().expect("utf-8"),
            "--out",
            out.to_str().expect("utf-8"),
        ]),
        &["ag_news_csv.tgz"],
    );
}

#[test]
fn preparing_the_agnews_mirror_says_its_train_split_is_missing_and_writes_nothing() {
    let Some(data) = shared_data() else { return };
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = tmp.path().join("agnews");
    let archive = data.join("mirror/ag_news_csv.tgz");
    let result = wave_dist(&[
        "data",
        "prepare",
        "--format",
        "agnews",
        "--input",
        archive.to_str().expect("utf-8"),
        "--out",
        out.to_str().expect("utf-8"),
    ]);
    fails_naming(&result, &["train", "ag_news_csv.tgz", "--splits test"]);
    assert!(
        !out.join("manifest.json").exists(),
        "no manifest may be left behind"
    );
}

#[test]
fn inspect_summarises_a_prepared_data_set_and_verifies_its_shards() {
    let Some(prepared) = agnews_test_split() else {
        return;
    };
    let stdout = ok(&wave_dist(&[
        "data",
        "inspect",
        prepared.to_str().expect("utf-8"),
        "--verify",
    ]));
    for needle in ["7600", "test", "Sci/Tech"] {
        assert!(
            stdout.contains(needle),
            "inspect output should mention {needle}:\n{stdout}"
        );
    }
}

#[test]
fn tokenizer_train_writes_a_tokenizer_that_prepare_can_use() {
    let Some(data) = shared_data() else { return };
    let tmp = tempfile::tempdir().expect("tempdir");
    let tokenizer = tmp.path().join("tokenizer.json");
    let corpus = data.join("wikitext-2/valid.txt");
    ok(&wave_dist(&[
        "tokenizer",
        "train",
        "--kind",
        "wordpiece",
        "--vocab-size",
        "2000",
        "--input",
        corpus.to_str().expect("utf-8"),
        "--out",
        tokenizer.to_str().expect("utf-8"),
    ]));
    let out = tmp.path().join("wiki");
    ok(&wave_dist(&[
        "data",
        "prepare",
        "--format",
        "text",
        "--input",
        corpus.to_str().expect("utf-8"),
        "--out",
        out.to_str().expect("utf-8"),
        "--tokenizer",
        tokenizer.to_str().expect("utf-8"),
        "--pack-length",
        "64",
    ]));
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("manifest.json")).expect("manifest"))
            .expect("json");
    assert_eq!(manifest["tokenizer"]["vocab_size"], 2000);
    assert_eq!(manifest["pack_length"], 64);
}
