//! An [`ObjectStore`] over Hadoop's WebHDFS REST API (the protocol of `hdfs.InsecureClient`).
//!
//! Every request goes to the NameNode's HTTP server at `http://{authority}/webhdfs/v1/...` with
//! `user.name` set (simple, "insecure" authentication). Data transfers (`OPEN`, `CREATE`,
//! `APPEND`) are two-step: the NameNode answers with a redirect to a DataNode, which this module
//! follows itself (the HTTP client never follows redirects on its own, so a request body is never
//! sent to the NameNode and the DataNode URL can be named in errors).
//!
//! Writes are atomic: data goes to a hidden temporary sibling `.{name}.tmp.{random}`, which is
//! then renamed onto the target. Readers therefore never see a partially written object.

use std::collections::VecDeque;
use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::stream::{self, BoxStream, StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{
    Attributes, CopyMode, CopyOptions, GetOptions, GetResult, GetResultPayload, ListResult,
    MultipartUpload, ObjectMeta, ObjectStore, PutMode, PutMultipartOptions, PutOptions, PutPayload,
    PutResult, RenameOptions, RenameTargetMode, UploadPart,
};
use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE, LOCATION};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde::Deserialize;
use tokio::sync::watch;

use crate::error::error_chain;

/// Store name used in [`object_store::Error::Generic`].
const STORE: &str = "WebHDFS";

/// How many deletes [`ObjectStore::delete_stream`] keeps in flight.
const DELETE_CONCURRENCY: usize = 8;

/// An [`ObjectStore`] backed by a Hadoop NameNode's WebHDFS REST API.
///
/// Object paths (`a/b/c`) map to absolute HDFS paths (`/a/b/c`). Cloning is cheap and shares
/// the HTTP connection pool.
#[derive(Debug, Clone)]
pub struct WebHdfs {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    client: reqwest::Client,
    /// `host:port` of the NameNode HTTP server.
    authority: String,
    /// Value of the `user.name` query parameter.
    user: String,
}

impl WebHdfs {
    /// A store talking to the NameNode HTTP server at `authority` (`"host:port"`), acting as
    /// `user` (`user.name`); `None` means `$HADOOP_USER_NAME`, else `$USER`, else `"root"`.
    ///
    /// Nothing is contacted here; an unreachable NameNode shows up on the first operation.
    pub fn new(authority: &str, user: Option<String>) -> object_store::Result<WebHdfs> {
        let authority = authority.trim();
        let valid = !authority.is_empty()
            && !authority.contains(['/', '?', '#', '@'])
            && !authority
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
            && ::url::Url::parse(&format!("http://{authority}/"))
                .map(|u| u.host_str().is_some_and(|h| !h.is_empty()))
                .unwrap_or(false);
        if !valid {
            return Err(generic(format!(
                "invalid WebHDFS NameNode address {authority:?}: expected \"host:port\""
            )));
        }
        let user = user
            .filter(|u| !u.is_empty())
            .or_else(|| env_non_empty("HADOOP_USER_NAME"))
            .or_else(|| env_non_empty("USER"))
            .unwrap_or_else(|| "root".to_string());
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| {
                transport(
                    format!("cannot build an HTTP client for WebHDFS at {authority}"),
                    e,
                )
            })?;
        Ok(WebHdfs {
            inner: Arc::new(Inner {
                client,
                authority: authority.to_string(),
                user,
            }),
        })
    }
}

impl fmt::Display for WebHdfs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WebHdfs({})", self.inner.authority)
    }
}

fn env_non_empty(key: &str) -> Option<String> {
    std::env::var(key).ok().filter(|v| !v.is_empty())
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// Error sources this module puts inside [`object_store::Error`].
#[derive(Debug, thiserror::Error)]
enum WebHdfsError {
    /// A network-level failure; `message` already includes the cause chain.
    #[error("{message}")]
    Transport {
        message: String,
        #[source]
        source: reqwest::Error,
    },
    /// Anything else (remote exceptions, protocol surprises).
    #[error("{0}")]
    Message(String),
}

fn generic(message: String) -> object_store::Error {
    object_store::Error::Generic {
        store: STORE,
        source: Box::new(WebHdfsError::Message(message)),
    }
}

fn transport(context: String, e: reqwest::Error) -> object_store::Error {
    object_store::Error::Generic {
        store: STORE,
        source: Box::new(WebHdfsError::Transport {
            message: format!("{context}: {}", error_chain(&e)),
            source: e,
        }),
    }
}

/// Object-store form of an HDFS path, for error messages (`/a/b` → `a/b`).
fn display_path(hdfs_path: &str) -> String {
    hdfs_path.trim_start_matches('/').to_string()
}

/// One WebHDFS call, for error messages and error mapping.
#[derive(Clone, Copy)]
struct Call<'a> {
    method: &'a Method,
    op: &'a str,
    /// Absolute HDFS path the call is about.
    path: &'a str,
    /// Destination of a rename: `AlreadyExists` refers to it.
    dest: Option<&'a str>,
}

impl Call<'_> {
    fn describe(&self) -> String {
        match self.dest {
            Some(d) => format!("{} op={} {} -> {}", self.method, self.op, self.path, d),
            None => format!("{} op={} {}", self.method, self.op, self.path),
        }
    }
}

#[derive(Deserialize)]
struct RemoteExceptionBody {
    #[serde(rename = "RemoteException")]
    remote: RemoteException,
}

#[derive(Deserialize)]
struct RemoteException {
    #[serde(default)]
    exception: String,
    #[serde(default, rename = "javaClassName")]
    java_class_name: String,
    #[serde(default)]
    message: String,
}

/// Map a non-success WebHDFS answer to an [`object_store::Error`].
fn remote_error(call: Call<'_>, status: StatusCode, body: &[u8]) -> object_store::Error {
    let remote = serde_json::from_slice::<RemoteExceptionBody>(body)
        .ok()
        .map(|b| b.remote);
    let detail = match &remote {
        // DataNodes append the Java stack trace to the message; keep the message only.
        Some(r) => format!(
            "{}: {}",
            r.exception,
            r.message.split("\n\tat ").next().unwrap_or("").trim_end()
        ),
        None => {
            let text = String::from_utf8_lossy(body);
            let text = text.trim();
            let mut text: String = text.chars().take(500).collect();
            if text.is_empty() {
                text = "(empty body)".to_string();
            }
            text
        }
    };
    let message = format!(
        "WebHDFS {} failed (HTTP {status}): {detail}",
        call.describe()
    );
    let exception = remote
        .as_ref()
        .map(|r| {
            // `exception` is the simple name; fall back to the last part of the class name.
            if r.exception.is_empty() {
                r.java_class_name
                    .rsplit('.')
                    .next()
                    .unwrap_or("")
                    .to_string()
            } else {
                r.exception.clone()
            }
        })
        .unwrap_or_default();
    let path = display_path(call.path);
    match exception.as_str() {
        "FileNotFoundException" => object_store::Error::NotFound {
            path,
            source: message.into(),
        },
        "FileAlreadyExistsException" => object_store::Error::AlreadyExists {
            path: display_path(call.dest.unwrap_or(call.path)),
            source: message.into(),
        },
        "AccessControlException" => object_store::Error::PermissionDenied {
            path,
            source: message.into(),
        },
        _ if status == StatusCode::UNAUTHORIZED => object_store::Error::Unauthenticated {
            path,
            source: message.into(),
        },
        _ => generic(message),
    }
}

