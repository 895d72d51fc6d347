//! `tusk launch --yarn` against a real YARN (MiniYARNCluster: the ResourceManager's REST API,
//! 2 NodeManagers in JVMs of their own) and a real HDFS (MiniDFS): data and model in HDFS,
//! Hadoop's DistributedShell as the application master, workers in containers. Skipped
//! without Java/Maven, except in CI.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tusk_storage::Storage;
use tusk_testkit::{MiniDfs, MiniYarn, Proc};

mod common;
use common::yarn::{
    container_processes, in_container, job, run_logged, shipped_binary, tusk, wait_no_containers,
    wait_running_app,
};
use common::{load_url as load, rows_by_key};

struct Cluster {
    yarn: MiniYarn,
    binary: PathBuf,
}

impl Cluster {
    fn launch(&self, hdfs: &str, extra: &[&str], command: &[&str]) -> Command {
        let mut c = tusk();
        c.args(["launch", "--yarn", &self.yarn.rm_url]);
        if !extra.contains(&"--worker-memory") {
            c.args(["--worker-memory", "512m"]);
        }
        c.args(["--am-memory", "256m"])
            .args(["--staging", &format!("{hdfs}/staging")])
            .arg("--tusk-binary")
            .arg(&self.binary)
            .args(extra);
        if !extra.contains(&"--yarn-classpath") {
            c.args(["--yarn-classpath", &self.yarn.classpath]);
        }
        c.arg("--").args(command);
        c
    }
}

