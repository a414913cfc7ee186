//! Test helpers: checkpoint objects with known content, the skip-or-fail rule, and a throw-away
//! SeaweedFS S3 server on loopback that can be killed and restarted on the same ports and data.
#![allow(dead_code)] // each test binary uses a different subset

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use wave_ckpt::{CheckpointStore, RetryPolicy};

/// Objects of a fake checkpoint whose content depends on `step` (`size` bytes of model).
pub fn objects(step: u64, size: usize) -> Vec<(String, Bytes)> {
    let model: Vec<u8> = (0..size)
        .map(|i| (i as u64).wrapping_mul(31).wrapping_add(step) as u8)
        .collect();
    vec![
        ("model.safetensors".into(), Bytes::from(model)),
        (
            "state.json".into(),
            Bytes::from(format!("{{\"step\":{step}}}")),
        ),
        (
            "config.toml".into(),
            Bytes::from_static(b"[model]\nd_model = 8\n"),
        ),
    ]
}

#[allow(unused_imports)] // not every test binary checks prerequisites
pub use wave_testkit::missing;

/// Recognisable fake credentials; SeaweedFS accepts any.
pub const FAKE_KEY_ID: &str = "AKIAWAVETESTKEYID0001";
/// The secret that must never show up in a log line or an error.
pub const FAKE_SECRET: &str = "wAvEsEcReT/DoNotLog+4f7c2a9e1b";

/// Serialises the environment changes of tests in one binary (object_store reads the `AWS_*`
/// variables when a store is opened, not afterwards).
static ENV: Mutex<()> = Mutex::new(());

/// Opens `s3://<bucket_and_prefix>` against `endpoint` with the fake credentials.
pub fn open_s3(
    endpoint: &str,
    bucket_and_prefix: &str,
    retry: RetryPolicy,
) -> wave_ckpt::Result<CheckpointStore> {
    let _guard = ENV.lock().unwrap_or_else(|e| e.into_inner());
    std::env::set_var("AWS_ENDPOINT_URL", endpoint);
    std::env::set_var("AWS_ALLOW_HTTP", "true");
    std::env::set_var("AWS_ACCESS_KEY_ID", FAKE_KEY_ID);
    std::env::set_var("AWS_SECRET_ACCESS_KEY", FAKE_SECRET);
    std::env::set_var("AWS_REGION", "us-east-1");
    CheckpointStore::open(&format!("s3://{bucket_and_prefix}"), retry)
}

#[allow(unused_imports)] // not every test binary starts a server
pub use wave_testkit::Weed;

/// Every log line of this test binary, at debug level for all crates (object_store, reqwest ...),
/// without colours. Call it at the start of each test that reads it.
pub fn captured_logs() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&buf);
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .with_writer(move || LogWriter(Arc::clone(&sink)))
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("one global subscriber");
        buf
    })
    .clone()
}

struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl Write for LogWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
