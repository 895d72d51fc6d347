//! `tusk launch --yarn`: one job = one YARN application per attempt, restarted from the newest
//! model version when a container fails.
//!
//! What is staged (once per job, in `STAGING/tusk-<first application id>/`): `worker`, a bash
//! header that unpacks the tusk binary and the job's config carried after it, then runs
//! `tusk yarn-container` with the job's command. The application master is Hadoop's
//! DistributedShell (its jar is in every Hadoop distribution's `share/hadoop/yarn`, on the
//! default `yarn.application.classpath`): it asks YARN for N + S containers of the requested
//! size (GPUs as the `yarn.io/gpu` resource), has each NodeManager localize `worker` from HDFS
//! and run it. Each attempt gets a rendezvous directory `attempt-K/` there.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use tusk_storage::{Location, Storage};

use crate::rest::{AppReport, ResourceManager};
use crate::{Error, Result};

/// One container's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resources {
    /// Memory, MB.
    pub memory_mb: u64,
    /// Virtual cores.
    pub vcores: u64,
    /// `yarn.io/gpu` devices.
    pub gpus: u64,
}

impl Resources {
    /// DistributedShell's `--container_resources` form.
    pub fn container_resources(&self) -> String {
        let mut s = format!("memory-mb={},vcores={}", self.memory_mb, self.vcores);
        if self.gpus > 0 {
            s.push_str(&format!(",yarn.io/gpu={}", self.gpus));
        }
        s
    }
}

/// YARN's default `yarn.application.classpath` (Hadoop 3), with the configuration directory
/// first: where a stock cluster's NodeManagers find DistributedShell and the cluster's
/// `yarn-site.xml`.
pub const DEFAULT_CLASSPATH: &str = "{{HADOOP_CONF_DIR}}<CPS>{{HADOOP_COMMON_HOME}}/share/hadoop/common/*<CPS>{{HADOOP_COMMON_HOME}}/share/hadoop/common/lib/*<CPS>{{HADOOP_HDFS_HOME}}/share/hadoop/hdfs/*<CPS>{{HADOOP_HDFS_HOME}}/share/hadoop/hdfs/lib/*<CPS>{{HADOOP_YARN_HOME}}/share/hadoop/yarn/*<CPS>{{HADOOP_YARN_HOME}}/share/hadoop/yarn/lib/*";

/// The DistributedShell application master's class.
pub const APP_MASTER: &str =
    "org.apache.hadoop.yarn.applications.distributedshell.ApplicationMaster";

/// A job to run on YARN.
#[derive(Debug, Clone)]
pub struct JobSpec {
    /// The ResourceManager's web address, `http://HOST:PORT`.
    pub rm: String,
    /// `user.name` for the REST calls (unsecured clusters).
    pub user: String,
    /// The queue.
    pub queue: String,
    /// The application name.
    pub name: String,
    /// Worker ranks.
    pub workers: usize,
    /// Embedding servers.
    pub servers: usize,
    /// Each container's size (workers and servers alike).
    pub container: Resources,
    /// The application master's memory, MB.
    pub am_memory_mb: u64,
    /// New attempts after a failed one.
    pub max_restarts: usize,
    /// Where the job's files are staged: a directory URL every NodeManager can read (HDFS).
    pub staging: String,
    /// The tusk binary the containers run.
    pub binary: std::path::PathBuf,
    /// The tusk command of a worker, e.g. `train job.toml --model hdfs://…`. A local config
    /// file as the argument after `train` is carried along; every other path in it must be a
    /// URL the containers can read.
    pub args: Vec<String>,
    /// Added to a worker's command from the second attempt on (`--resume`).
    pub restart_arg: Option<String>,
    /// The worker command is a program of its own (`python train.py …`), not a tusk command.
    /// Its first argument, when a local file (the script), is carried to the containers.
    pub external: bool,
    /// Local files carried to every container's working directory, by base name.
    pub files: Vec<std::path::PathBuf>,
    /// A packed Python environment (a tar or tar.gz of a venv, conda-pack or venv-pack
    /// archive): a local file (staged with the job) or a URL. Unpacked once per node; its
    /// `bin/` leads PATH in the containers.
    pub python_env: Option<String>,
    /// A Python already on the nodes: runs a worker command's `python`/`python3`.
    pub python: Option<String>,
    /// Give every worker a TF_CONFIG (the workers publish their addresses at the rendezvous).
    pub tf_config: bool,
    /// The application master's CLASSPATH ([`DEFAULT_CLASSPATH`] on a stock cluster).
    pub classpath: String,
    /// The java the application master runs with.
    pub java: String,
    /// Seconds a container waits for its peers at the rendezvous.
    pub rendezvous_timeout: u64,
    /// How often the application is polled.
    pub poll: Duration,
    /// A process whose output (its log, e.g. `rank-0`) is copied to this process's stdout
    /// while the job runs, from the snapshots the container keeps on the staging file system
    /// (about every second).
    pub follow: Option<String>,
    /// More environment for every container's process (containers do not inherit the
    /// submitting process's environment).
    pub env: Vec<(String, String)>,
}

