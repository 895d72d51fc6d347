//! `tf.train.Example`: the prost-generated types, tusk's JSON form, and a zero-copy walk of the
//! wire bytes for the hot paths (stats, schema inference) that never allocates per record.

use std::fmt::Write as _;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use prost::Message as _;

/// Generated from `proto/example.proto` (wire-identical to TensorFlow's).
#[allow(missing_docs, clippy::all)]
pub mod pb {
    include!(concat!(env!("OUT_DIR"), "/tensorflow.rs"));
}

pub use pb::{BytesList, Example, Feature, Features, FloatList, Int64List, feature::Kind};

/// The three value types a feature can hold.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum FeatureType {
    /// `bytes_list`
    Bytes,
    /// `float_list`
    Float,
    /// `int64_list`
    Int64,
}

impl FeatureType {
    /// `"bytes"`, `"float"` or `"int64"`.
    pub fn as_str(self) -> &'static str {
        match self {
            FeatureType::Bytes => "bytes",
            FeatureType::Float => "float",
            FeatureType::Int64 => "int64",
        }
    }
}

/// Decode one serialized Example.
pub fn decode(bytes: &[u8]) -> Result<Example, String> {
    // Validate with the strict walker first: prost alone would accept some garbage (e.g.
    // groups) that TensorFlow rejects, and would give less precise messages.
    walk(bytes, |_, _, _| Ok(()))?;
    Example::decode(bytes).map_err(|e| e.to_string())
}

/// Build an Example from `(name, kind)` pairs.
pub fn from_features(features: impl IntoIterator<Item = (String, Kind)>) -> Example {
    Example {
        features: Some(Features {
            feature: features
                .into_iter()
                .map(|(k, v)| (k, Feature { kind: Some(v) }))
                .collect(),
        }),
    }
}

/// Serializes `tf.train.Example`s straight from slices, feature by feature, into buffers kept
/// from record to record: the fast path for writers (no per-record structs, values copied
/// once). Add features in name order to get prost's bytes exactly (it writes its map sorted);
/// any order is a valid Example.
///
/// ```
/// use tusk_records::example::{self, ExampleWriter};
/// let mut w = ExampleWriter::default();
/// w.float_list(b"x", &[1.5, -2.0]);
/// w.int64_list(b"y", &[7]);
/// let ex = example::decode(w.finish()).unwrap();
/// assert_eq!(ex.features.unwrap().feature.len(), 2);
/// ```
#[derive(Debug, Default)]
pub struct ExampleWriter {
    entries: Vec<u8>,
    scratch: Vec<u8>,
    out: Vec<u8>,
}

impl ExampleWriter {
    /// A `float_list` feature (an empty slice makes an empty list).
    pub fn float_list(&mut self, key: &[u8], values: &[f32]) {
        let n = 4 * values.len();
        let list = if n == 0 {
            0
        } else {
            1 + varint_len(n as u64) + n
        };
        self.entry(key, 0x12, list);
        if n > 0 {
            let e = &mut self.entries;
            e.push(0x0a);
            put_varint(e, n as u64);
            let start = e.len();
            e.resize(start + n, 0);
            for (d, v) in e[start..].chunks_exact_mut(4).zip(values) {
                d.copy_from_slice(&v.to_le_bytes());
            }
        }
    }

    /// An `int64_list` feature.
    pub fn int64_list(&mut self, key: &[u8], values: &[i64]) {
        self.scratch.clear();
        for &v in values {
            put_varint(&mut self.scratch, v as u64);
        }
        let n = self.scratch.len();
        let list = if n == 0 {
            0
        } else {
            1 + varint_len(n as u64) + n
        };
        self.entry(key, 0x1a, list);
        if n > 0 {
            self.entries.push(0x0a);
            put_varint(&mut self.entries, n as u64);
            self.entries.extend_from_slice(&self.scratch);
        }
    }

