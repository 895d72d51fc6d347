//! A table too big for one process's share: `cargo run --release -p tusk-ps --example
//! ps_scale -- [IDS] [SERVERS]` (default 10M ids over 4 servers, dimension 32, Adam).
//!
//! Starts SERVERS embedding servers as child processes (this program re-run with `serve`),
//! has one worker pull and push every id once (batches of 64k distinct ids, so each row is
//! created and gets its Adam state), then prints each server's rows, table bytes and resident
//! memory against the whole table's size.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tusk_embedding::{Optimizer, feature_key};
use tusk_ps::{Client, Mode, Rows, Server, ServerOptions, TableConfig};

const DIM: usize = 32;
const SECRET: &[u8] = b"scale";

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

struct Children(Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("serve") {
        let (shard, shards, port): (usize, usize, u16) = (
            args[2].parse().unwrap_or(0),
            args[3].parse().unwrap_or(1),
            args[4].parse().unwrap_or(0),
        );
        let s = Server::bind(
            &format!("127.0.0.1:{port}"),
            ServerOptions {
                shard,
                shards,
                workers: 1,
                secret: SECRET.to_vec(),
                timeout: Duration::from_secs(600),
            },
        )
        .unwrap_or_else(|e| {
            eprintln!("{e}");
            std::process::exit(1)
        });
        let _ = s.run();
        return;
    }
    let ids: u64 = args
        .get(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(10_000_000);
    let shards: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(4);
    let me = std::env::current_exe().unwrap_or_default();
    let ports: Vec<u16> = (0..shards)
        .map(|_| {
            std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map(|a| a.port())
                .unwrap_or(0)
        })
        .collect();
    let children = Children(
        ports
            .iter()
            .enumerate()
            .filter_map(|(i, p)| {
                Command::new(&me)
                    .args(["serve", &i.to_string(), &shards.to_string(), &p.to_string()])
                    .stdin(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .ok()
            })
            .collect(),
    );
    let addrs: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let mut c = Client::connect(
        &addrs,
        SECRET,
        0,
        1,
        Duration::from_secs(10),
        Duration::from_secs(600),
    )
    .unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(1)
    });
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
    if let Err(e) = c.init("scale", &cfg, Rows::Fresh) {
        eprintln!("{e}");
        std::process::exit(1);
    }
    let before: Vec<u64> = children.0.iter().map(|ch| rss_kib(ch.id())).collect();
    let batch = 65_536u64;
    let mut rows = vec![0.0f32; batch as usize * DIM];
    let grads = vec![0.01f32; batch as usize * DIM];
    let t = Instant::now();
    let mut start = 0;
    while start < ids {
        let end = (start + batch).min(ids);
        let keys: Vec<u64> = (start..end).map(|i| feature_key("id", i as i64)).collect();
        let n = keys.len() * DIM;
        if let Err(e) = c
            .pull(&keys, &mut rows[..n])
            .and_then(|()| c.push(&keys, &grads[..n]))
        {
            eprintln!("{e}");
            std::process::exit(1);
        }
        start = end;
    }
    let secs = t.elapsed().as_secs_f64();
    let stats = c.stats().unwrap_or_default();
    let total: u64 = stats.iter().map(|s| s.bytes).sum();
    println!(
        "{ids} ids × dim {DIM}, Adam (values + 2 moments + step): {:.2} GiB of table in all; every id pulled and pushed once in {secs:.1} s ({:.2} M rows/s)",
        total as f64 / (1u64 << 30) as f64,
        ids as f64 / secs / 1e6
    );
    println!(
        "{:>6} {:>12} {:>14} {:>14} {:>14} {:>12}",
        "server", "rows", "table MiB", "RSS MiB", "RSS before", "share"
    );
    for (i, (s, ch)) in stats.iter().zip(&children.0).enumerate() {
        let rss = rss_kib(ch.id());
        println!(
            "{i:>6} {:>12} {:>14.0} {:>14.0} {:>14.0} {:>11.1}%",
            s.rows,
            s.bytes as f64 / 1048576.0,
            rss as f64 / 1024.0,
            before[i] as f64 / 1024.0,
            100.0 * s.bytes as f64 / total.max(1) as f64
        );
    }
    let _ = c.finish();
    drop(children);
}
