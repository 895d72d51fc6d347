//! The in-process backend: ranks are threads, frames travel through channels. It runs the
//! same [`Ring`] code as the socket backends, so tests can check the collectives' arithmetic
//! without processes, and a single process can train with several replicas.

use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::time::Duration;

use crate::{Error, Link, Result, Ring};

enum Msg {
    Data(Vec<u8>),
    Abort(String),
}

/// One rank's end of an in-process group.
pub struct ThreadLink {
    rank: usize,
    to: Vec<Option<Sender<Msg>>>,
    from: Vec<Option<Receiver<Msg>>>,
    timeout: Duration,
}

/// `n` connected ranks; hand one to each thread. A rank that waits longer than `timeout` for
/// a peer fails with [`Error::Timeout`]; a dropped rank makes its peers fail with
/// [`Error::PeerGone`].
pub fn group(n: usize, timeout: Duration) -> Vec<Ring<ThreadLink>> {
    let mut links: Vec<ThreadLink> = (0..n)
        .map(|rank| ThreadLink {
            rank,
            to: (0..n).map(|_| None).collect(),
            from: (0..n).map(|_| None).collect(),
            timeout,
        })
        .collect();
    for a in 0..n {
        for b in 0..n {
            if a != b {
                let (tx, rx) = channel();
                links[a].to[b] = Some(tx);
                links[b].from[a] = Some(rx);
            }
        }
    }
    links.into_iter().map(Ring::new).collect()
}

impl Link for ThreadLink {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world_size(&self) -> usize {
        self.to.len()
    }

    fn send(&mut self, peer: usize, frame: &[u8], op: &'static str) -> Result<()> {
        let tx = self.to[peer].as_ref().ok_or(Error::Usage(format!(
            "rank {} cannot send to itself",
            self.rank
        )))?;
        tx.send(Msg::Data(frame.to_vec()))
            .map_err(|_| Error::PeerGone { peer, op })
    }

    fn recv(&mut self, peer: usize, into: &mut Vec<u8>, op: &'static str) -> Result<()> {
        let rx = self.from[peer].as_ref().ok_or(Error::Usage(format!(
            "rank {} cannot receive from itself",
            self.rank
        )))?;
        match rx.recv_timeout(self.timeout) {
            Ok(Msg::Data(v)) => {
                *into = v;
                Ok(())
            }
            Ok(Msg::Abort(message)) => Err(Error::PeerFailed { peer, message }),
            Err(RecvTimeoutError::Timeout) => Err(Error::Timeout {
                peer,
                op,
                timeout: self.timeout,
            }),
            Err(RecvTimeoutError::Disconnected) => Err(Error::PeerGone { peer, op }),
        }
    }

    fn abort(&mut self, message: &str) {
        for tx in self.to.iter().flatten() {
            let _ = tx.send(Msg::Abort(message.to_string()));
        }
    }
}
