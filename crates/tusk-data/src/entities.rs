//! Entity feature tables: per known entity (a user, an item), the feature values a model may
//! use for it, keyed by an id column. A row that lacks a column gets it from the tables of the
//! ids it carries (a value in the row always wins), so a request that says only
//! `(user_id, item_id)` is scored with the user's `history` as of the data the model was
//! trained on.
//!
//! Tables come from tusk datasets (`tusk preprocess movielens` writes `OUTPUT/entities/KEY`)
//! named in `data.entities`; a model version stores them in one TFRecord file
//! ([`Entities::to_records`]) so that scoring and serving read exactly what that version was
//! trained beside.

use std::collections::{BTreeMap, HashMap};

use tusk_records::example::{self, Example, Kind};
use tusk_records::tfrecord;
use tusk_storage::Storage;

use crate::error::{Error, Result};
use crate::source::{Cell, Row, Source, example_cell};

/// The feature naming the table a stored row belongs to (its key column).
const TABLE: &str = "__entity_key";

/// Entity tables by key column.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Entities {
    tables: BTreeMap<String, HashMap<String, Example>>,
}

/// A row's key value as text: a single int64, string or CSV field; anything else is no key.
pub fn key_text(cell: Cell<'_>) -> Option<String> {
    match cell {
        Cell::Ints([v]) => Some(v.to_string()),
        Cell::Bytes([b]) => std::str::from_utf8(b).ok().map(str::to_string),
        Cell::Text(t) if !t.trim().is_empty() => Some(t.trim().to_string()),
        _ => None,
    }
}

impl Entities {
    /// Read the tables `urls` names (key column → dataset or file URL). Every row must carry
    /// its key as a single value; a key seen twice keeps its last row.
    pub fn load(storage: &Storage, urls: &BTreeMap<String, String>) -> Result<Entities> {
        let mut tables = BTreeMap::new();
        for (key, url) in urls {
            let source = Source::open(storage, url)?;
            let mut rows = HashMap::new();
            source.for_each_row(|row, pos| {
                let id = row.get(key).and_then(key_text).ok_or_else(|| Error::Csv {
                    file: pos.file.into(),
                    message: format!(
                        "row {}: entity table '{key}' needs a single '{key}' value in every row",
                        pos.row
                    ),
                })?;
                rows.insert(id, to_example(row));
                Ok(true)
            })?;
            tables.insert(key.clone(), rows);
        }
        Ok(Entities { tables })
    }

    /// Whether there are no tables.
    pub fn is_empty(&self) -> bool {
        self.tables.is_empty()
    }

