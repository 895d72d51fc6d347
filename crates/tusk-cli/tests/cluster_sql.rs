//! `tusk sql --cluster` and `tusk preprocess clickstream --cluster`: a real Ballista scheduler
//! and executors (`tusk sql-scheduler`, `tusk sql-executor`) as separate processes over real
//! sockets, compared with the embedded engine.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use tusk_testkit::Proc;

const TUSK: &str = env!("CARGO_BIN_EXE_tusk");

fn tusk(args: &[&str]) -> Output {
    Command::new(TUSK).args(args).output().unwrap()
}

fn ok(o: &Output) -> String {
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "tusk failed: {err}");
    err
}

use tusk_testkit::free_port;

/// A scheduler and executors, each a process group of its own, killed on drop.
struct SqlCluster {
    _scheduler: Proc,
    executors: Vec<Proc>,
    port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl SqlCluster {
    /// `hide`: run every process in a mount namespace of its own where `hide.1` shows the
    /// contents of `hide.0` (this process sees `hide.1` as it is).
    fn start(executors: usize, hide: Option<(&Path, &Path)>) -> SqlCluster {
        SqlCluster::start_with(executors, hide, &[])
    }

    /// [`SqlCluster::start`], every process with `env` added to its environment.
    fn start_with(
        executors: usize,
        hide: Option<(&Path, &Path)>,
        env: &[(String, String)],
    ) -> SqlCluster {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let log = dir.path().join("scheduler.log");
        let wrap = |args: Vec<String>, out: &Path| -> Command {
            let mut c = match hide {
                None => {
                    let mut c = Command::new(TUSK);
                    c.args(&args);
                    c
                }
                Some((src, dst)) => {
                    let mut c = Command::new("unshare");
                    c.args(["--mount", "--propagation", "private", "sh", "-c"])
                        .arg("mount --bind \"$1\" \"$2\" && shift 2 && exec \"$@\"")
                        .arg("sh")
                        .arg(src)
                        .arg(dst)
                        .arg(TUSK)
                        .args(&args);
                    c
                }
            };
            let f = std::fs::File::create(out).unwrap();
            c.stdout(f.try_clone().unwrap())
                .stderr(f)
                .env("TUSK_SQL_LOG", "info")
                .envs(env.iter().map(|(k, v)| (k, v)));
            c
        };
        let scheduler = Proc::spawn(
            &mut wrap(
                vec![
                    "sql-scheduler".into(),
                    "--bind".into(),
                    format!("127.0.0.1:{port}"),
                ],
                &log,
            ),
            "tusk sql-scheduler",
        );
        wait_for_text(&log, "listening on", 1, Duration::from_secs(60));
        let mut procs = Vec::new();
        for i in 0..executors {
            let work = dir.path().join(format!("exec{i}"));
            std::fs::create_dir_all(&work).unwrap();
            procs.push(Proc::spawn(
                &mut wrap(
                    vec![
                        "sql-executor".into(),
                        "--scheduler".into(),
                        format!("127.0.0.1:{port}"),
                        "--bind".into(),
                        format!("127.0.0.1:{}", free_port()),
                        "--grpc-port".into(),
                        free_port().to_string(),
                        "--concurrency".into(),
                        "2".into(),
                        "--work-dir".into(),
                        work.to_string_lossy().into_owned(),
                    ],
                    &dir.path().join(format!("executor{i}.log")),
                ),
                &format!("tusk sql-executor {i}"),
            ));
        }
        wait_for_text(
            &log,
            "register executor request",
            executors,
            Duration::from_secs(60),
        );
        SqlCluster {
            _scheduler: scheduler,
            executors: procs,
            port,
            log,
            _dir: dir,
        }
    }

    fn url(&self) -> String {
        format!("df://127.0.0.1:{}", self.port)
    }

    fn scheduler_log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Wait until `file` holds `needle` at least `times` times.
fn wait_for_text(file: &Path, needle: &str, times: usize, limit: Duration) {
    let start = Instant::now();
    loop {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        if text.matches(needle).count() >= times {
            return;
        }
        assert!(
            start.elapsed() < limit,
            "'{needle}' x{times} not in {} within {limit:?}:\n{text}",
            file.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

const HEADER: &str =
    "event_time,event_type,product_id,category_id,category_code,brand,price,user_id,user_session";

/// The nine events of the hand-checked golden test (crates/tusk-preprocess/tests).
fn golden_logs(dir: &Path) {
    for (day, rows) in [
        (
            "2019-10-01",
            "2019-10-01 10:00:00 UTC,view,100,10,electronics.phone,acme,100.00,1,s1\n\
             2019-10-01 10:01:00 UTC,cart,100,10,electronics.phone,acme,100.00,1,s1\n\
             2019-10-01 10:02:00 UTC,purchase,100,10,electronics.phone,acme,100.00,1,s1\n\
             2019-10-01 11:00:00 UTC,view,200,20,,bolt,50.00,1,s2\n\
             2019-10-01 12:00:00 UTC,view,200,20,,bolt,50.00,2,s3\n\
             2019-10-01 12:05:00 UTC,remove_from_cart,200,20,,bolt,50.00,2,s3\n",
        ),
        (
            "2019-10-02",
            "2019-10-02 09:00:00 UTC,view,300,10,electronics.phone,,10.00,1,s4\n\
             2019-10-02 09:30:00 UTC,purchase,200,20,,bolt,50.00,2,s5\n\
             2019-10-02 09:40:00 UTC,click,200,20,,bolt,50.00,2,s5\n",
        ),
    ] {
        let d = dir.join(format!("date={day}"));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("part-00000.csv"), format!("{HEADER}\n{rows}")).unwrap();
    }
}

/// Every file of a dataset directory tree but the manifests (which hold times), by path.
fn shard_bytes(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if !p.file_name().unwrap().to_string_lossy().starts_with('_') {
                let rel = p.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
                out.push((rel, std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

fn clickstream(input: &str, output: &Path, extra: &[&str]) -> Output {
    let out = output.to_string_lossy();
    let mut args = vec![
        "preprocess",
        "clickstream",
        "--input",
        input,
        "--output",
        &out,
        "--negatives",
        "3",
        "--shards",
        "2",
    ];
    args.extend_from_slice(extra);
    tusk(&args)
}

fn datagen(out: &str, events: usize) {
    ok(&tusk(&[
        "datagen",
        "clickstream",
        "--out",
        out,
        "--users",
        "300",
        "--items",
        "200",
        "--events",
        &events.to_string(),
        "--days",
        "3",
    ]));
}

#[test]
fn clickstream_on_a_cluster_equals_the_embedded_engine_row_for_row() {
    let cluster = SqlCluster::start(2, None);
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("golden");
    golden_logs(&logs);
    let logs = logs.to_string_lossy().into_owned();
    let local = dir.path().join("local");
    let remote = dir.path().join("remote");
    ok(&clickstream(&logs, &local, &[]));
    let err = ok(&clickstream(&logs, &remote, &["--cluster", &cluster.url()]));
    assert!(err.contains("read 9 events from 2 file(s)"), "{err}");
    assert!(
        err.contains("skipped 1 event(s) of unknown type 'click'"),
        "{err}"
    );
    let a = shard_bytes(&local);
    assert!(!a.is_empty());
    assert_eq!(
        a,
        shard_bytes(&remote),
        "golden samples differ on the cluster"
    );
    for split in ["train", "test"] {
        assert!(remote.join(split).join("_manifest.json").exists());
    }
    // the scratch directory of CREATE TABLE … AS is gone
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("sql-scratch"))
        .collect();
    assert!(left.is_empty(), "scratch left behind: {left:?}");

    // generated logs on HDFS: the executors read them from the NameNode and DataNodes
    let Some(dfs) = tusk_testkit::MiniDfs::start(1) else {
        return;
    };
    let hdfs_logs = format!("{}/logs", dfs.hdfs_url());
    datagen(&hdfs_logs, 20_000);
    let local = dir.path().join("hdfs-local");
    let remote = dir.path().join("hdfs-remote");
    ok(&clickstream(&hdfs_logs, &local, &[]));
    let scratch = format!("{}/scratch", dfs.hdfs_url());
    ok(&clickstream(
        &hdfs_logs,
        &remote,
        &["--cluster", &cluster.url(), "--scratch", &scratch],
    ));
    let a = shard_bytes(&local);
    assert_eq!(a.len(), 6, "2 + 2 sample shards and 2 entity tables");
    assert_eq!(
        a,
        shard_bytes(&remote),
        "HDFS samples differ on the cluster"
    );
    // the materialised tables went to HDFS and were removed
    let storage = tusk_storage::Storage::new().unwrap();
    assert!(
        storage.open(&scratch).unwrap().list().unwrap().is_empty(),
        "scratch on HDFS left behind"
    );
    assert!(
        cluster
            .scheduler_log()
            .contains("Job finished successfully")
    );
}

/// Tables on S3 (a real S3-compatible server): the executors read the generated logs from the
/// bucket, the materialised tables go to a scratch prefix there and are removed, and the
/// samples equal the embedded engine's.
#[test]
fn clickstream_on_a_cluster_reads_s3() {
    let Some(s3) = tusk_testkit::S3Server::start() else {
        return;
    };
    s3.create_bucket("tusk-sql");
    let env = s3.env();
    let cluster = SqlCluster::start_with(2, None, &env);
    let run = |args: &[&str]| -> Output {
        Command::new(TUSK)
            .args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .output()
            .unwrap()
    };
    ok(&run(&[
        "datagen",
        "clickstream",
        "--out",
        "s3://tusk-sql/logs",
        "--users",
        "300",
        "--items",
        "200",
        "--events",
        "20000",
        "--days",
        "3",
    ]));
    let dir = tempfile::tempdir().unwrap();
    let (local, remote) = (dir.path().join("local"), dir.path().join("remote"));
    let args = |out: &Path| -> Vec<String> {
        [
            "preprocess",
            "clickstream",
            "--input",
            "s3://tusk-sql/logs",
            "--output",
            &out.to_string_lossy(),
            "--negatives",
            "3",
            "--shards",
            "2",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let embedded = args(&local);
    ok(&run(&embedded
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()));
    let mut on_cluster = args(&remote);
    on_cluster.extend(
        [
            "--cluster",
            &cluster.url(),
            "--scratch",
            "s3://tusk-sql/scratch",
        ]
        .map(String::from),
    );
    ok(&run(&on_cluster
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()));
    let a = shard_bytes(&local);
    assert_eq!(a.len(), 6, "2 + 2 sample shards and 2 entity tables");
    assert_eq!(a, shard_bytes(&remote), "S3 samples differ on the cluster");
    let storage = tusk_storage::Storage::with_options(env.clone()).unwrap();
    assert!(
        storage
            .open("s3://tusk-sql/scratch")
            .unwrap()
            .list()
            .unwrap()
            .is_empty(),
        "scratch on S3 left behind"
    );
    assert!(
        cluster
            .scheduler_log()
            .contains("Job finished successfully")
    );
}

#[test]
fn sql_with_tables_made_and_series_runs_on_the_cluster() {
    let cluster = SqlCluster::start(2, None);
    let dir = tempfile::tempdir().unwrap();
    let d = |n: &str| dir.path().join(n).to_string_lossy().into_owned();
    let mut rows = String::from("k,v,grp\n");
    for i in 0..500 {
        rows.push_str(&format!("{i},{}.25,{}\n", i % 17, ["a", "b", "c"][i % 3]));
    }
    std::fs::write(dir.path().join("t.csv"), rows).unwrap();
    std::fs::write(
        dir.path().join("q.sql"),
        "CREATE TABLE per_grp AS SELECT grp, count(*) AS n, sum(v) AS s FROM t GROUP BY grp;\n\
         CREATE VIEW big AS SELECT * FROM t WHERE k >= 250;\n\
         SELECT b.grp AS split, b.k, r.value AS rep, p.n, p.s, b.v * r.value AS scaled\n\
         FROM big b JOIN per_grp p ON p.grp = b.grp CROSS JOIN range(3) AS r\n\
         ORDER BY b.k, r.value",
    )
    .unwrap();
    let run = |out: &str, extra: &[&str]| {
        let table = format!("t={}", d("t.csv"));
        let query = d("q.sql");
        let mut args = vec![
            "sql",
            "--table",
            &table,
            "--query",
            &query,
            "--output",
            out,
            "--split-by",
            "split",
            "--shards",
            "2",
        ];
        args.extend_from_slice(extra);
        tusk(&args)
    };
    ok(&run(&d("local"), &[]));
    let err = ok(&run(&d("remote"), &["--cluster", &cluster.url()]));
    assert!(
        err.contains("wrote 250 rows to") || err.contains("rows to"),
        "{err}"
    );
    let a = shard_bytes(&dir.path().join("local"));
    assert_eq!(a.len(), 6, "3 splits x 2 shards");
    assert_eq!(a, shard_bytes(&dir.path().join("remote")));
}

#[test]
fn only_the_executors_read_the_logs() {
    // The logs are visible at `seen` only inside the cluster's mount namespaces; here that
    // directory is empty, so a correct result proves the rows were read by the cluster.
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("real");
    let seen = dir.path().join("seen");
    std::fs::create_dir_all(&seen).unwrap();
    golden_logs(&real);
    let probe = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "true"])
        .stderr(Stdio::null())
        .status();
    if !matches!(probe, Ok(s) if s.success()) {
        assert!(
            !tusk_testkit::must_run("TUSK_REQUIRE_NETNS"),
            "mount namespaces (unshare --mount) are required here"
        );
        eprintln!("SKIPPED only_the_executors_read_the_logs: unshare --mount is not available");
        return;
    }
    let cluster = SqlCluster::start(2, Some((&real, &seen)));
    let local = dir.path().join("local");
    ok(&clickstream(&real.to_string_lossy(), &local, &[]));
    // locally, `seen` holds nothing
    let o = clickstream(&seen.to_string_lossy(), &dir.path().join("x"), &[]);
    assert!(!o.status.success());
    let remote = dir.path().join("remote");
    let err = ok(&clickstream(
        &seen.to_string_lossy(),
        &remote,
        &["--cluster", &cluster.url()],
    ));
    assert!(err.contains("the cluster listed the files"), "{err}");
    assert_eq!(shard_bytes(&local), shard_bytes(&remote));
}

#[test]
fn an_executor_killed_mid_query_commits_no_partial_dataset() {
    let mut cluster = SqlCluster::start(2, None);
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs").to_string_lossy().into_owned();
    datagen(&logs, 100_000);
    let out = dir.path().join("out");
    let mut client = Proc::spawn(
        Command::new(TUSK)
            .args([
                "preprocess",
                "clickstream",
                "--input",
                &logs,
                "--output",
                &out.to_string_lossy(),
                "--negatives",
                "3",
                "--shards",
                "2",
                "--cluster",
                &cluster.url(),
            ])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("client.log")).unwrap()),
        "tusk preprocess clickstream --cluster",
    );
    // once the pipeline's statements are running on the executors, kill one
    wait_for_text(
        &cluster.log,
        "Job finished successfully",
        1,
        Duration::from_secs(120),
    );
    std::thread::sleep(Duration::from_millis(300));
    cluster.executors[0].kill();
    let status = client.wait(Duration::from_secs(400));
    let err = std::fs::read_to_string(dir.path().join("client.log")).unwrap();
    if status.success() {
        // Ballista re-ran the lost work on the other executor: the result must be whole
        let local = dir.path().join("local");
        ok(&clickstream(&logs, &local, &[]));
        assert_eq!(
            shard_bytes(&local),
            shard_bytes(&out),
            "retried result differs"
        );
    } else {
        assert!(err.contains("error:"), "{err}");
        for split in ["train", "test"] {
            assert!(
                !out.join(split).join("_manifest.json").exists(),
                "a manifest was committed from a failed query: {err}"
            );
        }
    }
    eprintln!(
        "client after the kill: {}",
        err.lines().last().unwrap_or("")
    );
}

/// Answer one HTTP request with `headers`, on a thread.
fn fake_http(headers: &'static str) -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        if let Ok((mut s, _)) = l.accept() {
            let mut req = Vec::new();
            let mut buf = [0u8; 1024];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => req.extend_from_slice(&buf[..n]),
                }
            }
            let _ = write!(s, "HTTP/1.1 200 OK\r\n{headers}Content-Length: 0\r\n\r\n");
        }
    });
    port
}

