//! Storage for tusk: one function from a URL to a place to read and write, on every backend.
//!
//! | URL | backend |
//! |---|---|
//! | `data/x`, `/abs/x`, `file:///abs/x` | local directory (the embedded default: nothing to set up) |
//! | `hdfs://namenode:8020/x` (`hdfs:///x` uses `fs.defaultFS`) | HDFS native RPC (`hdfs-native`) |
//! | `webhdfs://namenode:9870/x` | HDFS over the WebHDFS REST API |
//! | `s3://bucket/x` | Amazon S3 or an S3-compatible server, configured by `AWS_*` variables |
//! | `az://container/x`, `abfs[s]://container@account.dfs.core.windows.net/x` | Azure Blob / ADLS Gen2, configured by `AZURE_*` variables |
//! | `memory://name/x` | in memory, shared by everything opened from one [`Storage`] |
//!
//! Writes are atomic on every backend: data goes to a hidden temporary file next to the target
//! and is renamed into place only when complete, so a reader never sees half a file. Names that
//! start with `.` are hidden from listings (that is where temporaries live).
//!
//! The API is blocking, for the record readers, converters and the CLI; async code (DataFusion,
//! servers) takes the underlying `object_store` from [`Location::object_store`].
//!
//! ```
//! let storage = tusk_storage::Storage::new()?;
//! let dir = storage.open("memory://demo/data")?;
//! dir.join("a.txt").write(&b"hello"[..])?;
//! assert_eq!(&dir.join("a.txt").read()?[..], b"hello");
//! assert_eq!(dir.list()?.len(), 1);
//! # Ok::<(), tusk_storage::Error>(())
//! ```

mod error;
mod io;
mod retry;
mod url;
mod webhdfs;

use std::collections::HashMap;
use std::fmt;
use std::ops::Range;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};

pub use error::{Error, Result};
pub use io::{AtomicWriter, ObjectReader};
pub use webhdfs::WebHdfs;

use crate::url::{Parsed, Scheme};

/// Which kind of backend a [`Location`] lives on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A local directory.
    Local,
    /// In-process memory.
    Memory,
    /// HDFS over native RPC.
    Hdfs,
    /// HDFS over WebHDFS.
    WebHdfs,
    /// Amazon S3 or an S3-compatible server.
    S3,
    /// Azure Blob Storage / Data Lake Storage Gen2.
    Azure,
}

/// Entry point: owns the I/O runtime and the stores opened so far. Cheap to clone.
#[derive(Clone)]
pub struct Storage {
    inner: Arc<StorageInner>,
}

struct StorageInner {
    rt: tokio::runtime::Runtime,
    stores: Mutex<HashMap<String, Arc<dyn ObjectStore>>>,
    /// Settings that take the place of environment variables of the same name.
    options: HashMap<String, String>,
    /// Retry deadlines and call limit, read once from the settings.
    policy: retry::Policy,
    /// Whether remote streaming writes keep a local spool for a whole-file resend.
    spool: bool,
}

impl fmt::Debug for Storage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Storage").finish_non_exhaustive()
    }
}

impl Storage {
    /// Start the storage layer (a small I/O runtime; nothing is connected until used).
    /// Settings come from the environment (see [`Storage::with_options`]).
    pub fn new() -> Result<Storage> {
        Storage::with_options(std::iter::empty::<(String, String)>())
    }

