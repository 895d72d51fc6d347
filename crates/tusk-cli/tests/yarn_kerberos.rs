//! `tusk launch --yarn` and `tusk yarn status|kill` against a ResourceManager whose web
//! services require Kerberos (SPNEGO, `hadoop.http.authentication.type=kerberos`): a real
//! MiniYARNCluster with a MiniKdc (`testing/miniyarn … kerberos DIR`), MIT's `kinit` and
//! libgssapi_krb5, and a MiniDFS for the job's data, model and staging. YARN's RPC and HDFS
//! stay unsecured (see the README). Skipped without Java/Maven/kinit, except in CI.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use tusk_storage::Storage;
use tusk_testkit::{MiniDfs, MiniKerberos, MiniYarn, Proc};

mod common;
use common::load_url as load;
use common::yarn::{
    container_processes, in_container, job, job_config, job_csvs, run_logged, shipped_binary,
    wait_no_containers, wait_running_app,
};

/// Set for the child run of [`child_rest_client_negotiates_once`] (the Kerberos variables
/// can only be given to a process at its start).
const CHILD_RM: &str = "TUSK_TEST_KERBEROS_CHILD_RM";

/// tusk with the MiniKdc's krb5.conf and the ticket cache `cache`.
fn tusk(krb: &MiniKerberos, cache: &Path) -> Command {
    let mut c = common::yarn::tusk();
    c.env("KRB5_CONFIG", &krb.krb5_conf)
        .env("KRB5CCNAME", format!("FILE:{}", cache.display()));
    c
}