// ---------------------------------------------------------------------------------------------
// Paths and URLs
// ---------------------------------------------------------------------------------------------

/// Absolute HDFS path of an object path (`a/b` → `/a/b`, root → `/`).
fn hdfs_path(location: &Path) -> String {
    format!("/{}", location.as_ref())
}

/// Percent-encode everything but RFC 3986 unreserved characters. Stricter than needed on
/// purpose: Hadoop's Jetty/Jersey stack treats e.g. `;` in a path as a matrix parameter.
fn encode_component(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Percent-encode each segment of an absolute HDFS path, keeping the `/` separators.
fn encode_path(path: &str) -> String {
    path.split('/')
        .map(encode_component)
        .collect::<Vec<_>>()
        .join("/")
}

/// `(parent, name)` of an absolute HDFS path; `None` for `/`.
fn split_parent(path: &str) -> Option<(&str, &str)> {
    let (parent, name) = path.rsplit_once('/')?;
    if name.is_empty() {
        return None;
    }
    Some((if parent.is_empty() { "/" } else { parent }, name))
}

fn join_hdfs(dir: &str, name: &str) -> String {
    if dir.ends_with('/') {
        format!("{dir}{name}")
    } else {
        format!("{dir}/{name}")
    }
}

/// A random-enough hex token for temporary file names (no `rand` dependency: std's
/// randomly keyed hasher over time, pid and a counter).
fn random_token() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u32(std::process::id());
    if let Ok(d) = SystemTime::now().duration_since(UNIX_EPOCH) {
        h.write_u128(d.as_nanos());
    }
    format!("{:016x}", h.finish())
}

/// HDFS path of the temporary sibling `.{name}.tmp.{random}` used for an atomic write of
/// `location`.
fn temp_sibling(location: &Path) -> object_store::Result<String> {
    let target = hdfs_path(location);
    let Some((parent, name)) = split_parent(&target) else {
        return Err(generic(
            "cannot write an object at the root of a WebHDFS store".to_string(),
        ));
    };
    Ok(join_hdfs(
        parent,
        &format!(".{name}.tmp.{}", random_token()),
    ))
}

/// The object path of `name` inside the directory `dir`, kept byte-for-byte equal to the HDFS
/// name (no extra percent-encoding), so that listed paths round-trip.
fn child_path(dir: &Path, name: &str) -> object_store::Result<Path> {
    let raw = if dir.as_ref().is_empty() {
        name.to_string()
    } else {
        format!("{}/{name}", dir.as_ref())
    };
    Ok(Path::parse(raw)?)
}

// ---------------------------------------------------------------------------------------------
// WebHDFS JSON
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct FileStatus {
    #[serde(default)]
    path_suffix: String,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    length: u64,
    #[serde(default)]
    modification_time: i64,
    #[serde(default)]
    file_id: Option<u64>,
}

impl FileStatus {
    fn is_dir(&self) -> bool {
        self.kind == "DIRECTORY"
    }

    fn meta(&self, location: Path) -> ObjectMeta {
        let last_modified = DateTime::<Utc>::from_timestamp_millis(self.modification_time)
            .unwrap_or(DateTime::<Utc>::UNIX_EPOCH);
        let e_tag = Some(format!(
            "{:x}-{:x}-{:x}",
            self.file_id.unwrap_or(0),
            self.modification_time,
            self.length
        ));
        ObjectMeta {
            location,
            last_modified,
            size: self.length,
            e_tag,
            version: None,
        }
    }
}

#[derive(Deserialize)]
struct FileStatusBody {
    #[serde(rename = "FileStatus")]
    status: FileStatus,
}

#[derive(Deserialize)]
struct ListStatusBody {
    #[serde(rename = "FileStatuses")]
    statuses: FileStatuses,
}

#[derive(Deserialize)]
struct FileStatuses {
    #[serde(rename = "FileStatus", default)]
    list: Vec<FileStatus>,
}

#[derive(Deserialize)]
struct BooleanBody {
    boolean: bool,
}

#[derive(Deserialize)]
struct LocationBody {
    #[serde(rename = "Location")]
    location: String,
}

// ---------------------------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------------------------

/// Which server a request goes to, for error messages.
enum Target<'a> {
    NameNode,
    DataNode(&'a str),
}

/// `host:port` of a URL, for error messages.
fn url_authority(u: &str) -> String {
    match ::url::Url::parse(u) {
        Ok(parsed) => match (parsed.host_str(), parsed.port_or_known_default()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_string(),
            _ => u.to_string(),
        },
        Err(_) => u.to_string(),
    }
}

/// A request body and its exact length (always sent as `Content-Length`: the DataNode needs
/// to know where the data ends, and this avoids chunked uploads).
struct Upload {
    body: reqwest::Body,
    len: u64,
}

impl Upload {
    fn from_payload(payload: PutPayload) -> Upload {
        let len = payload.content_length() as u64;
        let mut chunks: Vec<Bytes> = payload.into_iter().collect();
        let body = if chunks.len() <= 1 {
            reqwest::Body::from(chunks.pop().unwrap_or_default())
        } else {
            reqwest::Body::wrap_stream(stream::iter(
                chunks.into_iter().map(Ok::<Bytes, std::io::Error>),
            ))
        };
        Upload { body, len }
    }
}

impl WebHdfs {
    fn authority(&self) -> &str {
        &self.inner.authority
    }

    /// NameNode URL for `op` on the absolute HDFS `path`, with `user.name` and `params`.
    fn nn_url(&self, path: &str, op: &str, params: &[(&str, &str)]) -> String {
        let mut url = format!(
            "http://{}/webhdfs/v1{}?op={}&user.name={}",
            self.inner.authority,
            encode_path(path),
            op,
            encode_component(&self.inner.user)
        );
        for (k, v) in params {
            url.push('&');
            url.push_str(k);
            url.push('=');
            url.push_str(&encode_component(v));
        }
        url
    }

    /// Send `req`, mapping connection failures to a message naming the server.
    async fn send(
        &self,
        req: RequestBuilder,
        call: Call<'_>,
        target: Target<'_>,
    ) -> object_store::Result<Response> {
        req.send().await.map_err(|e| {
            let context = match target {
                Target::NameNode => format!(
                    "cannot reach WebHDFS at {} ({})",
                    self.authority(),
                    call.describe()
                ),
                Target::DataNode(url) => format!(
                    "cannot reach WebHDFS DataNode at {} (redirected there by the NameNode at {} \
                     for {}; the DataNode's host name must be resolvable and reachable from here)",
                    url_authority(url),
                    self.authority(),
                    call.describe()
                ),
            };
            transport(context, e)
        })
    }

    /// Fail on any status that is neither success nor redirect.
    async fn check(&self, resp: Response, call: Call<'_>) -> object_store::Result<Response> {
        let status = resp.status();
        if status.is_success() || status.is_redirection() {
            return Ok(resp);
        }
        let body = self.read_body(resp, call).await?;
        Err(remote_error(call, status, &body))
    }

    async fn read_body(&self, resp: Response, call: Call<'_>) -> object_store::Result<Bytes> {
        resp.bytes().await.map_err(|e| {
            transport(
                format!(
                    "reading the WebHDFS answer to {} from {}",
                    call.describe(),
                    self.authority()
                ),
                e,
            )
        })
    }

