//! Data-parallel plumbing: who is who ([`world`]), how ranks find and trust each other
//! ([`tcp`]: rendezvous at rank 0, HMAC challenge with the job secret, a full mesh of framed
//! TCP connections), and the collectives the trainer calls ([`Communicator`]).
//!
//! Every collective is written once ([`Ring`]) over a point-to-point [`Link`]; the backends
//! are links: TCP between processes, channels between threads ([`threads`]), and MPI point
//! to point (feature `mpi`). Because the algorithm and its reduction order are the same on
//! every backend, every rank ends an all-reduce with bitwise identical bytes, on any backend.

pub mod conformance;
pub mod error;
#[cfg(feature = "mpi")]
pub mod mpi;
mod ring;
mod shm;
pub mod tcp;
pub mod threads;
pub mod world;

pub use error::{Error, Result};
pub use ring::Ring;
pub use world::{Flags, World};

/// How an all-reduce combines the ranks' buffers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReduceOp {
    /// Element-wise sum.
    Sum,
    /// Element-wise sum divided by the number of ranks.
    Mean,
}

/// Collectives between the ranks of one job. Every rank must call the same collectives in the
/// same order with compatible arguments; a rank that stops calling makes the others fail
/// with [`Error::Timeout`] or [`Error::PeerGone`], never hang.
pub trait Communicator {
    /// This rank, `0..world_size`.
    fn rank(&self) -> usize;
    /// Number of ranks.
    fn world_size(&self) -> usize;
    /// Replace `buf` on every rank by the element-wise reduction of every rank's `buf`.
    /// Every rank ends with bitwise identical values (the reduction order is fixed).
    fn all_reduce(&mut self, buf: &mut [f32], op: ReduceOp) -> Result<()>;
    /// Give every rank `root`'s bytes (`buf` is replaced on the others).
    fn broadcast(&mut self, buf: &mut Vec<u8>, root: usize) -> Result<()>;
    /// Every rank's bytes (any length, empty included), indexed by rank.
    fn all_gather(&mut self, mine: &[u8]) -> Result<Vec<Vec<u8>>>;
    /// Return once every rank has called `barrier`.
    fn barrier(&mut self) -> Result<()> {
        self.all_gather(&[]).map(|_| ())
    }
    /// Tell the other ranks (best effort) that this one failed, so they report its message
    /// instead of a closed connection.
    fn abort(&mut self, _message: &str) {}
}

/// Check that every rank brings the same `fingerprint` (key → value pairs, e.g. the resolved
/// config): on a mismatch every rank fails naming the first differing key. The TCP backend
/// does this during its rendezvous; backends without one (MPI) call this.
pub fn check_fingerprint(
    comm: &mut dyn Communicator,
    fingerprint: &std::collections::BTreeMap<String, String>,
) -> Result<()> {
    let mine = serde_json::to_vec(fingerprint).unwrap_or_default();
    let all = comm.all_gather(&mine)?;
    let ours: std::collections::BTreeMap<String, String> =
        serde_json::from_slice(&all[0]).unwrap_or_default();
    for (rank, theirs) in all.iter().enumerate().skip(1) {
        let theirs: std::collections::BTreeMap<String, String> =
            serde_json::from_slice(theirs).unwrap_or_default();
        if let Some(message) = tcp::first_difference(&ours, &theirs, rank) {
            return Err(Error::Mismatch { rank, message });
        }
    }
    Ok(())
}

/// One process: every collective leaves the data as it is.
#[derive(Debug, Default, Clone, Copy)]
pub struct Single;

impl Communicator for Single {
    fn rank(&self) -> usize {
        0
    }

    fn world_size(&self) -> usize {
        1
    }

    fn all_reduce(&mut self, _buf: &mut [f32], _op: ReduceOp) -> Result<()> {
        Ok(())
    }

    fn broadcast(&mut self, _buf: &mut Vec<u8>, root: usize) -> Result<()> {
        check_root(root, 1)
    }

    fn all_gather(&mut self, mine: &[u8]) -> Result<Vec<Vec<u8>>> {
        Ok(vec![mine.to_vec()])
    }
}

fn check_root(root: usize, world: usize) -> Result<()> {
    if root >= world {
        return Err(Error::Usage(format!(
            "broadcast from rank {root}, but there are only {world} ranks"
        )));
    }
    Ok(())
}

/// Point-to-point messages between ranks: what a backend provides to [`Ring`].
pub trait Link {
    /// This rank.
    fn rank(&self) -> usize;
    /// Number of ranks.
    fn world_size(&self) -> usize;
    /// Send `frame` to `peer` (written now or queued, copied if needed); returns without
    /// waiting for the peer to read it (a ring step sends and receives at once).
    fn send(&mut self, peer: usize, frame: &[u8], op: &'static str) -> Result<()>;
    /// The next frame from `peer` into `into` (replacing its contents), waiting at most the
    /// collective timeout.
    fn recv(&mut self, peer: usize, into: &mut Vec<u8>, op: &'static str) -> Result<()>;
    /// Wait until everything sent has left this rank's hands (a link that may keep part of
    /// a send, to write it while it waits for something else, writes it now). Called at the
    /// end of every collective.
    fn flush(&mut self, _op: &'static str) -> Result<()> {
        Ok(())
    }
    /// Tell every peer that this rank failed (best effort).
    fn abort(&mut self, _message: &str) {}
}