/// `GET path` with no credentials at all, as `curl` would: the status line and headers.
fn plain_get(rm_url: &str, path: &str) -> String {
    let authority = rm_url.trim_start_matches("http://");
    let mut s = TcpStream::connect(authority).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nAccept: application/json\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    answer.split("\r\n\r\n").next().unwrap_or("").to_string()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A refusal: non-zero exit, one `error:` line that names the ResourceManager and says how to
/// get a ticket, no panic.
fn assert_no_ticket_error(o: &Output, rm_url: &str, cache: &Path, what: &str) {
    let e = stderr(o);
    assert!(
        !o.status.success(),
        "{what} succeeded without a ticket:\n{e}"
    );
    assert!(!e.contains("panicked"), "{what} panicked:\n{e}");
    let errors: Vec<&str> = e.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{what}: not one error line:\n{e}");
    let line = errors[0];
    eprintln!("{what} without a ticket: {line}");
    for needle in [
        &format!("YARN ResourceManager at {rm_url}/ws/v1/cluster/"),
        "asks for Kerberos (SPNEGO)",
        "no Kerberos ticket for HTTP@localhost",
        "run `kinit`",
        "KRB5CCNAME",
        &cache.display().to_string(),
    ] {
        assert!(line.contains(needle), "{what}: no '{needle}' in:\n{e}");
    }
}

/// The secured ResourceManager refuses a request without credentials (401 Negotiate); without
/// a ticket tusk fails with one error line that says to run `kinit`; after `kinit` from the
/// user's keytab a job submitted by `tusk launch --yarn` trains to the end, and
/// `tusk yarn status` / `tusk yarn kill` work on a running one, all over SPNEGO; one
/// negotiation serves many calls (the `hadoop.auth` cookie).
#[test]
fn yarn_on_a_kerberos_secured_resource_manager() {
    let _turn = common::yarn::one_cluster_at_a_time();
    let Some(dfs) = MiniDfs::start(1) else {
        return;
    };
    let Some(yarn) = MiniYarn::start_kerberized(1) else {
        return;
    };
    let krb = yarn.kerberos.as_ref().expect("a kerberized cluster");
    let rm = yarn.rm_url.as_str();
    let dir = tempfile::tempdir().unwrap();
    let hdfs = format!("{}/yarn-kerberos", dfs.hdfs_url());
    let cfg = job(dir.path(), &hdfs, 2000, "epochs = 1");
    let binary = shipped_binary(dir.path());
    let launch = |cache: &Path, model: &str, extra: &[&str]| -> Command {
        let mut c = tusk(krb, cache);
        c.args(["launch", "--yarn", rm, "-n", "1"])
            .args(["--worker-memory", "512m", "--am-memory", "256m"])
            .args(["--staging", &format!("{hdfs}/staging")])
            .arg("--tusk-binary")
            .arg(&binary)
            .args(["--yarn-classpath", &yarn.classpath])
            .args(["--", "train", &cfg, "--model", model])
            .args(extra);
        c
    };

    // (a) The web services are secured: no credentials, no answer.
    let head = plain_get(rm, "/ws/v1/cluster/info");
    assert!(head.starts_with("HTTP/1.1 401"), "{head}");
    assert!(
        head.lines()
            .any(|l| l.eq_ignore_ascii_case("WWW-Authenticate: Negotiate")),
        "{head}"
    );

    // (b) No ticket (the cache does not exist): one clear error, no panic, nothing submitted.
    let no_ticket = dir.path().join("no-ticket");
    let o = tusk(krb, &no_ticket)
        .args(["yarn", "status", "application_1_0001", "--yarn", rm])
        .output()
        .unwrap();
    assert_no_ticket_error(&o, rm, &no_ticket, "tusk yarn status");
    let o = tusk(krb, &no_ticket)
        .args(["yarn", "kill", "application_1_0001", "--yarn", rm])
        .output()
        .unwrap();
    assert_no_ticket_error(&o, rm, &no_ticket, "tusk yarn kill");
    let o = launch(&no_ticket, &format!("{hdfs}/m-none"), &[])
        .output()
        .unwrap();
    assert_no_ticket_error(&o, rm, &no_ticket, "tusk launch --yarn");
    assert!(
        !stderr(&o).contains("submitted"),
        "submitted without a ticket:\n{}",
        stderr(&o)
    );

    // (c) With a ticket from the user's keytab.
    let cache = dir.path().join("krb5cc");
    krb.kinit(&cache).unwrap();

    // The REST client in a process of its own: one negotiation for many calls, and GSSAPI
    // loaded only once a server asked for it.
    let child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_rest_client_negotiates_once",
            "--nocapture",
        ])
        .env(CHILD_RM, rm)
        .env("KRB5_CONFIG", &krb.krb5_conf)
        .env("KRB5CCNAME", format!("FILE:{}", cache.display()))
        .output()
        .unwrap();
    let out = format!(
        "{}{}",
        String::from_utf8_lossy(&child.stdout),
        stderr(&child)
    );
    assert!(
        child.status.success() && out.contains("1 passed"),
        "the REST client over SPNEGO:\n{out}"
    );

    // An unknown application: the ResourceManager itself answers (404), past the filter.
    let o = tusk(krb, &cache)
        .args(["yarn", "status", "application_1_0001", "--yarn", rm])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("answered 404") && stderr(&o).contains("not found"),
        "{}",
        stderr(&o)
    );

    // A whole job, end to end: submitted, run in a container, model on HDFS.
    let model = format!("{hdfs}/model");
    let (ok, log) = run_logged(
        launch(&cache, &model, &[]),
        "tusk launch --yarn with a ticket",
        &dir.path().join("job.log"),
        Duration::from_secs(900),
    );
    assert!(ok, "{log}");
    eprintln!("the job over SPNEGO:\n{log}");
    for needle in [
        "(Hadoop 3.4.1, Kerberos (SPNEGO))",
        "submitted tusk as application_",
        "rank 0 ran in container_",
        "succeeded",
        "removed the staging directory",
    ] {
        assert!(log.contains(needle), "no '{needle}' in:\n{log}");
    }
    assert!(!load(&model).meta.state.history.is_empty(), "{log}");

    // A running job seen and killed with `tusk yarn status|kill` over SPNEGO.
    let log_path = dir.path().join("kill.log");
    let mut c = launch(
        &cache,
        &format!("{hdfs}/m-kill"),
        &["--set", "train.epochs=500"],
    );
    c.stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap());
    let mut p = Proc::spawn(&mut c, "tusk launch --yarn to be killed");
    let app = wait_running_app(&log_path, &mut p);
    let o = tusk(krb, &cache)
        .args(["yarn", "status", &app, "--yarn", rm])
        .output()
        .unwrap();
    let status = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success() && status.contains("RUNNING"),
        "{status}{}",
        stderr(&o)
    );
    let o = tusk(krb, &cache)
        .args(["yarn", "kill", &app, "--yarn", rm])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let s = p.wait(Duration::from_secs(120));
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(!s.success(), "{log}");
    assert!(log.contains("KILLED"), "{log}");
    let o = tusk(krb, &cache)
        .args(["yarn", "status", &app, "--yarn", rm])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("KILLED"),
        "{}",
        stderr(&o)
    );
    let left = wait_no_containers(Duration::from_secs(30));
    assert!(left.is_empty(), "container processes left: {left:?}");
}

