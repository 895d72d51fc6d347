//! Blocking streaming adapters: `std::io::Read` over a download and `std::io::Write` over an
//! atomic upload, for any backend.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt as _;
use std::path::Path as FsPath;
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{MultipartUpload, ObjectStore, ObjectStoreExt, PutPayload};

use crate::retry::{Backoff, is_transient};
use crate::{Error, Result, Storage};

/// Streaming reader returned by [`crate::Location::reader`].
pub struct ObjectReader {
    inner: ReaderInner,
}

enum ReaderInner {
    Local(std::fs::File),
    Stream {
        url: String,
        /// Chunks downloaded ahead by a task on the I/O runtime; `None` marks the end, so a
        /// channel that closes without it means the task died (a panic in a backend), which
        /// is an error, not the end of the file.
        chunks: tokio::sync::mpsc::Receiver<Option<object_store::Result<Bytes>>>,
        chunk: Bytes,
        done: bool,
        /// The download task; aborted when the reader is dropped early.
        task: tokio::task::JoinHandle<()>,
    },
}

/// How many chunks (packets of a few dozen KB from HDFS) a remote reader downloads ahead of
/// its consumer, so that network transfer overlaps decoding instead of alternating with it.
const READ_AHEAD_CHUNKS: usize = 64;

impl ObjectReader {
    pub(crate) fn local(f: std::fs::File) -> Self {
        ObjectReader {
            inner: ReaderInner::Local(f),
        }
    }

    pub(crate) fn stream(
        storage: &Storage,
        url: String,
        mut stream: BoxStream<'static, object_store::Result<Bytes>>,
    ) -> Self {
        let (tx, chunks) = tokio::sync::mpsc::channel(READ_AHEAD_CHUNKS);
        let task = storage.handle().spawn(async move {
            while let Some(item) = stream.next().await {
                let failed = item.is_err();
                if tx.send(Some(item)).await.is_err() || failed {
                    return;
                }
            }
            let _ = tx.send(None).await;
        });
        ObjectReader {
            inner: ReaderInner::Stream {
                url,
                chunks,
                chunk: Bytes::new(),
                done: false,
                task,
            },
        }
    }
}

impl Read for ObjectReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &mut self.inner {
            ReaderInner::Local(f) => f.read(buf),
            ReaderInner::Stream {
                url,
                chunks,
                chunk,
                done,
                ..
            } => {
                while chunk.is_empty() {
                    if *done {
                        return Ok(0);
                    }
                    match chunks.blocking_recv() {
                        Some(Some(Ok(b))) => *chunk = b,
                        Some(Some(Err(e))) => {
                            return Err(io::Error::other(format!("{url}: read failed: {e}")));
                        }
                        Some(None) => *done = true,
                        None => {
                            return Err(io::Error::other(format!(
                                "{url}: read failed: the download stopped before the end of the file"
                            )));
                        }
                    }
                }
                let n = buf.len().min(chunk.len());
                buf[..n].copy_from_slice(&chunk[..n]);
                let _ = chunk.split_to(n);
                Ok(n)
            }
        }
    }
}

impl Drop for ObjectReader {
    fn drop(&mut self) {
        if let ReaderInner::Stream { task, .. } = &self.inner {
            task.abort();
        }
    }
}

/// Size of the parts an upload is cut into (HDFS and WebHDFS append them in order).
const PART_SIZE: usize = 8 << 20;

/// Streaming atomic writer returned by [`crate::Location::writer`]. Call
/// [`AtomicWriter::finish`] to publish the file; dropping it unfinished discards the data.
///
/// On HDFS and WebHDFS the writer also keeps what it sent in a local spool file (an anonymous
/// temporary file in `$TMPDIR`, gone when the writer is): when the upload fails transiently
/// (a DataNode dying in the pipeline, a block "not replicated yet", a NameNode failing over),
/// the unpublished upload is dropped and the whole file is sent again from the spool, with
/// backoff, until `TUSK_STORAGE_RETRY_SECS`. Nothing is published before the file is complete,
/// so a retry can never leave a short file behind. `TUSK_WRITE_SPOOL=0` turns the spool off
/// (a failed upload then fails the write).
pub struct AtomicWriter {
    url: String,
    inner: Option<WriterInner>,
}

enum WriterInner {
    Local {
        file: io::BufWriter<tempfile::NamedTempFile>,
        target: std::path::PathBuf,
    },
    Multipart {
        /// Where the file goes: its store, path, storage settings and error messages.
        location: crate::Location,
        upload: Box<dyn MultipartUpload>,
        buf: Vec<u8>,
        replay: Option<Replay>,
        /// Parts on their way, oldest first: up to [`parts_in_flight`] upload while the caller
        /// produces the next one.
        inflight: VecDeque<tokio::task::JoinHandle<object_store::Result<()>>>,
    },
}

