//! `tusk launch`: start N worker processes on this node — tusk's own or any program — with
//! torchrun's environment ([`torchrun_env`]: `RANK`, `WORLD_SIZE`, `LOCAL_RANK`, …,
//! `TORCHELASTIC_RESTART_COUNT`), `TUSK_JOB_SECRET` and optionally a `TF_CONFIG`, prefix their
//! output with their rank, and supervise them: when one dies (non-zero exit or a signal) the
//! others and everything they started are stopped within seconds and the whole group starts
//! again (tusk's `train` resuming from the newest committed model version, a program with the
//! restart count raised), at most `max_restarts` times — except after an error exit within
//! the start-up window, which would only repeat.
//!
//! With `servers > 0` the launcher also starts that many embedding servers (on node 0, ports
//! `MASTER_PORT + 1 …` with several nodes) before the workers, gives every worker their
//! addresses in `TUSK_EMBEDDING_SERVERS`, and treats them as part of the group: a server
//! that dies restarts the group like a worker that dies, and the servers are stopped when
//! the workers are done.
//!
//! Workers stay in the launcher's process group, so a terminal's Ctrl-C or a supervisor
//! killing the group reaches all of them; the launcher forwards SIGINT/SIGTERM and, should it
//! be killed outright, every tusk worker notices within a second that its parent is gone and
//! exits ([`exit_with_launcher`]), and any other program gets SIGKILL from the kernel
//! ([`exec_worker`] sets PDEATHSIG before it execs the program). The launcher is a child
//! subreaper: what a worker abandons is re-parented to it and stopped with the group. No worker
//! outlives its launcher.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, kill_process};

/// The variable naming the launcher's pid in every worker.
pub const PARENT_VAR: &str = "TUSK_LAUNCH_PARENT";

/// What went wrong.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The launch options are unusable.
    #[error("{0}")]
    Usage(String),
    /// A worker could not be started.
    #[error("starting rank {rank} ({program}): {source}")]
    Spawn {
        /// Global rank.
        rank: usize,
        /// The program.
        program: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// Workers kept failing.
    #[error("{0}")]
    Failed(String),
    /// Stopped by SIGINT/SIGTERM.
    #[error("interrupted: stopped every worker")]
    Interrupted,
}

/// How to launch.
#[derive(Debug, Clone)]
pub struct Options {
    /// Workers on this node.
    pub nproc_per_node: usize,
    /// Nodes in the job.
    pub nnodes: usize,
    /// This node's index, `0..nnodes`.
    pub node_rank: usize,
    /// Rank 0's host (default: this host when there is one node).
    pub master_addr: Option<String>,
    /// Rank 0's port (default: a free port when there is one node, else 29500).
    pub master_port: Option<u16>,
    /// Group restarts allowed after a worker dies.
    pub max_restarts: usize,
    /// The worker program (the tusk binary).
    pub program: PathBuf,
    /// Its arguments, e.g. `train CONFIG --model URL`.
    pub args: Vec<String>,
    /// Added to the arguments on restarts when absent (`--resume`).
    pub restart_arg: Option<String>,
    /// Time between SIGTERM and SIGKILL when stopping workers.
    pub grace: Duration,
    /// Embedding servers to start with the workers (0: none).
    pub servers: usize,
    /// The server program's arguments before the launcher's own (`embedding-server`).
    pub server_args: Vec<String>,
    /// A worker exiting with an error code this soon after its attempt started ends the job
    /// instead of restarting it (a crash at start-up repeats); deaths by a signal always
    /// restart.
    pub startup_window: Duration,
    /// Give every worker a `TF_CONFIG` for `tf.distribute.MultiWorkerMirroredStrategy`: the
    /// cluster's `worker` list (one `host:port` per rank) and the worker's own index.
    pub tf_config: bool,
    /// With `tf_config` and several nodes: every node's host, in node-rank order (worker
    /// ports are `MASTER_PORT + 1 + servers + local rank` on each).
    pub node_addrs: Vec<String>,
    /// GPUs per worker: worker `k` on this node gets CUDA_VISIBLE_DEVICES (and
    /// NVIDIA_VISIBLE_DEVICES) ordinals `k·G … k·G+G−1` of this process's own list (or of
    /// 0, 1, … when it has none). 0: the variables are passed through unchanged.
    pub gpus_per_worker: usize,
}

