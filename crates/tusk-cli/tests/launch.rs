//! Data-parallel training as users run it: `tusk launch` and `tusk train --rank …` as real
//! processes over real sockets — equivalence with one process, kill -9 of workers with group
//! restarts (bit-for-bit the undisturbed result), and every failure ending in bounded time
//! with a clear message and no process left behind.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tusk_storage::Storage;
use tusk_testkit::{Proc, children_of, group_members};
use tusk_train::{Checkpoint, ModelStore};

mod common;
use common::{load, rel, write_csv};

fn tusk() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tusk"));
    c.env_remove("TUSK_JOB_SECRET");
    c
}

fn setup(dir: &Path, train_rows: usize, extra: &str) -> String {
    write_csv(&dir.join("train.csv"), train_rows, 1);
    write_csv(&dir.join("valid.csv"), 400, 2);
    let cfg = format!(
        r#"[data]
train = "{d}/train.csv"
validation = "{d}/valid.csv"
[features]
sparse = ["user_id", "item_id"]
dense = ["price"]
label = "label"
[model]
kind = "neumf"
user = ["user_id"]
item = ["item_id"]
gmf_dim = 8
mlp_dim = 8
layers = [16, 8]
[train]
learning_rate = 0.005
{bs}{extra}
[eval]
monitor = "auc"
"#,
        d = dir.display(),
        bs = if extra.contains("batch_size") {
            ""
        } else {
            "batch_size = 16\n"
        }
    );
    let path = dir.join("config.toml");
    std::fs::write(&path, cfg).unwrap();
    path.display().to_string()
}

fn rows_by_key(c: &Checkpoint) -> std::collections::BTreeMap<u64, Vec<f32>> {
    let d = c.table.dim;
    c.table
        .keys
        .iter()
        .enumerate()
        .map(|(i, k)| (*k, c.table.values[i * d..(i + 1) * d].to_vec()))
        .collect()
}

fn launch(n: usize, extra: &[&str], cfg: &str, model: &Path) -> Command {
    let mut c = tusk();
    c.args(["launch", "-n", &n.to_string()]).args(extra).args([
        "--",
        "train",
        cfg,
        "--model",
        &model.display().to_string(),
    ]);
    c
}

fn run_ok(mut c: Command, what: &str, limit: Duration) -> String {
    let out_path =
        std::env::temp_dir().join(format!("tusk-launch-{}-{what}.log", std::process::id()));
    let f = std::fs::File::create(&out_path).unwrap();
    c.stdout(Stdio::null()).stderr(f);
    let mut p = Proc::spawn(&mut c, what);
    let s = p.wait(limit);
    let log = std::fs::read_to_string(&out_path).unwrap_or_default();
    let _ = std::fs::remove_file(&out_path);
    assert!(s.success(), "{what} failed:\n{log}");
    log
}

#[test]
fn two_and_four_workers_match_one_process() {
    let dir = tempfile::tempdir().unwrap();
    // Source order, so the global batches hold the same rows for every N.
    let cfg = setup(dir.path(), 2000, "epochs = 2\nshuffle_buffer = 0");
    let one = dir.path().join("one");
    let mut c = tusk();
    c.args(["train", &cfg, "--model", &one.display().to_string()]);
    run_ok(c, "one process", Duration::from_secs(300));
    let base = load(&one);
    for n in [2, 4] {
        let m = dir.path().join(format!("n{n}"));
        let mut c = launch(n, &[], &cfg, &m);
        if n == 4 {
            // The dense gradient in a ring all-reduce of its own (2 workers: fused).
            c.env("TUSK_FUSION_THRESHOLD", "0");
        }
        let log = run_ok(c, &format!("{n} workers"), Duration::from_secs(300));
        assert!(log.contains("[rank 0] epoch   2"), "{log}");
        assert!(
            !log.contains("[rank 1] epoch"),
            "only rank 0 reports progress:\n{log}"
        );
        let ck = load(&m);
        assert_eq!(ck.meta.state.global_step, base.meta.state.global_step);
        let r = rel(&ck.params, &base.params);
        assert!(r < 1e-5, "N={n}: dense weights differ by {r:e}");
        let (a, b) = (rows_by_key(&ck), rows_by_key(&base));
        assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
        let flat = |m: &std::collections::BTreeMap<u64, Vec<f32>>| {
            m.values().flatten().copied().collect::<Vec<f32>>()
        };
        let r = rel(&flat(&a), &flat(&b));
        assert!(r < 1e-5, "N={n}: embedding rows differ by {r:e}");
        let auc =
            |c: &Checkpoint| c.meta.state.history.last().unwrap().metrics["validation"]["auc"];
        assert!(
            (auc(&ck) - auc(&base)).abs() < 1e-4,
            "N={n}: validation AUC"
        );
    }
}

