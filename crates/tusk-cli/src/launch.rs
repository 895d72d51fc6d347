//! `tusk launch`: glue over the `tusk-launch` crate.

use std::time::Duration;

use anyhow::Result;
use clap::Args;

/// Start N workers of a data-parallel job on this node (and, with --servers S, S embedding
/// servers) and supervise them (torchrun-style).
///
/// Every worker gets RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT
/// and TUSK_JOB_SECRET (generated when unset; with --nnodes > 1 set it on every node). When
/// a worker dies the others are stopped and the group restarts with --resume from the newest
/// committed version, at most --max-restarts times. Example:
/// `tusk launch -n 4 -- train job.toml --model hdfs://nn:8020/models/ctr`
#[derive(Debug, Args)]
pub struct LaunchArgs {
    /// Workers on this node.
    #[arg(
        short = 'n',
        long = "nproc-per-node",
        visible_alias = "nproc",
        default_value_t = 1
    )]
    nproc_per_node: usize,
    /// Nodes in the job (run `tusk launch` on each, with its --node-rank).
    #[arg(long, default_value_t = 1)]
    nnodes: usize,
    /// This node's index, 0..nnodes.
    #[arg(long, default_value_t = 0)]
    node_rank: usize,
    /// Host of node 0 (rank 0 listens there); default 127.0.0.1 with one node.
    #[arg(long)]
    master_addr: Option<String>,
    /// Port rank 0 listens on; default a free port with one node, else 29500.
    #[arg(long)]
    master_port: Option<u16>,
    /// Group restarts after a worker dies.
    #[arg(long, default_value_t = 0)]
    max_restarts: usize,
    /// Embedding servers to start with the workers (for `train.embedding = "sync"` or
    /// `"async"`): they hold the embedding rows sharded by key; workers find them through
    /// TUSK_EMBEDDING_SERVERS. With several nodes they run on node 0, ports MASTER_PORT+1….
    #[arg(long, default_value_t = 0)]
    servers: usize,
    /// Seconds between SIGTERM and SIGKILL when stopping workers.
    #[arg(long, default_value_t = 5.0)]
    grace: f64,
    /// The tusk command each worker runs, after `--`, e.g. `train job.toml --model URL`.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    command: Vec<String>,
}

pub fn run(a: LaunchArgs) -> Result<()> {
    let program = std::env::current_exe()?;
    let restart_arg =
        (a.command.first().map(String::as_str) == Some("train")).then(|| "--resume".to_string());
    let opts = tusk_launch::Options {
        nproc_per_node: a.nproc_per_node,
        nnodes: a.nnodes,
        node_rank: a.node_rank,
        master_addr: a.master_addr,
        master_port: a.master_port,
        max_restarts: a.max_restarts,
        program,
        args: a.command,
        restart_arg,
        grace: Duration::from_secs_f64(a.grace.max(0.0)),
        servers: a.servers,
        server_args: vec!["embedding-server".into()],
    };
    tusk_launch::launch(&opts, &mut |line| eprintln!("[launch] {line}"))?;
    Ok(())
}
