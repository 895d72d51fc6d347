//! `tusk launch`: glue over the `tusk-launch` crate.

use std::time::Duration;

use anyhow::{Result, bail};
use clap::Args;

/// Start N workers of a data-parallel job on this node (and, with --servers S, S embedding
/// servers) and supervise them (torchrun-style): tusk's own `train`, or any program.
///
/// Every worker gets torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE,
/// GROUP_RANK, MASTER_ADDR, MASTER_PORT, TORCHELASTIC_RESTART_COUNT, …), so an unmodified
/// `torch.distributed.init_process_group()` script works, and TUSK_JOB_SECRET (generated when
/// unset; with --nnodes > 1 set it on every node). When a worker dies the others are stopped
/// and the group restarts, at most --max-restarts times: `tusk train` with --resume from the
/// newest committed version, another program with TORCHELASTIC_RESTART_COUNT raised.
/// Examples: `tusk launch -n 4 -- train job.toml --model hdfs://nn:8020/models/ctr`;
/// `tusk launch -n 2 --max-restarts 3 -- python train.py --epochs 5`
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
    /// Seconds: a worker exiting with an error code this soon after its group started ends
    /// the job instead of restarting it (a program failing as it starts fails again; 0:
    /// always restart). Deaths by a signal always restart.
    #[arg(long, default_value_t = 10.0, value_name = "SECS")]
    startup_window: f64,
    /// Give each worker a TF_CONFIG for tf.distribute.MultiWorkerMirroredStrategy (the
    /// cluster's workers, one host:port per rank, and the worker's index).
    #[arg(long)]
    tf_config: bool,
    /// With --tf-config and --nnodes > 1: every node's host, in node-rank order (comma
    /// separated); worker ports are MASTER_PORT+1+servers+local rank on each.
    #[arg(long, value_delimiter = ',', value_name = "HOSTS")]
    node_addrs: Vec<String>,
    /// GPUs per worker. Locally each worker gets its own CUDA_VISIBLE_DEVICES ordinals (worker
    /// k: k·G … k·G+G−1, taken from this process's CUDA_VISIBLE_DEVICES when set), so workers
    /// on one host never share a device; on YARN each container asks for G `yarn.io/gpu`.
    #[arg(long, default_value_t = 0)]
    gpus_per_worker: usize,
    /// Submit the job to YARN instead: the ResourceManager's web address, http://HOST:8088.
    /// Workers (and embedding servers) run in containers; the launcher follows the
    /// application, restarts it from the newest model version at most --max-restarts times,
    /// and exits with its status. Secured clusters: `kinit` first; with HADOOP_CONF_DIR saying
    /// hadoop.security.authentication=kerberos, the containers get HDFS delegation tokens.
    #[arg(long, value_name = "RM_URL", help_heading = "YARN")]
    yarn: Option<String>,
    /// YARN queue.
    #[arg(long, default_value = "default", help_heading = "YARN")]
    queue: String,
    /// Memory per container (workers and servers): 4g, 512m, or MB.
    #[arg(long, default_value = "2g", help_heading = "YARN")]
    worker_memory: String,
    /// Virtual cores per container.
    #[arg(long, default_value_t = 1, help_heading = "YARN")]
    worker_vcores: u64,
    /// Memory of the application master (DistributedShell).
    #[arg(long, default_value = "512m", help_heading = "YARN")]
    am_memory: String,
    /// Where the job's files are staged (HDFS, readable by every NodeManager); default
    /// /user/$USER/.tusk-staging on the HDFS of the --model URL.
    #[arg(long, help_heading = "YARN")]
    staging: Option<String>,
    /// Copy this process's output (rank-0, server-1, …) to stdout while the job runs, as its
    /// container keeps it on the staging file system (about every second; up to its last
    /// 8 MB). `tusk tune --yarn` reads trial metrics this way.
    #[arg(long, value_name = "PROCESS", help_heading = "YARN")]
    follow: Option<String>,
    /// Set KEY=VALUE in every container's environment (repeatable): YARN containers do not
    /// inherit this process's environment, as local workers do.
    #[arg(long = "env", value_name = "KEY=VALUE", help_heading = "YARN")]
    env: Vec<String>,
    /// The application master's CLASSPATH (else $TUSK_YARN_CLASSPATH, else YARN's default
    /// yarn.application.classpath: a stock Hadoop install has DistributedShell there).
    #[arg(long, help_heading = "YARN")]
    yarn_classpath: Option<String>,
    /// The tusk binary the containers run (default: this one).
    #[arg(long, help_heading = "YARN")]
    tusk_binary: Option<std::path::PathBuf>,
    /// Seconds a container waits for its peers' addresses.
    #[arg(long, default_value_t = 300, help_heading = "YARN")]
    rendezvous_timeout: u64,
    /// Local files for every container's working directory (comma separated; each under its
    /// base name). A program's script, its first argument, goes along by itself.
    #[arg(
        long,
        value_delimiter = ',',
        value_name = "FILES",
        help_heading = "YARN"
    )]
    files: Vec<std::path::PathBuf>,
    /// A packed Python environment for the containers: a tar or tar.gz of a venv (or a
    /// conda-pack / venv-pack archive), a local file or a URL on HDFS. Unpacked once per node;
    /// its bin/ leads PATH, so the command's `python` is the environment's.
    #[arg(
        long,
        value_name = "ARCHIVE",
        help_heading = "YARN",
        conflicts_with = "python"
    )]
    python_env: Option<String>,
    /// A Python already installed on every node: runs the command's `python`/`python3`.
    #[arg(long, value_name = "PATH", help_heading = "YARN")]
    python: Option<String>,
    /// What each worker runs, after `--`: a tusk command (`train job.toml --model URL`) or
    /// any program with its arguments (`python train.py …`).
    #[arg(last = true, required = true, value_name = "COMMAND")]
    command: Vec<String>,
}