    /// [`Storage::new`], with settings that take the place of environment variables of the same
    /// name: `AWS_*` for `s3://` (see the README's Storage section), `TUSK_STORAGE_RETRY_SECS`
    /// (60: how long transient HDFS faults are retried), `TUSK_STORAGE_CONNECT_SECS` (10: the
    /// same for a NameNode that has not answered yet), `TUSK_STORAGE_CALL_TIMEOUT_SECS` (60: one
    /// NameNode call), `TUSK_WRITE_SPOOL` (`0`: no local spool for whole-file write retries).
    pub fn with_options<K: Into<String>, V: Into<String>>(
        options: impl IntoIterator<Item = (K, V)>,
    ) -> Result<Storage> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("tusk-io")
            .enable_all()
            .build()
            .map_err(Error::Runtime)?;
        let options: HashMap<String, String> = options
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        let lookup = |k: &str| setting(&options, k);
        let policy = retry::Policy::from_lookup(&lookup);
        let spool = lookup("TUSK_WRITE_SPOOL").as_deref() != Some("0");
        Ok(Storage {
            inner: Arc::new(StorageInner {
                rt,
                stores: Mutex::new(HashMap::new()),
                options,
                policy,
                spool,
            }),
        })
    }

    /// A setting: from [`Storage::with_options`], else the environment; empty counts as unset.
    fn option(&self, key: &str) -> Option<String> {
        setting(&self.inner.options, key)
    }

    fn policy(&self) -> retry::Policy {
        self.inner.policy
    }

    /// object_store's retries, ending with tusk's own deadline.
    fn retry_config(&self) -> object_store::RetryConfig {
        object_store::RetryConfig {
            retry_timeout: self.policy().deadline,
            ..Default::default()
        }
    }

    /// The settings given to [`Storage::with_options`] whose names start with `prefix`
    /// (`AWS_`, `AZURE_`), as object_store's lower-case config keys (`aws_region`).
    fn store_options(&self, prefix: &str) -> impl Iterator<Item = (String, &String)> {
        self.inner.options.iter().filter_map(move |(k, v)| {
            k.strip_prefix(prefix)
                .map(|rest| (format!("{prefix}{rest}").to_ascii_lowercase(), v))
        })
    }

    /// Resolve `url` (see the crate docs for the forms) to a [`Location`].
    pub fn open(&self, url: &str) -> Result<Location> {
        let parsed = url::parse(url)?;
        let store = self.store_for(url, &parsed)?;
        Ok(Location {
            storage: self.clone(),
            store,
            scheme: parsed.scheme,
            base: parsed.base,
            path: parsed.path,
        })
    }

    /// Every file matching a URL whose path holds glob characters (`*`, `?`, `[..]`, `{a,b}`);
    /// `*` does not cross `/`, `**` does. A URL without glob characters names one file, which
    /// must exist. Results are sorted by path; hidden (`.`-prefixed) files are skipped.
    pub fn glob(&self, url: &str) -> Result<Vec<Location>> {
        let parsed = url::parse(url)?;
        let Some((prefix, pattern)) = url::split_glob(&parsed.raw_path) else {
            let loc = self.open(url)?;
            loc.head()?;
            return Ok(vec![loc]);
        };
        let dir = self.open(&parsed.with_raw_path(&prefix))?;
        let matcher = globset::GlobBuilder::new(&pattern)
            .literal_separator(true)
            .build()
            .map_err(|source| Error::Glob {
                pattern: url.into(),
                source,
            })?
            .compile_matcher();
        let mut out = Vec::new();
        for entry in dir.list()? {
            let rel = entry.location.relative_to(&dir);
            if matcher.is_match(&rel) {
                out.push(entry.location);
            }
        }
        Ok(out)
    }

    fn store_for(&self, url: &str, parsed: &Parsed) -> Result<Arc<dyn ObjectStore>> {
        let mut stores = self.inner.stores.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = stores.get(&parsed.base) {
            return Ok(s.clone());
        }
        let store: Arc<dyn ObjectStore> = match parsed.scheme {
            Scheme::Local => Arc::new(object_store::local::LocalFileSystem::new()),
            Scheme::Memory => Arc::new(InMemory::new()),
            Scheme::Hdfs => {
                let mut builder = hdfs_native_object_store::HdfsObjectStoreBuilder::new()
                    .with_io_runtime(self.inner.rt.handle().clone());
                if !user_sets(BEST_EFFORT_KEY) {
                    // A DataNode lost from a write pipeline with no replacement at hand: go on
                    // with the others (the NameNode re-replicates the block later) rather
                    // than fail the block, as Hadoop advises for small clusters.
                    builder = builder.with_config([(BEST_EFFORT_KEY, "true")]);
                }
                if !parsed.authority.is_empty() {
                    builder = builder.with_url(format!("hdfs://{}", parsed.authority));
                }
                let _guard = self.inner.rt.enter();
                let hdfs = Arc::new(builder.build().map_err(|e| Error::InvalidUrl {
                    url: url.into(),
                    reason: e.to_string(),
                })?);
                Arc::new(retry::RetryStore::new(
                    hdfs,
                    self.policy(),
                    service_name(parsed.scheme, &parsed.base),
                ))
            }
            Scheme::WebHdfs => {
                let _guard = self.inner.rt.enter();
                Arc::new(
                    WebHdfs::new(&parsed.authority, None).map_err(|e| Error::InvalidUrl {
                        url: url.into(),
                        reason: e.to_string(),
                    })?,
                )
            }
            Scheme::S3 => {
                let _guard = self.inner.rt.enter();
                Arc::new(
                    s3_store(self, &parsed.authority).map_err(|e| Error::InvalidUrl {
                        url: url.into(),
                        reason: e.to_string(),
                    })?,
                )
            }
            Scheme::Azure => {
                let _guard = self.inner.rt.enter();
                Arc::new(
                    azure_store(self, &parsed.authority).map_err(|e| Error::InvalidUrl {
                        url: url.into(),
                        reason: e.to_string(),
                    })?,
                )
            }
        };
        stores.insert(parsed.base.clone(), store.clone());
        Ok(store)
    }

    fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.inner.rt.block_on(f)
    }

    pub(crate) fn handle(&self) -> &tokio::runtime::Handle {
        self.inner.rt.handle()
    }
}

