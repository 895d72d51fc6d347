//! The REST gateway's protobuf messages (`application/x-protobuf`), declared by hand from
//! HBase's `CellMessage.proto`, `CellSetMessage.proto` and `ScannerMessage.proto` (proto2).

/// One cell: row, `family:qualifier`, timestamp, value.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Cell {
    /// The row key (unset inside a CellSet row, whose key says it).
    #[prost(bytes = "vec", optional, tag = "1")]
    pub row: Option<Vec<u8>>,
    /// `family:qualifier`.
    #[prost(bytes = "vec", optional, tag = "2")]
    pub column: Option<Vec<u8>>,
    /// Milliseconds, or whatever the writer chose (tusk stamps model versions).
    #[prost(int64, optional, tag = "3")]
    pub timestamp: Option<i64>,
    /// The value.
    #[prost(bytes = "vec", optional, tag = "4")]
    pub data: Option<Vec<u8>>,
}

/// A row of a [`CellSet`].
#[derive(Clone, PartialEq, prost::Message)]
pub struct Row {
    /// The row key.
    #[prost(bytes = "vec", required, tag = "1")]
    pub key: Vec<u8>,
    /// Its cells.
    #[prost(message, repeated, tag = "2")]
    pub values: Vec<Cell>,
}

/// Rows of cells: the body of gets, multi-gets, scanner batches and batch puts.
#[derive(Clone, PartialEq, prost::Message)]
pub struct CellSet {
    /// The rows.
    #[prost(message, repeated, tag = "1")]
    pub rows: Vec<Row>,
}

/// A scanner's specification.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Scanner {
    /// First row (inclusive).
    #[prost(bytes = "vec", optional, tag = "1")]
    pub start_row: Option<Vec<u8>>,
    /// Last row (exclusive).
    #[prost(bytes = "vec", optional, tag = "2")]
    pub end_row: Option<Vec<u8>>,
    /// Columns or families to return (all when empty).
    #[prost(bytes = "vec", repeated, tag = "3")]
    pub columns: Vec<Vec<u8>>,
    /// Cells per batch.
    #[prost(int32, optional, tag = "4")]
    pub batch: Option<i32>,
    /// Versions per column.
    #[prost(int32, optional, tag = "7")]
    pub max_versions: Option<i32>,
}
