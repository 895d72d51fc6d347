//! Embedding servers as users run them: `tusk launch -n N --servers S` starts real server
//! processes beside the workers. Sync mode gives the replicated model bit for bit; a server
//! killed with SIGKILL makes the workers fail at once, the group restarts from the newest
//! version, and the result equals the undisturbed run; nothing is left running.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tusk_testkit::{Proc, children_of, group_members};
use tusk_train::Checkpoint;

mod common;
use common::{load, neumf_config, rows_by_key, write_csv};

fn tusk() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tusk"));
    c.env_remove("TUSK_JOB_SECRET")
        .env_remove("TUSK_EMBEDDING_SERVERS")
        .env_remove("TF_CONFIG")
        .env_remove("JOB_COMPLETION_INDEX");
    c
}

fn setup(dir: &Path, train_rows: usize, extra: &str) -> String {
    write_csv(&dir.join("train.csv"), train_rows, 1);
    write_csv(&dir.join("valid.csv"), 400, 2);
    let d = dir.display();
    let cfg = neumf_config(&format!("{d}/train.csv"), &format!("{d}/valid.csv"), extra);
    let path = dir.join("config.toml");
    std::fs::write(&path, cfg).unwrap();
    path.display().to_string()
}

fn launch(n: usize, extra: &[&str], cfg: &str, model: &Path, mode: &str) -> Command {
    let mut c = tusk();
    c.args(["launch", "-n", &n.to_string()]).args(extra).args([
        "--",
        "train",
        cfg,
        "--model",
        &model.display().to_string(),
        "--set",
        &format!("train.embedding=\"{mode}\""),
    ]);
    c
}

fn run_logged(mut c: Command, what: &str, log: &Path, limit: Duration) -> (bool, String) {
    c.stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap());
    let mut p = Proc::spawn(&mut c, what);
    let launcher = p.id();
    let s = p.wait(limit);
    assert!(group_members(launcher).is_empty(), "{what}: processes left");
    (
        s.success(),
        std::fs::read_to_string(log).unwrap_or_default(),
    )
}

#[test]
fn launch_with_servers_equals_the_replicated_launch() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = setup(dir.path(), 3000, "epochs = 2");
    let replicated = dir.path().join("replicated");
    let (ok, log) = run_logged(
        launch(2, &[], &cfg, &replicated, "replicated"),
        "replicated",
        &dir.path().join("r.log"),
        Duration::from_secs(300),
    );
    assert!(ok, "{log}");
    let served = dir.path().join("served");
    let (ok, log) = run_logged(
        launch(2, &["--servers", "2"], &cfg, &served, "sync"),
        "sync servers",
        &dir.path().join("s.log"),
        Duration::from_secs(300),
    );
    assert!(ok, "{log}");
    assert!(
        log.contains("[launch] embedding servers at 127.0.0.1:"),
        "{log}"
    );
    assert!(
        log.contains("[server 1] embedding server 1 of 2 for 2 worker(s)"),
        "{log}"
    );
    assert!(
        log.contains("[server 0] embedding server 0: the run is finished"),
        "{log}"
    );
    let (a, b) = (load(&served), load(&replicated));
    assert_eq!(a.params, b.params, "dense weights differ");
    assert_eq!(a.adam_m, b.adam_m);
    assert!(rows_by_key(&a) == rows_by_key(&b), "embedding rows differ");
    let metrics = |c: &Checkpoint| {
        c.meta
            .state
            .history
            .iter()
            .map(|h| h.metrics.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(metrics(&a), metrics(&b));
    // `tusk eval` reads the version the servers' rows went into.
    let out = tusk()
        .args(["eval", "--model", &served.display().to_string(), "--data"])
        .arg(dir.path().join("valid.csv"))
        .arg("--json")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let m: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let want = a.meta.state.history.last().unwrap().metrics["validation"]["auc"];
    assert!((m["auc"].as_f64().unwrap() - want).abs() < 1e-9, "{m}");
}

fn is_server(pid: u32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .is_ok_and(|c| c.split(|b| *b == 0).any(|a| a == b"embedding-server"))
}

#[test]
fn killed_server_restarts_the_group_and_matches_the_undisturbed_run() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = setup(
        dir.path(),
        30_000,
        "epochs = 12\nshuffle_buffer = 500\ncheckpoint_every = 200",
    );
    let calm = dir.path().join("calm");
    let t_calm = Instant::now();
    let (ok, log) = run_logged(
        launch(2, &["--servers", "2"], &cfg, &calm, "sync"),
        "undisturbed",
        &dir.path().join("calm.log"),
        Duration::from_secs(600),
    );
    assert!(ok, "{log}");
    let calm_ms = t_calm.elapsed().as_millis() as u64;
    let m = dir.path().join("killed");
    let log_path = dir.path().join("killed.log");
    let mut c = launch(
        2,
        &["--servers", "2", "--max-restarts", "8", "--grace", "2"],
        &cfg,
        &m,
        "sync",
    );
    c.stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap());
    let mut p = Proc::spawn(&mut c, "launch with server kills");
    let launcher = p.id();
    let mut seen = std::collections::BTreeSet::new();
    let mut kills = 0;
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let t = Instant::now();
    while kills < 5 && p.try_status().is_none() && t.elapsed() < Duration::from_secs(500) {
        let procs = children_of(launcher);
        let servers: Vec<u32> = procs.iter().copied().filter(|&q| is_server(q)).collect();
        if procs.len() != 4 || servers.len() != 2 || servers.iter().any(|s| seen.contains(s)) {
            std::thread::sleep(Duration::from_millis(50));
            continue;
        }
        seen.extend(servers.iter().copied());
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        std::thread::sleep(Duration::from_millis(
            (calm_ms * (8 + rng % 11) / 100).max(300),
        ));
        if p.try_status().is_some() {
            break;
        }
        let victim = servers[(rng >> 20) as usize % 2];
        let killed_at = Instant::now();
        let _ = Command::new("kill")
            .args(["-9", &victim.to_string()])
            .status();
        kills += 1;
        // The workers notice at once: the group is stopped and restarted well within the
        // collective timeout.
        while children_of(launcher)
            .iter()
            .any(|q| seen.contains(q) || *q == victim)
            && killed_at.elapsed() < Duration::from_secs(30)
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(
            killed_at.elapsed() < Duration::from_secs(20),
            "the group took {:?} to stop after a server died",
            killed_at.elapsed()
        );
    }
    let s = p.wait(Duration::from_secs(600));
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(s.success(), "launcher failed:\n{log}");
    assert!(
        kills >= 5,
        "only {kills} kills landed before the job ended:\n{log}"
    );
    assert_eq!(log.matches("[launch] restarting").count(), kills, "{log}");
    assert!(log.contains("killed by signal 9"), "{log}");
    assert!(group_members(launcher).is_empty(), "processes left");
    let (a, b) = (load(&m), load(&calm));
    assert_eq!(
        a.params, b.params,
        "dense weights differ from the undisturbed run"
    );
    assert_eq!(a.adam_m, b.adam_m);
    assert_eq!(
        a.table, b.table,
        "embedding rows differ from the undisturbed run"
    );
}

