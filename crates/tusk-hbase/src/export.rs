//! `tusk export hbase`: a model version's entity rows and embeddings written into an HBase
//! table, the pointer row flipped last.
//!
//! Layout: row key `COLUMN:ID` (`user_id:42`); family `f`, one cell per feature column holding a
//! serialized `tf.train.Feature`; family `e`, the entity's embedding row(s) as little-endian
//! f32s (qualifier: the embedding's column); every cell stamped with the model version. The
//! rows are written in a fixed order, in batches, a few batches in flight; every 10 batches or
//! every second (and at the end) the progress row (`_tusk:export`, `m:vN`) records how many rows are written, so a
//! re-run after a kill continues from there (rewriting a row writes the same cells at the same
//! timestamp: nothing is duplicated). Then the pointer row `_tusk:current` is set to the
//! version — once: a re-run of a finished export changes nothing.

use futures::StreamExt as _;

use crate::client::{Cell, Error, Family, HBase, Result, Row};
use crate::online::{self, EMBEDDINGS, FEATURES, META, POINTER_ROW, PROGRESS_ROW, VERSIONS};
use crate::value;

/// One entity's cells.
#[derive(Debug, Clone, PartialEq)]
pub struct EntityRow {
    /// `COLUMN:ID`.
    pub key: String,
    /// (column, serialized `tf.train.Feature`).
    pub features: Vec<(String, Vec<u8>)>,
    /// (embedding column, its row).
    pub embeddings: Vec<(String, Vec<f32>)>,
}

/// How to write.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Rows per put request.
    pub batch_rows: usize,
    /// Put requests in flight.
    pub in_flight: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            batch_rows: 1000,
            in_flight: 4,
        }
    }
}

/// What an export did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Rows in the version.
    pub rows: u64,
    /// Rows written by this run.
    pub written: u64,
    /// Rows a previous run had written (skipped).
    pub resumed_from: u64,
    /// Whether the table was created.
    pub created: bool,
    /// Whether the pointer already named this version with every row written (nothing done).
    pub already: bool,
}

/// The families tusk's tables have.
pub fn families() -> Vec<Family> {
    [FEATURES, EMBEDDINGS, META]
        .into_iter()
        .map(|f| Family {
            name: f.into(),
            versions: VERSIONS,
        })
        .collect()
}

/// Create `table` if it does not exist, or check it has tusk's families; `true` if created.
pub async fn ensure_table(client: &HBase, table: &str) -> Result<bool> {
    match client.describe(table).await? {
        None => {
            client.create_table(table, &families()).await?;
            Ok(true)
        }
        Some(have) => {
            for f in families() {
                if !have.iter().any(|h| h.name == f.name) {
                    return Err(Error::NoFamily {
                        table: table.into(),
                        family: f.name,
                        has: have
                            .iter()
                            .map(|h| h.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", "),
                    });
                }
            }
            Ok(false)
        }
    }
}

/// How often the progress row is written.
const RECORD_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

fn progress_column(version: u64) -> Vec<u8> {
    format!("{META}:v{version}").into_bytes()
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Rows written so far of `version`'s export, and the current pointer.
async fn state(
    client: &HBase,
    table: &str,
    version: u64,
) -> Result<(u64, Option<online::Pointer>)> {
    let rows = client
        .multi_get(table, &[PROGRESS_ROW, POINTER_ROW], 1)
        .await?;
    let col = progress_column(version);
    let mut done = 0;
    let mut pointer = None;
    for r in &rows {
        if r.key == PROGRESS_ROW {
            if let Some(c) = r.cells.iter().find(|c| c.column == col) {
                done = String::from_utf8_lossy(&c.value)
                    .trim()
                    .parse()
                    .map_err(|_| Error::Cell {
                        table: table.into(),
                        row: r.key_text(),
                        column: String::from_utf8_lossy(&col).into_owned(),
                        message: "expected a row count".into(),
                    })?;
            }
        } else if r.key == POINTER_ROW {
            pointer = Some(online::pointer_version(r, table)?);
        }
    }
    Ok((done, pointer))
}

fn to_row(e: EntityRow, version: u64) -> Row {
    let ts = Some(version as i64);
    let mut cells = Vec::with_capacity(e.features.len() + e.embeddings.len());
    for (c, v) in e.features {
        cells.push(Cell {
            column: format!("{FEATURES}:{c}").into_bytes(),
            timestamp: ts,
            value: v,
        });
    }
    for (c, v) in e.embeddings {
        cells.push(Cell {
            column: format!("{EMBEDDINGS}:{c}").into_bytes(),
            timestamp: ts,
            value: value::f32s(&v),
        });
    }
    Row {
        key: e.key.into_bytes(),
        cells,
    }
}

/// Write `rows` (`total` of them, always in the same order) as `version` into `table`, then
/// point readers at it. `progress` is told the rows written so far.
pub async fn export(
    client: &HBase,
    table: &str,
    version: u64,
    total: u64,
    rows: impl Iterator<Item = EntityRow>,
    opts: Options,
    mut progress: impl FnMut(u64),
) -> Result<Report> {
    let created = ensure_table(client, table).await?;
    let (done, pointer) = state(client, table, version).await?;
    let current = pointer.is_some_and(|p| p.version == version);
    if current && done >= total {
        progress(total);
        return Ok(Report {
            rows: total,
            written: 0,
            resumed_from: done,
            created,
            already: true,
        });
    }
    let resumed_from = done.min(total);
    progress(resumed_from);
    let mut rest = rows.skip(resumed_from as usize);
    let batch_rows = opts.batch_rows.max(1);
    let batches = std::iter::from_fn(move || {
        let b: Vec<Row> = rest
            .by_ref()
            .take(batch_rows)
            .map(|e| to_row(e, version))
            .collect();
        (!b.is_empty()).then_some(b)
    });
    let mut puts = futures::stream::iter(batches)
        .map(|b| async move {
            let n = b.len() as u64;
            client.put(table, &b).await.map(|()| n)
        })
        .buffered(opts.in_flight.max(1));
    let mut written = 0u64;
    let col = progress_column(version);
    let mut recorded = (std::time::Instant::now(), 0usize);
    while let Some(n) = puts.next().await {
        written += n?;
        let at = resumed_from + written;
        progress(at);
        recorded.1 += 1;
        // Batches finish in order here: `at` rows are all written. Recorded every 10 batches
        // or once a second, whichever comes first, and at the end (a re-run rewrites at most
        // that much).
        if at < total && recorded.1 < 10 && recorded.0.elapsed() < RECORD_EVERY {
            continue;
        }
        recorded = (std::time::Instant::now(), 0);
        client
            .put(
                table,
                &[Row {
                    key: PROGRESS_ROW.to_vec(),
                    cells: vec![Cell {
                        column: col.clone(),
                        timestamp: Some(now_ms()),
                        value: at.to_string().into_bytes(),
                    }],
                }],
            )
            .await?;
    }
    if !current {
        client
            .put(
                table,
                &[Row {
                    key: POINTER_ROW.to_vec(),
                    cells: vec![Cell {
                        column: online::VERSION_COLUMN.to_vec(),
                        timestamp: Some(now_ms()),
                        value: version.to_string().into_bytes(),
                    }],
                }],
            )
            .await?;
    }
    Ok(Report {
        rows: total,
        written,
        resumed_from,
        created,
        already: false,
    })
}