/// The job on YARN equals the same job under a local `tusk launch -n 2`, bit for bit; a
/// container killed mid-run restarts the job from the newest version, and the result is still
/// the same model; the staging directory is gone afterwards.
#[test]
fn yarn_job_equals_the_local_launch_and_survives_a_killed_container() {
    let _turn = common::yarn::one_cluster_at_a_time();
    let Some(dfs) = MiniDfs::start(1) else {
        return;
    };
    let Some(yarn) = MiniYarn::start(2, 0) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let hdfs = format!("{}/yarn-job", dfs.hdfs_url());
    let cfg = job(
        dir.path(),
        &hdfs,
        6000,
        "epochs = 3\ncheckpoint_every = 40\nshuffle_buffer = 500",
    );
    let cluster = Cluster {
        yarn,
        binary: shipped_binary(dir.path()),
    };
    let storage = Storage::new().unwrap();

    let local = format!("{hdfs}/model-local");
    let mut c = tusk();
    c.args(["launch", "-n", "2", "--", "train", &cfg, "--model", &local]);
    let (ok, log) = run_logged(
        c,
        "local launch",
        &dir.path().join("local.log"),
        Duration::from_secs(600),
    );
    assert!(ok, "{log}");

    let on_yarn = format!("{hdfs}/model-yarn");
    let (ok, log) = run_logged(
        cluster.launch(&hdfs, &["-n", "2"], &["train", &cfg, "--model", &on_yarn]),
        "yarn launch",
        &dir.path().join("yarn.log"),
        Duration::from_secs(900),
    );
    assert!(ok, "{log}");
    for needle in [
        "submitted tusk as application_",
        "RUNNING",
        "rank 0 ran in container_",
        "rank 1 ran in container_",
        "succeeded",
        "removed the staging directory",
    ] {
        assert!(log.contains(needle), "no '{needle}' in:\n{log}");
    }
    let (a, b) = (load(&on_yarn), load(&local));
    assert!(
        a.params == b.params,
        "dense weights differ from the local launch"
    );
    assert!(
        a.table == b.table,
        "embedding tables differ from the local launch"
    );
    assert_eq!(a.meta.state.history.len(), b.meta.state.history.len());
    let staging = storage.open(&format!("{hdfs}/staging")).unwrap();
    // Only the processes' output is kept (for `tusk yarn logs`); the staged job is gone.
    let left = staging.list_names().unwrap();
    assert!(
        left.is_empty() || left == ["logs"],
        "staging left: {left:?}"
    );
    assert!(wait_no_containers(Duration::from_secs(30)).is_empty());

    // A worker killed inside its container: the attempt fails, the job is resubmitted with
    // --resume and ends with the same model.
    let killed = format!("{hdfs}/model-killed");
    let mut c = cluster.launch(
        &hdfs,
        &["-n", "2", "--max-restarts", "2"],
        &["train", &cfg, "--model", &killed],
    );
    let log_path = dir.path().join("killed.log");
    c.stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap());
    let mut p = Proc::spawn(&mut c, "yarn launch, a container killed");
    let store = tusk_train::ModelStore::open(&storage, &killed).unwrap();
    let t = Instant::now();
    while store.latest().ok().flatten().is_none() && t.elapsed() < Duration::from_secs(600) {
        assert!(
            p.try_status().is_none(),
            "{}",
            std::fs::read_to_string(&log_path).unwrap()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let victim = container_processes()
        .into_iter()
        .find(|pid| {
            in_container(*pid).is_some_and(|a| a.get(1).map(String::as_str) == Some("train"))
        })
        .expect("a worker process in a container");
    let _ = Command::new("kill")
        .args(["-9", &victim.to_string()])
        .status();
    let s = p.wait(Duration::from_secs(900));
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(s.success(), "{log}");
    assert!(
        log.contains("restarting from the newest committed version"),
        "{log}"
    );
    assert!(log.contains("resubmitted tusk as application_"), "{log}");
    let got = load(&killed);
    assert!(
        got.params == b.params,
        "after the kill: dense weights differ"
    );
    assert!(
        got.table == b.table,
        "after the kill: embedding tables differ"
    );
    assert!(wait_no_containers(Duration::from_secs(30)).is_empty());
}

/// GPUs as YARN's `yarn.io/gpu` resource: 2 NodeManagers with one device each, 2 workers of one
/// GPU each → one worker per node. Then the refusals: more GPUs or memory than a container may
/// have, an unreachable ResourceManager, an unknown queue, an application master that cannot
/// start, and a job killed with `tusk yarn kill`, which leaves no container running.
#[test]
fn yarn_gpu_requests_and_bad_input() {
    let _turn = common::yarn::one_cluster_at_a_time();
    let Some(dfs) = MiniDfs::start(1) else {
        return;
    };
    let Some(yarn) = MiniYarn::start(2, 1) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let hdfs = format!("{}/yarn-gpu", dfs.hdfs_url());
    let cfg = job(dir.path(), &hdfs, 2000, "epochs = 1");
    let cluster = Cluster {
        yarn,
        binary: shipped_binary(dir.path()),
    };
    let model = format!("{hdfs}/model");
    let (ok, log) = run_logged(
        cluster.launch(
            &hdfs,
            &["-n", "2", "--gpus-per-worker", "1"],
            &["train", &cfg, "--model", &model],
        ),
        "yarn launch with GPUs",
        &dir.path().join("gpu.log"),
        Duration::from_secs(900),
    );
    assert!(ok, "{log}");
    let nodes: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("ran in container_"))
        .filter_map(|l| l.split(" on node ").nth(1))
        .collect();
    assert_eq!(nodes.len(), 2, "{log}");
    assert_ne!(
        nodes[0], nodes[1],
        "two 1-GPU workers on one 1-GPU node:\n{log}"
    );

    // Embedding servers in containers too: 2 workers + 1 server in sync mode give the
    // replicated model of the run above, bit for bit.
    let sharded = format!("{hdfs}/model-servers");
    let (ok, log) = run_logged(
        cluster.launch(
            &hdfs,
            &["-n", "2", "--servers", "1"],
            &[
                "train",
                &cfg,
                "--model",
                &sharded,
                "--set",
                "train.embedding=\"sync\"",
            ],
        ),
        "yarn launch with a server",
        &dir.path().join("servers.log"),
        Duration::from_secs(900),
    );
    assert!(ok, "{log}");
    assert!(log.contains("server 0 ran in container_"), "{log}");
    let (a, b) = (load(&sharded), load(&model));
    assert!(
        a.params == b.params,
        "dense weights differ from the replicated run"
    );
    assert!(
        rows_by_key(&a) == rows_by_key(&b),
        "embedding rows differ from the replicated run"
    );

    let fails = |extra: &[&str], what: &str| -> String {
        let (ok, log) = run_logged(
            cluster.launch(
                &hdfs,
                extra,
                &["train", &cfg, "--model", &format!("{hdfs}/m-bad")],
            ),
            what,
            &dir.path().join("bad.log"),
            Duration::from_secs(300),
        );
        assert!(!ok, "{what} succeeded:\n{log}");
        log
    };
    let e = fails(&["-n", "2", "--gpus-per-worker", "2"], "2 GPUs per worker");
    assert!(
        e.contains(
            "--gpus-per-worker 2 is more than this cluster's largest container, 1 yarn.io/gpu"
        ),
        "{e}"
    );
    let e = fails(&["-n", "2", "--worker-memory", "8g"], "8 GB workers");
    assert!(
        e.contains("8192 MB is more than this cluster's largest container, 2048 MB"),
        "{e}"
    );
    let e = fails(&["-n", "1", "--queue", "nosuch"], "unknown queue");
    assert!(
        e.contains("nosuch") && e.contains("FAILED") && e.contains("not restarting"),
        "{e}"
    );
    let e = fails(
        &[
            "-n",
            "1",
            "--max-restarts",
            "2",
            "--yarn-classpath",
            "/nonexistent",
        ],
        "no application master",
    );
    assert!(
        e.contains("FAILED")
            && e.contains("exitCode")
            && e.contains("no container of the job started"),
        "{e}"
    );
    assert!(!e.contains("resubmitted"), "{e}");
    let mut c = tusk();
    c.args([
        "launch",
        "--yarn",
        "http://127.0.0.1:1",
        "-n",
        "1",
        "--staging",
        "hdfs://x/y",
        "--",
        "train",
        &cfg,
    ]);
    let (ok, e) = run_logged(
        c,
        "unreachable RM",
        &dir.path().join("rm.log"),
        Duration::from_secs(120),
    );
    assert!(!ok);
    assert!(
        e.contains("cannot reach the YARN ResourceManager at http://127.0.0.1:1"),
        "{e}"
    );

    // `tusk tune --yarn`: every trial a YARN application, its metric read from rank 0's
    // followed output, the study on HDFS; the median pruner kills the applications of the
    // trials it stops.
    std::fs::write(
        dir.path().join("objective.py"),
        "import os, sys, time\n\
         x = float(sys.argv[2].split('=', 1)[1])\n\
         for s in range(1, int(os.environ['STEPS']) + 1):\n\
         \x20   print(f'loss={(x - 0.3) ** 2 + 1 / s}', flush=True)\n\
         \x20   time.sleep(0.5)\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("space.toml"),
        "x = { uniform = [0.0, 1.0] }\n",
    )
    .unwrap();
    let study = format!("{hdfs}/study");
    let storage = Storage::new().unwrap();
    let launch = format!(
        "-n 1 --worker-memory 512m --am-memory 256m --staging {hdfs}/staging --tusk-binary {} --yarn-classpath {} --env STEPS=6",
        cluster.binary.display(),
        cluster.yarn.classpath
    );
    let mut c = tusk();
    c.arg("tune")
        .arg(dir.path().join("space.toml"))
        .args(["--study", &study, "--metric", "loss", "--trials", "5"])
        .args([
            "--parallel",
            "2",
            "--sampler",
            "random",
            "--pruner",
            "median",
        ])
        .args(["--yarn", &cluster.yarn.rm_url, "--launch", &launch])
        .arg("--")
        .arg("python3")
        .arg(dir.path().join("objective.py"));
    let (ok, log) = run_logged(
        c,
        "tune on yarn",
        &dir.path().join("tune.log"),
        Duration::from_secs(600),
    );
    assert!(ok, "{log}");
    let o = tusk().args(["tune", "status", &study]).output().unwrap();
    let table = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let rows: Vec<Vec<String>> = table
        .lines()
        .skip(2)
        .map(|l| l.split('|').map(|c| c.trim().to_string()).collect())
        .collect();
    assert_eq!(rows.len(), 5, "{table}\n{log}");
    for r in &rows {
        assert!(r[2] == "complete" || r[2] == "pruned", "{table}\n{log}");
        if r[2] == "complete" {
            // the last of 6 steps: (x - 0.3)² + 1/6, with x from the trial's parameters
            let x: f64 = r
                .iter()
                .find_map(|c| c.strip_prefix("x="))
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("no x in {r:?}"));
            let best: f64 = r[3].parse().unwrap();
            assert!(
                (best - ((x - 0.3).powi(2) + 1.0 / 6.0)).abs() < 1e-4,
                "{table}"
            );
        }
    }
    assert!(
        storage
            .open(&format!("{study}/best/tune.json"))
            .unwrap()
            .exists()
            .unwrap(),
        "{log}"
    );
    let left = wait_no_containers(Duration::from_secs(30));
    assert!(left.is_empty(), "container processes left: {left:?}");

    // Killed from outside: the launcher reports it and no container is left.
    let mut c = cluster.launch(
        &hdfs,
        &["-n", "1", "--max-restarts", "3"],
        &[
            "train",
            &cfg,
            "--model",
            &format!("{hdfs}/m-kill"),
            "--set",
            "train.epochs=500",
        ],
    );
    let log_path = dir.path().join("kill.log");
    c.stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap());
    let mut p = Proc::spawn(&mut c, "yarn launch to be killed");
    let app = wait_running_app(&log_path, &mut p);
    let o = tusk()
        .args(["yarn", "status", &app, "--yarn", &cluster.yarn.rm_url])
        .output()
        .unwrap();
    let status = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success() && status.contains("RUNNING"), "{status}");
    let o = tusk()
        .args(["yarn", "kill", &app, "--yarn", &cluster.yarn.rm_url])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let s = p.wait(Duration::from_secs(120));
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(!s.success(), "{log}");
    assert!(log.contains("KILLED"), "{log}");
    assert!(
        !log.contains("resubmitted"),
        "a killed job is not restarted:\n{log}"
    );
    let left = wait_no_containers(Duration::from_secs(30));
    assert!(left.is_empty(), "container processes left: {left:?}");
}