    /// Key columns, sorted.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.tables.keys().map(String::as_str)
    }

    /// The ids of table `key`, sorted (numerically when they all are numbers).
    pub fn ids(&self, key: &str) -> Option<Vec<&str>> {
        let t = self.tables.get(key)?;
        let mut ids: Vec<&str> = t.keys().map(String::as_str).collect();
        if ids.iter().all(|i| i.parse::<i64>().is_ok()) {
            ids.sort_by_cached_key(|i| i.parse::<i64>().unwrap_or(0));
        } else {
            ids.sort();
        }
        Some(ids)
    }

    /// Entity `id`'s row in table `key`.
    pub fn get(&self, key: &str, id: &str) -> Option<&Example> {
        self.tables.get(key)?.get(id)
    }

    /// Set columns of entity `id` in table `key` (a live store's values over the version's),
    /// creating the row, with its key, when the table lacks it.
    pub fn set_columns(
        &mut self,
        key: &str,
        id: &str,
        columns: impl IntoIterator<Item = (String, Kind)>,
    ) {
        let table = self.tables.entry(key.to_string()).or_default();
        let ex = table.entry(id.to_string()).or_insert_with(|| {
            example::from_features(text_kind(Cell::Text(id)).map(|k| (key.to_string(), k)))
        });
        let feats = &mut ex.features.get_or_insert_with(Default::default).feature;
        for (c, k) in columns {
            feats.insert(c, example::Feature { kind: Some(k) });
        }
    }

    /// `row` with the columns it lacks taken from the rows of the entities it names.
    pub fn fill<'a>(&'a self, row: &'a dyn Row) -> Filled<'a> {
        let mut found = Vec::new();
        let mut unknown = Vec::new();
        for (key, table) in &self.tables {
            let Some(id) = row.get(key).and_then(key_text) else {
                continue;
            };
            match table.get(&id) {
                Some(ex) => found.push(ex),
                None => unknown.push((key.as_str(), id)),
            }
        }
        Filled {
            row,
            found,
            unknown,
        }
    }

    /// Every table as one TFRecord file of Examples, each tagged with its table's key column;
    /// the same tables give the same bytes.
    pub fn to_records(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let mut w = tfrecord::Writer::new(&mut out);
        for (key, table) in &self.tables {
            let mut ids: Vec<&String> = table.keys().collect();
            ids.sort();
            for id in ids {
                let mut ex = table[id].clone();
                ex.features
                    .get_or_insert_with(Default::default)
                    .feature
                    .insert(
                        TABLE.into(),
                        example::Feature {
                            kind: Some(Kind::BytesList(example::BytesList {
                                value: vec![key.as_bytes().to_vec()],
                            })),
                        },
                    );
                w.write_record(&tusk_records::dataset::encode(&ex))
                    .expect("writing to memory");
            }
        }
        out
    }

    /// Tables from [`Entities::to_records`] bytes; `file` names them in errors.
    pub fn from_records(bytes: &[u8], file: &str) -> Result<Entities> {
        let mut tables: BTreeMap<String, HashMap<String, Example>> = BTreeMap::new();
        let bad = |message: String| Error::Csv {
            file: file.into(),
            message,
        };
        let mut reader = tfrecord::Reader::new(bytes, file);
        let mut n = 0u64;
        while let Some(rec) = reader.next_record().map_err(|e| bad(e.to_string()))? {
            let mut ex = example::decode(rec).map_err(|e| bad(format!("record {n}: {e}")))?;
            let feats = &mut ex.features.get_or_insert_with(Default::default).feature;
            let key = match feats.remove(TABLE).and_then(|f| f.kind) {
                Some(Kind::BytesList(l)) if l.value.len() == 1 => {
                    String::from_utf8(l.value[0].clone()).ok()
                }
                _ => None,
            }
            .ok_or_else(|| bad(format!("record {n}: no {TABLE}")))?;
            let id = example_cell(&ex, &key)
                .and_then(key_text)
                .ok_or_else(|| bad(format!("record {n}: no single '{key}' value")))?;
            tables.entry(key).or_default().insert(id, ex);
            n += 1;
        }
        Ok(Entities { tables })
    }
}

/// A row with its entities' columns behind it ([`Entities::fill`]).
pub struct Filled<'a> {
    row: &'a dyn Row,
    found: Vec<&'a Example>,
    /// `(key column, id)` of every id the row names that no table knows: those columns stay
    /// missing.
    pub unknown: Vec<(&'a str, String)>,
}

impl Row for Filled<'_> {
    fn get(&self, column: &str) -> Option<Cell<'_>> {
        match self.row.get(column) {
            Some(Cell::Text(t)) if t.trim().is_empty() => {}
            Some(c) => return Some(c),
            None => {}
        }
        self.found.iter().find_map(|e| example_cell(e, column))
    }

    fn columns(&self) -> Vec<String> {
        self.row.columns()
    }
}

/// `row` as an Example: itself when it is one, else its columns typed by [`text_kind`].
pub fn to_example(row: &dyn Row) -> Example {
    match row.as_example() {
        Some(e) => e.clone(),
        None => example::from_features(
            row.columns()
                .into_iter()
                .filter_map(|c| row.get(&c).and_then(text_kind).map(|k| (c, k))),
        ),
    }
}

