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
use std::fmt::Write as _;

use serde_json::{Value, json};
use tusk_data::entities::key_text;
use tusk_data::{Cell, Row};

use tusk_train::Scorer;

use crate::rows::{self, ReqRow, Val};

/// Fields of a recommend request that are not user features.
const OPTIONS: [&str; 3] = ["k", "exclude_seen", "candidates"];

/// The user entity column naming the items to leave out with `exclude_seen`.
pub const SEEN: &str = "seen";

/// The user's side of a recommend request: every field but the options.
pub fn user_row(req: &Value) -> Result<ReqRow, String> {
    let obj = req
        .as_object()
        .ok_or("the body must be a JSON object such as {\"user_id\": 7, \"k\": 10}")?;
    let mut user = ReqRow::default();
    for (c, v) in obj {
        if OPTIONS.contains(&c.as_str()) {
            continue;
        }
        if let Some(val) = rows::value(c, v)? {
            user.0.push((c.clone(), val));
        }
    }
    Ok(user)
}

/// The response to a recommend request `req`, the user's side completed by `extra` (columns
/// from a live feature store); the error is a 400's message. At most `max_candidates` explicit
/// candidates are taken (the catalogue is not limited).
pub fn answer(
    sc: &Scorer,
    req: &Value,
    max_candidates: usize,
    extra: &[(String, Val)],
) -> Result<Value, String> {
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
    let mut user = user_row(req)?;
    if user.0.is_empty() {
        return Err("name the user, e.g. {\"user_id\": 7}".into());
    }
    user.0
        .extend(extra.iter().filter(|(c, _)| c != SEEN).cloned());
    let item = item_column(sc, &user)?;
    if user.get(&item).is_some() {
        return Err(format!(
            "`{item}` is the item column: give candidates in `candidates`"
        ));
    }
    let ents = sc.entities.as_deref();
    let candidates = match obj.get("candidates") {
        Some(Value::Array(list)) => {
            if list.len() > max_candidates {
                return Err(format!(
                    "{} candidates, over the limit of {max_candidates}",
                    list.len()
                ));
            }
            Given(
                list.iter()
                    .enumerate()
                    .map(|(i, v)| match rows::value(&item, v) {
                        Ok(Some(val)) => Ok(val),
                        Ok(None) => Err(format!("candidates[{i}] is null")),
                        Err(m) => Err(format!("candidates[{i}]: {m}")),
                    })
                    .collect::<Result<_, _>>()?,
            )
        }
        Some(_) => return Err("`candidates` must be a list of item ids".into()),
        None if ents.is_some_and(|e| e.keys().any(|k| k == item)) => Catalogue,
        None => {
            return Err(format!(
                "this version keeps no item catalogue (data.entities.{item}): give `candidates`"
            ));
        }
    };
    let filled = ents.map(|e| e.fill(&user));
    let unknown: Vec<Value> = filled
        .iter()
        .flat_map(|f| f.unknown.iter())
        .map(|(c, id)| json!({ "column": c, "id": id }))
        .collect();
    // `seen` from a live store is not a model column: it only leaves items out.
    let live_seen = extra.iter().find(|(c, _)| c == SEEN).map(|(c, v)| {
        let mut r = ReqRow::default();
        r.0.push((c.clone(), v.clone()));
        r
    });
    let seen_cell = match (exclude_seen, &live_seen) {
        (false, _) => None,
        (true, Some(r)) => r.get(SEEN),
        (true, None) => filled.as_ref().and_then(|f| f.get(SEEN)),
    };
    let fast = match (&candidates, filled.as_ref()) {
        (Catalogue, Some(f)) => catalogue(sc, &item).filter(|c| fast_path_holds(sc, c, &user, f)),
        _ => None,
    };
    let items: Vec<Value> = match fast {
        Some(cat) => {
            // the whole catalogue at once, the user's side computed once (bit for bit what
            // scoring each row gives, see `Model::neumf_rank`)
            let scores = rank_catalogue(sc, &user, cat)?;
            let mut left_out = vec![false; cat.ids.len()];
            each_seen(seen_cell, |id| {
                if let Some(&i) = cat.index.get(id) {
                    left_out[i] = true;
                }
            });
            let keep: Vec<usize> = (0..cat.ids.len()).filter(|&i| !left_out[i]).collect();
            best(&scores, keep, k)
                .into_iter()
                .map(|i| json!({ item.as_str(): val_json(&id_val(&cat.ids[i])), "score": scores[i] }))
                .collect()
        }
        None => {
            let mut candidates = match candidates {
                Given(v) => v,
                Catalogue => ents
                    .and_then(|e| e.ids(&item))
                    .unwrap_or_default()
                    .into_iter()
                    .map(id_val)
                    .collect(),
            };
            if exclude_seen {
                let mut seen = HashSet::new();
                each_seen(seen_cell, |id| {
                    seen.insert(id.to_string());
                });
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
            best(&scores, (0..scores.len()).collect(), k)
                .into_iter()
                .map(|i| json!({ item.as_str(): val_json(&candidates[i]), "score": scores[i] }))
                .collect()
        }
    };
    let mut out = json!({ "model_version": sc.version.to_string(), "items": items });
    if !unknown.is_empty() {
        out["unknown_entities"] = Value::Array(unknown);
    }
    Ok(out)
}

/// Each id of a user's `seen` cell: a list of ids, or text of ids separated by spaces (from
/// CSV tables: "3 17 42").
fn each_seen(cell: Option<Cell<'_>>, mut f: impl FnMut(&str)) {
    match cell {
        Some(Cell::Ints(v)) => {
            let mut id = String::new();
            for x in v {
                id.clear();
                let _ = write!(id, "{x}");
                f(&id);
            }
        }
        Some(Cell::Bytes(v)) => {
            for b in v {
                String::from_utf8_lossy(b)
                    .split_whitespace()
                    .for_each(&mut f);
            }
        }
        Some(Cell::Text(t)) => t.split_whitespace().for_each(f),
        Some(Cell::Floats(_)) | None => {}
    }
}

/// Where the candidates come from.
enum Candidates {
    /// The request's list.
    Given(Vec<Val>),
    /// The version's catalogue (the item entity table's ids; listed only when the ranking
    /// cannot use the catalogue prepared once per version).
    Catalogue,
}
use Candidates::{Catalogue, Given};

/// The indices of `keep` with the `k` best scores, best first; equal scores keep index order.
/// `keep` is in increasing order.
fn best(scores: &[f32], mut keep: Vec<usize>, k: usize) -> Vec<usize> {
    let order = |a: &usize, b: &usize| scores[*b].total_cmp(&scores[*a]).then(a.cmp(b));
    if keep.len() > k && k <= SMALL_K {
        // one pass holding the best k so far: most items lose to the k-th in one comparison
        let mut top: Vec<usize> = Vec::with_capacity(k + 1);
        for i in keep {
            if top.len() == k && order(&i, &top[k - 1]).is_ge() {
                continue;
            }
            let at = top.partition_point(|t| order(t, &i).is_lt());
            top.insert(at, i);
            top.truncate(k);
        }
        return top;
    }
    if keep.len() > k {
        keep.select_nth_unstable_by(k - 1, order);
        keep.truncate(k);
    }
    keep.sort_unstable_by(order);
    keep
}

/// Up to this `k`, [`best`] keeps a sorted list of the best so far instead of partitioning.
const SMALL_K: usize = 64;

/// Prepare the version's ranking catalogue now: the loader calls this before a version
/// serves, so no request waits for it (a request on a new version would otherwise build it,
/// and every other request on that version would wait for that one).
pub(crate) fn prepare(sc: &Scorer) {
    if let tusk_train::config::ModelConfig::Neumf { item, .. } = &sc.config.model
        && let Some(first) = item.first()
    {
        let _ = catalogue(sc, first);
    }
}

/// The version's catalogue prepared for ranking (built by [`prepare`] when the version
/// loads, else on first use, then shared by every request on this version); `None` when the
/// model cannot rank that way (not NeuMF, or dense features) or the catalogue cannot be
/// encoded.
fn catalogue<'a>(sc: &'a Scorer, item: &str) -> Option<&'a tusk_train::Catalogue> {
    sc.catalogue
        .get_or_init(|| {
            let ents = sc.entities.as_deref()?;
            let ids: Vec<String> = ents.ids(item)?.into_iter().map(str::to_string).collect();
            let mut item_columns = std::collections::BTreeSet::new();
            for id in &ids {
                if let Some(f) = ents.get(item, id).and_then(|ex| ex.features.as_ref()) {
                    item_columns.extend(f.feature.keys().cloned());
                }
            }
            let rows: Vec<ReqRow> = ids
                .iter()
                .map(|id| ReqRow(vec![(item.to_string(), id_val(id))]))
                .collect();
            let mut batch = tusk_data::Batch::default();
            rows::encode_into(sc, &rows, &mut batch).ok()?;
            let emb = sc.embedding_input(&batch);
            let items = sc.model.neumf_items(
                &sc.params,
                &tusk_model::Batch {
                    size: batch.size,
                    emb: &emb,
                    dense: &batch.dense,
                },
            )?;
            let index = ids
                .iter()
                .enumerate()
                .map(|(i, id)| (id.clone(), i))
                .collect();
            Some(tusk_train::Catalogue {
                ids,
                index,
                items,
                item_columns,
            })
        })
        .as_ref()
}