/// The Python interpreter with torch and the tusk package (scripts/test installs both into
/// $TUSK_CACHE/venv before the cargo tests); `None` (a loud skip) where there is none, except
/// in CI.
fn python_with_torch() -> Option<PathBuf> {
    let cache = std::env::var_os("TUSK_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/tusk"));
    let py = std::env::var_os("TUSK_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| cache.join("venv/bin/python"));
    let ok = Command::new(&py)
        .args(["-c", "import torch, tusk, PIL"])
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        return Some(py);
    }
    let why = format!("{} cannot import torch, tusk and PIL", py.display());
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "CI=true: {why} (scripts/test installs them)"
    );
    eprintln!("SKIPPED LOUDLY: PyTorch jobs on YARN: {why}");
    None
}

/// A packed Python environment, as a user ships one: a venv (made by `python -m venv`) in a
/// tar.gz. To keep it small here, its site-packages point at the test venv's (a `.pth` file)
/// instead of holding torch itself; the containers unpack it, put its `bin/` first on PATH and
/// run the command's `python` from it.
fn packed_env(py: &std::path::Path, dir: &std::path::Path) -> PathBuf {
    let env = dir.join("pyenv");
    let ok = Command::new(py)
        .args(["-m", "venv", "--without-pip"])
        .arg(&env)
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "python -m venv");
    let out = Command::new(py)
        .args([
            "-c",
            "import site, sysconfig; print(sysconfig.get_paths()['purelib'])",
        ])
        .output()
        .unwrap();
    let outer = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let inner = std::fs::read_dir(env.join("lib"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path()
        .join("site-packages");
    std::fs::write(inner.join("test-venv.pth"), format!("{outer}\n")).unwrap();
    let archive = dir.join("pyenv.tar.gz");
    let ok = Command::new("tar")
        .arg("-czf")
        .arg(&archive)
        .arg("-C")
        .arg(&env)
        .arg(".")
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "tar");
    archive
}

