//! Who is who: rank, world size and rank 0's address, from flags or from whichever
//! scheduler started the process.
//!
//! Flags win field by field. Otherwise the first scheduler whose variables are present
//! decides, in this order: torchrun (`RANK`, `WORLD_SIZE`, `LOCAL_RANK`, `LOCAL_WORLD_SIZE`,
//! `MASTER_ADDR`, `MASTER_PORT`, and the `PET_*` forms of its options), OpenMPI
//! (`OMPI_COMM_WORLD_RANK`/`_SIZE`/`_LOCAL_RANK`/`_LOCAL_SIZE`), Horovod (`HOROVOD_RANK`,
//! `HOROVOD_SIZE`, `HOROVOD_LOCAL_RANK`, `HOROVOD_LOCAL_SIZE`), Slurm (`SLURM_PROCID`,
//! `SLURM_NTASKS`, `SLURM_LOCALID`; rank 0 is the first host of `SLURM_JOB_NODELIST`),
//! TensorFlow's `TF_CONFIG` (chief first, then workers), and Kubernetes indexed Jobs
//! (`JOB_COMPLETION_INDEX` with `WORLD_SIZE`). Where a scheduler gives no master,
//! `MASTER_ADDR` / `MASTER_PORT` (or the flags) must.

use serde_json::Value;

use crate::{Error, Result};

/// Port rank 0 listens on when nothing says otherwise (torchrun's default).
pub const DEFAULT_PORT: u16 = 29500;

/// This process's place in the job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct World {
    /// Global rank, `0..world_size`.
    pub rank: usize,
    /// Number of ranks.
    pub world_size: usize,
    /// Rank among the processes of this host.
    pub local_rank: usize,
    /// Processes on this host (1 when the scheduler does not say).
    pub local_world_size: usize,
    /// Host name or address of rank 0.
    pub master_addr: String,
    /// Port rank 0 listens on.
    pub master_port: u16,
    /// Where rank and size came from, e.g. `flags`, `torchrun`, `slurm` (for the log).
    pub source: String,
}

/// Values given on the command line.
#[derive(Debug, Clone, Default)]
pub struct Flags {
    /// `--rank`.
    pub rank: Option<usize>,
    /// `--world-size`.
    pub world_size: Option<usize>,
    /// `--master-addr`.
    pub master_addr: Option<String>,
    /// `--master-port`.
    pub master_port: Option<u16>,
}

fn bad(source: &str, message: impl Into<String>) -> Error {
    Error::World {
        source_name: source.to_string(),
        message: message.into(),
    }
}

struct Env<'a>(&'a dyn Fn(&str) -> Option<String>);

impl Env<'_> {
    fn get(&self, k: &str) -> Option<String> {
        (self.0)(k)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    }

    fn num(&self, k: &str) -> Result<Option<usize>> {
        self.get(k)
            .map(|v| {
                v.parse::<usize>()
                    .map_err(|_| bad(k, format!("`{v}` is not a non-negative integer")))
            })
            .transpose()
    }

    fn port(&self, k: &str) -> Result<Option<u16>> {
        self.get(k)
            .map(|v| {
                v.parse::<u16>()
                    .ok()
                    .filter(|p| *p > 0)
                    .ok_or_else(|| bad(k, format!("`{v}` is not a port (1-65535)")))
            })
            .transpose()
    }

    /// `MASTER_ADDR` / `MASTER_PORT`, or torchrun's `PET_` forms.
    fn master(&self) -> Result<(Option<String>, Option<u16>)> {
        let addr = self
            .get("MASTER_ADDR")
            .or_else(|| self.get("PET_MASTER_ADDR"));
        let port = match self.port("MASTER_PORT")? {
            Some(p) => Some(p),
            None => self.port("PET_MASTER_PORT")?,
        };
        Ok((addr, port))
    }
}

/// What a scheduler said, before flags and defaults fill the gaps.
struct Found {
    source: &'static str,
    rank: usize,
    world: usize,
    local_rank: Option<usize>,
    local_world: Option<usize>,
    addr: Option<String>,
    port: Option<u16>,
}

