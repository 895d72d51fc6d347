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

/// How a container runs its part of the job (from `tusk yarn-container`'s flags).
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Seconds to wait for the peers' addresses.
    pub rendezvous_timeout: Duration,
    /// Added to the command when the attempt resumes (`--resume` for `tusk train`).
    pub restart_arg: Option<String>,
    /// The command is a program of its own (`python train.py`), not a tusk command.
    pub external: bool,
    /// A Python on the nodes that runs the command's `python`/`python3`.
    pub python: Option<String>,
    /// A packed Python environment to unpack (once per node) and put first on PATH.
    pub python_env: Option<String>,
    /// Give the workers a TF_CONFIG.
    pub tf_config: bool,
}

/// Where packed Python environments are unpacked on a node (shared by the node's containers).
fn env_cache() -> std::path::PathBuf {
    std::env::var_os("TUSK_PYTHON_ENV_CACHE")
        .map(Into::into)
        .unwrap_or_else(|| std::env::temp_dir().join("tusk-python-envs"))
}

/// Unpacks the environment archive at `url` once per node: the first container takes a lock,
/// downloads and unpacks into a temporary directory and renames it into place; the others wait
/// for the lock and find it there. Returns the environment's directory.
fn unpack_env(
    storage: &Storage,
    url: &str,
    log: &mut dyn FnMut(&str),
) -> Result<std::path::PathBuf> {
    use std::hash::{Hash, Hasher};
    let io = |what: String| move |e: std::io::Error| Error::Io { what, source: e };
    let loc = storage.open(url)?;
    let meta = loc.head()?;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (url, meta.size, meta.modified_ms).hash(&mut h);
    let cache = env_cache();
    std::fs::create_dir_all(&cache).map_err(io(format!("creating {}", cache.display())))?;
    let dir = cache.join(format!("{:016x}", h.finish()));
    let lock_path = dir.with_extension("lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(io(format!("opening {}", lock_path.display())))?;
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive).map_err(|e| Error::Io {
        what: format!("locking {}", lock_path.display()),
        source: e.into(),
    })?;
    if dir.is_dir() {
        log(&format!(
            "Python environment {url} already unpacked on this node at {}",
            dir.display()
        ));
        return Ok(dir);
    }
    let t = Instant::now();
    let tmp = dir.with_extension(format!("tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(io(format!("creating {}", tmp.display())))?;
    let archive = tmp.with_extension("archive");
    std::fs::write(&archive, loc.read()?).map_err(io(format!("writing {}", archive.display())))?;
    // GNU tar detects gzip by itself; every NodeManager host has tar.
    let out = Command::new("tar")
        .arg("-xf")
        .arg(&archive)
        .arg("-C")
        .arg(&tmp)
        .output()
        .map_err(io("running tar".to_string()))?;
    let _ = std::fs::remove_file(&archive);
    if !out.status.success() {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(Error::Container(format!(
            "unpacking the Python environment {url}: tar says: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    std::fs::rename(&tmp, &dir).map_err(io(format!("renaming {} into place", tmp.display())))?;
    log(&format!(
        "unpacked the Python environment {url} ({:.0} MB) at {} in {:.1} s",
        meta.size as f64 / 1e6,
        dir.display(),
        t.elapsed().as_secs_f64()
    ));
    Ok(dir)
}

/// Claims a slot, waits for the peers' addresses, runs the process and supervises it.
/// `program` is this tusk binary: a tusk command runs it; an external one runs its first word.
/// Returns the process's exit code.
pub fn run(
    program: &std::path::Path,
    args: &[String],
    server_args: &[String],
    o: &Options,
    log: &mut dyn FnMut(&str),
) -> Result<i32> {
    let storage = Storage::new()?;
    let rdv = storage.open(&env("TUSK_YARN_RENDEZVOUS")?)?;
    let workers = env_usize("TUSK_YARN_WORKERS")?;
    let servers = env_usize("TUSK_YARN_SERVERS")?;
    let attempt = env_usize("TUSK_YARN_ATTEMPT").unwrap_or(0);
    let max_restarts = env_usize("TUSK_YARN_MAX_RESTARTS").unwrap_or(0);
    let resume = env("TUSK_YARN_RESUME").is_ok_and(|v| v == "1");
    let logs = env("TUSK_YARN_LOGS").ok();
    let container = env("CONTAINER_ID").unwrap_or_else(|_| "?".into());
    let host = env("NM_HOST")?;
    let node = format!("{host}:{}", env("NM_PORT").unwrap_or_else(|_| "?".into()));
    let secret = env("TUSK_JOB_SECRET")?;
    let failed = rdv.join("failed");
    let deadline = Instant::now() + o.rendezvous_timeout;

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

    let mut path = std::env::var_os("PATH").unwrap_or_default();
    if let (Role::Worker(_), Some(url)) = (&role, &o.python_env) {
        let dir = unpack_env(&storage, url, log)?;
        let mut paths = vec![dir.join("bin")];
        paths.extend(std::env::split_paths(&path));
        path = std::env::join_paths(paths).map_err(|e| Error::Container(e.to_string()))?;
    }
    let mut cmd = match role {
        Role::Worker(_) if o.external => {
            let first = args.first().map(String::as_str).unwrap_or_default();
            let exe = match &o.python {
                Some(p) if first == "python" || first == "python3" => p.clone(),
                _ => first.to_string(),
            };
            let mut c = Command::new(exe);
            c.env("PATH", &path);
            c
        }
        _ => Command::new(program),
    };
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
            if o.tf_config {
                // Every worker publishes the address its TensorFlow server will listen on.
                rdv.join(&format!("tf-workers/{rank:05}"))
                    .write_new(format!("{host}:{}", free_port()?))?;
                let mut cluster = Vec::new();
                for k in 0..workers {
                    cluster.push(wait_for(
                        &rdv.join(&format!("tf-workers/{k:05}")),
                        deadline,
                        &failed,
                        &format!("worker {k}'s TensorFlow address"),
                    )?);
                }
                cmd.env("TF_CONFIG", tusk_launch::tf_config(&cluster, rank));
            }
            let mut args = args.to_vec();
            if o.external {
                args.remove(0);
            }
            if resume
                && let Some(r) = &o.restart_arg
                && !args.iter().any(|a| a == r)
            {
                args.push(r.to_string());
            }
            let port: u16 = mport
                .parse()
                .map_err(|_| Error::Container(format!("bad address {addr} in {}", master.url())))?;
            cmd.args(&args)
                .envs(tusk_launch::torchrun_env(&tusk_launch::Placement {
                    rank,
                    world: workers,
                    local_rank: 0,
                    local_world: 1,
                    node: rank,
                    nodes: workers,
                    master_addr: mhost.to_string(),
                    master_port: port,
                    restart: attempt,
                    max_restarts,
                }));
            if servers > 0 {
                cmd.env("TUSK_EMBEDDING_SERVERS", addrs.join(","));
            }
        }
    }
    let name = match role {
        Role::Server(k) => format!("server-{k}"),
        Role::Worker(r) => format!("rank-{r}"),
    };
    let what = if o.external {
        args.first().cloned().unwrap_or_default()
    } else {
        program.display().to_string()
    };
    cmd.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| Error::Io {
        what: format!("starting {what}"),
        source: e,
    })?;
    // The process's output, kept on the staging file system for `tusk yarn logs`: written
    // every few seconds while it runs (YARN may kill this container before it ends) and once
    // more at the end.
    let keep = logs
        .as_ref()
        .map(|l| storage.open(&format!("{l}/{name}.log")))
        .transpose()?;
    let output = Output::capture(&mut child, keep.clone());
    let code = supervise(
        child,
        &failed,
        &format!("{role:?} (slot {slot}, {container})"),
        log,
    );
    let text = output.finish();
    if let Some(to) = keep
        && let Err(e) = to.write(text)
    {
        log(&format!("could not keep the output at {}: {e}", to.url()));
    }
    code
}

/// A process's stdout and stderr, passed through to this container's own (YARN's log files)
/// and kept, up to the last [`Output::KEEP`] bytes, for the job's log directory.
struct Output {
    kept: std::sync::Arc<std::sync::Mutex<std::collections::VecDeque<u8>>>,
    pumps: Vec<std::thread::JoinHandle<()>>,
    done: std::sync::Arc<std::sync::atomic::AtomicBool>,
    snapshots: Option<std::thread::JoinHandle<()>>,
}

impl Output {
    const KEEP: usize = 8 << 20;

    fn capture(child: &mut Child, to: Option<Location>) -> Output {
        let kept = std::sync::Arc::new(std::sync::Mutex::new(std::collections::VecDeque::new()));
        let mut pumps = Vec::new();
        fn pump(
            mut src: impl std::io::Read + Send + 'static,
            stderr: bool,
            kept: std::sync::Arc<std::sync::Mutex<std::collections::VecDeque<u8>>>,
        ) -> Option<std::thread::JoinHandle<()>> {
            std::thread::Builder::new()
                .name("tusk-yarn-output".into())
                .spawn(move || {
                    use std::io::Write as _;
                    let mut buf = vec![0u8; 64 << 10];
                    loop {
                        let n = match src.read(&mut buf) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        let _ = if stderr {
                            std::io::stderr().write_all(&buf[..n])
                        } else {
                            std::io::stdout().write_all(&buf[..n])
                        };
                        let mut k = kept.lock().unwrap_or_else(|e| e.into_inner());
                        k.extend(&buf[..n]);
                        let over = k.len().saturating_sub(Output::KEEP);
                        k.drain(..over);
                    }
                })
                .ok()
        }
        if let Some(out) = child.stdout.take() {
            pumps.extend(pump(out, false, kept.clone()));
        }
        if let Some(err) = child.stderr.take() {
            pumps.extend(pump(err, true, kept.clone()));
        }
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let snapshots = to.and_then(|to| {
            let (kept, done) = (kept.clone(), done.clone());
            std::thread::Builder::new()
                .name("tusk-yarn-output-snapshots".into())
                .spawn(move || {
                    let mut written = 0usize;
                    let mut total = 0usize;
                    while !done.load(std::sync::atomic::Ordering::Relaxed) {
                        std::thread::sleep(Duration::from_millis(100));
                        total += 100;
                        if !total.is_multiple_of(1000) {
                            continue;
                        }
                        let now: Vec<u8> = {
                            let k = kept.lock().unwrap_or_else(|e| e.into_inner());
                            if k.len() == written {
                                continue;
                            }
                            k.iter().copied().collect()
                        };
                        written = now.len();
                        let _ = to.write(now);
                    }
                })
                .ok()
        });
        Output {
            kept,
            pumps,
            done,
            snapshots,
        }
    }

    fn finish(self) -> Vec<u8> {
        // A child of the process that outlived it may hold the pipes: give the pumps a few
        // seconds, not forever.
        let t = Instant::now();
        while self.pumps.iter().any(|p| !p.is_finished()) && t.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(20));
        }
        for p in self.pumps {
            if p.is_finished() {
                let _ = p.join();
            }
        }
        self.done.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(s) = self.snapshots {
            let _ = s.join();
        }
        let k = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        k.iter().copied().collect()
    }
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
                tusk_launch::signal_tree(child.id(), rustix::process::Signal::TERM);
                let t = Instant::now();
                while t.elapsed() < Duration::from_secs(5) {
                    if let Ok(Some(_)) = child.try_wait() {
                        return Ok(1);
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                tusk_launch::signal_tree(child.id(), rustix::process::Signal::KILL);
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
