//! Test support shared by tusk's crates (dev-only; never a dependency of shipped code).
//!
//! - [`MiniDfs`]: a real HDFS (Hadoop's `MiniDFSCluster`, NameNode + DataNodes with native RPC and
//!   WebHDFS) started from the Maven project in `testing/minidfs`, killed on drop.
//! - [`MiniHBase`]: a real HBase (HBase's own mini cluster: ZooKeeper, a master, one region
//!   server) with its REST gateway and its Thrift gateway in the same JVM, from
//!   `testing/minihbase`, shut down on drop; [`MiniHBase::start_kerberized`] puts the REST
//!   gateway behind Kerberos (SPNEGO) with a MiniKdc ([`MiniKerberos`]).
//! - [`MiniYarn`]: a real YARN (Hadoop's `MiniYARNCluster`: the ResourceManager with its REST
//!   API in one JVM, each NodeManager in a JVM of its own) from `testing/miniyarn`, stopped on
//!   drop; [`MiniYarn::start_kerberized`] puts its web services behind Kerberos (SPNEGO) with a
//!   MiniKdc ([`MiniKerberos`]); [`MiniYarn::start_secured`] secures everything with Kerberos
//!   and adds an HDFS (a MiniDFSCluster in the ResourceManager's JVM).
//! - [`require`]: the one rule for optional external tools: skip loudly on a developer's machine,
//!   fail in CI (`CI=true`) or when the matching `TUSK_REQUIRE_*` variable is set.
//! - [`python_with_tensorflow`]: the Python interpreter that has TensorFlow, for the
//!   compatibility tests in both directions.
//! - [`S3Server`]: a real S3-compatible server (moto's server mode) for `s3://`; [`Azurite`]:
//!   Microsoft's Azure Blob emulator for `az://` / `abfs://`.
//! - [`Proc`]: a child process in its own process group, waited for with a limit and killed
//!   (the whole group) on drop, so a failing test leaves nothing running.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// A seeded SplitMix64 stream: the same test data on every machine, without a `rand`
/// dependency. Call it for the next 64 random bits.
pub fn splitmix(seed: u64) -> impl FnMut() -> u64 {
    let mut s = seed;
    move || {
        s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// Root of the tusk repository (the workspace): the nearest ancestor of the running test's
/// package (`CARGO_MANIFEST_DIR`, set by `cargo test` at run time) or of the working directory
/// that holds `testing/minidfs`. Looked up at run time, not baked in at compile time, because a
/// shared `CARGO_TARGET_DIR` may reuse a build made from another checkout.
pub fn repo_root() -> PathBuf {
    let start = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::current_dir().ok())
        .expect("a manifest dir or a working directory");
    start
        .ancestors()
        .find(|d| d.join("testing/minidfs/pom.xml").is_file())
        .unwrap_or_else(|| panic!("no tusk checkout above {}", start.display()))
        .to_path_buf()
}

/// True when a missing external tool must fail the test instead of skipping it: in CI
/// (`CI=true`) or when `env_var` (e.g. `TUSK_REQUIRE_HDFS`) is set to `1`.
pub fn must_run(env_var: &str) -> bool {
    let set = |k: &str| {
        std::env::var(k)
            .map(|v| v == "1" || v.eq_ignore_ascii_case("true"))
            .unwrap_or(false)
    };
    set("CI") || set(env_var)
}

/// Decide what to do when `what` is unavailable because of `why`: panic (CI or `env_var` set)
/// or print a loud notice and return `None` so the caller can skip.
pub fn require<T>(what: &str, env_var: &str, found: Result<T, String>) -> Option<T> {
    match found {
        Ok(v) => Some(v),
        Err(why) => {
            if must_run(env_var) {
                panic!("{what} is required here (CI=true or {env_var}=1) but unavailable: {why}");
            }
            eprintln!();
            eprintln!("!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!");
            eprintln!("!! SKIPPED: {what} unavailable: {why}");
            eprintln!("!! (set {env_var}=1 or CI=true to make this a failure)");
            eprintln!("!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!");
            None
        }
    }
}

fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

/// Maven (with Java beside it) for a test cluster built from `testing/`, or `None` (skip, see
/// [`require`]; `env_var` is the `TUSK_REQUIRE_*` variable that makes it a failure instead).
fn maven(what: &str, env_var: &str) -> Option<PathBuf> {
    require(
        what,
        env_var,
        match (which("mvn"), which("java")) {
            (Some(m), Some(_)) => Ok(m),
            (None, _) => Err("`mvn` not found on PATH".into()),
            (_, None) => Err("`java` not found on PATH".into()),
        },
    )
}

/// A running MiniDFSCluster. Dropping it shuts the cluster down.
pub struct MiniDfs {
    harness: Harness,
    /// Port of the NameNode's native RPC (`hdfs://127.0.0.1:PORT`; NameNode nn1 in HA).
    pub rpc_port: u16,
    /// Port of the NameNode's HTTP server, which serves WebHDFS.
    pub http_port: u16,
    /// With [`MiniDfsOptions::ha`]: a client `HADOOP_CONF_DIR` naming the nameservice `ns1`
    /// and both of its NameNodes (`hdfs://ns1/...`).
    pub conf_dir: Option<PathBuf>,
}

/// How to shape a [`MiniDfs`] (the default: one DataNode, 1 MiB blocks, one NameNode).
#[derive(Debug, Clone)]
pub struct MiniDfsOptions {
    /// DataNodes (replication is `min(n, 3)`; with more than one, a stopped DataNode is
    /// declared dead within seconds).
    pub data_nodes: usize,
    /// Block size in bytes.
    pub block_size: u64,
    /// Two NameNodes (nn1 active, nn2 standby) in the nameservice `ns1`.
    pub ha: bool,
    /// A stopped DataNode is declared dead only after HDFS's default 10 minutes (as on a real
    /// cluster) instead of within seconds: writers must route around it themselves.
    pub slow_dead: bool,
}

impl Default for MiniDfsOptions {
    fn default() -> Self {
        MiniDfsOptions {
            data_nodes: 1,
            block_size: 1 << 20,
            ha: false,
            slow_dead: false,
        }
    }
}

impl MiniDfs {
    /// Start a cluster with `data_nodes` DataNodes, or skip (see [`require`]) when Java or Maven
    /// is missing. Panics if the cluster fails to start where tools are present: that is a
    /// broken environment, not a reason to skip.
    pub fn start(data_nodes: usize) -> Option<MiniDfs> {
        MiniDfs::start_with(MiniDfsOptions {
            data_nodes,
            ..Default::default()
        })
    }

    /// Start a cluster shaped by `opts` (see [`MiniDfs::start`] for when it skips).
    pub fn start_with(opts: MiniDfsOptions) -> Option<MiniDfs> {
        let mvn = maven("a real HDFS (MiniDFSCluster)", "TUSK_REQUIRE_HDFS")?;
        let project = repo_root().join("testing/minidfs");
        let ha = if opts.ha { " ha" } else { "" };
        let slow_dead = if opts.slow_dead { " slow-dead" } else { "" };
        let mut child = Command::new(mvn)
            .args(["-q", "-B", "-f"])
            .arg(&project)
            .args(["compile", "exec:java"])
            .arg(format!(
                "-Dexec.args={} {}{ha}{slow_dead}",
                opts.data_nodes, opts.block_size
            ))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("failed to spawn mvn for MiniDFS");
        let (ready, replies) = ready_and_replies(&mut child, "MiniDFS", Duration::from_secs(600));
        let field = |key: &str| ready.split_whitespace().find_map(|kv| kv.strip_prefix(key));
        let port = |key: &str| -> u16 {
            field(key)
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("bad MiniDFS ready line: {ready}"))
        };
        Some(MiniDfs {
            rpc_port: port("hdfs="),
            http_port: port("http="),
            conf_dir: field("conf=").map(PathBuf::from),
            harness: Harness {
                child,
                replies: std::sync::Mutex::new(replies),
                what: "MiniDFS",
                grace: Duration::from_secs(5),
            },
        })
    }

    /// Send one fault command to the cluster (`stop-datanode I`, `datanodes PATH`,
    /// `corrupt PATH I|all`, `stop-namenode I`, `restart-namenode I`, `failover FROM TO`; see
    /// `testing/minidfs`) and return what follows `ok` in its answer. Panics on an error
    /// answer or after two minutes without one.
    pub fn command(&mut self, cmd: &str) -> String {
        self.harness.command(cmd)
    }

    /// `hdfs://127.0.0.1:PORT` (no trailing slash).
    pub fn hdfs_url(&self) -> String {
        format!("hdfs://127.0.0.1:{}", self.rpc_port)
    }

    /// `webhdfs://127.0.0.1:PORT` (no trailing slash).
    pub fn webhdfs_url(&self) -> String {
        format!("webhdfs://127.0.0.1:{}", self.http_port)
    }
}