    /// A `bytes_list` feature.
    pub fn bytes_list<'a>(
        &mut self,
        key: &[u8],
        values: impl IntoIterator<Item = &'a [u8]> + Clone,
    ) {
        let list = values
            .clone()
            .into_iter()
            .map(|v| 1 + varint_len(v.len() as u64) + v.len())
            .sum();
        self.entry(key, 0x0a, list);
        for v in values {
            self.entries.push(0x0a);
            put_varint(&mut self.entries, v.len() as u64);
            self.entries.extend_from_slice(v);
        }
    }

    /// The map entry's header up to the list's own bytes: `Features.feature` entry { key,
    /// value: Feature { <kind_tag>: list of `list` bytes } }.
    fn entry(&mut self, key: &[u8], kind_tag: u8, list: usize) {
        let feature = 1 + varint_len(list as u64) + list;
        let entry =
            1 + varint_len(key.len() as u64) + key.len() + 1 + varint_len(feature as u64) + feature;
        let e = &mut self.entries;
        e.push(0x0a);
        put_varint(e, entry as u64);
        e.push(0x0a);
        put_varint(e, key.len() as u64);
        e.extend_from_slice(key);
        e.push(0x12);
        put_varint(e, feature as u64);
        e.push(kind_tag);
        put_varint(e, list as u64);
    }

    /// The serialized Example of the features added since the last `finish`, which starts the
    /// next one.
    pub fn finish(&mut self) -> &[u8] {
        self.out.clear();
        self.out.push(0x0a);
        put_varint(&mut self.out, self.entries.len() as u64);
        self.out.extend_from_slice(&self.entries);
        self.entries.clear();
        &self.out
    }
}

/// Append `v` as a protobuf varint.
fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Bytes `v` takes as a varint.
fn varint_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

/// tusk's JSON line for one Example: feature name → `{"int64": [...]}`, `{"float": [...]}` or
/// `{"bytes": [base64...]}`, keys sorted. Non-finite floats are the strings `"NaN"`,
/// `"Infinity"` and `"-Infinity"`; a feature with no kind set is `{}`.
pub fn to_json(ex: &Example, out: &mut String) {
    out.push('{');
    if let Some(f) = &ex.features {
        for (i, (name, feat)) in f.feature.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            push_json_str(out, name);
            out.push(':');
            match &feat.kind {
                None => out.push_str("{}"),
                Some(Kind::Int64List(l)) => {
                    out.push_str("{\"int64\":[");
                    for (j, v) in l.value.iter().enumerate() {
                        if j > 0 {
                            out.push(',');
                        }
                        let _ = write!(out, "{v}");
                    }
                    out.push_str("]}");
                }
                Some(Kind::FloatList(l)) => {
                    out.push_str("{\"float\":[");
                    for (j, v) in l.value.iter().enumerate() {
                        if j > 0 {
                            out.push(',');
                        }
                        push_json_f32(out, *v);
                    }
                    out.push_str("]}");
                }
                Some(Kind::BytesList(l)) => {
                    out.push_str("{\"bytes\":[");
                    for (j, v) in l.value.iter().enumerate() {
                        if j > 0 {
                            out.push(',');
                        }
                        out.push('"');
                        B64.encode_string(v, out);
                        out.push('"');
                    }
                    out.push_str("]}");
                }
            }
        }
    }
    out.push('}');
}

fn push_json_str(out: &mut String, s: &str) {
    out.push_str(&serde_json::to_string(s).expect("strings always serialize"));
}

/// Shortest text that parses back to the same `f32`.
pub(crate) fn push_json_f32(out: &mut String, v: f32) {
    if v.is_nan() {
        out.push_str("\"NaN\"");
    } else if v.is_infinite() {
        out.push_str(if v > 0.0 {
            "\"Infinity\""
        } else {
            "\"-Infinity\""
        });
    } else {
        // `{:?}` on f32 prints the shortest round-tripping form, with a `.0` for integers.
        let _ = write!(out, "{v:?}");
    }
}

