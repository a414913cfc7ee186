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

/// `dir/name` with `body`.
fn write(dir: &std::path::Path, name: &str, body: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, body).expect("write");
    p
}

fn s(p: &std::path::Path) -> &str {
    p.to_str().expect("utf-8 path")
}

#[test]
fn a_huge_integer_label_is_an_error_naming_file_row_and_value_and_nothing_is_written() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let input = write(
        tmp.path(),
        "labels.jsonl",
        "{\"text\": \"fine\", \"label\": 1}\n{\"text\": \"also fine\", \"label\": 0}\n{\"text\": \"too big\", \"label\": 99999999999}\n",
    );
    let out = tmp.path().join("out");
    let t = std::time::Instant::now();
    fails_naming(
        &wave_dist(&[
            "data",
            "prepare",
            "--format",
            "jsonl",
            "--input",
            s(&input),
            "--out",
            s(&out),
        ]),
        &["labels.jsonl", "row 3", "label 99999999999", "0..65536"],
    );
    assert!(
        t.elapsed().as_secs() < 60,
        "no huge allocation: {:?}",
        t.elapsed()
    );
    assert!(!out.exists(), "nothing written");
}

#[test]
fn a_glob_that_matches_no_file_or_an_empty_corpus_fails_naming_it_and_writes_nothing() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = tmp.path().join("out");
    let pattern = format!("{}/corpus/*.jsonl.gz", tmp.path().display());
    fails_naming(
        &wave_dist(&[
            "data",
            "prepare",
            "--format",
            "jsonl",
            "--input",
            &pattern,
            "--out",
            s(&out),
        ]),
        &[&pattern, "matches no file"],
    );
    let empty = write(tmp.path(), "empty.txt", "\n\n   \n");
    let spool = tmp.path().join("spool");
    std::fs::create_dir_all(&spool).expect("mkdir");
    fails_naming(
        &wave_dist(&[
            "data",
            "prepare",
            "--format",
            "text",
            "--input",
            s(&empty),
            "--out",
            s(&out),
            "--temp-dir",
            s(&spool),
        ]),
        &["empty.txt", "no rows"],
    );
    assert!(!out.exists(), "nothing written");
    assert_eq!(
        std::fs::read_dir(&spool).expect("dir").count(),
        0,
        "a failed prepare removes its temporary folder"
    );
}

#[test]
fn prepare_shuffles_a_glob_of_inputs_and_keep_order_keeps_them_in_order() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let corpus = tmp.path().join("corpus");
    std::fs::create_dir_all(&corpus).expect("mkdir");
    for (name, label) in [("part-1.jsonl", "neg"), ("part-2.jsonl", "pos")] {
        let body: String = (0..400)
            .map(|i| format!("{{\"text\": \"{label} review {i}\", \"label\": \"{label}\"}}\n"))
            .collect();
        write(&corpus, name, &body);
    }
    let glob = format!("{}/*.jsonl", corpus.display());
    let prepare = |out: &std::path::Path, extra: &[&str]| {
        let mut args = vec![
            "data",
            "prepare",
            "--format",
            "jsonl",
            "--input",
            &glob,
            "--out",
            s(out),
            "--validation-fraction",
            "0.25",
            "--row-group-rows",
            "100",
        ];
        args.extend_from_slice(extra);
        let stdout = ok(&wave_dist(&args));
        let m: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join("manifest.json")).expect("manifest"))
                .expect("json");
        (stdout, m)
    };
    let (stdout, m) = prepare(&tmp.path().join("shuffled"), &[]);
    assert!(stdout.contains("rows shuffled (seed 0)"), "{stdout}");
    assert_eq!(m["prepare"]["shuffled"], true);
    assert_eq!(m["sources"].as_array().map(Vec::len), Some(2));
    assert_eq!(
        m["splits"]["validation"]["label_counts"],
        serde_json::json!([100, 100])
    );
    assert_eq!(
        m["splits"]["train"]["label_counts"],
        serde_json::json!([300, 300])
    );
    let (stdout, m) = prepare(&tmp.path().join("kept"), &["--keep-order", "--seed", "3"]);
    assert!(stdout.contains("rows in source order (seed 3)"), "{stdout}");
    assert_eq!(m["prepare"]["shuffled"], false);
    // The order report shows what each does to batches: the kept split is sorted (all neg, then
    // all pos), so windows of a single row group leave batches far from i.i.d.
    let report = |dir: &str, extra: &[&str]| {
        let path = tmp.path().join(dir);
        let mut args = vec![
            "data",
            "inspect",
            s(&path),
            "--samples",
            "0",
            "--batch-size",
            "16",
        ];
        args.extend_from_slice(extra);
        let out = ok(&wave_dist(&args));
        let line = out
            .lines()
            .find(|l| l.contains("per-batch class-fraction std"))
            .unwrap_or_else(|| panic!("no order report:\n{out}"))
            .to_string();
        let ratio: f64 = line
            .split(": ")
            .nth(1)
            .and_then(|r| r.split('x').next())
            .and_then(|r| r.parse().ok())
            .unwrap_or_else(|| panic!("no ratio in {line:?}"));
        assert!(out.contains("worst batch"), "{out}");
        ratio
    };
    let coarse = report(
        "kept",
        &["--shuffle-block", "100", "--shuffle-window", "100"],
    );
    assert!(
        coarse > 1.5,
        "sorted split, one row group per window: {coarse}"
    );
    let fine = report("kept", &[]);
    assert!(fine < 1.3, "sorted split, default shuffle: {fine}");
}

