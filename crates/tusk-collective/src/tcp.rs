//! The socket backend: rendezvous at rank 0, mutual authentication with the job secret, and
//! a full mesh of framed TCP connections.
//!
//! **Rendezvous.** Rank 0 listens on `master_port`. Every other rank opens a listener of its
//! own on an ephemeral port, connects to rank 0 (retrying until the rendezvous timeout) and
//! sends a hello: its rank, the world size, its port and its fingerprint (key → value pairs
//! every rank must agree on, e.g. the resolved config). Once all have come, rank 0 compares
//! the fingerprints with its own and answers everyone with the address table (or with the
//! first differing key). Then rank `j` connects to every rank `0 < i < j`; the rendezvous
//! connection is the link between rank 0 and each rank.
//!
//! **Authentication.** Every connection starts with an HMAC-SHA256 challenge in both
//! directions over fresh 32-byte nonces: the connecting side proves it knows the job secret,
//! then the accepting side does. A wrong secret is refused (and logged on stderr); the
//! secret itself never crosses the network. Traffic is not encrypted.
//!
//! **Frames.** `[kind: u8][len: u64 LE][payload]`; kind 0 carries data, kind 1 a peer's
//! failure message. Each connection has a writer thread fed by a queue, so a rank can send
//! and receive at once (a ring step does both) and a large send never deadlocks against the
//! peer's.
//!
//! **Shared memory.** Once the mesh is up, every pair of ranks on the same host (hostname,
//! boot id and network namespace agree, `TUSK_SHM` is not `0`, and each can open the other's
//! mailbox) moves its data frames through shared-memory rings instead (see `shm`); the TCP
//! connection stays for failure messages and to notice the peer's death. A send writes what
//! fits into the peer's ring and keeps the rest; a rank pushes what it kept whenever it waits
//! (and, before it returns from a collective, until all of it is written),
//! meanwhile setting aside what peers wrote to it, so two ranks sending to each other at once
//! never both wait on full rings.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufReader, BufWriter, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use crate::shm::Mailbox;
use crate::{Error, Link, Result, Ring, World};

const MAGIC: &[u8; 8] = b"TUSKv1\0\0";
const KIND_DATA: u8 = 0;
const KIND_ABORT: u8 = 1;
/// Largest frame accepted (a corrupt length must not allocate the machine away).
const MAX_FRAME: u64 = 16 << 30;
/// Frames up to this size are written by the calling thread when nothing is queued (no
/// hand-off to the writer thread: the latency of a small collective is mostly hand-offs).
const DIRECT_LIMIT: usize = 256 << 10;
/// Longest a single handshake may take once a connection is open.
const HANDSHAKE_LIMIT: Duration = Duration::from_secs(10);

/// What a rank brings to the rendezvous besides its place in the [`World`].
#[derive(Debug, Clone)]
pub struct Options {
    /// The job secret every rank shares (`TUSK_JOB_SECRET`).
    pub secret: Vec<u8>,
    /// How long to wait for every rank to arrive.
    pub rendezvous_timeout: Duration,
    /// How long a collective waits for a peer that sends nothing.
    pub collective_timeout: Duration,
    /// Key → value pairs every rank must agree on; rank 0 refuses a rank whose pairs differ,
    /// naming the first differing key.
    pub fingerprint: BTreeMap<String, String>,
    /// Move data through shared memory between ranks on the same host (both must say so);
    /// [`shared_memory_from_env`] gives the usual setting.
    pub shared_memory: bool,
}

/// Shared memory unless `TUSK_SHM=0`.
pub fn shared_memory_from_env() -> bool {
    std::env::var("TUSK_SHM").map_or(true, |v| v != "0")
}

/// Join the job described by `world`: rendezvous, authenticate, connect the mesh.
pub fn connect(world: &World, opts: &Options) -> Result<Ring<TcpLink>> {
    if opts.secret.is_empty() {
        return Err(Error::World {
            source_name: "TUSK_JOB_SECRET".into(),
            message: "empty: every rank of a job needs the same non-empty secret".into(),
        });
    }
    let deadline = Instant::now() + opts.rendezvous_timeout;
    let master = format!("{}:{}", world.master_addr, world.master_port);
    let mut streams: Vec<Option<TcpStream>> = (0..world.world_size).map(|_| None).collect();
    if world.rank == 0 {
        rendezvous_master(world, opts, &master, deadline, &mut streams)?;
    } else {
        rendezvous_peer(world, opts, &master, deadline, &mut streams)?;
    }
    TcpLink::new(
        world.rank,
        streams,
        opts.collective_timeout,
        opts.shared_memory,
    )
    .map(Ring::new)
}

fn rdv(master: &str, message: impl Into<String>) -> Error {
    Error::Rendezvous {
        master: master.to_string(),
        message: message.into(),
    }
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let what = what.into();
    move |source| Error::Io { what, source }
}

fn listen(addr: &str, what: &str) -> Result<TcpListener> {
    let l = TcpListener::bind(addr).map_err(|e| {
        let hint = if e.kind() == ErrorKind::AddrInUse {
            " (the port is in use: another job or a leftover process holds it; choose another --master-port)"
        } else {
            ""
        };
        Error::Io {
            what: format!("{what}: listening on {addr}{hint}"),
            source: e,
        }
    })?;
    l.set_nonblocking(true)
        .map_err(io_err(format!("{what}: listener on {addr}")))?;
    Ok(l)
}