#[test]
fn servers_write_their_shards_to_hdfs() {
    let Some(dfs) = tusk_testkit::MiniDfs::start(1) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let cfg = setup(dir.path(), 3000, "epochs = 2\ncheckpoint_every = 50");
    let local = dir.path().join("local");
    let (ok, log) = run_logged(
        launch(2, &["--servers", "2"], &cfg, &local, "sync"),
        "servers, local model",
        &dir.path().join("l.log"),
        Duration::from_secs(300),
    );
    assert!(ok, "{log}");
    let model = format!("{}/ps/model", dfs.hdfs_url());
    let mut c = tusk();
    c.args([
        "launch",
        "-n",
        "2",
        "--servers",
        "2",
        "--",
        "train",
        &cfg,
        "--model",
        &model,
    ])
    .args(["--set", "train.embedding=\"sync\""]);
    let (ok, log) = run_logged(
        c,
        "servers, HDFS model",
        &dir.path().join("h.log"),
        Duration::from_secs(300),
    );
    assert!(ok, "{log}");
    let storage = tusk_storage::Storage::new().unwrap();
    let store = tusk_train::ModelStore::open(&storage, &model).unwrap();
    let v = store.latest().unwrap().unwrap();
    let names: Vec<String> = store
        .manifest(v)
        .unwrap()
        .files
        .into_iter()
        .map(|f| f.name)
        .collect();
    assert!(
        names.contains(&"embeddings-00001-of-00002.safetensors".to_string()),
        "{names:?}"
    );
    let remote = store.load(None).unwrap();
    let here = load(&local);
    assert_eq!(remote.params, here.params, "HDFS and local runs differ");
    assert_eq!(remote.table, here.table);
    // Scored from HDFS: the shards are merged as the version is loaded.
    let scores = dir.path().join("scores.csv");
    let mut c = tusk();
    c.args(["predict", "--model", &model, "--input"])
        .arg(dir.path().join("valid.csv"))
        .arg("--output")
        .arg(&scores);
    let (ok, log) = run_logged(
        c,
        "predict from HDFS",
        &dir.path().join("p.log"),
        Duration::from_secs(120),
    );
    assert!(ok, "{log}");
    let lines = std::fs::read_to_string(&scores).unwrap().lines().count();
    assert_eq!(lines, 401, "a header and 400 scored rows");
}

