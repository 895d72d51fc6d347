//! `:recommend`: the k best items for one user, best first.
//!
//! ```json
//! {"user_id": 7, "k": 10, "exclude_seen": true, "candidates": [3, 9, 12]}
//! ```
//!
//! Every field other than `k`, `exclude_seen` and `candidates` is a feature of the user's side
//! (at least the user's id). Each candidate item becomes a row `{user fields…, ITEM: item}`,
//! filled from the version's entity tables like any predict row (the user's history, the
//! item's features) and scored by the same code as `:predict` and `tusk predict`; ties keep
//! candidate order. ITEM is the model's item column: NeuMF's first `item` column, otherwise
//! the one entity table key the request does not give. Without `candidates`, the candidates
//! are the item catalogue kept with the version (the ids of that entity table). With
//! `exclude_seen`, the items in the user's `seen` column (their training positives) are left
//! out (a list of ids, or one string of ids separated by spaces).

use std::collections::HashSet;

use serde_json::{Value, json};
use tusk_data::entities::key_text;
use tusk_data::{Cell, Row};
use tusk_train::Scorer;

use crate::rows::{self, ReqRow, Val};

/// Fields of a recommend request that are not user features.
const OPTIONS: [&str; 3] = ["k", "exclude_seen", "candidates"];

/// The user entity column naming the items to leave out with `exclude_seen`.
pub const SEEN: &str = "seen";

/// The response to a recommend request `req`; the error is a 400's message. At most
/// `max_candidates` explicit candidates are taken (the catalogue is not limited).
pub fn answer(sc: &Scorer, req: &Value, max_candidates: usize) -> Result<Value, String> {
    let obj = req
        .as_object()
        .ok_or("the body must be a JSON object such as {\"user_id\": 7, \"k\": 10}")?;
    let k = match obj.get("k") {
        None => 10,
        Some(v) => v
            .as_u64()
            .filter(|&k| k > 0)
            .ok_or("`k` must be a positive integer")? as usize,
    };
    let exclude_seen = match obj.get("exclude_seen") {
        None => false,
        Some(v) => v.as_bool().ok_or("`exclude_seen` must be true or false")?,
    };
    let mut user = ReqRow::default();
    for (c, v) in obj {
        if OPTIONS.contains(&c.as_str()) {
            continue;
        }
        if let Some(val) = rows::value(c, v)? {
            user.0.push((c.clone(), val));
        }
    }
    if user.0.is_empty() {
        return Err("name the user, e.g. {\"user_id\": 7}".into());
    }
    let item = item_column(sc, &user)?;
    if user.get(&item).is_some() {
        return Err(format!(
            "`{item}` is the item column: give candidates in `candidates`"
        ));
    }
    let ents = sc.entities.as_deref();
    let mut candidates: Vec<Val> = match obj.get("candidates") {
        Some(Value::Array(list)) => {
            if list.len() > max_candidates {
                return Err(format!(
                    "{} candidates, over the limit of {max_candidates}",
                    list.len()
                ));
            }
            list.iter()
                .enumerate()
                .map(|(i, v)| match rows::value(&item, v) {
                    Ok(Some(val)) => Ok(val),
                    Ok(None) => Err(format!("candidates[{i}] is null")),
                    Err(m) => Err(format!("candidates[{i}]: {m}")),
                })
                .collect::<Result<_, _>>()?
        }
        Some(_) => return Err("`candidates` must be a list of item ids".into()),
        None => ents
            .and_then(|e| e.ids(&item))
            .ok_or_else(|| {
                format!(
                    "this version keeps no item catalogue (data.entities.{item}): give `candidates`"
                )
            })?
            .into_iter()
            .map(id_val)
            .collect(),
    };
    let filled = ents.map(|e| e.fill(&user));
    let unknown: Vec<Value> = filled
        .iter()
        .flat_map(|f| f.unknown.iter())
        .map(|(c, id)| json!({ "column": c, "id": id }))
        .collect();
    if exclude_seen {
        let seen: HashSet<String> = match filled.as_ref().and_then(|f| f.get(SEEN)) {
            Some(Cell::Ints(v)) => v.iter().map(i64::to_string).collect(),
            // From CSV tables: "3 17 42".
            Some(Cell::Bytes(v)) => v
                .iter()
                .flat_map(|b| {
                    String::from_utf8_lossy(b)
                        .split_whitespace()
                        .map(str::to_string)
                        .collect::<Vec<_>>()
                })
                .collect(),
            Some(Cell::Text(t)) => t.split_whitespace().map(str::to_string).collect(),
            Some(Cell::Floats(_)) | None => HashSet::new(),
        };
        candidates.retain(|c| !val_key(c).is_some_and(|k| seen.contains(&k)));
    }
    let rows: Vec<ReqRow> = candidates
        .iter()
        .map(|c| {
            let mut r = user.clone();
            r.0.push((item.clone(), c.clone()));
            r
        })
        .collect();
    let scores = rows::score(sc, &rows)?;
    let mut order: Vec<usize> = (0..scores.len()).collect();
    // Best first; equal scores keep candidate order.
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    let items: Vec<Value> = order
        .into_iter()
        .take(k)
        .map(|i| json!({ item.as_str(): val_json(&candidates[i]), "score": scores[i] }))
        .collect();
    let mut out = json!({ "model_version": sc.version.to_string(), "items": items });
    if !unknown.is_empty() {
        out["unknown_entities"] = Value::Array(unknown);
    }
    Ok(out)
}

/// The model's item column (see the module docs).
fn item_column(sc: &Scorer, user: &ReqRow) -> Result<String, String> {
    if let tusk_train::config::ModelConfig::Neumf { item, .. } = &sc.config.model
        && let Some(first) = item.first()
    {
        return Ok(first.clone());
    }
    let keys: Vec<&str> = sc
        .entities
        .iter()
        .flat_map(|e| e.keys())
        .filter(|k| user.get(k).is_none())
        .collect();
    match keys.as_slice() {
        [one] => Ok((*one).to_string()),
        _ => Err(
            "cannot tell the item column: the model is not NeuMF and its entity tables do not \
             leave exactly one key the request lacks"
                .into(),
        ),
    }
}

/// A catalogue id as a request value: a number when it is one.
fn id_val(id: &str) -> Val {
    match id.parse::<i64>() {
        Ok(i) => Val::Ints(vec![i]),
        Err(_) => Val::Text(id.to_string()),
    }
}

fn val_key(v: &Val) -> Option<String> {
    let r = ReqRow(vec![(String::new(), v.clone())]);
    r.get("").and_then(key_text)
}

fn val_json(v: &Val) -> Value {
    match v {
        Val::Ints(x) if x.len() == 1 => json!(x[0]),
        Val::Ints(x) => json!(x),
        Val::Floats(x) => json!(x),
        Val::Text(t) => json!(t),
        Val::Bytes(b) => json!(
            b.iter()
                .map(|x| String::from_utf8_lossy(x).into_owned())
                .collect::<Vec<_>>()
        ),
    }
}