/// Accept one connection before `deadline`, or `None` when it passes.
fn accept_until(l: &TcpListener, deadline: Instant) -> Result<Option<(TcpStream, SocketAddr)>> {
    loop {
        match l.accept() {
            Ok((s, a)) => {
                s.set_nonblocking(false)
                    .map_err(io_err(format!("connection from {a}")))?;
                let _ = s.set_nodelay(true);
                return Ok(Some((s, a)));
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::Interrupted => {
                if Instant::now() >= deadline {
                    return Ok(None);
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => return Err(io_err("accepting a connection")(e)),
        }
    }
}

fn nonce() -> [u8; 32] {
    let mut n = [0u8; 32];
    // The kernel's generator; a time/pid/RandomState fallback keeps nonces fresh without it.
    let ok = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut n));
    if ok.is_err() {
        use std::hash::{BuildHasher, Hasher};
        for (i, c) in n.chunks_mut(8).enumerate() {
            let mut h = std::hash::RandomState::new().build_hasher();
            h.write_usize(i);
            h.write_u128(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_nanos(),
            );
            h.write_u32(std::process::id());
            c.copy_from_slice(&h.finish().to_le_bytes());
        }
    }
    n
}

fn mac(secret: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut m =
        <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("HMAC takes keys of any length");
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().into()
}

/// Constant-time comparison of two MACs.
fn same_mac(a: &[u8], b: &[u8; 32]) -> bool {
    a.len() == 32 && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn set_limit(s: &TcpStream, limit: Duration) {
    let l = Some(limit.max(Duration::from_millis(1)));
    let _ = s.set_read_timeout(l);
    let _ = s.set_write_timeout(l);
}

/// The connecting side: prove membership as `rank`, then check the other side's proof.
fn handshake_connect(s: &mut TcpStream, secret: &[u8], rank: usize, world: usize) -> Result<()> {
    let who = s
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| "peer".into());
    let ctx = |what: &str| format!("handshake with {who}: {what}");
    set_limit(s, HANDSHAKE_LIMIT);
    let mut hello = [0u8; 40];
    s.read_exact(&mut hello).map_err(|e| {
        if e.kind() == ErrorKind::UnexpectedEof {
            Error::Io {
                what: ctx("closed before greeting (is it a tusk rank of this job?)"),
                source: e,
            }
        } else {
            io_err(ctx("reading the greeting"))(e)
        }
    })?;
    if &hello[..8] != MAGIC {
        return Err(Error::Io {
            what: ctx("not a tusk rank (unexpected greeting)"),
            source: std::io::Error::new(ErrorKind::InvalidData, "bad magic"),
        });
    }
    let na = &hello[8..40];
    let nc = nonce();
    let (r, w) = ((rank as u32).to_le_bytes(), (world as u32).to_le_bytes());
    let m = mac(secret, &[b"connect", na, &nc, &r, &w]);
    let mut out = Vec::with_capacity(80);
    out.extend_from_slice(&r);
    out.extend_from_slice(&w);
    out.extend_from_slice(&nc);
    out.extend_from_slice(&m);
    s.write_all(&out)
        .map_err(io_err(ctx("sending our proof")))?;
    let mut status = [0u8; 1];
    s.read_exact(&mut status)
        .map_err(io_err(ctx("waiting for the verdict")))?;
    if status[0] != 0 {
        let mut len = [0u8; 4];
        let mut text = String::from("refused");
        if s.read_exact(&mut len).is_ok() {
            let mut b = vec![0u8; u32::from_le_bytes(len).min(4096) as usize];
            if s.read_exact(&mut b).is_ok() {
                text = String::from_utf8_lossy(&b).into_owned();
            }
        }
        return Err(Error::Rendezvous {
            master: who,
            message: format!("refused this rank ({rank}): {text}"),
        });
    }
    let mut theirs = [0u8; 32];
    s.read_exact(&mut theirs)
        .map_err(io_err(ctx("reading its proof")))?;
    if !same_mac(&theirs, &mac(secret, &[b"accept", &nc, na])) {
        return Err(Error::Rendezvous {
            master: who,
            message: "it does not know this job's secret (TUSK_JOB_SECRET differs)".into(),
        });
    }
    Ok(())
}

/// The accepting side: check the connecting rank's proof, then prove membership back.
/// `Ok(None)`: refused (logged).
fn handshake_accept(
    s: &mut TcpStream,
    from: SocketAddr,
    secret: &[u8],
    world: usize,
    me: usize,
) -> Result<Option<usize>> {
    handshake_accept_as(s, from, secret, world, me, &format!("rank {me}"))
}

/// [`handshake_accept`] for any accepting process: `me` is a rank no peer may claim,
/// `name` how the logs call this side.
fn handshake_accept_as(
    s: &mut TcpStream,
    from: SocketAddr,
    secret: &[u8],
    world: usize,
    me: usize,
    name: &str,
) -> Result<Option<usize>> {
    set_limit(s, HANDSHAKE_LIMIT);
    let na = nonce();
    let mut hello = Vec::with_capacity(40);
    hello.extend_from_slice(MAGIC);
    hello.extend_from_slice(&na);
    if s.write_all(&hello).is_err() {
        return Ok(None);
    }
    let mut msg = [0u8; 72];
    if let Err(e) = s.read_exact(&mut msg) {
        eprintln!(
            "tusk: {name} refused a connection from {from}: no valid greeting ({e}); is something other than a tusk rank connecting?"
        );
        return Ok(None);
    }
    let (r, w, nc, m) = (&msg[0..4], &msg[4..8], &msg[8..40], &msg[40..72]);
    let refuse = |s: &mut TcpStream, why: &str| {
        eprintln!("tusk: {name} refused a connection from {from}: {why}");
        let mut out = vec![1u8];
        out.extend_from_slice(&(why.len() as u32).to_le_bytes());
        out.extend_from_slice(why.as_bytes());
        let _ = s.write_all(&out);
        let _ = s.shutdown(Shutdown::Both);
    };
    if !same_mac(m, &mac(secret, &[b"connect", &na, nc, r, w])) {
        refuse(
            s,
            "wrong job secret (every rank needs the same TUSK_JOB_SECRET)",
        );
        return Ok(None);
    }
    let rank = u32::from_le_bytes([r[0], r[1], r[2], r[3]]) as usize;
    let their_world = u32::from_le_bytes([w[0], w[1], w[2], w[3]]) as usize;
    if their_world != world {
        refuse(
            s,
            &format!("it expects {their_world} ranks, {name} expects {world}"),
        );
        return Ok(None);
    }
    if rank >= world || rank == me {
        refuse(s, &format!("rank {rank} is not a valid peer of {name}"));
        return Ok(None);
    }
    let proof = mac(secret, &[b"accept", nc, &na]);
    let mut out = vec![0u8];
    out.extend_from_slice(&proof);
    if s.write_all(&out).is_err() {
        return Ok(None);
    }
    Ok(Some(rank))
}

/// Connections to services of a job other than the ranks' mesh (embedding servers): the
/// same HMAC challenge with the job secret and the same frames.
pub mod service {
    use super::*;

    /// The connecting side (worker `rank` of `world`): proves it knows the secret and checks
    /// that the service does too.
    pub fn connect(s: &mut TcpStream, secret: &[u8], rank: usize, world: usize) -> Result<()> {
        handshake_connect(s, secret, rank, world)
    }

    /// The service side: the connecting worker's rank, or `None` when it was refused (wrong
    /// secret, another world size; logged on stderr naming `name`).
    pub fn accept(
        s: &mut TcpStream,
        from: SocketAddr,
        secret: &[u8],
        world: usize,
        name: &str,
    ) -> Result<Option<usize>> {
        handshake_accept_as(s, from, secret, world, usize::MAX, name)
    }

    /// Write one data frame.
    pub fn send(w: &mut impl Write, payload: &[u8]) -> std::io::Result<()> {
        write_frame(w, KIND_DATA, payload)
    }

    /// Read one frame into `into`; a peer's failure frame becomes an error carrying its text.
    pub fn recv(r: &mut impl Read, into: &mut Vec<u8>) -> std::io::Result<()> {
        if read_frame(r, into)? == KIND_ABORT {
            return Err(std::io::Error::other(
                String::from_utf8_lossy(into).into_owned(),
            ));
        }
        Ok(())
    }

    /// Set read and write timeouts on a connection after its handshake.
    pub fn set_timeouts(s: &TcpStream, limit: Duration) {
        set_limit(s, limit)
    }
}

fn write_frame(w: &mut impl Write, kind: u8, payload: &[u8]) -> std::io::Result<()> {
    let mut h = [0u8; 9];
    h[0] = kind;
    h[1..].copy_from_slice(&(payload.len() as u64).to_le_bytes());
    w.write_all(&h)?;
    w.write_all(payload)
}

fn read_frame(r: &mut impl Read, into: &mut Vec<u8>) -> std::io::Result<u8> {
    let mut h = [0u8; 9];
    r.read_exact(&mut h)?;
    let len = u64::from_le_bytes(h[1..].try_into().unwrap_or([0; 8]));
    if len > MAX_FRAME || h[0] > KIND_ABORT {
        return Err(std::io::Error::new(
            ErrorKind::InvalidData,
            format!("bad frame header (kind {}, {len} bytes)", h[0]),
        ));
    }
    into.clear();
    // Appends without zeroing the buffer first.
    r.take(len).read_to_end(into)?;
    if into.len() as u64 != len {
        return Err(std::io::Error::new(
            ErrorKind::UnexpectedEof,
            format!("frame cut short: {} of {len} bytes", into.len()),
        ));
    }
    Ok(h[0])
}

fn send_json(s: &mut TcpStream, v: &Value) -> std::io::Result<()> {
    write_frame(s, KIND_DATA, v.to_string().as_bytes())
}

fn recv_json(s: &mut TcpStream) -> std::io::Result<Value> {
    let mut b = Vec::new();
    let kind = read_frame(s, &mut b)?;
    if kind == KIND_ABORT {
        return Err(std::io::Error::other(
            String::from_utf8_lossy(&b).into_owned(),
        ));
    }
    serde_json::from_slice(&b).map_err(|e| std::io::Error::new(ErrorKind::InvalidData, e))
}

fn list(ranks: impl IntoIterator<Item = usize>) -> String {
    ranks
        .into_iter()
        .map(|r| r.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// First key on which `theirs` differs from `ours`, as a sentence.
pub(crate) fn first_difference(
    ours: &BTreeMap<String, String>,
    theirs: &BTreeMap<String, String>,
    rank: usize,
) -> Option<String> {
    let keys: BTreeSet<&String> = ours.keys().chain(theirs.keys()).collect();
    for k in keys {
        let (a, b) = (ours.get(k), theirs.get(k));
        if a != b {
            let show = |v: Option<&String>| v.map_or("nothing".to_string(), |v| format!("{v:?}"));
            return Some(format!(
                "`{k}` differs: rank 0 has {}, rank {rank} has {}",
                show(a),
                show(b)
            ));
        }
    }
    None
}

/// What a rank told rank 0: its address as seen from rank 0, its port, its fingerprint.
type Hello = (SocketAddr, u16, BTreeMap<String, String>);

fn rendezvous_master(
    world: &World,
    opts: &Options,
    master: &str,
    deadline: Instant,
    streams: &mut [Option<TcpStream>],
) -> Result<()> {
    let n = world.world_size;
    let listener = listen(&format!("0.0.0.0:{}", world.master_port), "rank 0")?;
    let mut hellos: Vec<Option<Hello>> = vec![None; n];
    let mut waiting = n - 1;
    while waiting > 0 {
        let Some((mut s, from)) = accept_until(&listener, deadline)? else {
            let missing: Vec<usize> = (1..n).filter(|r| hellos[*r].is_none()).collect();
            let msg = format!(
                "rank{} {} of {n} never connected within {} s (--rendezvous-timeout); are they started, with MASTER_ADDR/--master-addr pointing here?",
                if missing.len() > 1 { "s" } else { "" },
                list(missing),
                opts.rendezvous_timeout.as_secs()
            );
            for s in streams.iter_mut().flatten() {
                let _ = send_json(s, &json!({"ok": false, "error": msg}));
            }
            return Err(rdv(master, msg));
        };
        let Some(rank) = handshake_accept(&mut s, from, &opts.secret, n, 0)? else {
            continue;
        };
        let hello = match recv_json(&mut s) {
            Ok(v) => v,
            Err(e) => {
                eprintln!("tusk: rank 0 dropped rank {rank} ({from}): no hello ({e})");
                continue;
            }
        };
        if hellos[rank].is_some() {
            let why = format!(
                "rank {rank} connected twice (the second time from {from}): two processes were given the same rank"
            );
            let _ = send_json(&mut s, &json!({"ok": false, "error": why}));
            for s in streams.iter_mut().flatten() {
                let _ = send_json(s, &json!({"ok": false, "error": why}));
            }
            return Err(rdv(master, why));
        }
        let port = hello["port"].as_u64().unwrap_or(0) as u16;
        let fp: BTreeMap<String, String> = hello["fingerprint"]
            .as_object()
            .map(|o| {
                o.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                    .collect()
            })
            .unwrap_or_default();
        hellos[rank] = Some((from, port, fp));
        streams[rank] = Some(s);
        waiting -= 1;
    }
    drop(listener);
    // Everyone is here: compare fingerprints, then hand out the address table.
    let mut verdict: Option<(usize, String)> = None;
    for (rank, h) in hellos.iter().enumerate() {
        if let Some((_, _, fp)) = h
            && let Some(d) = first_difference(&opts.fingerprint, fp, rank)
        {
            verdict = Some((rank, d));
            break;
        }
    }
    let peers: Vec<String> = hellos
        .iter()
        .map(|h| {
            h.as_ref().map_or(String::new(), |(a, p, _)| {
                SocketAddr::new(a.ip(), *p).to_string()
            })
        })
        .collect();
    let reply = match &verdict {
        None => json!({"ok": true, "peers": peers}),
        Some((rank, d)) => json!({"ok": false, "mismatch": rank, "error": d}),
    };
    for (rank, s) in streams.iter_mut().enumerate() {
        if let Some(s) = s {
            send_json(s, &reply).map_err(io_err(format!("answering rank {rank}")))?;
        }
    }
    match verdict {
        None => Ok(()),
        Some((rank, message)) => Err(Error::Mismatch { rank, message }),
    }
}

fn rendezvous_peer(
    world: &World,
    opts: &Options,
    master: &str,
    deadline: Instant,
    streams: &mut [Option<TcpStream>],
) -> Result<()> {
    let (n, me) = (world.world_size, world.rank);
    let listener = listen("0.0.0.0:0", &format!("rank {me}"))?;
    let port = listener
        .local_addr()
        .map_err(io_err(format!("rank {me}: listener address")))?
        .port();
    // Connect to rank 0, retrying until it listens.
    let mut last = String::from("no attempt");
    let mut s = loop {
        let attempt = master
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve {master}: {e}"))
            .and_then(|mut addrs| {
                addrs
                    .next()
                    .ok_or_else(|| format!("{master} resolves to no address"))
            })
            .and_then(|a| {
                let left = deadline.saturating_duration_since(Instant::now());
                TcpStream::connect_timeout(
                    &a,
                    left.clamp(Duration::from_millis(1), Duration::from_secs(5)),
                )
                .map_err(|e| e.to_string())
            });
        match attempt {
            Ok(s) => break s,
            Err(e) => last = e,
        }
        if Instant::now() >= deadline {
            return Err(rdv(
                master,
                format!(
                    "rank {me} could not reach rank 0 within {} s (--rendezvous-timeout): {last}",
                    opts.rendezvous_timeout.as_secs()
                ),
            ));
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let _ = s.set_nodelay(true);
    handshake_connect(&mut s, &opts.secret, me, n)?;
    let fp: serde_json::Map<String, Value> = opts
        .fingerprint
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    send_json(
        &mut s,
        &json!({"rank": me, "world": n, "port": port, "fingerprint": fp}),
    )
    .map_err(io_err(format!(
        "rank {me}: sending hello to rank 0 at {master}"
    )))?;
    let left = deadline.saturating_duration_since(Instant::now());
    let _ = s.set_read_timeout(Some(left.max(Duration::from_secs(1))));
    let reply = recv_json(&mut s).map_err(|e| {
        rdv(
            master,
            format!("rank {me}: no answer from rank 0 while waiting for the other ranks: {e}"),
        )
    })?;
    if reply["ok"].as_bool() != Some(true) {
        let msg = reply["error"].as_str().unwrap_or("refused").to_string();
        if let Some(r) = reply["mismatch"].as_u64() {
            return Err(Error::Mismatch {
                rank: r as usize,
                message: msg,
            });
        }
        return Err(rdv(master, msg));
    }
    let peers: Vec<String> = reply["peers"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|v| v.as_str().unwrap_or("").to_string())
                .collect()
        })
        .unwrap_or_default();
    if peers.len() != n {
        return Err(rdv(
            master,
            format!("rank 0 sent {} addresses for {n} ranks", peers.len()),
        ));
    }
    streams[0] = Some(s);
    // Mesh: connect to every rank below, accept every rank above.
    for (peer, addr) in peers.iter().enumerate().take(me).skip(1) {
        let mut c = loop {
            match TcpStream::connect(addr.as_str()) {
                Ok(c) => break c,
                Err(e) if Instant::now() < deadline => {
                    last = e.to_string();
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => {
                    return Err(rdv(
                        master,
                        format!(
                            "rank {me} could not connect to rank {peer} at {addr}: {e} (after {last})"
                        ),
                    ));
                }
            }
        };
        let _ = c.set_nodelay(true);
        handshake_connect(&mut c, &opts.secret, me, n)?;
        streams[peer] = Some(c);
    }
    let mut missing: BTreeSet<usize> = (me + 1..n).collect();
    while !missing.is_empty() {
        let Some((mut c, from)) = accept_until(&listener, deadline)? else {
            return Err(rdv(
                master,
                format!(
                    "rank {me}: rank(s) {} never connected to it within {} s",
                    list(missing.iter().copied()),
                    opts.rendezvous_timeout.as_secs()
                ),
            ));
        };
        if let Some(r) = handshake_accept(&mut c, from, &opts.secret, n, me)? {
            if missing.remove(&r) {
                streams[r] = Some(c);
            } else {
                eprintln!("tusk: rank {me} refused a second connection from rank {r} ({from})");
            }
        }
    }
    Ok(())
}

/// What the writer thread writes: a frame, or the unsent rest of one the caller began.
enum Out {
    Frame(u8, Vec<u8>),
    Raw(Vec<u8>),
}

struct Peer {
    reader: BufReader<TcpStream>,
    tx: Option<Sender<Out>>,
    writer: Option<JoinHandle<()>>,
    stream: TcpStream,
    /// Items handed to the writer thread and not yet in the kernel: while 0, the caller may
    /// write itself without reordering anything.
    queued: Arc<AtomicUsize>,
    /// Data frames go through shared memory (a peer on the same host).
    shm: Option<ShmPeer>,
}

/// A same-host peer's side of the shared-memory path.
struct ShmPeer {
    /// The peer's mailbox, holding the ring this rank writes to.
    theirs: Mailbox,
    /// Bytes sent but not yet written into the peer's ring (from `pending_off`).
    pending: Vec<u8>,
    pending_off: usize,
    /// Bytes taken out of this rank's ring from the peer before a receive asked for them.
    early: Vec<u8>,
    early_off: usize,
}

impl Peer {
    fn queue(&self, out: Out) -> bool {
        self.queued.fetch_add(1, Ordering::AcqRel);
        self.tx.as_ref().is_some_and(|tx| tx.send(out).is_ok())
    }
}

/// One rank's connections to every other rank.
pub struct TcpLink {
    rank: usize,
    peers: Vec<Option<Peer>>,
    timeout: Duration,
    /// This rank's mailbox, while some peer writes to it.
    mailbox: Option<Mailbox>,
}

fn writer_loop(stream: TcpStream, rx: Receiver<Out>, queued: Arc<AtomicUsize>) {
    let mut w = BufWriter::with_capacity(256 << 10, stream);
    let put = |w: &mut BufWriter<TcpStream>, o: Out| match o {
        Out::Frame(kind, frame) => write_frame(w, kind, &frame),
        Out::Raw(bytes) => w.write_all(&bytes),
    };
    while let Ok(o) = rx.recv() {
        let mut n = 1;
        if put(&mut w, o).is_err() {
            return;
        }
        while let Ok(o) = rx.try_recv() {
            n += 1;
            if put(&mut w, o).is_err() {
                return;
            }
        }
        if w.flush().is_err() {
            return;
        }
        queued.fetch_sub(n, Ordering::AcqRel);
    }
}

impl TcpLink {
    fn new(
        rank: usize,
        mut streams: Vec<Option<TcpStream>>,
        timeout: Duration,
        shared_memory: bool,
    ) -> Result<TcpLink> {
        let (mailbox, mut shared) = shm_handshake(rank, &mut streams, shared_memory)?;
        let mut peers = Vec::with_capacity(streams.len());
        for (p, s) in streams.into_iter().enumerate() {
            let Some(s) = s else {
                peers.push(None);
                continue;
            };
            let what = format!("rank {rank}: connection to rank {p}");
            // Room for a whole chunk in flight, so the caller's non-blocking writes rarely
            // fall back to the writer thread (best effort: the kernel caps it).
            let _ = rustix::net::sockopt::set_socket_send_buffer_size(&s, 4 << 20);
            let _ = rustix::net::sockopt::set_socket_recv_buffer_size(&s, 4 << 20);
            s.set_read_timeout(Some(timeout))
                .map_err(io_err(what.clone()))?;
            s.set_write_timeout(Some(timeout))
                .map_err(io_err(what.clone()))?;
            let w = s.try_clone().map_err(io_err(what.clone()))?;
            let r = s.try_clone().map_err(io_err(what.clone()))?;
            let (tx, rx) = channel();
            let queued = Arc::new(AtomicUsize::new(0));
            let q = queued.clone();
            let writer = std::thread::Builder::new()
                .name(format!("tusk-send-{p}"))
                .spawn(move || writer_loop(w, rx, q))
                .map_err(io_err(what))?;
            peers.push(Some(Peer {
                reader: BufReader::with_capacity(256 << 10, r),
                tx: Some(tx),
                writer: Some(writer),
                stream: s,
                queued,
                shm: shared[p].take().map(|theirs| ShmPeer {
                    theirs,
                    pending: Vec::new(),
                    pending_off: 0,
                    early: Vec::new(),
                    early_off: 0,
                }),
            }));
        }
        Ok(TcpLink {
            rank,
            peers,
            timeout,
            mailbox,
        })
    }

    /// Push what was kept of earlier sends into the peers' rings; true while some remains.
    fn progress(&mut self) -> bool {
        let me = self.rank;
        let mut left = false;
        for s in self
            .peers
            .iter_mut()
            .flatten()
            .filter_map(|p| p.shm.as_mut())
        {
            if s.pending_off < s.pending.len() {
                let n = s.theirs.push(me, &s.pending[s.pending_off..]);
                if n > 0 {
                    s.theirs.ring();
                }
                s.pending_off += n;
                if s.pending_off == s.pending.len() {
                    s.pending.clear();
                    s.pending_off = 0;
                } else {
                    left = true;
                }
            }
        }
        left
    }

    /// Set aside what every same-host peer has written to this rank (so that a peer waiting
    /// for room in its ring can go on); true if anything moved.
    fn drain(&mut self) -> bool {
        let Some(own) = self.mailbox.as_ref() else {
            return false;
        };
        let mut moved = false;
        for (p, peer) in self.peers.iter_mut().enumerate() {
            let Some(s) = peer.as_mut().and_then(|p| p.shm.as_mut()) else {
                continue;
            };
            let n = own.available(p);
            if n > 0 {
                let at = s.early.len();
                s.early.resize(at + n, 0);
                let got = own.pull(p, &mut s.early[at..]);
                s.early.truncate(at + got);
                s.theirs.ring();
                moved = true;
            }
        }
        moved
    }

    /// Up to `dst.len()` bytes from `peer`: first what was set aside, then its ring.
    fn take(&mut self, peer: usize, dst: &mut [u8]) -> usize {
        let Some(own) = self.mailbox.as_ref() else {
            return 0;
        };
        let Some(s) = self.peers[peer].as_mut().and_then(|p| p.shm.as_mut()) else {
            return 0;
        };
        let mut n = 0;
        if s.early_off < s.early.len() {
            n = (s.early.len() - s.early_off).min(dst.len());
            dst[..n].copy_from_slice(&s.early[s.early_off..s.early_off + n]);
            s.early_off += n;
            if s.early_off == s.early.len() {
                s.early.clear();
                s.early_off = 0;
            }
        }
        if n < dst.len() {
            let m = own.pull(peer, &mut dst[n..]);
            if m > 0 {
                s.theirs.ring();
            }
            n += m;
        }
        n
    }

    /// Nothing moved: spin a little, then sleep on this rank's doorbell until a peer writes
    /// or makes room; every sleep also checks that `peer` is alive and the time spent against
    /// the collective timeout. `drain` says whether data from any peer counts as work (a
    /// flush sets it aside) or only data from `peer` (a receive).
    fn pause(
        &mut self,
        peer: usize,
        op: &'static str,
        since: Instant,
        idle: &mut u32,
        drain: bool,
    ) -> Result<()> {
        *idle += 1;
        if *idle < 200 {
            std::hint::spin_loop();
            return Ok(());
        }
        if *idle < 220 {
            std::thread::yield_now();
            return Ok(());
        }
        let me = self.rank;
        if let Some(own) = self.mailbox.as_ref() {
            let ticket = own.ticket();
            let mut work = false;
            for (p, s) in self.peers.iter().enumerate() {
                let Some(s) = s.as_ref().and_then(|s| s.shm.as_ref()) else {
                    continue;
                };
                work |= (p == peer || drain) && own.available(p) > 0;
                work |= s.pending_off < s.pending.len() && s.theirs.free(me) > 0;
            }
            if work {
                own.awake();
                return Ok(());
            }
            own.sleep(ticket);
        }
        self.check_alive(peer, op)?;
        if since.elapsed() > self.timeout {
            return Err(Error::Timeout {
                peer,
                op,
                timeout: self.timeout,
            });
        }
        Ok(())
    }

    /// A same-host peer's TCP connection carries only its failure message or its end.
    fn check_alive(&mut self, peer: usize, op: &'static str) -> Result<()> {
        let mut b = [0u8; 1];
        let flags = rustix::net::RecvFlags::PEEK | rustix::net::RecvFlags::DONTWAIT;
        let unread = self.mailbox.as_ref().map_or(0, |own| own.available(peer));
        let p = self.peer(peer)?;
        match rustix::net::recv(&p.stream, &mut b, flags) {
            // What it wrote before it went is still to be read.
            Ok((0, _)) if unread > 0 => Ok(()),
            Ok((0, _)) => Err(Error::PeerGone { peer, op }),
            Ok(_) => {
                let mut m = Vec::new();
                match read_frame(&mut p.reader, &mut m) {
                    Ok(KIND_ABORT) => Err(Error::PeerFailed {
                        peer,
                        message: String::from_utf8_lossy(&m).into_owned(),
                    }),
                    Ok(_) => Err(Error::Protocol {
                        peer,
                        message: "a data frame on the connection of a shared-memory peer".into(),
                    }),
                    Err(_) => Err(Error::PeerGone { peer, op }),
                }
            }
            Err(e) if e == rustix::io::Errno::AGAIN || e == rustix::io::Errno::INTR => Ok(()),
            Err(_) => Err(Error::PeerGone { peer, op }),
        }
    }

    /// Wait until everything kept from sends is in the peers' rings, setting aside what
    /// they write meanwhile.
    fn flush_shm(&mut self, op: &'static str) -> Result<()> {
        let since = Instant::now();
        let mut idle = 0;
        while self.progress() {
            if self.drain() {
                idle = 0;
                continue;
            }
            let waiting = self
                .peers
                .iter()
                .enumerate()
                .find_map(|(i, p)| {
                    p.as_ref()
                        .and_then(|p| p.shm.as_ref())
                        .filter(|s| s.pending_off < s.pending.len())
                        .map(|_| i)
                })
                .unwrap_or(self.rank);
            self.pause(waiting, op, since, &mut idle, true)?;
        }
        Ok(())
    }

    fn shm_send(&mut self, peer: usize, frame: &[u8]) {
        let me = self.rank;
        let Some(s) = self.peers[peer].as_mut().and_then(|p| p.shm.as_mut()) else {
            return;
        };
        let header = (frame.len() as u64).to_le_bytes();
        if s.pending_off < s.pending.len() {
            s.pending.extend_from_slice(&header);
            s.pending.extend_from_slice(frame);
            return;
        }
        let n = s.theirs.push(me, &header);
        if n < header.len() {
            s.pending.extend_from_slice(&header[n..]);
            s.pending.extend_from_slice(frame);
        } else {
            let m = s.theirs.push(me, frame);
            s.pending.extend_from_slice(&frame[m..]);
        }
        s.theirs.ring();
    }

    fn shm_recv(&mut self, peer: usize, into: &mut Vec<u8>, op: &'static str) -> Result<()> {
        let since = Instant::now();
        let mut idle = 0;
        let mut header = [0u8; 8];
        self.fill(peer, &mut header, op, since, &mut idle)?;
        let len = u64::from_le_bytes(header);
        if len > MAX_FRAME {
            return Err(Error::Protocol {
                peer,
                message: format!("frame of {len} bytes"),
            });
        }
        let len = len as usize;
        into.clear();
        into.resize(len, 0);
        self.fill(peer, into, op, since, &mut idle)?;
        self.progress();
        Ok(())
    }

    /// All of `buf` from `peer`, pushing what this rank kept whenever nothing arrives.
    fn fill(
        &mut self,
        peer: usize,
        buf: &mut [u8],
        op: &'static str,
        since: Instant,
        idle: &mut u32,
    ) -> Result<()> {
        let mut got = 0;
        while got < buf.len() {
            let n = self.take(peer, &mut buf[got..]);
            got += n;
            if n > 0 {
                *idle = 0;
            } else {
                self.progress();
                self.pause(peer, op, since, idle, false)?;
            }
        }
        Ok(())
    }

    fn peer(&mut self, peer: usize) -> Result<&mut Peer> {
        let me = self.rank;
        self.peers
            .get_mut(peer)
            .and_then(Option::as_mut)
            .ok_or_else(|| Error::Usage(format!("rank {me} has no connection to rank {peer}")))
    }
}

impl TcpLink {
    /// The peers this rank reaches through shared memory.
    pub fn shared_memory_peers(&self) -> Vec<usize> {
        (0..self.peers.len())
            .filter(|&p| self.peers[p].as_ref().is_some_and(|p| p.shm.is_some()))
            .collect()
    }
}

impl Link for TcpLink {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world_size(&self) -> usize {
        self.peers.len()
    }

    fn send(&mut self, peer: usize, frame: &[u8], op: &'static str) -> Result<()> {
        let me = self.rank;
        let p = self.peer(peer)?;
        if p.shm.is_some() {
            self.shm_send(peer, frame);
            return Ok(());
        }
        if frame.len() <= DIRECT_LIMIT && p.queued.load(Ordering::Acquire) == 0 {
            // Nothing queued: write now without blocking; what the socket does not take
            // goes to the writer thread, in order.
            let mut header = [0u8; 9];
            header[0] = KIND_DATA;
            header[1..].copy_from_slice(&(frame.len() as u64).to_le_bytes());
            let flags = rustix::net::SendFlags::DONTWAIT | rustix::net::SendFlags::NOSIGNAL;
            let iov = [std::io::IoSlice::new(&header), std::io::IoSlice::new(frame)];
            let mut control = rustix::net::SendAncillaryBuffer::default();
            let sent = rustix::net::sendmsg(&p.stream, &iov, &mut control, flags);
            let rest = match sent {
                Ok(n) if n == 9 + frame.len() => return Ok(()),
                Ok(n) => {
                    let mut rest = Vec::with_capacity(9 + frame.len() - n);
                    if n < 9 {
                        rest.extend_from_slice(&header[n..]);
                        rest.extend_from_slice(frame);
                    } else {
                        rest.extend_from_slice(&frame[n - 9..]);
                    }
                    rest
                }
                Err(e) if e == rustix::io::Errno::AGAIN || e == rustix::io::Errno::INTR => {
                    let mut rest = Vec::with_capacity(9 + frame.len());
                    rest.extend_from_slice(&header);
                    rest.extend_from_slice(frame);
                    rest
                }
                Err(e) if e == rustix::io::Errno::PIPE || e == rustix::io::Errno::CONNRESET => {
                    return Err(Error::PeerGone { peer, op });
                }
                Err(e) => {
                    return Err(Error::Io {
                        what: format!("rank {me}: sending to rank {peer} during {op}"),
                        source: e.into(),
                    });
                }
            };
            return if p.queue(Out::Raw(rest)) {
                Ok(())
            } else {
                Err(Error::PeerGone { peer, op })
            };
        }
        if p.queue(Out::Frame(KIND_DATA, frame.to_vec())) {
            Ok(())
        } else {
            Err(Error::PeerGone { peer, op })
        }
    }

    fn recv(&mut self, peer: usize, into: &mut Vec<u8>, op: &'static str) -> Result<()> {
        let timeout = self.timeout;
        if self.peer(peer)?.shm.is_some() {
            return self.shm_recv(peer, into, op);
        }
        let p = self.peer(peer)?;
        match read_frame(&mut p.reader, into) {
            Ok(KIND_DATA) => Ok(()),
            Ok(_) => Err(Error::PeerFailed {
                peer,
                message: String::from_utf8_lossy(into).into_owned(),
            }),
            Err(e) => Err(match e.kind() {
                ErrorKind::WouldBlock | ErrorKind::TimedOut => Error::Timeout { peer, op, timeout },
                ErrorKind::UnexpectedEof
                | ErrorKind::ConnectionReset
                | ErrorKind::ConnectionAborted
                | ErrorKind::BrokenPipe => Error::PeerGone { peer, op },
                ErrorKind::InvalidData => Error::Protocol {
                    peer,
                    message: e.to_string(),
                },
                _ => Error::Io {
                    what: format!("rank {}: receiving from rank {peer} during {op}", self.rank),
                    source: e,
                },
            }),
        }
    }

    fn flush(&mut self, op: &'static str) -> Result<()> {
        if self.mailbox.is_some() {
            self.flush_shm(op)?;
        }
        Ok(())
    }

    fn abort(&mut self, message: &str) {
        for p in self.peers.iter().flatten() {
            p.queue(Out::Frame(KIND_ABORT, message.as_bytes().to_vec()));
        }
    }
}

/// Agree with every peer on shared memory: each rank tells all peers its host key, pid and
/// mailbox, then opens the mailboxes of those on its host and tells them whether it could;
/// a pair uses shared memory when both could. Every message goes out before any is read,
/// so no rank waits on another's turn. Returns this rank's mailbox (if some peer writes to
/// it) and, per peer, the peer's mailbox to write to.
#[allow(clippy::type_complexity)]
fn shm_handshake(
    rank: usize,
    streams: &mut [Option<TcpStream>],
    enabled: bool,
) -> Result<(Option<Mailbox>, Vec<Option<Mailbox>>)> {
    let n = streams.len();
    let what = |p: usize| format!("rank {rank}: shared-memory handshake with rank {p}");
    let key = enabled.then(crate::shm::host_key).flatten();
    let own = key.as_ref().and_then(|_| Mailbox::create(n).ok());
    let hello = json!({
        "host": key,
        "pid": std::process::id(),
        "fd": own.as_ref().map(|m| m.fd),
    });
    for (p, s) in streams.iter_mut().enumerate() {
        if let Some(s) = s {
            send_json(s, &hello).map_err(io_err(what(p)))?;
        }
    }
    let mut theirs: Vec<Option<Mailbox>> = (0..n).map(|_| None).collect();
    for (p, s) in streams.iter_mut().enumerate() {
        let Some(s) = s else { continue };
        let v = recv_json(s).map_err(io_err(what(p)))?;
        let same = own.is_some() && key.is_some() && v["host"].as_str() == key.as_deref();
        if let (true, Some(pid), Some(fd)) = (same, v["pid"].as_u64(), v["fd"].as_i64()) {
            theirs[p] = Mailbox::open(pid as u32, fd as i32, n).ok();
        }
    }
    for (p, s) in streams.iter_mut().enumerate() {
        if let Some(s) = s {
            send_json(s, &json!({ "shm": theirs[p].is_some() })).map_err(io_err(what(p)))?;
        }
    }
    for (p, s) in streams.iter_mut().enumerate() {
        let Some(s) = s else { continue };
        let v = recv_json(s).map_err(io_err(what(p)))?;
        if v["shm"].as_bool() != Some(true) {
            theirs[p] = None;
        }
    }
    let own = own.filter(|_| theirs.iter().any(Option::is_some));
    Ok((own, theirs))
}

impl Drop for TcpLink {
    fn drop(&mut self) {
        // Write what is kept for same-host peers (bounded by the collective timeout), then
        // deliver what is queued (bounded by the write timeout), then close.
        let _ = self.flush("close");
        for p in self.peers.iter_mut().flatten() {
            p.tx = None;
        }
        for p in self.peers.iter_mut().flatten() {
            if let Some(w) = p.writer.take() {
                let _ = w.join();
            }
            let _ = p.stream.shutdown(Shutdown::Both);
        }
    }
}
