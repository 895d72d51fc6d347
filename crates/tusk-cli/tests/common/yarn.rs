//! Shared by the YARN tests: the processes running inside containers, and waiting for a
//! launched job to run.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tusk_testkit::{Proc, group_members};

/// Held for the whole of a test that runs a YARN cluster: the container helpers below see every
/// container on the machine, so two such tests side by side saw (and once killed) each other's
/// workers. The tests of one binary take turns.
pub fn one_cluster_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// The command line of `pid` when it runs inside a container (the tusk a container
/// unpacked: `./tusk yarn-container …`, and the process it runs by its full path).
pub fn in_container(pid: u32) -> Option<Vec<String>> {
    let c = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let argv: Vec<String> = c
        .split(|b| *b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let exe = argv.first()?;
    (exe == "./tusk" || (exe.contains("/container_") && exe.ends_with("/tusk"))).then_some(argv)
}

/// Every process running inside a container.
pub fn container_processes() -> Vec<u32> {
    tusk_testkit::process_table()
        .into_iter()
        .map(|(pid, _, _)| pid)
        .filter(|pid| in_container(*pid).is_some())
        .collect()
}

/// Wait (at most `limit`) until no process runs inside a container; those left.
pub fn wait_no_containers(limit: Duration) -> Vec<u32> {
    let t = Instant::now();
    loop {
        let left = container_processes();
        if left.is_empty() || t.elapsed() > limit {
            return left;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Wait (at most 300 s) until the launcher `p`, logging to `log_path`, reports its job
/// RUNNING and a container process exists; the application id.
pub fn wait_running_app(log_path: &Path, p: &mut Proc) -> String {
    let t = Instant::now();
    loop {
        let log = std::fs::read_to_string(log_path).unwrap();
        if log.contains("RUNNING") && !container_processes().is_empty() {
            return log
                .split_whitespace()
                .find(|w| w.starts_with("application_"))
                .unwrap()
                .trim_end_matches(':')
                .to_string();
        }
        assert!(
            t.elapsed() < Duration::from_secs(300),
            "never running:\n{log}"
        );
        assert!(p.try_status().is_none(), "{log}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Run `c` (stderr to `log`) for at most `limit`; whether it succeeded, and its log. Nothing
/// of its process group may be left.
pub fn run_logged(mut c: Command, what: &str, log: &Path, limit: Duration) -> (bool, String) {
    c.stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap());
    let mut p = Proc::spawn(&mut c, what);
    let pid = p.id();
    let ok = p.wait(limit).success();
    assert!(group_members(pid).is_empty(), "{what}: processes left");
    (ok, std::fs::read_to_string(log).unwrap_or_default())
}

/// The tusk binary without symbols (the debug build is over 1 GB; containers unpack what they
/// are sent).
pub fn shipped_binary(dir: &Path) -> PathBuf {
    let out = dir.join("tusk-shipped");
    let ok = Command::new("strip")
        .args(["-s", "-o"])
        .arg(&out)
        .arg(env!("CARGO_BIN_EXE_tusk"))
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        out
    } else {
        PathBuf::from(env!("CARGO_BIN_EXE_tusk"))
    }
}

/// tusk without the job variables a surrounding run might have set.
pub fn tusk() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tusk"));
    c.env_remove("TUSK_JOB_SECRET")
        .env_remove("TUSK_EMBEDDING_SERVERS")
        .env_remove("TF_CONFIG")
        .env_remove("TUSK_YARN_CLASSPATH");
    c
}

/// The CSVs of a small NeuMF job (`rows` training rows, 400 validation rows), written to
/// `dir`: `(local file, name)` pairs, to be copied to `{hdfs}/data/{name}`.
pub fn job_csvs(dir: &Path, rows: usize) -> Vec<(PathBuf, &'static str)> {
    [("train.csv", rows, 1), ("valid.csv", 400, 2)]
        .into_iter()
        .map(|(name, n, seed)| {
            let local = dir.join(name);
            super::write_csv(&local, n, seed);
            (local, name)
        })
        .collect()
}

/// `dir/job.toml`: the NeuMF job reading `{hdfs}/data/train.csv` and `valid.csv`; its path.
pub fn job_config(dir: &Path, hdfs: &str, extra: &str) -> String {
    let cfg = super::neumf_config(
        &format!("{hdfs}/data/train.csv"),
        &format!("{hdfs}/data/valid.csv"),
        extra,
    );
    let p = dir.join("job.toml");
    std::fs::write(&p, cfg).unwrap();
    p.display().to_string()
}

/// A small NeuMF job reading its data from HDFS (written by this process); the local config
/// path.
pub fn job(dir: &Path, hdfs: &str, rows: usize, extra: &str) -> String {
    let storage = tusk_storage::Storage::new().unwrap();
    for (local, name) in job_csvs(dir, rows) {
        storage
            .open(&format!("{hdfs}/data/{name}"))
            .unwrap()
            .write(std::fs::read(&local).unwrap())
            .unwrap();
    }
    job_config(dir, hdfs, extra)
}