/// Run by [`yarn_on_a_kerberos_secured_resource_manager`] in a process of its own, with
/// `KRB5CCNAME` holding a ticket; does nothing when run by itself.
#[test]
fn child_rest_client_negotiates_once() {
    let Ok(url) = std::env::var(CHILD_RM) else {
        return;
    };
    let maps = || std::fs::read_to_string("/proc/self/maps").unwrap();
    assert!(!tusk_yarn::spnego::loaded());
    assert!(
        !maps().contains("libgssapi_krb5"),
        "GSSAPI loaded before any call"
    );
    let rm = tusk_yarn::rest::ResourceManager::new(&url, "nobody").unwrap();
    for _ in 0..3 {
        assert_eq!(rm.version().unwrap(), "3.4.1");
    }
    let app = rm.new_application().unwrap();
    assert!(app.id.starts_with("application_"), "{app:?}");
    assert_eq!(
        rm.negotiations(),
        1,
        "one negotiation, then the hadoop.auth cookie"
    );
    assert!(tusk_yarn::spnego::loaded() && maps().contains("libgssapi_krb5"));
}

/// Set for the child run of [`child_copies_to_secured_hdfs`]: `LOCAL\tURL` lines.
const CHILD_COPY: &str = "TUSK_TEST_KERBEROS_CHILD_COPY";