/// The devices local worker `local` may see with `per` GPUs each, out of `visible` (this
/// process's CUDA_VISIBLE_DEVICES, comma-separated; `None`: every device, 0, 1, …).
pub fn visible_devices(visible: Option<&str>, local: usize, per: usize) -> Result<String, Error> {
    let from = local * per;
    let ids: Vec<String> = match visible.map(str::trim).filter(|v| !v.is_empty()) {
        Some(list) => {
            let all: Vec<&str> = list.split(',').map(str::trim).collect();
            if all.len() < from + per {
                return Err(Error::Usage(format!(
                    "--gpus-per-worker {per}: worker {local} needs devices {from}..{} of CUDA_VISIBLE_DEVICES={list}, which lists {}",
                    from + per - 1,
                    all.len()
                )));
            }
            all[from..from + per]
                .iter()
                .map(|s| s.to_string())
                .collect()
        }
        None => (from..from + per).map(|i| i.to_string()).collect(),
    };
    Ok(ids.join(","))
}

/// The variable naming the embedding servers' addresses (comma-separated, shard order).
pub const SERVERS_VAR: &str = "TUSK_EMBEDDING_SERVERS";

/// Where one worker stands: what torchrun tells it.
#[derive(Debug, Clone)]
pub struct Placement {
    /// Global rank.
    pub rank: usize,
    /// Workers in the job.
    pub world: usize,
    /// Rank on this node.
    pub local_rank: usize,
    /// Workers on this node.
    pub local_world: usize,
    /// This node's index.
    pub node: usize,
    /// Nodes in the job.
    pub nodes: usize,
    /// Rank 0's host.
    pub master_addr: String,
    /// Rank 0's port.
    pub master_port: u16,
    /// Restarts so far (0 on the first attempt).
    pub restart: usize,
    /// Restarts allowed.
    pub max_restarts: usize,
}

/// torchrun's environment for a worker (as `torch.distributed.run` sets it with its static
/// rendezvous: the script's rank 0 hosts the store at MASTER_ADDR:MASTER_PORT), plus torchrun's
/// defaults for what this process's environment leaves unset: TORCH_NCCL_ASYNC_ERROR_HANDLING,
/// OMP_NUM_THREADS=1 with several workers on a node, and PYTHONUNBUFFERED=1 (output is read
/// line by line and prefixed with the rank: a print() should arrive when printed).
pub fn torchrun_env(p: &Placement) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = [
        ("RANK", p.rank.to_string()),
        ("WORLD_SIZE", p.world.to_string()),
        ("LOCAL_RANK", p.local_rank.to_string()),
        ("LOCAL_WORLD_SIZE", p.local_world.to_string()),
        ("GROUP_RANK", p.node.to_string()),
        ("GROUP_WORLD_SIZE", p.nodes.to_string()),
        ("ROLE_RANK", p.rank.to_string()),
        ("ROLE_WORLD_SIZE", p.world.to_string()),
        ("ROLE_NAME", "default".to_string()),
        ("MASTER_ADDR", p.master_addr.clone()),
        ("MASTER_PORT", p.master_port.to_string()),
        ("TORCHELASTIC_RESTART_COUNT", p.restart.to_string()),
        ("TORCHELASTIC_MAX_RESTARTS", p.max_restarts.to_string()),
        ("TORCHELASTIC_RUN_ID", "none".to_string()),
        ("TORCHELASTIC_USE_AGENT_STORE", "False".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let unset = |k: &str| std::env::var_os(k).is_none();
    if unset("TORCH_NCCL_ASYNC_ERROR_HANDLING") {
        env.push(("TORCH_NCCL_ASYNC_ERROR_HANDLING".into(), "1".into()));
    }
    if unset("OMP_NUM_THREADS") && p.local_world > 1 {
        env.push(("OMP_NUM_THREADS".into(), "1".into()));
    }
    if unset("PYTHONUNBUFFERED") {
        env.push(("PYTHONUNBUFFERED".into(), "1".into()));
    }
    env
}

/// Environment for one local worker: torchrun's, and tusk's own.
fn worker_env(
    o: &Options,
    local: usize,
    addr: &str,
    port: u16,
    secret: &str,
    attempt: usize,
) -> Vec<(String, String)> {
    let mut env = torchrun_env(&Placement {
        rank: o.node_rank * o.nproc_per_node + local,
        world: o.nnodes * o.nproc_per_node,
        local_rank: local,
        local_world: o.nproc_per_node,
        node: o.node_rank,
        nodes: o.nnodes,
        master_addr: addr.to_string(),
        master_port: port,
        restart: attempt,
        max_restarts: o.max_restarts,
    });
    env.push(("TUSK_JOB_SECRET".into(), secret.to_string()));
    env.push((PARENT_VAR.into(), std::process::id().to_string()));
    env
}

/// `TF_CONFIG` of worker `rank` in a cluster of `workers` (`host:port` per rank).
pub fn tf_config(workers: &[String], rank: usize) -> String {
    let list = workers
        .iter()
        .map(|w| format!("\"{}\"", w.replace('\\', "\\\\").replace('"', "\\\"")))
        .collect::<Vec<_>>()
        .join(",");
    format!(r#"{{"cluster":{{"worker":[{list}]}},"task":{{"type":"worker","index":{rank}}}}}"#)
}

fn free_port(what: &str) -> Result<u16, Error> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| Error::Usage(format!("finding a free port for {what}: {e}")))
}

