//! Embedding servers: the rows of a sparse table sharded by key across processes
//! ([`shard_of`]), with the row-wise optimiser applied server-side by the same code as an
//! in-process table ([`HashedTable`]). Workers [`Client::pull`] the rows of a batch and
//! [`Client::push`] their row gradients; dense weights stay with the workers (all-reduce).
//!
//! **Modes.** [`Mode::Sync`]: a server applies step `t` once every worker pushed it — the
//! workers' gradients concatenated in rank order, the order a replicated table applies
//! them in, so the rows equal the replicated run's bit for bit — and a pull for step `t + 1`
//! waits for that. [`Mode::Async`]: each push is applied on arrival; a worker's pull waits
//! only while it is more than `staleness` steps ahead of the slowest worker.
//!
//! **Sessions.** A server holds one run at a time. Rank 0 opens a session with the table's
//! settings and, on resume, its shard of the stored rows; the other workers join it and
//! must bring the same settings. A new session from rank 0 (a restarted group) replaces the
//! old one.
//!
//! **Wire.** The job's authenticated framed TCP (`tusk_collective::tcp::service`): the same
//! HMAC challenge as between workers, then request/response frames, little-endian:
//! `[op u8][fields]` → `[0][payload]` or `[1][message]`.

use std::collections::{BTreeMap, HashMap};
use std::io::ErrorKind;
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tusk_collective::tcp::service;
use tusk_embedding::{EmbeddingStore, HashedTable, Init, Optimizer, TableState, shard_of};

/// What went wrong, naming the server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A server answered with an error, or broke the protocol.
    #[error("embedding server {shard} at {addr}: {message}")]
    Server {
        /// Its shard.
        shard: usize,
        /// Its address.
        addr: String,
        /// What it said, or what was wrong with its answer.
        message: String,
    },
    /// A setting or argument is wrong.
    #[error("{0}")]
    Usage(String),
    /// The server side: binding, accepting.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        source: std::io::Error,
    },
}

/// Result of embedding-server operations.
pub type Result<T> = std::result::Result<T, Error>;

/// How servers apply the workers' pushes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Mode {
    /// Step `t` is applied once every worker pushed it (summed in rank order); pulls of
    /// step `t + 1` wait for it.
    Sync,
    /// Pushes are applied on arrival; a worker may be at most `staleness` steps ahead of the
    /// slowest one when it pulls.
    Async {
        /// Steps a worker may run ahead.
        staleness: u64,
    },
}

/// Everything a server needs to hold a table: the workers must all bring the same.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TableConfig {
    /// Row width.
    pub dim: usize,
    /// Row-wise optimiser.
    pub optimizer: OptimizerSpec,
    /// Initialisation seed.
    pub seed: u64,
    /// Initialisation scale.
    pub init_scale: f32,
    /// Normal instead of uniform initial rows.
    pub normal_init: bool,
    /// Sync or async.
    pub mode: Mode,
    /// Number of workers.
    pub workers: usize,
    /// Frequency admission: occurrences before a key gets a row (1: at once).
    #[serde(default = "one")]
    pub min_count: u32,
}

fn one() -> u32 {
    1
}

/// [`Optimizer`] on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub enum OptimizerSpec {
    Sgd {
        lr: f32,
    },
    Adagrad {
        lr: f32,
        initial_accumulator: f32,
        eps: f32,
    },
    Adam {
        lr: f32,
        beta1: f32,
        beta2: f32,
        eps: f32,
        dense: bool,
    },
}

impl From<Optimizer> for OptimizerSpec {
    fn from(o: Optimizer) -> Self {
        match o {
            Optimizer::Sgd { lr } => OptimizerSpec::Sgd { lr },
            Optimizer::Adagrad {
                lr,
                initial_accumulator,
                eps,
            } => OptimizerSpec::Adagrad {
                lr,
                initial_accumulator,
                eps,
            },
            Optimizer::Adam {
                lr,
                beta1,
                beta2,
                eps,
                dense,
            } => OptimizerSpec::Adam {
                lr,
                beta1,
                beta2,
                eps,
                dense,
            },
        }
    }
}

impl From<OptimizerSpec> for Optimizer {
    fn from(o: OptimizerSpec) -> Self {
        match o {
            OptimizerSpec::Sgd { lr } => Optimizer::Sgd { lr },
            OptimizerSpec::Adagrad {
                lr,
                initial_accumulator,
                eps,
            } => Optimizer::Adagrad {
                lr,
                initial_accumulator,
                eps,
            },
            OptimizerSpec::Adam {
                lr,
                beta1,
                beta2,
                eps,
                dense,
            } => Optimizer::Adam {
                lr,
                beta1,
                beta2,
                eps,
                dense,
            },
        }
    }
}

impl TableConfig {
    fn empty_table(&self) -> HashedTable {
        HashedTable::new(self.dim, self.optimizer.into(), self.seed)
            .with_init_scale(self.init_scale)
            .with_init(self.init())
            .with_min_count(self.min_count)
    }

    fn init(&self) -> Init {
        if self.normal_init {
            Init::Normal
        } else {
            Init::Uniform
        }
    }
}

const OP_INIT: u8 = 1;
const OP_PULL: u8 = 2;
const OP_PEEK: u8 = 3;
const OP_PUSH: u8 = 4;
const OP_EXPORT: u8 = 5;
const OP_LOAD: u8 = 6;
const OP_FINISH: u8 = 7;
const OP_STATS: u8 = 8;
const OP_SNAPSHOT: u8 = 9;
const OP_WRITE: u8 = 10;

