//! Riding out transient storage faults: a NameNode failing over or restarting, a DataNode
//! dying in a write pipeline, HDFS's "not replicated yet".
//!
//! Two pieces. [`RetryStore`] wraps an HDFS `ObjectStore` and retries calls that failed
//! transiently, with backoff, until a deadline (`TUSK_STORAGE_RETRY_SECS`, default 60): a
//! NameNode that is back within it costs a pause, one that is not gives one error line, never
//! a hang, because every metadata call also has a time limit (`TUSK_STORAGE_CALL_TIMEOUT_SECS`,
//! default 60). Streaming writes are retried whole by [`crate::AtomicWriter`], which keeps a
//! local spool of what it wrote; both use [`is_transient`] and [`Policy`].
//!
//! hdfs-native tries each NameNode of an HA pair once per call and retries `complete` but not
//! `addBlock`; Hadoop's own client keeps trying a failover for about a minute (15 attempts with
//! backoff) and retries `addBlock` five times. This module gives tusk that same patience on
//! every path, DataFusion's included (it reads through the wrapped store).

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::StreamExt;
use futures::stream::{self, BoxStream};
use hdfs_native::HdfsError;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions,
};

/// How long to keep retrying, and how long one call may take.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Policy {
    /// Give up retrying after this long (from the first failure).
    pub deadline: Duration,
    /// The same for a service that has not answered once yet in this process: most likely a
    /// wrong address, so give up sooner (Hadoop's client tries a refused connection for about
    /// 10 s).
    pub first_contact: Duration,
    /// One metadata call (not a data transfer) taking longer than this has failed.
    pub call_timeout: Duration,
}

impl Policy {
    /// From `TUSK_STORAGE_RETRY_SECS`, `TUSK_STORAGE_CONNECT_SECS` and
    /// `TUSK_STORAGE_CALL_TIMEOUT_SECS` (defaults 60, 10 and 60), looked up by `lookup`.
    pub fn from_lookup(lookup: &dyn Fn(&str) -> Option<String>) -> Policy {
        let secs = |key: &str, default: f64| {
            lookup(key)
                .and_then(|v| v.trim().parse::<f64>().ok())
                .filter(|v| v.is_finite() && *v >= 0.0)
                .map(Duration::from_secs_f64)
                .unwrap_or(Duration::from_secs_f64(default))
        };
        let deadline = secs("TUSK_STORAGE_RETRY_SECS", 60.0);
        Policy {
            deadline,
            first_contact: secs("TUSK_STORAGE_CONNECT_SECS", 10.0).min(deadline),
            call_timeout: secs("TUSK_STORAGE_CALL_TIMEOUT_SECS", 60.0),
        }
    }

    /// This policy for a service that has not answered yet: the first-contact deadline.
    fn before_contact(self) -> Policy {
        Policy {
            deadline: self.first_contact,
            ..self
        }
    }
}

/// Backoff between attempts: 200 ms doubling, at most 5 s.
pub(crate) struct Backoff {
    start: Instant,
    next: Duration,
    policy: Policy,
    warned: bool,
    retried: bool,
}

impl Backoff {
    /// With `announce`, the first pause is said on stderr (a running job pausing); without, the
    /// retries are silent and only the final error is shown (a service never reached yet: most
    /// likely bad input, which gets one error line).
    pub fn new(policy: Policy, announce: bool) -> Backoff {
        Backoff {
            start: Instant::now(),
            next: Duration::from_millis(200),
            policy,
            warned: !announce,
            retried: false,
        }
    }

    /// The pause before the next attempt, or `None` when the deadline has passed.
    pub fn pause(&mut self, what: &str, err: &dyn fmt::Display) -> Option<Duration> {
        let elapsed = self.start.elapsed();
        if elapsed + self.next > self.policy.deadline {
            return None;
        }
        self.retried = true;
        if !self.warned {
            self.warned = true;
            eprintln!(
                "tusk: {what}: {err}; retrying for up to {} s",
                self.policy.deadline.as_secs()
            );
        }
        let d = self.next;
        self.next = (self.next * 2).min(Duration::from_secs(5));
        Some(d)
    }

    /// The final error after giving up: says how long tusk tried.
    pub fn gave_up(&self, err: object_store::Error) -> object_store::Error {
        if !self.retried {
            return err;
        }
        object_store::Error::Generic {
            store: "HDFS",
            source: format!(
                "gave up after {:.0} s of retries: {}",
                self.start.elapsed().as_secs_f64(),
                crate::error::error_chain(&err)
            )
            .into(),
        }
    }
}