/// A fresh random secret (hex) for a job started here.
pub fn new_secret() -> String {
    let mut b = [0u8; 24];
    let ok = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b));
    if ok.is_err() {
        use std::hash::{BuildHasher, Hasher};
        for (i, c) in b.chunks_mut(8).enumerate() {
            let mut h = std::hash::RandomState::new().build_hasher();
            h.write_usize(i);
            h.write_u32(std::process::id());
            h.write_u128(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_nanos(),
            );
            c.copy_from_slice(&h.finish().to_le_bytes()[..c.len()]);
        }
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

struct Worker {
    /// `rank N` or `server N`.
    name: String,
    server: bool,
    child: Child,
    pumps: Vec<JoinHandle<()>>,
    status: Option<ExitStatus>,
}

fn pump(
    src: impl Read + Send + 'static,
    prefix: String,
    to_stderr: bool,
) -> Option<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("tusk-launch-pump".into())
        .spawn(move || {
            let mut r = BufReader::new(src);
            let mut line = Vec::new();
            loop {
                line.clear();
                match r.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {
                        let mut out = prefix.clone().into_bytes();
                        out.extend_from_slice(&line);
                        if !out.ends_with(b"\n") {
                            out.push(b'\n');
                        }
                        // One write per line keeps ranks' lines whole.
                        let _ = if to_stderr {
                            std::io::stderr().lock().write_all(&out)
                        } else {
                            std::io::stdout().lock().write_all(&out)
                        };
                    }
                }
            }
        })
        .ok()
}

fn describe(s: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt as _;
    match (s.code(), s.signal()) {
        (Some(c), _) => format!("exit code {c}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        _ => "ended".to_string(),
    }
}

/// `(pid, parent pid)` of every process on the machine (Linux `/proc`).
fn process_table() -> Vec<(i32, i32)> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| {
        let pid: i32 = e.ok()?.file_name().to_str()?.parse().ok()?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // `pid (comm) state ppid …`: comm may hold spaces and parentheses.
        let ppid = stat
            .rsplit_once(')')?
            .1
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()?;
        Some((pid, ppid))
    })
    .collect()
}

/// Every descendant of `root` (children, grandchildren, …).
fn descendants(table: &[(i32, i32)], root: i32) -> Vec<i32> {
    let mut out = Vec::new();
    let mut frontier = vec![root];
    while let Some(p) = frontier.pop() {
        for &(c, pp) in table {
            if pp == p && !out.contains(&c) {
                out.push(c);
                frontier.push(c);
            }
        }
    }
    out
}

fn signal_pid(pid: i32, sig: Signal) {
    if let Some(pid) = Pid::from_raw(pid) {
        let _ = kill_process(pid, sig);
    }
}

