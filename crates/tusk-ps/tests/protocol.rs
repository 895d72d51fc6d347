//! The server's rules over real sockets: the staleness bound, sync ordering, refusals.

use std::time::{Duration, Instant};

use tusk_embedding::{Optimizer, feature_key};
use tusk_ps::{Client, Mode, Rows, Server, ServerOptions, TableConfig};

const SECRET: &[u8] = b"s3cret";

fn servers(shards: usize, workers: usize, timeout: Duration) -> Vec<String> {
    (0..shards)
        .map(|shard| {
            let s = Server::bind(
                "127.0.0.1:0",
                ServerOptions {
                    shard,
                    shards,
                    workers,
                    secret: SECRET.to_vec(),
                    timeout,
                },
            )
            .unwrap();
            let a = s.addr().unwrap().to_string();
            std::thread::spawn(move || s.run());
            a
        })
        .collect()
}

fn config(mode: Mode, workers: usize) -> TableConfig {
    TableConfig {
        dim: 4,
        optimizer: Optimizer::Sgd { lr: 0.5 }.into(),
        seed: 1,
        init_scale: 0.1,
        normal_init: false,
        mode,
        workers,
        min_count: 1,
    }
}

fn client(addrs: &[String], rank: usize, workers: usize) -> Client {
    Client::connect(
        addrs,
        SECRET,
        rank,
        workers,
        Duration::from_secs(5),
        Duration::from_secs(20),
    )
    .unwrap()
}

fn keys(n: i64) -> Vec<u64> {
    (0..n).map(|i| feature_key("item", i)).collect()
}

#[test]
fn async_worker_runs_at_most_staleness_steps_ahead() {
    let addrs = servers(2, 2, Duration::from_millis(600));
    let cfg = config(Mode::Async { staleness: 2 }, 2);
    let mut w0 = client(&addrs, 0, 2);
    let mut w1 = client(&addrs, 1, 2);
    w0.init("s", &cfg, Rows::Fresh).unwrap();
    w1.init("s", &cfg, Rows::Fresh).unwrap();
    let k = keys(8);
    let mut rows = vec![0.0; k.len() * 4];
    let g = vec![1.0; k.len() * 4];
    // Worker 1 is stuck at step 0: worker 0 may pull and push steps 0, 1 and 2...
    for _ in 0..2 {
        w0.pull(&k, &mut rows).unwrap();
        w0.push(&k, &g).unwrap();
    }
    w0.pull(&k, &mut rows).unwrap();
    w0.push(&k, &g).unwrap();
    // Instrumented: the furthest ahead a pull went is exactly the bound.
    assert!(w1.stats().unwrap().iter().all(|s| s.max_lead == 2));
    // ...and its pull of step 3 waits for worker 1, until the server's timeout.
    let t = Instant::now();
    let e = w0.pull(&k, &mut rows).unwrap_err().to_string();
    assert!(t.elapsed() >= Duration::from_millis(500), "{e}");
    assert!(e.contains("rank 1 (at step 0)"), "{e}");
    // Applied on arrival: three SGD steps of 0.5 × 1.0 each moved every row by −1.5.
    let mut now = vec![0.0; k.len() * 4];
    w1.pull(&k, &mut now).unwrap();
    let mut table0 = vec![0.0; k.len() * 4];
    tusk_embedding::HashedTable::new(4, Optimizer::Sgd { lr: 0.5 }, 1)
        .with_init_scale(0.1)
        .peek(&k, &mut table0);
    for (a, b) in now.iter().zip(&table0) {
        assert!((a - (b - 1.5)).abs() < 1e-6, "{a} vs {b} − 1.5");
    }
}

