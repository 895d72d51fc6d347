//! Shared-memory rings between ranks on one host.
//!
//! Every rank creates one **mailbox**: an anonymous memory file (`memfd`, never a name in
//! `/dev/shm`, so nothing is left behind when a rank dies, `kill -9` included) holding a
//! doorbell and one single-producer ring per peer. A peer on the same host (same boot, same
//! network namespace) opens the mailbox through `/proc/PID/fd/FD`, maps it and writes its
//! frames into its ring there; the owner reads them. A frame is `[len: u64 LE][payload]` in
//! the ring's byte stream, so a frame costs one copy in (the sender) and one out (the
//! receiver), against two kernel copies each way over loopback TCP.
//!
//! **Waiting.** Writers ring the owner's doorbell after each write; readers ring the
//! writer's doorbell after freeing space. A rank that has to wait spins briefly, then sleeps
//! on its own doorbell with `futex` (shared, not private: the word is in a shared mapping),
//! up to [`Mailbox::SLEEP`] at a time, so it also notices a peer's death (on the TCP
//! connection, which stays open beside the rings) and the collective timeout.
//!
//! This module holds the crate's only unsafe code: the mapping, atomics placed in it, and
//! copies into and out of it, each bounds-checked against the mapping's length.
#![allow(unsafe_code)]

use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

/// Bytes of ring data per peer (a power of two).
pub(crate) const CAP: usize = 4 << 20;
/// Each ring's header (head and tail on cache lines of their own), before its data.
const RING_HEADER: usize = 4096;
/// The mailbox's own header: doorbell and sleeping flag.
const MAILBOX_HEADER: usize = 4096;
const HEAD: usize = 0;
const TAIL: usize = 128;
const BELL: usize = 0;
const SLEEPING: usize = 64;

/// A shared mapping of a memory file.
pub(crate) struct Mapping {
    ptr: *mut u8,
    len: usize,
    _file: OwnedFd,
}

// SAFETY: the mapping is plain shared memory; every access goes through atomics or through
// copies into ranges that the protocol gives to one side at a time.
unsafe impl Send for Mapping {}
unsafe impl Sync for Mapping {}

impl Mapping {
    fn map(file: OwnedFd, len: usize) -> std::io::Result<Mapping> {
        use rustix::mm::{MapFlags, ProtFlags, mmap};
        // SAFETY: a fresh shared mapping of `len` bytes of a file at least that long; no
        // Rust reference points into it yet.
        let ptr = unsafe {
            mmap(
                std::ptr::null_mut(),
                len,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::SHARED,
                &file,
                0,
            )
        }?;
        Ok(Mapping {
            ptr: ptr.cast(),
            len,
            _file: file,
        })
    }

    fn u32_at(&self, off: usize) -> &AtomicU32 {
        assert!(off.is_multiple_of(4) && off + 4 <= self.len);
        // SAFETY: in bounds and aligned (the mapping is page-aligned); the word lives as
        // long as the mapping and is only ever accessed atomically.
        unsafe { &*(self.ptr.add(off) as *const AtomicU32) }
    }

    fn u64_at(&self, off: usize) -> &AtomicU64 {
        assert!(off.is_multiple_of(8) && off + 8 <= self.len);
        // SAFETY: as for `u32_at`.
        unsafe { &*(self.ptr.add(off) as *const AtomicU64) }
    }

    /// Copy `src` to `off`.
    fn put(&self, off: usize, src: &[u8]) {
        assert!(off + src.len() <= self.len);
        // SAFETY: in bounds; the range is the writer's until it publishes the new head.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), self.ptr.add(off), src.len()) }
    }

    /// Copy from `off` into `dst`.
    fn get(&self, off: usize, dst: &mut [u8]) {
        assert!(off + dst.len() <= self.len);
        // SAFETY: in bounds; the range was published by the writer's head and stays the
        // reader's until it publishes the new tail.
        unsafe { std::ptr::copy_nonoverlapping(self.ptr.add(off), dst.as_mut_ptr(), dst.len()) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmapping what `map` mapped; no reference into it outlives `self`.
        let _ = unsafe { rustix::mm::munmap(self.ptr.cast(), self.len) };
    }
}

/// Size of a mailbox for a world of `n` ranks.
fn mailbox_len(n: usize) -> usize {
    MAILBOX_HEADER + n * (RING_HEADER + CAP)
}

fn ring_base(slot: usize) -> usize {
    MAILBOX_HEADER + slot * (RING_HEADER + CAP)
}

/// A rank's mailbox, its own or a peer's.
pub(crate) struct Mailbox {
    map: Mapping,
    /// The memory file's descriptor number in the owner's process (for peers to open).
    pub(crate) fd: i32,
}

impl Mailbox {
    /// Longest a waiting rank sleeps before it looks at its peers' connections again.
    pub(crate) const SLEEP: Duration = Duration::from_millis(5);

    /// A new mailbox for a world of `n` ranks (sparse: pages are only allocated as rings
    /// are used).
    pub(crate) fn create(n: usize) -> std::io::Result<Mailbox> {
        use rustix::fs::{MemfdFlags, ftruncate, memfd_create};
        let fd = memfd_create("tusk-collective", MemfdFlags::CLOEXEC)?;
        let len = mailbox_len(n);
        ftruncate(&fd, len as u64)?;
        let raw = fd.as_raw_fd();
        Ok(Mailbox {
            map: Mapping::map(fd, len)?,
            fd: raw,
        })
    }

