//! [`CheckpointStore`]: save, list, load, verify and prune checkpoints under one root.
//!
//! Write order of a save (each step only after the previous one succeeded):
//! 1. leftovers of an earlier, unfinished save of the same step are removed;
//! 2. the objects are uploaded (up to 4 at a time);
//! 3. `manifest.json` (sizes and sha256 of every object, caller metadata);
//! 4. `COMMITTED` (the manifest's sha256), created with `PutMode::Create`: from here on the step
//!    exists for readers;
//! 5. `latest` is moved with a conditional put: `PutMode::Update` with the e-tag/version just read
//!    (S3, GCS, Azure), `PutMode::Create` when there is none yet. The local filesystem cannot do
//!    `Update`; there `latest` is overwritten atomically instead (object_store writes a temporary
//!    file and renames it), which is safe with the single writer a training job has;
//! 6. uncommitted folders of other steps (leftovers of crashed saves) are removed.
//!
//! A crash between any two steps leaves at worst an uncommitted folder, which readers ignore, or a
//! committed step that `latest` does not point at yet; `latest` itself always names a committed,
//! complete step. `latest` never moves backwards.
//!
//! **Local disk.** A crash of the machine (not only of the process) must not leave a commit marker
//! whose objects are still in the page cache. On a local root every write is made durable before
//! the next one starts: each object, the manifest, the marker and `latest` are written to a
//! temporary file, fsynced, renamed (or hard-linked) into place, and the folder holding the new
//! name is fsynced; a new step folder is fsynced together with the root that holds it. So the
//! objects, the manifest and the step folder are on disk before `COMMITTED` is, and `COMMITTED`
//! is before `latest` moves; the root is fsynced after `latest` moves. (object_store's
//! `LocalFileSystem::with_fsync` performs exactly these calls; the crash-safety tests check their
//! order with `strace`.)
//!
//! **A damaged `latest`.** Should `latest` be unreadable, or name a step whose commit marker is
//! missing or different (a file system restored from a backup, a hand edit),
//! [`CheckpointStore::latest`] warns and falls back to the newest committed step whose manifest
//! matches its marker, and the next save replaces the pointer. Failing requests are errors, never
//! a fallback: an unreachable store must not look like an empty one.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStoreExt, PutMode, PutPayload, UpdateVersion};
use tracing::{debug, info, warn};
use wave_store::{Root, StoreOptions};

use crate::error::{Error, Result};
use crate::layout::{
    check_names, parse_step_dir, sha256_hex, step_dir, Manifest, ObjectEntry, Pointer, COMMITTED,
    FORMAT_VERSION, LATEST, MANIFEST,
};
use crate::retention::{retention, Retention};

/// Objects uploaded or downloaded at the same time within one checkpoint.
const CONCURRENCY: usize = 4;
/// Conditional puts of `latest` tried before giving up to concurrent writers.
const POINTER_ATTEMPTS: u32 = 5;

/// How hard saves try: whole-save attempts with exponential backoff on top of the per-request
/// retries and timeouts of the store.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    /// Attempts per save (at least 1); only transient failures ([`Error::is_transient`]) are retried.
    pub attempts: u32,
    /// Wait before the second attempt; doubles after each failure.
    pub initial_backoff: Duration,
    /// Upper bound of the wait between attempts.
    pub max_backoff: Duration,
    /// Per-request retries and timeouts.
    pub store: StoreOptions,
}

impl Default for RetryPolicy {
    /// 5 attempts with waits of 1, 2, 4 and 8 s between them (capped at 30 s when raised), each
    /// attempt retrying its requests for up to 20 s: outages of about half a minute are bridged.
    /// Per request 5 s to connect and 300 s in all, enough to upload a few GB on a slow link.
    fn default() -> Self {
        RetryPolicy {
            attempts: 5,
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(30),
            store: StoreOptions {
                timeout: Duration::from_secs(300),
                ..StoreOptions::default()
            },
        }
    }
}