/// Parse tusk's JSON form back into an Example (used by tests and `records convert` from JSON).
pub fn from_json(value: &serde_json::Value) -> Result<Example, String> {
    let obj = value
        .as_object()
        .ok_or("expected a JSON object of features")?;
    let mut feats = Vec::new();
    for (name, v) in obj {
        let inner = v
            .as_object()
            .ok_or_else(|| format!("feature '{name}': expected an object"))?;
        let kind = match inner.iter().next() {
            None => None,
            Some((t, vals)) => {
                let vals = vals
                    .as_array()
                    .ok_or_else(|| format!("feature '{name}': expected a list of values"))?;
                Some(match t.as_str() {
                    "int64" => Kind::Int64List(Int64List {
                        value: vals
                            .iter()
                            .map(|x| {
                                x.as_i64()
                                    .ok_or_else(|| format!("feature '{name}': {x} is not an int64"))
                            })
                            .collect::<Result<_, _>>()?,
                    }),
                    "float" => Kind::FloatList(FloatList {
                        value: vals
                            .iter()
                            .map(|x| {
                                json_f32(x)
                                    .ok_or_else(|| format!("feature '{name}': {x} is not a float"))
                            })
                            .collect::<Result<_, _>>()?,
                    }),
                    "bytes" => Kind::BytesList(BytesList {
                        value: vals
                            .iter()
                            .map(|x| {
                                x.as_str()
                                    .and_then(|s| B64.decode(s).ok())
                                    .ok_or_else(|| format!("feature '{name}': {x} is not base64"))
                            })
                            .collect::<Result<_, _>>()?,
                    }),
                    other => {
                        return Err(format!(
                            "feature '{name}': unknown type '{other}' (expected int64, float or bytes)"
                        ));
                    }
                })
            }
        };
        feats.push((name.clone(), Feature { kind }));
    }
    Ok(Example {
        features: Some(Features {
            feature: feats.into_iter().collect(),
        }),
    })
}

