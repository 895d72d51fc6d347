//! NameNode faults seen through the `tusk` binary, on real MiniDFS clusters: a NameNode that
//! restarts (commands pause, then finish), one that stays away (one clear error line after
//! `TUSK_STORAGE_RETRY_SECS`, never a hang), and an HA pair (`hdfs://ns1/…` resolved from
//! `HADOOP_CONF_DIR`) failing over back and forth under a running `tusk demo` (data, training
//! and model on HDFS), repeated `tusk sql` queries, then `tusk serve` polling the model. DataNode faults and corrupt replicas are
//! in `tusk-storage/tests/hdfs_faults.rs`.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tusk_testkit::{MiniDfs, MiniDfsOptions, Proc};

fn tusk() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tusk"))
}

/// Run a tusk command to its end (at most `limit`): (success, stdout, stderr, seconds).
fn run(mut c: Command, limit: Duration) -> (bool, String, String, f64) {
    let dir = tempfile::tempdir().unwrap();
    let (out, err) = (dir.path().join("out"), dir.path().join("err"));
    c.stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap());
    let t0 = Instant::now();
    let mut p = Proc::spawn(&mut c, "tusk");
    let status = p.wait(limit);
    let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
    (
        status.success(),
        read(&out),
        read(&err),
        t0.elapsed().as_secs_f64(),
    )
}

/// A small CSV table at `url` (through tusk's own storage), `rows` rows.
fn put_table(url: &str, rows: usize) {
    let storage = tusk_storage::Storage::new().unwrap();
    let mut csv = String::from("user_id,item_id,label\n");
    for i in 0..rows {
        csv.push_str(&format!("{},{},{}\n", i % 97, i % 31, i % 2));
    }
    storage.open(url).unwrap().write(csv.into_bytes()).unwrap();
}

fn sql(dir: &Path, table: &str, output: &str) -> Command {
    let query = dir.join("q.sql");
    std::fs::write(
        &query,
        "SELECT user_id, COUNT(*) AS n, SUM(label) AS clicks FROM t GROUP BY user_id",
    )
    .unwrap();
    let mut c = tusk();
    c.args(["sql", "--table", &format!("t={table}"), "--query"])
        .arg(&query)
        .args(["--output", output]);
    c
}

fn stats(url: &str) -> Command {
    let mut c = tusk();
    c.args(["records", "stats", url]);
    c
}