/// Async mode: a killed server costs at most the steps since the newest version — the group
/// resumes from a version at least as new as the newest one committed when the server died,
/// and the run still trains every step of the schedule exactly once.
#[test]
fn killed_server_in_async_mode_loses_at_most_the_steps_since_the_last_version() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = setup(
        dir.path(),
        30_000,
        "epochs = 4\nshuffle_buffer = 500\ncheckpoint_every = 100\nstaleness = 2",
    );
    let calm = dir.path().join("calm");
    let t_calm = Instant::now();
    let (ok, log) = run_logged(
        launch(2, &["--servers", "2"], &cfg, &calm, "async"),
        "undisturbed async",
        &dir.path().join("calm.log"),
        Duration::from_secs(600),
    );
    assert!(ok, "{log}");
    let calm_ms = t_calm.elapsed().as_millis() as u64;
    let m = dir.path().join("killed");
    let log_path = dir.path().join("killed.log");
    let mut c = launch(
        2,
        &["--servers", "2", "--max-restarts", "2", "--grace", "2"],
        &cfg,
        &m,
        "async",
    );
    c.stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap());
    let mut p = Proc::spawn(&mut c, "async launch with a server kill");
    let launcher = p.id();
    let storage = tusk_storage::Storage::new().unwrap();
    let store = tusk_train::ModelStore::open(&storage, &m.display().to_string()).unwrap();
    // Wait for a first version, then kill a server a little later.
    let t = Instant::now();
    while store.latest().ok().flatten().is_none() && t.elapsed() < Duration::from_secs(300) {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis((calm_ms / 5).max(200)));
    let newest_at_kill = store.latest().unwrap().expect("a version before the kill");
    let step_at_kill = store.manifest(newest_at_kill).unwrap().global_step;
    let server = children_of(launcher)
        .into_iter()
        .find(|&q| is_server(q))
        .expect("a server");
    let _ = Command::new("kill")
        .args(["-9", &server.to_string()])
        .status();
    let s = p.wait(Duration::from_secs(600));
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(s.success(), "launcher failed:\n{log}");
    assert_eq!(log.matches("[launch] restarting").count(), 1, "{log}");
    assert!(group_members(launcher).is_empty(), "processes left");
    let resumed: u64 = log
        .lines()
        .find_map(|l| {
            l.split("resuming from version ")
                .nth(1)
                .and_then(|r| r.get(..6))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or_else(|| panic!("no resume in the log:\n{log}"));
    assert!(
        resumed >= newest_at_kill,
        "resumed from {resumed}, older than {newest_at_kill}, the newest when the server died"
    );
    let resumed_step = store.manifest(resumed).unwrap().global_step;
    assert!(
        resumed_step >= step_at_kill,
        "{resumed_step} < {step_at_kill}"
    );
    let (a, b) = (load(&m), load(&calm));
    assert_eq!(
        a.meta.state.global_step, b.meta.state.global_step,
        "steps trained"
    );
    assert_eq!(a.meta.state.history.len(), b.meta.state.history.len());
    let auc = |c: &Checkpoint| c.meta.state.history.last().unwrap().metrics["validation"]["auc"];
    assert!(
        (auc(&a) - auc(&b)).abs() < 0.05,
        "AUC {} vs {}",
        auc(&a),
        auc(&b)
    );
}

#[test]
fn server_takes_its_shard_from_an_indexed_job_and_refuses_bad_settings() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("server.log");
    let mut c = tusk();
    c.args([
        "embedding-server",
        "--shards",
        "2",
        "--workers",
        "1",
        "--bind",
        "127.0.0.1:0",
    ])
    .env("JOB_COMPLETION_INDEX", "1")
    .env("TUSK_JOB_SECRET", "s")
    .stdout(Stdio::null())
    .stderr(std::fs::File::create(&log).unwrap());
    let mut p = Proc::spawn(&mut c, "embedding server");
    let t = Instant::now();
    let mut text = String::new();
    while t.elapsed() < Duration::from_secs(30) {
        text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("listening on") {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    p.kill();
    assert!(
        text.contains("embedding server 1 of 2 for 1 worker(s): listening on 127.0.0.1:"),
        "{text}"
    );
    // Each bad setting: a non-zero exit and a message naming it.
    for (args, env, want) in [
        (
            vec![
                "--shard",
                "0",
                "--shards",
                "2",
                "--workers",
                "1",
                "--bind",
                "127.0.0.1:0",
            ],
            None,
            "TUSK_JOB_SECRET",
        ),
        (
            vec![
                "--shard",
                "2",
                "--shards",
                "2",
                "--workers",
                "1",
                "--bind",
                "127.0.0.1:0",
            ],
            Some("s"),
            "shard 2 of 2",
        ),
        (
            vec!["--shard", "0", "--shards", "2", "--bind", "127.0.0.1:0"],
            Some("s"),
            "--workers",
        ),
        (
            vec!["--shards", "2", "--workers", "1", "--bind", "127.0.0.1:0"],
            Some("s"),
            "--shard",
        ),
    ] {
        let mut c = tusk();
        c.arg("embedding-server").args(&args);
        if let Some(s) = env {
            c.env("TUSK_JOB_SECRET", s);
        }
        c.stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        let status = Proc::spawn(&mut c, "bad server").wait(Duration::from_secs(30));
        let err = std::fs::read_to_string(&log).unwrap_or_default();
        assert!(!status.success(), "{args:?}");
        assert!(err.contains(want), "{args:?}: {err}");
    }
}