#[test]
fn bad_clusters_are_refused_with_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("golden");
    golden_logs(&logs);
    let logs = logs.to_string_lossy().into_owned();
    let out = dir.path().join("o");
    let fails = |cluster: &str| {
        let o = clickstream(&logs, &out, &["--cluster", cluster]);
        assert!(!o.status.success(), "{cluster} was accepted");
        assert!(!out.exists(), "output written for {cluster}");
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    let port = free_port();
    let e = fails(&format!("df://127.0.0.1:{port}"));
    assert!(e.contains("no SQL scheduler answers"), "{e}");
    assert!(e.contains(&format!("df://127.0.0.1:{port}")), "{e}");
    let e = fails("http://127.0.0.1:1");
    assert!(e.contains("expected df://HOST:PORT"), "{e}");
    // a scheduler of another Ballista major version (a stand-in answering as one would)
    let old = fake_http("Server: ballista/54.0.0\r\nX-Powered-By: datafusion/54.0.0\r\n");
    let e = fails(&format!("df://127.0.0.1:{old}"));
    assert!(e.contains("Ballista 54.0.0"), "{e}");
    assert!(e.contains("must share Ballista's major version"), "{e}");
    // something that is not a scheduler at all
    let other = fake_http("Server: nginx\r\n");
    let e = fails(&format!("df://127.0.0.1:{other}"));
    assert!(e.contains("not as a Ballista scheduler"), "{e}");
    // --scratch needs --cluster
    let o = clickstream(&logs, &out, &["--scratch", "/tmp/x"]);
    assert!(!o.status.success());
}
