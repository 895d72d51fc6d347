//! The MPI backend (feature `mpi`): for clusters that already launch jobs with `mpirun`.
//! MPI provides rank, size and transport; the collectives are still [`Ring`]'s, over MPI
//! point-to-point messages, so results are bitwise the same as over TCP.
//!
//! Like the TCP link, sends are queued to a thread of their own (MPI must offer
//! `MPI_THREAD_MULTIPLE`), so a ring step sends and receives at once without deadlock. MPI
//! has no receive timeout: a rank that dies ends the job through `mpirun`, which is how MPI
//! jobs fail. [`Link::abort`] prints the message and calls `MPI_Abort`.

use std::sync::mpsc::{Sender, channel};
use std::thread::JoinHandle;

use mpi::Threading;
use mpi::environment::Universe;
use mpi::point_to_point::{Destination, Source};
use mpi::topology::{Communicator as _, SimpleCommunicator};

use crate::{Error, Link, Result, Ring};

const TAG_DATA: i32 = 0;

/// This process's link to the other MPI ranks.
pub struct MpiLink {
    world: SimpleCommunicator,
    rank: usize,
    size: usize,
    tx: Option<Sender<(usize, Vec<u8>)>>,
    writer: Option<JoinHandle<()>>,
    // Finalises MPI when dropped, after the writer thread has stopped.
    universe: Option<Universe>,
}

/// Initialise MPI (once per process) and return the ring collectives over it.
pub fn init() -> Result<Ring<MpiLink>> {
    let (universe, level) = mpi::initialize_with_threading(Threading::Multiple)
        .ok_or_else(|| Error::Mpi("MPI is already initialised in this process".into()))?;
    if level != Threading::Multiple {
        return Err(Error::Mpi(format!(
            "this MPI offers thread level {level:?}; tusk needs MPI_THREAD_MULTIPLE (OpenMPI ≥ 3 has it)"
        )));
    }
    let world = universe.world();
    let (rank, size) = (world.rank() as usize, world.size() as usize);
    let (tx, rx) = channel::<(usize, Vec<u8>)>();
    let writer = std::thread::Builder::new()
        .name("tusk-mpi-send".into())
        .spawn(move || {
            let world = SimpleCommunicator::world();
            for (peer, frame) in rx {
                world
                    .process_at_rank(peer as i32)
                    .send_with_tag(&frame[..], TAG_DATA);
            }
        })
        .map_err(|e| Error::Mpi(format!("starting the send thread: {e}")))?;
    Ok(Ring::new(MpiLink {
        world,
        rank,
        size,
        tx: Some(tx),
        writer: Some(writer),
        universe: Some(universe),
    }))
}

impl Link for MpiLink {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world_size(&self) -> usize {
        self.size
    }

    fn send(&mut self, peer: usize, frame: &[u8], op: &'static str) -> Result<()> {
        let sent = self
            .tx
            .as_ref()
            .is_some_and(|tx| tx.send((peer, frame.to_vec())).is_ok());
        if sent {
            Ok(())
        } else {
            Err(Error::PeerGone { peer, op })
        }
    }

    fn recv(&mut self, peer: usize, into: &mut Vec<u8>, _op: &'static str) -> Result<()> {
        let (v, _status) = self
            .world
            .process_at_rank(peer as i32)
            .receive_vec_with_tag::<u8>(TAG_DATA);
        *into = v;
        Ok(())
    }

    fn abort(&mut self, message: &str) {
        eprintln!("rank {} failed: {message}", self.rank);
        self.world.abort(1);
    }
}

impl Drop for MpiLink {
    fn drop(&mut self) {
        self.tx = None;
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
        drop(self.universe.take());
    }
}
