//! Live entity features from HBase, for `tusk serve` and `tusk predict` (`--features
//! hbase://HOST:PORT/TABLE`).
//!
//! The table is laid out by [`crate::export`]: one row per entity, key `COLUMN:ID`
//! (`user_id:42`), its feature columns in family `f` (qualifier = column name), cells stamped
//! with the model version that wrote them, and the pointer row `_tusk:current` naming the
//! version whose rows are current. A lookup reads the entities' rows and the pointer row in one
//! multi-get and takes, per column, the newest cell another system wrote live (a wall-clock
//! timestamp, above [`LIVE_MIN`]) after the pointer last moved, else the newest cell of a
//! version no newer than the pointer's, else the newest live cell: an export in progress is
//! never mixed in, a `history` a streaming job wrote a moment ago is, and an export that
//! becomes current supersedes live cells written before it did.
//!
//! A lookup must finish inside its budget; one that fails or times out is an
//! [`LookupError::Unavailable`], and the caller falls back to the version's own tables. With a
//! TTL, rows (and misses, and the pointer) are cached that long.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::client::{self, HBase, Row};
use crate::value;
use tusk_records::example::Kind;

/// The pointer row: `m:version` names the version whose rows are current.
pub const POINTER_ROW: &[u8] = b"_tusk:current";
/// The export progress row: `m:vN` is how many rows of version N's export are written.
pub const PROGRESS_ROW: &[u8] = b"_tusk:export";
/// The family of entity features.
pub const FEATURES: &str = "f";
/// The family of embedding rows.
pub const EMBEDDINGS: &str = "e";
/// The family of tusk's own cells (pointer, progress).
pub const META: &str = "m";
/// The pointer row's column.
pub const VERSION_COLUMN: &[u8] = b"m:version";
/// Versions of a cell a lookup reads (the families keep as many).
pub const VERSIONS: u32 = 3;
/// Timestamps from here on are wall-clock milliseconds (cells written live by other systems,
/// after 1973); below it they are model versions.
pub const LIVE_MIN: i64 = 100_000_000_000;

/// `hbase://HOST:PORT/TABLE` → (`http://HOST:PORT`, TABLE).
pub fn parse_url(url: &str) -> Result<(String, String), String> {
    let bad =
        || format!("{url}: expected hbase://HOST:PORT/TABLE (HOST:PORT: the HBase REST gateway)");
    let rest = url.strip_prefix("hbase://").ok_or_else(bad)?;
    let (hostport, table) = rest.split_once('/').ok_or_else(bad)?;
    let table = table.trim_end_matches('/');
    if hostport.is_empty() || table.is_empty() || table.contains('/') {
        return Err(bad());
    }
    Ok((format!("http://{hostport}"), table.to_string()))
}

/// An entity's feature columns as a lookup selected them.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Entity {
    /// (column, value), sorted by column.
    pub columns: Vec<(String, Kind)>,
}

/// Why a lookup gave nothing.
#[derive(Debug, Clone, PartialEq)]
pub enum LookupError {
    /// HBase failed or was too slow: use the version's own tables.
    Unavailable(String),
    /// A cell holds something that is not a value: an error naming row and column.
    BadCell(String),
}

/// Upper bounds (seconds) of the lookup latency histogram.
pub const BUCKETS: [f64; 10] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

/// What lookups did, for `/metrics`.
#[derive(Debug, Default)]
pub struct Stats {
    /// Lookups (one per request that needed rows).
    pub lookups: AtomicU64,
    /// Entity rows asked for.
    pub rows: AtomicU64,
    /// Of those, rows HBase does not have.
    pub misses: AtomicU64,
    /// Of those, rows answered from the cache.
    pub cache_hits: AtomicU64,
    /// Lookups that failed or ran over the budget (answered from the version's tables).
    pub errors: AtomicU64,
    /// Lookups that found an unreadable cell.
    pub bad_cells: AtomicU64,
    /// Lookup latency: count per bucket of [`BUCKETS`] (cumulative), then the total.
    pub buckets: [AtomicU64; BUCKETS.len()],
    /// Lookups timed.
    pub count: AtomicU64,
    /// Their total time, microseconds.
    pub sum_us: AtomicU64,
}