#[test]
fn a_prepare_killed_at_any_moment_leaves_nothing_that_looks_complete() {
    let Some(data) = shared_data() else { return };
    let tmp = tempfile::tempdir().expect("tempdir");
    let corpus = data.join("gutenberg/gutenberg_00.jsonl.gz");
    let spool = tmp.path().join("spool");
    std::fs::create_dir_all(&spool).expect("mkdir");
    let args = |out: &std::path::Path| -> Vec<String> {
        [
            "data",
            "prepare",
            "--format",
            "jsonl",
            "--input",
            s(&corpus),
            "--out",
            s(out),
            "--shard-bytes",
            "4000000",
            "--temp-dir",
            s(&spool),
        ]
        .map(String::from)
        .to_vec()
    };
    // A complete run, for its duration and its files.
    let reference = tmp.path().join("reference");
    let t = std::time::Instant::now();
    ok(&wave_dist(
        &args(&reference)
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    ));
    let took = t.elapsed();
    let manifest = std::fs::read(reference.join("manifest.json")).expect("manifest");
    let leftovers = || std::fs::read_dir(&spool).expect("spool dir").count();
    assert_eq!(
        leftovers(),
        0,
        "a finished prepare removes its temporary folder"
    );
    let mut killed_with_shards = None;
    for (i, fraction) in [0.1, 0.35, 0.6, 0.85].into_iter().enumerate() {
        let out = tmp.path().join(format!("killed-{i}"));
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_wave-dist"))
            .args(args(&out))
            .current_dir(workspace_root())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn");
        std::thread::sleep(took.mul_f64(fraction));
        // A kill that lands after the manifest was written (or once the process ended) meets a
        // finished prepare: then the data set must be the complete one, shards and all.
        let _ = child.kill();
        child.wait().expect("reaped");
        if out.join("manifest.json").exists() {
            assert_eq!(
                std::fs::read(out.join("manifest.json")).expect("manifest"),
                manifest,
                "killed at {fraction} of the run: a manifest exists, so it must be the complete one"
            );
            ok(&wave_dist(&["data", "inspect", "--verify", s(&out)]));
            continue;
        }
        // Readers refuse it (no folder yet, or no manifest).
        fails_naming(&wave_dist(&["data", "inspect", s(&out)]), &[s(&out)]);
        if out.join("train").is_dir() {
            killed_with_shards = Some(out);
        }
    }
    let out = killed_with_shards.unwrap_or_else(|| {
        panic!("no kill landed while shards were being written (a run takes {took:?})")
    });
    // Preparing again into a folder left with partial shards just works.
    ok(&wave_dist(
        &args(&out).iter().map(String::as_str).collect::<Vec<_>>(),
    ));
    assert_eq!(
        std::fs::read(out.join("manifest.json")).expect("redone"),
        manifest
    );
}
