//! # wave-testkit
//!
//! Helpers that several crates' tests share (a dev-dependency only; nothing ships it):
//!
//! - [`missing`]: the project's rule for absent test prerequisites: under `CI=true` a failure,
//!   otherwise a `SKIP:` message and the test returns early.
//! - [`venv_bin`]: a program of the set-up's Python venv (`$WAVE_VENV`, else
//!   `$WAVE_DIST_HOME/venv`, as `launch/env.sh` defines them).
//! - [`Weed`]: a SeaweedFS `weed mini` S3 server on loopback (free ports, bucket `wave-test`,
//!   anonymous), which a test can kill and restart on the same ports and data to simulate an
//!   outage. Stopped with SIGTERM, then SIGKILL, on drop.
//! - [`FaultProxy`]: a TCP proxy on loopback that adds latency, resets connections, answers
//!   HTTP 5xx or accepts and never answers ([`Fault`]), to stand between a client and `Weed`.
//! - [`Captured`]: a child process whose stdout and stderr are drained while it runs, so a test
//!   can poll a chatty trainer without it blocking on a full pipe.
//! - [`NetLab`]: several "hosts" as Linux network namespaces on a bridge, each with its own
//!   address: run a command inside a host, `mpirun` one rank per host (an agent enters the
//!   namespace instead of ssh), cut and restore a host's link; everything is removed on drop.
//!   [`RankRecord`] reads the per-rank output files of `tests/record-rank.sh`.
//! - [`GcsEmulator`] and [`Azurite`]: Google Cloud Storage and Azure Blob Storage emulators on
//!   loopback, so `gs://` and `az://` are tested like `s3://` (reads only on GCS: no
//!   GCS emulator serves object_store's uploads; see [`GcsEmulator`]).
//!
//! ```no_run
//! let Some(weed) = wave_testkit::Weed::start() else { return };
//! weed.set_env(); // AWS_ENDPOINT_URL etc. for object_store's S3 client in this process
//! ```

mod captured;
mod netns;
mod proxy;

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub use captured::{Captured, SpawnCaptured};
pub use netns::{agent_script, record_rank_script, Host, NetLab, RankRecord};
pub use proxy::{Fault, FaultProxy};

/// `CI=true` turns a missing prerequisite into a failure instead of a skip.
pub fn missing(what: &str) {
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "required test input missing: {what}"
    );
    eprintln!("SKIP: {what} is missing");
}

/// The bucket every server starts with.
pub const BUCKET: &str = "wave-test";

/// `<venv>/bin/<name>` of the set-up's Python venv when it exists: the venv is `$WAVE_VENV`, else
/// `$WAVE_DIST_HOME/venv` (both set by `launch/env.sh`). `None` when neither is set or the
/// program is not there; the caller then skips through [`missing`].
pub fn venv_bin(name: &str) -> Option<PathBuf> {
    let venv = std::env::var_os("WAVE_VENV")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("WAVE_DIST_HOME").map(|h| PathBuf::from(h).join("venv")))?;
    Some(venv.join("bin").join(name)).filter(|p| p.is_file())
}

mod emulators;
pub use emulators::{Azurite, GcsEmulator};

/// A test tool: `$<env_var>`, then `name` on `PATH`, then each of `cached` under the set-up cache
/// `$WAVE_DIST_HOME` (set by `launch/env.sh`).
fn find_tool(env_var: &str, name: &str, cached: &[&str]) -> Option<PathBuf> {
    let explicit = std::env::var_os(env_var).map(PathBuf::from);
    let on_path = std::env::var_os("PATH").into_iter().flat_map(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(name))
            .collect::<Vec<_>>()
    });
    let in_cache: Vec<PathBuf> = std::env::var_os("WAVE_DIST_HOME")
        .map(PathBuf::from)
        .map(|h| cached.iter().map(|rel| h.join(rel)).collect())
        .unwrap_or_default();
    explicit
        .into_iter()
        .chain(on_path)
        .chain(in_cache)
        .find(|p| p.is_file())
}

/// A loopback port that was free a moment ago (bound, read, released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free loopback port")
        .port()
}

