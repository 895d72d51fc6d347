//! Four "hosts" (network namespaces with their own addresses on a bridge) train one model:
//! rank 0 is given by address, every rank reaches the others over the emulated network, and
//! the result is bit for bit that of 4 workers on one host. Needs root; skips loudly
//! elsewhere, never in CI.

use std::process::{Command, Stdio};
use std::time::Duration;

use tusk_testkit::{Hosts, Proc, require};

mod common;
use common::{load, small_job};

#[test]
fn four_hosts_train_one_model_over_the_network() {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false);
    let hosts = if root {
        Hosts::create(4, 77, None)
    } else {
        Err("not root: network namespaces need root".to_string())
    };
    let Some(hosts) = require("network namespaces (ip netns)", "TUSK_REQUIRE_NETNS", hosts) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let cfg = small_job(dir.path(), 4000);
    let tusk = env!("CARGO_BIN_EXE_tusk");
    let model = dir.path().join("net");
    let mut ps: Vec<Proc> = (0..4)
        .map(|r| {
            let mut c = hosts.command(r, tusk);
            c.args(["train", &cfg, "--model", &model.display().to_string()])
                .args(["--rank", &r.to_string(), "--world-size", "4"])
                .args(["--master-addr", &hosts.addr(0), "--master-port", "29400"])
                .args(["--rendezvous-timeout", "60"])
                .env("TUSK_JOB_SECRET", "multi-host")
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(dir.path().join(format!("{r}.log"))).unwrap());
            Proc::spawn(&mut c, &format!("rank {r} in namespace {r}"))
        })
        .collect();
    for (r, p) in ps.iter_mut().enumerate() {
        let s = p.wait(Duration::from_secs(300));
        let log = std::fs::read_to_string(dir.path().join(format!("{r}.log"))).unwrap();
        assert!(s.success(), "rank {r}:\n{log}");
    }
    // The same job on one host.
    let local = dir.path().join("local");
    let mut c = Command::new(tusk);
    c.args(["launch", "-n", "4", "--", "train", &cfg, "--model"])
        .arg(&local)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    assert!(
        Proc::spawn(&mut c, "launch")
            .wait(Duration::from_secs(300))
            .success()
    );
    let (a, b) = (load(&model), load(&local));
    assert_eq!(a.params, b.params, "4 hosts and 4 local workers differ");
    assert_eq!(a.table, b.table);
    assert_eq!(a.meta.state.global_step, b.meta.state.global_step);
}