/// How many upload parts (of [`PART_SIZE`]) may be on their way at once: 4 for HDFS and
/// WebHDFS (8 overwhelmed 3 busy DataNodes: "could only be written to 0 of the 1
/// minReplication nodes"), 10 for object stores, as boto3's transfer manager sends.
fn parts_in_flight(location: &crate::Location) -> usize {
    match location.scheme {
        crate::url::Scheme::S3 | crate::url::Scheme::Azure => 10,
        _ => 4,
    }
}

/// Wait for parts on their way, oldest first, until at most `keep` remain; the first failure
/// stops the rest (they are aborted) and is returned.
async fn drain(
    inflight: &mut VecDeque<tokio::task::JoinHandle<object_store::Result<()>>>,
    keep: usize,
) -> object_store::Result<()> {
    while inflight.len() > keep {
        let Some(part) = inflight.pop_front() else {
            break;
        };
        let result = part.await.unwrap_or_else(|e| {
            Err(object_store::Error::Generic {
                store: "upload",
                source: Box::new(e),
            })
        });
        if let Err(e) = result {
            for p in inflight.drain(..) {
                p.abort();
            }
            return Err(e);
        }
    }
    Ok(())
}

/// What a whole-file retry needs beside the location: every byte sent so far.
pub(crate) struct Replay {
    spool: std::fs::File,
    len: u64,
}

impl Replay {
    /// A spool for an upload to `url`, or `None` (with a warning) where none can be made.
    pub(crate) fn new(url: &str) -> Option<Replay> {
        match tempfile::tempfile() {
            Ok(spool) => Some(Replay { spool, len: 0 }),
            Err(e) => {
                eprintln!(
                    "tusk: warning: no spool file for a retry of the upload to {url} ({e}); \
                     a failed upload will fail the write"
                );
                None
            }
        }
    }

    /// Keep a part that is about to be sent. A spool that cannot be written is given up
    /// (with a warning) rather than failing a write that may well succeed.
    fn keep(this: &mut Option<Replay>, part: &[u8], url: &str) {
        if let Some(r) = this {
            if let Err(e) = r.spool.write_all_at(part, r.len) {
                eprintln!(
                    "tusk: warning: spool for {url} failed ({e}); a failed upload will fail the write"
                );
                *this = None;
            } else {
                r.len += part.len() as u64;
            }
        }
    }

    /// After `err`: drop the upload, start a new one and send everything kept again (then
    /// complete it, when `complete`), with backoff while failures stay transient.
    async fn resend(
        &self,
        to: &crate::Location,
        upload: &mut Box<dyn MultipartUpload>,
        mut err: object_store::Error,
        complete: bool,
    ) -> object_store::Result<()> {
        let mut backoff = Backoff::new(to.storage.policy(), true);
        let (store, path) = to.object_store();
        loop {
            if !is_transient(&err) {
                return Err(err);
            }
            let what = format!("{}: upload of {path}", to.service());
            match backoff.pause(&what, &err) {
                Some(d) => tokio::time::sleep(d).await,
                None => return Err(backoff.gave_up(err)),
            }
            let _ = upload.abort().await;
            match self.send_all(&store, &path, complete).await {
                Ok(fresh) => {
                    *upload = fresh;
                    return Ok(());
                }
                Err(e) => err = e,
            }
        }
    }

    async fn send_all(
        &self,
        store: &Arc<dyn ObjectStore>,
        path: &Path,
        complete: bool,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        let mut upload = store.put_multipart(path).await?;
        let mut off = 0u64;
        let result = async {
            while off < self.len {
                let n = (self.len - off).min(PART_SIZE as u64) as usize;
                let mut part = vec![0u8; n];
                self.spool.read_exact_at(&mut part, off).map_err(|e| {
                    object_store::Error::Generic {
                        store: "spool",
                        source: Box::new(e),
                    }
                })?;
                upload.put_part(PutPayload::from(part)).await?;
                off += n as u64;
            }
            if complete {
                upload.complete().await?;
            }
            Ok(())
        }
        .await;
        match result {
            Ok(()) => Ok(upload),
            Err(e) => {
                let _ = upload.abort().await;
                Err(e)
            }
        }
    }
}

impl AtomicWriter {
    pub(crate) fn local(target: &FsPath, url: String) -> Result<Self> {
        let tmp = local_temp(target).map_err(|e| Error::from_io(&url, e))?;
        Ok(AtomicWriter {
            url,
            inner: Some(WriterInner::Local {
                file: io::BufWriter::with_capacity(1 << 20, tmp),
                target: target.to_path_buf(),
            }),
        })
    }

    pub(crate) fn multipart(
        location: crate::Location,
        upload: Box<dyn MultipartUpload>,
        replay: Option<Replay>,
    ) -> Self {
        AtomicWriter {
            url: location.url(),
            inner: Some(WriterInner::Multipart {
                location,
                upload,
                buf: Vec::new(),
                replay,
                inflight: VecDeque::new(),
            }),
        }
    }

