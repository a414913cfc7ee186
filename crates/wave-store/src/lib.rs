//! Object-store locations shared by `wave-data` (data sets) and `wave-ckpt` (checkpoints): a
//! URI or path becomes an `Arc<dyn ObjectStore>` plus a prefix inside it ([`Root`]).
//!
//! | location | store | configured by |
//! |---|---|---|
//! | `runs/ckpt`, `/abs/dir`, `file:///abs/dir` | local disk | `create` makes a missing folder |
//! | `s3://bucket/prefix` (`s3a://`) | S3 or compatible | `AWS_ENDPOINT_URL`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_ALLOW_HTTP`, … |
//! | `gs://bucket/prefix` | Google Cloud Storage | `GOOGLE_SERVICE_ACCOUNT`, `GOOGLE_APPLICATION_CREDENTIALS`, … |
//! | `az://container/prefix` (`abfs[s]://`, `azure://`, `adl://`) | Azure Blob Storage | `AZURE_STORAGE_ACCOUNT_NAME`, `AZURE_STORAGE_ACCOUNT_KEY`, … |
//! | `http(s)://host/prefix` | read-only HTTP | — |
//!
//! Credentials are read from the environment by object_store's builders and stay inside them:
//! [`Root`]'s `Debug` shows only the URI, and errors name the object, never a credential.
//! Every request is bounded ([`StoreOptions`]: retries within a deadline, request and connect
//! timeouts), so an unreachable endpoint fails within seconds instead of hanging.
//!
//! The crate is synchronous and runtime-free: callers drive the store on their own Tokio runtime.
//!
//! ```
//! let dir = tempfile::tempdir()?;
//! let root = wave_store::Root::open(&dir.path().display().to_string(), false, &wave_store::StoreOptions::default())?;
//! assert_eq!(root.path("step-00000001/manifest.json").as_ref(), "step-00000001/manifest.json");
//! assert!(root.local_dir().is_some());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
use object_store::path::Path;
use object_store::{BackoffConfig, ClientConfigKey, ClientOptions, ObjectStore, RetryConfig};

/// Why a location could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The URI or path could not be understood.
    #[error("invalid location {uri:?}: {msg}")]
    Uri {
        /// The URI as given.
        uri: String,
        /// Why it was rejected.
        msg: String,
    },
    /// The object-store builder rejected the location or its environment configuration.
    #[error("object store error on {uri}: {source}")]
    Store {
        /// The URI as given.
        uri: String,
        /// Underlying error.
        #[source]
        source: object_store::Error,
    },
    /// A local folder could not be created.
    #[error("I/O error on {}: {source}", path.display())]
    Io {
        /// The local path.
        path: PathBuf,
        /// Underlying error.
        #[source]
        source: std::io::Error,
    },
}

/// How hard a store tries before reporting an error.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Per-request retries (exponential backoff, bounded count and total time).
    pub retry: RetryConfig,
    /// Limit for one whole request, body included (large uploads need more than small reads).
    pub timeout: Duration,
    /// Limit for establishing a connection.
    pub connect_timeout: Duration,
}

impl Default for StoreOptions {
    /// 3 retries within 20 s (100 ms doubling to 2 s), 30 s per request, 5 s to connect.
    fn default() -> Self {
        StoreOptions {
            retry: RetryConfig {
                backoff: BackoffConfig {
                    init_backoff: Duration::from_millis(100),
                    max_backoff: Duration::from_secs(2),
                    base: 2.0,
                },
                max_retries: 3,
                retry_timeout: Duration::from_secs(20),
            },
            timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
        }
    }
}

impl StoreOptions {
    fn client_settings(&self) -> [(ClientConfigKey, String); 2] {
        [
            (
                ClientConfigKey::Timeout,
                format!("{}ms", self.timeout.as_millis()),
            ),
            (
                ClientConfigKey::ConnectTimeout,
                format!("{}ms", self.connect_timeout.as_millis()),
            ),
        ]
    }
}

/// A root inside a store: the store, the prefix of the root in it, and the URI for messages.
#[derive(Clone)]
pub struct Root {
    /// The store.
    pub store: Arc<dyn ObjectStore>,
    /// Prefix of the root inside the store (empty for a local root).
    pub prefix: Path,
    /// The root as given, without a trailing slash; used in messages.
    pub uri: String,
    local: Option<PathBuf>,
}

impl std::fmt::Debug for Root {
    /// Only the URI: the store holds credentials.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Root")
            .field("uri", &self.uri)
            .finish_non_exhaustive()
    }
}

