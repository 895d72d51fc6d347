use std::error::Error as StdError;

/// Everything that can go wrong in `tusk-storage`. Every variant names the URL it is about.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The URL cannot be understood (unknown scheme, missing host, bad path, ...).
    #[error("invalid storage URL '{url}': {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it and what was expected.
        reason: String,
    },
    /// The file does not exist.
    #[error("{url}: no such file")]
    NotFound {
        /// The missing file.
        url: String,
    },
    /// A create-only write found the file already there.
    #[error("{url}: already exists")]
    AlreadyExists {
        /// The existing file.
        url: String,
    },
    /// The service behind the URL (NameNode, WebHDFS endpoint) could not be reached.
    #[error("cannot reach {service} for {url}: {source}")]
    Unreachable {
        /// The URL being accessed.
        url: String,
        /// What could not be reached, e.g. `HDFS NameNode 127.0.0.1:9000`.
        service: String,
        /// The underlying failure.
        #[source]
        source: object_store::Error,
    },
    /// A local I/O error.
    #[error("{url}: {source}")]
    Io {
        /// The file being accessed.
        url: String,
        /// The underlying failure.
        #[source]
        source: std::io::Error,
    },
    /// Any other failure reported by a storage backend.
    #[error("{url}: {source}")]
    Store {
        /// The URL being accessed.
        url: String,
        /// The underlying failure.
        #[source]
        source: object_store::Error,
    },
    /// An `s3://` bucket or an Azure container that does not exist.
    #[error("{url}: the bucket or container '{bucket}' does not exist at {service}")]
    NoSuchBucket {
        /// The URL being accessed.
        url: String,
        /// The bucket or container.
        bucket: String,
        /// Where it was looked for, e.g. `http://127.0.0.1:9000`.
        service: String,
    },
    /// An object store that found no credentials, or refused the ones given.
    #[error("{url}: {reason}")]
    Credentials {
        /// The URL being accessed.
        url: String,
        /// What is missing or refused, and what to set.
        reason: String,
    },
    /// A glob pattern that does not parse.
    #[error("invalid glob pattern '{pattern}': {source}")]
    Glob {
        /// The pattern as given.
        pattern: String,
        /// Why it does not parse.
        #[source]
        source: globset::Error,
    },
    /// The I/O runtime could not be started (our bug or an exhausted machine).
    #[error("internal error: cannot start the storage I/O runtime: {0}")]
    Runtime(#[source] std::io::Error),
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Classify a backend error for `url`, served by `service` (used in the unreachable message).
    pub(crate) fn from_store(url: &str, service: &str, err: object_store::Error) -> Error {
        match err {
            object_store::Error::NotFound { .. } => Error::NotFound { url: url.into() },
            object_store::Error::AlreadyExists { .. } => Error::AlreadyExists { url: url.into() },
            err if is_connect_error(&err) => Error::Unreachable {
                url: url.into(),
                service: service.into(),
                source: err,
            },
            err => Error::Store {
                url: url.into(),
                source: err,
            },
        }
    }

    /// Classify a local I/O error for `url`.
    pub(crate) fn from_io(url: &str, err: std::io::Error) -> Error {
        match err.kind() {
            std::io::ErrorKind::NotFound => Error::NotFound { url: url.into() },
            std::io::ErrorKind::AlreadyExists => Error::AlreadyExists { url: url.into() },
            _ => Error::Io {
                url: url.into(),
                source: err,
            },
        }
    }

    /// True for [`Error::NotFound`].
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::NotFound { .. })
    }
}

/// Does the error chain say the peer could not be connected to?
fn is_connect_error(err: &(dyn StdError + 'static)) -> bool {
    use std::io::ErrorKind::*;
    let mut cur: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && matches!(
                io.kind(),
                ConnectionRefused
                    | ConnectionReset
                    | ConnectionAborted
                    | NotConnected
                    | AddrNotAvailable
                    | HostUnreachable
                    | NetworkUnreachable
                    | TimedOut
            )
        {
            return true;
        }
        if let Some(r) = e.downcast_ref::<reqwest::Error>()
            && (r.is_connect() || r.is_timeout())
        {
            return true;
        }
        let text = e.to_string().to_ascii_lowercase();
        if text.contains("connection refused") || text.contains("cannot reach") {
            return true;
        }
        cur = e.source();
    }
    false
}

/// `e` and all its sources, joined with `": "`, each cause once (reqwest's own message omits
/// the cause, e.g. "connection refused").
pub(crate) fn error_chain(e: &dyn StdError) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let s_str = s.to_string();
        if !out.contains(&s_str) {
            out.push_str(": ");
            out.push_str(&s_str);
        }
        cur = s.source();
    }
    out
}