/// Workers of the launcher `pid`, waiting until `n` are up (bounded).
fn workers(launcher: u32, n: usize, limit: Duration) -> Option<Vec<u32>> {
    let t = Instant::now();
    while t.elapsed() < limit {
        let c = children_of(launcher);
        if c.len() == n {
            return Some(c);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

fn dev_shm() -> std::collections::BTreeSet<String> {
    std::fs::read_dir("/dev/shm")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Epochs rank 0 has reported in a launcher's log so far (every attempt's).
fn epochs_done(log: &Path) -> usize {
    std::fs::read_to_string(log).map_or(0, |l| l.matches("[rank 0] epoch ").count())
}

#[test]
fn killed_workers_restart_from_the_newest_version_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    // ~2M samples: at ~70k samples/s for 4 debug-built workers on 2 cores, long enough for
    // 5 kills at random moments with restarts in between.
    let cfg = setup(
        dir.path(),
        40_000,
        "epochs = 50\nbatch_size = 64\nshuffle_buffer = 500\ncheckpoint_every = 300",
    );
    // Workers on one host reach each other through shared memory: memory files with no
    // name (memfd), so a killed worker leaves nothing behind in /dev/shm.
    let shm_before = dev_shm();
    let calm = dir.path().join("calm");
    run_ok(
        launch(4, &[], &cfg, &calm),
        "undisturbed",
        Duration::from_secs(600),
    );
    let m = dir.path().join("killed");
    let log_path = dir.path().join("killed.log");
    let mut c = launch(4, &["--max-restarts", "8", "--grace", "2"], &cfg, &m);
    c.stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap());
    let mut p = Proc::spawn(&mut c, "launch with kills");
    let launcher = p.id();
    let mut seen = std::collections::BTreeSet::new();
    let mut kills = 0;
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let t = Instant::now();
    while kills < 5 && p.try_status().is_none() && t.elapsed() < Duration::from_secs(500) {
        let Some(ws) = workers(launcher, 4, Duration::from_secs(60)) else {
            break;
        };
        if ws.iter().any(|w| seen.contains(w)) {
            std::thread::sleep(Duration::from_millis(50));
            continue; // the previous group is still being stopped
        }
        seen.extend(ws.iter().copied());
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        // Each attempt is killed once it has finished 1–3 more epochs, a random part of the
        // next one later: paced by the job's own progress (not by the clock, which other
        // tests on the same cores skew), so 5 kills land before its 50 epochs end on a
        // machine of any speed (a kill loses at most the 300 steps since the last version,
        // half an epoch).
        let want = epochs_done(&log_path) + 1 + (rng % 3) as usize;
        let limit = Instant::now() + Duration::from_secs(120);
        while epochs_done(&log_path) < want && p.try_status().is_none() && Instant::now() < limit {
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis((rng >> 8) % 150));
        let victim = ws[(rng >> 20) as usize % 4];
        if p.try_status().is_some() {
            break;
        }
        let _ = Command::new("kill")
            .args(["-9", &victim.to_string()])
            .status();
        kills += 1;
    }
    let s = p.wait(Duration::from_secs(600));
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(s.success(), "launcher failed:\n{log}");
    assert!(
        kills >= 5,
        "only {kills} kills landed before the job ended:\n{log}"
    );
    assert_eq!(log.matches("[launch] restarting").count(), kills, "{log}");
    // Nothing of the job is left: no worker of any attempt, nothing in the group.
    assert!(children_of(launcher).is_empty());
    let live: Vec<u32> = group_members(launcher);
    assert!(live.is_empty(), "left running: {live:?}");
    let left: Vec<String> = dev_shm().difference(&shm_before).cloned().collect();
    assert!(left.is_empty(), "left in /dev/shm: {left:?}");
    let (a, b) = (load(&m), load(&calm));
    assert_eq!(
        a.params, b.params,
        "dense weights differ from the undisturbed run"
    );
    assert_eq!(a.adam_m, b.adam_m);
    assert_eq!(a.adam_v, b.adam_v);
    assert_eq!(a.table, b.table, "embedding tables differ");
    assert_eq!(a.meta.state.history.len(), b.meta.state.history.len());
    for (x, y) in a.meta.state.history.iter().zip(&b.meta.state.history) {
        assert_eq!(x.metrics, y.metrics);
    }
}

#[test]
fn more_deaths_than_restarts_fail_in_bounded_time_without_orphans() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = setup(dir.path(), 40_000, "epochs = 100000\nshuffle_buffer = 0");
    let m = dir.path().join("m");
    let log_path = dir.path().join("log");
    let mut c = launch(2, &["--max-restarts", "1", "--grace", "2"], &cfg, &m);
    c.stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap());
    let mut p = Proc::spawn(&mut c, "launch");
    let launcher = p.id();
    let mut seen = Vec::new();
    for _ in 0..2 {
        let ws = loop {
            let ws = workers(launcher, 2, Duration::from_secs(60)).expect("workers start");
            if !ws.iter().any(|w| seen.contains(w)) {
                break ws;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        seen.extend(ws.iter().copied());
        std::thread::sleep(Duration::from_millis(1500));
        let _ = Command::new("kill")
            .args(["-9", &ws[1].to_string()])
            .status();
    }
    let t = Instant::now();
    let s = p.wait(Duration::from_secs(60));
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(!s.success(), "{log}");
    assert!(t.elapsed() < Duration::from_secs(30));
    assert!(
        log.contains("workers failed 2 time(s), more than --max-restarts 1 allows")
            && log.contains("rank 1 killed by signal 9"),
        "{log}"
    );
    assert!(group_members(launcher).is_empty(), "orphans left");
}

#[test]
fn sigterm_stops_every_worker() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = setup(dir.path(), 40_000, "epochs = 100000");
    let m = dir.path().join("m");
    let mut c = launch(3, &[], &cfg, &m);
    c.stdout(Stdio::null()).stderr(Stdio::null());
    let mut p = Proc::spawn(&mut c, "launch");
    let ws = workers(p.id(), 3, Duration::from_secs(60)).expect("workers start");
    std::thread::sleep(Duration::from_millis(1000));
    let _ = Command::new("kill")
        .args(["-TERM", &p.id().to_string()])
        .status();
    let s = p.wait(Duration::from_secs(30));
    assert!(!s.success());
    std::thread::sleep(Duration::from_millis(200));
    let table: Vec<u32> = tusk_testkit::process_table().iter().map(|p| p.0).collect();
    for w in ws {
        assert!(
            !table.contains(&w),
            "worker {w} survived SIGTERM of its launcher"
        );
    }
}

