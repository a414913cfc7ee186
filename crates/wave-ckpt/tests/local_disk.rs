//! Checkpoint behaviour on a local folder: round trip, tamper detection, unfinished saves,
//! retention, the background saver.

mod common;

use std::fs;

use bytes::Bytes;
use common::{captured_logs, objects};
use wave_ckpt::{
    step_dir, CheckpointStore, Error, Retention, RetryPolicy, Saver, SaverOptions, COMMITTED,
    LATEST,
};

fn store(dir: &tempfile::TempDir) -> CheckpointStore {
    CheckpointStore::open(
        &dir.path().join("ckpt").display().to_string(),
        RetryPolicy::default(),
    )
    .expect("open")
    .with_writer(4, "local test")
}

#[test]
fn save_list_load_round_trip_on_local_disk() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = store(&dir);
    assert_eq!(store.latest().expect("latest"), None);
    for step in [100, 200] {
        let info = store
            .save(
                step,
                objects(step, 10_000),
                serde_json::json!({"loss": 1.5, "step": step}),
            )
            .expect("save");
        assert_eq!(
            (info.step, info.attempts, info.latest_moved),
            (step, 1, true)
        );
        assert!(info.uri.ends_with(&step_dir(step)), "{}", info.uri);
    }
    assert_eq!(store.latest().expect("latest"), Some(200));
    let listed = store.list().expect("list");
    assert_eq!(
        listed
            .iter()
            .map(|c| (c.step, c.committed, c.objects))
            .collect::<Vec<_>>(),
        vec![(100, true, 5), (200, true, 5)]
    );
    assert!(listed[0].bytes > 10_000);

    let loaded = store.load(100).expect("load");
    assert_eq!(loaded.objects, objects(100, 10_000));
    assert_eq!((loaded.manifest.step, loaded.manifest.world_size), (100, 4));
    assert_eq!(loaded.manifest.created_by, "local test");
    assert_eq!(loaded.manifest.metadata["loss"], 1.5);
    assert_eq!(store.verify(200).expect("verify").objects.len(), 3);

    // A second handle (another process, the CLI) sees the same.
    let again = CheckpointStore::open(
        &format!("file://{}", dir.path().join("ckpt").display()),
        RetryPolicy::default(),
    )
    .expect("reopen");
    assert_eq!(again.latest().expect("latest"), Some(200));
}

#[test]
fn modified_object_fails_verify_and_load_naming_the_object() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = store(&dir);
    store
        .save(7, objects(7, 4096), serde_json::json!({}))
        .expect("save");
    let model = dir
        .path()
        .join("ckpt")
        .join(step_dir(7))
        .join("model.safetensors");
    let mut bytes = fs::read(&model).expect("read");
    bytes[100] ^= 1;
    fs::write(&model, &bytes).expect("tamper");
    for err in [
        store.verify(7).expect_err("verify must fail"),
        store.load(7).expect_err("load must fail"),
    ] {
        assert!(matches!(err, Error::Corrupt { step: 7, .. }), "{err:?}");
        let msg = err.to_string();
        assert!(
            msg.contains("step-00000007/model.safetensors") && msg.contains("sha256"),
            "{msg}"
        );
    }
    fs::write(&model, &bytes[..10]).expect("truncate");
    let msg = store.load(7).expect_err("truncated").to_string();
    assert!(
        msg.contains("model.safetensors") && msg.contains("10 bytes"),
        "{msg}"
    );

    // Editing the manifest (say, to match the tampered object) breaks the commit marker's hash.
    let manifest = dir
        .path()
        .join("ckpt")
        .join(step_dir(7))
        .join("manifest.json");
    let text = fs::read_to_string(&manifest)
        .expect("manifest")
        .replace("\"world_size\": 4", "\"world_size\": 5");
    fs::write(&manifest, text).expect("edit manifest");
    let msg = store.verify(7).expect_err("edited manifest").to_string();
    assert!(
        msg.contains("manifest.json") && msg.contains("commit marker"),
        "{msg}"
    );
}

#[test]
fn uncommitted_step_is_invisible_to_latest_and_load_and_removed_by_next_save() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = store(&dir);
    store
        .save(10, objects(10, 100), serde_json::json!({}))
        .expect("save 10");
    store
        .save(20, objects(20, 100), serde_json::json!({}))
        .expect("save 20");
    // Step 20 as an interrupted save leaves it: objects and manifest, no marker, `latest` still at
    // 10. And a folder holding only the temporary file of an interrupted write.
    let root = dir.path().join("ckpt");
    fs::remove_file(root.join(step_dir(20)).join(COMMITTED)).expect("unmark");
    assert_eq!(
        store.latest().expect("latest"),
        Some(10),
        "a pointer to an uncommitted step falls back to the newest committed one"
    );
    fs::write(
        root.join(LATEST),
        format!(
            "{{\"step\":10,\"manifest_sha256\":\"{}\"}}",
            sha_of(&root, 10)
        ),
    )
    .expect("point at 10");
    fs::create_dir_all(root.join(step_dir(25))).expect("mkdir");
    fs::write(
        root.join(step_dir(25)).join("model.safetensors#1"),
        b"partial",
    )
    .expect("temp file");

    assert_eq!(store.latest().expect("latest"), Some(10));
    assert!(matches!(
        store.load(20),
        Err(Error::NotCommitted { step: 20, .. })
    ));
    let listed: Vec<_> = store
        .list()
        .expect("list")
        .into_iter()
        .map(|c| (c.step, c.committed))
        .collect();
    assert_eq!(listed, vec![(10, true), (20, false), (25, false)]);

    store
        .save(30, objects(30, 100), serde_json::json!({}))
        .expect("save 30");
    let listed: Vec<_> = store
        .list()
        .expect("list")
        .into_iter()
        .map(|c| (c.step, c.committed))
        .collect();
    assert_eq!(listed, vec![(10, true), (30, true)]);
    assert!(!root.join(step_dir(25)).exists());
    assert_eq!(store.latest().expect("latest"), Some(30));
}

