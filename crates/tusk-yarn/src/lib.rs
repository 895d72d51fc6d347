//! Training jobs on YARN, with nothing but the tusk binary on the submitting machine.
//!
//! - [`rest`]: the ResourceManager's REST API (`/ws/v1/cluster/…`): new application, submit,
//!   report, kill, cluster limits; Kerberos (SPNEGO) when the ResourceManager asks for it.
//! - [`spnego`]: the `Authorization: Negotiate` token from the user's Kerberos ticket cache
//!   (MIT's GSSAPI, loaded at run time).
//! - [`job`]: `tusk launch --yarn`: stages one self-unpacking script (the tusk binary and the
//!   job config inside a small bash header) in the job's staging directory on HDFS, submits
//!   Hadoop's own DistributedShell application master (shipped in every Hadoop distribution's
//!   `share/hadoop/yarn`), which runs that script in N + S containers, follows the application
//!   and restarts the job from the newest model version when a container fails.
//! - [`container`]: what runs in each container: a slot is claimed with a create-only file in
//!   the attempt's rendezvous directory (slots `0..S` are embedding servers, the rest are
//!   worker ranks), rank 0 and the servers publish their addresses there, every process gets
//!   the torchrun variables the rest of tusk reads; a failing process marks the attempt failed
//!   and every other container stops within a second or two.
//!
//! ```
//! let spec = tusk_yarn::job::Resources { memory_mb: 1024, vcores: 1, gpus: 0 };
//! assert_eq!(spec.container_resources(), "memory-mb=1024,vcores=1");
//! ```

pub mod container;
pub mod job;
pub mod rest;
pub mod spnego;
pub mod tokens;
mod web;

pub use web::chain as error_chain;

/// Everything that can go wrong in `tusk-yarn`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server (ResourceManager, NameNode's WebHDFS) did not answer.
    #[error("cannot reach the {server} at {url}: {reason}")]
    Unreachable {
        /// Which server.
        server: &'static str,
        /// The URL called.
        url: String,
        /// What the HTTP client said.
        reason: String,
    },
    /// The server answered with an error.
    #[error("{server}: {method} {url} answered {status}: {message}")]
    Http {
        /// Which server.
        server: &'static str,
        /// HTTP method.
        method: String,
        /// The URL called.
        url: String,
        /// HTTP status code.
        status: u16,
        /// Hadoop's message (its `RemoteException`), or the body.
        message: String,
    },
    /// The server asks for Kerberos (SPNEGO) and tusk could not authenticate: no ticket, no
    /// GSSAPI library, or a token the server refused.
    #[error("{server} at {url} asks for Kerberos (SPNEGO): {reason}")]
    Kerberos {
        /// Which server.
        server: &'static str,
        /// The URL called.
        url: String,
        /// What went wrong, with what to do (`kinit`, `KRB5CCNAME`).
        reason: String,
    },
    /// An answer that does not look like the server's.
    #[error("{server} at {url}: unexpected answer ({reason}): {body}")]
    Protocol {
        /// Which server.
        server: &'static str,
        /// The URL called.
        url: String,
        /// What was expected.
        reason: String,
        /// The start of the body.
        body: String,
    },
    /// A secured HDFS (`hadoop.security.authentication = kerberos`) and no delegation token
    /// for the containers.
    #[error("HDFS delegation token for {fs}: {reason}")]
    Token {
        /// The file system, `hdfs://…`.
        fs: String,
        /// What went wrong, with what to set.
        reason: String,
    },
    /// What the user asked for cannot work (flags, sizes beyond the cluster's limits).
    #[error("{0}")]
    Usage(String),
    /// The application ended without success (after any restarts).
    #[error("YARN application {app} {state}: {diagnostics}")]
    Failed {
        /// The last application's id.
        app: String,
        /// Its final state (FAILED, KILLED).
        state: String,
        /// YARN's diagnostics.
        diagnostics: String,
    },
    /// Stopped by SIGINT/SIGTERM; the application was killed.
    #[error("interrupted: YARN application {0} killed")]
    Interrupted(String),
    /// A rendezvous step inside a container.
    #[error("yarn container: {0}")]
    Container(String),
    /// Staging or rendezvous storage.
    #[error(transparent)]
    Storage(#[from] tusk_storage::Error),
    /// Local I/O.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The failure.
        #[source]
        source: std::io::Error,
    },
}

/// Result with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