use tusk_testkit::free_port;

/// `tusk train` as rank `r` of `n`, started by hand (as a scheduler would).
fn rank(
    r: usize,
    n: usize,
    port: u16,
    secret: &str,
    (cfg, model): (&str, &Path),
    extra: &[&str],
    log: &Path,
) -> Proc {
    let mut c = tusk();
    c.args(["train", cfg, "--model", &model.display().to_string()])
        .args(["--rank", &r.to_string(), "--world-size", &n.to_string()])
        .args([
            "--master-addr",
            "127.0.0.1",
            "--master-port",
            &port.to_string(),
        ])
        .args(["--rendezvous-timeout", "8", "--collective-timeout", "10"])
        .args(extra)
        .env("TUSK_JOB_SECRET", secret)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap());
    Proc::spawn(&mut c, &format!("rank {r}"))
}

#[test]
fn rank_0_killed_ends_every_other_rank_within_the_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = setup(dir.path(), 40_000, "epochs = 100000\nbatch_size = 48");
    let m = dir.path().join("m");
    let port = free_port();
    let mut ps: Vec<Proc> = (0..3)
        .map(|r| {
            rank(
                r,
                3,
                port,
                "s",
                (&cfg, &m),
                &[],
                &dir.path().join(format!("{r}.log")),
            )
        })
        .collect();
    std::thread::sleep(Duration::from_millis(3000));
    let logs = || std::fs::read_to_string(dir.path().join("0.log")).unwrap_or_default();
    assert!(
        ps.iter_mut().all(|p| p.try_status().is_none()),
        "ranks ended early: {}",
        logs()
    );
    ps[0].kill();
    let t = Instant::now();
    for (r, p) in ps.iter_mut().enumerate().skip(1) {
        let s = p.wait(Duration::from_secs(30));
        assert!(!s.success());
        let log = std::fs::read_to_string(dir.path().join(format!("{r}.log"))).unwrap();
        assert!(
            log.contains("error: rank") && log.contains("closed the connection"),
            "rank {r}: {log}"
        );
    }
    assert!(
        t.elapsed() < Duration::from_secs(15),
        "took {:?}",
        t.elapsed()
    );
}