impl Stats {
    fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        for (b, le) in self.buckets.iter().zip(BUCKETS) {
            if s <= le {
                b.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_us
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }

    /// The Prometheus exposition of these counters.
    pub fn render(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        for (name, help, v) in [
            (
                "tusk_features_lookups_total",
                "Feature lookups in HBase (one per request needing entity rows).",
                &self.lookups,
            ),
            (
                "tusk_features_rows_total",
                "Entity rows asked for.",
                &self.rows,
            ),
            (
                "tusk_features_misses_total",
                "Entity rows HBase does not have (filled from the version's tables).",
                &self.misses,
            ),
            (
                "tusk_features_cache_hits_total",
                "Entity rows answered from the TTL cache.",
                &self.cache_hits,
            ),
            (
                "tusk_features_errors_total",
                "Lookups that failed or ran over the budget (answered from the version's tables).",
                &self.errors,
            ),
            (
                "tusk_features_bad_cells_total",
                "Lookups refused because a cell holds no readable value.",
                &self.bad_cells,
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                v.load(Ordering::Relaxed)
            );
        }
        let name = "tusk_features_lookup_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Time of HBase feature lookups (cache misses).\n# TYPE {name} histogram"
        );
        for (b, le) in self.buckets.iter().zip(BUCKETS) {
            let _ = writeln!(
                out,
                "{name}_bucket{{le=\"{le}\"}} {}",
                b.load(Ordering::Relaxed)
            );
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(
            out,
            "{name}_sum {}",
            self.sum_us.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "{name}_count {count}");
        out
    }
}

type Cached = (Instant, Option<Arc<Entity>>);

/// Live lookups in one table.
pub struct Online {
    client: HBase,
    table: String,
    budget: Duration,
    ttl: Duration,
    cache: Mutex<HashMap<Vec<u8>, Cached>>,
    pointer: Mutex<Option<(Instant, Option<Pointer>)>>,
    /// What lookups did.
    pub stats: Stats,
}

/// Most cached rows; the cache is emptied when full.
const CACHE_ROWS: usize = 1 << 20;

impl Online {
    /// Lookups in `hbase://HOST:PORT/TABLE`, each within `budget`; rows cached for `ttl`
    /// (zero: no cache).
    pub fn new(url: &str, budget: Duration, ttl: Duration) -> Result<Online, String> {
        let (rest, table) = parse_url(url)?;
        let client = HBase::new(
            &rest,
            client::Options {
                timeout: budget,
                retry_for: budget,
            },
        )
        .map_err(|e| e.to_string())?;
        Ok(Online {
            client,
            table,
            budget,
            ttl,
            cache: Mutex::new(HashMap::new()),
            pointer: Mutex::new(None),
            stats: Stats::default(),
        })
    }

    /// The table.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// The client (for checks at start-up).
    pub fn client(&self) -> &HBase {
        &self.client
    }