/// Where a server's starting rows come from.
#[derive(Debug, Clone)]
pub enum Rows<'a> {
    /// None: every row starts at its initial value.
    Fresh,
    /// These rows (the client sends each server its shard).
    Inline(&'a TableState),
    /// Table files in storage (a stored version's `embeddings.safetensors` or its shard
    /// files): each server reads them all and keeps the rows of its shard, whatever number
    /// of servers wrote them.
    Files(&'a [String]),
}

// ---------------------------------------------------------------------------------------
// Encoding

fn put_u32(b: &mut Vec<u8>, v: u32) {
    b.extend_from_slice(&v.to_le_bytes());
}

fn put_u64(b: &mut Vec<u8>, v: u64) {
    b.extend_from_slice(&v.to_le_bytes());
}

fn put_bytes(b: &mut Vec<u8>, v: &[u8]) {
    put_u64(b, v.len() as u64);
    b.extend_from_slice(v);
}

fn put_keys(b: &mut Vec<u8>, keys: &[u64]) {
    put_u64(b, keys.len() as u64);
    for k in keys {
        b.extend_from_slice(&k.to_le_bytes());
    }
}

fn put_f32s(b: &mut Vec<u8>, v: &[f32]) {
    put_u64(b, v.len() as u64);
    for x in v {
        b.extend_from_slice(&x.to_le_bytes());
    }
}

fn put_state(b: &mut Vec<u8>, s: &TableState) {
    put_u64(b, s.dim as u64);
    put_u64(b, s.seed);
    put_u32(b, s.init_scale.to_bits());
    put_keys(b, &s.keys);
    put_f32s(b, &s.values);
    put_f32s(b, &s.state);
    put_u64(b, s.steps.len() as u64);
    for x in &s.steps {
        put_u32(b, *x);
    }
    put_keys(b, &s.pending_keys);
    put_u64(b, s.pending_counts.len() as u64);
    for x in &s.pending_counts {
        put_u32(b, *x);
    }
}

fn put_rows(b: &mut Vec<u8>, rows: &Rows<'_>, shard: usize, shards: usize) {
    match rows {
        Rows::Fresh => b.push(0),
        Rows::Inline(s) => {
            b.push(1);
            put_state(b, &s.shard(shard, shards));
        }
        Rows::Files(urls) => {
            b.push(2);
            put_u64(b, urls.len() as u64);
            for u in *urls {
                put_bytes(b, u.as_bytes());
            }
        }
    }
}

/// A cursor over a received frame; every read names what was cut short.
struct Reader<'a> {
    b: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> std::result::Result<&'a [u8], String> {
        if self.b.len() < n {
            return Err(format!(
                "message cut short reading {what} ({} of {n} bytes)",
                self.b.len()
            ));
        }
        let (h, t) = self.b.split_at(n);
        self.b = t;
        Ok(h)
    }

    fn u8(&mut self, what: &str) -> std::result::Result<u8, String> {
        Ok(self.take(1, what)?[0])
    }

    fn u32(&mut self, what: &str) -> std::result::Result<u32, String> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self, what: &str) -> std::result::Result<u64, String> {
        let b = self.take(8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    fn len(&mut self, what: &str, elem: usize) -> std::result::Result<usize, String> {
        let n = self.u64(what)?;
        if n.saturating_mul(elem as u64) > self.b.len() as u64 {
            return Err(format!(
                "{what}: {n} elements announced, {} bytes left",
                self.b.len()
            ));
        }
        Ok(n as usize)
    }

    fn bytes(&mut self, what: &str) -> std::result::Result<&'a [u8], String> {
        let n = self.len(what, 1)?;
        self.take(n, what)
    }

    fn keys(&mut self, what: &str) -> std::result::Result<Vec<u64>, String> {
        let n = self.len(what, 8)?;
        Ok(self
            .take(n * 8, what)?
            .chunks_exact(8)
            .map(|c| {
                let mut a = [0u8; 8];
                a.copy_from_slice(c);
                u64::from_le_bytes(a)
            })
            .collect())
    }

    fn f32s(&mut self, what: &str) -> std::result::Result<Vec<f32>, String> {
        let n = self.len(what, 4)?;
        Ok(self
            .take(n * 4, what)?
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }

    fn state(&mut self) -> std::result::Result<TableState, String> {
        let dim = self.u64("table dimension")? as usize;
        let seed = self.u64("table seed")?;
        let init_scale = f32::from_bits(self.u32("table scale")?);
        let keys = self.keys("table keys")?;
        let values = self.f32s("table values")?;
        let state = self.f32s("optimiser state")?;
        let n = self.len("step counts", 4)?;
        let steps = self
            .take(n * 4, "step counts")?
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let pending_keys = self.keys("pending keys")?;
        let n = self.len("pending counts", 4)?;
        let pending_counts = self
            .take(n * 4, "pending counts")?
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        Ok(TableState {
            dim,
            seed,
            init_scale,
            keys,
            values,
            state,
            steps,
            pending_keys,
            pending_counts,
        })
    }
}

// ---------------------------------------------------------------------------------------
// Server

/// How a server is started (`tusk embedding-server`).
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// This server's shard, `0..shards`.
    pub shard: usize,
    /// Number of servers.
    pub shards: usize,
    /// Number of workers that will connect.
    pub workers: usize,
    /// The job secret (`TUSK_JOB_SECRET`).
    pub secret: Vec<u8>,
    /// Longest a request waits for other workers (a pull for the slowest worker's push).
    pub timeout: Duration,
}

/// One worker's push: keys and one gradient row per key.
type RowGrads = (Vec<u64>, Vec<f32>);