    /// Send a NameNode request and parse its successful JSON answer.
    async fn nn_json<T: for<'de> Deserialize<'de>>(
        &self,
        method: Method,
        op: &str,
        path: &str,
        dest: Option<&str>,
        params: &[(&str, &str)],
    ) -> object_store::Result<T> {
        let call = Call {
            method: &method,
            op,
            path,
            dest,
        };
        let req = self
            .inner
            .client
            .request(method.clone(), self.nn_url(path, op, params));
        let resp = self.send(req, call, Target::NameNode).await?;
        let resp = self.check(resp, call).await?;
        let status = resp.status();
        let body = self.read_body(resp, call).await?;
        if !status.is_success() {
            return Err(generic(format!(
                "WebHDFS {} answered HTTP {status} unexpectedly",
                call.describe()
            )));
        }
        serde_json::from_slice(&body).map_err(|e| {
            generic(format!(
                "WebHDFS {} returned unexpected JSON ({e}): {}",
                call.describe(),
                String::from_utf8_lossy(&body)
                    .chars()
                    .take(300)
                    .collect::<String>()
            ))
        })
    }

    /// The DataNode URL the NameNode redirects a data operation to: a 3xx `Location`, or the
    /// JSON `{"Location": ...}` of a `noredirect=true` style answer.
    async fn redirect_location(
        &self,
        resp: Response,
        call: Call<'_>,
    ) -> object_store::Result<String> {
        if resp.status().is_redirection() {
            let loc = resp
                .headers()
                .get(LOCATION)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            return loc.ok_or_else(|| {
                generic(format!(
                    "WebHDFS {} redirected without a Location header",
                    call.describe()
                ))
            });
        }
        let body = self.read_body(resp, call).await?;
        serde_json::from_slice::<LocationBody>(&body)
            .map(|b| b.location)
            .map_err(|_| {
                generic(format!(
                    "WebHDFS {} did not redirect to a DataNode (is {} a NameNode HTTP address?)",
                    call.describe(),
                    self.authority()
                ))
            })
    }