#[test]
fn wrong_secret_and_different_config_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = setup(dir.path(), 400, "epochs = 1");
    let m = dir.path().join("m");
    let log = |n: &str| dir.path().join(n);
    let read = |n: &str| std::fs::read_to_string(dir.path().join(n)).unwrap();
    // Wrong secret.
    let port = free_port();
    let mut a = rank(0, 2, port, "right", (&cfg, &m), &[], &log("a0"));
    let mut b = rank(1, 2, port, "wrong", (&cfg, &m), &[], &log("a1"));
    assert!(!b.wait(Duration::from_secs(30)).success());
    assert!(!a.wait(Duration::from_secs(30)).success());
    assert!(read("a1").contains("wrong job secret"), "{}", read("a1"));
    assert!(
        read("a0").contains("refused a connection")
            && read("a0").contains("rank 1 of 2 never connected"),
        "{}",
        read("a0")
    );
    // Different config.
    let port = free_port();
    let mut a = rank(0, 2, port, "s", (&cfg, &m), &[], &log("b0"));
    let mut b = rank(
        1,
        2,
        port,
        "s",
        (&cfg, &m),
        &["--set", "train.learning_rate=0.5"],
        &log("b1"),
    );
    assert!(!b.wait(Duration::from_secs(30)).success());
    assert!(!a.wait(Duration::from_secs(30)).success());
    for f in ["b0", "b1"] {
        let l = read(f);
        assert!(
            l.contains("rank 1 does not match rank 0")
                && l.contains("`train.learning_rate` differs"),
            "{f}: {l}"
        );
    }
    // No secret at all.
    let mut c = tusk();
    c.args([
        "train",
        &cfg,
        "--model",
        &m.display().to_string(),
        "--rank",
        "0",
        "--world-size",
        "2",
        "--master-addr",
        "127.0.0.1",
    ])
    .stdout(Stdio::null())
    .stderr(std::fs::File::create(log("c")).unwrap());
    assert!(
        !Proc::spawn(&mut c, "no secret")
            .wait(Duration::from_secs(30))
            .success()
    );
    assert!(
        read("c").contains("TUSK_JOB_SECRET is not set"),
        "{}",
        read("c")
    );
}

#[test]
fn more_workers_than_rows_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = setup(dir.path(), 3, "epochs = 1\nbatch_size = 4");
    let m = dir.path().join("m");
    let log = dir.path().join("log");
    let mut c = launch(4, &[], &cfg, &m);
    c.stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    let s = Proc::spawn(&mut c, "launch").wait(Duration::from_secs(120));
    let e = std::fs::read_to_string(&log).unwrap();
    assert!(!s.success());
    assert!(
        e.contains("rank(s) 3 have no training rows") && e.contains("use fewer workers"),
        "{e}"
    );
}