/// A fully Kerberized cluster (`testing/miniyarn … secure DIR`): HDFS RPC, data transfer,
/// WebHDFS, YARN RPC and the ResourceManager's REST API all ask for Kerberos, and nothing in a
/// container has a ticket. `tusk launch --yarn` fetches an HDFS delegation token with the
/// user's ticket (WebHDFS over SPNEGO) and puts it into the application's credentials: the
/// NodeManagers localize the staged binary with it, the application master and both workers
/// reach HDFS with it (rendezvous, data, model), and the job trains to the end. A job whose
/// worker is killed is resubmitted with tokens of its own and finishes. Tokens the user
/// already holds (HADOOP_TOKEN_FILE_LOCATION) are passed on instead of fetched. A NameNode web
/// address that does not answer gives one clear error before anything is submitted.
#[test]
fn yarn_on_a_fully_kerberized_cluster() {
    let _turn = common::yarn::one_cluster_at_a_time();
    let Some(yarn) = MiniYarn::start_secured(2) else {
        return;
    };
    let krb = yarn.kerberos.as_ref().expect("a kerberized cluster");
    let fs = yarn.hdfs.clone().expect("the secured cluster's HDFS");
    let rm = yarn.rm_url.as_str();
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("krb5cc");
    krb.kinit(&cache).unwrap();
    let hdfs = format!("{fs}/secured");
    // The user's side: the cluster's client configuration and a ticket.
    let secured = |c: &mut Command, conf: &Path| {
        c.env("HADOOP_CONF_DIR", conf)
            .env("KRB5_CONFIG", &krb.krb5_conf)
            .env("KRB5CCNAME", format!("FILE:{}", cache.display()));
    };

    // The data, written to the secured HDFS with the user's ticket.
    let copies: String = job_csvs(dir.path(), 2000)
        .into_iter()
        .map(|(local, name)| format!("{}\t{hdfs}/data/{name}\n", local.display()))
        .collect();
    let mut child = Command::new(std::env::current_exe().unwrap());
    child
        .args(["--exact", "child_copies_to_secured_hdfs", "--nocapture"])
        .env(CHILD_COPY, &copies);
    secured(&mut child, &yarn.conf_dir);
    let o = child.output().unwrap();
    let out = format!("{}{}", String::from_utf8_lossy(&o.stdout), stderr(&o));
    assert!(
        o.status.success() && out.contains("1 passed"),
        "writing to the secured HDFS:\n{out}"
    );

    let cfg = job_config(dir.path(), &hdfs, "epochs = 1");
    let binary = shipped_binary(dir.path());
    let launch = |conf: &Path, model: &str, restarts: &str| -> Command {
        let mut c = common::yarn::tusk();
        secured(&mut c, conf);
        c.args([
            "launch",
            "--yarn",
            rm,
            "-n",
            "2",
            "--max-restarts",
            restarts,
        ])
        .args(["--worker-memory", "512m", "--am-memory", "256m"])
        .args(["--staging", &format!("{hdfs}/staging")])
        .arg("--tusk-binary")
        .arg(&binary)
        .args(["--yarn-classpath", &yarn.classpath])
        .args(["--", "train", &cfg, "--model", model]);
        c
    };

    // (a) A NameNode web address that does not answer: one clear error, nothing submitted.
    let conf = tusk_yarn::tokens::HadoopConf::read_dir(&yarn.conf_dir).unwrap();
    let web = conf
        .get("dfs.namenode.http-address")
        .expect("the NameNode's web address in the client configuration")
        .to_string();
    let bad_conf = dir.path().join("bad-conf");
    std::fs::create_dir_all(&bad_conf).unwrap();
    for f in std::fs::read_dir(&yarn.conf_dir).unwrap() {
        let f = f.unwrap().path();
        if let Ok(text) = std::fs::read_to_string(&f) {
            std::fs::write(
                bad_conf.join(f.file_name().unwrap()),
                text.replace(&web, "localhost:1"),
            )
            .unwrap();
        }
    }
    let o = launch(&bad_conf, &format!("{hdfs}/m-bad"), "0")
        .output()
        .unwrap();
    let e = stderr(&o);
    assert!(!o.status.success(), "{e}");
    assert!(!e.contains("panicked"), "{e}");
    let errors: Vec<&str> = e.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "not one error line:\n{e}");
    for needle in [
        &format!("HDFS delegation token for {fs}"),
        "cannot reach the HDFS NameNode (WebHDFS) at http://localhost:1/webhdfs/v1/",
        "dfs.namenode.http-address",
    ] {
        assert!(errors[0].contains(needle), "no '{needle}' in:\n{e}");
    }
    assert!(!e.contains("submitted"), "submitted without tokens:\n{e}");

    // (b) The job, end to end, with delegation tokens.
    let model = format!("{hdfs}/model");
    let (ok, log) = run_logged(
        launch(&yarn.conf_dir, &model, "0"),
        "tusk launch --yarn on a Kerberized cluster",
        &dir.path().join("job.log"),
        Duration::from_secs(900),
    );
    eprintln!("the job on a Kerberized cluster:\n{log}");
    assert!(ok, "{log}");
    for needle in [
        "Kerberos (SPNEGO)",
        &format!("HDFS asks for Kerberos: the containers get delegation tokens for {fs}"),
        &format!("HDFS delegation token for {fs} from http://{web} (owner tusk, renewer hdfs"),
        "submitted tusk as application_",
        "rank 0 ran in container_",
        "rank 1 ran in container_",
        "succeeded",
        "removed the staging directory",
    ] {
        assert!(log.contains(needle), "no '{needle}' in:\n{log}");
    }
    // The model the containers committed, read back with the user's ticket.
    let mut c = common::yarn::tusk();
    secured(&mut c, &yarn.conf_dir);
    let o = c
        .args(["eval", "--model", &model, "--data"])
        .arg(format!("{hdfs}/data/valid.csv"))
        .output()
        .unwrap();
    assert!(
        o.status.success()
            && String::from_utf8_lossy(&o.stdout)
                .to_lowercase()
                .contains("auc"),
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        stderr(&o)
    );
    assert!(wait_no_containers(Duration::from_secs(30)).is_empty());

    // (c) A worker killed inside its container: the next application gets tokens of its own
    // (YARN cancelled the first one's when it ended) and the job finishes.
    let restarted = format!("{hdfs}/model-restarted");
    let log_path = dir.path().join("restarted.log");
    let mut c = launch(&yarn.conf_dir, &restarted, "1");
    c.args(["--set", "train.epochs=20"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap());
    let mut p = Proc::spawn(&mut c, "tusk launch --yarn, a container killed");
    let t = std::time::Instant::now();
    let victim = loop {
        let worker = container_processes().into_iter().find(|pid| {
            in_container(*pid).is_some_and(|a| a.get(1).map(String::as_str) == Some("train"))
        });
        if let Some(w) = worker {
            break w;
        }
        assert!(
            p.try_status().is_none() && t.elapsed() < Duration::from_secs(300),
            "no worker ran:\n{}",
            std::fs::read_to_string(&log_path).unwrap()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    // Past the rendezvous (ranks are claimed before training starts), well before the end.
    std::thread::sleep(Duration::from_secs(1));
    let _ = Command::new("kill")
        .args(["-9", &victim.to_string()])
        .status();
    let s = p.wait(Duration::from_secs(900));
    let log = std::fs::read_to_string(&log_path).unwrap();
    eprintln!("the restarted job:\n{log}");
    assert!(s.success(), "{log}");
    assert!(log.contains("resubmitted tusk as application_"), "{log}");
    let fetched: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("HDFS delegation token for"))
        .collect();
    assert_eq!(fetched.len(), 2, "one token per application:\n{log}");
    assert_ne!(fetched[0], fetched[1], "the same token twice:\n{log}");
    assert!(wait_no_containers(Duration::from_secs(30)).is_empty());

    // (d) Tokens the user already holds (as `hdfs fetchdt` gives them), named by
    // HADOOP_TOKEN_FILE_LOCATION: passed on, and nothing is fetched.
    let authority = fs.trim_start_matches("hdfs://");
    let services = tusk_yarn::tokens::FileSystem::locate(authority, &conf).services;
    let token_file = dir.path().join("tokens");
    let mut child = Command::new(std::env::current_exe().unwrap());
    child
        .args(["--exact", "child_writes_a_token_file", "--nocapture"])
        .env(
            CHILD_TOKEN,
            format!(
                "{web}\thdfs/localhost@{}\t{}\t{}",
                krb.realm,
                token_file.display(),
                services.join(",")
            ),
        );
    secured(&mut child, &yarn.conf_dir);
    let o = child.output().unwrap();
    let out = format!("{}{}", String::from_utf8_lossy(&o.stdout), stderr(&o));
    assert!(
        o.status.success() && out.contains("1 passed"),
        "fetching a token file:\n{out}"
    );
    let mut c = launch(&yarn.conf_dir, &format!("{hdfs}/model-own-tokens"), "0");
    c.env("HADOOP_TOKEN_FILE_LOCATION", &token_file);
    let (ok, log) = run_logged(
        c,
        "tusk launch --yarn with the user's own tokens",
        &dir.path().join("own-tokens.log"),
        Duration::from_secs(900),
    );
    eprintln!("the job with the user's own tokens:\n{log}");
    assert!(ok, "{log}");
    assert!(
        log.contains(&format!(
            "{} token(s) from HADOOP_TOKEN_FILE_LOCATION={} passed on",
            services.len(),
            token_file.display()
        )),
        "{log}"
    );
    assert!(!log.contains("HDFS delegation token for"), "{log}");
    assert!(log.contains("succeeded"), "{log}");
    let left = wait_no_containers(Duration::from_secs(30));
    assert!(left.is_empty(), "container processes left: {left:?}");
}

/// Set for the child run of [`child_writes_a_token_file`]: `WEB\tRENEWER\tPATH\tSERVICES`.
const CHILD_TOKEN: &str = "TUSK_TEST_KERBEROS_CHILD_TOKEN";

/// Run by [`yarn_on_a_fully_kerberized_cluster`] in a process of its own, with a ticket:
/// fetches a delegation token from the NameNode's web server and writes it, once per service
/// name, to a Hadoop token file. Does nothing when run by itself.
#[test]
fn child_writes_a_token_file() {
    let Ok(spec) = std::env::var(CHILD_TOKEN) else {
        return;
    };
    let f: Vec<&str> = spec.split('\t').collect();
    let token = tusk_yarn::tokens::fetch(f[0], f[1]).unwrap();
    assert_eq!(token.kind, "WEBHDFS delegation");
    let tokens: Vec<(String, tusk_yarn::tokens::Token)> = f[3]
        .split(',')
        .map(|s| {
            (
                s.to_string(),
                token.relabelled(tusk_yarn::tokens::HDFS_DELEGATION_TOKEN, s),
            )
        })
        .collect();
    tusk_yarn::tokens::write_token_file(Path::new(f[2]), &tokens).unwrap();
    assert_eq!(
        tusk_yarn::tokens::read_token_file(Path::new(f[2])).unwrap(),
        tokens
    );
}

/// Run by [`yarn_on_a_fully_kerberized_cluster`] in a process of its own (the Kerberos and
/// Hadoop variables can only be given to a process at its start): copies local files to the
/// secured HDFS. Does nothing when run by itself.
#[test]
fn child_copies_to_secured_hdfs() {
    let Ok(copies) = std::env::var(CHILD_COPY) else {
        return;
    };
    let storage = Storage::new().unwrap();
    for line in copies.lines() {
        let (local, url) = line.split_once('\t').unwrap();
        storage
            .open(url)
            .unwrap()
            .write(std::fs::read(local).unwrap())
            .unwrap();
        assert_eq!(
            storage.open(url).unwrap().read().unwrap(),
            std::fs::read(local).unwrap()
        );
    }
}