    /// `GETFILESTATUS`; `None` when the path does not exist.
    async fn status(&self, path: &str) -> object_store::Result<Option<FileStatus>> {
        match self
            .nn_json::<FileStatusBody>(Method::GET, "GETFILESTATUS", path, None, &[])
            .await
        {
            Ok(b) => Ok(Some(b.status)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Status of the file at `location`; `NotFound` if missing or a directory.
    async fn file_status(&self, location: &Path) -> object_store::Result<FileStatus> {
        let path = hdfs_path(location);
        match self.status(&path).await? {
            Some(st) if !st.is_dir() => Ok(st),
            Some(_) => Err(object_store::Error::NotFound {
                path: location.to_string(),
                source: format!("WebHDFS: {path} is a directory, not a file").into(),
            }),
            None => Err(object_store::Error::NotFound {
                path: location.to_string(),
                source: format!("WebHDFS: {path} does not exist").into(),
            }),
        }
    }

    /// `LISTSTATUS`; `None` when the path does not exist.
    async fn list_status(&self, path: &str) -> object_store::Result<Option<Vec<FileStatus>>> {
        match self
            .nn_json::<ListStatusBody>(Method::GET, "LISTSTATUS", path, None, &[])
            .await
        {
            Ok(b) => Ok(Some(b.statuses.list)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Entries of the directory `dir`: `None` if it is missing or is a file.
    async fn list_dir(&self, dir: &Path) -> object_store::Result<Option<Vec<FileStatus>>> {
        let Some(entries) = self.list_status(&hdfs_path(dir)).await? else {
            return Ok(None);
        };
        // LISTSTATUS on a file answers with the file itself, with an empty pathSuffix.
        if entries.len() == 1 && entries[0].path_suffix.is_empty() && !entries[0].is_dir() {
            return Ok(None);
        }
        Ok(Some(entries))
    }

    /// Two-step data upload: `method op` on the NameNode, then the body to the DataNode.
    async fn upload(
        &self,
        method: Method,
        op: &str,
        path: &str,
        params: &[(&str, &str)],
        data: Upload,
    ) -> object_store::Result<()> {
        let call = Call {
            method: &method,
            op,
            path,
            dest: None,
        };
        let req = self
            .inner
            .client
            .request(method.clone(), self.nn_url(path, op, params));
        let resp = self.send(req, call, Target::NameNode).await?;
        let resp = self.check(resp, call).await?;
        let location = self.redirect_location(resp, call).await?;
        let req = self
            .inner
            .client
            .request(method.clone(), &location)
            .header(CONTENT_TYPE, "application/octet-stream")
            .header(CONTENT_LENGTH, data.len)
            .body(data.body);
        let resp = self.send(req, call, Target::DataNode(&location)).await?;
        let resp = self.check(resp, call).await?;
        if !resp.status().is_success() {
            return Err(generic(format!(
                "WebHDFS DataNode at {} answered {} with HTTP {}",
                url_authority(&location),
                call.describe(),
                resp.status()
            )));
        }
        Ok(())
    }

    /// `CREATE` (never overwriting) `path` with `data`; parent directories are created.
    async fn create(&self, path: &str, data: Upload) -> object_store::Result<()> {
        self.upload(Method::PUT, "CREATE", path, &[("overwrite", "false")], data)
            .await
    }

    /// `APPEND` `data` to the existing file `path`.
    async fn append(&self, path: &str, data: Upload) -> object_store::Result<()> {
        self.upload(Method::POST, "APPEND", path, &[], data).await
    }

    /// `RENAME` with `renameoptions` (the `rename2` API, which throws instead of returning
    /// `false`): `OVERWRITE` replaces a file at `to`, `NONE` fails with `AlreadyExists`.
    async fn rename_path(&self, from: &str, to: &str, overwrite: bool) -> object_store::Result<()> {
        let option = if overwrite { "OVERWRITE" } else { "NONE" };
        let method = Method::PUT;
        let call = Call {
            method: &method,
            op: "RENAME",
            path: from,
            dest: Some(to),
        };
        let url = self.nn_url(
            from,
            "RENAME",
            &[("destination", to), ("renameoptions", option)],
        );
        let resp = self
            .send(self.inner.client.put(url), call, Target::NameNode)
            .await?;
        let resp = self.check(resp, call).await?;
        let status = resp.status();
        let body = self.read_body(resp, call).await?;
        if !status.is_success() {
            return Err(generic(format!(
                "WebHDFS {} answered HTTP {status} unexpectedly",
                call.describe()
            )));
        }
        // rename2 answers with an empty body; a `{"boolean": false}` would mean it was not done.
        if let Ok(BooleanBody { boolean: false }) = serde_json::from_slice(&body) {
            return Err(generic(format!(
                "WebHDFS {} returned false",
                call.describe()
            )));
        }
        Ok(())
    }

    /// `DELETE` (non-recursive); `Ok(false)` when nothing was there.
    async fn delete_path(&self, path: &str) -> object_store::Result<bool> {
        let b: BooleanBody = self
            .nn_json(
                Method::DELETE,
                "DELETE",
                path,
                None,
                &[("recursive", "false")],
            )
            .await?;
        Ok(b.boolean)
    }

    /// `MKDIRS` (like `mkdir -p`).
    async fn mkdirs(&self, path: &str) -> object_store::Result<()> {
        let b: BooleanBody = self.nn_json(Method::PUT, "MKDIRS", path, None, &[]).await?;
        if !b.boolean {
            return Err(generic(format!(
                "WebHDFS PUT op=MKDIRS {path} returned false"
            )));
        }
        Ok(())
    }

    /// `OPEN` `range` of `path`, following the redirect to a DataNode; the body streams, and the
    /// stream fails unless it carries exactly `range.end - range.start` bytes.
    async fn open(
        &self,
        path: &str,
        range: Range<u64>,
    ) -> object_store::Result<BoxStream<'static, object_store::Result<Bytes>>> {
        let method = Method::GET;
        let call = Call {
            method: &method,
            op: "OPEN",
            path,
            dest: None,
        };
        let len = range.end - range.start;
        let offset = range.start.to_string();
        let length = len.to_string();
        let url = self.nn_url(path, "OPEN", &[("offset", &offset), ("length", &length)]);
        let resp = self
            .send(self.inner.client.get(url), call, Target::NameNode)
            .await?;
        let resp = self.check(resp, call).await?;
        // A server that does not redirect (an HttpFS gateway) sends the data directly.
        let (resp, source) = if resp.status().is_redirection() {
            let location = self.redirect_location(resp, call).await?;
            let req = self.inner.client.get(&location);
            let resp = self.send(req, call, Target::DataNode(&location)).await?;
            let resp = self.check(resp, call).await?;
            (resp, format!("DataNode at {}", url_authority(&location)))
        } else {
            (resp, format!("NameNode at {}", self.authority()))
        };
        if !resp.status().is_success() {
            return Err(generic(format!(
                "WebHDFS {} answered HTTP {} unexpectedly",
                call.describe(),
                resp.status()
            )));
        }
        let context = format!("reading {} ({}) from the WebHDFS {source}", path, call.op);
        Ok(exact_length_stream(resp, len, context))
    }

    /// Write `data` to `location` atomically: a temporary sibling, then a rename onto it
    /// (replacing a file there when `overwrite`, else failing with `AlreadyExists`). The
    /// temporary file is removed on any failure.
    async fn write_atomic(
        &self,
        location: &Path,
        data: Upload,
        overwrite: bool,
    ) -> object_store::Result<()> {
        let target = hdfs_path(location);
        let tmp = temp_sibling(location)?;
        let result = async {
            self.create(&tmp, data).await?;
            self.rename_path(&tmp, &target, overwrite).await
        }
        .await;
        if let Err(e) = result {
            // Best effort: the temp file may not even exist.
            let _ = self.delete_path(&tmp).await;
            return Err(e);
        }
        Ok(())
    }

    /// `AlreadyExists` when anything (file or directory) is at `location`.
    async fn fail_if_exists(&self, location: &Path) -> object_store::Result<()> {
        let path = hdfs_path(location);
        if self.status(&path).await?.is_some() {
            return Err(object_store::Error::AlreadyExists {
                path: location.to_string(),
                source: format!("WebHDFS: {path} already exists").into(),
            });
        }
        Ok(())
    }
}

/// Stream `resp`'s body, failing (instead of ending quietly) when it is shorter or longer than
/// `expected` bytes.
fn exact_length_stream(
    resp: Response,
    expected: u64,
    context: String,
) -> BoxStream<'static, object_store::Result<Bytes>> {
    let inner = resp.bytes_stream().boxed();
    stream::unfold(Some((inner, 0u64)), move |state| {
        let context = context.clone();
        async move {
            let (mut inner, seen) = state?;
            match inner.next().await {
                Some(Ok(chunk)) => {
                    let seen = seen + chunk.len() as u64;
                    if seen > expected {
                        Some((
                            Err(generic(format!(
                                "{context}: got more than the expected {expected} bytes"
                            ))),
                            None,
                        ))
                    } else {
                        Some((Ok(chunk), Some((inner, seen))))
                    }
                }
                Some(Err(e)) => Some((Err(transport(context, e)), None)),
                None if seen == expected => None,
                None => Some((
                    Err(generic(format!(
                        "{context}: body ended after {seen} of {expected} bytes"
                    ))),
                    None,
                )),
            }
        }
    })
    .boxed()
}

fn empty_stream() -> BoxStream<'static, object_store::Result<Bytes>> {
    stream::empty().boxed()
}

// ---------------------------------------------------------------------------------------------
// ObjectStore
// ---------------------------------------------------------------------------------------------

#[async_trait]
impl ObjectStore for WebHdfs {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        let overwrite = match opts.mode {
            PutMode::Overwrite => true,
            PutMode::Create => false,
            PutMode::Update(_) => {
                return Err(object_store::Error::NotImplemented {
                    operation: "put_opts with PutMode::Update".to_string(),
                    implementer: self.to_string(),
                });
            }
        };
        if !overwrite {
            self.fail_if_exists(location).await?;
        }
        self.write_atomic(location, Upload::from_payload(payload), overwrite)
            .await?;
        Ok(PutResult {
            e_tag: None,
            version: None,
        })
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        _opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        let tmp = temp_sibling(location)?;
        let (tx, _rx) = watch::channel(PartsState::default());
        Ok(Box::new(WebHdfsUpload {
            store: self.clone(),
            target: hdfs_path(location),
            tmp,
            issued: 0,
            state: Arc::new(tx),
        }))
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        if options.version.is_some() {
            return Err(object_store::Error::NotSupported {
                source: "WebHDFS has no object versions".into(),
            });
        }
        let status = self.file_status(location).await?;
        let meta = status.meta(location.clone());
        options.check_preconditions(&meta)?;
        let range = match &options.range {
            Some(r) => r
                .as_range(meta.size)
                .map_err(|e| object_store::Error::Generic {
                    store: STORE,
                    source: Box::new(e),
                })?,
            None => 0..meta.size,
        };
        let payload = if options.head || range.is_empty() {
            empty_stream()
        } else {
            self.open(&hdfs_path(location), range.clone()).await?
        };
        Ok(GetResult {
            payload: GetResultPayload::Stream(payload),
            meta,
            range,
            attributes: Attributes::default(),
        })
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        let store = self.clone();
        locations
            .map(move |location| {
                let store = store.clone();
                async move {
                    let location = location?;
                    // `false` means nothing was there, which is fine.
                    store.delete_path(&hdfs_path(&location)).await?;
                    Ok(location)
                }
            })
            .buffered(DELETE_CONCURRENCY)
            .boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        let store = self.clone();
        let queue = VecDeque::from([prefix.cloned().unwrap_or_default()]);
        stream::try_unfold((store, queue), |(store, mut queue)| async move {
            let Some(dir) = queue.pop_front() else {
                return Ok::<_, object_store::Error>(None);
            };
            let mut files = Vec::new();
            // A missing directory (the prefix, or one deleted meanwhile) lists as empty.
            if let Some(entries) = store.list_dir(&dir).await? {
                for entry in entries {
                    let child = child_path(&dir, &entry.path_suffix)?;
                    if entry.is_dir() {
                        queue.push_back(child);
                    } else {
                        files.push(entry.meta(child));
                    }
                }
            }
            Ok(Some((files, (store, queue))))
        })
        .map_ok(|files| stream::iter(files.into_iter().map(Ok)))
        .try_flatten()
        .boxed()
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        let dir = prefix.cloned().unwrap_or_default();
        let mut result = ListResult {
            common_prefixes: Vec::new(),
            objects: Vec::new(),
        };
        if let Some(entries) = self.list_dir(&dir).await? {
            for entry in entries {
                let child = child_path(&dir, &entry.path_suffix)?;
                if entry.is_dir() {
                    result.common_prefixes.push(child);
                } else {
                    result.objects.push(entry.meta(child));
                }
            }
        }
        Ok(result)
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        let overwrite = match options.mode {
            CopyMode::Overwrite => true,
            CopyMode::Create => false,
        };
        let status = self.file_status(from).await?;
        if !overwrite {
            self.fail_if_exists(to).await?;
        }
        // Stream the source straight into the new file: nothing is buffered whole.
        let body = if status.length == 0 {
            reqwest::Body::from(Bytes::new())
        } else {
            reqwest::Body::wrap_stream(self.open(&hdfs_path(from), 0..status.length).await?)
        };
        let data = Upload {
            body,
            len: status.length,
        };
        self.write_atomic(to, data, overwrite).await
    }

    async fn rename_opts(
        &self,
        from: &Path,
        to: &Path,
        options: RenameOptions,
    ) -> object_store::Result<()> {
        let overwrite = match options.target_mode {
            RenameTargetMode::Overwrite => true,
            RenameTargetMode::Create => false,
        };
        let src = hdfs_path(from);
        let dst = hdfs_path(to);
        if let Some((parent, _)) = split_parent(&dst)
            && parent != "/"
        {
            self.mkdirs(parent).await?;
        }
        self.rename_path(&src, &dst, overwrite).await
    }
}

// ---------------------------------------------------------------------------------------------
// Multipart upload
// ---------------------------------------------------------------------------------------------

/// Progress of a multipart upload's parts, which must reach HDFS in order.
#[derive(Debug, Default, Clone, Copy)]
struct PartsState {
    /// Sequence number of the part whose turn it is to be written.
    next: u64,
    /// Whether the temporary file exists (part 0 was written).
    created: bool,
    /// A part failed, was dropped unwritten, or the upload was aborted: nothing more may be
    /// written.
    failed: bool,
}

/// A [`MultipartUpload`] that streams parts into a temporary sibling (`CREATE`, then
/// `APPEND`s, strictly in the order of [`MultipartUpload::put_part`] calls) and renames it onto
/// the target on [`MultipartUpload::complete`].
///
/// Dropping it without `complete` or `abort` leaves the hidden temporary file behind.
#[derive(Debug)]
struct WebHdfsUpload {
    store: WebHdfs,
    target: String,
    tmp: String,
    /// Number of parts handed out by `put_part`.
    issued: u64,
    state: Arc<watch::Sender<PartsState>>,
}

/// Marks the upload failed if a part's future is dropped before the part was written, so the
/// parts after it fail instead of waiting forever (or writing out of order).
struct PartGuard {
    state: Arc<watch::Sender<PartsState>>,
    done: bool,
}

impl Drop for PartGuard {
    fn drop(&mut self) {
        if !self.done {
            self.state.send_modify(|s| s.failed = true);
        }
    }
}

impl WebHdfsUpload {
    fn failed_error(&self) -> object_store::Error {
        upload_failed_error(&self.target)
    }
}

fn upload_failed_error(target: &str) -> object_store::Error {
    generic(format!(
        "WebHDFS multipart upload to {target} failed earlier (a part failed, was dropped, or \
         the upload was aborted)"
    ))
}

#[async_trait]
impl MultipartUpload for WebHdfsUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        let seq = self.issued;
        self.issued += 1;
        let store = self.store.clone();
        let tmp = self.tmp.clone();
        let target = self.target.clone();
        let mut guard = PartGuard {
            state: Arc::clone(&self.state),
            done: false,
        };
        Box::pin(async move {
            let mut rx = guard.state.subscribe();
            let state = match rx.wait_for(|s| s.failed || s.next == seq).await {
                Ok(s) => *s,
                // Unreachable while `guard` holds the sender.
                Err(_) => return Err(upload_failed_error(&target)),
            };
            if state.failed {
                return Err(upload_failed_error(&target));
            }
            let result = if !state.created {
                store.create(&tmp, Upload::from_payload(data)).await
            } else if data.content_length() == 0 {
                Ok(())
            } else {
                store.append(&tmp, Upload::from_payload(data)).await
            };
            guard.done = true;
            let ok = result.is_ok();
            guard.state.send_modify(|s| {
                s.next += 1;
                if ok {
                    s.created = true;
                } else {
                    s.failed = true;
                }
            });
            result
        })
    }

