//! `mpirun -np 2 tusk train --collective mpi`: the same job as `tusk launch -n 2` over MPI,
//! bit for bit the same model. Needs the `mpi` feature (`cargo test -p tusk-cli --features
//! mpi`, which `.ci/run` runs) and `mpirun`.
#![cfg(feature = "mpi")]

use std::process::{Command, Stdio};
use std::time::Duration;

use tusk_testkit::Proc;

mod common;
use common::{load, small_job};

#[test]
fn mpirun_trains_the_same_model_as_tusk_launch() {
    if tusk_testkit::require_mpirun().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cfg = small_job(dir.path(), 2000);
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
    let (x, y) = (load(&a), load(&b));
    assert_eq!(x.params, y.params, "MPI and TCP runs differ");
    assert_eq!(x.table, y.table);
}
