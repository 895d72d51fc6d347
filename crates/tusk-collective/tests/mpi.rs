//! The conformance checks on the MPI backend, under `mpirun -np 2` and `-np 3`: this test
//! re-runs its own binary as the MPI ranks. Needs the `mpi` feature and `mpirun`
//! (`.ci/run` installs Debian's OpenMPI); without `mpirun` it skips loudly, never in CI.
#![cfg(feature = "mpi")]

use std::process::Command;
use std::time::Duration;

/// The rank side: runs only under `mpirun` (the parent sets TUSK_MPI_CHILD).
#[test]
fn mpi_rank() {
    if std::env::var("TUSK_MPI_CHILD").is_err() {
        return;
    }
    let mut comm = tusk_collective::mpi::init().expect("MPI init");
    tusk_collective::conformance::run(&mut comm);
    eprintln!(
        "MPI conformance passed on rank {}",
        tusk_collective::Communicator::rank(&comm)
    );
}

#[test]
fn mpi_backend_conforms_under_mpirun() {
    if tusk_testkit::require_mpirun().is_none() {
        return;
    }
    let me = std::env::current_exe().unwrap();
    for np in ["2", "3"] {
        let mut c = Command::new("mpirun");
        c.args(["--allow-run-as-root", "--oversubscribe", "-np", np])
            .args(["-x", "TUSK_MPI_CHILD=1"])
            .arg(&me)
            .args(["--exact", "mpi_rank", "--nocapture", "--test-threads", "1"])
            .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
            .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1");
        let out = run_bounded(&mut c, Duration::from_secs(300));
        assert!(
            out.0
                && out.1.matches("MPI conformance passed").count() == np.parse::<usize>().unwrap(),
            "mpirun -np {np}:\n{}",
            out.1
        );
    }
}

fn run_bounded(c: &mut Command, limit: Duration) -> (bool, String) {
    let log = std::env::temp_dir().join(format!("tusk-mpi-{}.log", std::process::id()));
    let f = std::fs::File::create(&log).unwrap();
    c.stdout(f.try_clone().unwrap()).stderr(f);
    let mut p = tusk_testkit::Proc::spawn(c, "mpirun");
    let s = p.wait(limit);
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_file(&log);
    (s.success(), text)
}