/// One run's table on this server.
struct Session {
    id: String,
    config: TableConfig,
    table: HashedTable,
    /// Pushes received per worker.
    clocks: Vec<u64>,
    /// Sync: steps applied (every worker's push of steps `0..applied`).
    applied: u64,
    /// Sync: pushes of steps not yet applied, per step, per rank.
    pending: BTreeMap<u64, Vec<Option<RowGrads>>>,
    /// A push that could not be applied: every later request fails with it.
    failed: Option<String>,
    finished: bool,
    /// Encoded shard files taken at a step boundary, waiting to be written.
    snapshots: HashMap<u64, Vec<u8>>,
    /// The most steps a pull was ahead of the slowest worker (async: never above the bound).
    max_lead: u64,
}

impl Session {
    fn min_clock(&self) -> u64 {
        self.clocks.iter().copied().min().unwrap_or(0)
    }

    /// Whether worker clock `c` may read: every step before `c` is applied (sync), or the
    /// slowest worker is at most `staleness` steps behind (async).
    fn may_pull(&self, c: u64) -> bool {
        match self.config.mode {
            Mode::Sync => self.applied >= c,
            Mode::Async { staleness } => self.min_clock().saturating_add(staleness) >= c,
        }
    }

    /// Whether every worker's pushes up to clock `c` are applied (a consistent snapshot).
    fn settled(&self, c: u64) -> bool {
        self.min_clock() >= c && (self.config.mode != Mode::Sync || self.applied >= c)
    }
}

#[derive(Default)]
struct State {
    session: Option<Session>,
    /// Bumped whenever rank 0 opens a session.
    generation: u64,
}

struct Shared {
    opts: ServerOptions,
    state: Mutex<State>,
    changed: Condvar,
    connections: AtomicUsize,
    /// Set when rank 0 said the run is finished.
    done: Mutex<bool>,
    /// For shard files (made on first use).
    storage: std::sync::OnceLock<tusk_storage::Storage>,
}