/// An S3 store for `bucket`, configured like the AWS tools: `AWS_ACCESS_KEY_ID`,
/// `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION`/`AWS_DEFAULT_REGION`,
/// `AWS_ENDPOINT_URL` (an S3-compatible server; `http://` endpoints are allowed as given), and
/// every other `AWS_*` key object_store knows. tusk adds what safe commits need: create-only
/// writes by `If-None-Match: *` (conditional put) and create-only renames by a multipart copy
/// completed with `If-None-Match: *`, unless `AWS_CONDITIONAL_PUT` / `AWS_COPY_IF_NOT_EXISTS`
/// say otherwise; and retries end after `TUSK_STORAGE_RETRY_SECS`.
fn s3_store(storage: &Storage, bucket: &str) -> object_store::Result<object_store::aws::AmazonS3> {
    use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey, S3CopyIfNotExists};
    let mut b = AmazonS3Builder::from_env();
    for (key, v) in storage.store_options("AWS_") {
        if let Ok(key) = key.parse::<AmazonS3ConfigKey>() {
            b = b.with_config(key, v);
        }
    }
    b = b.with_bucket_name(bucket);
    let set = |k: &str| storage.option(k).is_some();
    if !set("AWS_COPY_IF_NOT_EXISTS") {
        b = b.with_copy_if_not_exists(S3CopyIfNotExists::Multipart);
    }
    let endpoint = s3_endpoint(storage).unwrap_or_default();
    if endpoint.starts_with("http://") && !set("AWS_ALLOW_HTTP") {
        b = b.with_allow_http(true);
    }
    if !set("AWS_REGION") && !set("AWS_DEFAULT_REGION") {
        b = b.with_region("us-east-1");
    }
    b.with_retry(storage.retry_config()).build()
}