#[test]
fn two_workers_with_data_and_model_on_hdfs() {
    let Some(dfs) = tusk_testkit::MiniDfs::start(1) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let local_cfg = setup(dir.path(), 4000, "epochs = 2\ncheckpoint_every = 60");
    // The same data and config with every URL on HDFS.
    let storage = Storage::new().unwrap();
    let base = format!("{}/dp", dfs.hdfs_url());
    for f in ["train.csv", "valid.csv"] {
        let bytes = std::fs::read(dir.path().join(f)).unwrap();
        storage
            .open(&format!("{base}/{f}"))
            .unwrap()
            .write(bytes)
            .unwrap();
    }
    let text = std::fs::read_to_string(&local_cfg)
        .unwrap()
        .replace(&dir.path().display().to_string(), &base);
    let hdfs_cfg = dir.path().join("hdfs.toml");
    std::fs::write(&hdfs_cfg, text).unwrap();
    let local = dir.path().join("local");
    run_ok(
        launch(2, &[], &local_cfg, &local),
        "2 workers, local",
        Duration::from_secs(300),
    );
    let model = format!("{base}/model");
    let mut c = tusk();
    c.args(["launch", "-n", "2", "--", "train"])
        .arg(&hdfs_cfg)
        .args(["--model", &model]);
    run_ok(c, "2 workers, HDFS", Duration::from_secs(300));
    let remote = ModelStore::open(&storage, &model)
        .unwrap()
        .load(None)
        .unwrap();
    let here = load(&local);
    assert_eq!(remote.params, here.params, "HDFS and local runs differ");
    assert_eq!(remote.table, here.table);
    assert!(
        storage
            .open(&format!("{model}/events"))
            .unwrap()
            .list()
            .map(|l| !l.is_empty())
            .unwrap_or(false)
    );
}

#[test]
fn timeline_has_one_track_per_rank_with_every_activity() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = setup(dir.path(), 2000, "epochs = 2\ncheckpoint_every = 50");
    // Fused dense + row gradients (the default at this size), then a ring all-reduce of the
    // dense gradient in one bucket, then one bucket per layer (reduced while the backward pass
    // runs, on a track of their own).
    for (fusion, bucket) in [("262144", "1048576"), ("0", "1048576"), ("0", "1")] {
        let m = dir.path().join(format!("m{fusion}-{bucket}"));
        let trace = dir.path().join(format!("trace{fusion}-{bucket}.json"));
        let mut c = launch(2, &[], &cfg, &m);
        c.args(["--timeline", &trace.display().to_string()])
            .env("TUSK_FUSION_THRESHOLD", fusion)
            .env("TUSK_BUCKET_BYTES", bucket);
        run_ok(c, "timeline", Duration::from_secs(300));
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&trace).unwrap()).unwrap();
        let events = v["traceEvents"].as_array().unwrap();
        let steps = load(&m).meta.state.global_step as usize;
        let fused = events.iter().any(|e| e["name"] == "ALLGATHER");
        // Dense layers: NeuMF's MLP tower (layers = [16, 8]) and its output layer.
        let layers = 3;
        assert_eq!(fused, fusion != "0", "fusion threshold {fusion}");
        for rank in 0..2 {
            let mine: Vec<&serde_json::Value> = events
                .iter()
                .filter(|e| e["pid"] == rank && e["ph"] == "X")
                .collect();
            let count = |name: &str| mine.iter().filter(|e| e["name"] == name).count();
            for name in [
                "READ_BATCH",
                "FORWARD_BACKWARD",
                "OPTIMIZER",
                "CHECKPOINT",
                "EVALUATE",
            ] {
                assert!(count(name) > 0, "rank {rank} has no {name}");
            }
            // One dense exchange per step plus the round per epoch that finds the data ended:
            // a ring all-reduce then the rows' all-gather, or (a dense gradient this small) both
            // in one all-gather.
            let buckets = if bucket == "1" { layers } else { 1 };
            assert_eq!(
                count("ALLREDUCE") / buckets + count("ALLGATHER"),
                steps + 2,
                "rank {rank}"
            );
            assert_eq!(count("ALLREDUCE") % buckets, 0);
            assert!(
                mine.iter()
                    .all(|e| (e["tid"] == 1) == (e["name"] == "ALLREDUCE")),
                "all-reduces on track 1, the rest on track 0"
            );
            let sparse = if count("ALLGATHER") > 0 { 0 } else { steps };
            assert_eq!(count("SPARSE_ALLGATHER"), sparse, "rank {rank}");
            assert_eq!(count("EVALUATE"), 2, "rank {rank}");
            assert!(
                mine.iter()
                    .all(|e| e["dur"].as_u64().is_some() && e["ts"].as_u64().unwrap() > 0)
            );
            assert!(events.iter().any(|e| e["ph"] == "M"
                && e["pid"] == rank
                && e["args"]["name"] == format!("rank {rank}")));
        }
    }
}
