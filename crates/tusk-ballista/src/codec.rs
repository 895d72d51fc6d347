//! The plan codec shared by the client, the scheduler and the executors: Ballista's, plus
//! small in-memory tables carried inside the plan.

use std::sync::Arc;

use ballista_core::serde::BallistaLogicalExtensionCodec;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::ipc::reader::StreamReader;
use datafusion::arrow::ipc::writer::StreamWriter;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::TableProvider;
use datafusion::common::TableReference;
use datafusion::datasource::MemTable;
use datafusion::datasource::file_format::FileFormatFactory;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::logical_expr::{Extension, LogicalPlan};
use datafusion_proto::logical_plan::LogicalExtensionCodec;

/// Marks an in-memory table in a plan (followed by the partition count and, per
/// partition, the length and bytes of an Arrow IPC stream).
const MEM_TABLE: &[u8] = b"tusk-memtable-1\0";

/// The largest in-memory table a plan may carry. Plans travel in one gRPC message (16 MiB
/// by default); anything bigger belongs in files the executors read.
pub const MAX_PLAN_TABLE_BYTES: usize = 8 << 20;

/// Ballista's logical codec, plus [`MemTable`]s of up to [`MAX_PLAN_TABLE_BYTES`] (the
/// results of `range(n)` and `generate_series(…)` on a cluster), encoded as Arrow IPC.
#[derive(Debug, Default)]
pub struct TuskCodec {
    ballista: BallistaLogicalExtensionCodec,
}

impl LogicalExtensionCodec for TuskCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[LogicalPlan],
        ctx: &TaskContext,
    ) -> Result<Extension> {
        self.ballista.try_decode(buf, inputs, ctx)
    }

    fn try_encode(&self, node: &Extension, buf: &mut Vec<u8>) -> Result<()> {
        self.ballista.try_encode(node, buf)
    }

    fn try_decode_table_provider(
        &self,
        buf: &[u8],
        table_ref: &TableReference,
        schema: SchemaRef,
        ctx: &TaskContext,
    ) -> Result<Arc<dyn TableProvider>> {
        match buf.strip_prefix(MEM_TABLE) {
            Some(rest) => decode_mem_table(rest, schema)
                .map_err(|e| e.context(format!("decoding in-plan table {table_ref}"))),
            None => self
                .ballista
                .try_decode_table_provider(buf, table_ref, schema, ctx),
        }
    }

    fn try_encode_table_provider(
        &self,
        table_ref: &TableReference,
        node: Arc<dyn TableProvider>,
        buf: &mut Vec<u8>,
    ) -> Result<()> {
        if let Some(mem) = node.downcast_ref::<MemTable>() {
            return encode_mem_table(mem, buf).map_err(|e| {
                e.context(format!(
                    "table {table_ref} is held in memory by this process and cannot be sent to the cluster"
                ))
            });
        }
        self.ballista
            .try_encode_table_provider(table_ref, node, buf)
    }

    fn try_decode_file_format(
        &self,
        buf: &[u8],
        ctx: &TaskContext,
    ) -> Result<Arc<dyn FileFormatFactory>> {
        self.ballista.try_decode_file_format(buf, ctx)
    }

    fn try_encode_file_format(
        &self,
        buf: &mut Vec<u8>,
        node: Arc<dyn FileFormatFactory>,
    ) -> Result<()> {
        self.ballista.try_encode_file_format(buf, node)
    }
}

fn encode_mem_table(mem: &MemTable, buf: &mut Vec<u8>) -> Result<()> {
    let schema = mem.schema();
    let start = buf.len();
    buf.extend_from_slice(MEM_TABLE);
    buf.extend_from_slice(&(mem.batches.len() as u32).to_le_bytes());
    for partition in &mem.batches {
        let batches = partition
            .try_read()
            .map_err(|_| DataFusionError::Execution("the table is being written to".into()))?;
        let mut ipc = Vec::new();
        {
            let mut w = StreamWriter::try_new(&mut ipc, &schema)?;
            for b in batches.iter() {
                w.write(b)?;
            }
            w.finish()?;
        }
        buf.extend_from_slice(&(ipc.len() as u64).to_le_bytes());
        buf.extend_from_slice(&ipc);
        if buf.len() - start > MAX_PLAN_TABLE_BYTES {
            return Err(DataFusionError::Plan(format!(
                "it is over {} MiB (tables made with CREATE TABLE … AS are written to files on a cluster; keep range()/generate_series() small)",
                MAX_PLAN_TABLE_BYTES >> 20
            )));
        }
    }
    Ok(())
}

fn decode_mem_table(mut rest: &[u8], schema: SchemaRef) -> Result<Arc<dyn TableProvider>> {
    let truncated = || DataFusionError::Internal("truncated in-plan table".into());
    let take = |rest: &mut &[u8], n: usize| -> Result<Vec<u8>> {
        if rest.len() < n {
            return Err(truncated());
        }
        let (head, tail) = rest.split_at(n);
        *rest = tail;
        Ok(head.to_vec())
    };
    let parts = u32::from_le_bytes(take(&mut rest, 4)?.try_into().map_err(|_| truncated())?);
    let mut partitions = Vec::new();
    for _ in 0..parts {
        let len = u64::from_le_bytes(take(&mut rest, 8)?.try_into().map_err(|_| truncated())?);
        let ipc = take(&mut rest, usize::try_from(len).map_err(|_| truncated())?)?;
        let reader = StreamReader::try_new(std::io::Cursor::new(ipc), None)?;
        let batches = reader.collect::<std::result::Result<Vec<RecordBatch>, _>>()?;
        partitions.push(batches);
    }
    if !rest.is_empty() {
        return Err(DataFusionError::Internal(
            "trailing bytes after an in-plan table".into(),
        ));
    }
    Ok(Arc::new(MemTable::try_new(schema, partitions)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::Int64Array;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    #[test]
    fn mem_tables_round_trip_and_big_ones_are_refused() {
        let schema = Arc::new(Schema::new(vec![Field::new(
            "value",
            DataType::Int64,
            false,
        )]));
        let batch = |n: i64| {
            RecordBatch::try_new(
                schema.clone(),
                vec![Arc::new(Int64Array::from_iter_values(0..n))],
            )
            .unwrap()
        };
        let mem = MemTable::try_new(schema.clone(), vec![vec![batch(5)], vec![]]).unwrap();
        let mut buf = Vec::new();
        encode_mem_table(&mem, &mut buf).unwrap();
        let back = decode_mem_table(&buf[MEM_TABLE.len()..], schema.clone()).unwrap();
        let back = back.downcast_ref::<MemTable>().unwrap();
        assert_eq!(back.batches.len(), 2);
        let rows = back.batches[0].try_read().unwrap();
        assert_eq!(rows[0], batch(5));
        // a truncated plan is an error, not a panic
        assert!(decode_mem_table(&buf[MEM_TABLE.len()..buf.len() - 3], schema.clone()).is_err());
        let big = MemTable::try_new(schema.clone(), vec![vec![batch(2 << 20)]]).unwrap();
        let err = encode_mem_table(&big, &mut Vec::new())
            .unwrap_err()
            .to_string();
        assert!(err.contains("over 8 MiB"), "{err}");
    }
}
