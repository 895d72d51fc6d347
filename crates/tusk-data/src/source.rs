//! Row sources: tusk datasets (TFRecord/Parquet shards with a manifest), single record files,
//! globs, and CSV files with a header — all on any storage URL.

use std::collections::HashMap;
use std::io::Read;

use tusk_records::dataset::Input;
use tusk_records::example::{self, Example, Kind};
use tusk_storage::{Location, Storage};

use crate::error::{Error, Result};

/// One value cell, as stored.
#[derive(Debug, Clone, Copy)]
pub enum Cell<'a> {
    /// `int64_list`.
    Ints(&'a [i64]),
    /// `float_list`.
    Floats(&'a [f32]),
    /// `bytes_list`.
    Bytes(&'a [Vec<u8>]),
    /// A CSV field (typed by the reader).
    Text(&'a str),
}

/// A row: look up a column's cell (`None` when the row lacks it).
pub trait Row {
    /// The cell of `column`.
    fn get(&self, column: &str) -> Option<Cell<'_>>;
    /// Every column of the row, for error messages and pass-through output.
    fn columns(&self) -> Vec<String>;
    /// The Example, when the row is one.
    fn as_example(&self) -> Option<&Example> {
        None
    }
    /// The CSV record, when the row is one.
    fn as_csv(&self) -> Option<&csv::StringRecord> {
        None
    }
}

/// Where a row came from.
#[derive(Debug, Clone, Copy)]
pub struct RowPos<'a> {
    /// File URL.
    pub file: &'a str,
    /// 0-based row (record) index in that file.
    pub row: u64,
}

/// An Example as a [`Row`].
#[derive(Debug)]
pub struct ExampleRow(pub Example);

/// The cell of `column` in an Example (`None` when it lacks the feature or its kind).
pub fn example_cell<'a>(ex: &'a Example, column: &str) -> Option<Cell<'a>> {
    let f = ex.features.as_ref()?.feature.get(column)?;
    Some(match f.kind.as_ref()? {
        Kind::Int64List(l) => Cell::Ints(&l.value),
        Kind::FloatList(l) => Cell::Floats(&l.value),
        Kind::BytesList(l) => Cell::Bytes(&l.value),
    })
}

impl Row for ExampleRow {
    fn get(&self, column: &str) -> Option<Cell<'_>> {
        example_cell(&self.0, column)
    }

    fn columns(&self) -> Vec<String> {
        let mut c: Vec<String> = self
            .0
            .features
            .as_ref()
            .map(|f| f.feature.keys().cloned().collect())
            .unwrap_or_default();
        c.sort();
        c
    }

    fn as_example(&self) -> Option<&Example> {
        Some(&self.0)
    }
}

/// A CSV record with its header.
#[derive(Debug)]
pub struct CsvRow<'a> {
    /// Column name → index.
    pub header: &'a HashMap<String, usize>,
    /// Header names in order.
    pub names: &'a [String],
    /// The record.
    pub record: &'a csv::StringRecord,
}

impl Row for CsvRow<'_> {
    fn get(&self, column: &str) -> Option<Cell<'_>> {
        let i = *self.header.get(column)?;
        self.record.get(i).map(Cell::Text)
    }

    fn columns(&self) -> Vec<String> {
        self.names.to_vec()
    }

    fn as_csv(&self) -> Option<&csv::StringRecord> {
        Some(self.record)
    }
}

/// Everything a URL names, readable row by row.
#[derive(Debug, Clone)]
pub struct Source {
    url: String,
    kind: Kind2,
    /// The directory, when `url` names a tusk dataset (shards listed by a manifest).
    dataset: Option<Location>,
}

#[derive(Debug, Clone)]
enum Kind2 {
    Records(Input),
    Csv(Vec<Location>),
}

fn is_csv(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    n.ends_with(".csv") || n.ends_with(".tsv")
}

/// The CSV files `url` names (a `.csv`/`.tsv` file, or a glob matching only such files);
/// `None` when it names record files.
pub(crate) fn csv_files(storage: &Storage, url: &str) -> Result<Option<Vec<Location>>> {
    Ok(if url.contains(['*', '?', '[', '{']) {
        let files: Vec<Location> = storage
            .glob(url)?
            .into_iter()
            .filter(|l| !l.file_name().starts_with('_'))
            .collect();
        if !files.is_empty() && files.iter().all(|l| is_csv(l.file_name())) {
            Some(files)
        } else {
            None
        }
    } else if is_csv(url) {
        Some(vec![storage.open(url)?])
    } else {
        None
    })
}

impl Source {
    /// Resolve `url`: a tusk dataset directory, a TFRecord/Parquet/CSV file, or a glob.
    pub fn open(storage: &Storage, url: &str) -> Result<Source> {
        let kind = match csv_files(storage, url)? {
            Some(files) => Kind2::Csv(files),
            None => Kind2::Records(Input::open(storage, url, None)?),
        };
        let dataset = match &kind {
            Kind2::Records(i) if i.manifest.is_some() => Some(storage.open(url)?),
            _ => None,
        };
        Ok(Source {
            url: url.to_string(),
            kind,
            dataset,
        })
    }