impl Shared {
    fn storage(&self) -> std::result::Result<&tusk_storage::Storage, String> {
        if let Some(s) = self.storage.get() {
            return Ok(s);
        }
        let s = tusk_storage::Storage::new().map_err(|e| format!("opening storage: {e}"))?;
        Ok(self.storage.get_or_init(|| s))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Wait (bounded) until `ready` holds for the current session; `why` says what is
    /// awaited when the wait times out.
    fn wait<'a>(
        &'a self,
        mut g: MutexGuard<'a, State>,
        ready: impl Fn(&Session) -> bool,
        why: impl Fn(&Session) -> String,
    ) -> std::result::Result<MutexGuard<'a, State>, String> {
        let deadline = Instant::now() + self.opts.timeout;
        let generation = g.generation;
        loop {
            if g.generation != generation {
                return Err("rank 0 started a new session (the group restarted)".into());
            }
            let Some(s) = &g.session else {
                return Err("no session: rank 0 has not initialised this server".into());
            };
            if let Some(f) = &s.failed {
                return Err(f.clone());
            }
            if ready(s) {
                return Ok(g);
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(format!(
                    "waited {} s for {} (--timeout)",
                    self.opts.timeout.as_secs(),
                    why(s)
                ));
            }
            g = self
                .changed
                .wait_timeout(g, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

fn behind(s: &Session, c: u64) -> String {
    let late: Vec<String> = s
        .clocks
        .iter()
        .enumerate()
        .filter(|(_, k)| **k < c)
        .map(|(r, k)| format!("rank {r} (at step {k})"))
        .collect();
    format!("the push of step {c} from {}", late.join(", "))
}

/// A bound server: [`Server::addr`] is known before [`Server::run`] serves.
pub struct Server {
    listener: TcpListener,
    shared: Arc<Shared>,
}

impl Server {
    /// Bind `addr` (port 0: any free port).
    pub fn bind(addr: &str, opts: ServerOptions) -> Result<Server> {
        if opts.secret.is_empty() {
            return Err(Error::Usage(
                "TUSK_JOB_SECRET is empty: servers and workers need the same non-empty secret"
                    .into(),
            ));
        }
        if opts.shards == 0 || opts.shard >= opts.shards {
            return Err(Error::Usage(format!(
                "shard {} of {}: the shard must be in 0..shards",
                opts.shard, opts.shards
            )));
        }
        if opts.workers == 0 {
            return Err(Error::Usage("--workers must be at least 1".into()));
        }
        let listener = TcpListener::bind(addr).map_err(|source| Error::Io {
            what: format!("listening on {addr}"),
            source,
        })?;
        Ok(Server {
            listener,
            shared: Arc::new(Shared {
                opts,
                state: Mutex::new(State::default()),
                changed: Condvar::new(),
                connections: AtomicUsize::new(0),
                done: Mutex::new(false),
                storage: std::sync::OnceLock::new(),
            }),
        })
    }

    /// The bound address.
    pub fn addr(&self) -> Result<SocketAddr> {
        self.listener.local_addr().map_err(|source| Error::Io {
            what: "reading the listener's address".into(),
            source,
        })
    }

    /// Serve until rank 0 finishes the run and every worker has disconnected.
    pub fn run(self) -> Result<()> {
        self.listener
            .set_nonblocking(true)
            .map_err(|source| Error::Io {
                what: "listener".into(),
                source,
            })?;
        let name = format!(
            "embedding server {}/{}",
            self.shared.opts.shard, self.shared.opts.shards
        );
        loop {
            match self.listener.accept() {
                Ok((s, from)) => {
                    let shared = self.shared.clone();
                    let name = name.clone();
                    shared.connections.fetch_add(1, Ordering::SeqCst);
                    std::thread::spawn(move || {
                        serve_connection(&shared, s, from, &name);
                        shared.connections.fetch_sub(1, Ordering::SeqCst);
                    });
                }
                Err(e)
                    if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::Interrupted =>
                {
                    let done = *self.shared.done.lock().unwrap_or_else(|p| p.into_inner());
                    if done && self.shared.connections.load(Ordering::SeqCst) == 0 {
                        return Ok(());
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(source) => {
                    return Err(Error::Io {
                        what: "accepting a connection".into(),
                        source,
                    });
                }
            }
        }
    }
}

fn serve_connection(shared: &Shared, mut s: TcpStream, from: SocketAddr, name: &str) {
    let _ = s.set_nonblocking(false);
    let _ = s.set_nodelay(true);
    let rank = match service::accept(&mut s, from, &shared.opts.secret, shared.opts.workers, name) {
        Ok(Some(r)) => r,
        _ => return,
    };
    // Workers may be idle for long (evaluation): no read timeout; a closed socket ends this.
    let _ = s.set_read_timeout(None);
    let _ = s.set_write_timeout(Some(shared.opts.timeout));
    let mut req = Vec::new();
    let mut out = Vec::new();
    loop {
        if service::recv(&mut s, &mut req).is_err() {
            return;
        }
        out.clear();
        out.push(0);
        match handle(shared, rank, &req, &mut out) {
            Ok(()) => {}
            Err(m) => {
                eprintln!("tusk: {name}: rank {rank}: {m}");
                out.clear();
                out.push(1);
                out.extend_from_slice(m.as_bytes());
            }
        }
        if service::send(&mut s, &out).is_err() {
            return;
        }
    }
}

/// The rows a request's row source names, restricted to this server's shard (`None`: fresh).
fn read_rows(
    shared: &Shared,
    r: &mut Reader<'_>,
    dim: usize,
) -> std::result::Result<Option<TableState>, String> {
    let (shard, shards) = (shared.opts.shard, shared.opts.shards);
    match r.u8("row source")? {
        0 => Ok(None),
        1 => Ok(Some(r.state()?)),
        _ => {
            let n = r.len("table files", 8)?;
            let mut parts = Vec::with_capacity(n);
            for _ in 0..n {
                let url = String::from_utf8_lossy(r.bytes("table file")?).into_owned();
                let bytes = shared
                    .storage()?
                    .open(&url)
                    .and_then(|l| l.read())
                    .map_err(|e| format!("reading {url}: {e}"))?;
                let t = tusk_embedding::file::decode_table(&bytes, dim)
                    .map_err(|e| format!("{url}: {e}"))?;
                parts.push(t.shard(shard, shards));
            }
            if parts.is_empty() {
                return Ok(None);
            }
            TableState::merge(parts).map(Some)
        }
    }
}

fn handle(
    shared: &Shared,
    rank: usize,
    req: &[u8],
    out: &mut Vec<u8>,
) -> std::result::Result<(), String> {
    let mut r = Reader { b: req };
    let op = r.u8("operation")?;
    let (shard, shards) = (shared.opts.shard, shared.opts.shards);
    let check_keys = |keys: &[u64]| -> std::result::Result<(), String> {
        match keys.iter().find(|&&k| shard_of(k, shards) != shard) {
            Some(k) => Err(format!(
                "key {k:#018x} belongs to shard {}, not {shard} (workers and servers disagree on the number of servers)",
                shard_of(*k, shards)
            )),
            None => Ok(()),
        }
    };
    match op {
        OP_INIT => {
            let id = String::from_utf8_lossy(r.bytes("session id")?).into_owned();
            let config: TableConfig = serde_json::from_slice(r.bytes("table config")?)
                .map_err(|e| format!("table config does not parse: {e}"))?;
            if config.workers != shared.opts.workers {
                return Err(format!(
                    "the job has {} workers, this server was started for {} (--workers)",
                    config.workers, shared.opts.workers
                ));
            }
            if rank == 0 {
                let mut table = config.empty_table();
                if let Some(st) = read_rows(shared, &mut r, config.dim)? {
                    check_keys(&st.keys)?;
                    if st.dim != config.dim {
                        return Err(format!(
                            "stored rows have dimension {}, the table {}",
                            st.dim, config.dim
                        ));
                    }
                    table = HashedTable::restore(config.optimizer.into(), st)?
                        .with_init(config.init())
                        .with_min_count(config.min_count);
                }
                let mut g = shared.lock();
                eprintln!(
                    "tusk: embedding server {shard}/{shards}: session {id}: {} rows, {:?}",
                    table.len(),
                    config.mode
                );
                g.session = Some(Session {
                    id,
                    clocks: vec![0; config.workers],
                    config,
                    table,
                    applied: 0,
                    pending: BTreeMap::new(),
                    failed: None,
                    finished: false,
                    snapshots: HashMap::new(),
                    max_lead: 0,
                });
                g.generation += 1;
                *shared.done.lock().unwrap_or_else(|p| p.into_inner()) = false;
                shared.changed.notify_all();
                return Ok(());
            }
            // Other ranks join rank 0's session.
            let deadline = Instant::now() + shared.opts.timeout;
            let mut g = shared.lock();
            loop {
                if let Some(s) = &g.session
                    && s.id == id
                {
                    if s.config != config {
                        return Err(format!(
                            "rank {rank} brings other table settings than rank 0: {config:?} vs {:?}",
                            s.config
                        ));
                    }
                    return Ok(());
                }
                let now = Instant::now();
                if now >= deadline {
                    return Err(format!(
                        "waited {} s for rank 0 to open session {id}",
                        shared.opts.timeout.as_secs()
                    ));
                }
                g = shared
                    .changed
                    .wait_timeout(g, deadline - now)
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
        }
        OP_PULL | OP_PEEK => {
            let clock = r.u64("clock")?;
            let keys = r.keys("keys")?;
            check_keys(&keys)?;
            let g = shared.lock();
            let mut g = if op == OP_PULL {
                shared.wait(
                    g,
                    |s| s.may_pull(clock),
                    |s| {
                        behind(
                            s,
                            clock.saturating_sub(match s.config.mode {
                                Mode::Sync => 0,
                                Mode::Async { staleness } => staleness,
                            }),
                        )
                    },
                )?
            } else {
                shared.wait(g, |s| s.settled(clock), |s| behind(s, clock))?
            };
            let Some(s) = g.session.as_mut() else {
                return Err("no session".into());
            };
            if op == OP_PULL {
                s.max_lead = s.max_lead.max(clock.saturating_sub(s.min_clock()));
            }
            let d = s.config.dim;
            let mut rows = vec![0.0f32; keys.len() * d];
            if op == OP_PULL {
                s.table.lookup(&keys, &mut rows);
            } else {
                s.table.peek(&keys, &mut rows);
            }
            drop(g);
            // One pass over a buffer sized once (a loop the compiler turns into wide copies).
            let start = out.len();
            out.resize(start + rows.len() * 4, 0);
            for (o, x) in out[start..].chunks_exact_mut(4).zip(&rows) {
                o.copy_from_slice(&x.to_le_bytes());
            }
            Ok(())
        }
        OP_PUSH => {
            let clock = r.u64("clock")?;
            let keys = r.keys("keys")?;
            let grads = r.f32s("gradients")?;
            check_keys(&keys)?;
            let mut g = shared.lock();
            let Some(s) = g.session.as_mut() else {
                return Err("no session: rank 0 has not initialised this server".into());
            };
            if let Some(f) = &s.failed {
                return Err(f.clone());
            }
            if s.clocks[rank] != clock {
                return Err(format!(
                    "rank {rank} pushed step {clock}, expected step {}",
                    s.clocks[rank]
                ));
            }
            if grads.len() != keys.len() * s.config.dim {
                return Err(format!(
                    "{} gradient values for {} keys of dimension {}",
                    grads.len(),
                    keys.len(),
                    s.config.dim
                ));
            }
            s.clocks[rank] += 1;
            let applied = match s.config.mode {
                Mode::Async { .. } => s.table.apply_gradients(&keys, &grads),
                Mode::Sync => {
                    let n = s.config.workers;
                    let slot = s.pending.entry(clock).or_insert_with(|| vec![None; n]);
                    slot[rank] = Some((keys, grads));
                    let mut res = Ok(());
                    // Apply every step whose pushes are all in, in order.
                    while let Some(step) = s.pending.get(&s.applied)
                        && step.iter().all(Option::is_some)
                    {
                        let step = s.pending.remove(&s.applied).unwrap_or_default();
                        let (mut keys, mut grads) = (Vec::new(), Vec::new());
                        for (k, g) in step.into_iter().flatten() {
                            keys.extend_from_slice(&k);
                            grads.extend_from_slice(&g);
                        }
                        res = s.table.apply_gradients(&keys, &grads);
                        s.applied += 1;
                        if res.is_err() {
                            break;
                        }
                    }
                    res
                }
            };
            if let Err(e) = applied {
                s.failed = Some(format!("applying step {clock}: {e}"));
            }
            shared.changed.notify_all();
            match &s.failed {
                Some(f) => Err(f.clone()),
                None => Ok(()),
            }
        }
        OP_EXPORT => {
            let clock = r.u64("clock")?;
            let g = shared.wait(shared.lock(), |s| s.settled(clock), |s| behind(s, clock))?;
            let Some(s) = g.session.as_ref() else {
                return Err("no session".into());
            };
            put_state(out, &s.table.export());
            Ok(())
        }
        OP_LOAD => {
            let dim = match &shared.lock().session {
                Some(s) => s.config.dim,
                None => return Err("no session".into()),
            };
            let st =
                read_rows(shared, &mut r, dim)?.unwrap_or_else(|| TableState::empty(dim, 0, 0.0));
            check_keys(&st.keys)?;
            let mut g = shared.lock();
            let Some(s) = g.session.as_mut() else {
                return Err("no session".into());
            };
            s.table = HashedTable::restore(s.config.optimizer.into(), st)?
                .with_init(s.config.init())
                .with_min_count(s.config.min_count);
            Ok(())
        }
        OP_SNAPSHOT => {
            let clock = r.u64("clock")?;
            let id = r.u64("snapshot id")?;
            let g = shared.wait(shared.lock(), |s| s.settled(clock), |s| behind(s, clock))?;
            let Some(s) = g.session.as_ref() else {
                return Err("no session".into());
            };
            let rows = s.table.export();
            drop(g);
            // Sorted by key: the same rows give the same file however they were created.
            let sorted = TableState::merge(vec![rows])?;
            let bytes = tusk_embedding::file::encode_table(&sorted.view());
            let mut g = shared.lock();
            if let Some(s) = g.session.as_mut() {
                s.snapshots.insert(id, bytes);
            }
            Ok(())
        }
        OP_WRITE => {
            let id = r.u64("snapshot id")?;
            let url = String::from_utf8_lossy(r.bytes("file URL")?).into_owned();
            let bytes = shared
                .lock()
                .session
                .as_mut()
                .and_then(|s| s.snapshots.remove(&id))
                .ok_or_else(|| format!("no snapshot {id} to write"))?;
            let (len, crc) = (bytes.len() as u64, crc32c::crc32c(&bytes));
            shared
                .storage()?
                .open(&url)
                .and_then(|l| l.write(bytes))
                .map_err(|e| format!("writing {url}: {e}"))?;
            put_u64(out, len);
            put_u32(out, crc);
            Ok(())
        }
        OP_FINISH => {
            let mut g = shared.lock();
            if let Some(s) = g.session.as_mut() {
                s.finished = true;
            }
            *shared.done.lock().unwrap_or_else(|p| p.into_inner()) = true;
            Ok(())
        }
        OP_STATS => {
            let g = shared.lock();
            let (rows, bytes, lead) = g.session.as_ref().map_or((0, 0, 0), |s| {
                (s.table.len(), s.table.memory_bytes(), s.max_lead)
            });
            put_u64(out, rows as u64);
            put_u64(out, bytes as u64);
            put_u64(out, lead);
            Ok(())
        }
        other => Err(format!("unknown operation {other}")),
    }
}

// ---------------------------------------------------------------------------------------
// Client

struct Conn {
    shard: usize,
    addr: String,
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    fn err(&self, message: impl Into<String>) -> Error {
        Error::Server {
            shard: self.shard,
            addr: self.addr.clone(),
            message: message.into(),
        }
    }

    fn io(&self, e: std::io::Error, timeout: Duration) -> Error {
        let m = match e.kind() {
            ErrorKind::WouldBlock | ErrorKind::TimedOut => format!(
                "sent nothing for {} s (--collective-timeout)",
                timeout.as_secs()
            ),
            ErrorKind::UnexpectedEof
            | ErrorKind::ConnectionReset
            | ErrorKind::ConnectionAborted
            | ErrorKind::BrokenPipe => {
                "closed the connection (it exited or was killed)".to_string()
            }
            _ => e.to_string(),
        };
        self.err(m)
    }
}

/// A worker's connections to every embedding server.
pub struct Client {
    conns: Vec<Conn>,
    dim: usize,
    clock: u64,
    timeout: Duration,
    /// A prefetch sent and not yet collected.
    pending: Option<Prefetch>,
}

/// Where the keys of a prefetch went.
struct Prefetch {
    per: Vec<Vec<u64>>,
    place: Vec<(u32, u32)>,
}

/// Rows and resident table bytes of one server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardStats {
    /// Rows held.
    pub rows: u64,
    /// Bytes of rows and optimiser state.
    pub bytes: u64,
    /// The most steps a training pull was ahead of the slowest worker.
    pub max_lead: u64,
}

impl Client {
    /// Connect to every server (shard `i` at `addrs[i]`) as worker `rank` of `workers`,
    /// retrying until `connect_timeout` (servers may start after workers); requests wait at
    /// most `timeout` for an answer.
    pub fn connect(
        addrs: &[String],
        secret: &[u8],
        rank: usize,
        workers: usize,
        connect_timeout: Duration,
        timeout: Duration,
    ) -> Result<Client> {
        if addrs.is_empty() {
            return Err(Error::Usage("no embedding servers given".into()));
        }
        let deadline = Instant::now() + connect_timeout;
        let mut conns = Vec::with_capacity(addrs.len());
        for (shard, addr) in addrs.iter().enumerate() {
            let err = |message: String| Error::Server {
                shard,
                addr: addr.clone(),
                message,
            };
            let stream = loop {
                let tried = addr
                    .to_socket_addrs()
                    .map_err(|e| e.to_string())
                    .and_then(|mut a| a.next().ok_or_else(|| "no address".to_string()))
                    .and_then(|a| {
                        TcpStream::connect_timeout(&a, Duration::from_secs(2))
                            .map_err(|e| e.to_string())
                    });
                let last = match tried {
                    Ok(s) => break s,
                    Err(e) => e,
                };
                if Instant::now() >= deadline {
                    return Err(err(format!(
                        "not reachable within {} s: {last}",
                        connect_timeout.as_secs()
                    )));
                }
                std::thread::sleep(Duration::from_millis(100));
            };
            let _ = stream.set_nodelay(true);
            let mut stream = stream;
            service::connect(&mut stream, secret, rank, workers).map_err(|e| err(e.to_string()))?;
            service::set_timeouts(&stream, timeout);
            conns.push(Conn {
                shard,
                addr: addr.clone(),
                stream,
                buf: Vec::new(),
            });
        }
        Ok(Client {
            conns,
            dim: 0,
            clock: 0,
            timeout,
            pending: None,
        })
    }

    /// Number of servers.
    pub fn shards(&self) -> usize {
        self.conns.len()
    }

    /// Steps pushed so far in this session.
    pub fn clock(&self) -> u64 {
        self.clock
    }

    /// Send `reqs[i]` to server `i` (all first, then read all answers: the servers work in
    /// parallel); returns the answers' payloads.
    fn call(&mut self, reqs: Vec<Option<Vec<u8>>>) -> Result<Vec<Option<Vec<u8>>>> {
        if self.pending.is_some() {
            // A prefetch's answers come first on every connection it used.
            let n = self.pending.as_ref().map_or(0, |p| p.place.len()) * self.dim;
            let mut scratch = vec![0.0; n];
            self.finish_pull(&mut scratch)?;
        }
        let sent: Vec<bool> = reqs.iter().map(Option::is_some).collect();
        self.send_all(&reqs)?;
        self.recv_all(&sent)
    }

    fn send_all(&mut self, reqs: &[Option<Vec<u8>>]) -> Result<()> {
        let timeout = self.timeout;
        for (c, r) in self.conns.iter_mut().zip(reqs) {
            if let Some(r) = r {
                service::send(&mut c.stream, r).map_err(|e| c.io(e, timeout))?;
            }
        }
        Ok(())
    }

    /// The answers of the servers `sent` marks, in server order.
    fn recv_all(&mut self, sent: &[bool]) -> Result<Vec<Option<Vec<u8>>>> {
        let timeout = self.timeout;
        let mut out = Vec::with_capacity(sent.len());
        // Every answer is read, even after an error one, so each connection stays in step.
        let mut refused = None;
        for (c, r) in self.conns.iter_mut().zip(sent) {
            if !r {
                out.push(None);
                continue;
            }
            let mut buf = std::mem::take(&mut c.buf);
            service::recv(&mut c.stream, &mut buf).map_err(|e| c.io(e, timeout))?;
            match buf.first() {
                Some(0) => out.push(Some(buf[1..].to_vec())),
                Some(_) => {
                    out.push(None);
                    let e = c.err(String::from_utf8_lossy(&buf[1..]).into_owned());
                    refused.get_or_insert(e);
                }
                None => return Err(c.err("empty answer")),
            }
            c.buf = buf;
        }
        match refused {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }

    /// Open a session (rank 0: `session` is new, `state` the stored rows to start from, if
    /// any) or join rank 0's (the other ranks: same `session`, same `config`).
    pub fn init(&mut self, session: &str, config: &TableConfig, rows: Rows<'_>) -> Result<()> {
        let json = serde_json::to_vec(config)
            .map_err(|e| Error::Usage(format!("encoding the table config: {e}")))?;
        let n = self.conns.len();
        let reqs = (0..n)
            .map(|i| {
                let mut b = vec![OP_INIT];
                put_bytes(&mut b, session.as_bytes());
                put_bytes(&mut b, &json);
                put_rows(&mut b, &rows, i, n);
                Some(b)
            })
            .collect();
        self.call(reqs)?;
        self.dim = config.dim;
        self.clock = 0;
        Ok(())
    }

    /// Split `keys` (deduplicated) by server: per server its unique keys, and per key of
    /// `keys` its (server, index) place.
    fn split_unique(&self, keys: &[u64]) -> (Vec<Vec<u64>>, Vec<(u32, u32)>) {
        let n = self.conns.len();
        let mut per: Vec<Vec<u64>> = vec![Vec::new(); n];
        let mut seen: std::collections::HashMap<u64, (u32, u32)> =
            std::collections::HashMap::with_capacity(keys.len());
        let place = keys
            .iter()
            .map(|&k| {
                *seen.entry(k).or_insert_with(|| {
                    let s = shard_of(k, n);
                    per[s].push(k);
                    (s as u32, (per[s].len() - 1) as u32)
                })
            })
            .collect();
        (per, place)
    }

    fn row_requests(&self, op: u8, clock: u64, per: &[Vec<u64>]) -> Vec<Option<Vec<u8>>> {
        per.iter()
            .map(|ks| {
                (!ks.is_empty()).then(|| {
                    let mut b = Vec::with_capacity(17 + ks.len() * 8);
                    b.push(op);
                    put_u64(&mut b, clock);
                    put_keys(&mut b, ks);
                    b
                })
            })
            .collect()
    }

    fn read_rows(&mut self, op: u8, keys: &[u64], out: &mut [f32]) -> Result<()> {
        let (per, place) = self.split_unique(keys);
        let reqs = self.row_requests(op, self.clock, &per);
        let answers = self.call(reqs)?;
        self.scatter_rows(answers, &per, &place, out)
    }

    /// Put the servers' answers for `per` back in the order of the keys (`place`).
    fn scatter_rows(
        &self,
        answers: Vec<Option<Vec<u8>>>,
        per: &[Vec<u64>],
        place: &[(u32, u32)],
        out: &mut [f32],
    ) -> Result<()> {
        let d = self.dim;
        let mut rows: Vec<Vec<f32>> = Vec::with_capacity(answers.len());
        for (i, a) in answers.into_iter().enumerate() {
            let a = a.unwrap_or_default();
            if a.len() != per[i].len() * d * 4 {
                return Err(self.conns[i].err(format!(
                    "answered {} bytes for {} rows of dimension {d}",
                    a.len(),
                    per[i].len()
                )));
            }
            rows.push(
                a.chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect(),
            );
        }
        for (j, &(s, i)) in place.iter().enumerate() {
            let (s, i) = (s as usize, i as usize);
            out[j * d..(j + 1) * d].copy_from_slice(&rows[s][i * d..(i + 1) * d]);
        }
        Ok(())
    }

    /// The rows of `keys` for training (missing rows are created), as of this worker's
    /// step: waits for the other workers as the mode requires.
    pub fn pull(&mut self, keys: &[u64], out: &mut [f32]) -> Result<()> {
        self.read_rows(OP_PULL, keys, out)
    }

    /// Ask for the rows of the **next** step's `keys` now, before this step's push (async
    /// mode with a staleness of at least 1: the rows then lack this worker's own current
    /// update, which the bound allows); [`Client::finish_pull`] collects them. The answers
    /// wait in the sockets while the worker computes.
    pub fn start_pull(&mut self, keys: &[u64]) -> Result<()> {
        if self.pending.is_some() {
            return Err(Error::Usage("a prefetch is already in flight".into()));
        }
        let (per, place) = self.split_unique(keys);
        let reqs = self.row_requests(OP_PULL, self.clock + 1, &per);
        self.send_all(&reqs)?;
        self.pending = Some(Prefetch { per, place });
        Ok(())
    }

    /// Whether a prefetch is in flight.
    pub fn prefetching(&self) -> bool {
        self.pending.is_some()
    }

    /// The rows asked for by [`Client::start_pull`], in the order of its keys.
    pub fn finish_pull(&mut self, out: &mut [f32]) -> Result<()> {
        let Some(p) = self.pending.take() else {
            return Err(Error::Usage("no prefetch in flight".into()));
        };
        let sent: Vec<bool> = p.per.iter().map(|k| !k.is_empty()).collect();
        let answers = self.recv_all(&sent)?;
        self.scatter_rows(answers, &p.per, &p.place, out)
    }

    /// The rows of `keys` without creating any, once every worker's pushes so far are
    /// applied (evaluation: every worker reads the same rows).
    pub fn peek(&mut self, keys: &[u64], out: &mut [f32]) -> Result<()> {
        self.read_rows(OP_PEEK, keys, out)
    }

    /// This step's row gradients (one row per key occurrence, in batch order: the server
    /// sums repeated keys in the order a replicated table would).
    pub fn push(&mut self, keys: &[u64], grads: &[f32]) -> Result<()> {
        let d = self.dim;
        let n = self.conns.len();
        let mut per_keys: Vec<Vec<u64>> = vec![Vec::new(); n];
        let mut per_grads: Vec<Vec<f32>> = vec![Vec::new(); n];
        for (j, &k) in keys.iter().enumerate() {
            let s = shard_of(k, n);
            per_keys[s].push(k);
            per_grads[s].extend_from_slice(&grads[j * d..(j + 1) * d]);
        }
        // Every server hears of every step (sync servers count pushes), even without rows.
        let reqs = per_keys
            .iter()
            .zip(&per_grads)
            .map(|(ks, gs)| {
                let mut b = Vec::with_capacity(25 + ks.len() * 8 + gs.len() * 4);
                b.push(OP_PUSH);
                put_u64(&mut b, self.clock);
                put_keys(&mut b, ks);
                put_f32s(&mut b, gs);
                Some(b)
            })
            .collect();
        self.call(reqs)?;
        self.clock += 1;
        Ok(())
    }

    /// Every server's rows once every worker's pushes so far are applied, merged and sorted
    /// by key ([`TableState::merge`]).
    pub fn export(&mut self) -> Result<TableState> {
        let mut b = vec![OP_EXPORT];
        put_u64(&mut b, self.clock);
        let answers = self.call(vec![Some(b); self.conns.len()])?;
        let mut parts = Vec::with_capacity(answers.len());
        for (i, a) in answers.into_iter().enumerate() {
            let a = a.unwrap_or_default();
            let st = Reader { b: &a }
                .state()
                .map_err(|m| self.conns[i].err(format!("its rows do not decode: {m}")))?;
            parts.push(st);
        }
        TableState::merge(parts).map_err(Error::Usage)
    }

    /// Replace every server's rows by its shard of `rows` (rank 0 only; the workers must
    /// be at a step boundary).
    pub fn load(&mut self, rows: Rows<'_>) -> Result<()> {
        let n = self.conns.len();
        let reqs = (0..n)
            .map(|i| {
                let mut b = vec![OP_LOAD];
                put_rows(&mut b, &rows, i, n);
                Some(b)
            })
            .collect();
        self.call(reqs).map(|_| ())
    }

    /// Every server encodes its rows as a shard file, once every worker's pushes so far are
    /// applied (a step boundary), and keeps it as snapshot `id` for [`Client::write_snapshot`].
    pub fn snapshot(&mut self, id: u64) -> Result<()> {
        let mut b = vec![OP_SNAPSHOT];
        put_u64(&mut b, self.clock);
        put_u64(&mut b, id);
        self.call(vec![Some(b); self.conns.len()]).map(|_| ())
    }

    /// Every server writes snapshot `id` to `dir/<its shard file name>` (atomically, in
    /// parallel); returns (file name, bytes, CRC32C) per server.
    pub fn write_snapshot(
        &mut self,
        id: u64,
        dir: &tusk_storage::Location,
    ) -> Result<Vec<(String, u64, u32)>> {
        let n = self.conns.len();
        let names: Vec<String> = (0..n)
            .map(|i| tusk_embedding::file::shard_file_name(i, n))
            .collect();
        let reqs = names
            .iter()
            .map(|name| {
                let mut b = vec![OP_WRITE];
                put_u64(&mut b, id);
                put_bytes(&mut b, dir.join(name).url().as_bytes());
                Some(b)
            })
            .collect();
        let answers = self.call(reqs)?;
        answers
            .into_iter()
            .zip(names)
            .enumerate()
            .map(|(i, (a, name))| {
                let a = a.unwrap_or_default();
                let mut r = Reader { b: &a };
                let len = r.u64("file size").map_err(|m| self.conns[i].err(m))?;
                let crc = r.u32("file CRC32C").map_err(|m| self.conns[i].err(m))?;
                Ok((name, len, crc))
            })
            .collect()
    }

    /// Tell every server the run is over (rank 0): each exits once its workers disconnect.
    pub fn finish(&mut self) -> Result<()> {
        self.call(vec![Some(vec![OP_FINISH]); self.conns.len()])
            .map(|_| ())
    }

    /// Rows and table bytes per server.
    pub fn stats(&mut self) -> Result<Vec<ShardStats>> {
        let answers = self.call(vec![Some(vec![OP_STATS]); self.conns.len()])?;
        answers
            .into_iter()
            .enumerate()
            .map(|(i, a)| {
                let a = a.unwrap_or_default();
                let mut r = Reader { b: &a };
                let rows = r.u64("rows").map_err(|m| self.conns[i].err(m))?;
                let bytes = r.u64("bytes").map_err(|m| self.conns[i].err(m))?;
                let max_lead = r.u64("lead").map_err(|m| self.conns[i].err(m))?;
                Ok(ShardStats {
                    rows,
                    bytes,
                    max_lead,
                })
            })
            .collect()
    }
}
