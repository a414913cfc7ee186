//! Streaming prepare: several inputs and globs, the seeded row shuffle, packing after the shuffle,
//! the validation carve, and output that depends only on the inputs, the seed and the format
//! options (not on memory budgets or thread counts).

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};

use wave_data::{prepare, Dataset, InputFormat, PrepareOptions};

/// `n` JSON Lines rows `{"text": "<tag> row <i> ...", "label": <label>}` in `dir/name`.
fn jsonl(dir: &Path, name: &str, tag: &str, n: usize, label: &str) -> PathBuf {
    let p = dir.join(name);
    let mut f = std::io::BufWriter::new(std::fs::File::create(&p).expect("create"));
    for i in 0..n {
        writeln!(
            f,
            "{}",
            serde_json::json!({"text": format!("{tag} row {i} {}", "word ".repeat(i % 17)), "label": label})
        )
        .expect("write");
    }
    p
}

/// Every file under `dir`, by relative path, with its bytes.
fn files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("dir") {
            let p = e.expect("entry").path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(dir).expect("under dir").to_path_buf();
                out.push((rel, std::fs::read(&p).expect("read")));
            }
        }
    }
    out.sort();
    out
}

/// The `text` column of a split in storage order.
fn texts(uri: &str, split: &str) -> Vec<String> {
    let ds = Dataset::open(uri).expect("open");
    let rgs = ds.row_groups(split).expect("row groups");
    let cols = wave_data::Columns {
        text: true,
        label: false,
        ids: false,
    };
    ds.read_row_groups(split, &rgs, cols)
        .expect("read")
        .iter()
        .flat_map(|d| {
            let t = d.text.as_ref().expect("text");
            t.iter()
                .map(|v| v.unwrap_or_default().to_string())
                .collect::<Vec<_>>()
        })
        .collect()
}

fn options(inputs: &[&str], out: &Path) -> PrepareOptions {
    let mut src = common::source(InputFormat::Jsonl, &[]);
    src.inputs = inputs.iter().map(|s| s.to_string()).collect();
    let mut o = PrepareOptions::new(src, out.display().to_string());
    o.validation_fraction = 0.0;
    o.row_group_rows = 100;
    o
}

#[test]
fn a_glob_and_several_inputs_are_read_in_sorted_order_and_their_rows_mixed() {
    let dir = tempfile::tempdir().expect("tmp");
    let corpus = dir.path().join("corpus");
    std::fs::create_dir_all(&corpus).expect("mkdir");
    for (name, tag) in [("b.jsonl", "bbb"), ("a.jsonl", "aaa"), ("c.jsonl", "ccc")] {
        jsonl(&corpus, name, tag, 300, tag);
    }
    let extra = jsonl(dir.path(), "extra.jsonl", "ddd", 300, "ddd");
    let pattern = format!("{}/*.jsonl", corpus.display());
    let out = dir.path().join("out");
    let m = prepare(&options(&[&pattern, &extra.display().to_string()], &out))
        .expect("prepare")
        .manifest;
    let names: Vec<&str> = m.sources.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["a.jsonl", "b.jsonl", "c.jsonl", "extra.jsonl"]);
    assert_eq!(m.splits["train"].rows, 1200);
    assert_eq!(
        m.splits["train"].label_counts.as_deref(),
        Some(&[300u64; 4][..])
    );
    assert_eq!(m.name, "corpus", "named after the glob's folder-free stem");
    assert!(m.prepare.shuffled);
    // Every row group of 100 rows draws from all four files: 25 expected from each, binomial sd
    // 4.3, so fewer than 8 would be a 4-sigma event.
    let all = texts(&out.display().to_string(), "train");
    assert_eq!(all.len(), 1200);
    for (g, rows) in all.chunks(100).enumerate() {
        for tag in ["aaa", "bbb", "ccc", "ddd"] {
            let n = rows.iter().filter(|t| t.starts_with(tag)).count();
            assert!(n >= 8, "row group {g} holds only {n} rows of {tag}");
        }
    }
}