/// Whether a worker command is a tusk subcommand (else it is a program of its own).
fn is_tusk_command(command: &[String]) -> bool {
    command
        .first()
        .is_some_and(|w| crate::subcommand_names().iter().any(|n| n == w))
}

/// A program of the user's: it must exist before anything starts (a typo is one error
/// line, not a restart storm).
fn user_program(command: &[String]) -> Result<std::path::PathBuf> {
    let name = &command[0];
    tusk_launch::find_program(name).ok_or_else(|| {
        anyhow::anyhow!(if name.contains('/') {
            format!("{name}: no such executable file (the worker command after `--`)")
        } else {
            format!(
                "{name}: not a tusk command and no executable of that name on PATH (the worker command after `--`)"
            )
        })
    })
}

pub fn run(a: LaunchArgs) -> Result<()> {
    let program = std::env::current_exe()?;
    let restart_arg =
        (a.command.first().map(String::as_str) == Some("train")).then(|| "--resume".to_string());
    if let Some(rm) = &a.yarn {
        return run_yarn(rm, &a, program, restart_arg);
    }
    if a.follow.is_some() || !a.env.is_empty() {
        bail!(
            "--follow and --env are for --yarn jobs: local workers inherit this environment and print their output as it comes"
        );
    }
    // Any other program starts through `tusk launch-exec`, which makes the kernel stop it if
    // this launcher is killed outright, then becomes the program.
    let args = if is_tusk_command(&a.command) {
        a.command
    } else {
        let found = user_program(&a.command)?;
        let mut args = vec!["launch-exec".to_string(), "--".into()];
        args.push(found.to_string_lossy().into_owned());
        args.extend(a.command[1..].iter().cloned());
        args
    };
    let opts = tusk_launch::Options {
        nproc_per_node: a.nproc_per_node,
        nnodes: a.nnodes,
        node_rank: a.node_rank,
        master_addr: a.master_addr,
        master_port: a.master_port,
        max_restarts: a.max_restarts,
        program,
        args,
        restart_arg,
        grace: Duration::from_secs_f64(a.grace.max(0.0)),
        servers: a.servers,
        server_args: vec!["embedding-server".into()],
        gpus_per_worker: a.gpus_per_worker,
        startup_window: Duration::from_secs_f64(a.startup_window.max(0.0)),
        tf_config: a.tf_config,
        node_addrs: a.node_addrs,
    };
    tusk_launch::launch(&opts, &mut |line| eprintln!("[launch] {line}"))?;
    Ok(())
}

/// `4g`, `512m`, `1536` (MB) → MB.
fn megabytes(flag: &str, v: &str) -> Result<u64> {
    let t = v.trim().to_ascii_lowercase();
    let (num, mult) = match t.strip_suffix('g') {
        Some(n) => (n, 1024),
        None => (t.strip_suffix('m').unwrap_or(&t), 1),
    };
    num.parse::<u64>()
        .ok()
        .filter(|n| *n > 0)
        .map(|n| n * mult)
        .ok_or_else(|| anyhow::anyhow!("{flag} {v}: expected a size such as 4g, 512m or 2048 (MB)"))
}

