//! The collectives, written once over a [`Link`].
//!
//! All-reduce is the bandwidth-optimal ring: a reduce-scatter then an all-gather, N−1 steps
//! each, the buffer cut into N chunks, so every rank sends and receives 2(N−1)/N of the
//! buffer. Chunks travel in segments, and a segment is forwarded as soon as it is reduced, so
//! sending, receiving and adding overlap (pipelining). Chunk `c` is always summed in the same
//! order (starting at rank `c`, then `c+1`, …) and then copied unchanged to everyone: every
//! rank ends with the same bytes.

use crate::{Communicator, Error, Link, ReduceOp, Result, check_root};

/// f32 values per all-reduce segment (256 KiB).
const SEGMENT_FLOATS: usize = 64 * 1024;
/// Bytes per broadcast segment.
const SEGMENT_BYTES: usize = 1 << 20;

/// Ring collectives over any [`Link`].
pub struct Ring<L: Link> {
    link: L,
}

impl<L: Link> Ring<L> {
    /// Collectives over `link`.
    pub fn new(link: L) -> Ring<L> {
        Ring { link }
    }

    /// The link (e.g. for traffic of its own).
    pub fn link_mut(&mut self) -> &mut L {
        &mut self.link
    }

    fn next(&self) -> usize {
        (self.link.rank() + 1) % self.link.world_size()
    }

    fn prev(&self) -> usize {
        let n = self.link.world_size();
        (self.link.rank() + n - 1) % n
    }
}

/// `v` as little-endian bytes: borrowed as they are on little-endian machines.
fn to_bytes(v: &[f32]) -> std::borrow::Cow<'_, [u8]> {
    if cfg!(target_endian = "little") {
        return std::borrow::Cow::Borrowed(bytemuck::cast_slice::<f32, u8>(v));
    }
    let mut out = Vec::with_capacity(v.len() * 4);
    for x in v {
        out.extend_from_slice(&x.to_le_bytes());
    }
    std::borrow::Cow::Owned(out)
}

/// `dst[i] += src[i]` (or `=` when `add` is false) from little-endian bytes: a plain slice
/// loop the compiler vectorises when the bytes are aligned (they are, from the allocator).
fn combine(dst: &mut [f32], src: &[u8], add: bool) {
    if cfg!(target_endian = "little")
        && let Ok(vals) = bytemuck::try_cast_slice::<u8, f32>(src)
    {
        if add {
            for (x, y) in dst.iter_mut().zip(vals) {
                *x += y;
            }
        } else {
            dst.copy_from_slice(vals);
        }
        return;
    }
    for (x, y) in dst.iter_mut().zip(src.chunks_exact(4)) {
        let y = f32::from_le_bytes([y[0], y[1], y[2], y[3]]);
        if add {
            *x += y;
        } else {
            *x = y;
        }
    }
}

fn segments(a: usize, b: usize) -> impl Iterator<Item = (usize, usize)> {
    (a..b)
        .step_by(SEGMENT_FLOATS)
        .map(move |s| (s, (s + SEGMENT_FLOATS).min(b)))
}

fn expect_len(got: &[u8], want: usize, peer: usize, op: &str) -> Result<()> {
    if got.len() != want {
        return Err(Error::Protocol {
            peer,
            message: format!(
                "{op}: expected {want} bytes, got {} (do all ranks pass buffers of the same length?)",
                got.len()
            ),
        });
    }
    Ok(())
}

impl<L: Link> Communicator for Ring<L> {
    fn rank(&self) -> usize {
        self.link.rank()
    }

    fn world_size(&self) -> usize {
        self.link.world_size()
    }

