//! Cell values: what tusk writes and what it reads back.
//!
//! tusk writes a feature's value as a serialized `tf.train.Feature` (the bytes TensorFlow puts
//! inside an Example: typed, lists included, floats exact). Another system may write plain
//! UTF-8 text instead: whitespace-separated integers are an int64 list (`"5 17 42"`, a
//! `history`), numbers a float list (`"0.5"`), anything else one string (`"New York"`), and
//! empty text a missing value. A cell that is neither is an error naming its row and column.

use prost::Message as _;
use tusk_records::example::{BytesList, Feature, FloatList, Int64List, Kind};

/// The bytes tusk writes for `kind`.
pub fn encode(kind: &Kind) -> Vec<u8> {
    Feature {
        kind: Some(kind.clone()),
    }
    .encode_to_vec()
}

/// A cell's value; the error says why it is neither a `tf.train.Feature` nor UTF-8 text.
pub fn decode(bytes: &[u8]) -> Result<Kind, String> {
    // A Feature's first byte is the tag of its one field: bytes_list (1), float_list (2) or
    // int64_list (3), length-delimited; text never starts with those control characters.
    if matches!(bytes.first(), Some(0x0a | 0x12 | 0x1a)) {
        return match Feature::decode(bytes) {
            Ok(Feature { kind: Some(k) }) => Ok(k),
            Ok(Feature { kind: None }) => Err("an empty tf.train.Feature".into()),
            Err(e) => Err(format!(
                "starts like a tf.train.Feature but does not decode as one ({e})"
            )),
        };
    }
    match std::str::from_utf8(bytes) {
        Ok(t) => Ok(text(t)),
        Err(e) => Err(format!(
            "{} bytes that are neither a serialized tf.train.Feature nor UTF-8 text ({e})",
            bytes.len()
        )),
    }
}

/// Text as a feature value (see the module).
pub fn text(t: &str) -> Kind {
    let words: Vec<&str> = t.split_whitespace().collect();
    if let Ok(v) = words.iter().map(|w| w.parse::<i64>()).collect() {
        return Kind::Int64List(Int64List { value: v });
    }
    if let Ok(v) = words.iter().map(|w| w.parse::<f32>()).collect() {
        return Kind::FloatList(FloatList { value: v });
    }
    Kind::BytesList(BytesList {
        value: vec![t.trim().as_bytes().to_vec()],
    })
}

/// Little-endian f32s, the layout of embedding cells.
pub fn f32s(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// The f32s of an embedding cell.
pub fn from_f32s(b: &[u8]) -> Result<Vec<f32>, String> {
    if !b.len().is_multiple_of(4) {
        return Err(format!(
            "{} bytes: not a whole number of little-endian f32s",
            b.len()
        ));
    }
    Ok(b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn features_round_trip_and_text_is_text() {
        for k in [
            Kind::Int64List(Int64List {
                value: vec![5, -17, 1 << 40],
            }),
            Kind::FloatList(FloatList {
                value: vec![0.1, -2.5],
            }),
            Kind::BytesList(BytesList {
                value: vec![b"a b".to_vec(), vec![0xff, 0]],
            }),
        ] {
            assert_eq!(decode(&encode(&k)).unwrap(), k);
        }
        let ints = |v: &[i64]| Kind::Int64List(Int64List { value: v.to_vec() });
        assert_eq!(decode(b"5 17\t42 ").unwrap(), ints(&[5, 17, 42]));
        assert_eq!(decode(b"").unwrap(), ints(&[]));
        assert_eq!(
            decode(b"0.5").unwrap(),
            Kind::FloatList(FloatList { value: vec![0.5] })
        );
        assert_eq!(
            decode(b" New York ").unwrap(),
            Kind::BytesList(BytesList {
                value: vec![b"New York".to_vec()]
            })
        );
        let e = decode(&[0xff, 0xfe, 0x01]).unwrap_err();
        assert!(e.contains("neither"), "{e}");
        let e = decode(&[0x1a, 0x09, 0x0a]).unwrap_err();
        assert!(e.contains("does not decode"), "{e}");
        assert_eq!(from_f32s(&f32s(&[1.5, -0.25])).unwrap(), vec![1.5, -0.25]);
        assert!(from_f32s(&[0; 5]).is_err());
    }
}