/// Signals process `pid` and all its descendants (found in `/proc`).
pub fn signal_tree(pid: u32, sig: Signal) {
    let pid = pid as i32;
    for d in descendants(&process_table(), pid) {
        signal_pid(d, sig);
    }
    signal_pid(pid, sig);
}

/// Signals a live worker and everything it started (a Python worker's DataLoader processes,
/// a shell's children): the launcher owns the whole tree.
fn signal(w: &Worker, sig: Signal) {
    if w.status.is_none() {
        signal_tree(w.child.id(), sig);
    }
}

/// Processes whose parent died and that YARN's or a shell's habits would leave behind get
/// this launcher as their new parent (it is a child subreaper): kill and reap them.
fn reap_orphans(known: &[i32]) {
    let me = std::process::id() as i32;
    let table = process_table();
    let orphans: Vec<i32> = table
        .iter()
        .filter(|(p, pp)| *pp == me && !known.contains(p))
        .map(|(p, _)| *p)
        .collect();
    for o in orphans {
        for d in descendants(&table, o) {
            signal_pid(d, Signal::KILL);
        }
        signal_pid(o, Signal::KILL);
        if let Some(pid) = Pid::from_raw(o) {
            let _ = rustix::process::waitpid(Some(pid), rustix::process::WaitOptions::empty());
        }
    }
}