/// Resolve this process's [`World`]: `Ok(None)` when neither flags nor any scheduler say
/// that there is more than one process. `env` looks a variable up (`std::env::var` in the
/// binary; a map in tests).
pub fn resolve(flags: &Flags, env: &dyn Fn(&str) -> Option<String>) -> Result<Option<World>> {
    let env = Env(env);
    let found = if flags.rank.is_some() || flags.world_size.is_some() {
        let (Some(rank), Some(world)) = (flags.rank, flags.world_size) else {
            return Err(bad(
                "--rank/--world-size",
                "give both (or neither, to take them from the scheduler's environment)",
            ));
        };
        let (addr, port) = env.master()?;
        Some(Found {
            source: "flags",
            rank,
            world,
            local_rank: env.num("LOCAL_RANK")?,
            local_world: env.num("LOCAL_WORLD_SIZE")?,
            addr,
            port,
        })
    } else {
        from_env(&env)?
    };
    let Some(f) = found else {
        return Ok(None);
    };
    if f.world == 0 {
        return Err(bad(f.source, "the world size is 0"));
    }
    if f.rank >= f.world {
        return Err(bad(
            f.source,
            format!("rank {} is not below the world size {}", f.rank, f.world),
        ));
    }
    let master_addr = match (&flags.master_addr, f.addr) {
        (Some(a), _) => a.clone(),
        (None, Some(a)) => a,
        (None, None) if f.world == 1 => "127.0.0.1".to_string(),
        (None, None) => {
            return Err(bad(
                f.source,
                "no address for rank 0: pass --master-addr or set MASTER_ADDR",
            ));
        }
    };
    let local_world = f.local_world.unwrap_or(1).max(1);
    let local_rank = f.local_rank.unwrap_or(0);
    Ok(Some(World {
        rank: f.rank,
        world_size: f.world,
        local_rank,
        local_world_size: local_world,
        master_addr,
        master_port: flags.master_port.or(f.port).unwrap_or(DEFAULT_PORT),
        source: f.source.to_string(),
    }))
}

fn from_env(env: &Env<'_>) -> Result<Option<Found>> {
    // torchrun (and anything that imitates it: tusk launch, Kubeflow's PyTorchJob).
    if let Some(rank) = env.num("RANK")? {
        let world = match env.num("WORLD_SIZE")? {
            Some(w) => w,
            None => match (env.num("PET_NNODES")?, env.num("PET_NPROC_PER_NODE")?) {
                (Some(a), Some(b)) => a * b,
                _ => return Err(bad("RANK", "set, but WORLD_SIZE is not")),
            },
        };
        let (addr, port) = env.master()?;
        return Ok(Some(Found {
            source: "torchrun",
            rank,
            world,
            local_rank: env.num("LOCAL_RANK")?,
            local_world: match env.num("LOCAL_WORLD_SIZE")? {
                Some(l) => Some(l),
                None => env.num("PET_NPROC_PER_NODE")?,
            },
            addr,
            port,
        }));
    }
    for (source, prefix) in [("openmpi", "OMPI_COMM_WORLD_"), ("horovod", "HOROVOD_")] {
        let rank_key = format!("{prefix}RANK");
        if let Some(rank) = env.num(&rank_key)? {
            let size_key = format!("{prefix}SIZE");
            let world = env
                .num(&size_key)?
                .ok_or_else(|| bad(&rank_key, format!("set, but {size_key} is not")))?;
            let (addr, port) = env.master()?;
            return Ok(Some(Found {
                source,
                rank,
                world,
                local_rank: env.num(&format!("{prefix}LOCAL_RANK"))?,
                local_world: env.num(&format!("{prefix}LOCAL_SIZE"))?,
                addr,
                port,
            }));
        }
    }
    if let Some(rank) = env.num("SLURM_PROCID")? {
        let world = env
            .num("SLURM_NTASKS")?
            .or(env.num("SLURM_NPROCS")?)
            .ok_or_else(|| bad("SLURM_PROCID", "set, but SLURM_NTASKS is not"))?;
        let (addr, port) = env.master()?;
        let addr = match addr {
            Some(a) => Some(a),
            None => match env
                .get("SLURM_JOB_NODELIST")
                .or_else(|| env.get("SLURM_NODELIST"))
            {
                Some(list) => Some(
                    expand_nodelist(&list)
                        .map_err(|m| bad("SLURM_JOB_NODELIST", m))?
                        .into_iter()
                        .next()
                        .ok_or_else(|| bad("SLURM_JOB_NODELIST", "names no host"))?,
                ),
                None => None,
            },
        };
        // Jobs sharing a node must not share a port: derive it from the job id.
        let port = match (port, env.num("SLURM_JOB_ID")?) {
            (Some(p), _) => Some(p),
            (None, Some(id)) => Some(20000 + (id % 20000) as u16),
            (None, None) => None,
        };
        return Ok(Some(Found {
            source: "slurm",
            rank,
            world,
            local_rank: env.num("SLURM_LOCALID")?,
            local_world: env
                .get("SLURM_NTASKS_PER_NODE")
                .and_then(|v| v.parse::<usize>().ok()),
            addr,
            port,
        }));
    }
    if let Some(tf) = env.get("TF_CONFIG") {
        return from_tf_config(&tf, env).map(Some);
    }
    if let Some(rank) = env.num("JOB_COMPLETION_INDEX")? {
        let world = env.num("WORLD_SIZE")?.ok_or_else(|| {
            bad(
                "JOB_COMPLETION_INDEX",
                "set (Kubernetes indexed Job), but WORLD_SIZE is not: set it to the Job's completions",
            )
        })?;
        let (addr, port) = env.master()?;
        return Ok(Some(Found {
            source: "kubernetes",
            rank,
            world,
            local_rank: Some(0),
            local_world: Some(1),
            addr,
            port,
        }));
    }
    Ok(None)
}

