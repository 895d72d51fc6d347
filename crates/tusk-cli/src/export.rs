//! `tusk export hbase`: a model version's entity rows and embeddings into an HBase table (see
//! `tusk_hbase::export`), and the `--features hbase://…` lookups of `tusk predict`.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use tusk_data::Entities;
use tusk_data::entities::key_text;
use tusk_hbase::export::{self, EntityRow};
use tusk_hbase::online::{LookupError, Online};
use tusk_hbase::{HBase, Options};
use tusk_storage::Storage;
use tusk_train::Scorer;

/// Copy a model version's serving state into an online store.
#[derive(Debug, Subcommand)]
pub enum ExportCommand {
    /// A version's entity feature rows and embeddings into an HBase table, through HBase's
    /// REST gateway: row key COLUMN:ID (e.g. user_id:42), family `f` (one cell per feature,
    /// a serialized tf.train.Feature), family `e` (the entity's embedding row, little-endian
    /// f32), every cell stamped with the version; the pointer row `_tusk:current` is set to the
    /// version last. Creates the table when it does not exist; a re-run after a kill continues
    /// where the last one stopped.
    Hbase(HbaseArgs),
}

/// Arguments of `tusk export hbase`.
#[derive(Debug, Args)]
pub struct HbaseArgs {
    /// Model URL.
    #[arg(long)]
    model: String,
    /// Model version to export (default: the newest committed one).
    #[arg(long = "model-version", value_name = "N")]
    model_version: Option<u64>,
    /// The HBase table.
    #[arg(long)]
    table: String,
    /// The HBase REST gateway, http://HOST:PORT.
    #[arg(long)]
    rest: String,
    /// Rows per put request.
    #[arg(long, default_value_t = 1000)]
    batch_rows: usize,
    /// Put requests in flight.
    #[arg(long, default_value_t = 4)]
    in_flight: usize,
}

pub fn run(cmd: ExportCommand) -> Result<()> {
    match cmd {
        ExportCommand::Hbase(a) => run_hbase(a),
    }
}

/// The embedding row of entity `id` of key column `key`, if the model has one.
fn embedding(scorer: &Scorer, key: &str, id: &str) -> Option<Vec<f32>> {
    if !scorer.space.config.sparse.iter().any(|c| c == key) {
        return None;
    }
    let k = tusk_data::features::text_key(key, id.as_bytes());
    scorer.table.get(k).map(<[f32]>::to_vec)
}

fn run_hbase(a: HbaseArgs) -> Result<()> {
    let storage = Storage::new()?;
    let t0 = std::time::Instant::now();
    let scorer = Scorer::load(&storage, &a.model, a.model_version)?;
    let loaded = t0.elapsed();
    let Some(ents) = scorer.entities.clone() else {
        bail!(
            "{} version {} keeps no entity tables (data.entities): nothing to export",
            a.model,
            scorer.version
        );
    };
    let client = HBase::new(&a.rest, Options::default()).context("--rest")?;
    let keys: Vec<String> = ents.keys().map(str::to_string).collect();
    let total: u64 = keys
        .iter()
        .map(|k| ents.ids(k).map_or(0, |ids| ids.len() as u64))
        .sum();
    let rows = keys.iter().flat_map(|k| {
        let ids: Vec<String> = ents
            .ids(k)
            .unwrap_or_default()
            .into_iter()
            .map(str::to_string)
            .collect();
        let (ents, scorer) = (&ents, &scorer);
        ids.into_iter().map(move |id| {
            let mut features: Vec<(String, Vec<u8>)> = ents
                .get(k, &id)
                .and_then(|ex| ex.features.as_ref())
                .map(|f| {
                    f.feature
                        .iter()
                        .filter_map(|(c, f)| {
                            f.kind
                                .as_ref()
                                .map(|kind| (c.clone(), tusk_hbase::value::encode(kind)))
                        })
                        .collect()
                })
                .unwrap_or_default();
            features.sort_by(|x, y| x.0.cmp(&y.0));
            let embeddings = embedding(scorer, k, &id)
                .map(|e| vec![(k.clone(), e)])
                .unwrap_or_default();
            EntityRow {
                key: format!("{k}:{id}"),
                features,
                embeddings,
            }
        })
    });
    let pb = crate::records::progress_bar("exporting");
    pb.set_length(total);
    let t1 = std::time::Instant::now();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the HTTP runtime")?;
    let report = rt.block_on(export::export(
        &client,
        &a.table,
        scorer.version,
        total,
        rows,
        export::Options {
            batch_rows: a.batch_rows,
            in_flight: a.in_flight,
        },
        |n| pb.set_position(n),
    ))?;
    pb.finish_and_clear();
    let secs = t1.elapsed().as_secs_f64();
    if report.created {
        eprintln!("created HBase table {} (families f, e, m)", a.table);
    }
    if report.already {
        eprintln!(
            "{} already holds version {} ({} rows): nothing to do",
            a.table, scorer.version, report.rows
        );
    } else {
        if report.resumed_from > 0 {
            eprintln!(
                "resumed after {} rows a previous run had written",
                report.resumed_from
            );
        }
        eprintln!(
            "exported version {} of {}: {} entity rows ({} written now, {:.0} rows/s; the \
             version loaded in {:.1} s) → HBase table {}; _tusk:current → {}",
            scorer.version,
            a.model,
            report.rows,
            report.written,
            report.written as f64 / secs.max(1e-9),
            loaded.as_secs_f64(),
            a.table,
            scorer.version
        );
    }
    Ok(())
}

/// `--features hbase://…` for batch scoring: the rows of the entities `input` names, read from
/// HBase, over the version's own tables. Fails if HBase does not answer.
pub fn overlay_features(
    storage: &Storage,
    scorer: &mut Scorer,
    input: &str,
    url: &str,
) -> Result<()> {
    let Some(ents) = scorer.entities.clone() else {
        bail!(
            "--features {url}: version {} keeps no entity tables (data.entities), so there are \
             no entity keys to look up",
            scorer.version
        );
    };
    let keys: Vec<String> = ents.keys().map(str::to_string).collect();
    let mut wanted = std::collections::BTreeSet::new();
    let source = tusk_data::Source::open(storage, input)?;
    source.for_each_row(|row, _| {
        for k in &keys {
            if let Some(id) = row.get(k).and_then(key_text) {
                wanted.insert(format!("{k}:{id}"));
            }
        }
        Ok(true)
    })?;
    let store =
        Online::new(url, Duration::from_secs(120), Duration::ZERO).map_err(anyhow::Error::msg)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the HTTP runtime")?;
    let wanted: Vec<String> = wanted.into_iter().collect();
    let mut merged: Entities = (*ents).clone();
    let mut found = 0usize;
    for chunk in wanted.chunks(10_000) {
        let rows = rt.block_on(store.lookup(chunk)).map_err(|e| match e {
            LookupError::Unavailable(m) | LookupError::BadCell(m) => {
                anyhow::anyhow!("--features {url}: {m}")
            }
        })?;
        for (key, e) in rows {
            if let Some((k, id)) = key.split_once(':') {
                merged.set_columns(k, id, e.columns.iter().cloned());
                found += 1;
            }
        }
    }
    eprintln!(
        "features: {found} of {} entity rows from HBase table {}, the rest from version {}'s tables",
        wanted.len(),
        store.table(),
        scorer.version
    );
    scorer.entities = Some(Arc::new(merged));
    Ok(())
}