#[test]
fn sync_pull_waits_for_every_push_of_the_step() {
    let addrs = servers(3, 2, Duration::from_secs(10));
    let cfg = config(Mode::Sync, 2);
    let mut w0 = client(&addrs, 0, 2);
    let mut w1 = client(&addrs, 1, 2);
    w0.init("s", &cfg, Rows::Fresh).unwrap();
    w1.init("s", &cfg, Rows::Fresh).unwrap();
    let k = keys(5);
    let mut rows = vec![0.0; k.len() * 4];
    w0.pull(&k, &mut rows).unwrap();
    let before = rows.clone();
    w0.push(&k, &vec![1.0; k.len() * 4]).unwrap();
    // Worker 0's pull of step 1 must see both workers' step-0 gradients: worker 1 pushes
    // 300 ms later, and the pull returns only then.
    let h = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        w1.pull(&[], &mut []).unwrap();
        w1.push(&k[..1], &[3.0; 4]).unwrap();
    });
    let t = Instant::now();
    w0.pull(&keys(5), &mut rows).unwrap();
    assert!(t.elapsed() >= Duration::from_millis(250));
    h.join().unwrap();
    // Row 0 got 1 + 3, the others 1: SGD with lr 0.5.
    for (j, (a, b)) in rows.iter().zip(&before).enumerate() {
        let g = if j < 4 { 4.0 } else { 1.0 };
        assert!((a - (b - 0.5 * g)).abs() < 1e-6, "value {j}: {a} vs {b}");
    }
}

#[test]
fn refusals_name_the_problem() {
    let addrs = servers(2, 2, Duration::from_secs(2));
    // Wrong secret.
    let e = match Client::connect(
        &addrs,
        b"other",
        0,
        2,
        Duration::from_secs(2),
        Duration::from_secs(2),
    ) {
        Ok(_) => panic!("a wrong secret was accepted"),
        Err(e) => e.to_string(),
    };
    assert!(
        e.contains("embedding server 0") && e.contains("secret"),
        "{e}"
    );
    // Another number of workers than the server was started for.
    let mut w = client(&addrs, 0, 2);
    let e = w
        .init("s", &config(Mode::Sync, 3), Rows::Fresh)
        .unwrap_err()
        .to_string();
    assert!(e.contains("3 workers") && e.contains("--workers"), "{e}");
    // Settings differing from rank 0's.
    w.init("s", &config(Mode::Sync, 2), Rows::Fresh).unwrap();
    let mut w1 = client(&addrs, 1, 2);
    let mut other = config(Mode::Sync, 2);
    other.dim = 8;
    let e = w1.init("s", &other, Rows::Fresh).unwrap_err().to_string();
    assert!(e.contains("other table settings than rank 0"), "{e}");
    // A push out of order, and a non-finite gradient.
    let k = keys(3);
    let mut rows = vec![0.0; 12];
    w.pull(&k, &mut rows).unwrap();
    let e = w.push(&k, &[f32::NAN; 12]);
    w1.init("s", &config(Mode::Sync, 2), Rows::Fresh).unwrap();
    let _ = w1.push(&k, &[0.0; 12]);
    let e = e
        .err()
        .map(|e| e.to_string())
        .unwrap_or_else(|| w.pull(&k, &mut rows).unwrap_err().to_string());
    assert!(
        e.contains("non-finite") || e.contains("NaN") || e.contains("applying step 0"),
        "{e}"
    );
    // A server that is not there.
    let e = match Client::connect(
        &["127.0.0.1:1".to_string()],
        SECRET,
        0,
        1,
        Duration::from_millis(300),
        Duration::from_secs(1),
    ) {
        Ok(_) => panic!("connected to nothing"),
        Err(e) => e.to_string(),
    };
    assert!(
        e.contains("embedding server 0 at 127.0.0.1:1") && e.contains("not reachable"),
        "{e}"
    );
}

/// Workers and servers that disagree on the number of servers: the first key that lands on
/// the wrong server is refused, naming the shards.
#[test]
fn a_shard_map_mismatch_is_refused_naming_the_shards() {
    // Two servers started as shards of three; the worker knows only these two.
    let addrs: Vec<String> = (0..2)
        .map(|shard| {
            let s = Server::bind(
                "127.0.0.1:0",
                ServerOptions {
                    shard,
                    shards: 3,
                    workers: 1,
                    secret: SECRET.to_vec(),
                    timeout: Duration::from_secs(5),
                },
            )
            .unwrap();
            let a = s.addr().unwrap().to_string();
            std::thread::spawn(move || s.run());
            a
        })
        .collect();
    let mut w = client(&addrs, 0, 1);
    w.init("s", &config(Mode::Sync, 1), Rows::Fresh).unwrap();
    let k = keys(64);
    let mut rows = vec![0.0; k.len() * 4];
    let e = w.pull(&k, &mut rows).unwrap_err().to_string();
    assert!(
        e.contains("belongs to shard") && e.contains("disagree on the number of servers"),
        "{e}"
    );
    assert!(e.contains("embedding server"), "{e}");
}
