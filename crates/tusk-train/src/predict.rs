//! Batch scoring: rows carrying a model's feature columns in, the same rows plus a `score`
//! column (the predicted probability) out.
//!
//! Input: anything [`Source`] reads (CSV with a header, TFRecord, Parquet, datasets, globs).
//! Output by file name: `.csv` (the input's columns, then `score`), `.tfrecord[.gz|.zz]`
//! (each input Example with a `score` float feature) or `.parquet` (the same Examples as
//! columns). The output appears atomically when
//! scoring succeeded; a failure leaves nothing behind.

use std::io::Write;

use tusk_data::entities::to_example;
use tusk_data::{BatchOptions, Cell, Source, batches};
use tusk_model::models::sigmoid;
use tusk_records::dataset::{Format, Input, Output, convert};
use tusk_records::example::{Example, Feature, FloatList, Kind};
use tusk_records::tfrecord::{self, Compression};
use tusk_storage::Storage;

use crate::error::{Error, Result};
use crate::trainer::Scorer;

/// Rows scored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scored {
    /// Rows written.
    pub rows: u64,
    /// Feature columns of the model that the first input row lacked, also after filling from
    /// the version's entity tables (scored as missing).
    pub missing_columns: Vec<String>,
    /// Rows naming an id that the version's entity tables do not know (its columns were scored
    /// as missing), with the first such `(key column, id)`.
    pub unknown_entities: (u64, Option<(String, String)>),
}

enum Out {
    Csv(
        Box<csv::Writer<tusk_storage::AtomicWriter>>,
        Option<Vec<String>>,
    ),
    Tf(Box<tfrecord::FileWriter>),
}

/// The logits of `source`'s rows, batch by batch in source order, as batch scoring computes
/// them (the version's entity tables fill the columns a row lacks).
pub fn logits(
    source: Source,
    scorer: &Scorer,
) -> impl Iterator<Item = tusk_data::Result<Vec<f32>>> + '_ {
    batches(
        source,
        scorer.space.clone(),
        BatchOptions {
            batch_size: 4096,
            shuffle_buffer: 0,
            seed: 0,
            skip_batches: 0,
            with_label: false,
            group: None,
            negatives: None,
            prefetch: 4,
            shard: None,
            shard_by_rows: false,
            entities: scorer.entities.clone(),
        },
    )
    .map(|b| b.map(|b| scorer.logits(&b)))
}

/// Score `input` with `scorer` into `output`.
pub fn predict(
    storage: &Storage,
    scorer: &Scorer,
    input: &str,
    output: &str,
    progress: impl FnMut(u64),
) -> Result<Scored> {
    let lower = output.to_ascii_lowercase();
    if !(lower.ends_with(".parquet") || lower.ends_with(".pq")) {
        return predict_into(storage, scorer, input, output, progress);
    }
    // Parquet needs the schema up front: score into a hidden TFRecord beside the output, then
    // convert it (schema pass + copy, written atomically) and remove the temporary file.
    let out_loc = storage.open(output)?;
    let tmp = out_loc
        .parent()
        .join(&format!(".{}.scoring.tfrecord", out_loc.file_name()));
    let result = predict_into(storage, scorer, input, &tmp.url(), progress).and_then(|scored| {
        let records = Input::open(storage, &tmp.url(), None)?;
        convert(&records, &Output::File(out_loc, Format::Parquet), |_| {})?;
        Ok(scored)
    });
    let _ = tmp.delete();
    result
}