/// An Azure Blob / ADLS Gen2 store for `container` or `container@account.host`, configured
/// like Azure's tools and Hadoop's ABFS: `AZURE_STORAGE_ACCOUNT_NAME`, `AZURE_STORAGE_ACCOUNT_KEY`
/// (or a SAS in `AZURE_STORAGE_SAS_KEY`, or a service principal in `AZURE_CLIENT_ID`,
/// `AZURE_CLIENT_SECRET`, `AZURE_TENANT_ID`), `AZURE_STORAGE_ENDPOINT` for another endpoint (an
/// `http://` one is allowed as given), `AZURE_STORAGE_USE_EMULATOR=true` for Azurite at
/// `AZURITE_BLOB_STORAGE_URL` (default `http://127.0.0.1:10000`), and every other `AZURE_*`
/// key object_store knows. Create-only writes and renames use `If-None-Match: *`,
/// which Azure Blob has always had.
fn azure_store(
    storage: &Storage,
    authority: &str,
) -> object_store::Result<object_store::azure::MicrosoftAzure> {
    use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
    let mut b = MicrosoftAzureBuilder::from_env();
    for (key, v) in storage.store_options("AZURE_") {
        if let Ok(key) = key.parse::<AzureConfigKey>() {
            b = b.with_config(key, v);
        }
    }
    let (container, host) = match authority.split_once('@') {
        Some((c, h)) => (c, Some(h)),
        None => (authority, None),
    };
    b = b.with_container_name(container);
    if let Some(account) = host.and_then(|h| h.split('.').next()) {
        b = b.with_account(account);
    }
    if azure_endpoint(storage).is_some_and(|e| e.starts_with("http://"))
        && storage.option("AZURE_ALLOW_HTTP").is_none()
    {
        b = b.with_allow_http(true);
    }
    b.with_retry(storage.retry_config()).build()
}

fn azure_endpoint(storage: &Storage) -> Option<String> {
    storage
        .option("AZURE_STORAGE_ENDPOINT")
        .or_else(|| storage.option("AZURE_ENDPOINT"))
}

fn s3_endpoint(storage: &Storage) -> Option<String> {
    storage
        .option("AWS_ENDPOINT_URL")
        .or_else(|| storage.option("AWS_ENDPOINT"))
}

/// `key` from `options`, else the environment; empty counts as unset.
fn setting(options: &HashMap<String, String>, key: &str) -> Option<String> {
    options
        .get(key)
        .cloned()
        .or_else(|| std::env::var(key).ok())
        .filter(|v| !v.is_empty())
}

const BEST_EFFORT_KEY: &str = "dfs.client.block.write.replace-datanode-on-failure.best-effort";

/// Does the user's Hadoop configuration (`$HADOOP_CONF_DIR`, else `$HADOOP_HOME/etc/hadoop`,
/// where hdfs-native reads it) set `key`? Then tusk leaves it alone.
fn user_sets(key: &str) -> bool {
    let dir = std::env::var_os("HADOOP_CONF_DIR")
        .map(std::path::PathBuf::from)
        .or_else(|| {
            std::env::var_os("HADOOP_HOME")
                .map(|h| std::path::PathBuf::from(h).join("etc").join("hadoop"))
        });
    dir.is_some_and(|d| {
        ["hdfs-site.xml", "core-site.xml"]
            .iter()
            .any(|f| std::fs::read_to_string(d.join(f)).is_ok_and(|text| text.contains(key)))
    })
}

/// What to call the service behind a store in messages.
fn service_name(scheme: Scheme, base: &str) -> String {
    match scheme {
        Scheme::Hdfs if base == "hdfs://" => "the default HDFS NameNode".to_string(),
        Scheme::Hdfs => format!("HDFS NameNode {}", &base["hdfs://".len()..]),
        Scheme::WebHdfs => format!("WebHDFS at {}", &base["webhdfs://".len()..]),
        Scheme::S3 => format!("S3 bucket {}", &base["s3://".len()..]),
        Scheme::Azure => format!(
            "Azure container {}",
            base.split_once("://").map_or(base, |(_, a)| a)
        ),
        _ => "storage".to_string(),
    }
}