/// What a finished job leaves behind.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// The applications submitted, in order.
    pub apps: Vec<String>,
    /// For the last attempt, per slot: `slot role container node` lines.
    pub placements: Vec<String>,
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// A file carried inside the `worker` script, unpacked into the container's working directory.
#[derive(Debug, Clone)]
pub struct Carried {
    /// Its name in the working directory.
    pub name: String,
    /// Its bytes.
    pub bytes: Vec<u8>,
}

/// The header of the self-unpacking `worker` script: bash that cuts the carried files (right
/// after the header, in order) and the tusk binary (the rest) out of the script itself, then
/// runs `tusk yarn-container CONTAINER_ARGS -- ARGS`.
pub fn script_header(
    carried: &[Carried],
    secret: &str,
    container_args: &[String],
    args: &[String],
) -> Vec<u8> {
    let mut cmd = vec!["./tusk".to_string(), "yarn-container".into()];
    cmd.extend(container_args.iter().cloned());
    cmd.push("--".into());
    cmd.extend(args.iter().cloned());
    let cmd: Vec<String> = cmd.iter().map(|a| quote(a)).collect();
    let header = |h: usize| {
        let mut unpack = String::new();
        let mut off = 0usize;
        for c in carried {
            unpack.push_str(&format!(
                "tail -c +$((10#$h + {off} + 1)) \"$0\" | head -c {len} > {name}\n",
                len = c.bytes.len(),
                name = quote(&c.name),
            ));
            off += c.bytes.len();
        }
        format!(
            "#!/bin/bash\n\
             # tusk on YARN, written by `tusk launch --yarn`: unpacks the files and the tusk\n\
             # binary carried after this header, then runs this container's part.\n\
             h={h:010}\n\
             {unpack}\
             tail -c +$((10#$h + {off} + 1)) \"$0\" > tusk\n\
             chmod 700 tusk\n\
             export TUSK_JOB_SECRET={secret}\n\
             exec {cmd}\n\
             exit 127\n",
            cmd = cmd.join(" "),
        )
    };
    let len = header(0).len();
    header(len).into_bytes()
}

/// Writes the whole `worker` script: header, carried files, binary. A streaming write to HDFS
/// can meet `NotReplicatedYetException` when it asks for its next block before the DataNode
/// has reported the last one (hdfs-native does not retry that, Hadoop's own client does): the
/// file is only published when complete, so the whole write is tried again, with backoff.
fn write_script(
    to: &Location,
    binary: &std::path::Path,
    carried: &[Carried],
    header: &[u8],
) -> Result<()> {
    let mut wait = Duration::from_millis(500);
    for attempt in 0.. {
        match write_script_once(to, binary, carried, header) {
            Err(e) if attempt < 5 && e.to_string().contains("NotReplicatedYetException") => {
                std::thread::sleep(wait);
                wait *= 2;
            }
            other => return other,
        }
    }
    unreachable!("the loop returns")
}