fn predict_into(
    storage: &Storage,
    scorer: &Scorer,
    input: &str,
    output: &str,
    mut progress: impl FnMut(u64),
) -> Result<Scored> {
    let source = Source::open(storage, input)?;
    let out_loc = storage.open(output)?;
    let lower = output.to_ascii_lowercase();
    let mut out = if lower.ends_with(".csv") {
        Out::Csv(Box::new(csv::Writer::from_writer(out_loc.writer()?)), None)
    } else if lower.contains(".tfrecord") {
        Out::Tf(Box::new(tfrecord::FileWriter::create(
            &out_loc,
            Some(Compression::from_name(&lower)),
        )?))
    } else {
        return Err(Error::Output {
            file: output.into(),
            message: "name the output .csv, .parquet or .tfrecord (optionally .gz)".into(),
        });
    };
    // Scores come from the batch pipeline in source order; the rows themselves are read a
    // second time, in the same order, for pass-through.
    let mut scores = logits(source.clone(), scorer);
    let mut pending: std::vec::IntoIter<f32> = Vec::new().into_iter();
    let mut rows = 0u64;
    let mut missing_columns = Vec::new();
    let mut unknown_entities = (0u64, None);
    let werr = |e: std::io::Error| Error::Output {
        file: output.to_string(),
        message: e.to_string(),
    };
    source.for_each_row(|row, pos| {
        let filled = scorer.entities.as_ref().map(|e| e.fill(row));
        if let Some(f) = &filled
            && let Some((key, id)) = f.unknown.first()
        {
            unknown_entities.0 += 1;
            unknown_entities
                .1
                .get_or_insert_with(|| (key.to_string(), id.clone()));
        }
        if rows == 0 {
            let cfg = &scorer.space.config;
            let seen: &dyn tusk_data::Row = match &filled {
                Some(f) => f,
                None => row,
            };
            missing_columns = cfg
                .sparse
                .iter()
                .chain(&cfg.dense)
                .filter(|c| seen.get(c).is_none())
                .cloned()
                .collect();
        }
        let score = loop {
            if let Some(z) = pending.next() {
                break sigmoid(z);
            }
            match scores.next() {
                Some(Ok(v)) => pending = v.into_iter(),
                Some(Err(e)) => return Err(e),
                None => {
                    return Err(tusk_data::Error::Csv {
                        file: pos.file.into(),
                        message:
                            "scores ran out before the rows (the input changed while being read?)"
                                .into(),
                    });
                }
            }
        };
        match &mut out {
            Out::Csv(w, header) => {
                if header.is_none() {
                    let mut cols = row.columns();
                    cols.retain(|c| c != "score");
                    let mut h = cols.clone();
                    h.push("score".into());
                    w.write_record(&h).map_err(|e| csv_err(output, e))?;
                    *header = Some(cols);
                }
                let cols = header.as_ref().map(Vec::as_slice).unwrap_or(&[]);
                let mut rec: Vec<String> = cols.iter().map(|c| cell_text(row.get(c))).collect();
                rec.push(format!("{score}"));
                w.write_record(&rec).map_err(|e| csv_err(output, e))?;
            }
            Out::Tf(w) => {
                let mut ex: Example = to_example(row);
                ex.features
                    .get_or_insert_with(Default::default)
                    .feature
                    .insert(
                        "score".into(),
                        Feature {
                            kind: Some(Kind::FloatList(FloatList { value: vec![score] })),
                        },
                    );
                w.write(&tusk_records::dataset::encode(&ex)).map_err(|e| {
                    tusk_data::Error::Csv {
                        file: output.into(),
                        message: e.to_string(),
                    }
                })?;
            }
        }
        rows += 1;
        if rows.is_multiple_of(65_536) {
            progress(rows);
        }
        Ok(true)
    })?;
    progress(rows);
    match out {
        Out::Csv(w, _) => {
            let inner = w.into_inner().map_err(|e| werr(e.into_error()))?;
            let mut inner = inner;
            inner.flush().map_err(werr)?;
            inner.finish()?;
        }
        Out::Tf(w) => {
            w.finish()?;
        }
    }
    Ok(Scored {
        rows,
        missing_columns,
        unknown_entities,
    })
}

fn csv_err(file: &str, e: csv::Error) -> tusk_data::Error {
    tusk_data::Error::Csv {
        file: file.into(),
        message: e.to_string(),
    }
}

fn join<T: ToString>(v: &[T]) -> String {
    v.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(" ")
}

fn cell_text(cell: Option<Cell<'_>>) -> String {
    match cell {
        None => String::new(),
        Some(Cell::Text(t)) => t.to_string(),
        Some(Cell::Ints(v)) => join(v),
        Some(Cell::Floats(v)) => join(v),
        Some(Cell::Bytes(v)) => v
            .iter()
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .collect::<Vec<_>>()
            .join(" "),
    }
}
