//! `mpirun -np 2 tusk train --collective mpi`: the same job as `tusk launch -n 2` over MPI,
//! bit for bit the same model. Needs the `mpi` feature (`cargo test -p tusk-cli --features
//! mpi`, which `.ci/run` runs) and `mpirun`.
#![cfg(feature = "mpi")]

use std::process::{Command, Stdio};
use std::time::Duration;

use tusk_storage::Storage;
use tusk_testkit::Proc;
use tusk_train::ModelStore;

#[test]
fn mpirun_trains_the_same_model_as_tusk_launch() {
    let found = Command::new("mpirun")
        .arg("--version")
        .output()
        .map_err(|e| format!("mpirun: {e}"))
        .map(|_| ());
    if tusk_testkit::require("mpirun (OpenMPI)", "TUSK_REQUIRE_MPI", found).is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut csv = String::from("user_id,item_id,label\n");
    let mut s = 3u64;
    for _ in 0..2000 {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let (u, i) = ((s >> 33) % 90, (s >> 45) % 40);
        csv.push_str(&format!("{u},{i},{}\n", u8::from(u % 3 == i % 3)));
    }
    std::fs::write(dir.path().join("train.csv"), csv).unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        format!(
            "[data]\ntrain = \"{d}/train.csv\"\n[features]\nsparse = [\"user_id\", \"item_id\"]\nlabel = \"label\"\n[model]\nkind = \"neumf\"\nuser = [\"user_id\"]\nitem = [\"item_id\"]\ngmf_dim = 8\nmlp_dim = 8\nlayers = [16, 8]\n[train]\nepochs = 2\nbatch_size = 32\nlearning_rate = 0.005\n",
            d = dir.path().display()
        ),
    )
    .unwrap();
    let tusk = env!("CARGO_BIN_EXE_tusk");
    let (a, b) = (dir.path().join("mpi"), dir.path().join("tcp"));
    let log = dir.path().join("mpi.log");
    let mut c = Command::new("mpirun");
    c.args([
        "--allow-run-as-root",
        "--oversubscribe",
        "-np",
        "2",
        tusk,
        "train",
    ])
    .arg(&cfg)
    .arg("--model")
    .arg(&a)
    .args(["--collective", "mpi"])
    .stdout(Stdio::null())
    .stderr(std::fs::File::create(&log).unwrap());
    let ok = Proc::spawn(&mut c, "mpirun")
        .wait(Duration::from_secs(300))
        .success();
    assert!(ok, "{}", std::fs::read_to_string(&log).unwrap());
    let mut c = Command::new(tusk);
    c.args(["launch", "-n", "2", "--", "train"])
        .arg(&cfg)
        .arg("--model")
        .arg(&b)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    assert!(
        Proc::spawn(&mut c, "launch")
            .wait(Duration::from_secs(300))
            .success()
    );
    let storage = Storage::new().unwrap();
    let load = |p: &std::path::Path| {
        ModelStore::open(&storage, &p.display().to_string())
            .unwrap()
            .load(None)
            .unwrap()
    };
    let (x, y) = (load(&a), load(&b));
    assert_eq!(x.params, y.params, "MPI and TCP runs differ");
    assert_eq!(x.table, y.table);
}