#[test]
fn namenode_restart_pauses_and_an_outage_fails_clearly() {
    let Some(mut dfs) = MiniDfs::start(1) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let base = format!("{}/nn", dfs.hdfs_url());
    put_table(&format!("{base}/t.csv"), 2000);
    let (ok, _, err, _) = run(
        sql(dir.path(), &format!("{base}/t.csv"), &format!("{base}/out")),
        Duration::from_secs(120),
    );
    assert!(ok, "{err}");
    let (ok, before, err, _) = run(stats(&format!("{base}/out")), Duration::from_secs(60));
    assert!(ok && before.contains("97"), "{before}{err}");

    // The NameNode away for longer than the retry budget: one clear error, in time.
    dfs.command("stop-namenode 0");
    let mut c = stats(&format!("{base}/out"));
    c.env("TUSK_STORAGE_RETRY_SECS", "3");
    c.env("TUSK_STORAGE_CONNECT_SECS", "3");
    let (ok, _, err, secs) = run(c, Duration::from_secs(90));
    assert!(!ok, "read with the NameNode down");
    assert!(secs < 30.0, "took {secs:.1} s to give up");
    let last = err.trim().lines().last().unwrap_or_default();
    assert!(
        last.contains("NameNode") && last.contains("gave up after"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");

    // The NameNode back within the budget: the command pauses, then finishes as before. (A
    // NameNode that has not answered once in a process gets TUSK_STORAGE_CONNECT_SECS, 10 s by
    // default, before tusk takes it for a wrong address; this command is willing to wait.)
    let t0 = Instant::now();
    let mut c = stats(&format!("{base}/out"));
    c.env("TUSK_STORAGE_CONNECT_SECS", "60");
    let out = dir.path().join("paused.out");
    c.stdout(std::fs::File::create(&out).unwrap())
        .stderr(Stdio::null());
    let mut p = Proc::spawn(&mut c, "tusk records stats");
    std::thread::sleep(Duration::from_secs(4));
    assert!(
        p.try_status().is_none(),
        "the read did not wait for the NameNode"
    );
    dfs.command("restart-namenode 0");
    let status = p.wait(Duration::from_secs(120));
    assert!(
        status.success(),
        "the read did not survive a NameNode restart"
    );
    let counts = |s: &str| -> String {
        s.lines()
            .filter(|l| !l.starts_with("read in"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(
        counts(&std::fs::read_to_string(&out).unwrap()),
        counts(&before)
    );
    eprintln!(
        "read finished {:.1} s after it started against a stopped NameNode",
        t0.elapsed().as_secs_f64()
    );

    // Writes too (the NameNode leaves safe mode once the DataNode reports).
    let (ok, _, err, _) = run(
        sql(
            dir.path(),
            &format!("{base}/t.csv"),
            &format!("{base}/out2"),
        ),
        Duration::from_secs(180),
    );
    assert!(ok, "{err}");
}

#[test]
fn ha_failover_under_a_running_demo_and_sql() {
    let Some(dfs) = MiniDfs::start_with(MiniDfsOptions {
        ha: true,
        ..Default::default()
    }) else {
        return;
    };
    let conf = dfs
        .conf_dir
        .clone()
        .expect("HA MiniDFS without a client conf");
    // Written through nn1 (active now) by address; everything after goes through `ns1`.
    put_table(&format!("{}/ha/t.csv", dfs.hdfs_url()), 3000);
    let dfs = Arc::new(std::sync::Mutex::new(dfs));
    let dir = tempfile::tempdir().unwrap();
    let with_conf = |mut c: Command| {
        c.env("HADOOP_CONF_DIR", &conf);
        c
    };

    // Flip the active NameNode every few seconds while the demo and the queries run.
    let stop = Arc::new(AtomicBool::new(false));
    let flipper = {
        let (dfs, stop) = (dfs.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut active = 0;
            let mut flips = 0;
            while !stop.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_secs(4));
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let next = 1 - active;
                dfs.lock()
                    .unwrap()
                    .command(&format!("failover {active} {next}"));
                active = next;
                flips += 1;
            }
            flips
        })
    };

    let mut demo = with_conf(tusk());
    demo.args(["demo", "--storage", "hdfs://ns1/demo", "--events", "40000"])
        .args(["--users", "800", "--items", "300", "--epochs", "2"]);
    let demo = std::thread::spawn(move || run(demo, Duration::from_secs(900)));
    let mut queries = 0;
    while !demo.is_finished() {
        let (ok, _, err, _) = run(
            with_conf(sql(
                dir.path(),
                "hdfs://ns1/ha/t.csv",
                &format!("hdfs://ns1/ha/out-{queries}"),
            )),
            Duration::from_secs(300),
        );
        assert!(ok, "tusk sql failed across a failover: {err}");
        let (ok, out, err, _) = run(
            with_conf(stats(&format!("hdfs://ns1/ha/out-{queries}"))),
            Duration::from_secs(300),
        );
        assert!(ok && out.contains("97"), "{out}{err}");
        queries += 1;
    }
    let (ok, out, err, secs) = demo.join().unwrap();
    assert!(ok, "the demo failed across failovers: {err}");
    assert!(out.contains("batch scoring"), "{out}");

    // `tusk serve` on the demo's model, polling HDFS for new versions every 0.2 s while the
    // NameNodes keep failing over: it stays up and answers every request.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut c = with_conf(tusk());
    c.args(["serve", "--model", "clicks=hdfs://ns1/demo/model"])
        .args([
            "--addr",
            &format!("127.0.0.1:{port}"),
            "--poll-interval",
            "0.2",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut serve = Proc::spawn(&mut c, "tusk serve");
    let t0 = Instant::now();
    let mut answered = 0;
    while t0.elapsed() < Duration::from_secs(12) {
        assert!(
            serve.try_status().is_none(),
            "tusk serve exited during failovers"
        );
        if get(port, "/v1/models/clicks").is_some_and(|b| b.contains("AVAILABLE")) {
            answered += 1;
        } else {
            assert!(
                answered == 0,
                "tusk serve stopped answering after {answered} requests"
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, Ordering::SeqCst);
    let flips = flipper.join().unwrap();
    assert!(answered > 20, "tusk serve answered {answered} times");
    assert!(serve.try_status().is_none(), "tusk serve exited");
    serve.kill();
    assert!(flips >= 4, "only {flips} failovers happened");
    eprintln!(
        "demo took {secs:.0} s; {flips} failovers in all; {queries} sql queries beside the demo; \
         serve answered {answered} status requests"
    );
}

/// A plain HTTP GET on 127.0.0.1:`port`: the body of a 200 answer.
fn get(port: u16, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    out.starts_with("HTTP/1.1 200")
        .then(|| out.split_once("\r\n\r\n").map_or("", |x| x.1).to_string())
}