/// A float in tusk's JSON form (a number, or "NaN" / "Infinity" / "-Infinity").
pub fn json_f32(v: &serde_json::Value) -> Option<f32> {
    match v {
        serde_json::Value::Number(n) => n.as_f64().map(|f| f as f32),
        serde_json::Value::String(s) => match s.as_str() {
            "NaN" => Some(f32::NAN),
            "Infinity" => Some(f32::INFINITY),
            "-Infinity" => Some(f32::NEG_INFINITY),
            _ => None,
        },
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------
// Zero-copy walk of the wire format. Errors are a small `Copy` value on the hot path and only
// become text at the public boundary.

#[derive(Debug, Clone, Copy)]
enum WireErr {
    Msg(&'static str),
    WireType(u64, u64),
    PastEnd(u64),
}

impl WireErr {
    fn text(self) -> String {
        match self {
            WireErr::Msg(m) => m.to_string(),
            WireErr::WireType(w, field) => format!("invalid wire type {w} (field {field})"),
            WireErr::PastEnd(len) => format!("length {len} runs past the end of the message"),
        }
    }
}

type WResult<T> = Result<T, WireErr>;

/// One feature as seen by [`walk`]: its values, still encoded.
#[derive(Debug, Clone, Copy)]
pub enum Values<'a> {
    /// Encoded `BytesList` message.
    Bytes(&'a [u8]),
    /// Encoded `FloatList` message.
    Float(&'a [u8]),
    /// Encoded `Int64List` message.
    Int64(&'a [u8]),
    /// A feature with no kind set.
    Empty,
}

impl Values<'_> {
    /// The value type, if any.
    pub fn feature_type(&self) -> Option<FeatureType> {
        match self {
            Values::Bytes(_) => Some(FeatureType::Bytes),
            Values::Float(_) => Some(FeatureType::Float),
            Values::Int64(_) => Some(FeatureType::Int64),
            Values::Empty => None,
        }
    }

    /// Number of values (validated while counting).
    pub fn count(&self) -> Result<usize, String> {
        self.count_raw().map_err(WireErr::text)
    }

    #[inline]
    fn count_raw(&self) -> WResult<usize> {
        // Fast path: one packed field `0a <len < 128> payload`, what every writer emits.
        if let Values::Float(b) | Values::Int64(b) = *self
            && b.len() >= 2
            && b[0] == 0x0a
            && b[1] < 0x80
            && b.len() == 2 + b[1] as usize
        {
            let p = &b[2..];
            if let Values::Float(_) = *self {
                if p.len() % 4 == 0 {
                    return Ok(p.len() / 4);
                }
            } else if p.last().is_none_or(|x| x & 0x80 == 0) {
                return Ok(p.iter().filter(|x| *x & 0x80 == 0).count());
            }
        }
        let mut n = 0;
        match *self {
            Values::Empty => {}
            Values::Bytes(b) => fields(b, |field, v| {
                if field == 1 {
                    match v {
                        Wire::Len(_) => n += 1,
                        _ => return Err(WireErr::Msg("BytesList.value must be length-delimited")),
                    }
                }
                Ok(())
            })?,
            Values::Float(b) => fields(b, |field, v| {
                if field == 1 {
                    match v {
                        Wire::Len(p) if p.len() % 4 == 0 => n += p.len() / 4,
                        Wire::Len(_) => {
                            return Err(WireErr::Msg(
                                "packed FloatList length is not a multiple of 4",
                            ));
                        }
                        Wire::Fixed32(_) => n += 1,
                        _ => return Err(WireErr::Msg("FloatList.value has the wrong wire type")),
                    }
                }
                Ok(())
            })?,
            Values::Int64(b) => fields(b, |field, v| {
                if field == 1 {
                    match v {
                        Wire::Len(p) => {
                            if p.last().is_some_and(|x| x & 0x80 != 0) {
                                return Err(WireErr::Msg("packed Int64List ends inside a varint"));
                            }
                            n += p.iter().filter(|x| *x & 0x80 == 0).count();
                        }
                        Wire::Varint(_) => n += 1,
                        _ => return Err(WireErr::Msg("Int64List.value has the wrong wire type")),
                    }
                }
                Ok(())
            })?,
        }
        Ok(n)
    }

    /// True when every bytes value is valid UTF-8 (always true for other types).
    pub fn all_utf8(&self) -> bool {
        let Values::Bytes(b) = *self else {
            return true;
        };
        let mut ok = true;
        let _ = fields(b, |field, v| {
            if let (1, Wire::Len(p)) = (field, v) {
                ok &= std::str::from_utf8(p).is_ok();
            }
            Ok(())
        });
        ok
    }
}

impl Values<'_> {
    /// Append the values of an `Int64List` to `out` (validated as they are read).
    pub fn append_i64(&self, out: &mut Vec<i64>) -> Result<(), String> {
        let Values::Int64(b) = *self else {
            return self.wrong_kind("int64");
        };
        fields(b, |field, v| {
            if field == 1 {
                match v {
                    Wire::Len(p) => {
                        let mut pos = 0;
                        while pos < p.len() {
                            out.push(varint(p, &mut pos)? as i64);
                        }
                    }
                    Wire::Varint(x) => out.push(x as i64),
                    _ => return Err(WireErr::Msg("Int64List.value has the wrong wire type")),
                }
            }
            Ok(())
        })
        .map_err(WireErr::text)
    }

    /// Append the values of a `FloatList` to `out`.
    pub fn append_f32(&self, out: &mut Vec<f32>) -> Result<(), String> {
        let Values::Float(b) = *self else {
            return self.wrong_kind("float");
        };
        fields(b, |field, v| {
            if field == 1 {
                match v {
                    Wire::Len(p) if p.len() % 4 == 0 => out.extend(
                        p.chunks_exact(4)
                            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
                    ),
                    Wire::Len(_) => {
                        return Err(WireErr::Msg(
                            "packed FloatList length is not a multiple of 4",
                        ));
                    }
                    Wire::Fixed32(c) => out.push(f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
                    _ => return Err(WireErr::Msg("FloatList.value has the wrong wire type")),
                }
            }
            Ok(())
        })
        .map_err(WireErr::text)
    }

    /// Append the values of a `BytesList`: their bytes to `data`, each value's end offset in
    /// `data` to `ends`.
    pub fn append_bytes(&self, data: &mut Vec<u8>, ends: &mut Vec<i64>) -> Result<(), String> {
        let Values::Bytes(b) = *self else {
            return self.wrong_kind("bytes");
        };
        fields(b, |field, v| {
            if field == 1 {
                match v {
                    Wire::Len(p) => {
                        data.extend_from_slice(p);
                        ends.push(data.len() as i64);
                    }
                    _ => return Err(WireErr::Msg("BytesList.value must be length-delimited")),
                }
            }
            Ok(())
        })
        .map_err(WireErr::text)
    }

    fn wrong_kind(&self, want: &str) -> Result<(), String> {
        match self.feature_type() {
            // A feature with no kind set has no values: nothing to append.
            None => Ok(()),
            Some(t) => Err(format!("holds {} values, expected {want}", t.as_str())),
        }
    }
}

/// Walk a serialized Example without decoding it, calling `f(name, values, count)` for every
/// feature map entry, where `count` is the number of values (already validated). Fails with a
/// precise reason on anything that is not a valid Example encoding.
pub fn walk<'a>(
    bytes: &'a [u8],
    mut f: impl FnMut(&'a str, Values<'a>, usize) -> Result<(), String>,
) -> Result<(), String> {
    walk_raw(bytes, |key, values, count| {
        let key =
            std::str::from_utf8(key).map_err(|_| "feature name is not valid UTF-8".to_string())?;
        f(key, values, count)
    })
}

/// [`walk`] with the feature name as raw bytes, not yet checked to be UTF-8: for callers that
/// can validate more cheaply (e.g. by comparing with a name they already know).
pub fn walk_raw<'a>(
    bytes: &'a [u8],
    mut f: impl FnMut(&'a [u8], Values<'a>, usize) -> Result<(), String>,
) -> Result<(), String> {
    // The callback's own error, kept aside so the hot path carries only `WireErr`.
    let mut user_err: Option<String> = None;
    let res = fields(bytes, |field, v| {
        if field != 1 {
            return Ok(());
        }
        let Wire::Len(features) = v else {
            return Err(WireErr::Msg("Example.features must be a message"));
        };
        fields(features, |field, v| {
            if field != 1 {
                return Ok(());
            }
            let Wire::Len(entry) = v else {
                return Err(WireErr::Msg("Features.feature must be a map entry"));
            };
            let mut key: &[u8] = b"";
            let mut value = Values::Empty;
            if let Some((k, v)) = entry_fast(entry) {
                key = k;
                value = v;
            } else {
                entry_general(entry, &mut key, &mut value)?;
            }
            let count = value.count_raw()?;
            match f(key, value, count) {
                Ok(()) => Ok(()),
                Err(e) => {
                    user_err = Some(e);
                    Err(WireErr::Msg(""))
                }
            }
        })
    });
    match (res, user_err) {
        (Ok(()), _) => Ok(()),
        (Err(_), Some(e)) => Err(e),
        (Err(e), None) => Err(e.text()),
    }
}

/// The shape every mainstream writer produces for a map entry: `0a <len> key 12 <len> (0a|12|1a)
/// <len> values`, all lengths below 128 except the values'. `None` sends the entry to the
/// general parser.
#[inline(always)]
fn entry_fast(e: &[u8]) -> Option<(&[u8], Values<'_>)> {
    if e.len() < 4 || e[0] != 0x0a || e[1] >= 0x80 {
        return None;
    }
    let kend = 2 + e[1] as usize;
    let key = e.get(2..kend)?;
    if *e.get(kend)? != 0x12 {
        return None;
    }
    let flen = *e.get(kend + 1)?;
    let mut pos = kend + 2;
    let feat = if flen < 0x80 {
        let end = pos + flen as usize;
        if end != e.len() {
            return None;
        }
        &e[pos..end]
    } else {
        let len = varint(e, &mut pos).ok()?;
        let end = pos.checked_add(usize::try_from(len).ok()?)?;
        if end != e.len() {
            return None;
        }
        &e[pos..end]
    };
    if feat.is_empty() {
        return Some((key, Values::Empty));
    }
    let tag = feat[0];
    let mut p = 1;
    let len = varint(feat, &mut p).ok()?;
    if p.checked_add(usize::try_from(len).ok()?)? != feat.len() {
        return None;
    }
    let list = &feat[p..];
    Some((
        key,
        match tag {
            0x0a => Values::Bytes(list),
            0x12 => Values::Float(list),
            0x1a => Values::Int64(list),
            _ => return None,
        },
    ))
}

#[inline(never)]
fn entry_general<'a>(entry: &'a [u8], key: &mut &'a [u8], value: &mut Values<'a>) -> WResult<()> {
    fields(entry, |field, v| {
        match (field, v) {
            (1, Wire::Len(k)) => *key = k,
            (2, Wire::Len(feat)) => {
                *value = Values::Empty;
                fields(feat, |field, v| {
                    let Wire::Len(list) = v else {
                        return if (1..=3).contains(&field) {
                            Err(WireErr::Msg("Feature kind must be a message"))
                        } else {
                            Ok(())
                        };
                    };
                    *value = match field {
                        1 => Values::Bytes(list),
                        2 => Values::Float(list),
                        3 => Values::Int64(list),
                        _ => *value,
                    };
                    Ok(())
                })?;
            }
            (1 | 2, _) => {
                return Err(WireErr::Msg("feature map entry has the wrong wire type"));
            }
            _ => {}
        }
        Ok(())
    })
}

enum Wire<'a> {
    Varint(u64),
    Fixed64,
    Len(&'a [u8]),
    Fixed32(&'a [u8]),
}

#[inline(always)]
fn varint(b: &[u8], pos: &mut usize) -> WResult<u64> {
    match b.get(*pos) {
        Some(&x) if x < 0x80 => {
            *pos += 1;
            Ok(u64::from(x))
        }
        _ => varint_slow(b, pos),
    }
}

#[inline(never)]
fn varint_slow(b: &[u8], pos: &mut usize) -> WResult<u64> {
    let mut v = 0u64;
    let mut shift = 0;
    while shift < 70 {
        let byte = *b.get(*pos).ok_or(WireErr::Msg("truncated varint"))?;
        *pos += 1;
        if shift == 63 && byte > 1 {
            return Err(WireErr::Msg("varint overflows 64 bits"));
        }
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(v);
        }
        shift += 7;
    }
    Err(WireErr::Msg("varint longer than 10 bytes"))
}

/// Iterate the top-level fields of one message.
#[inline(always)]
fn fields<'a>(b: &'a [u8], mut f: impl FnMut(u64, Wire<'a>) -> WResult<()>) -> WResult<()> {
    let mut pos = 0;
    while pos < b.len() {
        let tag = varint(b, &mut pos)?;
        let field = tag >> 3;
        if field == 0 {
            return Err(WireErr::Msg("field number 0"));
        }
        let wire = match tag & 7 {
            0 => Wire::Varint(varint(b, &mut pos)?),
            1 => {
                pos = pos
                    .checked_add(8)
                    .filter(|p| *p <= b.len())
                    .ok_or(WireErr::Msg("truncated fixed64"))?;
                Wire::Fixed64
            }
            2 => {
                let len = varint(b, &mut pos)?;
                let end = usize::try_from(len)
                    .ok()
                    .and_then(|l| pos.checked_add(l))
                    .filter(|e| *e <= b.len())
                    .ok_or(WireErr::PastEnd(len))?;
                let s = &b[pos..end];
                pos = end;
                Wire::Len(s)
            }
            5 => {
                let start = pos;
                pos = pos
                    .checked_add(4)
                    .filter(|p| *p <= b.len())
                    .ok_or(WireErr::Msg("truncated fixed32"))?;
                Wire::Fixed32(&b[start..pos])
            }
            w => return Err(WireErr::WireType(w, field)),
        };
        f(field, wire)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn appended_values_equal_the_decoded_example_packed_or_not() {
        let bytes = prost::Message::encode_to_vec(&sample());
        let (mut ints, mut floats, mut data, mut ends) = (vec![], vec![], vec![], vec![0i64]);
        walk(&bytes, |name, v, _| match name {
            "user_id" => v.append_i64(&mut ints),
            "label" => v.append_f32(&mut floats),
            "tag" => v.append_bytes(&mut data, &mut ends),
            _ => Ok(()),
        })
        .unwrap();
        assert_eq!(ints, vec![42, -1]);
        assert_eq!(floats, vec![1.0]);
        assert_eq!(data, b"ab\xff".to_vec());
        assert_eq!(ends, vec![0, 2, 3]);
        // Unpacked encodings (one field per value) are valid protobuf too.
        let mut v = vec![];
        Values::Int64(&[0x08, 5, 0x08, 0x7f])
            .append_i64(&mut v)
            .unwrap();
        assert_eq!(v, vec![5, 127]);
        let mut f = vec![];
        let mut enc = vec![0x0d];
        enc.extend(2.5f32.to_le_bytes());
        Values::Float(&enc).append_f32(&mut f).unwrap();
        assert_eq!(f, vec![2.5]);
        // The wrong kind is an error naming both; a feature with no kind has no values.
        let err = Values::Float(&enc).append_i64(&mut v).unwrap_err();
        assert!(err.contains("float") && err.contains("int64"), "{err}");
        Values::Empty.append_i64(&mut v).unwrap();
        // Damaged payloads are errors, not garbage.
        assert!(
            Values::Int64(&[0x0a, 0x02, 0x80])
                .append_i64(&mut v)
                .is_err()
        );
        assert!(
            Values::Float(&[0x0a, 0x03, 1, 2, 3])
                .append_f32(&mut f)
                .is_err()
        );
    }

    fn sample() -> Example {
        from_features([
            (
                "user_id".to_string(),
                Kind::Int64List(Int64List {
                    value: vec![42, -1],
                }),
            ),
            (
                "label".to_string(),
                Kind::FloatList(FloatList { value: vec![1.0] }),
            ),
            (
                "tag".to_string(),
                Kind::BytesList(BytesList {
                    value: vec![b"ab".to_vec(), vec![0xff]],
                }),
            ),
        ])
    }

    #[test]
    fn json_matches_documented_form() {
        let mut s = String::new();
        to_json(&sample(), &mut s);
        assert_eq!(
            s,
            r#"{"label":{"float":[1.0]},"tag":{"bytes":["YWI=","/w=="]},"user_id":{"int64":[42,-1]}}"#
        );
        let back = from_json(&serde_json::from_str(&s).unwrap()).unwrap();
        assert_eq!(back, sample());
    }

    #[test]
    fn walk_counts_values_without_decoding() {
        let bytes = sample().encode_to_vec();
        let mut seen = Vec::new();
        walk(&bytes, |k, v, _| {
            seen.push((k.to_string(), v.feature_type().unwrap(), v.count().unwrap()));
            Ok(())
        })
        .unwrap();
        assert_eq!(
            seen,
            vec![
                ("label".into(), FeatureType::Float, 1),
                ("tag".into(), FeatureType::Bytes, 2),
                ("user_id".into(), FeatureType::Int64, 2)
            ]
        );
    }

    #[test]
    fn rejects_non_examples_with_reasons() {
        for (bytes, needle) in [
            (&b"{\"user\": 1}"[..], "invalid wire type"),
            (&[0x0a, 0x05, 0x01][..], "runs past the end"),
            (&[0x08][..], "truncated varint"),
        ] {
            let e = decode(bytes).unwrap_err();
            assert!(e.contains(needle), "{e}");
        }
    }

    fn arb_kind() -> impl Strategy<Value = Kind> {
        prop_oneof![
            prop::collection::vec(any::<i64>(), 0..5)
                .prop_map(|value| Kind::Int64List(Int64List { value })),
            prop::collection::vec(any::<f32>().prop_filter("nan", |f| !f.is_nan()), 0..5)
                .prop_map(|value| Kind::FloatList(FloatList { value })),
            prop::collection::vec(prop::collection::vec(any::<u8>(), 0..8), 0..4)
                .prop_map(|value| Kind::BytesList(BytesList { value })),
        ]
    }

    proptest! {
        #[test]
        fn json_and_wire_roundtrip(feats in prop::collection::btree_map("[a-z_]{1,8}", arb_kind(), 0..6)) {
            let ex = from_features(feats.clone());
            let bytes = ex.encode_to_vec();
            prop_assert_eq!(decode(&bytes).unwrap(), ex.clone());
            // The direct writer gives prost's bytes (features in name order), twice in a row.
            let mut w = ExampleWriter::default();
            for _ in 0..2 {
                for (k, kind) in &feats {
                    match kind {
                        Kind::Int64List(l) => w.int64_list(k.as_bytes(), &l.value),
                        Kind::FloatList(l) => w.float_list(k.as_bytes(), &l.value),
                        Kind::BytesList(l) => w.bytes_list(k.as_bytes(), l.value.iter().map(Vec::as_slice)),
                    }
                }
                prop_assert_eq!(w.finish(), &bytes[..]);
            }
            // The zero-copy walk (fast and general paths) counts what the decoder decodes.
            let mut walked = Vec::new();
            walk(&bytes, |k, _, n| {
                walked.push((k.to_string(), n));
                Ok(())
            })
            .unwrap();
            let decoded: Vec<(String, usize)> = ex
                .features
                .as_ref()
                .unwrap()
                .feature
                .iter()
                .map(|(k, f)| {
                    let n = match f.kind.as_ref().unwrap() {
                        Kind::Int64List(l) => l.value.len(),
                        Kind::FloatList(l) => l.value.len(),
                        Kind::BytesList(l) => l.value.len(),
                    };
                    (k.clone(), n)
                })
                .collect();
            prop_assert_eq!(walked, decoded);
            let mut s = String::new();
            to_json(&ex, &mut s);
            prop_assert_eq!(from_json(&serde_json::from_str(&s).unwrap()).unwrap(), ex);
        }

        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode(&bytes);
        }
    }
}