    /// Process `pid`'s mailbox (descriptor `fd` there) for a world of `n` ranks.
    pub(crate) fn open(pid: u32, fd: i32, n: usize) -> std::io::Result<Mailbox> {
        let file = File::options()
            .read(true)
            .write(true)
            .open(format!("/proc/{pid}/fd/{fd}"))?;
        let len = mailbox_len(n);
        if file.metadata()?.len() != len as u64 {
            return Err(std::io::Error::other(format!(
                "/proc/{pid}/fd/{fd} is not a mailbox for {n} ranks"
            )));
        }
        Ok(Mailbox {
            map: Mapping::map(file.into(), len)?,
            fd,
        })
    }

    fn bell(&self) -> &AtomicU32 {
        self.map.u32_at(BELL)
    }

    fn sleeping(&self) -> &AtomicU32 {
        self.map.u32_at(SLEEPING)
    }

    /// Wake the owner if it sleeps.
    pub(crate) fn ring(&self) {
        self.bell().fetch_add(1, Ordering::SeqCst);
        if self.sleeping().load(Ordering::SeqCst) != 0 {
            let _ = rustix::thread::futex::wake(
                self.bell(),
                rustix::thread::futex::Flags::empty(),
                u32::MAX,
            );
        }
    }

    /// The doorbell's value, to be passed to [`Mailbox::sleep`] after checking for work.
    pub(crate) fn ticket(&self) -> u32 {
        self.sleeping().store(1, Ordering::SeqCst);
        self.bell().load(Ordering::SeqCst)
    }

    /// Sleep until the doorbell moves past `ticket` (or [`Mailbox::SLEEP`]); call
    /// [`Mailbox::ticket`], check for work once more, then this.
    pub(crate) fn sleep(&self, ticket: u32) {
        let t = rustix::thread::futex::Timespec {
            tv_sec: 0,
            tv_nsec: Self::SLEEP.as_nanos() as i64,
        };
        let _ = rustix::thread::futex::wait(
            self.bell(),
            rustix::thread::futex::Flags::empty(),
            ticket,
            Some(&t),
        );
        self.sleeping().store(0, Ordering::SeqCst);
    }

    /// Stop announcing sleep (the check after [`Mailbox::ticket`] found work).
    pub(crate) fn awake(&self) {
        self.sleeping().store(0, Ordering::SeqCst);
    }

    fn head(&self, slot: usize) -> &AtomicU64 {
        self.map.u64_at(ring_base(slot) + HEAD)
    }

    fn tail(&self, slot: usize) -> &AtomicU64 {
        self.map.u64_at(ring_base(slot) + TAIL)
    }

    /// Write as much of `bytes` as fits into ring `slot` (this process being its only
    /// writer); returns how much.
    pub(crate) fn push(&self, slot: usize, bytes: &[u8]) -> usize {
        let head = self.head(slot).load(Ordering::Relaxed);
        let tail = self.tail(slot).load(Ordering::Acquire);
        let free = CAP - (head - tail) as usize;
        let n = free.min(bytes.len());
        if n == 0 {
            return 0;
        }
        let at = (head as usize) % CAP;
        let first = n.min(CAP - at);
        let data = ring_base(slot) + RING_HEADER;
        self.map.put(data + at, &bytes[..first]);
        self.map.put(data, &bytes[first..n]);
        self.head(slot).store(head + n as u64, Ordering::Release);
        n
    }

    /// Read up to `dst.len()` bytes from ring `slot` (this process being its only reader);
    /// returns how many.
    pub(crate) fn pull(&self, slot: usize, dst: &mut [u8]) -> usize {
        let tail = self.tail(slot).load(Ordering::Relaxed);
        let head = self.head(slot).load(Ordering::Acquire);
        let n = ((head - tail) as usize).min(dst.len());
        if n == 0 {
            return 0;
        }
        let at = (tail as usize) % CAP;
        let first = n.min(CAP - at);
        let data = ring_base(slot) + RING_HEADER;
        self.map.get(data + at, &mut dst[..first]);
        self.map.get(data, &mut dst[first..n]);
        self.tail(slot).store(tail + n as u64, Ordering::Release);
        n
    }

    /// Room left in ring `slot`.
    pub(crate) fn free(&self, slot: usize) -> usize {
        let head = self.head(slot).load(Ordering::Relaxed);
        CAP - (head - self.tail(slot).load(Ordering::Acquire)) as usize
    }

    /// Bytes waiting in ring `slot`.
    pub(crate) fn available(&self, slot: usize) -> usize {
        let tail = self.tail(slot).load(Ordering::Relaxed);
        (self.head(slot).load(Ordering::Acquire) - tail) as usize
    }
}

/// What identifies this host for the purpose of sharing memory: hostname, boot and network
/// namespace (ranks in different network namespaces stand for different hosts in tests).
pub(crate) fn host_key() -> Option<String> {
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    let net = std::fs::read_link("/proc/self/ns/net").ok()?;
    let host = rustix::system::uname();
    Some(format!(
        "{}/{}/{}",
        host.nodename().to_string_lossy(),
        boot.trim(),
        net.display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ring_carries_bytes_across_its_end_in_order() {
        let mine = Mailbox::create(2).unwrap();
        let theirs = Mailbox::open(std::process::id(), mine.fd, 2).unwrap();
        let data: Vec<u8> = (0..(CAP * 3 + 12345))
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        let mut got = Vec::new();
        let mut sent = 0;
        let mut buf = vec![0u8; 1 << 20];
        while got.len() < data.len() {
            sent += theirs.push(1, &data[sent..(sent + 777_777).min(data.len())]);
            let n = mine.pull(1, &mut buf);
            got.extend_from_slice(&buf[..n]);
        }
        assert!(got == data);
        assert_eq!(mine.available(1), 0);
        assert!(Mailbox::open(std::process::id(), mine.fd, 3).is_err());
    }
}