/// A test cluster's JVM driven over stdin/stdout: one command a line, one answer a line
/// (`ok ...` or `error ...`); an empty line (or stdin closing) shuts it down. Dropping it asks
/// for that, waits `grace`, then kills the JVM.
struct Harness {
    child: Child,
    replies: std::sync::Mutex<mpsc::Receiver<String>>,
    /// Names the cluster in panics.
    what: &'static str,
    grace: Duration,
}

impl Harness {
    /// Send `cmd` and return what follows `ok` in the answer. Panics on an error answer or
    /// after two minutes without one.
    fn command(&mut self, cmd: &str) -> String {
        let what = self.what;
        let stdin = self.child.stdin.as_mut().expect("piped stdin");
        stdin
            .write_all(format!("{cmd}\n").as_bytes())
            .and_then(|_| stdin.flush())
            .unwrap_or_else(|e| panic!("{what} is gone: {e}"));
        let reply = self
            .replies
            .lock()
            .unwrap()
            .recv_timeout(Duration::from_secs(120))
            .unwrap_or_else(|_| panic!("{what} did not answer `{cmd}`"));
        match reply.strip_prefix("ok") {
            Some(rest) => rest.trim().to_string(),
            None => panic!("{what} refused `{cmd}`: {reply}"),
        }
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some(mut stdin) = self.child.stdin.take() {
            let _ = stdin.write_all(b"\n");
        }
        // Give the cluster a moment to shut down cleanly, then make sure it is gone.
        let t0 = std::time::Instant::now();
        while t0.elapsed() < self.grace {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running HBase: HBase's own mini cluster (ZooKeeper, a master and one region server, its
/// data in a temporary directory) with the REST gateway and the Thrift gateway in the same JVM,
/// all on 127.0.0.1, from `testing/minihbase`. Dropping it shuts everything down.
pub struct MiniHBase {
    // Dropped first: the JVM (and its KDC) stops before the KDC's directory is removed.
    harness: Harness,
    /// Port of the REST gateway ([`MiniHBase::rest_url`]).
    pub rest_port: u16,
    /// Port of the Thrift gateway: HBase's Thrift 1 API (the `Hbase` service, what happybase
    /// speaks) with the buffered (unframed) transport and the binary protocol, happybase's
    /// defaults.
    pub thrift_port: u16,
    /// ZooKeeper's client port, for HBase's own clients (`hbase.zookeeper.quorum`
    /// `127.0.0.1:PORT`).
    pub zk_port: u16,
    /// The KDC and the user's keytab when the REST gateway requires Kerberos
    /// ([`MiniHBase::start_kerberized`]).
    pub kerberos: Option<MiniKerberos>,
}

impl MiniHBase {
    /// Start one, or skip (see [`require`], `TUSK_REQUIRE_HBASE`) when Java or Maven is
    /// missing. Panics if it fails to start where they are present.
    pub fn start() -> Option<MiniHBase> {
        MiniHBase::launch(false)
    }

    /// Start one whose REST gateway, and only it, requires Kerberos (SPNEGO, HBase's
    /// `hbase.rest.authentication.type=kerberos` with the service principal `HTTP/localhost`),
    /// with a MiniKdc in the cluster's JVM ([`MiniHBase::kerberos`]: the `tusk` user's keytab,
    /// a krb5.conf for MIT's tools). The cluster, its RPC and the Thrift gateway stay
    /// unsecured. Skips like [`MiniHBase::start`], and (see [`require`],
    /// `TUSK_REQUIRE_KERBEROS`) when MIT's `kinit` (Debian: krb5-user) is missing.
    pub fn start_kerberized() -> Option<MiniHBase> {
        MiniHBase::launch(true)
    }

    /// Build and start the harness, with the REST gateway behind SPNEGO when `kerberized`.
    fn launch(kerberized: bool) -> Option<MiniHBase> {
        let mvn = maven(
            "a real HBase (HBase's mini cluster with its REST and Thrift gateways)",
            "TUSK_REQUIRE_HBASE",
        )?;
        let project = repo_root().join("testing/minihbase");
        // Built once per test process, so that one test's `mvn compile` never rewrites
        // target/ while another's JVM starts from it.
        static BUILT: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
        let built = BUILT.get_or_init(|| {
            let o = Command::new(&mvn)
                .args(["-q", "-B", "-f"])
                .arg(&project)
                .arg("compile")
                .output()
                .map_err(|e| format!("failed to run mvn for MiniHBase: {e}"))?;
            if o.status.success() {
                Ok(())
            } else {
                Err(format!(
                    "building testing/minihbase failed:\n{}{}",
                    String::from_utf8_lossy(&o.stdout),
                    String::from_utf8_lossy(&o.stderr)
                ))
            }
        });
        if let Err(e) = built {
            panic!("{e}");
        }
        let kdc = match kerberized {
            true => Some(KdcDir::create("minihbase")?),
            false => None,
        };
        // exec:java runs the cluster in Maven's own JVM; testing/minihbase/.mvn/jvm.config
        // gives it the flags HBase needs on Java 17.
        let mut child = Command::new(mvn)
            .args(["-q", "-B", "-f"])
            .arg(&project)
            .arg("exec:java")
            .args(
                kdc.as_ref()
                    .map(|d| format!("-Dexec.args=kerberos {}", d.0.display())),
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("failed to spawn mvn for MiniHBase");
        let (ready, replies) = ready_and_replies(&mut child, "MiniHBase", Duration::from_secs(600));
        let port = |key: &str| -> u16 {
            ready
                .split_whitespace()
                .find_map(|kv| kv.strip_prefix(key))
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("bad MiniHBase ready line: {ready}"))
        };
        Some(MiniHBase {
            rest_port: port("rest="),
            thrift_port: port("thrift="),
            zk_port: port("zk="),
            kerberos: kdc.map(|d| MiniKerberos::from_ready(d, &ready)),
            harness: Harness {
                child,
                replies: std::sync::Mutex::new(replies),
                what: "MiniHBase",
                grace: Duration::from_secs(60),
            },
        })
    }

    /// The REST gateway (no trailing slash): `http://127.0.0.1:PORT`, or, kerberized,
    /// `http://localhost:PORT` (a SPNEGO client names the service after the host it calls, and
    /// the gateway's key is `HTTP/localhost`).
    pub fn rest_url(&self) -> String {
        let host = match self.kerberos {
            Some(_) => "localhost",
            None => "127.0.0.1",
        };
        format!("http://{host}:{}", self.rest_port)
    }

    /// Send one fault command (`stop-rest`: stop the REST gateway, the cluster keeps running;
    /// `start-rest`: start it again on the same port; `pause-rest MS`: for MS milliseconds it
    /// accepts connections but holds every request; see `testing/minihbase`) and return what
    /// follows `ok` in its answer. Panics on an error answer or after two minutes without one.
    pub fn command(&mut self, cmd: &str) -> String {
        self.harness.command(cmd)
    }
}

/// A running YARN cluster: a MiniYARNCluster ResourceManager and NodeManagers in JVMs of
/// their own, optionally declaring `yarn.io/gpu` devices (a countable resource; no device
/// needs to exist). Dropping it stops the cluster (the NodeManagers stop their containers).
pub struct MiniYarn {
    child: Child,
    /// The ResourceManager's web address, `http://HOST:PORT`.
    pub rm_url: String,
    /// The CLASSPATH an application master needs here: the cluster's configuration directory
    /// (what HADOOP_CONF_DIR is on a real cluster), Hadoop's jars and DistributedShell.
    pub classpath: String,
    /// The cluster's configuration directory (what HADOOP_CONF_DIR is on a real cluster):
    /// `yarn-site.xml` with the ResourceManager's addresses; for a [`MiniYarn::start_secured`]
    /// cluster also `core-site.xml` and `hdfs-site.xml`, each with everything a client needs
    /// (Kerberos, the principals, HDFS's addresses and SASL protection). The NodeManagers of a
    /// secured cluster pass it to their containers as `HADOOP_CONF_DIR`.
    pub conf_dir: PathBuf,
    /// The KDC and the user's keytab when the web services require Kerberos.
    pub kerberos: Option<MiniKerberos>,
    /// The secured cluster's HDFS, `hdfs://localhost:PORT` (no trailing slash), where the user
    /// needs a ticket and containers use the delegation tokens they are given; `None` unless
    /// started with [`MiniYarn::start_secured`].
    pub hdfs: Option<String>,
    /// The secured cluster's WebHDFS (the NameNode's web server, behind SPNEGO as
    /// `HTTP/localhost`), `localhost:PORT`; `None` unless started with
    /// [`MiniYarn::start_secured`].
    pub webhdfs: Option<String>,
}

/// The Kerberos side of a [`MiniYarn::start_kerberized`] or [`MiniYarn::start_secured`]
/// cluster: a MiniKdc (Apache Kerby, in the ResourceManager's JVM) with the principals
/// `HTTP/localhost` (the SPNEGO key of the ResourceManager's and the NameNode's web servers),
/// `tusk` (the user) and, secured, `hdfs/localhost` (the services: NameNode, DataNode,
/// ResourceManager, NodeManagers; the renewer to name in delegation tokens). Of a
/// [`MiniHBase::start_kerberized`] cluster: a MiniKdc in HBase's JVM with `HTTP/localhost`
/// (the REST gateway's key) and `tusk`. Its files live in a temporary directory removed when
/// the cluster is dropped.
pub struct MiniKerberos {
    /// Held to remove it on drop.
    _dir: KdcDir,
    /// A krb5.conf for MIT's tools and libraries (`KRB5_CONFIG`): the KDC over TCP, host
    /// names as written (no DNS canonicalization).
    pub krb5_conf: PathBuf,
    /// The realm, `EXAMPLE.COM`.
    pub realm: String,
    /// The user principal, `tusk@REALM`.
    pub principal: String,
    /// The user's keytab.
    pub keytab: PathBuf,
}

/// A fresh directory for a MiniKdc's files (`krb5.conf`, keytabs, the KDC's database),
/// removed on drop.
struct KdcDir(PathBuf);

impl KdcDir {
    /// Make one for `cluster`'s KDC, or skip (see [`require`], `TUSK_REQUIRE_KERBEROS`) when
    /// MIT's `kinit` is missing: the tests get their tickets with it.
    fn create(cluster: &str) -> Option<KdcDir> {
        require(
            "MIT Kerberos' kinit (Debian: krb5-user)",
            "TUSK_REQUIRE_KERBEROS",
            which("kinit")
                .map(|_| ())
                .ok_or_else(|| "`kinit` not found on PATH".to_string()),
        )?;
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "tusk-{cluster}-krb-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("a directory for the MiniKdc");
        Some(KdcDir(dir))
    }
}

impl Drop for KdcDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl MiniKerberos {
    /// The KDC whose files are in `dir`, as a cluster's `Ready! …` line names them
    /// (`krb5=… realm=… principal=… keytab=…`).
    fn from_ready(dir: KdcDir, ready: &str) -> MiniKerberos {
        let field = |key: &str| -> String {
            ready
                .split_whitespace()
                .find_map(|kv| kv.strip_prefix(key))
                .unwrap_or_else(|| panic!("no {key} in the ready line: {ready}"))
                .to_string()
        };
        MiniKerberos {
            krb5_conf: PathBuf::from(field("krb5=")),
            realm: field("realm="),
            principal: field("principal="),
            keytab: PathBuf::from(field("keytab=")),
            _dir: dir,
        }
    }

    /// `kinit` the user from its keytab into the ticket cache file `cache` (what
    /// `KRB5CCNAME=FILE:<cache>` then names).
    pub fn kinit(&self, cache: &Path) -> Result<(), String> {
        let o = Command::new("kinit")
            .arg("-kt")
            .arg(&self.keytab)
            .arg("-c")
            .arg(format!("FILE:{}", cache.display()))
            .arg(&self.principal)
            .env("KRB5_CONFIG", &self.krb5_conf)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("running kinit: {e}"))?;
        if o.status.success() {
            Ok(())
        } else {
            Err(format!(
                "kinit {}: {}{}",
                self.principal,
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ))
        }
    }
}

impl MiniYarn {
    /// Start a cluster of `nodes` NodeManagers with `gpus` devices each, or skip (see
    /// [`require`]) when Java or Maven is missing.
    pub fn start(nodes: usize, gpus: usize) -> Option<MiniYarn> {
        MiniYarn::launch(nodes, gpus, None)
    }

    /// Start a cluster of `nodes` NodeManagers whose ResourceManager's web services (REST API
    /// and UI) require Kerberos (SPNEGO), with a MiniKdc ([`MiniYarn::kerberos`]); YARN's RPC
    /// stays unsecured. Skips (see [`require`], `TUSK_REQUIRE_KERBEROS`) when Java, Maven or
    /// MIT's `kinit` (Debian: krb5-user) is missing.
    pub fn start_kerberized(nodes: usize) -> Option<MiniYarn> {
        MiniYarn::with_kdc(nodes, "kerberos")
    }

    /// Start a cluster of `nodes` NodeManagers secured with Kerberos throughout
    /// (`hadoop.security.authentication=kerberos`): YARN's and HDFS's RPC, SPNEGO on the
    /// ResourceManager's web services and on WebHDFS, SASL on HDFS's data transfer. It brings a
    /// MiniKdc ([`MiniYarn::kerberos`]) and an HDFS of one DataNode ([`MiniYarn::hdfs`],
    /// [`MiniYarn::webhdfs`]) whose delegation tokens, for the renewer
    /// `hdfs/localhost@REALM`, the ResourceManager renews. Skips like
    /// [`MiniYarn::start_kerberized`].
    pub fn start_secured(nodes: usize) -> Option<MiniYarn> {
        MiniYarn::with_kdc(nodes, "secure")
    }

    /// [`MiniYarn::launch`] in `mode` (`kerberos` or `secure`) with a fresh directory for the
    /// MiniKdc's files, or skip when `kinit` is missing.
    fn with_kdc(nodes: usize, mode: &str) -> Option<MiniYarn> {
        let dir = KdcDir::create("miniyarn")?;
        MiniYarn::launch(nodes, 0, Some((mode, dir)))
    }

    /// Build and start the harness; `kerberos` is the mode after `rm NODES GPUS` (`kerberos` or
    /// `secure`) and the directory for the MiniKdc's files.
    fn launch(nodes: usize, gpus: usize, kerberos: Option<(&str, KdcDir)>) -> Option<MiniYarn> {
        let mvn = maven("a real YARN (MiniYARNCluster)", "TUSK_REQUIRE_HDFS")?;
        let project = repo_root().join("testing/miniyarn");
        // Built once per test process: tests running side by side each ran `mvn compile`, and
        // one JVM could start while the other build rewrote target/ (seen once: the JVM exited
        // at once, before its ready line).
        static BUILT: std::sync::OnceLock<Result<String, String>> = std::sync::OnceLock::new();
        let built = BUILT.get_or_init(|| {
            let o = Command::new(&mvn)
                .args(["-q", "-B", "-f"])
                .arg(&project)
                .args(["compile", "dependency:build-classpath"])
                .output()
                .map_err(|e| format!("failed to run mvn for MiniYARN: {e}"))?;
            if !o.status.success() {
                return Err(format!(
                    "building testing/miniyarn failed:\n{}{}",
                    String::from_utf8_lossy(&o.stdout),
                    String::from_utf8_lossy(&o.stderr)
                ));
            }
            std::fs::read_to_string(project.join("target/classpath.txt"))
                .map(|d| d.trim().to_string())
                .map_err(|e| format!("testing/miniyarn/target/classpath.txt: {e}"))
        });
        let deps = match built {
            Ok(d) => d.as_str(),
            Err(e) => panic!("{e}"),
        };
        let mut child = Command::new("java")
            .args(["--add-opens", "java.base/java.lang=ALL-UNNAMED", "-cp"])
            .arg(format!(
                "{}:{deps}",
                project.join("target/classes").display()
            ))
            .args([
                "tusk.miniyarn.Main",
                "rm",
                &nodes.to_string(),
                &gpus.to_string(),
            ])
            .args(
                kerberos
                    .as_ref()
                    .map(|(mode, d)| [mode.as_ref(), d.0.as_os_str()])
                    .into_iter()
                    .flatten(),
            )
            // MiniYARNCluster writes under target/ of its working directory.
            .current_dir(project.join("target"))
            .process_group(0)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("failed to spawn java for MiniYARN");
        let ready = ready_line(&mut child, "MiniYARN", Duration::from_secs(300));
        let field = |key: &str| -> String {
            ready
                .split_whitespace()
                .find_map(|kv| kv.strip_prefix(key))
                .unwrap_or_else(|| panic!("bad MiniYARN ready line: {ready}"))
                .to_string()
        };
        let secured = matches!(kerberos, Some(("secure", _)));
        let kerberos = kerberos.map(|(_, dir)| MiniKerberos::from_ready(dir, &ready));
        Some(MiniYarn {
            rm_url: field("rm="),
            classpath: format!("{}:{deps}", field("conf=")),
            conf_dir: PathBuf::from(field("conf=")),
            kerberos,
            hdfs: secured.then(|| field("hdfs=")),
            webhdfs: secured.then(|| field("webhdfs=")),
            child,
        })
    }
}

impl Drop for MiniYarn {
    fn drop(&mut self) {
        if let Some(mut stdin) = self.child.stdin.take() {
            let _ = stdin.write_all(b"\n");
        }
        for _ in 0..300 {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        // The JVMs of the NodeManagers are in the same process group.
        let _ = Command::new("kill")
            .args(["-9", "--", &format!("-{}", self.child.id())])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Then the fields: `kerberos` removes the MiniKdc's directory.
    }
}

/// Waits for the `Ready! …` line a test cluster prints on stdout; panics with its last
/// output if it exits first or takes longer than `limit`.
fn ready_line(child: &mut Child, what: &str, limit: Duration) -> String {
    ready_and_replies(child, what, limit).0
}

/// Wait for the child's `Ready! ...` line (returned without the prefix); later lines that
/// start with `ok` or `error` (answers to commands) arrive on the receiver. The child's
/// stdout is drained to its end so it never blocks on a full pipe.
fn ready_and_replies(
    child: &mut Child,
    what: &str,
    limit: Duration,
) -> (String, mpsc::Receiver<String>) {
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    let (reply_tx, replies) = mpsc::channel();
    std::thread::spawn(move || {
        let mut tail = Vec::new();
        let mut ready = false;
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            // Maven writes an ANSI reset (ESC [0m) before the program's first output even in
            // batch mode, so a cluster that prints nothing else starts its ready line with it.
            let line = line.trim_start_matches("\x1b[0m").to_string();
            if let Some(rest) = line.strip_prefix("Ready! ") {
                ready = true;
                let _ = tx.send(Ok(rest.to_string()));
                continue;
            }
            if ready && (line.starts_with("ok") || line.starts_with("error")) {
                let _ = reply_tx.send(line);
                continue;
            }
            tail.push(line);
            if tail.len() > 40 {
                tail.remove(0);
            }
        }
        let _ = tx.send(Err(tail.join("\n")));
    });
    match rx.recv_timeout(limit) {
        Ok(Ok(r)) => (r, replies),
        Ok(Err(tail)) => {
            let _ = child.kill();
            panic!("{what} exited before it was ready; last output:\n{tail}");
        }
        Err(_) => {
            let _ = child.kill();
            panic!("{what} was not ready after {limit:?}");
        }
    }
}

/// The Python interpreter that can `import tensorflow`: `$TUSK_PYTHON`, else the venv that
/// `.ci/run` makes (`$TUSK_CACHE/venv`, default `~/.cache/tusk/venv`), else `python3`.
/// Skips (or fails in CI / with `TUSK_REQUIRE_TF=1`) when none has TensorFlow.
pub fn python_with_tensorflow() -> Option<PathBuf> {
    require(
        "TensorFlow (Python)",
        "TUSK_REQUIRE_TF",
        python_with("tensorflow")
            .ok_or_else(|| "no Python with `import tensorflow` (run .ci/run)".to_string()),
    )
}

/// The first Python (`$TUSK_PYTHON`, the `.ci/run` venv, `python3`) for which `import {module}`
/// works.
fn python_with(module: &str) -> Option<PathBuf> {
    let mut candidates = Vec::new();
    if let Some(p) = std::env::var_os("TUSK_PYTHON") {
        candidates.push(PathBuf::from(p));
    }
    let cache = std::env::var_os("TUSK_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/tusk")));
    if let Some(c) = cache {
        candidates.push(c.join("venv/bin/python"));
    }
    candidates.push(PathBuf::from("python3"));
    candidates.into_iter().find(|py| {
        Command::new(py)
            .args(["-c", &format!("import {module}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

/// Run `step` until it succeeds, for at most 15 s (a server that has just started listening
/// may still drop its first connections); panics with the last failure.
fn until_ok(what: &str, mut step: impl FnMut() -> Result<(), String>) {
    let t0 = std::time::Instant::now();
    loop {
        match step() {
            Ok(()) => return,
            Err(e) if t0.elapsed() > Duration::from_secs(15) => panic!("{what}: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(250)),
        }
    }
}

/// A port nobody listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Start a server (output discarded) and wait, at most a minute, until it accepts
/// connections on `port`; panics if it exits or never listens.
fn spawn_listening(cmd: &mut Command, what: &str, port: u16) -> Proc {
    cmd.stdout(Stdio::null()).stderr(Stdio::null());
    let mut proc = Proc::spawn(cmd, what);
    let t0 = std::time::Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Some(st) = proc.try_status() {
            panic!("{what} exited at start: {st}");
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "{what} did not listen within 60 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    proc
}

/// A real S3-compatible server: moto's server mode (from `python/requirements-test.txt`) on a
/// free port, with signature checks, conditional writes (`If-None-Match: *` on puts and on
/// completing multipart uploads) and multipart copies. Stopped on drop.
pub struct S3Server {
    proc: Proc,
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
}

impl S3Server {
    /// Start one, or skip (see [`require`], `TUSK_REQUIRE_S3`) where no Python has moto.
    pub fn start() -> Option<S3Server> {
        let py = require(
            "an S3 server (moto)",
            "TUSK_REQUIRE_S3",
            python_with("moto.server")
                .ok_or_else(|| "no Python with moto[server] (run .ci/run)".to_string()),
        )?;
        let port = free_port();
        let mut cmd = Command::new(py);
        cmd.args([
            "-m",
            "moto.server",
            "-H",
            "127.0.0.1",
            "-p",
            &port.to_string(),
        ]);
        let proc = spawn_listening(&mut cmd, "the moto S3 server", port);
        Some(S3Server {
            proc,
            endpoint: format!("http://127.0.0.1:{port}"),
        })
    }

    /// The settings that point tusk (or any AWS client) at this server: the endpoint and test
    /// credentials, for `Storage::with_options` or a child's environment.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ENDPOINT_URL", self.endpoint.as_str()),
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
            ("AWS_REGION", "us-east-1"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    /// Create a bucket (a plain `PUT /name`, as S3's CreateBucket).
    pub fn create_bucket(&self, name: &str) {
        use std::io::Read as _;
        let addr = self.endpoint.trim_start_matches("http://").to_string();
        until_ok(&format!("CreateBucket {name}"), || {
            let mut s = std::net::TcpStream::connect(&addr).map_err(|e| e.to_string())?;
            write!(
                s,
                "PUT /{name} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )
            .map_err(|e| e.to_string())?;
            let mut reply = String::new();
            let _ = s.read_to_string(&mut reply);
            let status = reply.lines().next().unwrap_or("no answer").to_string();
            if status.starts_with("HTTP/1.1 200") || status.starts_with("HTTP/1.0 200") {
                Ok(())
            } else {
                Err(status)
            }
        });
    }

    /// Stop the server now (an endpoint that is down).
    pub fn stop(&mut self) {
        self.proc.kill();
    }
}

/// Azurite's well-known development account and key (public: the emulator accepts only them).
const AZURITE_ACCOUNT: &str = "devstoreaccount1";
const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// A real Azure Blob endpoint: Azurite, Microsoft's storage emulator (from npm; `.ci/run`
/// installs it under `$TUSK_CACHE/azurite`), on a free port with its data in a temporary
/// directory, shared-key authentication enforced. Stopped on drop.
pub struct Azurite {
    proc: Proc,
    _data: tempfile::TempDir,
    /// `http://127.0.0.1:PORT/devstoreaccount1`.
    pub endpoint: String,
}

impl Azurite {
    /// Start one, or skip (see [`require`], `TUSK_REQUIRE_AZURE`) where it is not installed.
    pub fn start() -> Option<Azurite> {
        let bin = require(
            "an Azure Blob server (Azurite)",
            "TUSK_REQUIRE_AZURE",
            Azurite::find().ok_or_else(|| {
                "azurite-blob not found ($TUSK_AZURITE, $TUSK_CACHE/azurite or PATH; run .ci/run)"
                    .to_string()
            }),
        )?;
        let data = tempfile::tempdir().expect("a directory for Azurite's data");
        let port = free_port();
        let mut cmd = Command::new(bin);
        cmd.args(["--blobHost", "127.0.0.1", "--blobPort", &port.to_string()])
            .arg("--location")
            .arg(data.path())
            .args(["--silent", "--skipApiVersionCheck"]);
        let proc = spawn_listening(&mut cmd, "Azurite", port);
        Some(Azurite {
            proc,
            _data: data,
            endpoint: format!("http://127.0.0.1:{port}/{AZURITE_ACCOUNT}"),
        })
    }

    fn find() -> Option<PathBuf> {
        if let Some(p) = std::env::var_os("TUSK_AZURITE") {
            return Some(PathBuf::from(p));
        }
        let cache = std::env::var_os("TUSK_CACHE")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/tusk")));
        cache
            .map(|c| c.join("azurite/node_modules/.bin/azurite-blob"))
            .filter(|p| p.is_file())
            .or_else(|| which("azurite-blob"))
    }

    /// The settings that point tusk at this server as at any Azure account (account name,
    /// key, endpoint), for `Storage::with_options` or a child's environment.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("AZURE_STORAGE_ACCOUNT_NAME", AZURITE_ACCOUNT),
            ("AZURE_STORAGE_ACCOUNT_KEY", AZURITE_KEY),
            ("AZURE_STORAGE_ENDPOINT", self.endpoint.as_str()),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    /// Create a container (Create Container, signed with the account's shared key by a few
    /// lines of Node.js, which Azurite runs on anyway).
    pub fn create_container(&self, name: &str) {
        let script = r#"
const crypto = require('crypto'), http = require('http');
const [endpoint, account, key, name] = process.argv.slice(1);
const u = new URL(endpoint + '/' + name + '?restype=container');
const date = new Date().toUTCString(), version = '2021-08-06';
const toSign = ['PUT', '', '', '', '', '', '', '', '', '', '', '',
  'x-ms-date:' + date + '\nx-ms-version:' + version,
  '/' + account + u.pathname + '\nrestype:container'].join('\n');
const sig = crypto.createHmac('sha256', Buffer.from(key, 'base64')).update(toSign, 'utf8').digest('base64');
const req = http.request({host: u.hostname, port: u.port, path: u.pathname + u.search, method: 'PUT',
  headers: {'x-ms-date': date, 'x-ms-version': version, 'Content-Length': 0,
            'Authorization': 'SharedKey ' + account + ':' + sig}}, res => {
  let body = ''; res.on('data', d => body += d);
  res.on('end', () => { if (res.statusCode !== 201) { console.error(res.statusCode + ' ' + body); process.exit(1); } });
});
req.on('error', e => { console.error(e.message); process.exit(2); });
req.end();
"#;
        until_ok(&format!("Create Container {name}"), || {
            let out = Command::new("node")
                .args([
                    "-e",
                    script,
                    &self.endpoint,
                    AZURITE_ACCOUNT,
                    AZURITE_KEY,
                    name,
                ])
                .output()
                .map_err(|e| format!("run node: {e}"))?;
            if out.status.success() {
                Ok(())
            } else {
                Err(String::from_utf8_lossy(&out.stderr).into_owned())
            }
        });
    }

    /// Stop the server now (an endpoint that is down).
    pub fn stop(&mut self) {
        self.proc.kill();
    }
}

/// `(pid, parent pid, process group)` of every process in `/proc` (zombies excluded).
pub fn process_table() -> Vec<(u32, u32, u32)> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        // `pid (comm) state ppid pgrp …`; comm may hold spaces and parentheses.
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        if f.len() < 3 || f[0] == "Z" {
            continue;
        }
        if let (Ok(ppid), Ok(pgrp)) = (f[1].parse(), f[2].parse()) {
            out.push((pid, ppid, pgrp));
        }
    }
    out
}

/// Live children of `pid`.
pub fn children_of(pid: u32) -> Vec<u32> {
    let mut c: Vec<u32> = process_table()
        .into_iter()
        .filter(|p| p.1 == pid)
        .map(|p| p.0)
        .collect();
    c.sort_unstable();
    c
}

/// Live members of process group `pgid`.
pub fn group_members(pgid: u32) -> Vec<u32> {
    process_table()
        .into_iter()
        .filter(|p| p.2 == pgid)
        .map(|p| p.0)
        .collect()
}

/// A child process in a process group of its own. Dropping it kills the whole group with
/// SIGKILL and reaps the child; every wait on it is bounded.
pub struct Proc {
    child: Child,
    what: String,
    status: Option<ExitStatus>,
}

impl Proc {
    /// Spawn `cmd` (configured by the caller: arguments, environment, where output goes) as
    /// the leader of a new process group; `what` names it in panics.
    pub fn spawn(cmd: &mut Command, what: &str) -> Proc {
        let child = cmd
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {what}: {e}"));
        Proc {
            child,
            what: what.to_string(),
            status: None,
        }
    }

    /// The process id (also the process group id).
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Its exit status if it has exited, without waiting.
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        self.status
    }

    /// Wait at most `limit` for it to exit; `None` if it is still running.
    pub fn wait_for(&mut self, limit: Duration) -> Option<ExitStatus> {
        let start = std::time::Instant::now();
        loop {
            if let Some(s) = self.try_status() {
                return Some(s);
            }
            if start.elapsed() >= limit {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Wait at most `limit` for it to exit, killing it and panicking if it does not.
    pub fn wait(&mut self, limit: Duration) -> ExitStatus {
        match self.wait_for(limit) {
            Some(s) => s,
            None => {
                self.kill();
                panic!("{} did not finish within {limit:?}", self.what);
            }
        }
    }

    /// SIGKILL the whole process group (as `kill -9 -PGID`) and reap the child.
    pub fn kill(&mut self) -> ExitStatus {
        if let Some(s) = self.try_status() {
            return s;
        }
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        // After SIGKILL the child exits at once; this wait cannot hang.
        let s = self.child.wait().expect("reaping a killed child");
        self.status = Some(s);
        s
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Hosts emulated by network namespaces: `n` namespaces, each with one veth into a bridge
/// (in a namespace of its own, so the host's network is never touched) and its own address
/// `10.X.0.(i+1)/24`. Needs root and `ip`. Dropping it deletes every namespace (and with
/// them the links).
pub struct Hosts {
    names: Vec<String>,
    bridge: String,
    subnet: u8,
}

impl Hosts {
    /// Create `n` hosts on subnet `10.subnet.0.0/24`; with `rate` (e.g. `1gbit`) every host's
    /// link is shaped by `tc` (token bucket) in both directions.
    pub fn create(n: usize, subnet: u8, rate: Option<&str>) -> Result<Hosts, String> {
        if which("ip").is_none() {
            return Err("`ip` (iproute2) is not installed".into());
        }
        let tag = format!("tk{}", std::process::id() % 100_000);
        let hosts = Hosts {
            names: (0..n).map(|i| format!("{tag}-h{i}")).collect(),
            bridge: format!("{tag}-br"),
            subnet,
        };
        let run = |args: &[&str]| -> Result<(), String> {
            let o = Command::new("ip")
                .args(args)
                .output()
                .map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
            if o.status.success() {
                Ok(())
            } else {
                Err(format!(
                    "ip {}: {}",
                    args.join(" "),
                    String::from_utf8_lossy(&o.stderr).trim()
                ))
            }
        };
        let br = hosts.bridge.as_str();
        run(&["netns", "add", br])?;
        run(&["-n", br, "link", "add", "br0", "type", "bridge"])?;
        run(&["-n", br, "link", "set", "br0", "up"])?;
        for (i, ns) in hosts.names.iter().enumerate() {
            let (a, b) = (format!("{tag}a{i}"), format!("{tag}b{i}"));
            run(&["netns", "add", ns])?;
            run(&["link", "add", &a, "type", "veth", "peer", "name", &b])?;
            run(&["link", "set", &a, "netns", ns])?;
            run(&["link", "set", &b, "netns", br])?;
            run(&["-n", ns, "link", "set", &a, "name", "eth0"])?;
            run(&[
                "-n",
                ns,
                "addr",
                "add",
                &format!("{}/24", hosts.addr(i)),
                "dev",
                "eth0",
            ])?;
            run(&["-n", ns, "link", "set", "eth0", "up"])?;
            run(&["-n", ns, "link", "set", "lo", "up"])?;
            run(&["-n", br, "link", "set", &b, "master", "br0"])?;
            run(&["-n", br, "link", "set", &b, "up"])?;
            if let Some(rate) = rate {
                for (space, dev) in [(ns.as_str(), "eth0"), (br, b.as_str())] {
                    let o = Command::new("ip")
                        .args(["netns", "exec", space, "tc", "qdisc", "add", "dev", dev])
                        .args([
                            "root", "tbf", "rate", rate, "burst", "256kb", "latency", "50ms",
                        ])
                        .output()
                        .map_err(|e| format!("tc: {e}"))?;
                    if !o.status.success() {
                        return Err(format!(
                            "tc on {dev}: {}",
                            String::from_utf8_lossy(&o.stderr).trim()
                        ));
                    }
                }
            }
        }
        Ok(hosts)
    }

    /// The address of host `i`.
    pub fn addr(&self, i: usize) -> String {
        format!("10.{}.0.{}", self.subnet, i + 1)
    }

    /// A command that runs `program` inside host `i`.
    pub fn command(&self, i: usize, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.names[i]]).arg(program);
        c
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        for ns in self.names.iter().chain(std::iter::once(&self.bridge)) {
            let _ = Command::new("ip")
                .args(["netns", "del", ns])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// `Some(())` when `mpirun` runs here; otherwise skip loudly (fail in CI or with
/// `TUSK_REQUIRE_MPI=1`).
pub fn require_mpirun() -> Option<()> {
    let found = Command::new("mpirun")
        .arg("--version")
        .output()
        .map_err(|e| format!("mpirun: {e}"))
        .and_then(|o| {
            if o.status.success() {
                Ok(())
            } else {
                Err("`mpirun --version` failed".to_string())
            }
        });
    require("mpirun (OpenMPI)", "TUSK_REQUIRE_MPI", found)
}
