//! `tusk embedding-server`, and how workers find the servers: glue over `tusk-ps`.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;

/// Hold one shard of a job's embedding rows (keys with shard_of(key) = --shard) and apply
/// the workers' row gradients with the table's optimiser. Workers and servers share
/// TUSK_JOB_SECRET. Without flags, a TF_CONFIG whose task is a `ps` gives the shard, the
/// number of servers, the workers and the port. Exits once the run it serves is finished
/// and its workers have disconnected. In a Kubernetes indexed Job, JOB_COMPLETION_INDEX gives
/// the shard.
#[derive(Debug, Args)]
pub struct ServerArgs {
    /// Address to listen on.
    #[arg(long)]
    bind: Option<String>,
    /// This server's shard, 0..shards.
    #[arg(long)]
    shard: Option<usize>,
    /// Number of servers.
    #[arg(long)]
    shards: Option<usize>,
    /// Number of workers in the job.
    #[arg(long)]
    workers: Option<usize>,
    /// Seconds a request may wait for the other workers (e.g. a pull for the slowest push).
    #[arg(long, default_value_t = 300, value_name = "SECS")]
    timeout: u64,
}

pub fn run(a: ServerArgs) -> Result<()> {
    let ps = match std::env::var("TF_CONFIG") {
        Ok(t) if !t.trim().is_empty() => tusk_collective::world::tf_config_ps(&t)?,
        _ => None,
    };
    let from_tf = ps.as_ref().and_then(|p| p.this_server.map(|i| (p, i)));
    // A Kubernetes indexed Job gives each pod its index.
    let job_index = match std::env::var("JOB_COMPLETION_INDEX") {
        Ok(v) if !v.trim().is_empty() => Some(
            v.trim()
                .parse::<usize>()
                .with_context(|| format!("JOB_COMPLETION_INDEX: `{v}` is not a number"))?,
        ),
        _ => None,
    };
    let shard = match (a.shard, from_tf, job_index) {
        (Some(s), _, _) => s,
        (None, Some((_, i)), _) => i,
        (None, None, Some(i)) => i,
        (None, None, None) => bail!(
            "--shard is needed (or a TF_CONFIG whose task is a `ps`, or JOB_COMPLETION_INDEX)"
        ),
    };
    let shards = match (a.shards, from_tf) {
        (Some(s), _) => s,
        (None, Some((p, _))) => p.servers.len(),
        (None, None) => bail!("--shards is needed (or a TF_CONFIG with `ps` tasks)"),
    };
    let workers = match (a.workers, from_tf) {
        (Some(w), _) => w,
        (None, Some((p, _))) => p.workers,
        (None, None) => bail!("--workers is needed (or a TF_CONFIG with `chief`/`worker` tasks)"),
    };
    let bind = match (a.bind, from_tf) {
        (Some(b), _) => b,
        (None, Some((p, i))) => {
            let port = p.servers[i]
                .rsplit_once(':')
                .map(|(_, port)| port.to_string())
                .with_context(|| format!("TF_CONFIG ps:{i} `{}` is not host:port", p.servers[i]))?;
            format!("0.0.0.0:{port}")
        }
        (None, None) => bail!("--bind is needed, e.g. --bind 0.0.0.0:7000"),
    };
    tusk_launch::exit_with_launcher();
    let secret = std::env::var("TUSK_JOB_SECRET").unwrap_or_default();
    let server = tusk_ps::Server::bind(
        &bind,
        tusk_ps::ServerOptions {
            shard,
            shards,
            workers,
            secret: secret.into_bytes(),
            timeout: Duration::from_secs(a.timeout.max(1)),
        },
    )?;
    eprintln!(
        "embedding server {shard} of {shards} for {workers} worker(s): listening on {}",
        server.addr()?
    );
    server.run()?;
    eprintln!("embedding server {shard}: the run is finished");
    Ok(())
}

/// The embedding servers a worker should use: `--embedding-servers`, else
/// TUSK_EMBEDDING_SERVERS (`tusk launch --servers`), else TF_CONFIG's `ps` tasks.
pub fn server_addrs(flag: Option<&str>) -> Result<Vec<String>> {
    let split = |s: &str| -> Vec<String> {
        s.split(',')
            .map(str::trim)
            .filter(|x| !x.is_empty())
            .map(str::to_string)
            .collect()
    };
    if let Some(f) = flag {
        return Ok(split(f));
    }
    if let Ok(v) = std::env::var(tusk_launch::SERVERS_VAR)
        && !v.trim().is_empty()
    {
        return Ok(split(&v));
    }
    if let Ok(t) = std::env::var("TF_CONFIG")
        && !t.trim().is_empty()
        && let Some(p) = tusk_collective::world::tf_config_ps(&t)?
    {
        return Ok(p.servers);
    }
    Ok(Vec::new())
}
