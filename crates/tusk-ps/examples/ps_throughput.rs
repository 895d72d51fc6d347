//! Pull/push throughput of embedding servers over loopback TCP against the same table in
//! process (the floor): `cargo run --release -p tusk-ps --example ps_throughput`.
//!
//! Each step a worker pulls the rows of a batch of distinct keys (dimension 32, drawn from
//! 1M ids) and pushes one gradient row per key back (Adam, lazy); sync mode, 1 worker.

use std::time::{Duration, Instant};

use tusk_embedding::{EmbeddingStore, HashedTable, Optimizer, feature_key};
use tusk_ps::{Client, Mode, Server, ServerOptions, TableConfig};

const DIM: usize = 32;

/// Raw TCP throughput over loopback in this run (the link the servers use): 2 GiB written
/// in 1 MiB chunks over one connection and read on another thread, in MB/s.
fn raw_loopback() -> f64 {
    use std::io::{Read, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let total: usize = 2 << 30;
    let reader = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let mut buf = vec![0u8; 1 << 20];
        let mut got = 0;
        while got < total {
            let n = s.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            got += n;
        }
    });
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    let chunk = vec![7u8; 1 << 20];
    let t = Instant::now();
    for _ in 0..(total >> 20) {
        s.write_all(&chunk).unwrap();
    }
    drop(s);
    reader.join().unwrap();
    total as f64 / t.elapsed().as_secs_f64() / 1e6
}

fn main() {
    let raw = raw_loopback();
    println!("raw loopback TCP, one connection, this run: {raw:.0} MB/s");
    println!(
        "{:>8} {:>8} {:>12} {:>12} {:>12} {:>10} {:>9}",
        "servers", "keys", "steps/s", "rows/s", "MB/s (wire)", "vs local", "of raw"
    );
    let mut next = 0x2545_f491_4f6c_dd1du64;
    let mut draw = move || {
        next ^= next << 13;
        next ^= next >> 7;
        next ^= next << 17;
        next % 1_000_000
    };
    for batch in [512usize, 4096, 32768] {
        let steps = (2_000_000 / batch).max(20);
        let batches: Vec<Vec<u64>> = (0..steps)
            .map(|_| {
                let mut ks: Vec<u64> = (0..batch)
                    .map(|_| feature_key("id", draw() as i64))
                    .collect();
                ks.sort_unstable();
                ks.dedup();
                ks
            })
            .collect();
        let grads = vec![0.01f32; batch * DIM];
        // In process.
        let mut t = HashedTable::new(DIM, Optimizer::adam(0.01), 1);
        let mut rows = vec![0.0f32; batch * DIM];
        let start = Instant::now();
        for ks in &batches {
            t.lookup(ks, &mut rows[..ks.len() * DIM]);
            t.apply_gradients(ks, &grads[..ks.len() * DIM]).unwrap();
        }
        let local = steps as f64 / start.elapsed().as_secs_f64();
        println!(
            "{:>8} {batch:>8} {local:>12.0} {:>12.0} {:>12} {:>10}",
            "local",
            local * batch as f64,
            "-",
            "1.00×"
        );
        for shards in [1usize, 2, 4] {
            let addrs: Vec<String> = (0..shards)
                .map(|shard| {
                    let s = Server::bind(
                        "127.0.0.1:0",
                        ServerOptions {
                            shard,
                            shards,
                            workers: 1,
                            secret: b"bench".to_vec(),
                            timeout: Duration::from_secs(60),
                        },
                    )
                    .unwrap();
                    let a = s.addr().unwrap().to_string();
                    std::thread::spawn(move || s.run());
                    a
                })
                .collect();
            let mut c = Client::connect(
                &addrs,
                b"bench",
                0,
                1,
                Duration::from_secs(5),
                Duration::from_secs(60),
            )
            .unwrap();
            let cfg = TableConfig {
                dim: DIM,
                optimizer: Optimizer::adam(0.01).into(),
                seed: 1,
                init_scale: 0.05,
                normal_init: false,
                mode: Mode::Sync,
                workers: 1,
                min_count: 1,
            };
            c.init("bench", &cfg, tusk_ps::Rows::Fresh).unwrap();
            let start = Instant::now();
            for ks in &batches {
                c.pull(ks, &mut rows[..ks.len() * DIM]).unwrap();
                c.push(ks, &grads[..ks.len() * DIM]).unwrap();
            }
            let secs = start.elapsed().as_secs_f64();
            let sps = steps as f64 / secs;
            // Keys out twice, rows back once, gradients out once.
            let wire = batches
                .iter()
                .map(|k| k.len() * (16 + 8 * DIM))
                .sum::<usize>() as f64;
            println!(
                "{shards:>8} {batch:>8} {sps:>12.0} {:>12.0} {:>12.0} {:>9.2}× {:>8.0}%",
                sps * batch as f64,
                wire / secs / 1e6,
                local / sps,
                100.0 * wire / secs / 1e6 / raw
            );
            c.finish().unwrap();
        }
    }
    prefetch_table();
}