/// An unmodified PyTorch DDP script (the image example's CNN, gloo) on YARN: 2 containers on
/// 2 NodeManagers, the Python environment shipped as an archive, the script carried along, data
/// and checkpoints on HDFS. A worker killed with -9 fails the application; the job is resubmitted,
/// the script resumes from its own checkpoint, and both ranks end with equal parameters. The
/// output of each attempt's processes is there with `tusk yarn logs`. A file that is not an
/// archive is refused before anything is submitted. Then TensorFlow: the Keras example under
/// MultiWorkerMirroredStrategy with `--tf-config`, both workers ending with equal weights.
#[test]
fn pytorch_ddp_script_on_yarn_with_a_packed_python_environment() {
    let _turn = common::yarn::one_cluster_at_a_time();
    let Some(py) = python_with_torch() else {
        return;
    };
    let Some(dfs) = MiniDfs::start(1) else {
        return;
    };
    let Some(yarn) = MiniYarn::start(2, 0) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let hdfs = format!("{}/yarn-python", dfs.hdfs_url());
    let examples = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/images");
    // 1,000 digits as PNG files, normalised straight into TFRecord datasets on HDFS.
    let png = dir.path().join("png");
    let ok = Command::new(&py)
        .arg(examples.join("prepare_digits.py"))
        .arg(&png)
        .args(["--count", "1000"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "prepare_digits.py");
    for split in ["train", "test"] {
        let out = tusk()
            .args(["images", "normalize", "--input"])
            .arg(png.join(split))
            // Shards below MiniDFS's 1 MiB block: a write that asks for a second block can meet
            // NotReplicatedYetException, which hdfs-native's streaming writer does not retry.
            .args(["--output", &format!("{hdfs}/{split}"), "--shards", "4"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
    }
    let archive = packed_env(&py, dir.path());
    let cluster = Cluster {
        yarn,
        binary: shipped_binary(dir.path()),
    };
    let staging = format!("{hdfs}/staging");
    let params = dir.path().join("params");
    let ckpt = format!("{hdfs}/ckpt");
    let script = examples.join("train_cnn.py");
    let command = [
        "python",
        script.to_str().unwrap(),
        "--train",
        &format!("{hdfs}/train"),
        "--test",
        &format!("{hdfs}/test"),
        "--checkpoints",
        &ckpt,
        "--epochs",
        "8",
        "--batch-size",
        "16",
        "--params-out",
        params.to_str().unwrap(),
    ];

    // Not an archive: one error line, nothing submitted.
    let bogus = dir.path().join("env.tar.gz");
    std::fs::write(&bogus, "not an archive").unwrap();
    let out = cluster
        .launch(
            &hdfs,
            &["-n", "2", "--python-env", bogus.to_str().unwrap()],
            &command,
        )
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert!(
        errors.len() == 1 && errors[0].contains("neither a tar nor a tar.gz archive"),
        "{err}"
    );
    assert!(!err.contains("submitted"), "{err}");

    let mut c = cluster.launch(
        &hdfs,
        &[
            "-n",
            "2",
            "--max-restarts",
            "2",
            "--python-env",
            archive.to_str().unwrap(),
        ],
        &command,
    );
    let log_path = dir.path().join("yarn.log");
    c.stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap());
    let mut p = Proc::spawn(&mut c, "a PyTorch job on YARN");
    let storage = Storage::new().unwrap();
    let first = storage.open(&format!("{ckpt}/epoch-0001.pt")).unwrap();
    let t = Instant::now();
    while !first.exists().unwrap_or(false) {
        assert!(
            p.try_status().is_none() && t.elapsed() < Duration::from_secs(600),
            "{}",
            std::fs::read_to_string(&log_path).unwrap()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let victim = tusk_testkit::process_table()
        .into_iter()
        .map(|(pid, _, _)| pid)
        .find(|pid| {
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).unwrap_or_default();
            String::from_utf8_lossy(&cmd).contains("train_cnn.py")
                && cwd.to_string_lossy().contains("/container_")
        })
        .expect("a Python worker in a container");
    let _ = Command::new("kill")
        .args(["-9", &victim.to_string()])
        .status();
    let s = p.wait(Duration::from_secs(900));
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(s.success(), "{log}");
    assert!(log.contains("resubmitted tusk as application_"), "{log}");
    assert!(log.contains("staged the Python environment"), "{log}");
    let apps: Vec<String> = log
        .split_whitespace()
        .filter(|w| w.starts_with("application_"))
        .map(|w| w.trim_end_matches([':', ',', ')']).to_string())
        .collect();
    let last = apps.last().unwrap().clone();
    assert_ne!(apps[0], last);

    // The resumed attempt's output, through `tusk yarn logs`.
    let out = tusk()
        .args(["yarn", "logs", &last, "--staging", &staging])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        text.contains("[rank-0] resumed from") && text.contains("[rank-1] resumed from"),
        "{text}"
    );
    assert!(text.contains("restart 1"), "{text}");
    let acc: f64 = text
        .lines()
        .filter_map(|l| l.strip_prefix("[rank-0] test accuracy "))
        .next_back()
        .expect("a test accuracy")
        .parse()
        .unwrap();
    assert!(acc >= 0.85, "test accuracy {acc}:\n{text}");
    // The killed attempt's output is there too, as of its last snapshot (YARN stops the other
    // containers of a failed application within moments, before they end on their own).
    let out = tusk()
        .args([
            "yarn",
            "logs",
            &apps[0],
            "--staging",
            &staging,
            "--only",
            "rank-0",
        ])
        .output()
        .unwrap();
    let first_attempt = String::from_utf8_lossy(&out.stdout);
    assert!(
        first_attempt.contains("[rank-0] 2 rank(s) on cpu (gloo)")
            && !first_attempt.contains("[rank-1]"),
        "{out:?}"
    );

    // The two ranks' parameters are equal.
    let same = Command::new(&py)
        .arg("-c")
        .arg(format!(
            "import numpy as np; a=np.load('{0}/rank-0.npz'); b=np.load('{0}/rank-1.npz'); \
             assert len(a.files)==8 and all(np.array_equal(a[k],b[k]) for k in a.files)",
            params.display()
        ))
        .status()
        .is_ok_and(|s| s.success());
    assert!(same, "the ranks' parameters differ");
    assert!(wait_no_containers(Duration::from_secs(30)).is_empty());

    // TensorFlow on YARN: each worker publishes an address at the rendezvous and gets the whole
    // TF_CONFIG; MultiWorkerMirroredStrategy keeps the two workers' weights equal.
    let weights = dir.path().join("tf-weights");
    let keras = examples.join("train_keras.py");
    let (ok, log) = run_logged(
        cluster.launch(
            &hdfs,
            &[
                "-n",
                "2",
                "--tf-config",
                "--python-env",
                archive.to_str().unwrap(),
            ],
            &[
                "python",
                keras.to_str().unwrap(),
                "--train",
                &format!("{hdfs}/train"),
                "--test",
                &format!("{hdfs}/test"),
                "--epochs",
                "2",
                "--batch-size",
                "16",
                "--weights-out",
                weights.to_str().unwrap(),
            ],
        ),
        "a TensorFlow job on YARN",
        &dir.path().join("tf.log"),
        Duration::from_secs(900),
    );
    assert!(ok, "{log}");
    let app = log
        .split_whitespace()
        .filter(|w| w.starts_with("application_"))
        .map(|w| w.trim_end_matches([':', ',', ')']).to_string())
        .next_back()
        .unwrap();
    let out = tusk()
        .args(["yarn", "logs", &app, "--staging", &staging])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for r in 0..2 {
        assert!(
            text.contains(&format!("[rank-{r}] worker {r}: test accuracy")),
            "{text}"
        );
    }
    let same = Command::new(&py)
        .arg("-c")
        .arg(format!(
            "import numpy as np; a=np.load('{0}/worker-0.npz'); b=np.load('{0}/worker-1.npz'); \
             assert len(a.files)==8 and all(np.array_equal(a[k],b[k]) for k in a.files)",
            weights.display()
        ))
        .status()
        .is_ok_and(|s| s.success());
    assert!(same, "the TensorFlow workers' weights differ");
    assert!(wait_no_containers(Duration::from_secs(30)).is_empty());
}