/// The user YARN applications run as on an unsecured cluster.
pub fn yarn_user() -> String {
    ["HADOOP_USER_NAME", "USER", "LOGNAME"]
        .iter()
        .find_map(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
        .unwrap_or_else(|| "root".into())
}

fn run_yarn(
    rm: &str,
    a: &LaunchArgs,
    program: std::path::PathBuf,
    restart_arg: Option<String>,
) -> Result<()> {
    if a.nnodes != 1 || a.node_rank != 0 || a.master_addr.is_some() || a.master_port.is_some() {
        anyhow::bail!(
            "--yarn places the workers itself: --nnodes, --node-rank, --master-addr and --master-port do not apply"
        );
    }
    let external = !is_tusk_command(&a.command);
    if !external && (a.python_env.is_some() || a.python.is_some()) {
        anyhow::bail!(
            "--python-env and --python are for a program's workers (`-- python train.py …`), not tusk's own"
        );
    }
    let user = yarn_user();
    let staging = match &a.staging {
        Some(s) => s.clone(),
        None => {
            let model = a
                .command
                .iter()
                .position(|x| x == "--model")
                .and_then(|i| a.command.get(i + 1))
                .filter(|m| m.starts_with("hdfs://") || m.starts_with("webhdfs://"));
            match model {
                Some(m) => {
                    let (scheme, rest) = m.split_once("://").unwrap_or(("hdfs", m));
                    let authority = rest.split('/').next().unwrap_or(rest);
                    format!("{scheme}://{authority}/user/{user}/.tusk-staging")
                }
                None => anyhow::bail!(
                    "--staging is needed: a directory on HDFS every NodeManager can read (it defaults to /user/$USER/.tusk-staging on the HDFS of an hdfs:// --model)"
                ),
            }
        }
    };
    let spec = tusk_yarn::job::JobSpec {
        rm: rm.to_string(),
        user,
        queue: a.queue.clone(),
        name: "tusk".into(),
        workers: a.nproc_per_node,
        servers: a.servers,
        container: tusk_yarn::job::Resources {
            memory_mb: megabytes("--worker-memory", &a.worker_memory)?,
            vcores: a.worker_vcores,
            gpus: a.gpus_per_worker as u64,
        },
        am_memory_mb: megabytes("--am-memory", &a.am_memory)?,
        max_restarts: a.max_restarts,
        staging,
        binary: a.tusk_binary.clone().unwrap_or(program),
        args: a.command.clone(),
        restart_arg,
        external,
        files: a.files.clone(),
        python_env: a.python_env.clone(),
        python: a.python.clone(),
        tf_config: a.tf_config,
        classpath: a
            .yarn_classpath
            .clone()
            .or_else(|| std::env::var("TUSK_YARN_CLASSPATH").ok())
            .unwrap_or_else(|| tusk_yarn::job::DEFAULT_CLASSPATH.to_string()),
        java: "{{JAVA_HOME}}/bin/java".into(),
        rendezvous_timeout: a.rendezvous_timeout,
        poll: Duration::from_millis(500),
        follow: a.follow.clone(),
        env: a
            .env
            .iter()
            .map(|kv| match kv.split_once('=') {
                Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
                _ => Err(anyhow::anyhow!("--env {kv}: expected KEY=VALUE")),
            })
            .collect::<Result<_>>()?,
    };
    tusk_yarn::job::run(&spec, &mut |line| eprintln!("[yarn] {line}"))?;
    Ok(())
}

/// `tusk yarn status|kill`.
#[derive(Debug, clap::Subcommand)]
pub enum YarnCommand {
    /// One line about an application: state, final status, queue, diagnostics.
    Status {
        /// The application, application_<cluster>_<n>.
        app: String,
        /// The ResourceManager's web address (else $TUSK_YARN).
        #[arg(long)]
        yarn: Option<String>,
    },
    /// The output of a job's processes, one application (attempt) of `tusk launch --yarn`:
    /// each container's process writes it to STAGING/logs/APP/ (rank-K.log, server-K.log)
    /// when it ends, whether or not the cluster aggregates logs.
    Logs {
        /// The application, application_<cluster>_<n>.
        app: String,
        /// The job's staging directory (its --staging).
        #[arg(long)]
        staging: String,
        /// Only this process: rank-0, server-1, …
        #[arg(long)]
        only: Option<String>,
    },
    /// Kill an application (YARN stops its containers).
    Kill {
        /// The application.
        app: String,
        /// The ResourceManager's web address (else $TUSK_YARN).
        #[arg(long)]
        yarn: Option<String>,
    },
}

fn rm_url(flag: Option<String>) -> Result<String> {
    flag.or_else(|| std::env::var("TUSK_YARN").ok())
        .ok_or_else(|| anyhow::anyhow!("--yarn http://RM:8088 (or TUSK_YARN) is needed"))
}

pub fn run_yarn_command(c: YarnCommand) -> Result<()> {
    match c {
        YarnCommand::Status { app, yarn } => {
            let yarn = rm_url(yarn)?;
            let r = tusk_yarn::job::status(&yarn, &yarn_user(), &app)?;
            println!(
                "{} {} {} queue {}{}",
                r.id,
                r.state,
                r.final_status,
                r.queue,
                if r.diagnostics.trim().is_empty() {
                    String::new()
                } else {
                    format!(": {}", r.diagnostics.trim().replace('\n', " "))
                }
            );
        }
        YarnCommand::Logs { app, staging, only } => {
            let storage = tusk_storage::Storage::new()?;
            let dir = storage.open(&tusk_yarn::job::logs_url(&staging, &app))?;
            let names: Vec<String> = dir
                .list_names()?
                .into_iter()
                .filter(|n| n.ends_with(".log"))
                .filter(|n| {
                    only.as_ref()
                        .is_none_or(|o| n.trim_end_matches(".log") == o)
                })
                .collect();
            if names.is_empty() {
                anyhow::bail!(
                    "no output of {app} in {}: not a tusk application, a different --staging, or its containers did not start",
                    dir.url()
                );
            }
            use std::io::Write as _;
            let mut out = std::io::stdout().lock();
            for n in names {
                let text = dir.join(&n).read()?;
                let who = n.trim_end_matches(".log");
                for line in String::from_utf8_lossy(&text).lines() {
                    writeln!(out, "[{who}] {line}")?;
                }
            }
        }
        YarnCommand::Kill { app, yarn } => {
            let yarn = rm_url(yarn)?;
            tusk_yarn::job::kill(&yarn, &yarn_user(), &app)?;
            eprintln!("asked YARN to kill {app}");
        }
    }
    Ok(())
}

/// Inside a YARN container (started by `tusk launch --yarn`'s worker script).
#[derive(Debug, clap::Args)]
pub struct ContainerArgs {
    /// Seconds to wait for the peers' addresses.
    #[arg(long, default_value_t = 300)]
    rendezvous_timeout: u64,
    /// Added to the command when the attempt resumes.
    #[arg(long, allow_hyphen_values = true)]
    restart_arg: Option<String>,
    /// The command is a program of its own, not a tusk command.
    #[arg(long)]
    exec: bool,
    /// A Python on the node for the command's `python`.
    #[arg(long)]
    python: Option<String>,
    /// A packed Python environment to unpack and put first on PATH.
    #[arg(long)]
    python_env: Option<String>,
    /// Give each worker a TF_CONFIG.
    #[arg(long)]
    tf_config: bool,
    /// The worker's command.
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

pub fn run_container(a: ContainerArgs) -> Result<()> {
    let program = std::env::current_exe()?;
    let opts = tusk_yarn::container::Options {
        rendezvous_timeout: Duration::from_secs(a.rendezvous_timeout),
        restart_arg: a.restart_arg,
        external: a.exec,
        python: a.python,
        python_env: a.python_env,
        tf_config: a.tf_config,
    };
    let code = tusk_yarn::container::run(
        &program,
        &a.command,
        &["embedding-server".to_string()],
        &opts,
        &mut |line| eprintln!("[yarn-container] {line}"),
    )?;
    if code != 0 {
        std::process::exit(code);
    }
    Ok(())
}

/// `tusk launch-exec -- PROGRAM ARGS…` (started by `tusk launch`, not for direct use).
#[derive(Debug, clap::Args)]
pub struct ExecArgs {
    /// The program and its arguments.
    #[arg(last = true, required = true)]
    command: Vec<std::ffi::OsString>,
}

pub fn run_exec(a: ExecArgs) -> Result<()> {
    Err(tusk_launch::exec_worker(&a.command[0], &a.command[1..]).into())
}
