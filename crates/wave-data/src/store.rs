//! Object-store access: URI parsing, a shared blocking runtime, and the Parquet
//! [`AsyncFileReader`] over `Arc<dyn ObjectStore>`.
//!
//! Locations are parsed by `wave-store` (shared with `wave-ckpt`): a plain path or `file://` (local
//! disk), `s3://bucket/prefix` (endpoint, region and credentials from the standard `AWS_*`
//! variables such as `AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID`, `AWS_ALLOW_HTTP`), `gs://bucket/prefix`
//! (`GOOGLE_*`), `az://container/prefix` (`AZURE_*`), and read-only `http(s)://`. Requests use
//! bounded retries ([`retry_config`]) so an unreachable endpoint fails within seconds instead of
//! hanging.

use std::ops::Range;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::FutureExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, RetryConfig, WriteMultipart};
use parquet::arrow::arrow_reader::ArrowReaderOptions;
use parquet::arrow::async_reader::AsyncFileReader;
use parquet::errors::ParquetError;
use parquet::file::metadata::{PageIndexPolicy, ParquetMetaData, ParquetMetaDataReader};

use crate::error::{Error, Result};

/// The runtime behind the crate's blocking API (two I/O worker threads, created on first use).
/// Do not call the blocking API from inside another Tokio runtime's async context.
pub(crate) fn runtime() -> Result<&'static tokio::runtime::Runtime> {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    if let Some(rt) = RT.get() {
        return Ok(rt);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("wave-data-io")
        .enable_all()
        .build()
        .map_err(|e| Error::io("tokio runtime", e))?;
    Ok(RT.get_or_init(|| rt))
}

/// Run a future to completion on the crate runtime.
pub(crate) fn block_on<F: std::future::Future>(f: F) -> Result<F::Output> {
    Ok(runtime()?.block_on(f))
}

/// Bounded retries: 3 attempts within 20 s, so a dead endpoint is reported quickly.
pub fn retry_config() -> RetryConfig {
    wave_store::StoreOptions::default().retry
}

/// A dataset root: a store plus a prefix inside it (see [`wave_store::Root`] for the URI forms and
/// their environment variables).
#[derive(Debug, Clone)]
pub struct Location(wave_store::Root);

impl std::ops::Deref for Location {
    type Target = wave_store::Root;
    fn deref(&self) -> &wave_store::Root {
        &self.0
    }
}

impl Location {
    /// Parse a URI or path. With `create`, a missing local directory is created (for outputs).
    pub fn parse(uri: &str, create: bool) -> Result<Location> {
        Ok(Location(wave_store::Root::open(
            uri,
            create,
            &wave_store::StoreOptions::default(),
        )?))
    }

    /// Read a whole object.
    pub fn get(&self, rel: &str) -> Result<Bytes> {
        let path = self.path(rel);
        let store = Arc::clone(&self.store);
        block_on(async move { store.get(&path).await?.bytes().await })?.map_err(|e| Error::Store {
            uri: self.uri_of(rel),
            source: e,
        })
    }

    /// Size of an object, or `None` when it does not exist.
    pub fn size(&self, rel: &str) -> Result<Option<u64>> {
        let path = self.path(rel);
        let store = Arc::clone(&self.store);
        match block_on(async move { store.head(&path).await })? {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(Error::Store {
                uri: self.uri_of(rel),
                source: e,
            }),
        }
    }

    /// Write a whole object (local files: temp name + rename, done by `LocalFileSystem`).
    pub fn put(&self, rel: &str, bytes: Vec<u8>) -> Result<()> {
        let path = self.path(rel);
        let store = Arc::clone(&self.store);
        block_on(async move { store.put(&path, PutPayload::from(bytes)).await })?
            .map(|_| ())
            .map_err(|e| Error::Store {
                uri: self.uri_of(rel),
                source: e,
            })
    }

    /// Store a local file as object `rel`, streamed in 8 MiB parts (a multipart upload: the object
    /// appears only once complete, and memory stays at a few parts whatever the file size).
    pub fn put_file(&self, rel: &str, file: &std::path::Path) -> Result<()> {
        const PART: usize = 8 << 20;
        let path = self.path(rel);
        let store = Arc::clone(&self.store);
        let uri = self.uri_of(rel);
        let store_err = |e| Error::Store {
            uri: uri.clone(),
            source: e,
        };
        block_on(async {
            let mut f = std::fs::File::open(file).map_err(|e| Error::io(file, e))?;
            let upload = store.put_multipart(&path).await.map_err(store_err)?;
            let mut w = WriteMultipart::new_with_chunk_size(upload, PART);
            let mut buf = vec![0u8; PART];
            loop {
                let n = std::io::Read::read(&mut f, &mut buf).map_err(|e| Error::io(file, e))?;
                if n == 0 {
                    break;
                }
                w.wait_for_capacity(2).await.map_err(store_err)?;
                w.write(&buf[..n]);
            }
            w.finish().await.map(|_| ()).map_err(store_err)
        })?
    }

    /// Delete an object; a missing object is not an error.
    pub fn delete(&self, rel: &str) -> Result<()> {
        let path = self.path(rel);
        let store = Arc::clone(&self.store);
        match block_on(async move { store.delete(&path).await })? {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(Error::Store {
                uri: self.uri_of(rel),
                source: e,
            }),
        }
    }
}

/// Parquet reader over one object: ranged GETs through object_store, with the footer optionally
/// supplied from a cache so each row-group read costs only its own column chunks.
pub struct ObjectReader {
    store: Arc<dyn ObjectStore>,
    path: Path,
    size: u64,
    metadata: Option<Arc<ParquetMetaData>>,
}

impl ObjectReader {
    /// A reader of `path`, whose size is `size` bytes (from the manifest or a HEAD request).
    pub fn new(
        store: Arc<dyn ObjectStore>,
        path: Path,
        size: u64,
        metadata: Option<Arc<ParquetMetaData>>,
    ) -> Self {
        ObjectReader {
            store,
            path,
            size,
            metadata,
        }
    }
}

fn external(e: object_store::Error) -> ParquetError {
    ParquetError::External(Box::new(e))
}

impl AsyncFileReader for ObjectReader {
    fn get_bytes(&mut self, range: Range<u64>) -> BoxFuture<'_, parquet::errors::Result<Bytes>> {
        async move {
            self.store
                .get_range(&self.path, range)
                .await
                .map_err(external)
        }
        .boxed()
    }

    fn get_byte_ranges(
        &mut self,
        ranges: Vec<Range<u64>>,
    ) -> BoxFuture<'_, parquet::errors::Result<Vec<Bytes>>> {
        async move {
            self.store
                .get_ranges(&self.path, &ranges)
                .await
                .map_err(external)
        }
        .boxed()
    }

    fn get_metadata<'a>(
        &'a mut self,
        _options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, parquet::errors::Result<Arc<ParquetMetaData>>> {
        async move {
            if let Some(m) = &self.metadata {
                return Ok(Arc::clone(m));
            }
            let size = self.size;
            // The offset index (page locations) lets a read of a few rows fetch only their pages.
            let m = Arc::new(
                ParquetMetaDataReader::new()
                    .with_prefetch_hint(Some(64 * 1024))
                    .with_offset_index_policy(PageIndexPolicy::Optional)
                    .load_and_finish(&mut *self, size)
                    .await?,
            );
            self.metadata = Some(Arc::clone(&m));
            Ok(m)
        }
        .boxed()
    }
}