fn sha_of(root: &std::path::Path, step: u64) -> String {
    fs::read_to_string(root.join(step_dir(step)).join(COMMITTED)).expect("marker")
}

#[test]
fn saving_a_committed_step_again_republishes_same_content_and_rejects_other_content() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = store(&dir);
    let first = store
        .save(5, objects(5, 64), serde_json::json!({}))
        .expect("save");
    let again = store
        .save(5, objects(5, 64), serde_json::json!({"other": "metadata"}))
        .expect("idempotent");
    assert_eq!(first.manifest_sha256, again.manifest_sha256);
    let err = store
        .save(5, objects(6, 64), serde_json::json!({}))
        .expect_err("different content");
    assert!(matches!(err, Error::StepExists { step: 5, .. }), "{err:?}");
    let bad = store
        .save(6, vec![("a/b".into(), Bytes::new())], serde_json::json!({}))
        .expect_err("bad name");
    assert!(matches!(bad, Error::InvalidName { step: 6, .. }), "{bad:?}");
}

#[test]
fn latest_never_moves_backwards() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = store(&dir);
    store
        .save(50, objects(50, 64), serde_json::json!({}))
        .expect("save 50");
    let older = store
        .save(40, objects(40, 64), serde_json::json!({}))
        .expect("save 40");
    assert!(!older.latest_moved);
    assert_eq!(store.latest().expect("latest"), Some(50));
    store.load(40).expect("40 is committed and loadable");
}

#[test]
fn retention_keeps_last_k_and_every_m_and_never_deletes_latest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = store(&dir);
    for step in (1..=8).map(|s| s * 100) {
        store
            .save(step, objects(step, 64), serde_json::json!({}))
            .expect("save");
    }
    let report = store
        .apply_retention(Retention {
            keep_last: 2,
            keep_every: 400,
        })
        .expect("retention");
    assert_eq!(report.deleted, vec![100, 200, 300, 500, 600]);
    let kept: Vec<u64> = store
        .list()
        .expect("list")
        .into_iter()
        .map(|c| c.step)
        .collect();
    assert_eq!(kept, vec![400, 700, 800]);
    for step in kept {
        store.verify(step).expect("kept steps verify");
    }
    // Even keep_last = 0 keeps the step `latest` names.
    store
        .apply_retention(Retention {
            keep_last: 0,
            keep_every: 0,
        })
        .expect("retention");
    assert_eq!(
        store
            .list()
            .expect("list")
            .into_iter()
            .map(|c| c.step)
            .collect::<Vec<_>>(),
        vec![800]
    );
    assert_eq!(store.latest().expect("latest"), Some(800));
}

#[test]
fn background_saver_reports_every_save_in_order_and_applies_retention() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = store(&dir);
    let opts = SaverOptions {
        max_in_flight: 1,
        retention: Some(Retention {
            keep_last: 2,
            keep_every: 0,
        }),
    };
    let mut saver = Saver::new(store.clone(), opts).expect("saver");
    let mut outcomes = Vec::new();
    for step in 1..=5 {
        saver
            .submit(step, objects(step, 50_000), serde_json::json!({}))
            .expect("submit");
        assert!(
            saver.pending() <= 2,
            "at most the running save and the one just queued"
        );
        outcomes.extend(saver.poll());
    }
    outcomes.extend(saver.finish().expect("finish"));
    let steps: Vec<u64> = outcomes.iter().map(|o| o.step).collect();
    assert_eq!(steps, vec![1, 2, 3, 4, 5]);
    assert!(outcomes.iter().all(|o| o.result.is_ok()), "{outcomes:?}");
    assert_eq!(store.latest().expect("latest"), Some(5));
    assert_eq!(
        store
            .list()
            .expect("list")
            .into_iter()
            .map(|c| c.step)
            .collect::<Vec<_>>(),
        vec![4, 5]
    );
    assert!(matches!(
        Saver::new(
            store,
            SaverOptions {
                max_in_flight: 0,
                retention: None
            }
        ),
        Err(Error::Config { .. })
    ));
}

