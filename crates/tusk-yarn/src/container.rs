//! What runs in each YARN container (`tusk yarn-container`, started by the `worker` script).
//!
//! YARN gives a container no rank. Each container claims the lowest free slot of the attempt
//! with a create-only file `slots/NNNNN` in the attempt's rendezvous directory (on HDFS, a
//! NameNode create: exactly one claimant wins each slot). Slots `0..S` are embedding servers
//! (shard = slot), the rest worker ranks (rank = slot − S). Servers and rank 0 pick a free
//! port on their node and publish `host:port` (`servers/K`, `master`); the others wait for
//! them, bounded by the rendezvous timeout. Then the process runs with the same environment
//! `tusk launch` gives locally (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT,
//! TUSK_EMBEDDING_SERVERS, TUSK_JOB_SECRET). A process that fails writes `failed`; every
//! container watches for it and stops its process, so a lost container ends the attempt
//! within seconds instead of leaving servers waiting for workers that never come.

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use tusk_storage::{Location, Storage};

use crate::{Error, Result};

/// Where this container stands in the job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// Embedding server of this shard.
    Server(usize),
    /// Worker of this rank.
    Worker(usize),
}

/// The slot's role: servers first.
pub fn role_of(slot: usize, servers: usize) -> Role {
    if slot < servers {
        Role::Server(slot)
    } else {
        Role::Worker(slot - servers)
    }
}

fn env(name: &str) -> Result<String> {
    std::env::var(name).map_err(|_| {
        Error::Container(format!(
            "{name} is not set: `tusk yarn-container` runs inside a YARN container started by `tusk launch --yarn`"
        ))
    })
}

fn env_usize(name: &str) -> Result<usize> {
    env(name)?
        .parse()
        .map_err(|_| Error::Container(format!("{name} is not a number")))
}

fn free_port() -> Result<u16> {
    std::net::TcpListener::bind("0.0.0.0:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| Error::Io {
            what: "finding a free port".into(),
            source: e,
        })
}