/// A file or directory on some backend. Cheap to clone.
#[derive(Clone)]
pub struct Location {
    storage: Storage,
    store: Arc<dyn ObjectStore>,
    scheme: Scheme,
    /// Everything before the path, e.g. `hdfs://nn:8020`; empty for local.
    base: String,
    path: Path,
}

impl fmt::Debug for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Location({})", self.url())
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.url())
    }
}

/// One file found by [`Location::list`].
#[derive(Debug, Clone)]
pub struct Entry {
    /// Where it is.
    pub location: Location,
    /// Its size in bytes.
    pub size: u64,
}

/// What [`Location::head`] knows about a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    /// Size in bytes.
    pub size: u64,
    /// Last modification, milliseconds since the Unix epoch (what HDFS reports, and what YARN
    /// checks a localized file against).
    pub modified_ms: i64,
}

impl Location {
    /// The URL of this location, in the form users write it (a plain path for local files).
    pub fn url(&self) -> String {
        match self.scheme {
            Scheme::Local => format!("/{}", self.path),
            _ => format!("{}/{}", self.base, self.path),
        }
    }

    /// Which backend this lives on.
    pub fn backend(&self) -> Backend {
        match self.scheme {
            Scheme::Local => Backend::Local,
            Scheme::Memory => Backend::Memory,
            Scheme::Hdfs => Backend::Hdfs,
            Scheme::WebHdfs => Backend::WebHdfs,
            Scheme::S3 => Backend::S3,
            Scheme::Azure => Backend::Azure,
        }
    }

    /// The last path segment (file name), empty at the root.
    pub fn file_name(&self) -> &str {
        self.path.filename().unwrap_or("")
    }

    /// A location below this one; `rel` may hold several `/`-separated segments.
    pub fn join(&self, rel: &str) -> Location {
        let mut path = self.path.clone();
        for part in rel.split('/').filter(|p| !p.is_empty() && *p != ".") {
            path = path.clone().join(part);
        }
        Location {
            path,
            ..self.clone()
        }
    }

    /// The directory holding this location (itself at the root).
    pub fn parent(&self) -> Location {
        let parts: Vec<_> = self.path.parts().collect();
        let path = if parts.is_empty() {
            Path::default()
        } else {
            Path::from_iter(parts[..parts.len() - 1].iter().cloned())
        };
        Location {
            path,
            ..self.clone()
        }
    }

    /// This location's path relative to `dir` (`a/b.txt`), or its full path if not below it.
    pub fn relative_to(&self, dir: &Location) -> String {
        match self.path.prefix_match(&dir.path) {
            Some(parts) => parts
                .map(|p| p.as_ref().to_string())
                .collect::<Vec<_>>()
                .join("/"),
            None => self.path.to_string(),
        }
    }

    /// The underlying `object_store` and path, for async users such as DataFusion.
    pub fn object_store(&self) -> (Arc<dyn ObjectStore>, Path) {
        (self.store.clone(), self.path.clone())
    }

    /// Path on the local filesystem, for local locations.
    pub fn local_path(&self) -> Option<std::path::PathBuf> {
        (self.scheme == Scheme::Local).then(|| std::path::PathBuf::from(self.url()))
    }

    /// What to call the service behind this location in messages, with the endpoint for
    /// object stores (`S3 bucket b at http://…`).
    fn service(&self) -> String {
        let name = service_name(self.scheme, &self.base);
        match self.endpoint() {
            Some(endpoint) => format!("{name} at {endpoint}"),
            None => name,
        }
    }

    /// The endpoint of an object store, as configured (or the cloud's own).
    fn endpoint(&self) -> Option<String> {
        match self.scheme {
            Scheme::S3 => Some(s3_endpoint(&self.storage).unwrap_or_else(|| "AWS".into())),
            Scheme::Azure => Some(
                azure_endpoint(&self.storage)
                    .or_else(|| {
                        self.storage.option("AZURE_STORAGE_USE_EMULATOR").map(|_| {
                            self.storage
                                .option("AZURITE_BLOB_STORAGE_URL")
                                .unwrap_or_else(|| "http://127.0.0.1:10000".into())
                        })
                    })
                    .unwrap_or_else(|| "Azure".into()),
            ),
            _ => None,
        }
    }

