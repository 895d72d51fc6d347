//! `tusk serve` as a process: it loads a trained model, answers over a socket, stops on
//! SIGTERM in bounded time, and refuses bad flags with one clear line.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tusk_testkit::Proc;

fn tusk() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tusk"));
    c.env_remove("TUSK_SERVE_TOKEN");
    c
}

use tusk_testkit::free_port;

use common::http;

#[test]
fn serves_a_trained_model_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = common::small_job(dir.path(), 400);
    let model = dir.path().join("m");
    let ok = tusk()
        .args(["train", &cfg, "--model", &model.display().to_string()])
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(ok.success());
    let port = free_port();
    let mut c = tusk();
    c.args([
        "serve",
        "--model",
        &format!("clicks={}", model.display()),
        "--addr",
        &format!("127.0.0.1:{port}"),
        "--poll-interval",
        "0.1",
    ])
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    let mut p = Proc::spawn(&mut c, "tusk serve");
    let t = Instant::now();
    loop {
        if let Some((200, _)) = http(port, "GET", "/v2/health/ready", "") {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(60), "never ready");
        assert!(p.try_status().is_none(), "tusk serve exited");
        std::thread::sleep(Duration::from_millis(50));
    }
    let (code, body) = http(
        port,
        "POST",
        "/v1/models/clicks:predict",
        r#"{"instances": [{"user_id": 3, "item_id": 7}, {"user_id": 4, "item_id": 8}]}"#,
    )
    .unwrap();
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let p0 = v["predictions"][0].as_f64().unwrap();
    assert!(p0 > 0.0 && p0 < 1.0, "{v}");
    // SIGTERM: a graceful stop in bounded time.
    let pid = p.id() as i32;
    Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    let st = p.wait(Duration::from_secs(20));
    assert!(st.success(), "{st:?}");
}

#[test]
fn bad_flags_are_one_clear_line() {
    let run = |args: &[&str]| {
        let out = tusk().args(args).output().unwrap();
        assert!(!out.status.success(), "{args:?} succeeded");
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    let e = run(&["serve", "--model", "/x/m", "--addr", "0.0.0.0:0"]);
    assert!(e.contains("give a token"), "{e}");
    let e = run(&["serve", "--model", "/x/m", "--version-policy", "newest"]);
    assert!(
        e.contains("--version-policy") && e.contains("unknown version policy"),
        "{e}"
    );
    let e = run(&["serve", "--model", "a=/x/m", "--model", "a=/y/m"]);
    assert!(e.contains("already served"), "{e}");
    let e = run(&["serve", "--model", "/x/m", "--label", "stable=five"]);
    assert!(e.contains("not a version number"), "{e}");
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = port.local_addr().unwrap().to_string();
    let e = run(&["serve", "--model", "/x/m", "--addr", &addr]);
    assert!(e.contains("cannot listen on"), "{e}");
    let e = run(&["serve", "--model", "/x/m", "--tls-cert", "/x/cert.pem"]);
    assert!(e.contains("--tls-key"), "{e}");
    let e = run(&[
        "serve",
        "--model",
        "/x/m",
        "--tls-cert",
        "/x/cert.pem",
        "--tls-key",
        "/x/key.pem",
    ]);
    assert!(e.contains("--tls-cert /x/cert.pem"), "{e}");
}

/// A model on S3 (a real S3-compatible server): `tusk serve` started before the model has any
/// version polls S3 and loads the versions `tusk train` commits there, up to the last one.
#[test]
fn serves_from_s3_and_loads_new_versions() {
    let Some(s3) = tusk_testkit::S3Server::start() else {
        return;
    };
    s3.create_bucket("tusk-serve");
    let dir = tempfile::tempdir().unwrap();
    let cfg = common::small_job(dir.path(), 400);
    let model = "s3://tusk-serve/clicks";
    let port = free_port();
    let mut c = tusk();
    c.args(["serve", "--model", &format!("clicks={model}")])
        .args([
            "--addr",
            &format!("127.0.0.1:{port}"),
            "--poll-interval",
            "0.2",
        ])
        .envs(s3.env())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut p = Proc::spawn(&mut c, "tusk serve");
    // The newest AVAILABLE version, once the server answers (None: nothing loaded yet).
    let newest = |p: &mut Proc| -> Option<u64> {
        let t = Instant::now();
        loop {
            assert!(p.try_status().is_none(), "tusk serve exited");
            if let Some((code, body)) = http(port, "GET", "/v1/models/clicks", "") {
                if code != 200 {
                    return None;
                }
                let v: serde_json::Value = serde_json::from_str(&body).unwrap();
                return v["model_version_status"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|s| s["state"] == "AVAILABLE")
                    .filter_map(|s| s["version"].as_str()?.parse().ok())
                    .max();
            }
            assert!(t.elapsed() < Duration::from_secs(60), "never answered");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    assert_eq!(newest(&mut p), None);
    let o = tusk()
        .args(["train", &cfg, "--model", model, "--epochs", "3"])
        .envs(s3.env())
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{log}");
    let last: u64 = log
        .split("version ")
        .last()
        .and_then(|r| r.get(..6))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no version in {log}"));
    let t = Instant::now();
    while newest(&mut p) != Some(last) {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "version {last} on S3 was not loaded"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (code, body) = http(
        port,
        "POST",
        "/v1/models/clicks:predict",
        r#"{"instances": [{"user_id": 3, "item_id": 7}]}"#,
    )
    .unwrap();
    assert_eq!(code, 200, "{body}");
    p.kill();
}