fn write_script_once(
    to: &Location,
    binary: &std::path::Path,
    carried: &[Carried],
    header: &[u8],
) -> Result<()> {
    use std::io::Write;
    let io = |what: &str, e: std::io::Error| Error::Io {
        what: format!("{what} {}", to.url()),
        source: e,
    };
    let mut w = to.writer()?;
    w.write_all(header).map_err(|e| io("writing", e))?;
    for c in carried {
        w.write_all(&c.bytes).map_err(|e| io("writing", e))?;
    }
    let mut f = std::fs::File::open(binary).map_err(|e| Error::Io {
        what: format!("reading the tusk binary {}", binary.display()),
        source: e,
    })?;
    std::io::copy(&mut f, &mut w).map_err(|e| io("copying the tusk binary into", e))?;
    w.finish()?;
    Ok(())
}

/// The body of `POST /ws/v1/cluster/apps` for one attempt.
pub fn submission(
    spec: &JobSpec,
    app: &str,
    script: &Location,
    script_meta: tusk_storage::Meta,
    rendezvous: &str,
    attempt: usize,
    tokens: &[(String, crate::tokens::Token)],
) -> serde_json::Value {
    let c = &spec.container;
    let env = [
        ("TUSK_YARN_RENDEZVOUS", rendezvous.to_string()),
        ("TUSK_YARN_WORKERS", spec.workers.to_string()),
        ("TUSK_YARN_SERVERS", spec.servers.to_string()),
        ("TUSK_YARN_RESUME", u8::from(attempt > 0).to_string()),
        ("TUSK_YARN_ATTEMPT", attempt.to_string()),
        ("TUSK_YARN_MAX_RESTARTS", spec.max_restarts.to_string()),
        ("TUSK_YARN_LOGS", logs_url(&spec.staging, app)),
    ];
    let mut command = format!(
        "{java} -Xmx{heap}m {APP_MASTER} --appname {name} --num_containers {n} \
         --container_memory {mem} --container_vcores {vc}",
        java = spec.java,
        heap = (spec.am_memory_mb * 3 / 4).max(64),
        name = quote(&spec.name),
        n = spec.workers + spec.servers,
        mem = c.memory_mb,
        vc = c.vcores,
    );
    if c.gpus > 0 {
        command.push_str(&format!(
            " --container_resources {}",
            c.container_resources()
        ));
    }
    let more = spec.env.iter().map(|(k, v)| (k.as_str(), v.clone()));
    for (k, v) in env.into_iter().chain(more) {
        command.push_str(&format!(" --shell_env {}", quote(&format!("{k}={v}"))));
    }
    command.push_str(" 1><LOG_DIR>/AppMaster.stdout 2><LOG_DIR>/AppMaster.stderr");
    let mut am = json!({
        "commands": { "command": command },
        "environment": { "entry": [
            { "key": "CLASSPATH", "value": spec.classpath },
            { "key": "DISTRIBUTEDSHELLSCRIPTLOCATION", "value": script.url() },
            { "key": "DISTRIBUTEDSHELLSCRIPTTIMESTAMP", "value": script_meta.modified_ms.to_string() },
            { "key": "DISTRIBUTEDSHELLSCRIPTLEN", "value": script_meta.size.to_string() },
        ]},
    });
    if !tokens.is_empty() {
        // The application master's credentials: YARN hands them to it (and DistributedShell
        // on to every container it starts) as the file HADOOP_TOKEN_FILE_LOCATION names.
        let entry: Vec<serde_json::Value> = tokens
            .iter()
            .map(|(alias, t)| json!({ "key": alias, "value": t.to_url_string() }))
            .collect();
        am["credentials"] = json!({ "tokens": { "entry": entry } });
    }
    json!({
        "application-id": app,
        "application-name": spec.name,
        "queue": spec.queue,
        "application-type": "TUSK",
        "unmanaged-AM": false,
        "max-app-attempts": 1,
        "keep-containers-across-application-attempts": false,
        "resource": { "memory": spec.am_memory_mb, "vCores": 1 },
        "am-container-spec": am,
    })
}

