//! Request rows: JSON values per feature column, checked against the model's columns, encoded
//! exactly as training encoded its rows, and scored.

use base64::Engine as _;
use serde_json::Value;
use tusk_data::{Batch, Cell, Encoded, Row, RowPos};
use tusk_train::Scorer;

/// One column's value in a request row.
#[derive(Debug, Clone, PartialEq)]
pub enum Val {
    /// Integers (ids, counts).
    Ints(Vec<i64>),
    /// Numbers with a fraction somewhere.
    Floats(Vec<f32>),
    /// One string.
    Text(String),
    /// Several strings or binary values.
    Bytes(Vec<Vec<u8>>),
}

/// A request row: (column, value), in request order; absent columns are scored as missing.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReqRow(pub Vec<(String, Val)>);

impl Row for ReqRow {
    fn get(&self, column: &str) -> Option<Cell<'_>> {
        let (_, v) = self.0.iter().find(|(c, _)| c == column)?;
        Some(match v {
            Val::Ints(x) => Cell::Ints(x),
            Val::Floats(x) => Cell::Floats(x),
            Val::Text(x) => Cell::Text(x),
            Val::Bytes(x) => Cell::Bytes(x),
        })
    }

    fn columns(&self) -> Vec<String> {
        self.0.iter().map(|(c, _)| c.clone()).collect()
    }
}

/// The columns a model reads, for checking requests and describing the model.
pub fn model_columns(s: &Scorer) -> Vec<(String, &'static str)> {
    let f = &s.space.config;
    f.sparse
        .iter()
        .map(|c| (c.clone(), "sparse"))
        .chain(f.dense.iter().map(|c| (c.clone(), "dense")))
        .collect()
}

/// A JSON value as a column value; `None` for null (missing).
pub fn value(column: &str, v: &Value) -> Result<Option<Val>, String> {
    let bad = |what: &str| format!("feature `{column}`: {what}");
    Ok(Some(match v {
        Value::Null => return Ok(None),
        Value::Bool(b) => Val::Ints(vec![i64::from(*b)]),
        Value::Number(n) => match n.as_i64() {
            Some(i) => Val::Ints(vec![i]),
            None => Val::Floats(vec![n.as_f64().ok_or_else(|| bad("not a number"))? as f32]),
        },
        Value::String(s) => Val::Text(s.clone()),
        Value::Object(o) => match (o.len(), o.get("b64")) {
            (1, Some(Value::String(b))) => Val::Bytes(vec![
                base64::engine::general_purpose::STANDARD
                    .decode(b)
                    .map_err(|e| bad(&format!("`b64` is not base64: {e}")))?,
            ]),
            _ => return Err(bad("an object must be {\"b64\": \"…\"}")),
        },
        Value::Array(items) => {
            if items.iter().all(|x| x.as_i64().is_some()) {
                Val::Ints(items.iter().filter_map(Value::as_i64).collect())
            } else if items.iter().all(Value::is_number) {
                Val::Floats(
                    items
                        .iter()
                        .filter_map(Value::as_f64)
                        .map(|x| x as f32)
                        .collect(),
                )
            } else if items.iter().all(Value::is_string) {
                Val::Bytes(
                    items
                        .iter()
                        .filter_map(Value::as_str)
                        .map(|s| s.as_bytes().to_vec())
                        .collect(),
                )
            } else {
                return Err(bad(
                    "a list must hold only integers, only numbers or only strings",
                ));
            }
        }
    }))
}

/// Check a row's columns against the model's: every one must be read by the model.
pub fn check_columns(row: &ReqRow, s: &Scorer, index: usize) -> Result<(), String> {
    let f = &s.space.config;
    for (c, _) in &row.0 {
        let known = f.sparse.contains(c)
            || f.dense.contains(c)
            || *c == f.label
            || f.weight.as_ref() == Some(c);
        if !known {
            let cols: Vec<String> = model_columns(s).into_iter().map(|(c, _)| c).collect();
            return Err(format!(
                "instance {index}: unknown feature `{c}` (the model reads: {})",
                cols.join(", ")
            ));
        }
    }
    Ok(())
}

/// `rows` encoded as training encoded its rows, appended to `batch`.
pub fn encode_into(s: &Scorer, rows: &[ReqRow], batch: &mut Batch) -> Result<(), String> {
    let mut e = Encoded::default();
    let mut one = Batch::default();
    for (i, r) in rows.iter().enumerate() {
        check_columns(r, s, i)?;
        let filled;
        let row: &dyn Row = match &s.entities {
            Some(ents) => {
                filled = ents.fill(r);
                &filled
            }
            None => r,
        };
        s.space
            .encode(
                row,
                RowPos {
                    file: "request",
                    row: i as u64,
                },
                false,
                &mut e,
            )
            .map_err(|err| err.to_string())?;
        one.push_row(&e);
    }
    // Only whole requests join a batch: one bad row leaves the others untouched.
    if batch.size == 0 {
        *batch = one;
        return Ok(());
    }
    batch.size += one.size;
    batch.keys.extend_from_slice(&one.keys);
    batch.bag_lens.extend_from_slice(&one.bag_lens);
    batch.dense.extend_from_slice(&one.dense);
    batch.labels.extend_from_slice(&one.labels);
    batch.weights.extend_from_slice(&one.weights);
    Ok(())
}

/// The ids `rows` name that the version's entity tables do not know (those columns are
/// scored as missing): `{"instance": i, "column": key, "id": id}` per unknown id.
pub fn unknown_entities(s: &Scorer, rows: &[ReqRow]) -> Vec<Value> {
    let Some(ents) = &s.entities else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (i, r) in rows.iter().enumerate() {
        for (column, id) in ents.fill(r).unknown {
            out.push(serde_json::json!({ "instance": i, "column": column, "id": id }));
        }
    }
    out
}

/// Probabilities of the rows of `batch`.
pub fn probabilities(s: &Scorer, batch: &Batch) -> Vec<f32> {
    if batch.size == 0 {
        return Vec::new();
    }
    s.logits(batch)
        .into_iter()
        .map(tusk_model::models::sigmoid)
        .collect()
}

/// Probabilities for `rows`, encoded as training encoded its rows.
pub fn score(s: &Scorer, rows: &[ReqRow]) -> Result<Vec<f32>, String> {
    let mut batch = Batch::default();
    encode_into(s, rows, &mut batch)?;
    Ok(probabilities(s, &batch))
}