fn from_tf_config(text: &str, env: &Env<'_>) -> Result<Found> {
    const K: &str = "TF_CONFIG";
    let v: Value = serde_json::from_str(text).map_err(|e| bad(K, format!("not JSON: {e}")))?;
    let hosts = |role: &str| -> Vec<String> {
        v["cluster"][role]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|h| h.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let (chief, workers) = (hosts("chief"), hosts("worker"));
    let all: Vec<String> = chief.iter().chain(&workers).cloned().collect();
    if all.is_empty() {
        return Err(bad(K, "cluster has neither `chief` nor `worker` tasks"));
    }
    let role = v["task"]["type"]
        .as_str()
        .ok_or_else(|| bad(K, "task.type is missing"))?;
    let index = v["task"]["index"]
        .as_u64()
        .ok_or_else(|| bad(K, "task.index is missing"))? as usize;
    let rank = match role {
        "chief" | "master" => index,
        "worker" => chief.len() + index,
        other => {
            return Err(bad(
                K,
                format!(
                    "task type `{other}` is not a training worker (chief and worker tasks train; `ps` tasks run `tusk embedding-server`)"
                ),
            ));
        }
    };
    if rank >= all.len() {
        return Err(bad(
            K,
            format!("task {role}:{index} is not in the cluster's task lists"),
        ));
    }
    let (host, port) = split_host_port(&all[0]).map_err(|m| bad(K, m))?;
    let (addr, env_port) = env.master()?;
    Ok(Found {
        source: "tf_config",
        rank,
        world: all.len(),
        local_rank: None,
        local_world: None,
        addr: addr.or(Some(host)),
        port: env_port.or(Some(port)),
    })
}

/// The embedding servers of a `TF_CONFIG` cluster: its `ps` tasks, in index order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PsCluster {
    /// `host:port` of `ps` task `i` (shard `i`).
    pub servers: Vec<String>,
    /// Training tasks (`chief` and `worker`).
    pub workers: usize,
    /// This task's shard, when this task is a `ps`.
    pub this_server: Option<usize>,
}

