//! Checkpoints on `az://` for real: Azurite on loopback, started by the test
//! (`wave_testkit::Azurite`), exercised as `tests/s3.rs` exercises SeaweedFS. First the two
//! conditional writes that commit markers and `latest` rely on, on the raw store; then a
//! save/list/load/retention round trip and a resume from a fresh handle. (`gs://` checkpoints are
//! not tested: no GCS emulator accepts object_store's uploads, see `wave_testkit::GcsEmulator`.)
//! Skips when Azurite is missing (fails under `CI=true`).

mod common;

use common::objects;
use object_store::{ObjectStoreExt, PutMode, PutOptions, UpdateVersion};
use wave_ckpt::{CheckpointStore, Error, Retention, RetryPolicy, StoreOptions};
use wave_testkit::Azurite;

/// `PutMode::Create` refuses an existing object and `PutMode::Update` refuses a stale e-tag:
/// what `COMMITTED` (create-only) and the `latest` pointer (compare-and-swap) need from a store.
fn conditional_puts_are_enforced(uri: &str) {
    let root = wave_store::Root::open(uri, false, &StoreOptions::default()).expect("open root");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let path = root.path("conditional/object");
    let put = |bytes: &'static [u8], mode: PutMode| {
        rt.block_on(root.store.put_opts(
            &path,
            bytes.into(),
            PutOptions {
                mode,
                ..PutOptions::default()
            },
        ))
    };
    let first = put(b"one", PutMode::Create).expect("create a new object");
    let again = put(b"two", PutMode::Create).expect_err("create over an existing object");
    assert!(
        matches!(again, object_store::Error::AlreadyExists { .. }),
        "{uri}: second create: {again}"
    );
    let swap = |e_tag: Option<String>, bytes: &'static [u8]| {
        put(
            bytes,
            PutMode::Update(UpdateVersion {
                e_tag,
                version: None,
            }),
        )
    };
    let second = swap(first.e_tag.clone(), b"three").expect("update with the current e-tag");
    let stale = swap(first.e_tag, b"four").expect_err("update with a stale e-tag");
    assert!(
        matches!(stale, object_store::Error::Precondition { .. }),
        "{uri}: stale update: {stale}"
    );
    let body = rt
        .block_on(async { root.store.get(&path).await?.bytes().await })
        .expect("read back");
    assert_eq!(
        &body[..],
        b"three",
        "{uri}: the refused writes changed nothing"
    );
    assert_ne!(second.e_tag, None, "{uri}: the store returns e-tags");
}

/// Save three steps, list, load, a lagging writer, retention, then resume from a new handle.
fn round_trip(uri: &str) {
    let store = CheckpointStore::open(uri, RetryPolicy::default())
        .expect("open")
        .with_writer(2, "emulator test");
    assert_eq!(store.latest().expect("latest"), None);
    for step in [1, 2, 3] {
        let info = store
            .save(
                step,
                objects(step, 300_000),
                serde_json::json!({ "step": step }),
            )
            .expect("save");
        assert!(
            info.latest_moved && info.uri == format!("{uri}/step-0000000{step}"),
            "{info:?}"
        );
    }
    let listed: Vec<_> = store
        .list()
        .expect("list")
        .into_iter()
        .map(|c| (c.step, c.committed, c.objects))
        .collect();
    assert_eq!(listed, vec![(1, true, 5), (2, true, 5), (3, true, 5)]);
    assert_eq!(store.load(2).expect("load 2").objects, objects(2, 300_000));
    // Same step, different content: refused, the committed step stays as it was.
    assert!(matches!(
        store.save(2, objects(9, 10), serde_json::json!({})),
        Err(Error::StepExists { step: 2, .. })
    ));
    // A writer that lags behind never moves `latest` back (the conditional put re-reads it).
    let lagging = store
        .save(0, objects(0, 10), serde_json::json!({}))
        .expect("save 0");
    assert!(!lagging.latest_moved);
    let report = store
        .apply_retention(Retention {
            keep_last: 1,
            keep_every: 2,
        })
        .expect("retention");
    assert_eq!(report.deleted, vec![1]);

    // Resume as a restarted job would: a fresh handle finds `latest` and loads it verified.
    let resumed = CheckpointStore::open(uri, RetryPolicy::default()).expect("reopen");
    assert_eq!(resumed.latest().expect("latest"), Some(3));
    let loaded = resumed.load(3).expect("load latest");
    assert_eq!(loaded.objects, objects(3, 300_000));
    assert_eq!(loaded.manifest.world_size, 2);
    assert_eq!(
        resumed
            .list()
            .expect("list")
            .into_iter()
            .map(|c| c.step)
            .collect::<Vec<_>>(),
        vec![0, 2, 3]
    );
}

#[test]
fn azurite_enforces_conditional_puts_and_checkpoints_round_trip() {
    let Some(azurite) = Azurite::start() else {
        return;
    };
    azurite.set_env();
    conditional_puts_are_enforced("az://wave-test/cond");
    round_trip("az://wave-test/runs/roundtrip");
}
