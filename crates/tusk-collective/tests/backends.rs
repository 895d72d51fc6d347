//! The conformance checks on every backend available here, plus the failure behaviour:
//! a rank that disappears or gives up makes every other rank fail, never hang.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::thread;
use std::time::{Duration, Instant};

use tusk_collective::tcp::{self, Options};
use tusk_collective::{Communicator, Error, ReduceOp, World, conformance, threads};

fn run_all<C: Communicator + Send + 'static>(comms: Vec<C>) {
    let hs: Vec<_> = comms
        .into_iter()
        .map(|mut c| thread::spawn(move || conformance::run(&mut c)))
        .collect();
    for h in hs {
        h.join().expect("a rank panicked");
    }
}

#[test]
fn threads_backend_conforms() {
    for n in [1, 2, 3, 4] {
        run_all(threads::group(n, Duration::from_secs(30)));
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn opts(secret: &str) -> Options {
    Options {
        secret: secret.as_bytes().to_vec(),
        rendezvous_timeout: Duration::from_secs(20),
        collective_timeout: Duration::from_secs(5),
        fingerprint: BTreeMap::from([("train.batch_size".to_string(), "64".to_string())]),
        shared_memory: true,
    }
}

fn world(rank: usize, n: usize, port: u16) -> World {
    World {
        rank,
        world_size: n,
        local_rank: rank,
        local_world_size: n,
        master_addr: "127.0.0.1".into(),
        master_port: port,
        source: "test".into(),
    }
}

/// Join `n` ranks over loopback, each on its own thread, with per-rank options.
fn join_tcp(
    n: usize,
    per_rank: impl Fn(usize) -> Options,
) -> Vec<tusk_collective::Result<tusk_collective::Ring<tcp::TcpLink>>> {
    let port = free_port();
    let hs: Vec<_> = (0..n)
        .map(|r| {
            let o = per_rank(r);
            thread::spawn(move || tcp::connect(&world(r, n, port), &o))
        })
        .collect();
    hs.into_iter().map(|h| h.join().unwrap()).collect()
}

#[test]
fn tcp_backend_conforms() {
    for n in [2, 3, 4] {
        let comms: Vec<_> = join_tcp(n, |_| opts("s3cret"))
            .into_iter()
            .map(|c| c.expect("rendezvous"))
            .collect();
        run_all(comms);
    }
}

/// Ranks on one host reach each other through shared memory (unless told not to), and the
/// results are those of the TCP path, bit for bit: sums of values that round differently in
/// every order, over buffers larger than a ring (several wraps), broadcasts and all-gathers.
#[test]
fn shared_memory_between_ranks_on_one_host_equals_tcp() {
    /// Per rank: its shared-memory peers, and what the collectives gave it.
    type Outcome = (Vec<usize>, Vec<f32>, Vec<u8>, Vec<Vec<u8>>);
    fn job(n: usize, shared_memory: bool) -> Vec<Outcome> {
        let comms: Vec<_> = join_tcp(n, |_| Options {
            shared_memory,
            ..opts("s")
        })
        .into_iter()
        .map(|c| c.expect("rendezvous"))
        .collect();
        let hs: Vec<_> = comms
            .into_iter()
            .map(|mut c| {
                thread::spawn(move || {
                    let r = c.rank();
                    let peers = c.link_mut().shared_memory_peers();
                    let mut buf: Vec<f32> = (0..3_000_001)
                        .map(|i| ((i * 7919 + r * 104_729) % 1_000_003) as f32 * 1.000_001e-3)
                        .collect();
                    for _ in 0..3 {
                        c.all_reduce(&mut buf, ReduceOp::Sum).unwrap();
                    }
                    let mut b: Vec<u8> = if r == n - 1 {
                        (0..5_000_000).map(|i| (i % 253) as u8).collect()
                    } else {
                        Vec::new()
                    };
                    c.broadcast(&mut b, n - 1).unwrap();
                    let g = c.all_gather(&vec![r as u8; 1000 + r]).unwrap();
                    (peers, buf, b, g)
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    }
    for n in [2, 3] {
        let shm = job(n, true);
        let tcp = job(n, false);
        for r in 0..n {
            let others: Vec<usize> = (0..n).filter(|&p| p != r).collect();
            assert_eq!(shm[r].0, others, "rank {r} of {n}: shared-memory peers");
            assert!(tcp[r].0.is_empty());
            assert!(shm[r].1 == tcp[r].1, "rank {r} of {n}: all-reduce differs");
            assert!(shm[r].1 == shm[0].1, "rank {r} of {n}: ranks disagree");
            assert!(shm[r].2 == tcp[r].2 && shm[r].2.len() == 5_000_000);
            assert!(shm[r].3 == tcp[r].3);
        }
    }
}

#[test]
fn a_wrong_secret_is_refused() {
    let mut o = opts("right");
    o.rendezvous_timeout = Duration::from_secs(3);
    let res = join_tcp(2, |r| if r == 1 { opts("wrong") } else { o.clone() });
    let e1 = res[1]
        .as_ref()
        .err()
        .expect("rank 1 must be refused")
        .to_string();
    assert!(e1.contains("wrong job secret"), "{e1}");
    let e0 = res[0]
        .as_ref()
        .err()
        .expect("rank 0 must give up")
        .to_string();
    assert!(e0.contains("rank 1 of 2 never connected"), "{e0}");
}

#[test]
fn a_different_fingerprint_names_the_key() {
    let res = join_tcp(3, |r| {
        let mut o = opts("s");
        if r == 2 {
            o.fingerprint
                .insert("train.batch_size".into(), "128".into());
        }
        o
    });
    for (r, x) in res.iter().enumerate() {
        let e = x
            .as_ref()
            .err()
            .unwrap_or_else(|| panic!("rank {r} must fail"))
            .to_string();
        assert!(
            e.contains("rank 2 does not match rank 0")
                && e.contains("`train.batch_size` differs: rank 0 has \"64\", rank 2 has \"128\""),
            "rank {r}: {e}"
        );
    }
}

#[test]
fn an_absent_master_fails_after_the_rendezvous_timeout() {
    let port = free_port();
    let mut o = opts("s");
    o.rendezvous_timeout = Duration::from_secs(2);
    let t = Instant::now();
    let e = tcp::connect(&world(1, 2, port), &o)
        .err()
        .unwrap()
        .to_string();
    assert!(t.elapsed() < Duration::from_secs(10));
    assert!(e.contains("could not reach rank 0 within 2 s"), "{e}");
}

#[test]
fn a_port_in_use_is_named() {
    let l = TcpListener::bind("0.0.0.0:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let e = tcp::connect(&world(0, 2, port), &opts("s"))
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains(&format!("0.0.0.0:{port}")) && e.contains("in use"),
        "{e}"
    );
}

#[test]
fn a_vanished_rank_fails_the_others_promptly() {
    for backend in ["threads", "tcp"] {
        let comms: Vec<Box<dyn Communicator + Send>> = if backend == "threads" {
            threads::group(3, Duration::from_secs(60))
                .into_iter()
                .map(|c| Box::new(c) as Box<dyn Communicator + Send>)
                .collect()
        } else {
            let mut o = opts("s");
            o.collective_timeout = Duration::from_secs(60);
            join_tcp(3, |_| o.clone())
                .into_iter()
                .map(|c| Box::new(c.unwrap()) as Box<dyn Communicator + Send>)
                .collect()
        };
        let t = Instant::now();
        let hs: Vec<_> = comms
            .into_iter()
            .map(|mut c| {
                thread::spawn(move || {
                    if c.rank() == 1 {
                        return None; // dropped: its connections close
                    }
                    let mut buf = vec![1.0f32; 100_000];
                    let mut last = None;
                    for _ in 0..3 {
                        if let Err(e) = c.all_reduce(&mut buf, ReduceOp::Sum) {
                            last = Some(e);
                            break;
                        }
                    }
                    last
                })
            })
            .collect();
        for (r, h) in hs.into_iter().enumerate() {
            let e = h.join().unwrap();
            if r != 1 {
                let e = e.unwrap_or_else(|| panic!("{backend}: rank {r} did not fail"));
                assert!(
                    matches!(e, Error::PeerGone { .. }),
                    "{backend}: rank {r}: {e}"
                );
            }
        }
        assert!(t.elapsed() < Duration::from_secs(20), "{backend}: too slow");
    }
}

#[test]
fn a_silent_rank_times_out_and_an_aborting_rank_is_reported() {
    let mut o = opts("s");
    o.collective_timeout = Duration::from_secs(1);
    let comms: Vec<_> = join_tcp(2, |_| o.clone())
        .into_iter()
        .map(|c| c.unwrap())
        .collect();
    let mut it = comms.into_iter();
    let (mut c0, mut c1) = (it.next().unwrap(), it.next().unwrap());
    let t = Instant::now();
    let e = c0.all_reduce(&mut [1.0; 4], ReduceOp::Sum).unwrap_err();
    assert!(t.elapsed() < Duration::from_secs(5));
    assert!(
        e.to_string()
            .contains("rank 1 sent nothing for 1s during all_reduce"),
        "{e}"
    );
    c1.abort("bad record in shard-00003");
    let e = c0.barrier().unwrap_err();
    assert_eq!(e.to_string(), "rank 1 failed: bad record in shard-00003");
}