/// Stop every live worker and what it started: `first` (SIGTERM, or the signal the launcher
/// received), then SIGKILL after `grace`; reap them all.
fn stop_all(workers: &mut [Worker], grace: Duration, first: Signal) {
    for w in workers.iter() {
        signal(w, first);
    }
    let deadline = Instant::now() + grace;
    loop {
        let mut live = false;
        for w in workers.iter_mut() {
            if w.status.is_none() {
                match w.child.try_wait() {
                    Ok(Some(s)) => w.status = Some(s),
                    Ok(None) => live = true,
                    Err(_) => {}
                }
            }
        }
        if !live {
            break;
        }
        if Instant::now() >= deadline {
            for w in workers.iter_mut() {
                signal(w, Signal::KILL);
                if w.status.is_none() {
                    w.status = w.child.wait().ok();
                }
            }
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    reap_orphans(&[]);
    for w in workers.iter_mut() {
        for p in w.pumps.drain(..) {
            let _ = p.join();
        }
    }
}

/// Start `cmd` with its output pumped to ours, each line prefixed `[name] `.
fn spawn(mut cmd: Command, name: String, server: bool) -> std::io::Result<Worker> {
    let mut child = cmd.spawn()?;
    let prefix = format!("[{name}] ");
    let mut pumps = Vec::new();
    if let Some(out) = child.stdout.take() {
        pumps.extend(pump(out, prefix.clone(), false));
    }
    if let Some(err) = child.stderr.take() {
        pumps.extend(pump(err, prefix, true));
    }
    Ok(Worker {
        name,
        server,
        child,
        pumps,
        status: None,
    })
}

/// Run the job; `log` receives the launcher's own lines (unprefixed).
pub fn launch(o: &Options, log: &mut dyn FnMut(&str)) -> Result<(), Error> {
    if o.nproc_per_node == 0 || o.nnodes == 0 {
        return Err(Error::Usage("-n and --nnodes must be at least 1".into()));
    }
    if o.node_rank >= o.nnodes {
        return Err(Error::Usage(format!(
            "--node-rank {} is not below --nnodes {}",
            o.node_rank, o.nnodes
        )));
    }
    let secret = match std::env::var("TUSK_JOB_SECRET") {
        Ok(s) if !s.is_empty() => s,
        _ if o.nnodes > 1 => {
            return Err(Error::Usage(
                "TUSK_JOB_SECRET is not set: with --nnodes > 1, set the same secret on every node (e.g. `export TUSK_JOB_SECRET=$(openssl rand -hex 24)`)".into(),
            ));
        }
        _ => new_secret(),
    };
    let addr = match (&o.master_addr, o.nnodes) {
        (Some(a), _) => a.clone(),
        (None, 1) => "127.0.0.1".to_string(),
        (None, _) => {
            return Err(Error::Usage(
                "--master-addr is needed with --nnodes > 1 (the host of node 0)".into(),
            ));
        }
    };
    if o.tf_config && o.nnodes > 1 && o.node_addrs.len() != o.nnodes {
        return Err(Error::Usage(format!(
            "--tf-config with --nnodes {}: --node-addrs must list every node's host in node-rank order (got {})",
            o.nnodes,
            o.node_addrs.len()
        )));
    }
    // The signal received (SIGINT, SIGTERM), forwarded to the workers as it came.
    let stop = Arc::new(AtomicUsize::new(0));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register_usize(sig, stop.clone(), sig as usize)
            .map_err(|e| Error::Usage(format!("installing a signal handler: {e}")))?;
    }
    // Whatever a worker starts and abandons is re-parented here, not to init, so that it can
    // be stopped with the group (see `reap_orphans`).
    let _ = rustix::process::set_child_subreaper(Some(rustix::process::getpid()));
    let world = o.nnodes * o.nproc_per_node;
    // Servers run on node 0; every node knows their ports.
    let server_addrs: Vec<(String, u16)> = (0..o.servers)
        .map(|i| {
            let p = match (o.master_port, o.nnodes) {
                (Some(p), _) => Ok(p.wrapping_add(1 + i as u16)),
                (None, 1) => TcpListener::bind("127.0.0.1:0")
                    .and_then(|l| l.local_addr())
                    .map(|a| a.port())
                    .map_err(|e| Error::Usage(format!("finding a free port for server {i}: {e}"))),
                (None, _) => Ok(29501 + i as u16),
            }?;
            Ok((addr.clone(), p))
        })
        .collect::<Result<_, Error>>()?;
    let servers_env = server_addrs
        .iter()
        .map(|(h, p)| format!("{h}:{p}"))
        .collect::<Vec<_>>()
        .join(",");
    let parent_devices = std::env::var("CUDA_VISIBLE_DEVICES").ok();
    let devices: Vec<Option<String>> = (0..o.nproc_per_node)
        .map(|local| {
            (o.gpus_per_worker > 0)
                .then(|| visible_devices(parent_devices.as_deref(), local, o.gpus_per_worker))
                .transpose()
        })
        .collect::<Result<_, Error>>()?;
    if o.gpus_per_worker > 0 {
        log(&format!(
            "GPUs per worker: {}",
            devices
                .iter()
                .enumerate()
                .map(|(k, d)| format!(
                    "local rank {k} → CUDA_VISIBLE_DEVICES={}",
                    d.as_deref().unwrap_or("")
                ))
                .collect::<Vec<_>>()
                .join("; ")
        ));
    }
    let mut failures: Vec<String> = Vec::new();
    for attempt in 0..=o.max_restarts {
        // With one node and no --master-port: a fresh port for every attempt (the previous
        // attempt's rank 0 may have left its listening port in TIME_WAIT).
        let port = match (o.master_port, o.nnodes) {
            (Some(p), _) => p,
            (None, 1) => free_port("rank 0")?,
            (None, _) => 29500,
        };
        let tf_workers: Vec<String> = if o.tf_config {
            if o.nnodes == 1 {
                (0..o.nproc_per_node)
                    .map(|k| Ok(format!("{addr}:{}", free_port(&format!("TF worker {k}"))?)))
                    .collect::<Result<_, Error>>()?
            } else {
                (0..world)
                    .map(|r| {
                        let (node, local) = (r / o.nproc_per_node, r % o.nproc_per_node);
                        format!(
                            "{}:{}",
                            o.node_addrs[node],
                            port as usize + 1 + o.servers + local
                        )
                    })
                    .collect()
            }
        } else {
            Vec::new()
        };
        let mut args = o.args.clone();
        if attempt > 0
            && let Some(extra) = &o.restart_arg
            && !args.iter().any(|a| a == extra)
        {
            args.push(extra.clone());
        }
        log(&format!(
            "{} {} worker(s) (ranks {}..{} of {world}), rank 0 at {addr}:{port}",
            if attempt == 0 {
                "starting"
            } else {
                "restarting"
            },
            o.nproc_per_node,
            o.node_rank * o.nproc_per_node,
            (o.node_rank + 1) * o.nproc_per_node - 1
        ));
        let mut workers: Vec<Worker> = Vec::new();
        let here = if o.node_rank == 0 { o.servers } else { 0 };
        for (i, (_, p)) in server_addrs.iter().enumerate().take(here) {
            let bind = if o.nnodes == 1 {
                format!("127.0.0.1:{p}")
            } else {
                format!("0.0.0.0:{p}")
            };
            let mut cmd = Command::new(&o.program);
            cmd.args(&o.server_args)
                .args([
                    "--bind".to_string(),
                    bind,
                    "--shard".into(),
                    i.to_string(),
                    "--shards".into(),
                    o.servers.to_string(),
                    "--workers".into(),
                    world.to_string(),
                ])
                .env("TUSK_JOB_SECRET", &secret)
                .env(PARENT_VAR, std::process::id().to_string())
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            match spawn(cmd, format!("server {i}"), true) {
                Ok(w) => workers.push(w),
                Err(source) => {
                    stop_all(&mut workers, o.grace, Signal::TERM);
                    return Err(Error::Spawn {
                        rank: i,
                        program: o.program.display().to_string(),
                        source,
                    });
                }
            }
        }
        if here > 0 {
            log(&format!("embedding servers at {servers_env}"));
        }
        for (local, visible) in devices.iter().enumerate() {
            let rank = o.node_rank * o.nproc_per_node + local;
            let mut cmd = Command::new(&o.program);
            cmd.args(&args)
                .envs(worker_env(o, local, &addr, port, &secret, attempt))
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            if o.servers > 0 {
                cmd.env(SERVERS_VAR, &servers_env);
            }
            if o.tf_config {
                cmd.env("TF_CONFIG", tf_config(&tf_workers, rank));
            }
            if let Some(d) = visible {
                cmd.env("CUDA_VISIBLE_DEVICES", d)
                    .env("NVIDIA_VISIBLE_DEVICES", d);
            }
            match spawn(cmd, format!("rank {rank}"), false) {
                Ok(w) => workers.push(w),
                Err(source) => {
                    stop_all(&mut workers, o.grace, Signal::TERM);
                    return Err(Error::Spawn {
                        rank,
                        program: o.program.display().to_string(),
                        source,
                    });
                }
            }
        }
        // Supervise.
        let started = Instant::now();
        let failed = loop {
            let sig = stop.load(Ordering::SeqCst);
            if sig != 0 {
                let (first, name) = if sig == signal_hook::consts::SIGINT as usize {
                    (Signal::INT, "SIGINT")
                } else {
                    (Signal::TERM, "SIGTERM")
                };
                log(&format!("{name} received: forwarding it to every worker"));
                stop_all(&mut workers, o.grace, first);
                return Err(Error::Interrupted);
            }
            let mut failed = Vec::new();
            for w in workers.iter_mut() {
                if w.status.is_none()
                    && let Ok(Some(s)) = w.child.try_wait()
                {
                    w.status = Some(s);
                    if !s.success() {
                        failed.push((w.name.clone(), s));
                    }
                }
            }
            if !failed.is_empty() {
                // A worker killed by a signal is the cause; the ones that then lost their
                // peer exit with an error code in the same instant.
                failed.sort_by_key(|(_, s)| s.code().is_some());
                break Some(failed.swap_remove(0));
            }
            // Done when every worker is (servers exit on their own once told, or are stopped).
            if workers.iter().all(|w| w.server || w.status.is_some()) {
                break None;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let Some((name, status)) = failed else {
            // Embedding servers exit by themselves once the run is committed: a moment for
            // that before stopping any still there.
            let t = Instant::now();
            while t.elapsed() < o.grace.min(Duration::from_secs(5)) {
                let mut live = false;
                for w in workers
                    .iter_mut()
                    .filter(|w| w.server && w.status.is_none())
                {
                    match w.child.try_wait() {
                        Ok(Some(s)) => w.status = Some(s),
                        _ => live = true,
                    }
                }
                if !live {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            stop_all(&mut workers, o.grace, Signal::TERM);
            return Ok(());
        };
        let what = format!("{name} {}", describe(status));
        let uptime = started.elapsed();
        log(&format!("{what}: stopping the other workers"));
        let t = Instant::now();
        stop_all(&mut workers, o.grace, Signal::TERM);
        // A program that exits with an error as it starts (a typo, a missing module, bad
        // arguments) would only fail the same way again: no restart storm. Deaths by a
        // signal (kill -9, the OOM killer) are restarted whenever they come.
        if status.code().is_some() && uptime < o.startup_window {
            failures.push(format!("attempt {}: {what}", attempt + 1));
            return Err(Error::Failed(format!(
                "{what} {:.1} s after starting, within the start-up window of {:.0} s: not restarting, it would fail the same way ({})",
                uptime.as_secs_f64(),
                o.startup_window.as_secs_f64(),
                failures.join("; ")
            )));
        }
        log(&format!(
            "all workers stopped in {:.1}s",
            t.elapsed().as_secs_f64()
        ));
        failures.push(format!("attempt {}: {what}", attempt + 1));
    }
    Err(Error::Failed(format!(
        "workers failed {} time(s), more than --max-restarts {} allows: {}",
        failures.len(),
        o.max_restarts,
        failures.join("; ")
    )))
}

/// In the launcher's child, for a program that is not tusk (`tusk launch -- python train.py`):
/// ask the kernel to SIGKILL this process when the launcher dies, then become `program`
/// (the request survives `exec`). A tusk worker watches its launcher itself
/// ([`exit_with_launcher`]); any other program could not. Returns only on failure.
pub fn exec_worker(program: &std::ffi::OsStr, args: &[std::ffi::OsString]) -> Error {
    use std::os::unix::process::CommandExt as _;
    let _ = rustix::process::set_parent_process_death_signal(Some(Signal::KILL));
    // The launcher may have died before the request was made.
    if let Some(parent) = std::env::var(PARENT_VAR)
        .ok()
        .and_then(|p| p.parse::<i32>().ok())
        && rustix::process::getppid().map_or(0, |p| p.as_raw_nonzero().get()) != parent
    {
        return Error::Failed(format!("the launcher (pid {parent}) is gone"));
    }
    let e = Command::new(program).args(args).exec();
    Error::Spawn {
        rank: std::env::var("RANK")
            .ok()
            .and_then(|r| r.parse().ok())
            .unwrap_or(0),
        program: program.to_string_lossy().into_owned(),
        source: e,
    }
}

/// Finds `program` as a shell would: a name with a `/` as it is, any other on `PATH`. Only
/// executable files count.
pub fn find_program(program: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt as _;
    let executable = |p: &std::path::Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.contains('/') {
        let p = PathBuf::from(program);
        return executable(&p).then_some(p);
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(program))
        .find(|p| executable(p))
}

/// In a worker started by [`launch`]: exit when the launcher is gone (killed with SIGKILL, it
/// cannot stop its workers itself). Does nothing elsewhere.
pub fn exit_with_launcher() {
    let Some(parent) = std::env::var(PARENT_VAR)
        .ok()
        .and_then(|p| p.parse::<i32>().ok())
    else {
        return;
    };
    let _ = std::thread::Builder::new()
        .name("tusk-launcher-watch".into())
        .spawn(move || {
            loop {
                let now = rustix::process::getppid().map_or(0, |p| p.as_raw_nonzero().get());
                if now != parent {
                    eprintln!("the launcher (pid {parent}) is gone: stopping this worker");
                    std::process::exit(1);
                }
                std::thread::sleep(Duration::from_millis(500));
            }
        });
}

#[cfg(test)]
mod device_tests {
    use super::visible_devices;

    #[test]
    fn workers_get_disjoint_devices() {
        assert_eq!(visible_devices(None, 0, 2).unwrap(), "0,1");
        assert_eq!(visible_devices(None, 1, 2).unwrap(), "2,3");
        assert_eq!(visible_devices(Some("4,5,6,7"), 1, 2).unwrap(), "6,7");
        assert_eq!(
            visible_devices(Some("GPU-a, GPU-b"), 1, 1).unwrap(),
            "GPU-b"
        );
        let e = visible_devices(Some("0,1"), 1, 2).unwrap_err().to_string();
        assert!(e.contains("lists 2"), "{e}");
    }
}