/// `weed`: `$WEED_BIN`, then `PATH`, then the set-up venv ([`venv_bin`]).
fn weed_binary() -> Option<PathBuf> {
    find_tool("WEED_BIN", "weed", &[]).or_else(|| venv_bin("weed"))
}

const PORT_FLAGS: [&str; 13] = [
    "s3.port",
    "s3.port.grpc",
    "master.port",
    "master.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "admin.port",
    "admin.port.grpc",
    "debug.port",
    "webdav.port",
    "metricsPort",
];

/// A SeaweedFS `weed mini` server on loopback.
pub struct Weed {
    bin: PathBuf,
    child: Option<Child>,
    ports: Vec<u16>,
    dir: tempfile::TempDir,
    /// `http://127.0.0.1:<port>`.
    pub endpoint: String,
}

impl Weed {
    /// Starts a server, or `None` (after [`missing`]) when `weed` is not installed.
    pub fn start() -> Option<Weed> {
        let Some(bin) = weed_binary() else {
            missing("SeaweedFS `weed` binary (set WEED_BIN, or run launch/setup.sh and source launch/env.sh)");
            return None;
        };
        let listeners: Vec<_> = PORT_FLAGS
            .iter()
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind"))
            .collect();
        let ports: Vec<u16> = listeners
            .iter()
            .map(|l| l.local_addr().expect("addr").port())
            .collect();
        drop(listeners);
        let endpoint = format!("http://127.0.0.1:{}", ports[0]);
        let mut weed = Weed {
            bin,
            child: None,
            ports,
            dir: tempfile::tempdir().expect("tempdir"),
            endpoint,
        };
        weed.restart();
        Some(weed)
    }

    /// (Re)starts the server on the same ports and data folder; waits until the bucket answers.
    pub fn restart(&mut self) {
        let mut cmd = Command::new(&self.bin);
        cmd.arg("mini")
            .arg(format!("-dir={}", self.dir.path().display()))
            .args([
                "-ip=127.0.0.1",
                "-ip.bind=127.0.0.1",
                &format!("-bucket={BUCKET}"),
            ])
            .args(["-s3.port.iceberg=0", "-s3.port.lance=0"]);
        for (flag, port) in PORT_FLAGS.iter().zip(&self.ports) {
            cmd.arg(format!("-{flag}={port}"));
        }
        // `weed mini` turns on authentication when it inherits AWS credentials (which tests set
        // for their own clients); the anonymous readiness probe would then get 403 forever.
        for var in [
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_SESSION_TOKEN",
            "S3_BUCKET",
        ] {
            cmd.env_remove(var);
        }
        let log = std::fs::File::create(self.dir.path().join("weed.log")).expect("weed log");
        self.child = Some(
            cmd.stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("spawn weed"),
        );
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if self.bucket_ready() {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let log = std::fs::read_to_string(self.dir.path().join("weed.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(20).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        panic!(
            "weed mini did not serve bucket {BUCKET} within 60 s; its log ends:\n{}",
            tail.join("\n")
        );
    }

    /// Kills the server at once (SIGKILL), as a crash or a network cut would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sets object_store's S3 variables (endpoint, plain HTTP, region, throw-away credentials)
    /// in this process. Tests in one binary share them: every S3 test uses the same settings.
    pub fn set_env(&self) {
        for (var, value) in self.s3_env("test", "test") {
            std::env::set_var(var, value);
        }
    }

    /// The same variables as pairs, with the given credentials, for a child process.
    pub fn s3_env(&self, key_id: &str, secret: &str) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
            ("AWS_ALLOW_HTTP", "true".into()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_ACCESS_KEY_ID", key_id.into()),
            ("AWS_SECRET_ACCESS_KEY", secret.into()),
        ]
    }

    /// GET the bucket listing with a raw HTTP/1.0 request (no HTTP client dependency).
    fn bucket_ready(&self) -> bool {
        let addr = self.endpoint.trim_start_matches("http://");
        let Ok(mut s) = std::net::TcpStream::connect(addr) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        if write!(s, "GET /{BUCKET}/ HTTP/1.0\r\nHost: {addr}\r\n\r\n").is_err() {
            return false;
        }
        let mut buf = [0u8; 16];
        s.read(&mut buf)
            .is_ok_and(|n| n >= 12 && &buf[9..12] == b"200")
    }
}

impl Drop for Weed {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
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