fn wait_for(loc: &Location, deadline: Instant, failed: &Location, what: &str) -> Result<String> {
    loop {
        match loc.read() {
            Ok(b) => return Ok(String::from_utf8_lossy(&b).trim().to_string()),
            Err(tusk_storage::Error::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        if failed.exists()? {
            return Err(Error::Container(format!(
                "the attempt failed while waiting for {what}: {}",
                String::from_utf8_lossy(&failed.read()?)
            )));
        }
        if Instant::now() > deadline {
            return Err(Error::Container(format!(
                "{what} did not appear in {} within the rendezvous timeout (did YARN give the job all its containers? see the application's diagnostics)",
                loc.url()
            )));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Claims a slot, waits for the peers' addresses, runs the process and supervises it.
/// Returns the process's exit code.
pub fn run(
    program: &std::path::Path,
    args: &[String],
    server_args: &[String],
    restart_arg: Option<&str>,
    rendezvous_timeout: Duration,
    log: &mut dyn FnMut(&str),
) -> Result<i32> {
    let storage = Storage::new()?;
    let rdv = storage.open(&env("TUSK_YARN_RENDEZVOUS")?)?;
    let workers = env_usize("TUSK_YARN_WORKERS")?;
    let servers = env_usize("TUSK_YARN_SERVERS")?;
    let resume = env("TUSK_YARN_RESUME").is_ok_and(|v| v == "1");
    let container = env("CONTAINER_ID").unwrap_or_else(|_| "?".into());
    let host = env("NM_HOST")?;
    let node = format!("{host}:{}", env("NM_PORT").unwrap_or_else(|_| "?".into()));
    let secret = env("TUSK_JOB_SECRET")?;
    let failed = rdv.join("failed");
    let deadline = Instant::now() + rendezvous_timeout;

    let mut slot = None;
    for s in 0..workers + servers {
        match rdv
            .join(&format!("slots/{s:05}"))
            .write_new(format!("{container} on node {node}\n"))
        {
            Ok(()) => {
                slot = Some(s);
                break;
            }
            Err(tusk_storage::Error::AlreadyExists { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    let Some(slot) = slot else {
        return Err(Error::Container(format!(
            "every one of the {} slots in {} is taken: more containers than the job asked for",
            workers + servers,
            rdv.url()
        )));
    };
    let role = role_of(slot, servers);
    let devices = ["CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES"]
        .iter()
        .filter_map(|k| std::env::var(k).ok().map(|v| format!(" {k}={v}")))
        .collect::<String>();
    log(&format!(
        "slot {slot}: {role:?} in {container} on node {node}{devices}"
    ));

    let mut cmd = Command::new(program);
    cmd.env("TUSK_JOB_SECRET", &secret)
        .env("TUSK_LAUNCH_PARENT", std::process::id().to_string());
    match role {
        Role::Server(shard) => {
            let port = free_port()?;
            cmd.args(server_args).args([
                "--bind".to_string(),
                format!("0.0.0.0:{port}"),
                "--shard".into(),
                shard.to_string(),
                "--shards".into(),
                servers.to_string(),
                "--workers".into(),
                workers.to_string(),
            ]);
            // Publish once the server is about to listen; workers retry their connections.
            rdv.join(&format!("servers/{shard:05}"))
                .write_new(format!("{host}:{port}"))?;
        }
        Role::Worker(rank) => {
            let master = rdv.join("master");
            let addr = if rank == 0 {
                let a = format!("{host}:{}", free_port()?);
                master.write_new(a.clone())?;
                a
            } else {
                wait_for(&master, deadline, &failed, "rank 0's address")?
            };
            let (mhost, mport) = addr.rsplit_once(':').ok_or_else(|| {
                Error::Container(format!("bad address {addr} in {}", master.url()))
            })?;
            let mut addrs = Vec::new();
            for k in 0..servers {
                addrs.push(wait_for(
                    &rdv.join(&format!("servers/{k:05}")),
                    deadline,
                    &failed,
                    &format!("embedding server {k}'s address"),
                )?);
            }
            let mut args = args.to_vec();
            if resume
                && let Some(r) = restart_arg
                && !args.iter().any(|a| a == r)
            {
                args.push(r.to_string());
            }
            cmd.args(&args)
                .env("RANK", rank.to_string())
                .env("WORLD_SIZE", workers.to_string())
                .env("LOCAL_RANK", "0")
                .env("LOCAL_WORLD_SIZE", "1")
                .env("MASTER_ADDR", mhost)
                .env("MASTER_PORT", mport);
            if servers > 0 {
                cmd.env("TUSK_EMBEDDING_SERVERS", addrs.join(","));
            }
        }
    }
    let child = cmd.spawn().map_err(|e| Error::Io {
        what: format!("starting {}", program.display()),
        source: e,
    })?;
    supervise(
        child,
        &failed,
        &format!("{role:?} (slot {slot}, {container})"),
        log,
    )
}

fn supervise(
    mut child: Child,
    failed: &Location,
    who: &str,
    log: &mut dyn FnMut(&str),
) -> Result<i32> {
    let mut last_check = Instant::now();
    loop {
        if let Some(s) = child.try_wait().map_err(|e| Error::Io {
            what: "waiting for the process".into(),
            source: e,
        })? {
            let code = s.code().unwrap_or(128 + 9);
            if !s.success() {
                let _ = failed.write_new(format!("{who} exited with {s}\n"));
                log(&format!(
                    "{who} exited with {s}: the attempt is marked failed"
                ));
            }
            return Ok(code);
        }
        if last_check.elapsed() >= Duration::from_secs(1) {
            last_check = Instant::now();
            if failed.exists().unwrap_or(false) {
                let why = failed
                    .read()
                    .map(|b| String::from_utf8_lossy(&b).trim().to_string())
                    .unwrap_or_default();
                log(&format!("the attempt failed ({why}): stopping {who}"));
                let pid = rustix::process::Pid::from_raw(child.id() as i32);
                if let Some(pid) = pid {
                    let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
                }
                let t = Instant::now();
                while t.elapsed() < Duration::from_secs(5) {
                    if let Ok(Some(_)) = child.try_wait() {
                        return Ok(1);
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                let _ = child.kill();
                let _ = child.wait();
                return Ok(1);
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_take_the_first_slots() {
        assert_eq!(role_of(0, 2), Role::Server(0));
        assert_eq!(role_of(1, 2), Role::Server(1));
        assert_eq!(role_of(2, 2), Role::Worker(0));
        assert_eq!(role_of(0, 0), Role::Worker(0));
    }
}