/// The `ps` tasks of a `TF_CONFIG`, if it has any.
pub fn tf_config_ps(text: &str) -> Result<Option<PsCluster>> {
    const K: &str = "TF_CONFIG";
    let v: Value = serde_json::from_str(text).map_err(|e| bad(K, format!("not JSON: {e}")))?;
    let count = |role: &str| v["cluster"][role].as_array().map_or(0, Vec::len);
    let servers: Vec<String> = v["cluster"]["ps"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|h| h.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    if servers.is_empty() {
        return Ok(None);
    }
    let this_server = match v["task"]["type"].as_str() {
        Some("ps") => {
            let i = v["task"]["index"]
                .as_u64()
                .ok_or_else(|| bad(K, "task.index is missing"))? as usize;
            if i >= servers.len() {
                return Err(bad(K, format!("task ps:{i} is not in cluster.ps")));
            }
            Some(i)
        }
        _ => None,
    };
    Ok(Some(PsCluster {
        servers,
        workers: count("chief") + count("worker"),
        this_server,
    }))
}

fn split_host_port(s: &str) -> std::result::Result<(String, u16), String> {
    let (h, p) = s
        .rsplit_once(':')
        .ok_or_else(|| format!("`{s}` is not host:port"))?;
    let port = p
        .parse::<u16>()
        .map_err(|_| format!("`{s}`: `{p}` is not a port"))?;
    Ok((
        h.trim_start_matches('[').trim_end_matches(']').to_string(),
        port,
    ))
}

/// Expand Slurm's compressed host list, e.g. `gpu[01-03,07],login1` →
/// `gpu01 gpu02 gpu03 gpu07 login1`; several bracket groups in one name multiply
/// (`r[1-2]n[1-2]` → `r1n1 r1n2 r2n1 r2n2`); zero padding follows the lower bound.
pub fn expand_nodelist(list: &str) -> std::result::Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut depth = 0;
    let mut start = 0;
    let bytes = list.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'[' => depth += 1,
            b']' => {
                if depth == 0 {
                    return Err(format!("`{list}`: `]` without `[`"));
                }
                depth -= 1;
            }
            b',' if depth == 0 => {
                expand_one(&list[start..i], &mut out)?;
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err(format!("`{list}`: `[` without `]`"));
    }
    expand_one(&list[start..], &mut out)?;
    Ok(out)
}

