//! Live entity features (`tusk serve --features hbase://HOST:PORT/TABLE`): before a request
//! is scored, the columns its rows lack are read from HBase instead of the version's frozen
//! entity tables.
//!
//! For each row, the entities it names (the key columns of the version's entity tables, e.g.
//! `user_id`) are looked up as rows `COLUMN:ID`, all rows of a request in one multi-get, but
//! only when the model reads a column the row lacks. A column HBase gives is added to the row
//! (a request's own value always wins); what HBase lacks — an entity it has no row for, a
//! column its row does not hold — still comes from the version's tables. When the lookup fails
//! or runs over its budget, the request is answered from the version's tables alone (counted in
//! `/metrics`, and said in the `x-tusk-features: fallback` header); a cell that holds no
//! readable value is a `502` naming the row and column.

use std::collections::BTreeSet;

use tusk_data::Row as _;
use tusk_data::entities::key_text;
use tusk_hbase::online::{LookupError, Online};
use tusk_records::example::Kind;
use tusk_train::Scorer;

use crate::rows::{ReqRow, Val};

/// Where a request's entity columns came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// No lookup was needed (or no store is configured).
    Version,
    /// HBase answered.
    HBase,
    /// HBase failed or was slow: the version's tables.
    Fallback,
}

impl Source {
    /// The `x-tusk-features` header value.
    pub fn header(self) -> &'static str {
        match self {
            Source::Version => "version",
            Source::HBase => "hbase",
            Source::Fallback => "fallback",
        }
    }
}

/// A cell's value as a request value.
pub fn val(v: &Kind) -> Val {
    match v {
        Kind::Int64List(l) => Val::Ints(l.value.clone()),
        Kind::FloatList(l) => Val::Floats(l.value.clone()),
        Kind::BytesList(l) => Val::Bytes(l.value.clone()),
    }
}

/// Fill the columns `rows` lack from `store`: those the model reads, and `also`; the error is
/// a bad cell's message (a 502).
pub async fn fill(
    store: &Online,
    sc: &Scorer,
    rows: &mut [ReqRow],
    also: &[&str],
) -> Result<Source, String> {
    let Some(ents) = &sc.entities else {
        return Ok(Source::Version);
    };
    let keys: Vec<&str> = ents.keys().collect();
    let f = &sc.space.config;
    let read: BTreeSet<&str> = f
        .sparse
        .iter()
        .chain(f.dense.iter())
        .map(String::as_str)
        .chain(also.iter().copied())
        .filter(|c| !keys.contains(c))
        .collect();
    // per row: the entity row keys it needs
    let mut need: Vec<Vec<String>> = Vec::with_capacity(rows.len());
    for r in rows.iter() {
        let lacks = read.iter().any(|c| r.get(c).is_none());
        let mut ks = Vec::new();
        if lacks {
            for k in &keys {
                if let Some(id) = r.get(k).and_then(key_text) {
                    ks.push(format!("{k}:{id}"));
                }
            }
        }
        need.push(ks);
    }
    let all: Vec<String> = need.iter().flatten().cloned().collect();
    if all.is_empty() {
        return Ok(Source::Version);
    }
    let found = match store.lookup(&all).await {
        Ok(found) => found,
        Err(LookupError::Unavailable(m)) => {
            warn_unavailable(&m);
            return Ok(Source::Fallback);
        }
        Err(LookupError::BadCell(m)) => return Err(m),
    };
    for (r, ks) in rows.iter_mut().zip(need) {
        for k in ks {
            let Some(e) = found.get(&k) else { continue };
            for (col, v) in &e.columns {
                if read.contains(col.as_str()) && r.get(col).is_none() {
                    r.0.push((col.clone(), val(v)));
                }
            }
        }
    }
    Ok(Source::HBase)
}

/// Say on stderr that HBase is unavailable, at most once every 10 seconds.
fn warn_unavailable(message: &str) {
    use std::sync::Mutex;
    use std::time::{Duration, Instant};
    static LAST: Mutex<Option<Instant>> = Mutex::new(None);
    let mut last = LAST.lock().unwrap_or_else(|p| p.into_inner());
    if last.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
        *last = Some(Instant::now());
        eprintln!("tusk serve: features from the version's tables: {message}");
    }
}