/// Whether ranking `cat` for this user gives what scoring each row `{user, item}` gives: the
/// item side of a row (item fields, dense features) must come from the item alone — none of
/// it in the user's filled row — and the user side from the user alone — no user field the
/// item table could fill, unless the request gives it.
fn fast_path_holds(
    sc: &Scorer,
    cat: &tusk_train::Catalogue,
    request: &ReqRow,
    filled: &dyn Row,
) -> bool {
    let tusk_train::config::ModelConfig::Neumf {
        user: ufields,
        item: ifields,
        ..
    } = &sc.config.model
    else {
        return false;
    };
    ifields
        .iter()
        .chain(&sc.space.config.dense)
        .all(|f| filled.get(f).is_none())
        && ufields
            .iter()
            .all(|f| request.get(f).is_some() || !cat.item_columns.contains(f))
}

/// Probabilities of (user, every catalogue item), in catalogue order.
fn rank_catalogue(
    sc: &Scorer,
    user: &ReqRow,
    cat: &tusk_train::Catalogue,
) -> Result<Vec<f32>, String> {
    let mut batch = tusk_data::Batch::default();
    rows::encode_into(sc, std::slice::from_ref(user), &mut batch)?;
    let emb = sc.embedding_input(&batch);
    let logits = sc.model.neumf_rank(
        &sc.params,
        &tusk_model::Batch {
            size: 1,
            emb: &emb,
            dense: &batch.dense,
        },
        &cat.items,
    );
    Ok(logits
        .into_iter()
        .map(tusk_model::models::sigmoid)
        .collect())
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

#[cfg(test)]
mod tests {
    use super::*;

    /// `best` against a full sort, for every k on both of its paths: scores with many ties,
    /// NaN and ±0, a filtered `keep`.
    #[test]
    fn best_matches_a_full_sort() {
        let mut s = 7u64;
        let mut next = || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        };
        for case in 0..40 {
            let n = 1 + (next() % 300) as usize;
            let scores: Vec<f32> = (0..n)
                .map(|_| match next() % 10 {
                    0 => f32::NAN,
                    1 => -0.0,
                    2 => 0.0,
                    x => (x % 5) as f32 * 0.25,
                })
                .collect();
            let keep: Vec<usize> = (0..n).filter(|_| next() % 4 != 0).collect();
            let mut want = keep.clone();
            want.sort_by(|a, b| scores[*b].total_cmp(&scores[*a]).then(a.cmp(b)));
            for k in [1, 2, 10, SMALL_K, SMALL_K + 1, n, n + 3] {
                let got = best(&scores, keep.clone(), k);
                assert_eq!(got, want[..k.min(want.len())], "case {case}, n {n}, k {k}");
            }
        }
    }
}