    /// The rows of entity `keys` (`COLUMN:ID`) that HBase has, their columns selected as the
    /// module says; rows it lacks are absent from the map.
    pub async fn lookup(
        &self,
        keys: &[String],
    ) -> Result<HashMap<String, Arc<Entity>>, LookupError> {
        let mut out = HashMap::new();
        if keys.is_empty() {
            return Ok(out);
        }
        self.stats.lookups.fetch_add(1, Ordering::Relaxed);
        let mut wanted: Vec<&String> = keys.iter().collect();
        wanted.sort();
        wanted.dedup();
        self.stats
            .rows
            .fetch_add(wanted.len() as u64, Ordering::Relaxed);
        let now = Instant::now();
        let mut fetch: Vec<&String> = Vec::new();
        if self.ttl.is_zero() {
            fetch = wanted;
        } else {
            let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            for k in wanted {
                match cache.get(k.as_bytes()) {
                    Some((at, row)) if now.duration_since(*at) < self.ttl => {
                        self.stats.cache_hits.fetch_add(1, Ordering::Relaxed);
                        match row {
                            Some(r) => {
                                out.insert(k.clone(), r.clone());
                            }
                            None => {
                                self.stats.misses.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                    _ => fetch.push(k),
                }
            }
        }
        if fetch.is_empty() {
            return Ok(out);
        }
        let pointer = if self.ttl.is_zero() {
            None
        } else {
            self.pointer
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .filter(|(at, _)| now.duration_since(*at) < self.ttl)
                .map(|(_, p)| p)
        };
        let mut ask: Vec<&[u8]> = fetch.iter().map(|k| k.as_bytes()).collect();
        if pointer.is_none() {
            ask.push(POINTER_ROW);
        }
        let started = Instant::now();
        let got = tokio::time::timeout(
            self.budget,
            self.client.multi_get(&self.table, &ask, VERSIONS),
        )
        .await;
        let rows = match got {
            Ok(Ok(rows)) => rows,
            Ok(Err(e)) => {
                self.stats.errors.fetch_add(1, Ordering::Relaxed);
                return Err(LookupError::Unavailable(e.to_string()));
            }
            Err(_) => {
                self.stats.errors.fetch_add(1, Ordering::Relaxed);
                return Err(LookupError::Unavailable(format!(
                    "HBase table `{}` did not answer within {:?} ({})",
                    self.table,
                    self.budget,
                    self.client.url()
                )));
            }
        };
        self.stats.observe(started.elapsed());
        let pointer = match pointer {
            Some(p) => p,
            None => {
                let p = rows
                    .iter()
                    .find(|r| r.key == POINTER_ROW)
                    .map(|r| pointer_version(r, &self.table))
                    .transpose()
                    .map_err(|e| {
                        self.stats.bad_cells.fetch_add(1, Ordering::Relaxed);
                        LookupError::BadCell(e.to_string())
                    })?;
                if !self.ttl.is_zero() {
                    *self.pointer.lock().unwrap_or_else(|p| p.into_inner()) = Some((now, p));
                }
                p
            }
        };
        let mut found: HashMap<Vec<u8>, Arc<Entity>> = HashMap::new();
        for r in &rows {
            if r.key == POINTER_ROW {
                continue;
            }
            let e = select(r, pointer, &self.table).map_err(|e| {
                self.stats.bad_cells.fetch_add(1, Ordering::Relaxed);
                LookupError::BadCell(e.to_string())
            })?;
            found.insert(r.key.clone(), Arc::new(e));
        }
        let mut cache =
            (!self.ttl.is_zero()).then(|| self.cache.lock().unwrap_or_else(|p| p.into_inner()));
        if let Some(c) = cache.as_mut()
            && c.len() + fetch.len() > CACHE_ROWS
        {
            c.clear();
        }
        for k in fetch {
            let e = found.get(k.as_bytes()).cloned();
            match &e {
                Some(e) => {
                    out.insert(k.clone(), e.clone());
                }
                None => {
                    self.stats.misses.fetch_add(1, Ordering::Relaxed);
                }
            }
            if let Some(c) = cache.as_mut() {
                c.insert(k.as_bytes().to_vec(), (now, e));
            }
        }
        Ok(out)
    }
}

/// What the pointer row says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pointer {
    /// The current version.
    pub version: u64,
    /// When it became current (the pointer cell's timestamp, ms).
    pub since: i64,
}

/// The version the pointer row names, and since when.
pub fn pointer_version(r: &Row, table: &str) -> client::Result<Pointer> {
    let cell = r.cells.iter().find(|c| c.column == VERSION_COLUMN);
    let text = cell.map(|c| String::from_utf8_lossy(&c.value).trim().to_string());
    text.as_deref()
        .and_then(|t| t.parse().ok())
        .map(|version| Pointer {
            version,
            since: cell.and_then(|c| c.timestamp).unwrap_or(0),
        })
        .ok_or_else(|| client::Error::Cell {
            table: table.into(),
            row: r.key_text(),
            column: String::from_utf8_lossy(VERSION_COLUMN).into_owned(),
            message: format!(
                "expected a model version number, found {:?}",
                text.unwrap_or_default()
            ),
        })
}

/// A row's feature columns, chosen per column as the module says (with no pointer row: the
/// newest cell).
pub fn select(r: &Row, pointer: Option<Pointer>, table: &str) -> client::Result<Entity> {
    let prefix = format!("{FEATURES}:");
    // per column: (newest live cell since the pointer moved, newest version cell ≤ pointer,
    // newest cell)
    type Best<'a> = Option<(i64, &'a [u8])>;
    fn newer<'a>(slot: &mut Best<'a>, ts: i64, v: &'a [u8]) {
        if slot.is_none_or(|(t, _)| t < ts) {
            *slot = Some((ts, v));
        }
    }
    let mut by_col: Vec<(String, [Best<'_>; 3])> = Vec::new();
    for c in &r.cells {
        let Some(q) = c.column.strip_prefix(prefix.as_bytes()) else {
            continue;
        };
        let ts = c.timestamp.unwrap_or(i64::MAX);
        let col = String::from_utf8_lossy(q).into_owned();
        let i = match by_col.iter().position(|(name, _)| *name == col) {
            Some(i) => i,
            None => {
                by_col.push((col, [None; 3]));
                by_col.len() - 1
            }
        };
        let slots = &mut by_col[i].1;
        let v = c.value.as_slice();
        match pointer {
            None => newer(&mut slots[2], ts, v),
            Some(p) if ts >= LIVE_MIN => {
                if ts >= p.since {
                    newer(&mut slots[0], ts, v);
                }
                newer(&mut slots[2], ts, v);
            }
            Some(p) if ts <= p.version as i64 => newer(&mut slots[1], ts, v),
            // a version newer than the pointer: an export in progress
            Some(_) => {}
        }
    }
    by_col.sort_by(|a, b| a.0.cmp(&b.0));
    let mut columns = Vec::with_capacity(by_col.len());
    for (col, [live, version, newest]) in by_col {
        let Some((_, v)) = live.or(version).or(newest) else {
            continue;
        };
        let v = value::decode(v).map_err(|message| client::Error::Cell {
            table: table.into(),
            row: r.key_text(),
            column: format!("{prefix}{col}"),
            message,
        })?;
        columns.push((col, v));
    }
    Ok(Entity { columns })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::Cell;

    fn cell(col: &str, ts: i64, v: &str) -> Cell {
        Cell {
            column: col.as_bytes().to_vec(),
            timestamp: Some(ts),
            value: v.as_bytes().to_vec(),
        }
    }

    #[test]
    fn urls() {
        assert_eq!(
            parse_url("hbase://h:8080/feats").unwrap(),
            ("http://h:8080".to_string(), "feats".to_string())
        );
        for bad in [
            "hbase://h:8080",
            "hbase:///t",
            "http://h/t",
            "hbase://h/a/b",
        ] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn live_cells_win_and_versions_past_the_pointer_are_ignored() {
        let r = Row {
            key: b"user_id:1".to_vec(),
            cells: vec![
                cell("e:user_id", 2, "x"),
                cell("f:city", 3, "rome"),
                cell("f:city", 2, "oslo"),
                cell("f:history", 1_700_000_000_000, "9 8"),
                cell("f:history", 2, "1 2"),
                cell("f:new", 3, "only-in-3"),
                cell("f:old_live", 1_600_000_000_000, "7"),
            ],
        };
        let pick = |p| {
            select(&r, p, "t")
                .unwrap()
                .columns
                .into_iter()
                .map(|(c, v)| match v {
                    Kind::BytesList(l) => format!("{c}={}", String::from_utf8_lossy(&l.value[0])),
                    Kind::Int64List(l) => format!("{c}={:?}", l.value),
                    Kind::FloatList(l) => format!("{c}={:?}", l.value),
                })
                .collect::<Vec<_>>()
        };
        let p = |version, since| Some(Pointer { version, since });
        // version 2 current since before the live history was written
        assert_eq!(
            pick(p(2, 1_650_000_000_000)),
            ["city=oslo", "history=[9, 8]", "old_live=[7]"]
        );
        // version 3 became current after it: the export supersedes the live cell
        assert_eq!(
            pick(p(3, 1_800_000_000_000)),
            [
                "city=rome",
                "history=[1, 2]",
                "new=only-in-3",
                "old_live=[7]"
            ]
        );
        assert_eq!(
            pick(None),
            [
                "city=rome",
                "history=[9, 8]",
                "new=only-in-3",
                "old_live=[7]"
            ]
        );
        let bad = Row {
            key: b"user_id:1".to_vec(),
            cells: vec![Cell {
                column: b"f:history".to_vec(),
                timestamp: Some(2),
                value: vec![0xff, 0xfe],
            }],
        };
        let e = select(&bad, p(2, 0), "t").unwrap_err().to_string();
        assert!(e.contains("user_id:1") && e.contains("f:history"), "{e}");
    }
}