    fn all_reduce(&mut self, buf: &mut [f32], op: ReduceOp) -> Result<()> {
        const OP: &str = "all_reduce";
        let n = self.link.world_size();
        if n == 1 {
            return Ok(());
        }
        let r = self.link.rank();
        let (next, prev) = (self.next(), self.prev());
        let len = buf.len();
        let bounds = |c: usize| (c * len / n, (c + 1) * len / n);
        let (a, b) = bounds(r);
        for (s, e) in segments(a, b) {
            self.link.send(next, &to_bytes(&buf[s..e]), OP)?;
        }
        let mut frame = Vec::new();
        // Reduce-scatter: at step t, chunk r−t−1 arrives, is added and forwarded. The last
        // forward is already the all-gather's first send (this rank's finished chunk r+1).
        for t in 0..n - 1 {
            let (a, b) = bounds((r + 2 * n - t - 1) % n);
            for (s, e) in segments(a, b) {
                self.link.recv(prev, &mut frame, OP)?;
                expect_len(&frame, (e - s) * 4, prev, OP)?;
                combine(&mut buf[s..e], &frame, true);
                self.link.send(next, &to_bytes(&buf[s..e]), OP)?;
            }
        }
        // All-gather: at step t, finished chunk r−t arrives, is copied and forwarded.
        for t in 0..n - 1 {
            let (a, b) = bounds((r + n - t) % n);
            for (s, e) in segments(a, b) {
                self.link.recv(prev, &mut frame, OP)?;
                expect_len(&frame, (e - s) * 4, prev, OP)?;
                combine(&mut buf[s..e], &frame, false);
                if t < n - 2 {
                    self.link.send(next, &frame, OP)?;
                }
            }
        }
        self.link.flush(OP)?;
        if op == ReduceOp::Mean {
            let d = n as f32;
            buf.iter_mut().for_each(|x| *x /= d);
        }
        Ok(())
    }

    fn broadcast(&mut self, buf: &mut Vec<u8>, root: usize) -> Result<()> {
        const OP: &str = "broadcast";
        let n = self.link.world_size();
        check_root(root, n)?;
        if n == 1 {
            return Ok(());
        }
        let (next, prev) = (self.next(), self.prev());
        let forward = next != root;
        if self.link.rank() == root {
            self.link
                .send(next, &(buf.len() as u64).to_le_bytes(), OP)?;
            for seg in buf.chunks(SEGMENT_BYTES) {
                self.link.send(next, seg, OP)?;
            }
            return self.link.flush(OP);
        }
        let mut frame = Vec::new();
        self.link.recv(prev, &mut frame, OP)?;
        expect_len(&frame, 8, prev, OP)?;
        let total = u64::from_le_bytes(frame[..8].try_into().unwrap_or([0; 8])) as usize;
        if forward {
            self.link.send(next, &frame, OP)?;
        }
        buf.clear();
        while buf.len() < total {
            self.link.recv(prev, &mut frame, OP)?;
            if frame.is_empty() || buf.len() + frame.len() > total {
                return Err(Error::Protocol {
                    peer: prev,
                    message: format!(
                        "{OP}: a segment of {} bytes after {} of {total}",
                        frame.len(),
                        buf.len()
                    ),
                });
            }
            buf.extend_from_slice(&frame);
            if forward {
                self.link.send(next, &frame, OP)?;
            }
        }
        self.link.flush(OP)
    }

    fn all_gather(&mut self, mine: &[u8]) -> Result<Vec<Vec<u8>>> {
        const OP: &str = "all_gather";
        let n = self.link.world_size();
        let r = self.link.rank();
        let mut blocks = vec![Vec::new(); n];
        blocks[r] = mine.to_vec();
        if n == 1 {
            return Ok(blocks);
        }
        let (next, prev) = (self.next(), self.prev());
        self.link.send(next, mine, OP)?;
        for t in 0..n - 1 {
            let c = (r + 2 * n - t - 1) % n;
            let mut frame = Vec::new();
            self.link.recv(prev, &mut frame, OP)?;
            if t < n - 2 {
                self.link.send(next, &frame, OP)?;
            }
            blocks[c] = frame;
        }
        self.link.flush(OP)?;
        Ok(blocks)
    }

    fn abort(&mut self, message: &str) {
        self.link.abort(message);
    }
}
