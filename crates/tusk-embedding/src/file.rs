//! The table file of a model version (`embeddings.safetensors`, or one
//! `embeddings-SSSSS-of-NNNNN.safetensors` per embedding server): `keys` (U64), `values`
//! (F32, rows × dim), `state` (F32, rows × slots·dim), `steps` (U32), with the seed and
//! initial scale as metadata; and the deterministic safetensors writer behind it.

use safetensors::tensor::SafeTensors;

use crate::{TableState, TableView};

// safetensors data is little-endian, which is what these casts give on the targets we build.
#[cfg(not(target_endian = "little"))]
compile_error!("table files are written by casting to little-endian bytes");

/// One tensor for [`safetensors_file`].
pub struct Tensor<'a> {
    /// Its name.
    pub name: &'a str,
    /// safetensors dtype name: `F32`, `U64`, `U32`.
    pub dtype: &'static str,
    /// Its shape.
    pub shape: Vec<usize>,
    /// Little-endian element bytes.
    pub data: &'a [u8],
}

/// A safetensors file with a deterministic header: tensors in the given order (stable-sorted
/// by element size, largest first, so every tensor is aligned), metadata in the given order.
/// (The safetensors crate writes its metadata from a `HashMap`, whose order changes from run
/// to run.)
pub fn safetensors_file<'a>(
    tensors: impl IntoIterator<Item = Tensor<'a>>,
    metadata: &[(&str, String)],
) -> Vec<u8> {
    let width = |d: &str| match d {
        "F64" | "U64" | "I64" => 8,
        "F32" | "U32" | "I32" => 4,
        _ => 1,
    };
    let mut tensors: Vec<Tensor<'a>> = tensors.into_iter().collect();
    tensors.sort_by_key(|t| std::cmp::Reverse(width(t.dtype)));
    let q = |s: &str| serde_json::Value::from(s).to_string();
    let mut header = String::from("{");
    if !metadata.is_empty() {
        header.push_str("\"__metadata__\":{");
        let kv: Vec<String> = metadata
            .iter()
            .map(|(k, v)| format!("{}:{}", q(k), q(v)))
            .collect();
        header.push_str(&kv.join(","));
        header.push('}');
    }
    let mut offset = 0usize;
    for t in &tensors {
        if header.len() > 1 {
            header.push(',');
        }
        let shape: Vec<String> = t.shape.iter().map(usize::to_string).collect();
        header.push_str(&format!(
            "{}:{{\"dtype\":\"{}\",\"shape\":[{}],\"data_offsets\":[{},{}]}}",
            q(t.name),
            t.dtype,
            shape.join(","),
            offset,
            offset + t.data.len()
        ));
        offset += t.data.len();
    }
    header.push('}');
    while header.len() % 8 != 0 {
        header.push(' ');
    }
    let mut out = Vec::with_capacity(8 + header.len() + offset);
    out.extend_from_slice(&(header.len() as u64).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for t in &tensors {
        out.extend_from_slice(t.data);
    }
    out
}

fn f32_bytes(v: &[f32]) -> &[u8] {
    bytemuck::cast_slice(v)
}

/// A table's rows as a safetensors file (the same rows in the same order give the same bytes).
pub fn encode_table(t: &TableView<'_>) -> Vec<u8> {
    let p = t.pending_keys.len();
    let n = t.keys.len();
    let slots = if n == 0 || t.dim == 0 {
        0
    } else {
        t.state.len() / (n * t.dim)
    };
    // Keys waiting for admission (`min_count`), only when there are any: a table without
    // admission keeps its earlier bytes.
    let pending = [
        Tensor {
            name: "pending_keys",
            dtype: "U64",
            shape: vec![p],
            data: bytemuck::cast_slice(t.pending_keys),
        },
        Tensor {
            name: "pending_counts",
            dtype: "U32",
            shape: vec![p],
            data: bytemuck::cast_slice(t.pending_counts),
        },
    ];
    safetensors_file(
        [
            Tensor {
                name: "keys",
                dtype: "U64",
                shape: vec![n],
                data: bytemuck::cast_slice(t.keys),
            },
            Tensor {
                name: "values",
                dtype: "F32",
                shape: vec![n, t.dim],
                data: f32_bytes(t.values),
            },
            Tensor {
                name: "state",
                dtype: "F32",
                shape: vec![n, slots * t.dim],
                data: f32_bytes(t.state),
            },
            Tensor {
                name: "steps",
                dtype: "U32",
                shape: vec![n],
                data: bytemuck::cast_slice(t.steps),
            },
        ]
        .into_iter()
        .chain(pending.into_iter().filter(|_| p > 0)),
        &[
            ("init_scale", t.init_scale.to_string()),
            ("seed", t.seed.to_string()),
        ],
    )
}

/// Read a file written by [`encode_table`] holding rows of dimension `dim`; errors say which
/// tensor is missing or inconsistent.
pub fn decode_table(bytes: &[u8], dim: usize) -> Result<TableState, String> {
    let st = SafeTensors::deserialize(bytes).map_err(|e| e.to_string())?;
    let (_, info) = SafeTensors::read_metadata(bytes).map_err(|e| e.to_string())?;
    let md = info.metadata().clone().unwrap_or_default();
    let data = |name: &str| {
        st.tensor(name)
            .map(|t| t.data().to_vec())
            .map_err(|e| format!("{name}: {e}"))
    };
    let f32s = |b: Vec<u8>| -> Vec<f32> {
        b.chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    };
    let keys: Vec<u64> = data("keys")?
        .chunks_exact(8)
        .map(|c| {
            let mut a = [0u8; 8];
            a.copy_from_slice(c);
            u64::from_le_bytes(a)
        })
        .collect();
    let steps: Vec<u32> = data("steps")?
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let values = f32s(data("values")?);
    let state = f32s(data("state")?);
    let (pending_keys, pending_counts) =
        match (st.tensor("pending_keys"), st.tensor("pending_counts")) {
            (Ok(k), Ok(c)) => (
                k.data()
                    .chunks_exact(8)
                    .map(|c| {
                        let mut a = [0u8; 8];
                        a.copy_from_slice(c);
                        u64::from_le_bytes(a)
                    })
                    .collect::<Vec<u64>>(),
                c.data()
                    .chunks_exact(4)
                    .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect::<Vec<u32>>(),
            ),
            _ => (Vec::new(), Vec::new()),
        };
    if pending_keys.len() != pending_counts.len() {
        return Err(format!(
            "{} pending keys but {} counts",
            pending_keys.len(),
            pending_counts.len()
        ));
    }
    if values.len() != keys.len() * dim || steps.len() != keys.len() {
        return Err(format!(
            "{} keys, {} values and {} step counts for rows of dimension {dim}",
            keys.len(),
            values.len(),
            steps.len()
        ));
    }
    Ok(TableState {
        dim,
        seed: md.get("seed").and_then(|s| s.parse().ok()).unwrap_or(0),
        init_scale: md
            .get("init_scale")
            .and_then(|s| s.parse().ok())
            .unwrap_or(0.05),
        keys,
        values,
        state,
        steps,
        pending_keys,
        pending_counts,
    })
}

/// The file name of server `shard`'s rows among `shards`.
pub fn shard_file_name(shard: usize, shards: usize) -> String {
    format!("embeddings-{shard:05}-of-{shards:05}.safetensors")
}

/// `(shard, shards)` of a name made by [`shard_file_name`].
pub fn parse_shard_file_name(name: &str) -> Option<(usize, usize)> {
    let rest = name
        .strip_prefix("embeddings-")?
        .strip_suffix(".safetensors")?;
    let (a, b) = rest.split_once("-of-")?;
    Some((a.parse().ok()?, b.parse().ok()?))
}