/// What a successful save produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommitInfo {
    /// The step saved.
    pub step: u64,
    /// URI of the step folder.
    pub uri: String,
    /// sha256 of its manifest (also the content of its commit marker).
    pub manifest_sha256: String,
    /// Total size of its objects in bytes.
    pub bytes: u64,
    /// Whether `latest` now points at it (false when `latest` already named a later step).
    pub latest_moved: bool,
    /// Attempts it took (1 when nothing failed).
    pub attempts: u32,
    /// Wall-clock time of the whole save, retries included.
    pub elapsed: Duration,
}

/// One step folder as found by [`CheckpointStore::list`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckpointInfo {
    /// The step.
    pub step: u64,
    /// URI of the step folder.
    pub uri: String,
    /// Whether its commit marker exists (only committed steps are ever loaded).
    pub committed: bool,
    /// Objects in the folder, manifest and marker included.
    pub objects: usize,
    /// Their total size in bytes.
    pub bytes: u64,
}

/// A checkpoint read back, every object verified against the manifest.
#[derive(Clone, Debug)]
pub struct Loaded {
    /// Its manifest (step, world size, caller metadata ...).
    pub manifest: Manifest,
    /// The objects, in manifest order.
    pub objects: Vec<(String, Bytes)>,
}

impl Loaded {
    /// The object called `name`, if the checkpoint has one.
    pub fn object(&self, name: &str) -> Option<&Bytes> {
        self.objects.iter().find(|(n, _)| n == name).map(|(_, b)| b)
    }
}

/// Metadata key under which a caller records the run a checkpoint belongs to; read back by
/// [`RootSummary::run`].
pub const RUN_KEY: &str = "run";

/// What a checkpoint root holds ([`CheckpointStore::describe`]). Its `Display` is one line for
/// messages: the root, its committed steps, the step to resume from and who wrote it.
#[derive(Clone, Debug, PartialEq)]
pub struct RootSummary {
    /// The root URI.
    pub uri: String,
    /// Committed steps, ascending.
    pub committed: Vec<u64>,
    /// Step folders without a commit marker (unfinished saves), ascending.
    pub uncommitted: Vec<u64>,
    /// The step a resume would start from (what [`CheckpointStore::latest`] returns).
    pub latest: Option<u64>,
    /// The manifest of `latest`: writer, world size, time and the caller's metadata.
    pub latest_manifest: Option<Manifest>,
    /// When `latest` had to fall back: what was wrong with the pointer and which step was chosen.
    pub pointer_problem: Option<String>,
}

impl RootSummary {
    /// Whether the root holds no committed checkpoint (unfinished leftovers do not count).
    pub fn is_empty(&self) -> bool {
        self.committed.is_empty()
    }

    /// The run of the `latest` checkpoint: its metadata's [`RUN_KEY`] string, if recorded.
    pub fn run(&self) -> Option<&str> {
        self.latest_manifest
            .as_ref()?
            .metadata
            .get(RUN_KEY)?
            .as_str()
    }
}

impl std::fmt::Display for RootSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (Some(latest), Some(m)) = (self.latest, &self.latest_manifest) else {
            return write!(f, "{} holds no committed checkpoint", self.uri);
        };
        write!(
            f,
            "{} holds {} committed checkpoint(s), latest step {latest}",
            self.uri,
            self.committed.len()
        )?;
        if let Some(run) = self.run() {
            write!(f, " of run {run:?}")?;
        }
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let age_s = now_ms.saturating_sub(m.created_unix_ms) as f64 / 1000.0;
        let age = match age_s {
            s if s < 120.0 => format!("{s:.0} s"),
            s if s < 7200.0 => format!("{:.0} min", s / 60.0),
            s if s < 172_800.0 => format!("{:.1} h", s / 3600.0),
            s => format!("{:.1} days", s / 86_400.0),
        };
        write!(
            f,
            " (written by {} at world size {}, {age} ago)",
            m.created_by, m.world_size
        )
    }
}

/// What [`CheckpointStore::apply_retention`] removed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RetentionReport {
    /// Committed steps deleted by the policy.
    pub deleted: Vec<u64>,
    /// Uncommitted leftovers removed.
    pub uncommitted_removed: Vec<u64>,
}

/// Per-step summary of a listing.
#[derive(Default)]
struct StepListing {
    committed: bool,
    objects: usize,
    bytes: u64,
}