    async fn complete(&mut self) -> object_store::Result<PutResult> {
        let state = *self.state.borrow();
        if state.failed {
            // Best effort: a part may have created the temp file before things went wrong.
            let _ = self.store.delete_path(&self.tmp).await;
            return Err(self.failed_error());
        }
        if state.next != self.issued {
            return Err(generic(format!(
                "WebHDFS multipart upload to {}: complete() called before all {} parts were \
                 written ({} done)",
                self.target, self.issued, state.next
            )));
        }
        let result = async {
            if !state.created {
                // No parts: the object is empty.
                self.store
                    .create(&self.tmp, Upload::from_payload(PutPayload::new()))
                    .await?;
            }
            self.store.rename_path(&self.tmp, &self.target, true).await
        }
        .await;
        match result {
            Ok(()) => {
                // Later calls must not touch the (now renamed) temp file again.
                self.state.send_modify(|s| s.failed = true);
                Ok(PutResult {
                    e_tag: None,
                    version: None,
                })
            }
            Err(e) => {
                self.state.send_modify(|s| s.failed = true);
                let _ = self.store.delete_path(&self.tmp).await;
                Err(e)
            }
        }
    }

    async fn abort(&mut self) -> object_store::Result<()> {
        self.state.send_modify(|s| s.failed = true);
        self.store.delete_path(&self.tmp).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::{GetRange, ObjectStoreExt};

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime")
    }