#[test]
fn the_output_does_not_depend_on_the_shuffle_memory_or_the_tokenizer_threads() {
    let Some(tok) = common::bert() else { return };
    let dir = tempfile::tempdir().expect("tmp");
    let input = common::synthetic_jsonl(dir.path(), 3000, 3);
    let run = |name: &str, memory: u64, threads: usize| {
        let out = dir.path().join(name);
        let mut o = options(&[&input.display().to_string()], &out);
        o.validation_fraction = 0.1;
        o.tokenizer = Some(tok.clone());
        o.shuffle_memory_bytes = memory;
        o.tokenizer_threads = threads;
        let m = prepare(&o).expect("prepare").manifest;
        (m, files(&out))
    };
    let (m, reference) = run("a", 128 << 20, 1);
    assert_eq!(
        m.splits["validation"].label_counts.as_deref(),
        Some(&[100u64, 100, 100][..]),
        "exactly 10% of every class"
    );
    // A 4 KiB budget re-scatters the spool (recursively) before sorting it.
    for (name, memory, threads) in [("b", 4096, 1), ("c", 128 << 20, 2)] {
        let (_, other) = run(name, memory, threads);
        assert_eq!(other.len(), reference.len());
        for ((pa, a), (pb, b)) in reference.iter().zip(&other) {
            assert_eq!(pa, pb);
            assert!(a == b, "{} differs ({name})", pa.display());
        }
    }
}

#[test]
fn keep_order_writes_the_source_order_and_the_seed_changes_the_shuffle() {
    let dir = tempfile::tempdir().expect("tmp");
    let input = jsonl(dir.path(), "in.jsonl", "t", 500, "x");
    let input = input.display().to_string();
    let run = |name: &str, keep: bool, seed: u64| {
        let out = dir.path().join(name);
        let mut o = options(&[&input], &out);
        o.keep_order = keep;
        o.seed = seed;
        let m = prepare(&o).expect("prepare").manifest;
        assert_eq!(m.prepare.shuffled, !keep);
        texts(&out.display().to_string(), "train")
    };
    let source: Vec<String> = (0..500)
        .map(|i| format!("t row {i} {}", "word ".repeat(i % 17)))
        .collect();
    assert_eq!(run("kept", true, 0), source);
    let (a, b) = (run("s0", false, 0), run("s1", false, 1));
    assert_ne!(a, source);
    assert_ne!(a, b);
    let (mut sa, mut sb) = (a.clone(), b);
    sa.sort();
    sb.sort();
    let mut sorted_source = source;
    sorted_source.sort();
    assert_eq!(sa, sorted_source, "a permutation of the input");
    assert_eq!(sb, sorted_source);
}

#[test]
fn packing_runs_on_shuffled_documents_and_validation_holds_whole_documents() {
    let (Some(gz), Some(tok)) = (
        common::shared("gutenberg/gutenberg_00.jsonl.gz"),
        common::bert(),
    ) else {
        return;
    };
    let dir = tempfile::tempdir().expect("tmp");
    let mut src = common::source(InputFormat::Jsonl, &[&gz]);
    src.max_rows = Some(20);
    let out = dir.path().join("g");
    let mut o = PrepareOptions::new(src, out.display().to_string());
    o.tokenizer = Some(tok.clone());
    o.pack_length = Some(128);
    o.validation_fraction = 0.2;
    o.tokenizer_threads = 2;
    let m = prepare(&o).expect("prepare").manifest;
    // Every document ends with one [SEP] (id 102): 4 of the 20 books are validation.
    let ds = Dataset::open(&out.display().to_string()).expect("open");
    let seps = |split: &str| -> (usize, u64) {
        let rgs = ds.row_groups(split).expect("rgs");
        let cols = wave_data::Columns {
            text: false,
            label: false,
            ids: true,
        };
        let data = ds.read_row_groups(split, &rgs, cols).expect("read");
        let mut n = 0;
        let mut tokens = 0;
        for (d, r) in data.iter().zip(&rgs) {
            for i in 0..r.rows as usize {
                let ids = d.ids_of(i).expect("ids");
                n += ids.iter().filter(|&&t| t == 102).count();
                tokens += ids.len() as u64;
            }
        }
        (n, tokens)
    };
    let (train_docs, train_tokens) = seps("train");
    let (val_docs, val_tokens) = seps("validation");
    assert_eq!((train_docs, val_docs), (16, 4));
    assert_eq!(Some(train_tokens), m.splits["train"].tokens);
    assert_eq!(Some(val_tokens), m.splits["validation"].tokens);
    assert_eq!(m.prepare.validation_fraction, 0.2);
    // Packed rows are full except each split's last.
    for split in ["train", "validation"] {
        let s = &m.splits[split];
        assert!(s.tokens.expect("tokens") > (s.rows - 1) * 128);
    }
    // The same documents in source order pack into other rows of the same tokens.
    let mut kept = o.clone();
    kept.keep_order = true;
    kept.validation_fraction = 0.0;
    kept.out = dir.path().join("kept").display().to_string();
    let k = prepare(&kept).expect("kept").manifest;
    assert_eq!(k.splits["train"].tokens, Some(train_tokens + val_tokens));
    assert_ne!(
        k.splits["train"].shards[0].sha256, m.splits["train"].shards[0].sha256,
        "shuffled documents pack differently"
    );
}