/// HDFS exceptions that mean "try again shortly" (Hadoop's client retries these too).
const RETRIABLE_EXCEPTIONS: &[&str] = &[
    "StandbyException",
    "RetriableException",
    "SafeModeException",
    "NotReplicatedYetException",
    "ObserverRetryOnActiveException",
];

/// Is this a failure that may pass by itself: a connection refused or reset (a NameNode or
/// DataNode restarting, failing over), a DataNode pipeline error, a NameNode in standby or
/// safe mode, a block not yet reported? Never a missing file, an existing one, a permission
/// or a bad path.
pub(crate) fn is_transient(err: &object_store::Error) -> bool {
    match err {
        object_store::Error::NotFound { .. }
        | object_store::Error::AlreadyExists { .. }
        | object_store::Error::Precondition { .. }
        | object_store::Error::NotModified { .. }
        | object_store::Error::InvalidPath { .. }
        | object_store::Error::NotSupported { .. }
        | object_store::Error::NotImplemented { .. }
        | object_store::Error::PermissionDenied { .. }
        | object_store::Error::Unauthenticated { .. } => return false,
        _ => {}
    }
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(h) = e.downcast_ref::<HdfsError>() {
            return match h {
                HdfsError::IOError(_) | HdfsError::DataTransferError(_) => true,
                HdfsError::RPCError(exc, msg) | HdfsError::FatalRPCError(exc, msg) => {
                    RETRIABLE_EXCEPTIONS.iter().any(|r| exc.ends_with(r))
                        // The NameNode found no DataNode to take a block: all busy (it
                        // excludes loaded ones), just restarted or not yet registered. Seen
                        // after a pipeline failure on 3 loaded MiniDFS DataNodes; it passes.
                        || msg.contains("could only be written to 0 of the")
                }
                HdfsError::OperationFailed(msg) => msg.contains("complete file in time"),
                _ => false,
            };
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind::*;
            return matches!(
                io.kind(),
                ConnectionRefused
                    | ConnectionReset
                    | ConnectionAborted
                    | NotConnected
                    | BrokenPipe
                    | TimedOut
                    | UnexpectedEof
            );
        }
        if let Some(r) = e.downcast_ref::<reqwest::Error>() {
            return r.is_connect() || r.is_timeout();
        }
        cur = e.source();
    }
    let text = err.to_string();
    RETRIABLE_EXCEPTIONS.iter().any(|r| text.contains(r)) || text.contains("timed out after")
}

/// An `ObjectStore` that retries another's transient failures (see the module docs).
#[derive(Debug, Clone)]
pub(crate) struct RetryStore {
    inner: Arc<dyn ObjectStore>,
    policy: Policy,
    /// What to call the service in messages, e.g. `HDFS NameNode ns1`.
    service: Arc<str>,
    /// Whether the service has answered once: until then, the first-contact deadline holds.
    contacted: Arc<AtomicBool>,
}

impl RetryStore {
    pub fn new(inner: Arc<dyn ObjectStore>, policy: Policy, service: String) -> RetryStore {
        RetryStore {
            inner,
            policy,
            service: service.into(),
            contacted: Arc::new(AtomicBool::new(false)),
        }
    }

    fn policy(&self) -> Policy {
        if self.contacted.load(Ordering::Relaxed) {
            self.policy
        } else {
            self.policy.before_contact()
        }
    }

    /// Note the outcome of a call: any answer from the service (a missing file included)
    /// shows it is there.
    fn answered<T>(&self, r: &object_store::Result<T>) {
        if r.as_ref().map_or_else(|e| !is_transient(e), |_| true) {
            self.contacted.store(true, Ordering::Relaxed);
        }
    }

    /// Run `call` until it succeeds, fails for good, or the deadline passes; each attempt is
    /// limited to the policy's call timeout.
    async fn retry<T, F, Fut>(&self, what: &str, call: F) -> object_store::Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = object_store::Result<T>>,
    {
        self.retry_within(what, Some(self.policy.call_timeout), call)
            .await
    }