/// Checks the requested sizes against the cluster's largest container.
fn check_limits(spec: &JobSpec, app: &crate::rest::NewApp) -> Result<()> {
    let c = &spec.container;
    for (what, mem) in [
        ("--worker-memory", c.memory_mb),
        ("--am-memory", spec.am_memory_mb),
    ] {
        if mem > app.max_memory_mb {
            return Err(Error::Usage(format!(
                "{what} {mem} MB is more than this cluster's largest container, {} MB (yarn.scheduler.maximum-allocation-mb)",
                app.max_memory_mb
            )));
        }
    }
    if c.vcores > app.max_vcores {
        return Err(Error::Usage(format!(
            "--worker-vcores {} is more than this cluster's largest container, {} vcores (yarn.scheduler.maximum-allocation-vcores)",
            c.vcores, app.max_vcores
        )));
    }
    if c.gpus > 0 {
        match app.max_resources.get("yarn.io/gpu") {
            None => {
                return Err(Error::Usage(format!(
                    "--gpus-per-worker {}: this cluster declares no yarn.io/gpu resource (resource types: {}); see the README on enabling YARN's GPU plugin",
                    c.gpus,
                    app.max_resources
                        .keys()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
            Some(&g) if c.gpus > g => {
                return Err(Error::Usage(format!(
                    "--gpus-per-worker {} is more than this cluster's largest container, {g} yarn.io/gpu",
                    c.gpus
                )));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Where the containers of application `app` leave their output (kept after the job).
pub fn logs_url(staging: &str, app: &str) -> String {
    format!("{}/logs/{app}", staging.trim_end_matches('/'))
}

fn read_local(path: &std::path::Path, what: &str) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::Io {
        what: format!("reading {what} {}", path.display()),
        source: e,
    })
}

fn base_name(path: &std::path::Path) -> Result<String> {
    path.file_name()
        .and_then(|n| n.to_str())
        .map(str::to_string)
        .ok_or_else(|| Error::Usage(format!("{}: not a file name", path.display())))
}

/// What the containers get besides the binary: `(files, the worker command as they run it)`.
/// A local config after `train` goes as `tusk-job.toml`; a program's script (its first
/// argument, when a local file) and `--files` go under their base names.
pub fn carried_files(spec: &JobSpec) -> Result<(Vec<Carried>, Vec<String>)> {
    let mut args = spec.args.clone();
    let mut carried: Vec<Carried> = Vec::new();
    let local_file =
        |a: &str| !a.starts_with('-') && !a.contains("://") && std::path::Path::new(a).is_file();
    if !spec.external
        && args.first().map(String::as_str) == Some("train")
        && let Some(cfg) = args.get(1).cloned()
        && !cfg.starts_with('-')
        && !cfg.contains("://")
    {
        let bytes = read_local(std::path::Path::new(&cfg), "the job config")?;
        carried.push(Carried {
            name: "tusk-job.toml".into(),
            bytes,
        });
        args[1] = "tusk-job.toml".into();
    }
    if spec.external
        && let Some(script) = args.get(1).cloned()
        && local_file(&script)
    {
        let path = std::path::Path::new(&script);
        let name = base_name(path)?;
        carried.push(Carried {
            name: name.clone(),
            bytes: read_local(path, "the script")?,
        });
        args[1] = name;
    }
    for f in &spec.files {
        if !f.is_file() {
            return Err(Error::Usage(format!(
                "--files {}: not a file (carry a directory as an archive, or put it on HDFS)",
                f.display()
            )));
        }
        let name = base_name(f)?;
        if carried.iter().any(|c| c.name == name) {
            return Err(Error::Usage(format!(
                "--files {}: a second file named {name} (each file lands in the container's working directory under its base name)",
                f.display()
            )));
        }
        carried.push(Carried {
            name,
            bytes: read_local(f, "--files")?,
        });
    }
    Ok((carried, args))
}

/// Whether the first bytes of a file are a tar archive, plain or gzip-compressed: `Err` names
/// what it looks like instead.
pub fn check_archive(head: &[u8]) -> std::result::Result<(), String> {
    let tar = |b: &[u8]| b.len() >= 262 && &b[257..262] == b"ustar";
    if head.starts_with(&[0x1f, 0x8b]) {
        use std::io::Read as _;
        let mut first = Vec::new();
        let _ = flate2::read::GzDecoder::new(head)
            .take(512)
            .read_to_end(&mut first);
        return if tar(&first) {
            Ok(())
        } else {
            Err("gzip data, but not a tar archive inside".into())
        };
    }
    if tar(head) {
        return Ok(());
    }
    let shown: String = head
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ");
    Err(format!(
        "neither a tar nor a tar.gz archive (its first bytes: {})",
        if shown.is_empty() {
            "none, it is empty"
        } else {
            &shown
        }
    ))
}

/// The Python environment archive as the containers fetch it: a local file is checked and
/// staged under `root`; a URL is checked where it is.
fn stage_python_env(
    env: &str,
    storage: &Storage,
    root: &Location,
    log: &mut dyn FnMut(&str),
) -> Result<String> {
    let bad = |why: String| Error::Usage(format!("--python-env {env}: {why}"));
    if env.contains("://") {
        let loc = storage.open(env)?;
        let size = loc.head().map_err(|e| bad(e.to_string()))?.size;
        let head = loc.read_range(0..size.min(64 << 10))?;
        check_archive(&head).map_err(bad)?;
        return Ok(env.to_string());
    }
    let bytes = read_local(std::path::Path::new(env), "--python-env")?;
    check_archive(&bytes[..bytes.len().min(64 << 10)]).map_err(bad)?;
    let to = root.join("python-env.tar");
    let t = Instant::now();
    to.write(bytes)?;
    log(&format!(
        "staged the Python environment {env} as {} in {:.1} s",
        to.url(),
        t.elapsed().as_secs_f64()
    ));
    Ok(to.url())
}

/// What a job on a secured HDFS needs to get delegation tokens.
struct Security {
    conf: crate::tokens::HadoopConf,
    /// The file systems the job touches (`hdfs://AUTHORITY`).
    authorities: Vec<String>,
    /// The ResourceManager's principal.
    renewer: String,
}

/// `Some` when the Hadoop configuration says HDFS asks for Kerberos: then the job's
/// containers get HDFS delegation tokens for every `hdfs://` file system in the staging
/// directory, the worker command and the carried config, renewable by the ResourceManager.
fn security(
    spec: &JobSpec,
    rm: &ResourceManager,
    config: Option<&[u8]>,
    log: &mut dyn FnMut(&str),
) -> Result<Option<Security>> {
    let conf = crate::tokens::HadoopConf::load()?;
    if !conf.kerberos() {
        return Ok(None);
    }
    let config_text = config.map(String::from_utf8_lossy).unwrap_or_default();
    let authorities = crate::tokens::hdfs_authorities(
        std::iter::once(spec.staging.as_str())
            .chain(spec.args.iter().map(String::as_str))
            .chain(std::iter::once(config_text.as_ref())),
    );
    let file_systems = authorities
        .iter()
        .map(|a| format!("hdfs://{a}"))
        .collect::<Vec<_>>()
        .join(", ");
    const KEY: &str = "yarn.resourcemanager.principal";
    let principal = match conf.get(KEY) {
        Some(p) => p.to_string(),
        None => rm.setting(KEY)?.ok_or_else(|| Error::Token {
            fs: file_systems.clone(),
            reason: format!(
                "HDFS asks for Kerberos (hadoop.security.authentication in {}) but neither it nor the ResourceManager's /conf names {KEY}, the principal that renews the job's tokens",
                conf.source()
            ),
        })?,
    };
    let renewer = crate::tokens::renewer(&principal, rm.host());
    log(&format!(
        "HDFS asks for Kerberos: the containers get delegation tokens for {file_systems}, renewed by {renewer}"
    ));
    Ok(Some(Security {
        conf,
        authorities,
        renewer,
    }))
}

/// Runs the job to its end; SIGINT/SIGTERM kill the running application.
pub fn run(spec: &JobSpec, log: &mut dyn FnMut(&str)) -> Result<Outcome> {
    if spec.workers == 0 {
        return Err(Error::Usage("-n must be at least 1".into()));
    }
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone()).map_err(|e| Error::Io {
            what: "installing a signal handler".into(),
            source: e,
        })?;
    }
    let stop = &stop;
    let rm = ResourceManager::new(&spec.rm, &spec.user)?;
    let version = rm.version()?;
    let storage = Storage::new()?;
    let mut outcome = Outcome::default();
    let mut app = rm.new_application()?;
    check_limits(spec, &app)?;
    log(&format!(
        "ResourceManager {} (Hadoop {version}{}): largest container {} MB, {} vcores",
        rm.url(),
        if rm.negotiations() > 0 {
            ", Kerberos (SPNEGO)"
        } else {
            ""
        },
        app.max_memory_mb,
        app.max_vcores
    ));
    let (carried, args) = carried_files(spec)?;
    let config = carried
        .iter()
        .find(|c| c.name == "tusk-job.toml" && !spec.external)
        .map(|c| c.bytes.clone());
    let security = security(spec, &rm, config.as_deref(), log)?;
    let root = storage.open(&format!(
        "{}/tusk-{}",
        spec.staging.trim_end_matches('/'),
        app.id
    ))?;
    let secret = tusk_launch::new_secret();
    let script = root.join("worker");
    let mut container_args = vec![
        "--rendezvous-timeout".to_string(),
        spec.rendezvous_timeout.to_string(),
    ];
    if let Some(r) = &spec.restart_arg {
        container_args.push(format!("--restart-arg={r}"));
    }
    if spec.external {
        container_args.push("--exec".into());
    }
    if spec.tf_config {
        container_args.push("--tf-config".into());
    }
    if let Some(p) = &spec.python {
        container_args.push(format!("--python={p}"));
    }
    if let Some(env) = &spec.python_env {
        let url = stage_python_env(env, &storage, &root, log)?;
        container_args.push(format!("--python-env={url}"));
    }
    let t = Instant::now();
    let header = script_header(&carried, &secret, &container_args, &args);
    write_script(&script, &spec.binary, &carried, &header)?;
    log(&format!(
        "staged {} ({:.0} MB) in {:.1} s",
        script.url(),
        script.head()?.size as f64 / 1e6,
        t.elapsed().as_secs_f64()
    ));
    let result = attempts(
        spec,
        &rm,
        &root,
        &script,
        &mut app,
        security.as_ref(),
        stop,
        &mut outcome,
        log,
    );
    match root.delete_all() {
        Ok(_) => log(&format!("removed the staging directory {}", root.url())),
        Err(e) => log(&format!("could not remove {}: {e}", root.url())),
    }
    result.map(|()| outcome)
}

#[allow(clippy::too_many_arguments)]
fn attempts(
    spec: &JobSpec,
    rm: &ResourceManager,
    root: &Location,
    script: &Location,
    app: &mut crate::rest::NewApp,
    security: Option<&Security>,
    stop: &Arc<AtomicBool>,
    outcome: &mut Outcome,
    log: &mut dyn FnMut(&str),
) -> Result<()> {
    for attempt in 0..=spec.max_restarts {
        if attempt > 0 {
            *app = rm.new_application()?;
        }
        // DistributedShell renames the script to `worker.sh` when it starts: give every
        // attempt the name it expects.
        let sh = root.join("worker.sh");
        if !script.exists()? && sh.exists()? {
            sh.rename_new(script)?;
        }
        let meta = script.head()?;
        let rendezvous = root.join(&format!("attempt-{attempt}"));
        // Fresh tokens for every application: YARN cancels an application's tokens when it
        // ends.
        let tokens = match security {
            Some(s) => crate::tokens::for_job(&s.authorities, &s.conf, &s.renewer, log)?,
            None => Vec::new(),
        };
        let body = submission(
            spec,
            &app.id,
            script,
            meta,
            &rendezvous.url(),
            attempt,
            &tokens,
        );
        rm.submit(&body)?;
        outcome.apps.push(app.id.clone());
        log(&format!(
            "{} {} as {} ({} worker(s){}, queue {})",
            if attempt == 0 {
                "submitted"
            } else {
                "resubmitted"
            },
            spec.name,
            app.id,
            spec.workers,
            if spec.servers > 0 {
                format!(" + {} embedding server(s)", spec.servers)
            } else {
                String::new()
            },
            spec.queue
        ));
        let mut tail = spec.follow.as_ref().map(|name| LogTail {
            log: root_log(spec, &app.id, name),
            printed: 0,
        });
        let report = follow(rm, &app.id, stop, spec.poll, tail.as_mut(), log)?;
        outcome.placements = placements(&rendezvous, spec);
        for p in &outcome.placements {
            log(p);
        }
        if report.succeeded() {
            log(&format!("{} succeeded", app.id));
            return Ok(());
        }
        let started = !outcome.placements.is_empty();
        let failed = Error::Failed {
            app: app.id.clone(),
            state: report.state.clone(),
            diagnostics: report.diagnostics.trim().to_string(),
        };
        if report.state == "KILLED" || !started || attempt == spec.max_restarts {
            if !started {
                log("no container of the job started: not restarting");
            }
            return Err(failed);
        }
        log(&format!(
            "{failed}; restarting from the newest committed version ({} of {} restarts)",
            attempt + 1,
            spec.max_restarts
        ));
    }
    unreachable!("the loop returns on its last attempt")
}

fn root_log(spec: &JobSpec, app: &str, name: &str) -> Option<Location> {
    Storage::new()
        .and_then(|s| s.open(&format!("{}/{name}.log", logs_url(&spec.staging, app))))
        .ok()
}

/// One process's kept output, copied to stdout as its snapshots grow.
struct LogTail {
    log: Option<Location>,
    printed: usize,
}

impl LogTail {
    fn pump(&mut self) {
        use std::io::Write as _;
        let Some(log) = &self.log else { return };
        // Missing until the process has written something; a failed read is tried again at
        // the next poll.
        let Ok(bytes) = log.read() else { return };
        if bytes.len() < self.printed {
            // The kept tail (the last 8 MB) moved on: start again from its beginning.
            self.printed = 0;
        }
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(&bytes[self.printed..]);
        let _ = out.flush();
        self.printed = bytes.len();
    }
}

/// Polls until the application ends, logging each change of state.
fn follow(
    rm: &ResourceManager,
    id: &str,
    stop: &Arc<AtomicBool>,
    poll: Duration,
    mut tail: Option<&mut LogTail>,
    log: &mut dyn FnMut(&str),
) -> Result<AppReport> {
    let mut last: Option<(String, String)> = None;
    let mut unreachable_since: Option<Instant> = None;
    loop {
        if let Some(t) = tail.as_deref_mut() {
            t.pump();
        }
        if stop.load(Ordering::SeqCst) {
            log(&format!("signal received: killing {id}"));
            rm.kill(id)?;
            return Err(Error::Interrupted(id.to_string()));
        }
        match rm.report(id) {
            Ok(r) => {
                unreachable_since = None;
                let now = (r.state.clone(), r.diagnostics.clone());
                if last.as_ref() != Some(&now) {
                    let d = r.diagnostics.trim();
                    log(&format!(
                        "{id}: {}{}",
                        r.state,
                        if d.is_empty() {
                            String::new()
                        } else {
                            format!(" ({})", d.lines().next().unwrap_or(d))
                        }
                    ));
                    last = Some(now);
                }
                if r.is_final() {
                    // The container writes its last snapshot before it exits.
                    if let Some(t) = tail.as_deref_mut() {
                        t.pump();
                    }
                    return Ok(r);
                }
            }
            // A ResourceManager restarting or failing over: keep asking for a while.
            Err(e @ Error::Unreachable { .. }) => {
                let since = *unreachable_since.get_or_insert_with(Instant::now);
                if since.elapsed() > Duration::from_secs(120) {
                    return Err(e);
                }
            }
            Err(e) => return Err(e),
        }
        std::thread::sleep(poll);
    }
}

/// Who ran where in an attempt, from its rendezvous directory.
fn placements(rendezvous: &Location, spec: &JobSpec) -> Vec<String> {
    let mut out = Vec::new();
    for slot in 0..spec.workers + spec.servers {
        if let Ok(b) = rendezvous.join(&format!("slots/{slot:05}")).read() {
            let text = String::from_utf8_lossy(&b).trim().to_string();
            let role = if slot < spec.servers {
                format!("server {slot}")
            } else {
                format!("rank {}", slot - spec.servers)
            };
            out.push(format!("{role} ran in {text}"));
        }
    }
    out
}

/// `tusk yarn status`: one line about an application.
pub fn status(rm_url: &str, user: &str, id: &str) -> Result<AppReport> {
    ResourceManager::new(rm_url, user)?.report(id)
}

/// `tusk yarn kill`.
pub fn kill(rm_url: &str, user: &str, id: &str) -> Result<()> {
    ResourceManager::new(rm_url, user)?.kill(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_script_header_points_at_its_payload() {
        let carried = [
            Carried {
                name: "tusk-job.toml".into(),
                bytes: b"12345678".to_vec(),
            },
            Carried {
                name: "train.py".into(),
                bytes: b"print(1)\n".to_vec(),
            },
        ];
        let s = script_header(
            &carried,
            "abc",
            &["--restart-arg=--resume".into()],
            &["train".into(), "tusk-job.toml".into(), "it's".into()],
        );
        let text = String::from_utf8_lossy(&s);
        let h: usize = text
            .split("h=")
            .nth(1)
            .and_then(|r| r.get(..10))
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(h, s.len());
        assert!(text.contains("$((10#$h + 0 + 1)) \"$0\" | head -c 8 > 'tusk-job.toml'"));
        assert!(text.contains("$((10#$h + 8 + 1)) \"$0\" | head -c 9 > 'train.py'"));
        assert!(text.contains("$((10#$h + 17 + 1)) \"$0\" > tusk"));
        assert!(text.contains("'it'\\''s'"), "{text}");
        assert!(text.contains("'--restart-arg=--resume' '--' 'train'"));
    }

    #[test]
    fn archives_are_recognised_by_their_bytes() {
        let mut tar = vec![0u8; 1024];
        tar[257..262].copy_from_slice(b"ustar");
        assert!(check_archive(&tar).is_ok());
        let mut gz = Vec::new();
        {
            use std::io::Write as _;
            let mut e = flate2::write::GzEncoder::new(&mut gz, flate2::Compression::fast());
            e.write_all(&tar).unwrap();
            e.finish().unwrap();
        }
        assert!(check_archive(&gz).is_ok());
        let e = check_archive(b"PK\x03\x04 a zip").unwrap_err();
        assert!(e.contains("50 4b 03 04"), "{e}");
        let mut not_tar = Vec::new();
        {
            use std::io::Write as _;
            let mut e = flate2::write::GzEncoder::new(&mut not_tar, flate2::Compression::fast());
            e.write_all(b"hello").unwrap();
            e.finish().unwrap();
        }
        assert!(
            check_archive(&not_tar)
                .unwrap_err()
                .contains("not a tar archive inside")
        );
        assert!(check_archive(b"").unwrap_err().contains("empty"));
    }

    #[test]
    fn limits_name_the_setting() {
        let spec = JobSpec {
            rm: String::new(),
            user: "u".into(),
            queue: "default".into(),
            name: "tusk".into(),
            workers: 2,
            servers: 0,
            container: Resources {
                memory_mb: 8192,
                vcores: 1,
                gpus: 0,
            },
            am_memory_mb: 512,
            max_restarts: 0,
            staging: String::new(),
            binary: "tusk".into(),
            args: vec![],
            restart_arg: None,
            external: false,
            files: vec![],
            python_env: None,
            python: None,
            tf_config: false,
            classpath: DEFAULT_CLASSPATH.into(),
            java: "java".into(),
            rendezvous_timeout: 300,
            poll: Duration::from_secs(1),
            follow: None,
            env: Vec::new(),
        };
        let app = crate::rest::NewApp {
            id: "application_1_0001".into(),
            max_memory_mb: 2048,
            max_vcores: 4,
            max_resources: [("memory-mb".to_string(), 2048), ("vcores".to_string(), 4)].into(),
        };
        let e = check_limits(&spec, &app).unwrap_err().to_string();
        assert!(e.contains("8192 MB") && e.contains("2048 MB"), "{e}");
        let mut gpu = spec.clone();
        gpu.container = Resources {
            memory_mb: 512,
            vcores: 1,
            gpus: 1,
        };
        let e = check_limits(&gpu, &app).unwrap_err().to_string();
        assert!(e.contains("declares no yarn.io/gpu"), "{e}");
    }
}