/// A CSV field as an Example feature (integers, then floats, then text); empty is absent.
pub fn text_kind(cell: Cell<'_>) -> Option<Kind> {
    use tusk_records::example::{BytesList, FloatList, Int64List};
    Some(match cell {
        Cell::Ints(v) => Kind::Int64List(Int64List { value: v.to_vec() }),
        Cell::Floats(v) => Kind::FloatList(FloatList { value: v.to_vec() }),
        Cell::Bytes(v) => Kind::BytesList(BytesList { value: v.to_vec() }),
        Cell::Text(t) if t.trim().is_empty() => return None,
        Cell::Text(t) => {
            if let Ok(i) = t.trim().parse::<i64>() {
                Kind::Int64List(Int64List { value: vec![i] })
            } else if let Ok(f) = t.trim().parse::<f32>() {
                Kind::FloatList(FloatList { value: vec![f] })
            } else {
                Kind::BytesList(BytesList {
                    value: vec![t.as_bytes().to_vec()],
                })
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::source::ExampleRow;

    fn tables(dir: &std::path::Path) -> Entities {
        std::fs::write(
            dir.join("u.csv"),
            "user_id,history,city\n1,5 6,oslo\n2,,lima\n1,7,pune\n",
        )
        .unwrap();
        std::fs::write(dir.join("i.csv"), "item_id,price\n5,2.5\n6,3\n").unwrap();
        let urls = BTreeMap::from([
            (
                "user_id".to_string(),
                dir.join("u.csv").display().to_string(),
            ),
            (
                "item_id".to_string(),
                dir.join("i.csv").display().to_string(),
            ),
        ]);
        Entities::load(&Storage::new().unwrap(), &urls).unwrap()
    }

    fn text_row(cols: &[(&str, &str)]) -> (HashMap<String, usize>, Vec<String>, csv::StringRecord) {
        let names: Vec<String> = cols.iter().map(|(c, _)| c.to_string()).collect();
        let header = names
            .iter()
            .enumerate()
            .map(|(i, c)| (c.clone(), i))
            .collect();
        let record = csv::StringRecord::from(cols.iter().map(|(_, v)| *v).collect::<Vec<_>>());
        (header, names, record)
    }

    #[test]
    fn fills_what_the_row_lacks_and_names_unknown_ids() {
        let dir = tempfile::tempdir().unwrap();
        let e = tables(dir.path());
        assert_eq!(e.keys().collect::<Vec<_>>(), ["item_id", "user_id"]);
        assert_eq!(e.ids("item_id").unwrap(), ["5", "6"]);
        // The last row of a key wins; the row's own value wins over the table's.
        let (h, n, r) = text_row(&[("user_id", "1"), ("item_id", "6"), ("city", "rome")]);
        let row = crate::source::CsvRow {
            header: &h,
            names: &n,
            record: &r,
        };
        let f = e.fill(&row);
        assert!(f.unknown.is_empty());
        assert!(matches!(f.get("history"), Some(Cell::Ints([7]))));
        assert!(matches!(f.get("city"), Some(Cell::Text("rome"))));
        assert!(matches!(f.get("price"), Some(Cell::Ints([3]))));
        assert_eq!(f.columns(), ["user_id", "item_id", "city"]);
        // An empty CSV field is filled; an unknown id leaves its columns missing, named.
        let (h, n, r) = text_row(&[("user_id", "9"), ("item_id", "5"), ("price", "")]);
        let row = crate::source::CsvRow {
            header: &h,
            names: &n,
            record: &r,
        };
        let f = e.fill(&row);
        assert_eq!(f.unknown, [("user_id", "9".to_string())]);
        assert!(f.get("history").is_none());
        assert!(matches!(f.get("price"), Some(Cell::Floats([2.5]))));
        // Example rows and int64 keys look up the same ids.
        let ex = ExampleRow(example::from_features([(
            "user_id".to_string(),
            Kind::Int64List(example::Int64List { value: vec![2] }),
        )]));
        assert!(matches!(e.fill(&ex).get("city"), Some(Cell::Bytes([c])) if c == b"lima"));
    }

    #[test]
    fn stored_records_round_trip_and_damage_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let e = tables(dir.path());
        let bytes = e.to_records();
        assert_eq!(bytes, tables(dir.path()).to_records(), "not deterministic");
        let back = Entities::from_records(&bytes, "v/entities.tfrecord").unwrap();
        assert_eq!(back, e);
        let mut bad = bytes.clone();
        bad[20] ^= 1;
        let err = Entities::from_records(&bad, "v/entities.tfrecord").unwrap_err();
        assert!(err.to_string().contains("v/entities.tfrecord"), "{err}");
        // A table row without its key is refused, naming file and row.
        std::fs::write(dir.path().join("u.csv"), "user_id,city\n1,oslo\n,lima\n").unwrap();
        let urls = BTreeMap::from([(
            "user_id".to_string(),
            dir.path().join("u.csv").display().to_string(),
        )]);
        let err = Entities::load(&Storage::new().unwrap(), &urls).unwrap_err();
        assert!(err.to_string().contains("u.csv"), "{err}");
        assert!(err.to_string().contains("row 1"), "{err}");
    }
}