    fn err(&self, e: object_store::Error) -> Error {
        if let Some(endpoint) = self.endpoint() {
            // Object stores answer with codes in the body; name the common ones plainly.
            let text = format!("{e:?}");
            let has = |codes: &[&'static str]| codes.iter().copied().find(|c| text.contains(c));
            let (refused, missing) = match self.scheme {
                Scheme::S3 => (
                    &[
                        "InvalidAccessKeyId",
                        "SignatureDoesNotMatch",
                        "AccessDenied",
                    ][..],
                    &["NoSuchBucket"][..],
                ),
                _ => (
                    &[
                        "AuthenticationFailed",
                        "AuthorizationFailure",
                        "AuthorizationPermissionMismatch",
                    ][..],
                    &["ContainerNotFound"][..],
                ),
            };
            if self.scheme == Scheme::S3 && text.contains("169.254.169.254") {
                return Error::Credentials {
                    url: self.url(),
                    reason: "no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY \
                             (or AWS_WEB_IDENTITY_TOKEN_FILE, or run with a container or instance \
                             role); the instance metadata service did not answer"
                        .into(),
                };
            }
            if let Some(code) = has(refused) {
                return Error::Credentials {
                    url: self.url(),
                    reason: format!("{} refused the credentials: {code}", self.service()),
                };
            }
            if has(missing).is_some() {
                let authority = self.base.split_once("://").map_or("", |(_, a)| a);
                return Error::NoSuchBucket {
                    url: self.url(),
                    bucket: authority.split('@').next().unwrap_or(authority).to_string(),
                    service: endpoint,
                };
            }
        }
        Error::from_store(&self.url(), &self.service(), e)
    }

    /// An I/O error from one of this location's adapters: the storage error it carries, if
    /// any, else a local I/O error naming the URL.
    fn io_err(&self, e: std::io::Error) -> Error {
        if !e.get_ref().is_some_and(|inner| inner.is::<Error>()) {
            return Error::from_io(&self.url(), e);
        }
        match e.into_inner().map(|inner| inner.downcast::<Error>()) {
            Some(Ok(err)) => *err,
            // not reached: the check above saw a storage error inside
            _ => Error::from_io(&self.url(), std::io::Error::other("write failed")),
        }
    }

    /// Size and modification time of the file; [`Error::NotFound`] when there is none.
    pub fn head(&self) -> Result<Meta> {
        let meta = self
            .storage
            .block_on(self.store.head(&self.path))
            .map_err(|e| self.err(e))?;
        Ok(Meta {
            size: meta.size,
            modified_ms: meta.last_modified.timestamp_millis(),
        })
    }

    /// Whether a file exists here.
    pub fn exists(&self) -> Result<bool> {
        match self.head() {
            Ok(_) => Ok(true),
            Err(Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The whole file.
    pub fn read(&self) -> Result<Bytes> {
        if let Some(p) = self.local_path() {
            return std::fs::read(&p)
                .map(Bytes::from)
                .map_err(|e| Error::from_io(&self.url(), e));
        }
        self.storage
            .block_on(async { self.store.get(&self.path).await?.bytes().await })
            .map_err(|e| self.err(e))
    }

    /// Bytes `range` of the file (the range must lie within the file).
    pub fn read_range(&self, range: Range<u64>) -> Result<Bytes> {
        self.storage
            .block_on(self.store.get_range(&self.path, range))
            .map_err(|e| self.err(e))
    }

    /// A streaming reader over the file: it never holds more than one chunk in memory.
    pub fn reader(&self) -> Result<ObjectReader> {
        if let Some(p) = self.local_path() {
            let f = std::fs::File::open(&p).map_err(|e| Error::from_io(&self.url(), e))?;
            if f.metadata().map(|m| m.is_dir()).unwrap_or(false) {
                return Err(Error::Io {
                    url: self.url(),
                    source: std::io::Error::other("is a directory, expected a file"),
                });
            }
            return Ok(ObjectReader::local(f));
        }
        let result = self
            .storage
            .block_on(self.store.get(&self.path))
            .map_err(|e| self.err(e))?;
        Ok(ObjectReader::stream(
            &self.storage,
            self.url(),
            result.into_stream(),
        ))
    }

    /// Write the whole file atomically, replacing any previous one. On HDFS, transient faults
    /// are retried (see [`AtomicWriter`]).
    pub fn write(&self, data: impl Into<Bytes>) -> Result<()> {
        let data: Bytes = data.into();
        let mut w = self.writer()?;
        std::io::Write::write_all(&mut w, &data).map_err(|e| self.io_err(e))?;
        w.finish()
    }

    /// Write the whole file atomically, failing with [`Error::AlreadyExists`] if one is there.
    /// This is the commit primitive: of two racing writers exactly one succeeds. On HDFS,
    /// transient faults are retried until `TUSK_STORAGE_RETRY_SECS`; should a NameNode fail over
    /// between committing this file and answering, the retry reports the file as existing.
    pub fn write_new(&self, data: impl Into<Bytes>) -> Result<()> {
        let data: Bytes = data.into();
        if let Some(p) = self.local_path() {
            return io::write_local(&p, &data, false).map_err(|e| Error::from_io(&self.url(), e));
        }
        let opts = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        self.storage
            .block_on(
                self.store
                    .put_opts(&self.path, PutPayload::from(data), opts),
            )
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    /// A streaming atomic writer: nothing appears here until [`AtomicWriter::finish`]; dropping
    /// it unfinished discards what was written.
    pub fn writer(&self) -> Result<AtomicWriter> {
        if let Some(p) = self.local_path() {
            return AtomicWriter::local(&p, self.url());
        }
        let upload = self
            .storage
            .block_on(self.store.put_multipart(&self.path))
            .map_err(|e| self.err(e))?;
        let replay = (matches!(self.scheme, Scheme::Hdfs | Scheme::WebHdfs)
            && self.storage.inner.spool)
            .then(|| io::Replay::new(&self.url()))
            .flatten();
        Ok(AtomicWriter::multipart(self.clone(), upload, replay))
    }

    /// The names directly in this directory (files and subdirectories), sorted, hidden names
    /// (starting with `.`) skipped: one round trip, however much lies deeper. A missing
    /// directory lists as empty.
    pub fn list_names(&self) -> Result<Vec<String>> {
        let prefix = (!self.path.as_ref().is_empty()).then_some(&self.path);
        let listed = match self
            .storage
            .block_on(self.store.list_with_delimiter(prefix))
        {
            Ok(l) => l,
            Err(object_store::Error::NotFound { .. }) => return Ok(Vec::new()),
            Err(e) => return Err(self.err(e)),
        };
        let mut names: Vec<String> = listed
            .common_prefixes
            .iter()
            .chain(listed.objects.iter().map(|m| &m.location))
            .filter_map(|p| p.filename().map(str::to_string))
            .filter(|n| !n.starts_with('.'))
            .collect();
        names.sort();
        names.dedup();
        Ok(names)
    }

    /// Every file below this directory, recursively, sorted by path. Hidden names (starting
    /// with `.`) are skipped. A missing directory lists as empty.
    pub fn list(&self) -> Result<Vec<Entry>> {
        let prefix = (!self.path.as_ref().is_empty()).then_some(&self.path);
        let metas: Vec<_> = self
            .storage
            .block_on(self.store.list(prefix).try_collect::<Vec<_>>())
            .or_else(|e| match e {
                object_store::Error::NotFound { .. } => Ok(Vec::new()),
                e => Err(self.err(e)),
            })?;
        let mut out: Vec<Entry> = metas
            .into_iter()
            .filter(|m| {
                m.location
                    .prefix_match(&self.path)
                    .map(|mut parts| parts.all(|p| !p.as_ref().starts_with('.')))
                    .unwrap_or(false)
            })
            .map(|m| Entry {
                location: Location {
                    path: m.location,
                    ..self.clone()
                },
                size: m.size,
            })
            .collect();
        out.sort_by(|a, b| a.location.path.cmp(&b.location.path));
        Ok(out)
    }

    /// Move this file to `to` (same backend), failing with [`Error::AlreadyExists`] if `to`
    /// exists: atomic and exclusive, so of two racing renames onto one name exactly one
    /// succeeds. A pure metadata operation on HDFS (no data is written), hence the cheap way
    /// to publish a file that was written before.
    pub fn rename_new(&self, to: &Location) -> Result<()> {
        if let (Some(from), Some(dst)) = (self.local_path(), to.local_path()) {
            if let Some(dir) = dst.parent() {
                std::fs::create_dir_all(dir).map_err(|e| Error::from_io(&to.url(), e))?;
            }
            // A hard link fails if the name exists, so it is the exclusive step.
            std::fs::hard_link(&from, &dst).map_err(|e| Error::from_io(&to.url(), e))?;
            let _ = std::fs::remove_file(&from);
            return Ok(());
        }
        self.storage
            .block_on(self.store.rename_if_not_exists(&self.path, &to.path))
            .map_err(|e| to.err(e))
    }

    /// Delete the file. Deleting a file that is not there is not an error.
    pub fn delete(&self) -> Result<()> {
        match self.storage.block_on(self.store.delete(&self.path)) {
            Ok(()) => Ok(()),
            Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.err(e)),
        }
    }

    /// Delete every file below this directory (including hidden ones), then the directories
    /// left empty; returns how many files.
    pub fn delete_all(&self) -> Result<usize> {
        let prefix = (!self.path.as_ref().is_empty()).then_some(&self.path);
        let metas: Vec<_> = self
            .storage
            .block_on(self.store.list(prefix).try_collect::<Vec<_>>())
            .map_err(|e| self.err(e))?;
        for m in &metas {
            let loc = Location {
                path: m.location.clone(),
                ..self.clone()
            };
            loc.delete()?;
        }
        self.remove_empty_dirs(metas.iter().map(|m| m.location.as_ref()));
        Ok(metas.len())
    }

    /// Remove the (now empty) directories the given files were in, deepest first, and this
    /// one. Object stores have no directories, but local disks and HDFS do, and a tree of
    /// empty ones would be left behind. Best effort: a directory someone wrote into meanwhile
    /// is not empty and stays.
    fn remove_empty_dirs<'a>(&self, files: impl Iterator<Item = &'a str>) {
        let root = self.path.as_ref().trim_end_matches('/');
        let mut files = files.peekable();
        // no files: this may be a file itself, or nothing; either way not ours to remove
        if root.is_empty() || files.peek().is_none() {
            return;
        }
        let mut dirs = std::collections::BTreeSet::new();
        for f in files {
            let mut end = f.len();
            while let Some(i) = f[..end].rfind('/') {
                end = i;
                if end <= root.len() {
                    break;
                }
                dirs.insert(&f[..end]);
            }
        }
        let mut dirs: Vec<&str> = dirs.into_iter().collect();
        dirs.sort_by_key(|d| std::cmp::Reverse(d.matches('/').count()));
        dirs.push(root);
        for d in dirs {
            if self.scheme == Scheme::Local {
                let _ = std::fs::remove_dir(format!("/{d}"));
            } else {
                let _ = self.storage.block_on(self.store.delete(&Path::from(d)));
            }
        }
    }
}
