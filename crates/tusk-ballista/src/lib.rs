//! tusk SQL on an Apache Ballista cluster.
//!
//! Ballista is DataFusion's own distributed engine: a scheduler turns a logical plan into
//! stages split at every shuffle, executors run the stages' tasks and keep their shuffle
//! output on local disk, and the client fetches the last stage's partitions over Arrow
//! Flight. tusk embeds all three so a cluster needs only the tusk binary:
//!
//! - [`server::run_scheduler`] (`tusk sql-scheduler`) plans over tusk's storage: it lists
//!   table directories on `hdfs://`, `webhdfs://`, `s3://`, `az://`/`abfs://` and local paths
//!   through [`stores::TuskStores`];
//! - [`server::run_executor`] (`tusk sql-executor`) reads the tables' files where they live,
//!   through the same registry, so rows never pass through the client or the scheduler;
//! - [`client::session`] gives a [`tusk_preprocess::sql::SqlSession`] whose queries run on
//!   the cluster, after checking that the scheduler speaks this build's Ballista.
//!
//! Plans cross the wire as DataFusion protobuf. Two things the stock codec refuses are
//! handled by [`codec::TuskCodec`]: small in-memory tables (what `range(n)` becomes, see
//! [`client::session`]) travel inside the plan, bounded in size.

pub mod client;
pub mod codec;
pub mod server;
pub mod stores;

pub use ballista_core::BALLISTA_VERSION;
pub use datafusion::DATAFUSION_VERSION;

/// Errors of the cluster commands.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The cluster URL is malformed.
    #[error("--cluster {url}: {message}")]
    ClusterUrl {
        /// What was given.
        url: String,
        /// What is wrong.
        message: String,
    },
    /// The scheduler cannot be reached or is not one this build can use.
    #[error("{cluster}: {message}")]
    Scheduler {
        /// `df://host:port`.
        cluster: String,
        /// What happened.
        message: String,
    },
    /// Starting or running a scheduler or executor failed.
    #[error("{what}: {message}")]
    Server {
        /// Which process.
        what: String,
        /// What happened.
        message: String,
    },
    /// From the SQL layer (boxed: DataFusion's errors are large).
    #[error(transparent)]
    Sql(Box<tusk_preprocess::Error>),
    /// From storage.
    #[error(transparent)]
    Storage(Box<tusk_storage::Error>),
}

impl From<tusk_preprocess::Error> for Error {
    fn from(e: tusk_preprocess::Error) -> Self {
        Error::Sql(Box::new(e))
    }
}

impl From<tusk_storage::Error> for Error {
    fn from(e: tusk_storage::Error) -> Self {
        Error::Storage(Box::new(e))
    }
}

/// Result of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Send Ballista's log lines (it logs through the `log` crate) to stderr: `info` and above
/// from Ballista itself, `warn` and above from everything else; `TUSK_SQL_LOG=debug` (or
/// `trace`, `warn`, …) sets the level for all. Call once, at the start of a scheduler or
/// executor process.
pub fn init_logging() {
    let level = std::env::var("TUSK_SQL_LOG")
        .ok()
        .and_then(|v| v.parse::<log::LevelFilter>().ok());
    let logger = StderrLog { level };
    if log::set_boxed_logger(Box::new(logger)).is_ok() {
        log::set_max_level(level.unwrap_or(log::LevelFilter::Info));
    }
}

struct StderrLog {
    level: Option<log::LevelFilter>,
}

impl log::Log for StderrLog {
    fn enabled(&self, m: &log::Metadata) -> bool {
        match self.level {
            Some(l) => m.level() <= l,
            None if m.target().starts_with("ballista") => m.level() <= log::Level::Info,
            None => m.level() <= log::Level::Warn,
        }
    }

    fn log(&self, r: &log::Record) {
        if self.enabled(r.metadata()) {
            eprintln!("[{} {}] {}", r.level(), r.target(), r.args());
        }
    }

    fn flush(&self) {}
}