    /// [`RetryStore::retry`], each attempt limited to `limit` (none for whole transfers, which
    /// may take long).
    async fn retry_within<T, F, Fut>(
        &self,
        what: &str,
        limit: Option<Duration>,
        mut call: F,
    ) -> object_store::Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = object_store::Result<T>>,
    {
        let mut backoff = Backoff::new(self.policy(), self.contacted.load(Ordering::Relaxed));
        loop {
            let result = match limit {
                None => call().await,
                Some(limit) => match tokio::time::timeout(limit, call()).await {
                    Ok(r) => r,
                    Err(_) => Err(object_store::Error::Generic {
                        store: "HDFS",
                        source: format!(
                            "{} did not answer ({what} timed out after {} s)",
                            self.service,
                            limit.as_secs()
                        )
                        .into(),
                    }),
                },
            };
            self.answered(&result);
            match result {
                Err(e) if is_transient(&e) => match backoff.pause(&self.service, &e) {
                    Some(d) => tokio::time::sleep(d).await,
                    None => return Err(backoff.gave_up(e)),
                },
                done => return done,
            }
        }
    }
}

impl fmt::Display for RetryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.inner)
    }
}

#[async_trait]
impl ObjectStore for RetryStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        // A payload is a list of shared buffers: cloning it per attempt copies no data.
        self.retry("write", || {
            self.inner.put_opts(location, payload.clone(), opts.clone())
        })
        .await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.retry("create", || {
            self.inner.put_multipart_opts(location, opts.clone())
        })
        .await
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.retry("open", || self.inner.get_opts(location, options.clone()))
            .await
    }

    async fn get_ranges(
        &self,
        location: &Path,
        ranges: &[std::ops::Range<u64>],
    ) -> object_store::Result<Vec<bytes::Bytes>> {
        // Whole transfers: no call timeout (a big range may take long), but transient failures
        // are retried.
        self.retry_within("read", None, || self.inner.get_ranges(location, ranges))
            .await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        let this = self.clone();
        locations
            .then(move |p| {
                let store = this.clone();
                async move {
                    let p = p?;
                    store
                        .retry("delete", || {
                            let one = stream::iter([Ok(p.clone())]).boxed();
                            let mut out = store.inner.delete_stream(one);
                            let done = p.clone();
                            async move { out.next().await.unwrap_or(Ok(done)) }
                        })
                        .await
                }
            })
            .boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        // Collected with retries, then handed out: a listing that fails half-way is redone.
        let store = self.clone();
        let prefix = prefix.cloned();
        stream::once(async move {
            store
                .retry("list", || {
                    let s = store.inner.list(prefix.as_ref());
                    async move {
                        use futures::TryStreamExt;
                        s.try_collect::<Vec<_>>().await
                    }
                })
                .await
        })
        .flat_map(|r| match r {
            Ok(v) => stream::iter(v.into_iter().map(Ok)).boxed(),
            Err(e) => stream::iter([Err(e)]).boxed(),
        })
        .boxed()
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.retry("list", || self.inner.list_with_delimiter(prefix))
            .await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.retry("copy", || self.inner.copy_opts(from, to, options.clone()))
            .await
    }

    async fn rename_opts(
        &self,
        from: &Path,
        to: &Path,
        options: RenameOptions,
    ) -> object_store::Result<()> {
        self.retry("rename", || {
            self.inner.rename_opts(from, to, options.clone())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hdfs(e: HdfsError) -> object_store::Error {
        object_store::Error::Generic {
            store: "HdfsObjectStore",
            source: Box::new(e),
        }
    }

    #[test]
    fn transient_faults_are_told_from_answers() {
        let rpc = |exc: &str, msg: &str| hdfs(HdfsError::RPCError(exc.into(), msg.into()));
        for e in [
            rpc(
                "org.apache.hadoop.ipc.StandbyException",
                "Operation category READ",
            ),
            rpc(
                "org.apache.hadoop.hdfs.server.namenode.NotReplicatedYetException",
                "Not replicated yet: /x",
            ),
            rpc(
                "java.io.IOException",
                "File /.x.tmp could only be written to 0 of the 1 minReplication nodes.",
            ),
            hdfs(HdfsError::IOError(std::io::Error::from(
                std::io::ErrorKind::ConnectionRefused,
            ))),
            hdfs(HdfsError::DataTransferError(
                "Failed to replay packets".into(),
            )),
        ] {
            assert!(is_transient(&e), "{e}");
        }
        for e in [
            rpc(
                "org.apache.hadoop.security.AccessControlException",
                "Permission denied",
            ),
            rpc("java.io.IOException", "Quota exceeded"),
            hdfs(HdfsError::ChecksumError),
            object_store::Error::NotFound {
                path: "x".into(),
                source: "gone".into(),
            },
            object_store::Error::AlreadyExists {
                path: "x".into(),
                source: "there".into(),
            },
        ] {
            assert!(!is_transient(&e), "{e}");
        }
    }
}