    /// The URL this source was opened from.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A tusk dataset's directory and manifest. A directory with a manifest never changes
    /// (writers refuse it), so what is computed from its rows can be kept beside them.
    pub fn dataset(&self) -> Option<(&Location, &tusk_records::dataset::Manifest)> {
        match (&self.dataset, &self.kind) {
            (Some(dir), Kind2::Records(i)) => i.manifest.as_ref().map(|m| (dir, m)),
            _ => None,
        }
    }

    /// Rows when known without reading (manifests, Parquet footers).
    pub fn known_rows(&self) -> Option<u64> {
        match &self.kind {
            Kind2::Records(i) => i.known_records(),
            Kind2::Csv(_) => None,
        }
    }

    /// What identifies the data without reading it: the files in order, with their record
    /// counts where a manifest gives them (ranks of one job compare it before training).
    pub fn fingerprint(&self) -> String {
        use crate::features::{FNV_OFFSET, fnv1a};
        let mut h = FNV_OFFSET;
        // Each string then a 0 byte, so ("ab", "c") and ("a", "bc") differ.
        let mut eat = |s: &str| h = fnv1a(fnv1a(h, s.as_bytes()), &[0]);
        let files = match &self.kind {
            Kind2::Records(i) => {
                for f in &i.files {
                    eat(&f.location.url());
                    eat(&f.records.map_or(String::new(), |r| r.to_string()));
                }
                i.files.len()
            }
            Kind2::Csv(fs) => {
                for f in fs {
                    eat(&f.url());
                }
                fs.len()
            }
        };
        let rows = self
            .known_rows()
            .map_or(String::new(), |r| format!(", {r} rows"));
        format!("{files} files{rows}, digest {h:016x}")
    }

    /// Number of files; `for_each_row_in` reads one of them.
    pub fn files(&self) -> usize {
        match &self.kind {
            Kind2::Records(i) => i.files.len(),
            Kind2::Csv(f) => f.len(),
        }
    }

    /// Call `f(row, pos)` for every row of every file in order; `Ok(false)` stops.
    pub fn for_each_row(
        &self,
        mut f: impl FnMut(&dyn Row, RowPos<'_>) -> Result<bool>,
    ) -> Result<()> {
        for i in 0..self.files() {
            if !self.for_each_row_in(i, &mut f)? {
                break;
            }
        }
        Ok(())
    }

    /// Rows of file `index` only; returns `Ok(false)` when `f` asked to stop.
    pub fn for_each_row_in(
        &self,
        index: usize,
        f: &mut dyn FnMut(&dyn Row, RowPos<'_>) -> Result<bool>,
    ) -> Result<bool> {
        match &self.kind {
            Kind2::Records(input) => {
                let one = Input {
                    files: vec![input.files[index].clone()],
                    manifest: None,
                };
                let mut stopped = false;
                let mut inner: Option<Error> = None;
                let res = one.for_each_while(|bytes, pos| {
                    let ex = example::decode(bytes).map_err(|r| pos.not_example(r))?;
                    let row = ExampleRow(ex);
                    match f(
                        &row,
                        RowPos {
                            file: pos.file,
                            row: pos.index,
                        },
                    ) {
                        Ok(true) => Ok(true),
                        Ok(false) => {
                            stopped = true;
                            Ok(false)
                        }
                        Err(e) => {
                            inner = Some(e);
                            Ok(false)
                        }
                    }
                });
                if let Some(e) = inner {
                    return Err(e);
                }
                res?;
                Ok(!stopped)
            }
            Kind2::Csv(files) => {
                let loc = &files[index];
                let url = loc.url();
                let reader = loc.reader()?;
                read_csv(reader, &url, f)
            }
        }
    }
}

fn read_csv(
    reader: impl Read,
    url: &str,
    f: &mut dyn FnMut(&dyn Row, RowPos<'_>) -> Result<bool>,
) -> Result<bool> {
    let delimiter = if url.to_ascii_lowercase().ends_with(".tsv") {
        b'\t'
    } else {
        b','
    };
    let mut rdr = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .has_headers(true)
        .from_reader(reader);
    let csv_err = |e: csv::Error| Error::Csv {
        file: url.to_string(),
        message: e.to_string(),
    };
    let names: Vec<String> = rdr
        .headers()
        .map_err(csv_err)?
        .iter()
        .map(|s| s.trim().to_string())
        .collect();
    if names.iter().all(String::is_empty) {
        return Err(Error::Csv {
            file: url.to_string(),
            message: "empty file: a header line naming the columns is required".into(),
        });
    }
    let header: HashMap<String, usize> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.clone(), i))
        .collect();
    let mut record = csv::StringRecord::new();
    let mut row = 0u64;
    while rdr.read_record(&mut record).map_err(csv_err)? {
        let r = CsvRow {
            header: &header,
            names: &names,
            record: &record,
        };
        if !f(&r, RowPos { file: url, row })? {
            return Ok(false);
        }
        row += 1;
    }
    Ok(true)
}