fn expand_one(name: &str, out: &mut Vec<String>) -> std::result::Result<(), String> {
    let name = name.trim();
    if name.is_empty() {
        return Ok(());
    }
    let Some(open) = name.find('[') else {
        out.push(name.to_string());
        return Ok(());
    };
    let close = open
        + name[open..]
            .find(']')
            .ok_or_else(|| format!("`{name}`: `[` without `]`"))?;
    let (prefix, body, rest) = (&name[..open], &name[open + 1..close], &name[close + 1..]);
    let mut tails = Vec::new();
    expand_one(rest, &mut tails)?;
    if tails.is_empty() {
        tails.push(String::new());
    }
    for part in body.split(',') {
        let part = part.trim();
        let (lo, hi) = part.split_once('-').unwrap_or((part, part));
        let width = lo.len();
        let parse = |s: &str| {
            s.parse::<u64>()
                .map_err(|_| format!("`{name}`: `{part}` is not a number or range"))
        };
        let (a, b) = (parse(lo)?, parse(hi)?);
        if b < a || b - a > 100_000 {
            return Err(format!("`{name}`: bad range `{part}`"));
        }
        for k in a..=b {
            for t in &tails {
                out.push(format!("{prefix}{k:0width$}{t}"));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn with(vars: &[(&str, &str)], flags: &Flags) -> Result<Option<World>> {
        let m: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        resolve(flags, &move |k| m.get(k).cloned())
    }

    fn env(vars: &[(&str, &str)]) -> World {
        with(vars, &Flags::default()).unwrap().unwrap()
    }

    #[test]
    fn nothing_set_is_one_process() {
        assert_eq!(with(&[], &Flags::default()).unwrap(), None);
    }

    #[test]
    fn torchrun() {
        let w = env(&[
            ("RANK", "5"),
            ("WORLD_SIZE", "8"),
            ("LOCAL_RANK", "1"),
            ("LOCAL_WORLD_SIZE", "4"),
            ("MASTER_ADDR", "node0"),
            ("MASTER_PORT", "1234"),
        ]);
        assert_eq!(
            w,
            World {
                rank: 5,
                world_size: 8,
                local_rank: 1,
                local_world_size: 4,
                master_addr: "node0".into(),
                master_port: 1234,
                source: "torchrun".into()
            }
        );
        let w = env(&[
            ("RANK", "3"),
            ("PET_NNODES", "2"),
            ("PET_NPROC_PER_NODE", "2"),
            ("PET_MASTER_ADDR", "m"),
            ("PET_MASTER_PORT", "9"),
        ]);
        assert_eq!((w.world_size, w.local_world_size), (4, 2));
        assert_eq!((w.master_addr.as_str(), w.master_port), ("m", 9));
    }

    #[test]
    fn flags_win_over_the_environment() {
        let flags = Flags {
            rank: Some(1),
            world_size: Some(2),
            master_addr: Some("10.0.0.1".into()),
            master_port: Some(7000),
        };
        let w = with(
            &[("RANK", "0"), ("WORLD_SIZE", "9"), ("MASTER_ADDR", "x")],
            &flags,
        )
        .unwrap()
        .unwrap();
        assert_eq!((w.rank, w.world_size), (1, 2));
        assert_eq!((w.master_addr.as_str(), w.master_port), ("10.0.0.1", 7000));
        assert_eq!(w.source, "flags");
        let half = Flags {
            rank: Some(1),
            ..Flags::default()
        };
        let e = with(&[], &half).unwrap_err().to_string();
        assert!(e.contains("--rank/--world-size"), "{e}");
    }

    #[test]
    fn openmpi_and_horovod_need_a_master() {
        let vars = [
            ("OMPI_COMM_WORLD_RANK", "1"),
            ("OMPI_COMM_WORLD_SIZE", "2"),
            ("OMPI_COMM_WORLD_LOCAL_RANK", "1"),
            ("OMPI_COMM_WORLD_LOCAL_SIZE", "2"),
        ];
        let e = with(&vars, &Flags::default()).unwrap_err().to_string();
        assert!(e.contains("openmpi") && e.contains("MASTER_ADDR"), "{e}");
        let mut v = vars.to_vec();
        v.push(("MASTER_ADDR", "h"));
        let w = env(&v);
        assert_eq!(
            (w.rank, w.world_size, w.local_rank, w.local_world_size),
            (1, 2, 1, 2)
        );
        assert_eq!(
            (w.source.as_str(), w.master_port),
            ("openmpi", DEFAULT_PORT)
        );
        let w = env(&[
            ("HOROVOD_RANK", "2"),
            ("HOROVOD_SIZE", "3"),
            ("HOROVOD_LOCAL_RANK", "0"),
            ("MASTER_ADDR", "h"),
        ]);
        assert_eq!((w.rank, w.world_size, w.source.as_str()), (2, 3, "horovod"));
    }

    #[test]
    fn slurm_master_is_the_first_node() {
        let w = env(&[
            ("SLURM_PROCID", "3"),
            ("SLURM_NTASKS", "4"),
            ("SLURM_LOCALID", "1"),
            ("SLURM_NTASKS_PER_NODE", "2"),
            ("SLURM_JOB_NODELIST", "gpu[07-08],cpu1"),
            ("SLURM_JOB_ID", "123456"),
        ]);
        assert_eq!(
            (w.rank, w.world_size, w.local_rank, w.local_world_size),
            (3, 4, 1, 2)
        );
        assert_eq!(w.master_addr, "gpu07");
        assert_eq!(w.master_port, 20000 + (123456 % 20000) as u16);
        assert_eq!(w.source, "slurm");
        let w = env(&[
            ("SLURM_PROCID", "0"),
            ("SLURM_NTASKS", "2"),
            ("SLURM_JOB_NODELIST", "a"),
            ("MASTER_PORT", "4000"),
        ]);
        assert_eq!((w.master_addr.as_str(), w.master_port), ("a", 4000));
    }

    #[test]
    fn nodelists_expand() {
        let e = |s: &str| expand_nodelist(s).unwrap().join(" ");
        assert_eq!(e("gpu[01-03,07]"), "gpu01 gpu02 gpu03 gpu07");
        assert_eq!(e("n1,n[3-4],x"), "n1 n3 n4 x");
        assert_eq!(
            e("r[1-2]n[08-09]-ib"),
            "r1n08-ib r1n09-ib r2n08-ib r2n09-ib"
        );
        assert_eq!(e("node[9-11]"), "node9 node10 node11");
        assert_eq!(e("node[098-100]"), "node098 node099 node100");
        assert!(expand_nodelist("gpu[01-").is_err());
        assert!(expand_nodelist("gpu[a-b]").is_err());
        assert!(expand_nodelist("gpu]").is_err());
        assert!(expand_nodelist("g[5-1]").is_err());
    }

    #[test]
    fn tf_config_puts_the_chief_first() {
        let tf = r#"{"cluster": {"chief": ["c0:2222"], "worker": ["w0:2222", "w1:2222"], "ps": ["p:1"]},
                     "task": {"type": "worker", "index": 1}}"#;
        let w = env(&[("TF_CONFIG", tf)]);
        assert_eq!((w.rank, w.world_size), (2, 3));
        assert_eq!((w.master_addr.as_str(), w.master_port), ("c0", 2222));
        assert_eq!(w.source, "tf_config");
        let tf =
            r#"{"cluster": {"worker": ["w0:5", "w1:5"]}, "task": {"type": "worker", "index": 0}}"#;
        assert_eq!(env(&[("TF_CONFIG", tf)]).rank, 0);
        let tf = r#"{"cluster": {"worker": ["w0:5"], "ps": ["p:1"]}, "task": {"type": "ps", "index": 0}}"#;
        let e = with(&[("TF_CONFIG", tf)], &Flags::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("`ps`"), "{e}");
        let e = with(&[("TF_CONFIG", "{")], &Flags::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("TF_CONFIG") && e.contains("JSON"), "{e}");
    }

    #[test]
    fn tf_config_ps_tasks_are_embedding_servers() {
        let tf = r#"{"cluster": {"chief": ["c:1"], "worker": ["w:2", "w:3"], "ps": ["p0:7000", "p1:7000"]}, "task": {"type": "ps", "index": 1}}"#;
        let ps = tf_config_ps(tf).unwrap().unwrap();
        assert_eq!(ps.servers, ["p0:7000", "p1:7000"]);
        assert_eq!((ps.workers, ps.this_server), (3, Some(1)));
        let e = with(&[("TF_CONFIG", tf)], &Flags::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("tusk embedding-server"), "{e}");
        let worker = tf.replace(r#""type": "ps""#, r#""type": "worker""#);
        assert_eq!(tf_config_ps(&worker).unwrap().unwrap().this_server, None);
        assert_eq!(env(&[("TF_CONFIG", &worker)]).rank, 2);
        assert!(
            tf_config_ps(r#"{"cluster": {"worker": ["w:1"]}}"#)
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn kubernetes_indexed_job() {
        let w = env(&[
            ("JOB_COMPLETION_INDEX", "2"),
            ("WORLD_SIZE", "4"),
            ("MASTER_ADDR", "train-0.train"),
        ]);
        assert_eq!(
            (w.rank, w.world_size, w.source.as_str()),
            (2, 4, "kubernetes")
        );
        let e = with(&[("JOB_COMPLETION_INDEX", "2")], &Flags::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("WORLD_SIZE"), "{e}");
    }

    #[test]
    fn bad_values_name_the_variable() {
        let e = with(&[("RANK", "x"), ("WORLD_SIZE", "2")], &Flags::default())
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("RANK:"), "{e}");
        let e = with(
            &[("RANK", "2"), ("WORLD_SIZE", "2"), ("MASTER_ADDR", "h")],
            &Flags::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("not below"), "{e}");
        let e = with(
            &[
                ("RANK", "0"),
                ("WORLD_SIZE", "2"),
                ("MASTER_ADDR", "h"),
                ("MASTER_PORT", "0"),
            ],
            &Flags::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("MASTER_PORT"), "{e}");
    }
}