impl Root {
    /// Opens a URI or path. With `create`, a missing local folder is created (for outputs); without
    /// it, a missing local folder is an error.
    pub fn open(uri: &str, create: bool, opts: &StoreOptions) -> Result<Root, Error> {
        let bad = |msg: String| Error::Uri {
            uri: uri.to_string(),
            msg,
        };
        let trimmed = uri.trim_end_matches('/');
        if trimmed.is_empty() {
            return Err(bad("empty location".into()));
        }
        let scheme = trimmed
            .split_once("://")
            .map(|(s, _)| s.to_ascii_lowercase());
        let local = match scheme.as_deref() {
            None => Some(PathBuf::from(trimmed)),
            Some("file") => {
                let u = url::Url::parse(trimmed).map_err(|e| bad(e.to_string()))?;
                Some(
                    u.to_file_path()
                        .map_err(|()| bad("not a local file URL".into()))?,
                )
            }
            _ => None,
        };
        let store_err = |source| Error::Store {
            uri: uri.to_string(),
            source,
        };
        if let Some(dir) = local {
            return Self::open_local(uri, trimmed, dir, create);
        }
        let url = url::Url::parse(trimmed).map_err(|e| bad(e.to_string()))?;
        let client = opts.client_settings();
        let store: Arc<dyn ObjectStore> = match url.scheme() {
            "s3" | "s3a" => {
                let b = client.into_iter().fold(AmazonS3Builder::from_env(), |b, (k, v)| b.with_config(AmazonS3ConfigKey::Client(k), v));
                Arc::new(b.with_url(trimmed).with_retry(opts.retry.clone()).build().map_err(store_err)?)
            }
            "gs" => {
                let b = client.into_iter().fold(GoogleCloudStorageBuilder::from_env(), |b, (k, v)| b.with_config(GoogleConfigKey::Client(k), v));
                Arc::new(b.with_url(trimmed).with_retry(opts.retry.clone()).build().map_err(store_err)?)
            }
            "az" | "abfs" | "abfss" | "azure" | "adl" => {
                let b = client.into_iter().fold(MicrosoftAzureBuilder::from_env(), |b, (k, v)| b.with_config(AzureConfigKey::Client(k), v));
                Arc::new(b.with_url(trimmed).with_retry(opts.retry.clone()).build().map_err(store_err)?)
            }
            "http" | "https" => {
                let options = ClientOptions::new().with_allow_http(true).with_timeout(opts.timeout).with_connect_timeout(opts.connect_timeout);
                Arc::new(
                    object_store::http::HttpBuilder::new()
                        .with_url(format!("{}://{}", url.scheme(), url.authority()))
                        .with_retry(opts.retry.clone())
                        .with_client_options(options)
                        .build()
                        .map_err(store_err)?,
                )
            }
            other => return Err(bad(format!("unsupported scheme {other:?} (use a path, file://, s3://, gs://, az:// or http(s)://)"))),
        };
        let prefix = Path::from(url.path().trim_matches('/'));
        Ok(Root {
            store,
            prefix,
            uri: trimmed.to_string(),
            local: None,
        })
    }

    fn open_local(uri: &str, trimmed: &str, dir: PathBuf, create: bool) -> Result<Root, Error> {
        if create {
            std::fs::create_dir_all(&dir).map_err(|source| Error::Io {
                path: dir.clone(),
                source,
            })?;
        }
        if !dir.is_dir() {
            return Err(Error::Uri {
                uri: uri.to_string(),
                msg: format!("local directory {} does not exist", dir.display()),
            });
        }
        // Automatic cleanup removes folders that deleting their last object left empty.
        let store = object_store::local::LocalFileSystem::new_with_prefix(&dir)
            .map_err(|source| Error::Store {
                uri: uri.to_string(),
                source,
            })?
            .with_automatic_cleanup(true);
        Ok(Root {
            store: Arc::new(store),
            prefix: Path::default(),
            uri: trimmed.to_string(),
            local: Some(dir),
        })
    }

    /// The local folder of a local root, `None` for remote stores.
    pub fn local_dir(&self) -> Option<&FsPath> {
        self.local.as_deref()
    }

    /// Store path of `rel` (a `/`-separated path relative to the root).
    pub fn path(&self, rel: &str) -> Path {
        rel.split('/')
            .filter(|s| !s.is_empty())
            .fold(self.prefix.clone(), |p, part| p.join(part))
    }

    /// Display URI of `rel`.
    pub fn uri_of(&self, rel: &str) -> String {
        format!("{}/{}", self.uri, rel)
    }

    /// `rel` of a store path under this root (the inverse of [`Root::path`]), or `None` outside it.
    pub fn rel_of(&self, path: &Path) -> Option<String> {
        path.prefix_match(&self.prefix).map(|parts| {
            parts
                .map(|p| p.as_ref().to_string())
                .collect::<Vec<_>>()
                .join("/")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_join_relative_parts_under_the_prefix() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = Root::open(
            &format!("{}/", dir.path().display()),
            false,
            &StoreOptions::default(),
        )
        .expect("open");
        assert_eq!(root.path("/a//b/c.json").as_ref(), "a/b/c.json");
        assert_eq!(root.rel_of(&root.path("a/b")).as_deref(), Some("a/b"));
        assert_eq!(root.uri_of("x"), format!("{}/x", dir.path().display()));
    }

    #[test]
    fn missing_local_folder_is_an_error_unless_created() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("new/ckpt").display().to_string();
        assert!(matches!(
            Root::open(&missing, false, &StoreOptions::default()),
            Err(Error::Uri { .. })
        ));
        Root::open(&missing, true, &StoreOptions::default()).expect("created");
        assert!(Root::open("ftp://x/y", false, &StoreOptions::default()).is_err());
        assert!(Root::open("", false, &StoreOptions::default()).is_err());
    }

    #[test]
    fn s3_root_has_bucket_relative_prefix_and_debug_shows_only_the_uri() {
        let root =
            Root::open("s3://bucket/runs/a/", false, &StoreOptions::default()).expect("open s3");
        assert_eq!(root.prefix.as_ref(), "runs/a");
        assert_eq!(root.uri, "s3://bucket/runs/a");
        assert!(root.local_dir().is_none());
        assert_eq!(
            format!("{root:?}"),
            "Root { uri: \"s3://bucket/runs/a\", .. }"
        );
    }
}
