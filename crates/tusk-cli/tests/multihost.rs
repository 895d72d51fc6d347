//! Four "hosts" (network namespaces with their own addresses on a bridge) train one model:
//! rank 0 is given by address, every rank reaches the others over the emulated network, and
//! the result is bit for bit that of 4 workers on one host. Needs root; skips loudly
//! elsewhere, never in CI.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use tusk_storage::Storage;
use tusk_testkit::{Hosts, Proc, require};
use tusk_train::{Checkpoint, ModelStore};

fn load(model: &Path) -> Checkpoint {
    let storage = Storage::new().unwrap();
    ModelStore::open(&storage, &model.display().to_string())
        .unwrap()
        .load(None)
        .unwrap()
}

fn write_config(dir: &Path) -> String {
    let mut csv = String::from("user_id,item_id,label\n");
    let mut s = 7u64;
    for _ in 0..4000 {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let (u, i) = ((s >> 33) % 100, (s >> 45) % 50);
        csv.push_str(&format!("{u},{i},{}\n", u8::from(u % 3 == i % 3)));
    }
    std::fs::write(dir.join("train.csv"), csv).unwrap();
    let cfg = format!(
        r#"[data]
train = "{d}/train.csv"
[features]
sparse = ["user_id", "item_id"]
label = "label"
[model]
kind = "neumf"
user = ["user_id"]
item = ["item_id"]
gmf_dim = 8
mlp_dim = 8
layers = [16, 8]
[train]
epochs = 2
batch_size = 32
learning_rate = 0.005
checkpoint_every = 50
"#,
        d = dir.display()
    );
    let p = dir.join("c.toml");
    std::fs::write(&p, cfg).unwrap();
    p.display().to_string()
}

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
    let cfg = write_config(dir.path());
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