    /// Flush everything and atomically publish the file at its final name.
    pub fn finish(mut self) -> Result<()> {
        let url = self.url.clone();
        match self.inner.take() {
            Some(WriterInner::Local { file, target }) => {
                let tmp = file
                    .into_inner()
                    .map_err(|e| Error::from_io(&url, e.into_error()))?;
                tmp.as_file()
                    .sync_all()
                    .map_err(|e| Error::from_io(&url, e))?;
                tmp.persist(&target)
                    .map_err(|e| Error::from_io(&url, e.error))?;
                sync_dir(&target);
                Ok(())
            }
            Some(WriterInner::Multipart {
                location,
                mut upload,
                buf,
                mut replay,
                mut inflight,
            }) => {
                if !buf.is_empty() {
                    Replay::keep(&mut replay, &buf, &url);
                }
                let storage = &location.storage;
                let res = storage.handle().block_on(async {
                    let sent = async {
                        if !buf.is_empty() {
                            let part = upload.put_part(PutPayload::from(buf));
                            inflight.push_back(storage.handle().spawn(part));
                        }
                        drain(&mut inflight, 0).await?;
                        upload.complete().await.map(|_| ())
                    }
                    .await;
                    match (sent, &replay) {
                        (Err(e), Some(r)) => r.resend(&location, &mut upload, e, true).await,
                        (sent, _) => sent,
                    }
                });
                match res {
                    Ok(()) => Ok(()),
                    Err(e) => {
                        let _ = storage.handle().block_on(upload.abort());
                        Err(location.err(e))
                    }
                }
            }
            None => Ok(()),
        }
    }
}

impl Write for AtomicWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        match self.inner.as_mut() {
            Some(WriterInner::Local { file, .. }) => file.write(data),
            Some(WriterInner::Multipart {
                location,
                upload,
                buf,
                replay,
                inflight,
            }) => {
                buf.extend_from_slice(data);
                if buf.len() >= PART_SIZE {
                    let part = std::mem::take(buf);
                    Replay::keep(replay, &part, &self.url);
                    let storage = &location.storage;
                    let sending = upload.put_part(PutPayload::from(part));
                    inflight.push_back(storage.handle().spawn(sending));
                    storage
                        .handle()
                        .block_on(async {
                            match drain(inflight, parts_in_flight(location) - 1).await {
                                // `resend` starts over from the spool: every part so far,
                                // including the ones that were still on their way.
                                Err(e) => match replay {
                                    Some(r) => r.resend(location, upload, e, false).await,
                                    None => Err(e),
                                },
                                ok => ok,
                            }
                        })
                        // The storage error itself travels inside: `Location::write` and
                        // callers that downcast get it whole.
                        .map_err(|e| io::Error::other(location.err(e)))?;
                }
                Ok(data.len())
            }
            None => Err(io::Error::other("writer already finished")),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self.inner.as_mut() {
            Some(WriterInner::Local { file, .. }) => file.flush(),
            // Parts are only published by `finish`; nothing to flush early.
            _ => Ok(()),
        }
    }
}

impl Drop for AtomicWriter {
    fn drop(&mut self) {
        // Unfinished: discard. The local temp file deletes itself on drop.
        if let Some(WriterInner::Multipart {
            location,
            mut upload,
            inflight,
            ..
        }) = self.inner.take()
        {
            for p in inflight {
                p.abort();
            }
            let _ = location.storage.handle().block_on(upload.abort());
        }
    }
}

/// A hidden temporary file next to `target` (same directory, so the rename is atomic).
fn local_temp(target: &FsPath) -> io::Result<tempfile::NamedTempFile> {
    let dir = target
        .parent()
        .ok_or_else(|| io::Error::other("cannot write to the filesystem root"))?;
    std::fs::create_dir_all(dir)?;
    if target.is_dir() {
        return Err(io::Error::other("is a directory, expected a file"));
    }
    let name = target.file_name().unwrap_or_default().to_string_lossy();
    tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".tmp")
        .tempfile_in(dir)
}

/// Write a whole local file atomically; with `overwrite = false`, fail if the target exists
/// (the link-based publish cannot clobber a concurrent winner).
pub(crate) fn write_local(target: &FsPath, data: &[u8], overwrite: bool) -> io::Result<()> {
    let mut tmp = local_temp(target)?;
    tmp.write_all(data)?;
    tmp.as_file().sync_all()?;
    if overwrite {
        tmp.persist(target).map_err(|e| e.error)?;
    } else {
        tmp.persist_noclobber(target).map_err(|e| e.error)?;
    }
    sync_dir(target);
    Ok(())
}

/// Make the rename durable (best effort: not every filesystem supports syncing directories).
fn sync_dir(target: &FsPath) {
    if let Some(dir) = target.parent()
        && let Ok(d) = std::fs::File::open(dir)
    {
        let _ = d.sync_all();
    }
}