    /// Deterministic, non-repeating-looking test data.
    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| ((i as u64 * 31 + u64::from(seed) * 7) % 251) as u8)
            .collect()
    }

    #[test]
    fn paths_and_urls() {
        assert_eq!(hdfs_path(&Path::from("a/b")), "/a/b");
        assert_eq!(hdfs_path(&Path::default()), "/");
        assert_eq!(encode_path("/a b/c;d%e#f?g"), "/a%20b/c%3Bd%25e%23f%3Fg");
        assert_eq!(encode_path("/"), "/");
        assert_eq!(encode_path("/x-y_z.~/é"), "/x-y_z.~/%C3%A9");
        assert_eq!(split_parent("/a/b"), Some(("/a", "b")));
        assert_eq!(split_parent("/a"), Some(("/", "a")));
        assert_eq!(split_parent("/"), None);
        let tmp = temp_sibling(&Path::from("dir/file.bin")).unwrap();
        assert!(tmp.starts_with("/dir/.file.bin.tmp."), "{tmp}");
        assert_ne!(tmp, temp_sibling(&Path::from("dir/file.bin")).unwrap());
        assert!(temp_sibling(&Path::default()).is_err());
        assert_eq!(
            child_path(&Path::from("a"), "x%y").unwrap().as_ref(),
            "a/x%y"
        );
        assert_eq!(child_path(&Path::default(), "x").unwrap().as_ref(), "x");

        let store = WebHdfs::new("nn.example:9870", Some("alice".into())).unwrap();
        assert_eq!(store.to_string(), "WebHdfs(nn.example:9870)");
        assert_eq!(
            store.nn_url("/a b", "RENAME", &[("destination", "/c/d")]),
            "http://nn.example:9870/webhdfs/v1/a%20b?op=RENAME&user.name=alice\
             &destination=%2Fc%2Fd"
        );
        for bad in ["", "http://x:1", "x:1/path", "a b:1"] {
            assert!(WebHdfs::new(bad, None).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn remote_exceptions_are_mapped() {
        let method = Method::GET;
        let call = Call {
            method: &method,
            op: "GETFILESTATUS",
            path: "/x/y",
            dest: None,
        };
        let body = br#"{"RemoteException":{"exception":"FileNotFoundException","javaClassName":"java.io.FileNotFoundException","message":"File does not exist: /x/y"}}"#;
        match remote_error(call, StatusCode::NOT_FOUND, body) {
            object_store::Error::NotFound { path, source } => {
                assert_eq!(path, "x/y");
                let msg = source.to_string();
                assert!(msg.contains("GET op=GETFILESTATUS /x/y"), "{msg}");
                assert!(msg.contains("File does not exist"), "{msg}");
            }
            other => panic!("{other:?}"),
        }
        let rename = Call {
            method: &method,
            op: "RENAME",
            path: "/a",
            dest: Some("/b"),
        };
        let body = br#"{"RemoteException":{"exception":"FileAlreadyExistsException","javaClassName":"org.apache.hadoop.fs.FileAlreadyExistsException","message":"rename destination /b already exists."}}"#;
        match remote_error(rename, StatusCode::FORBIDDEN, body) {
            object_store::Error::AlreadyExists { path, .. } => assert_eq!(path, "b"),
            other => panic!("{other:?}"),
        }
        // A 404 that is not a FileNotFoundException (e.g. WebHDFS disabled) is not "missing".
        let err = remote_error(call, StatusCode::NOT_FOUND, b"<html>Not Found</html>");
        assert!(
            matches!(err, object_store::Error::Generic { .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("HTTP 404"), "{err}");
        // Stack traces in remote messages are cut off.
        let body = br#"{"RemoteException":{"exception":"IOException","javaClassName":"java.io.IOException","message":"boom\n\tat org.apache.Foo.bar(Foo.java:1)\n"}}"#;
        let msg = remote_error(call, StatusCode::INTERNAL_SERVER_ERROR, body).to_string();
        assert!(msg.ends_with("IOException: boom"), "{msg}");
    }

    #[test]
    fn unreachable_namenode_names_the_address() {
        let store = WebHdfs::new("127.0.0.1:1", Some("tester".into())).unwrap();
        runtime().block_on(async {
            let err = store.head(&Path::from("x")).await.unwrap_err();
            let msg = err.to_string();
            assert!(
                matches!(err, object_store::Error::Generic { .. }),
                "{err:?}"
            );
            assert!(msg.contains("cannot reach WebHDFS at 127.0.0.1:1"), "{msg}");
            assert!(msg.contains("GETFILESTATUS"), "{msg}");
            // The reqwest error stays reachable as the source.
            let object_store::Error::Generic { source, .. } = &err else {
                unreachable!()
            };
            assert!(
                std::error::Error::source(source.as_ref())
                    .is_some_and(|s| s.is::<reqwest::Error>()),
                "{source:?}"
            );

            let err = store.list(None).try_collect::<Vec<_>>().await.unwrap_err();
            assert!(err.to_string().contains("127.0.0.1:1"), "{err}");
            let err = store.put(&Path::from("a/b"), "x".into()).await.unwrap_err();
            assert!(err.to_string().contains("127.0.0.1:1"), "{err}");
        });
    }

    #[test]
    fn against_minidfs() {
        let Some(dfs) = tusk_testkit::MiniDfs::start(1) else {
            return;
        };
        let store = WebHdfs::new(&format!("127.0.0.1:{}", dfs.http_port), None).unwrap();
        runtime().block_on(checks(&store));
        drop(dfs);
    }

    async fn assert_not_found<T: fmt::Debug>(r: object_store::Result<T>, what: &str) {
        match r {
            Err(object_store::Error::NotFound { .. }) => {}
            other => panic!("{what}: expected NotFound, got {other:?}"),
        }
    }

    async fn bytes_of(store: &WebHdfs, path: &str) -> Vec<u8> {
        store
            .get(&Path::from(path))
            .await
            .unwrap_or_else(|e| panic!("get {path}: {e}"))
            .bytes()
            .await
            .unwrap_or_else(|e| panic!("read {path}: {e}"))
            .to_vec()
    }

    async fn all_files(store: &WebHdfs, prefix: &str) -> Vec<(String, u64)> {
        let mut v: Vec<_> = store
            .list(Some(&Path::from(prefix)))
            .map_ok(|m| (m.location.to_string(), m.size))
            .try_collect()
            .await
            .unwrap();
        v.sort();
        v
    }

    async fn checks(store: &WebHdfs) {
        let started = Utc::now();

        // --- put / get roundtrip ---------------------------------------------------------
        let a = Path::from("t/a.txt");
        store.put(&a, "hello world".into()).await.unwrap();
        let got = store.get(&a).await.unwrap();
        assert!(matches!(got.payload, GetResultPayload::Stream(_)));
        assert_eq!(got.meta.size, 11);
        assert_eq!(got.range, 0..11);
        assert_eq!(got.meta.location, a);
        let age = got.meta.last_modified - started;
        assert!(age.num_seconds().abs() < 300, "last_modified {age:?} off");
        assert_eq!(&got.bytes().await.unwrap()[..], b"hello world");

        // empty file
        store
            .put(&Path::from("t/empty"), PutPayload::new())
            .await
            .unwrap();
        let got = store.get(&Path::from("t/empty")).await.unwrap();
        assert_eq!((got.meta.size, got.range.clone()), (0, 0..0));
        assert!(got.bytes().await.unwrap().is_empty());

        // 5 MiB (several 1 MiB HDFS blocks), one chunk
        let big = pattern(5 * 1024 * 1024, 1);
        store
            .put(&Path::from("t/big.bin"), big.clone().into())
            .await
            .unwrap();
        assert_eq!(bytes_of(store, "t/big.bin").await, big);

        // a payload of several chunks (streamed with an explicit Content-Length)
        let chunks: Vec<Bytes> = (0..5u8).map(|i| Bytes::from(pattern(70_000, i))).collect();
        let joined: Vec<u8> = chunks.iter().flat_map(|c| c.to_vec()).collect();
        store
            .put(&Path::from("t/chunks.bin"), chunks.into_iter().collect())
            .await
            .unwrap();
        assert_eq!(bytes_of(store, "t/chunks.bin").await, joined);

        // overwrite
        store.put(&a, "hello again".into()).await.unwrap();
        assert_eq!(bytes_of(store, "t/a.txt").await, b"hello again");

        // awkward names round-trip through put, get and list
        let odd = Path::parse("t/odd dir/we;ird%name#1?.txt").unwrap();
        store.put(&odd, "odd".into()).await.unwrap();
        assert_eq!(
            &store.get(&odd).await.unwrap().bytes().await.unwrap()[..],
            b"odd"
        );
        let listed: Vec<ObjectMeta> = store
            .list(Some(&Path::parse("t/odd dir").unwrap()))
            .try_collect()
            .await
            .unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].location, odd);

        // --- ranged gets -----------------------------------------------------------------
        let bigp = Path::from("t/big.bin");
        let r = store.get_range(&bigp, 1_000_000..3_500_000).await.unwrap();
        assert_eq!(&r[..], &big[1_000_000..3_500_000]);
        let n = big.len() as u64;
        let got = store
            .get_opts(
                &bigp,
                GetOptions::new().with_range(Some(GetRange::Offset(n - 10))),
            )
            .await
            .unwrap();
        assert_eq!(got.range, n - 10..n);
        assert_eq!(&got.bytes().await.unwrap()[..], &big[big.len() - 10..]);
        let got = store
            .get_opts(
                &bigp,
                GetOptions::new().with_range(Some(GetRange::Suffix(100))),
            )
            .await
            .unwrap();
        assert_eq!(got.range, n - 100..n);
        assert_eq!(&got.bytes().await.unwrap()[..], &big[big.len() - 100..]);
        let got = store
            .get_opts(
                &a,
                GetOptions::new().with_range(Some(GetRange::Suffix(1000))),
            )
            .await
            .unwrap();
        assert_eq!(got.range, 0..11);
        assert_eq!(&got.bytes().await.unwrap()[..], b"hello again");
        // a bounded range past the end is cut at the end
        let got = store
            .get_opts(&a, GetOptions::new().with_range(Some(6..100)))
            .await
            .unwrap();
        assert_eq!(got.range, 6..11);
        assert_eq!(&got.bytes().await.unwrap()[..], b"again");
        assert!(store.get_range(&a, 20..30).await.is_err());
        let parts = store
            .get_ranges(&bigp, &[0..10, 2_000_000..2_000_100, n - 1..n])
            .await
            .unwrap();
        assert_eq!(&parts[0][..], &big[..10]);
        assert_eq!(&parts[1][..], &big[2_000_000..2_000_100]);
        assert_eq!(&parts[2][..], &big[big.len() - 1..]);

        // --- head and preconditions --------------------------------------------------------
        let meta = store.head(&bigp).await.unwrap();
        assert_eq!(meta.size, n);
        assert!(meta.e_tag.is_some());
        assert_eq!(
            store.head(&bigp).await.unwrap().e_tag,
            meta.e_tag,
            "stable e_tag"
        );
        let got = store
            .get_opts(&bigp, GetOptions::new().with_head(true))
            .await
            .unwrap();
        assert_eq!(got.meta, meta);
        let err = store
            .get_opts(
                &bigp,
                GetOptions::new().with_if_none_match(meta.e_tag.clone()),
            )
            .await
            .unwrap_err();
        assert!(
            matches!(err, object_store::Error::NotModified { .. }),
            "{err:?}"
        );
        let err = store
            .get_opts(&bigp, GetOptions::new().with_if_match(Some("nope")))
            .await
            .unwrap_err();
        assert!(
            matches!(err, object_store::Error::Precondition { .. }),
            "{err:?}"
        );

        // --- not found ---------------------------------------------------------------------
        let missing = Path::from("t/nope/missing.txt");
        assert_not_found(store.get(&missing).await, "get missing").await;
        assert_not_found(store.head(&missing).await, "head missing").await;
        assert_not_found(store.get_range(&missing, 0..1).await, "range missing").await;
        assert_not_found(store.head(&Path::from("t")).await, "head of a directory").await;

        // --- PutMode::Create ---------------------------------------------------------------
        let err = store
            .put_opts(&a, "clobber".into(), PutMode::Create.into())
            .await
            .unwrap_err();
        assert!(
            matches!(err, object_store::Error::AlreadyExists { .. }),
            "{err:?}"
        );
        assert_eq!(bytes_of(store, "t/a.txt").await, b"hello again");
        store
            .put_opts(
                &Path::from("t/new.txt"),
                "new".into(),
                PutMode::Create.into(),
            )
            .await
            .unwrap();
        assert_eq!(bytes_of(store, "t/new.txt").await, b"new");
        let err = store
            .put_opts(
                &Path::from("t/new2.txt"),
                "x".into(),
                PutMode::Update(object_store::UpdateVersion {
                    e_tag: None,
                    version: None,
                })
                .into(),
            )
            .await
            .unwrap_err();
        assert!(
            matches!(err, object_store::Error::NotImplemented { .. }),
            "{err:?}"
        );

        // a remote error that is neither missing nor existing names op and path
        let err = store
            .put(&Path::from("t/a.txt/child"), "x".into())
            .await
            .unwrap_err();
        let msg = err.to_string();
        assert!(
            matches!(err, object_store::Error::Generic { .. }),
            "{err:?}"
        );
        assert!(
            msg.contains("op=CREATE") && msg.contains("/t/a.txt/"),
            "{msg}"
        );

        // --- multipart -------------------------------------------------------------------
        let mp = Path::from("t/mp/big.bin");
        let parts: Vec<Vec<u8>> = vec![
            pattern(1024 * 1024, 2),
            pattern(2 * 1024 * 1024 + 17, 3),
            pattern(10, 4),
            Vec::new(),
            pattern(300_000, 5),
        ];
        let mut up = store.put_multipart(&mp).await.unwrap();
        // Issue all parts first, then poll them concurrently in reverse: order must hold.
        let futs: Vec<UploadPart> = parts
            .iter()
            .map(|p| up.put_part(p.clone().into()))
            .collect();
        futures::future::try_join_all(futs.into_iter().rev())
            .await
            .unwrap();
        assert_not_found(store.head(&mp).await, "multipart target before complete").await;
        up.complete().await.unwrap();
        assert_eq!(bytes_of(store, "t/mp/big.bin").await, parts.concat());
        assert_eq!(
            all_files(store, "t/mp").await,
            vec![("t/mp/big.bin".to_string(), parts.concat().len() as u64)]
        );

        // multipart onto an existing file replaces it; zero parts make an empty file
        let mut up = store.put_multipart(&mp).await.unwrap();
        up.put_part("replaced".into()).await.unwrap();
        up.complete().await.unwrap();
        assert_eq!(bytes_of(store, "t/mp/big.bin").await, b"replaced");
        let mut up = store.put_multipart(&Path::from("t/mp/none")).await.unwrap();
        up.complete().await.unwrap();
        assert_eq!(store.head(&Path::from("t/mp/none")).await.unwrap().size, 0);

        // abort leaves nothing behind
        let aborted = Path::from("t/mp/aborted.bin");
        let mut up = store.put_multipart(&aborted).await.unwrap();
        up.put_part(pattern(1000, 6).into()).await.unwrap();
        up.put_part(pattern(1000, 7).into()).await.unwrap();
        up.abort().await.unwrap();
        assert_not_found(store.head(&aborted).await, "aborted target").await;
        assert_eq!(
            all_files(store, "t/mp").await,
            vec![
                ("t/mp/big.bin".to_string(), 8),
                ("t/mp/none".to_string(), 0)
            ]
        );

        // a dropped, never-polled part fails the parts after it and complete()
        let mut up = store
            .put_multipart(&Path::from("t/mp/dropped"))
            .await
            .unwrap();
        drop(up.put_part("a".into()));
        assert!(up.put_part("b".into()).await.is_err());
        assert!(up.complete().await.is_err());
        up.abort().await.unwrap();
        assert_not_found(store.head(&Path::from("t/mp/dropped")).await, "dropped").await;

        // --- list ----------------------------------------------------------------------
        for (p, len) in [
            ("t/l/a", 1usize),
            ("t/l/b/c", 22),
            ("t/l/b/d/e", 333),
            ("t/l/x", 0),
            ("t/lx/not-under-l", 5),
        ] {
            store
                .put(&Path::from(p), pattern(len, 9).into())
                .await
                .unwrap();
        }
        store.inner_mkdirs_for_test("/t/l/emptydir").await;
        assert_eq!(
            all_files(store, "t/l").await,
            vec![
                ("t/l/a".to_string(), 1),
                ("t/l/b/c".to_string(), 22),
                ("t/l/b/d/e".to_string(), 333),
                ("t/l/x".to_string(), 0),
            ]
        );
        assert!(all_files(store, "t/missing").await.is_empty());
        assert!(
            all_files(store, "t/l/a").await.is_empty(),
            "a file is no prefix"
        );
        let everything: Vec<ObjectMeta> = store.list(None).try_collect().await.unwrap();
        assert!(
            everything
                .iter()
                .any(|m| m.location.as_ref() == "t/l/b/d/e")
        );

        let lr = store
            .list_with_delimiter(Some(&Path::from("t/l")))
            .await
            .unwrap();
        let mut prefixes: Vec<String> = lr.common_prefixes.iter().map(|p| p.to_string()).collect();
        prefixes.sort();
        assert_eq!(prefixes, vec!["t/l/b", "t/l/emptydir"]);
        let mut objects: Vec<(String, u64)> = lr
            .objects
            .iter()
            .map(|m| (m.location.to_string(), m.size))
            .collect();
        objects.sort();
        assert_eq!(
            objects,
            vec![("t/l/a".to_string(), 1), ("t/l/x".to_string(), 0)]
        );
        let lr = store
            .list_with_delimiter(Some(&Path::from("t/missing")))
            .await
            .unwrap();
        assert!(lr.common_prefixes.is_empty() && lr.objects.is_empty());
        let lr = store.list_with_delimiter(None).await.unwrap();
        assert!(lr.common_prefixes.contains(&Path::from("t")), "{lr:?}");

        // --- delete ---------------------------------------------------------------------
        store.delete(&Path::from("t/l/x")).await.unwrap();
        assert_not_found(store.head(&Path::from("t/l/x")).await, "deleted").await;
        store.delete(&Path::from("t/l/x")).await.unwrap();
        store.delete(&missing).await.unwrap();
        let deleted: Vec<Path> = store
            .delete_stream(
                stream::iter(["t/l/a", "t/l/b/c", "t/never"].map(|p| Ok(Path::from(p)))).boxed(),
            )
            .try_collect()
            .await
            .unwrap();
        assert_eq!(deleted.len(), 3);
        assert_eq!(
            all_files(store, "t/l").await,
            vec![("t/l/b/d/e".to_string(), 333)]
        );
        // a non-empty directory is not deleted (non-recursive)
        let err = store.delete(&Path::from("t/l")).await.unwrap_err();
        assert!(err.to_string().contains("op=DELETE"), "{err}");
        // writes that fail at the final rename (target is a non-empty directory) clean up
        let err = store.put(&Path::from("t/l"), "x".into()).await.unwrap_err();
        assert!(err.to_string().contains("op=RENAME"), "{err}");
        let mut up = store.put_multipart(&Path::from("t/l")).await.unwrap();
        up.put_part("x".into()).await.unwrap();
        let err = up.complete().await.unwrap_err();
        assert!(err.to_string().contains("op=RENAME"), "{err}");
        let lr = store
            .list_with_delimiter(Some(&Path::from("t")))
            .await
            .unwrap();
        assert!(
            lr.objects
                .iter()
                .all(|m| !m.location.as_ref().contains(".tmp.")),
            "{lr:?}"
        );

        // --- rename ---------------------------------------------------------------------
        let src = Path::from("t/r/src.txt");
        let dst = Path::from("t/r2/deep/er/dst.txt");
        store.put(&src, "renamed".into()).await.unwrap();
        store.rename(&src, &dst).await.unwrap();
        assert_not_found(store.head(&src).await, "renamed source").await;
        assert_eq!(bytes_of(store, "t/r2/deep/er/dst.txt").await, b"renamed");
        store.put(&src, "second".into()).await.unwrap();
        let err = store.rename_if_not_exists(&src, &dst).await.unwrap_err();
        assert!(
            matches!(err, object_store::Error::AlreadyExists { .. }),
            "{err:?}"
        );
        assert_eq!(bytes_of(store, "t/r/src.txt").await, b"second");
        store.rename(&src, &dst).await.unwrap();
        assert_eq!(bytes_of(store, "t/r2/deep/er/dst.txt").await, b"second");
        assert_not_found(store.rename(&src, &dst).await, "rename missing").await;
        store
            .rename(&Path::from("t/r2/deep/er/dst.txt"), &Path::from("top.txt"))
            .await
            .unwrap();
        assert_eq!(bytes_of(store, "top.txt").await, b"second");

        // --- copy -----------------------------------------------------------------------
        store
            .copy(&bigp, &Path::from("t/c/big-copy.bin"))
            .await
            .unwrap();
        assert_eq!(bytes_of(store, "t/c/big-copy.bin").await, big);
        assert_eq!(bytes_of(store, "t/big.bin").await, big, "source kept");
        let err = store
            .copy_if_not_exists(&a, &Path::from("t/c/big-copy.bin"))
            .await
            .unwrap_err();
        assert!(
            matches!(err, object_store::Error::AlreadyExists { .. }),
            "{err:?}"
        );
        assert_eq!(bytes_of(store, "t/c/big-copy.bin").await, big);
        store
            .copy(&a, &Path::from("t/c/big-copy.bin"))
            .await
            .unwrap();
        assert_eq!(bytes_of(store, "t/c/big-copy.bin").await, b"hello again");
        store
            .copy_if_not_exists(&Path::from("t/empty"), &Path::from("t/c/empty"))
            .await
            .unwrap();
        assert_eq!(store.head(&Path::from("t/c/empty")).await.unwrap().size, 0);
        assert_not_found(
            store.copy(&missing, &Path::from("t/c/x")).await,
            "copy missing",
        )
        .await;

        // --- no temporaries left anywhere ---------------------------------------------------
        let everything: Vec<ObjectMeta> = store.list(None).try_collect().await.unwrap();
        let temps: Vec<String> = everything
            .iter()
            .map(|m| m.location.to_string())
            .filter(|p| p.contains(".tmp."))
            .collect();
        assert!(temps.is_empty(), "temporaries left: {temps:?}");
        eprintln!(
            "webhdfs: all checks passed against MiniDFS ({} files)",
            everything.len()
        );
    }

    impl WebHdfs {
        async fn inner_mkdirs_for_test(&self, path: &str) {
            self.mkdirs(path).await.unwrap();
        }
    }
}
