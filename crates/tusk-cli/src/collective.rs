//! `tusk allreduce-perf`: all-reduce time and bus bandwidth between the ranks of a job (like
//! nccl-tests' all_reduce_perf), to check a cluster's network before training on it.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use clap::Args;
use tusk_collective::{Communicator, Flags, ReduceOp, tcp};

/// Measure ring all-reduce between the ranks of a job: run it under `tusk launch`, `mpirun`
/// or any scheduler, as `tusk train` runs. Rank 0 prints size, median time, algorithm and bus
/// bandwidth (nccl-tests' definitions: size / time, and size · 2(N−1)/N / time).
#[derive(Debug, Args)]
pub struct PerfArgs {
    /// Buffer sizes (f32 all-reduce), e.g. 4MiB,64MiB; suffixes KiB, MiB, GiB or none.
    #[arg(long, default_value = "4MiB,64MiB", value_delimiter = ',')]
    sizes: Vec<String>,
    /// Timed iterations per size (after 2 untimed ones).
    #[arg(long, default_value_t = 20)]
    iters: usize,
    /// `tcp` or `mpi` (a tusk built with `--features mpi`).
    #[arg(long, default_value = "tcp", value_parser = ["tcp", "mpi"])]
    collective: String,
    /// Print one JSON object per size (rank 0) instead of a table.
    #[arg(long)]
    json: bool,
}

fn parse_size(s: &str) -> Result<usize> {
    let t = s.trim();
    let (num, mul) = if let Some(n) = t.strip_suffix("GiB") {
        (n, 1usize << 30)
    } else if let Some(n) = t.strip_suffix("MiB") {
        (n, 1 << 20)
    } else if let Some(n) = t.strip_suffix("KiB") {
        (n, 1 << 10)
    } else {
        (t, 1)
    };
    let n: usize = num
        .trim()
        .parse()
        .map_err(|_| anyhow::anyhow!("--sizes: `{s}` is not a size like 4MiB"))?;
    Ok(n * mul)
}

/// Why `--collective mpi` cannot work in a tusk built without the `mpi` feature.
#[cfg(not(feature = "mpi"))]
pub(crate) const NO_MPI: &str = "--collective mpi: this tusk was built without MPI support (build it with `cargo build --release --features mpi`, which needs an MPI such as Debian's libopenmpi-dev, and libclang)";

/// Options for joining a job over TCP, with the job secret from `TUSK_JOB_SECRET`.
pub(crate) fn tcp_options(rendezvous: Duration, collective: Duration) -> Result<tcp::Options> {
    let secret = std::env::var("TUSK_JOB_SECRET").unwrap_or_default();
    if secret.is_empty() {
        bail!(
            "TUSK_JOB_SECRET is not set: every rank of a data-parallel job needs the same secret (`tusk launch` sets one; elsewhere set it from your scheduler's secrets)"
        );
    }
    Ok(tcp::Options {
        secret: secret.into_bytes(),
        rendezvous_timeout: rendezvous,
        collective_timeout: collective.max(Duration::from_secs(1)),
        fingerprint: Default::default(),
        shared_memory: tcp::shared_memory_from_env(),
    })
}

fn connect(collective: &str) -> Result<Box<dyn Communicator>> {
    if collective == "mpi" {
        #[cfg(feature = "mpi")]
        return Ok(Box::new(tusk_collective::mpi::init()?));
        #[cfg(not(feature = "mpi"))]
        bail!(NO_MPI);
    }
    let world = tusk_collective::world::resolve(&Flags::default(), &|k| std::env::var(k).ok())?;
    let Some(w) = world.filter(|w| w.world_size > 1) else {
        bail!("run it as one rank of a job, e.g. `tusk launch -n 2 -- allreduce-perf`");
    };
    let o = tcp_options(Duration::from_secs(300), Duration::from_secs(60))?;
    Ok(Box::new(tcp::connect(&w, &o)?))
}
pub fn run(a: PerfArgs) -> Result<()> {
    let sizes = a
        .sizes
        .iter()
        .map(|s| parse_size(s))
        .collect::<Result<Vec<_>>>()?;
    let mut comm = connect(&a.collective)?;
    let n = comm.world_size();
    if comm.rank() == 0 && !a.json {
        println!(
            "{:>12} {:>6} {:>12} {:>14} {:>14}",
            "bytes", "ranks", "median ms", "algbw GB/s", "busbw GB/s"
        );
    }
    for bytes in sizes {
        let mut buf = vec![1.0f32; bytes / 4];
        let mut times = Vec::with_capacity(a.iters);
        for i in 0..a.iters + 2 {
            comm.barrier()?;
            let t = Instant::now();
            comm.all_reduce(&mut buf, ReduceOp::Sum)?;
            if i >= 2 {
                times.push(t.elapsed().as_secs_f64());
            }
        }
        times.sort_by(f64::total_cmp);
        let med = times[times.len() / 2];
        let algbw = bytes as f64 / med / 1e9;
        let busbw = algbw * 2.0 * (n - 1) as f64 / n as f64;
        if comm.rank() == 0 {
            if a.json {
                println!(
                    "{}",
                    serde_json::json!({"bytes": bytes, "ranks": n, "median_s": med,
                        "min_s": times[0], "algbw_gbps": algbw, "busbw_gbps": busbw})
                );
            } else {
                println!(
                    "{bytes:>12} {n:>6} {:>12.3} {algbw:>14.3} {busbw:>14.3}",
                    med * 1e3
                );
            }
        }
    }
    Ok(())
}