#[test]
fn a_damaged_latest_falls_back_to_the_newest_committed_step_with_a_warning() {
    let logs = captured_logs();
    let dir = tempfile::tempdir().expect("tempdir");
    let store = store(&dir);
    for step in [10, 20, 30] {
        store
            .save(step, objects(step, 100), serde_json::json!({}))
            .expect("save");
    }
    let root = dir.path().join("ckpt");
    let latest = root.join(LATEST);
    let pointer =
        |step: u64, sha: &str| format!("{{\"step\":{step},\"manifest_sha256\":\"{sha}\"}}");
    let cases = [
        (
            "half-written pointer",
            Some("{\"step\":3".to_string()),
            "unreadable latest pointer",
        ),
        (
            "pointer to a step that does not exist",
            Some(pointer(40, &sha_of(&root, 30))),
            "step 40 whose commit marker is missing",
        ),
        (
            "pointer with another manifest's hash",
            Some(pointer(30, &sha_of(&root, 20))),
            "step 30 whose commit marker is",
        ),
        (
            "no pointer although steps are committed",
            None,
            "is missing although step 30 is committed",
        ),
    ];
    for (what, content, warning) in cases {
        match &content {
            Some(text) => fs::write(&latest, text).expect("damage latest"),
            None => fs::remove_file(&latest).expect("remove latest"),
        }
        let before = logs.lock().unwrap_or_else(|e| e.into_inner()).len();
        assert_eq!(store.latest().expect(what), Some(30), "{what}");
        let logged =
            String::from_utf8_lossy(&logs.lock().unwrap_or_else(|e| e.into_inner())[before..])
                .to_string();
        assert!(
            logged.contains("WARN") && logged.contains(warning) && logged.contains("ckpt/latest"),
            "{what}: expected a warning naming {warning:?}:\n{logged}"
        );
    }

    // The newest committed step is itself damaged (its manifest no longer matches its marker):
    // the fallback skips it.
    fs::write(&latest, "garbage").expect("damage latest");
    let manifest = root.join(step_dir(30)).join("manifest.json");
    let text = fs::read_to_string(&manifest).expect("manifest");
    fs::write(&manifest, text.replace("\"step\": 30", "\"step\": 30 ")).expect("edit manifest");
    assert_eq!(store.latest().expect("latest"), Some(20));
    store.load(20).expect("the fallback step loads");

    // A pointer naming a later step that is not committed does not hold the next save back.
    fs::write(&latest, pointer(99, &sha_of(&root, 20))).expect("dangling pointer");
    let info = store
        .save(40, objects(40, 100), serde_json::json!({}))
        .expect("save 40");
    assert!(info.latest_moved, "{info:?}");
    assert_eq!(store.latest().expect("latest"), Some(40));
    let fresh = tempfile::tempdir().expect("tempdir");
    assert_eq!(
        crate::store(&fresh).latest().expect("empty root"),
        None,
        "an empty root has nothing to resume"
    );
}

#[test]
fn describe_names_the_committed_steps_the_latest_its_run_and_a_damaged_pointer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = store(&dir);
    let empty = store.describe().expect("describe an empty root");
    assert!(empty.is_empty() && empty.latest.is_none(), "{empty:?}");
    assert_eq!(
        empty.to_string(),
        format!("{} holds no committed checkpoint", store.uri())
    );

    for step in [10, 20] {
        store
            .save(
                step,
                objects(step, 100),
                serde_json::json!({ wave_ckpt::RUN_KEY: "alpha", "loss": 1.0 }),
            )
            .expect("save");
    }
    let root = dir.path().join("ckpt");
    fs::create_dir_all(root.join(step_dir(25))).expect("unfinished folder");
    fs::write(root.join(step_dir(25)).join("model.safetensors"), b"part").expect("partial");
    let summary = store.describe().expect("describe");
    assert!(!summary.is_empty());
    assert_eq!(
        (
            summary.committed.clone(),
            summary.uncommitted.clone(),
            summary.latest
        ),
        (vec![10, 20], vec![25], Some(20))
    );
    assert_eq!(summary.run(), Some("alpha"));
    assert_eq!(summary.pointer_problem, None);
    let manifest = summary
        .latest_manifest
        .as_ref()
        .expect("manifest of latest");
    assert_eq!((manifest.step, manifest.world_size), (20, 4));
    let line = summary.to_string();
    for part in [
        store.uri(),
        "2 committed checkpoint(s)",
        "latest step 20",
        "of run \"alpha\"",
        "written by local test at world size 4",
        "s ago",
    ] {
        assert!(line.contains(part), "{part:?} missing from: {line}");
    }

    // `latest` names a step whose marker is gone: the summary resolves as `latest()` does and
    // says why.
    fs::remove_file(root.join(step_dir(20)).join(COMMITTED)).expect("unmark 20");
    let summary = store.describe().expect("describe");
    assert_eq!(
        (summary.latest, summary.committed.clone()),
        (Some(10), vec![10])
    );
    let problem = summary
        .pointer_problem
        .expect("the pointer problem is reported");
    assert!(
        problem.contains("step 20")
            && problem.contains("falling back to the newest committed step 10"),
        "{problem}"
    );
    assert_eq!(store.latest().expect("latest"), summary.latest);
}