/// Checkpoints under one root (a local folder or an object-store prefix).
///
/// The API is blocking and runs its requests on an internal two-thread Tokio runtime; do not call
/// it from inside an async context. Clones share the runtime. One job should have one writer.
#[derive(Clone)]
pub struct CheckpointStore {
    root: Root,
    rt: Arc<tokio::runtime::Runtime>,
    retry: RetryPolicy,
    world_size: usize,
    created_by: String,
}

impl std::fmt::Debug for CheckpointStore {
    /// Only the URI: the store holds credentials.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckpointStore")
            .field("uri", &self.root.uri)
            .finish_non_exhaustive()
    }
}

impl CheckpointStore {
    /// Opens the checkpoint root `uri` (a path, `file://`, `s3://`, `gs://` or `az://`; see
    /// `wave-store` for the environment variables). A missing local folder is created.
    pub fn open(uri: &str, retry: RetryPolicy) -> Result<CheckpointStore> {
        if retry.attempts == 0 {
            return Err(Error::Config {
                field: "retry.attempts",
                msg: "must be at least 1".into(),
            });
        }
        let mut root = Root::open(uri, true, &retry.store)?;
        if let Some(dir) = root.local_dir() {
            root.store = durable_local_store(uri, dir)?;
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("wave-ckpt-io")
            .enable_all()
            .build()
            .map_err(|source| Error::Runtime {
                what: "the checkpoint I/O runtime",
                source,
            })?;
        let created_by = format!("wave-ckpt {}", env!("CARGO_PKG_VERSION"));
        Ok(CheckpointStore {
            root,
            rt: Arc::new(rt),
            retry,
            world_size: 1,
            created_by,
        })
    }

    /// Sets what manifests record about the writer: its job's world size and a program name.
    pub fn with_writer(
        mut self,
        world_size: usize,
        created_by: impl Into<String>,
    ) -> CheckpointStore {
        self.world_size = world_size;
        self.created_by = created_by.into();
        self
    }

    /// The root URI.
    pub fn uri(&self) -> &str {
        &self.root.uri
    }

    /// Saves `objects` as the checkpoint of `step` and moves `latest` to it, retrying transient
    /// failures as the [`RetryPolicy`] says. Saving a step that is already committed with the same
    /// objects only re-publishes it; with different objects it is [`Error::StepExists`].
    pub fn save(
        &self,
        step: u64,
        objects: Vec<(String, Bytes)>,
        metadata: serde_json::Value,
    ) -> Result<CommitInfo> {
        check_names(step, objects.iter().map(|(n, _)| n.as_str()))?;
        let entries: Vec<ObjectEntry> = objects
            .iter()
            .map(|(name, b)| ObjectEntry {
                name: name.clone(),
                size: b.len() as u64,
                sha256: sha256_hex(b),
            })
            .collect();
        let start = Instant::now();
        let mut backoff = self.retry.initial_backoff;
        let mut attempt = 1;
        loop {
            match self
                .rt
                .block_on(self.save_once(step, &objects, &entries, &metadata))
            {
                Ok((manifest_sha256, latest_moved)) => {
                    let info = CommitInfo {
                        step,
                        uri: self.root.uri_of(&step_dir(step)),
                        manifest_sha256,
                        bytes: entries.iter().map(|e| e.size).sum(),
                        latest_moved,
                        attempts: attempt,
                        elapsed: start.elapsed(),
                    };
                    info!(
                        "checkpoint step {step} committed at {} ({} bytes, {:.1} s)",
                        info.uri,
                        info.bytes,
                        info.elapsed.as_secs_f64()
                    );
                    return Ok(info);
                }
                Err(e) if e.is_transient() && attempt < self.retry.attempts => {
                    warn!("checkpoint step {step}: attempt {attempt} failed, retrying in {backoff:?}: {e}");
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(self.retry.max_backoff);
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The step to resume from: the one `latest` points at, `None` when nothing is committed.
    ///
    /// When `latest` is missing while committed steps exist, unreadable, or names a step whose
    /// commit marker is missing or different, this logs a warning and returns the newest
    /// committed step instead (see the module docs). Failed requests are errors.
    pub fn latest(&self) -> Result<Option<u64>> {
        self.rt.block_on(async {
            let (step, problem) = self.resolve_latest(None).await?;
            if let Some(problem) = problem {
                warn!("{problem}");
            }
            Ok(step)
        })
    }

    /// What the root holds, cheaply: one listing, the `latest` pointer and the manifest of the
    /// step it resolves to (as [`CheckpointStore::latest`] does, but reporting a damaged pointer in
    /// [`RootSummary::pointer_problem`] instead of logging it). For a trainer that must not start
    /// a fresh run over another run's checkpoints.
    pub fn describe(&self) -> Result<RootSummary> {
        self.rt.block_on(async {
            let steps = self.list_steps().await?;
            let (latest, pointer_problem) = self.resolve_latest(Some(&steps)).await?;
            let latest_manifest = match latest {
                Some(step) => {
                    let rel = format!("{}/{MANIFEST}", step_dir(step));
                    let bytes = self.get(&rel).await?;
                    Some(Manifest::parse(&bytes, &self.root.uri_of(&rel), step)?)
                }
                None => None,
            };
            let (committed, uncommitted): (Vec<_>, Vec<_>) =
                steps.iter().partition(|(_, l)| l.committed);
            Ok(RootSummary {
                uri: self.root.uri.clone(),
                committed: committed.into_iter().map(|(s, _)| *s).collect(),
                uncommitted: uncommitted.into_iter().map(|(s, _)| *s).collect(),
                latest,
                latest_manifest,
                pointer_problem,
            })
        })
    }

    /// The step to resume from and, when `latest` could not be trusted, a sentence saying what was
    /// wrong and what was chosen instead. `steps`: a listing already made, if any.
    async fn resolve_latest(
        &self,
        steps: Option<&BTreeMap<u64, StepListing>>,
    ) -> Result<(Option<u64>, Option<String>)> {
        let pointer = self.checked_pointer().await?;
        if let Ok(Some(p)) = &pointer {
            return Ok((Some(p.step), None));
        }
        let fallback = match steps {
            Some(steps) => self.newest_committed(steps).await?,
            None => self.newest_committed(&self.list_steps().await?).await?,
        };
        let uri = self.root.uri_of(LATEST);
        let problem = match (&pointer, fallback) {
            (Err(problem), Some(step)) => Some(format!(
                "{uri}: {problem}; falling back to the newest committed step {step}"
            )),
            (Err(problem), None) => Some(format!(
                "{uri}: {problem}, and no step is committed: nothing to resume from"
            )),
            (Ok(_), Some(step)) => Some(format!(
                "{uri} is missing although step {step} is committed (a save was interrupted \
                 before moving it); using step {step}"
            )),
            (Ok(_), None) => None,
        };
        Ok((fallback, problem))
    }

    /// Every step folder, committed or not, ascending.
    pub fn list(&self) -> Result<Vec<CheckpointInfo>> {
        let steps = self.rt.block_on(self.list_steps())?;
        Ok(steps
            .into_iter()
            .map(|(step, l)| CheckpointInfo {
                step,
                uri: self.root.uri_of(&step_dir(step)),
                committed: l.committed,
                objects: l.objects,
                bytes: l.bytes,
            })
            .collect())
    }

    /// Reads the committed checkpoint of `step`, verifying the manifest against the commit marker
    /// and every object's size and sha256 against the manifest; an error names the object.
    pub fn load(&self, step: u64) -> Result<Loaded> {
        self.rt.block_on(self.load_async(step))
    }

    /// Checks the committed checkpoint of `step` as [`CheckpointStore::load`] does and returns its
    /// manifest.
    pub fn verify(&self, step: u64) -> Result<Manifest> {
        Ok(self.load(step)?.manifest)
    }

    /// Deletes the committed steps that [`retention`] selects (never the one `latest` names) and
    /// every uncommitted folder. Must not run while a save into the same root is in progress (the
    /// background [`crate::Saver`] applies its retention itself, between saves).
    pub fn apply_retention(&self, policy: Retention) -> Result<RetentionReport> {
        self.rt.block_on(async {
            let latest = self.pointer().await?.map(|p| p.step);
            let steps = self.list_steps().await?;
            let committed: Vec<u64> = steps.iter().filter(|(_, l)| l.committed).map(|(s, _)| *s).collect();
            let deleted = retention(&committed, policy.keep_last, policy.keep_every, latest);
            for &step in &deleted {
                self.delete_step(step).await?;
            }
            let uncommitted_removed = self.remove_uncommitted(&steps, None).await?;
            if !deleted.is_empty() || !uncommitted_removed.is_empty() {
                info!("checkpoint retention at {}: deleted steps {deleted:?}, removed unfinished {uncommitted_removed:?}", self.root.uri);
            }
            Ok(RetentionReport { deleted, uncommitted_removed })
        })
    }

    /// Deletes every checkpoint under the root, `latest` first (so no reader follows it into a
    /// half-deleted step). For a fresh run told to overwrite what a previous run left.
    pub fn clear(&self) -> Result<Vec<u64>> {
        self.rt.block_on(async {
            self.delete(LATEST.to_string()).await?;
            let steps = self.list_steps().await?;
            let cleared: Vec<u64> = steps.keys().copied().collect();
            for &step in &cleared {
                self.delete_step(step).await?;
            }
            info!(
                "checkpoint root {} cleared: steps {cleared:?}",
                self.root.uri
            );
            Ok(cleared)
        })
    }

    // ---- one save attempt -------------------------------------------------------------------

    /// Returns the manifest sha256 and whether `latest` moved.
    async fn save_once(
        &self,
        step: u64,
        objects: &[(String, Bytes)],
        entries: &[ObjectEntry],
        metadata: &serde_json::Value,
    ) -> Result<(String, bool)> {
        let dir = step_dir(step);
        if self.marker(step).await?.is_some() {
            // Committed by an earlier attempt whose reply was lost, or by an earlier run.
            let rel = format!("{dir}/{MANIFEST}");
            let bytes = self.get(&rel).await?;
            if Manifest::parse(&bytes, &self.root.uri_of(&rel), step)?.objects != entries {
                return Err(Error::StepExists {
                    uri: self.root.uri_of(&dir),
                    step,
                });
            }
            let sha = sha256_hex(&bytes);
            let moved = self.publish(step, &sha).await?;
            return Ok((sha, moved));
        }
        self.delete_step(step).await?;
        futures::stream::iter(objects)
            .map(|(name, bytes)| {
                self.put(
                    format!("{dir}/{name}"),
                    PutPayload::from(bytes.clone()),
                    PutMode::Overwrite,
                )
            })
            .buffer_unordered(CONCURRENCY)
            .try_collect::<Vec<_>>()
            .await?;
        let created_unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let manifest = Manifest {
            format_version: FORMAT_VERSION,
            step,
            world_size: self.world_size,
            created_by: self.created_by.clone(),
            created_unix_ms,
            objects: entries.to_vec(),
            metadata: metadata.clone(),
        };
        let rel = format!("{dir}/{MANIFEST}");
        let bytes = serde_json::to_vec_pretty(&manifest)
            .map_err(|e| Error::format(self.root.uri_of(&rel), e.to_string()))?;
        let sha = sha256_hex(&bytes);
        self.put(rel, bytes.into(), PutMode::Overwrite).await?;
        let marker = format!("{dir}/{COMMITTED}");
        match self
            .put(marker.clone(), sha.clone().into(), PutMode::Create)
            .await
        {
            Ok(_) => {}
            Err(Error::Store {
                source: object_store::Error::AlreadyExists { .. },
                ..
            }) => {
                return Err(Error::StepExists {
                    uri: self.root.uri_of(&dir),
                    step,
                });
            }
            Err(e) => return Err(e),
        }
        let moved = self.publish(step, &sha).await?;
        // Leftovers of crashed saves; failing to remove them does not undo this commit.
        match self.list_steps().await {
            Ok(steps) => {
                if let Err(e) = self.remove_uncommitted(&steps, Some(step)).await {
                    warn!(
                        "could not remove unfinished checkpoints under {}: {e}",
                        self.root.uri
                    );
                }
            }
            Err(e) => warn!(
                "could not list {} for unfinished checkpoints: {e}",
                self.root.uri
            ),
        }
        Ok((sha, moved))
    }

    /// Moves `latest` to `step` unless it already names a later step; returns whether it now
    /// names `step`.
    async fn publish(&self, step: u64, manifest_sha256: &str) -> Result<bool> {
        let uri = self.root.uri_of(LATEST);
        let new = Pointer {
            step,
            manifest_sha256: manifest_sha256.to_string(),
        };
        let payload = serde_json::to_vec(&new).map_err(|e| Error::format(&uri, e.to_string()))?;
        for _ in 0..POINTER_ATTEMPTS {
            let mode = match self.get_opt(LATEST).await? {
                None => PutMode::Create,
                Some((bytes, meta)) => {
                    match Pointer::parse(&bytes, &uri) {
                        Ok(old) if old == new => return Ok(true),
                        Ok(old) if old.step > step => {
                            if self.names_committed(&old).await? {
                                warn!(
                                    "not moving {uri} back from step {} to step {step}",
                                    old.step
                                );
                                return Ok(false);
                            }
                            warn!("replacing {uri}: it names step {}, which is not committed with that manifest", old.step);
                        }
                        Ok(_) => {}
                        Err(e) => warn!("replacing an unreadable pointer: {e}"),
                    }
                    PutMode::Update(UpdateVersion {
                        e_tag: meta.e_tag,
                        version: meta.version,
                    })
                }
            };
            let conditional = matches!(mode, PutMode::Update(_));
            match self.put(LATEST.into(), payload.clone().into(), mode).await {
                Ok(()) => return Ok(true),
                Err(Error::Store {
                    source:
                        object_store::Error::Precondition { .. }
                        | object_store::Error::AlreadyExists { .. },
                    ..
                }) => {
                    debug!("{uri} changed while moving it to step {step}; reading it again");
                }
                Err(Error::Store {
                    source: object_store::Error::NotImplemented { .. },
                    ..
                }) if conditional => {
                    // Local filesystem: no If-Match; an atomic overwrite (temporary file + rename).
                    self.put(LATEST.into(), payload.clone().into(), PutMode::Overwrite)
                        .await?;
                    return Ok(true);
                }
                Err(e) => return Err(e),
            }
        }
        Err(Error::LatestContended {
            uri,
            step,
            attempts: POINTER_ATTEMPTS,
        })
    }

    // ---- reading ----------------------------------------------------------------------------

    async fn load_async(&self, step: u64) -> Result<Loaded> {
        let dir = step_dir(step);
        let Some(marker) = self.marker(step).await? else {
            return Err(Error::NotCommitted {
                uri: self.root.uri_of(&dir),
                step,
            });
        };
        let rel = format!("{dir}/{MANIFEST}");
        let bytes = self.get(&rel).await?;
        let actual = sha256_hex(&bytes);
        if actual != marker {
            return Err(Error::Corrupt {
                uri: self.root.uri_of(&rel),
                step,
                detail: format!("sha256 {actual}, commit marker says {marker}"),
            });
        }
        let manifest = Manifest::parse(&bytes, &self.root.uri_of(&rel), step)?;
        let objects = futures::stream::iter(&manifest.objects)
            .map(|entry| self.get_verified(step, &dir, entry))
            .buffered(CONCURRENCY)
            .try_collect()
            .await?;
        Ok(Loaded { manifest, objects })
    }

    async fn get_verified(
        &self,
        step: u64,
        dir: &str,
        entry: &ObjectEntry,
    ) -> Result<(String, Bytes)> {
        let rel = format!("{dir}/{}", entry.name);
        let bytes = self.get(&rel).await?;
        let corrupt = |detail: String| Error::Corrupt {
            uri: self.root.uri_of(&rel),
            step,
            detail,
        };
        if bytes.len() as u64 != entry.size {
            return Err(corrupt(format!(
                "{} bytes, manifest says {}",
                bytes.len(),
                entry.size
            )));
        }
        let hashed = bytes.clone();
        let actual = tokio::task::spawn_blocking(move || sha256_hex(&hashed))
            .await
            .map_err(|e| corrupt(format!("hashing failed: {e}")))?;
        if actual != entry.sha256 {
            return Err(corrupt(format!(
                "sha256 {actual}, manifest says {}",
                entry.sha256
            )));
        }
        debug!("verified {} ({} bytes)", self.root.uri_of(&rel), entry.size);
        Ok((entry.name.clone(), bytes))
    }

    /// Content of the commit marker of `step` (the manifest's sha256), `None` when uncommitted.
    async fn marker(&self, step: u64) -> Result<Option<String>> {
        let rel = format!("{}/{COMMITTED}", step_dir(step));
        Ok(self
            .get_opt(&rel)
            .await?
            .map(|(b, _)| String::from_utf8_lossy(&b).trim().to_string()))
    }

    async fn pointer(&self) -> Result<Option<Pointer>> {
        match self.get_opt(LATEST).await? {
            None => Ok(None),
            Some((bytes, _)) => Pointer::parse(&bytes, &self.root.uri_of(LATEST)).map(Some),
        }
    }

    /// `latest` when it is absent or names a committed step (`Ok`), or what is wrong with it
    /// (the inner `Err`). The outer error is a failed request.
    async fn checked_pointer(&self) -> Result<Result<Option<Pointer>, String>> {
        let pointer = match self.pointer().await {
            Ok(p) => p,
            Err(Error::Format { msg, .. }) => return Ok(Err(msg)),
            Err(e) => return Err(e),
        };
        let Some(p) = pointer else {
            return Ok(Ok(None));
        };
        let marker = self.marker(p.step).await?;
        if marker.as_deref() == Some(p.manifest_sha256.as_str()) {
            return Ok(Ok(Some(p)));
        }
        Ok(Err(format!(
            "points at step {} whose commit marker is {}",
            p.step,
            marker.map_or("missing".into(), |m| format!(
                "{m:?} (the pointer says {:?})",
                p.manifest_sha256
            ))
        )))
    }

    /// Whether `p` names a step committed with the manifest it records.
    async fn names_committed(&self, p: &Pointer) -> Result<bool> {
        Ok(self.marker(p.step).await?.as_deref() == Some(p.manifest_sha256.as_str()))
    }

    /// The newest step of `steps` whose commit marker matches its manifest's sha256.
    async fn newest_committed(&self, steps: &BTreeMap<u64, StepListing>) -> Result<Option<u64>> {
        for (&step, _) in steps.iter().rev().filter(|(_, l)| l.committed) {
            let Some(marker) = self.marker(step).await? else {
                continue;
            };
            let rel = format!("{}/{MANIFEST}", step_dir(step));
            match self.get_opt(&rel).await? {
                Some((bytes, _)) if sha256_hex(&bytes) == marker => return Ok(Some(step)),
                _ => warn!(
                    "{}: its manifest does not match its commit marker; skipping it",
                    self.root.uri_of(&step_dir(step))
                ),
            }
        }
        Ok(None)
    }

    /// Step folders with their objects. Local roots also report folders holding only temporary
    /// files of an interrupted write (invisible to object listings), so they can be removed.
    async fn list_steps(&self) -> Result<BTreeMap<u64, StepListing>> {
        let prefix = (!self.root.prefix.as_ref().is_empty()).then_some(&self.root.prefix);
        let metas: Vec<ObjectMeta> = self
            .root
            .store
            .list(prefix)
            .try_collect()
            .await
            .map_err(|e| Error::store(&self.root.uri, "list", e))?;
        let mut steps: BTreeMap<u64, StepListing> = BTreeMap::new();
        for meta in metas {
            let Some(rel) = self.root.rel_of(&meta.location) else {
                continue;
            };
            let Some((dir, name)) = rel.split_once('/') else {
                continue;
            };
            let Some(step) = parse_step_dir(dir) else {
                continue;
            };
            let l = steps.entry(step).or_default();
            l.objects += 1;
            l.bytes += meta.size;
            l.committed |= name == COMMITTED;
        }
        if let Some(dir) = self.root.local_dir() {
            let entries = std::fs::read_dir(dir).map_err(|e| Error::Io {
                path: dir.to_path_buf(),
                source: e,
            })?;
            for step in entries
                .flatten()
                .filter_map(|e| e.file_name().to_str().and_then(parse_step_dir))
            {
                steps.entry(step).or_default();
            }
        }
        Ok(steps)
    }

    /// Removes uncommitted step folders of `steps` other than `except`; returns their steps.
    async fn remove_uncommitted(
        &self,
        steps: &BTreeMap<u64, StepListing>,
        except: Option<u64>,
    ) -> Result<Vec<u64>> {
        let mut removed = Vec::new();
        for (&step, l) in steps {
            if !l.committed && Some(step) != except {
                self.delete_step(step).await?;
                removed.push(step);
            }
        }
        Ok(removed)
    }

    /// Deletes a step folder, commit marker first so that it is never seen committed but partial.
    async fn delete_step(&self, step: u64) -> Result<()> {
        let dir = step_dir(step);
        self.delete(format!("{dir}/{COMMITTED}")).await?;
        if let Some(local) = self.root.local_dir() {
            let path = local.join(&dir);
            return match std::fs::remove_dir_all(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    Err(Error::Io { path, source: e })
                }
                _ => Ok(()),
            };
        }
        let prefix = self.root.path(&dir);
        let metas: Vec<ObjectMeta> = self
            .root
            .store
            .list(Some(&prefix))
            .try_collect()
            .await
            .map_err(|e| Error::store(self.root.uri_of(&dir), "list", e))?;
        futures::stream::iter(metas)
            .map(|m| async move {
                self.delete(self.root.rel_of(&m.location).unwrap_or_default())
                    .await
            })
            .buffer_unordered(CONCURRENCY)
            .try_collect::<Vec<_>>()
            .await?;
        debug!("deleted {}", self.root.uri_of(&dir));
        Ok(())
    }

    // ---- single requests, errors naming the object ------------------------------------------

    async fn put(&self, rel: String, payload: PutPayload, mode: PutMode) -> Result<()> {
        let size = payload.content_length();
        self.root
            .store
            .put_opts(&self.root.path(&rel), payload, mode.into())
            .await
            .map_err(|e| Error::store(self.root.uri_of(&rel), "put", e))?;
        debug!("put {} ({size} bytes)", self.root.uri_of(&rel));
        Ok(())
    }

    async fn get(&self, rel: &str) -> Result<Bytes> {
        let fail = |e| Error::store(self.root.uri_of(rel), "get", e);
        self.root
            .store
            .get(&self.root.path(rel))
            .await
            .map_err(fail)?
            .bytes()
            .await
            .map_err(fail)
    }

    /// The object and its metadata, `None` when it does not exist.
    async fn get_opt(&self, rel: &str) -> Result<Option<(Bytes, ObjectMeta)>> {
        let fail = |e| Error::store(self.root.uri_of(rel), "get", e);
        match self.root.store.get(&self.root.path(rel)).await {
            Ok(r) => {
                let meta = r.meta.clone();
                Ok(Some((r.bytes().await.map_err(fail)?, meta)))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(fail(e)),
        }
    }

    /// Deletes an object; a missing one is not an error.
    async fn delete(&self, rel: String) -> Result<()> {
        let path: Path = self.root.path(&rel);
        match self.root.store.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(Error::store(self.root.uri_of(&rel), "delete", e)),
        }
    }
}

/// object_store's local file system with fsync after every write (see the module docs), over the
/// folder `wave-store` opened. The folder itself and its parent are fsynced once here, so a root
/// just created survives a crash as well.
fn durable_local_store(
    uri: &str,
    dir: &std::path::Path,
) -> Result<Arc<dyn object_store::ObjectStore>> {
    let store = object_store::local::LocalFileSystem::new_with_prefix(dir)
        .map_err(|e| Error::store(uri, "open", e))?
        .with_automatic_cleanup(true)
        .with_fsync(true);
    let parent = dir.parent().filter(|p| !p.as_os_str().is_empty());
    for folder in std::iter::once(dir).chain(parent) {
        std::fs::File::open(folder)
            .and_then(|f| f.sync_all())
            .map_err(|source| Error::Io {
                path: folder.to_path_buf(),
                source,
            })?;
    }
    Ok(Arc::new(store))
}