/// How much of the pull latency the next step's prefetch hides (async, staleness 1): per
/// step a worker waits for its rows, "computes" for a fixed time (a sleep: compute on an
/// accelerator, leaving the CPU to the servers), then pushes; with prefetch it asks for the
/// next step's rows before computing and collects them before pushing.
fn prefetch_table() {
    println!();
    println!(
        "{:>8} {:>10} {:>10} {:>16} {:>16} {:>10}",
        "keys", "compute", "mode", "wait ms/step", "step ms", "hidden"
    );
    let addrs: Vec<String> = (0..2)
        .map(|shard| {
            let s = Server::bind(
                "127.0.0.1:0",
                ServerOptions {
                    shard,
                    shards: 2,
                    workers: 1,
                    secret: b"bench".to_vec(),
                    timeout: Duration::from_secs(60),
                },
            )
            .unwrap();
            let a = s.addr().unwrap().to_string();
            std::thread::spawn(move || s.run());
            a
        })
        .collect();
    for (batch, compute_ms) in [(4096usize, 2u64), (32768, 10)] {
        let batches: Vec<Vec<u64>> = (0..200u64)
            .map(|s| {
                (0..batch as u64)
                    .map(|i| feature_key("id", ((s * 7919 + i * 13) % 1_000_000) as i64))
                    .collect()
            })
            .collect();
        let grads = vec![0.01f32; batch * DIM];
        let mut plain = 0.0;
        for prefetch in [false, true] {
            let mut c = Client::connect(
                &addrs,
                b"bench",
                0,
                1,
                Duration::from_secs(5),
                Duration::from_secs(60),
            )
            .unwrap();
            let cfg = TableConfig {
                dim: DIM,
                optimizer: Optimizer::adam(0.01).into(),
                seed: 1,
                init_scale: 0.05,
                normal_init: false,
                mode: Mode::Async { staleness: 1 },
                workers: 1,
                min_count: 1,
            };
            c.init(
                if prefetch { "p1" } else { "p0" },
                &cfg,
                tusk_ps::Rows::Fresh,
            )
            .unwrap();
            let mut rows = vec![0.0f32; batch * DIM];
            let mut next = vec![0.0f32; batch * DIM];
            let mut have_next = false;
            let mut wait = 0.0;
            let start = Instant::now();
            for (i, ks) in batches.iter().enumerate() {
                let t = Instant::now();
                if have_next {
                    std::mem::swap(&mut rows, &mut next);
                } else {
                    c.pull(ks, &mut rows).unwrap();
                }
                if prefetch && let Some(n) = batches.get(i + 1) {
                    c.start_pull(n).unwrap();
                }
                wait += t.elapsed().as_secs_f64();
                std::thread::sleep(Duration::from_millis(compute_ms));
                let t = Instant::now();
                have_next = false;
                if c.prefetching() {
                    c.finish_pull(&mut next).unwrap();
                    have_next = true;
                }
                wait += t.elapsed().as_secs_f64();
                c.push(ks, &grads).unwrap();
            }
            let step = start.elapsed().as_secs_f64() / batches.len() as f64;
            let w = wait / batches.len() as f64;
            if !prefetch {
                plain = w;
            }
            println!(
                "{batch:>8} {:>8}ms {:>10} {:>16.3} {:>16.3} {:>9.0}%",
                compute_ms,
                if prefetch { "prefetch" } else { "on demand" },
                w * 1e3,
                step * 1e3,
                if prefetch {
                    100.0 * (1.0 - w / plain)
                } else {
                    0.0
                }
            );
        }
    }
}
