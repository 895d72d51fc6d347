//! Errors of rendezvous, transport and collectives.

use std::time::Duration;

/// What went wrong. Every variant names the peer or the setting involved.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The world description (flags or environment) is incomplete or contradictory.
    #[error("{source_name}: {message}")]
    World {
        /// Where the value came from, e.g. `--rank` or `SLURM_JOB_NODELIST`.
        source_name: String,
        /// What is wrong.
        message: String,
    },
    /// The rendezvous did not complete.
    #[error("rendezvous at {master}: {message}")]
    Rendezvous {
        /// `host:port` of rank 0.
        master: String,
        /// What is wrong (which ranks never came, who refused whom).
        message: String,
    },
    /// Ranks disagree on what they are about to run.
    #[error("rank {rank} does not match rank 0: {message}")]
    Mismatch {
        /// The rank that differs.
        rank: usize,
        /// The differing key and both values.
        message: String,
    },
    /// A peer closed its connection (it exited or was killed).
    #[error("rank {peer} closed the connection during {op} (it exited or was killed)")]
    PeerGone {
        /// The peer's rank.
        peer: usize,
        /// The collective in progress.
        op: &'static str,
    },
    /// A peer sent nothing within the collective timeout.
    #[error(
        "rank {peer} sent nothing for {}s during {op} (--collective-timeout)",
        timeout.as_secs()
    )]
    Timeout {
        /// The peer's rank.
        peer: usize,
        /// The collective in progress.
        op: &'static str,
        /// The limit that passed.
        timeout: Duration,
    },
    /// A peer reported that it failed.
    #[error("rank {peer} failed: {message}")]
    PeerFailed {
        /// The peer's rank.
        peer: usize,
        /// Its error.
        message: String,
    },
    /// The byte stream from a peer broke the protocol.
    #[error("rank {peer}: {message}")]
    Protocol {
        /// The peer's rank.
        peer: usize,
        /// What arrived.
        message: String,
    },
    /// Socket I/O failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done, naming the peer or address.
        what: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// A collective was called with arguments that cannot work on every rank.
    #[error("{0}")]
    Usage(String),
    /// The MPI backend failed.
    #[error("MPI: {0}")]
    Mpi(String),
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
