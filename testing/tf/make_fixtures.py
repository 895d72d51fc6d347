#!/usr/bin/env python3
"""Write TFRecord/Example compatibility fixtures with TensorFlow's own writer.

    TF_CPP_MIN_LOG_LEVEL=3 /root/.cache/tusk/venv/bin/python testing/tf/make_fixtures.py \
        crates/tusk-records/tests/fixtures/tf

Writes to OUTDIR:
  plain.tfrecord       uncompressed, tf.io.TFRecordWriter
  gzip.tfrecord.gz     same records, compression_type="GZIP"
  zlib.tfrecord.zz     same records, compression_type="ZLIB"
  expected.jsonl       TF's view of the records (tf.data.TFRecordDataset +
                       tf.train.Example.FromString), in `tusk records cat` JSON
  corrupt_*.tfrecord   damaged copies of the first records of plain.tfrecord,
                       with TF's error for each in corrupt.json
  README.md            provenance and the index of the records

The output is deterministic (no clocks, no unseeded randomness; random-looking
bytes come from SHA-256 in counter mode), so rerunning with the same
TensorFlow version reproduces the files byte for byte.
"""

import argparse
import base64
import hashlib
import json
import os
import struct
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tfjson  # noqa: E402

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

I64_MIN = -(2**63)
I64_MAX = 2**63 - 1


def det_bytes(label, n):
    """n deterministic pseudo-random bytes."""
    out = bytearray()
    i = 0
    while len(out) < n:
        out += hashlib.sha256(b"%s/%d" % (label.encode(), i)).digest()
        i += 1
    return bytes(out[:n])


def det_ints(label, n, lo, hi):
    raw = det_bytes(label, 8 * n)
    span = hi - lo + 1
    return [lo + int.from_bytes(raw[8 * i:8 * i + 8], "little") % span for i in range(n)]


# ---------------------------------------------------------------------------
# Examples built with the normal TF Python API.  A spec is {name: (kind, values)}
# with kind one of "int64", "float", "bytes".
# ---------------------------------------------------------------------------

def to_example(spec):
    feats = {}
    for name, (kind, values) in spec.items():
        if kind == "int64":
            feats[name] = tf.train.Feature(int64_list=tf.train.Int64List(value=values))
        elif kind == "float":
            feats[name] = tf.train.Feature(float_list=tf.train.FloatList(value=values))
        elif kind == "bytes":
            feats[name] = tf.train.Feature(bytes_list=tf.train.BytesList(value=values))
        else:
            raise ValueError(kind)
    return tf.train.Example(features=tf.train.Features(feature=feats))


def spec_json(spec):
    """The JSON line a spec should read back as (computed without TF)."""
    parts = []
    for name in sorted(spec):
        kind, values = spec[name]
        if kind == "int64":
            body = ",".join(str(int(v)) for v in values)
        elif kind == "float":
            body = ",".join(tfjson.float32_text(v) for v in values)
        else:
            body = ",".join('"' + base64.b64encode(v).decode() + '"' for v in values)
        parts.append(json.dumps(name, ensure_ascii=False) + ':{"%s":[%s]}' % (kind, body))
    return "{" + ",".join(parts) + "}"


# ---------------------------------------------------------------------------
# A tiny protobuf wire encoder for hand-made (but valid) Example payloads that
# TF's Python API would never produce: unpacked repeated fields, duplicate map
# keys, split messages, unknown fields, odd NaN bit patterns.
# ---------------------------------------------------------------------------

def varint(n):
    if n < 0:
        n += 1 << 64
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def tag(field, wire):
    return varint((field << 3) | wire)


def ld(field, payload):
    return tag(field, 2) + varint(len(payload)) + payload


def int64_list_packed(vals):
    return ld(1, b"".join(varint(v) for v in vals))


def int64_list_unpacked(vals):
    return b"".join(tag(1, 0) + varint(v) for v in vals)


def float_list_packed_bits(bits):
    return ld(1, b"".join(struct.pack("<I", b) for b in bits))


def float_list_unpacked(vals):
    return b"".join(tag(1, 5) + struct.pack("<f", v) for v in vals)


def feat_int64(list_payload):
    return ld(3, list_payload)


def feat_float(list_payload):
    return ld(2, list_payload)


def feat_bytes(vals):
    return ld(1, b"".join(ld(1, v) for v in vals))


def map_entry(name, feature_payload):
    return ld(1, ld(1, name.encode()) + ld(2, feature_payload))


def example_of_entries(entries):
    return ld(1, b"".join(entries))


def f32bits(x):
    return struct.unpack("<I", struct.pack("<f", x))[0]


def handmade_records():
    """(description, payload bytes, expected JSON line) for each hand-made record."""
    recs = []
    recs.append((
        "int64 list, unpacked encoding (one tag per value), incl. negatives",
        example_of_entries([map_entry("ids", feat_int64(int64_list_unpacked([1, -1, 300, I64_MIN, I64_MAX])))]),
        '{"ids":{"int64":[1,-1,300,-9223372036854775808,9223372036854775807]}}',
    ))
    recs.append((
        "float list, unpacked encoding (fixed32 per value)",
        example_of_entries([map_entry("w", feat_float(float_list_unpacked([0.5, -2.0, 1e-45])))]),
        '{"w":{"float":[0.5,-2.0,1e-45]}}',
    ))
    recs.append((
        "int64 list mixing packed and unpacked chunks of the same field (values concatenate)",
        example_of_entries([map_entry("ids", feat_int64(
            int64_list_packed([1, 2]) + int64_list_unpacked([3]) + int64_list_packed([4, 5])))]),
        '{"ids":{"int64":[1,2,3,4,5]}}',
    ))
    recs.append((
        "float list split in two packed chunks (values concatenate)",
        example_of_entries([map_entry("w", feat_float(
            float_list_packed_bits([f32bits(1.0)]) + float_list_packed_bits([f32bits(2.0), f32bits(3.0)])))]),
        '{"w":{"float":[1.0,2.0,3.0]}}',
    ))
    recs.append((
        "duplicate map key: the last entry wins (protobuf map semantics)",
        example_of_entries([
            map_entry("k", feat_int64(int64_list_packed([1]))),
            map_entry("other", feat_bytes([b"x"])),
            map_entry("k", feat_int64(int64_list_packed([2]))),
        ]),
        '{"k":{"int64":[2]},"other":{"bytes":["eA=="]}}',
    ))
    recs.append((
        "Example.features given twice: the two Features messages merge",
        ld(1, map_entry("a", feat_int64(int64_list_packed([1])))) +
        ld(1, map_entry("b", feat_float(float_list_packed_bits([f32bits(2.5)])))),
        '{"a":{"int64":[1]},"b":{"float":[2.5]}}',
    ))
    recs.append((
        "map entry with value before key",
        example_of_entries([ld(1, ld(2, feat_bytes([b"v"])) + ld(1, b"rev"))]),
        '{"rev":{"bytes":["dg=="]}}',
    ))
    recs.append((
        "Feature with two oneof members encoded (int64_list then float_list): the last one wins",
        example_of_entries([map_entry("one", feat_int64(int64_list_packed([7])) +
                                      feat_float(float_list_packed_bits([f32bits(7.5)])))]),
        '{"one":{"float":[7.5]}}',
    ))
    recs.append((
        "unknown fields (varint, fixed64, length-delimited, fixed32) in Example, Features and "
        "Feature are skipped (none inside the map entry: upb and other protobuf runtimes disagree there)",
        tag(9, 0) + varint(123) +
        ld(1, tag(7, 1) + b"\x00" * 8 +
           ld(1, ld(1, b"u") +
              ld(2, ld(15, b"junk") + tag(14, 5) + b"\x01\x02\x03\x04" +
                 feat_int64(int64_list_packed([9]))))) +
        ld(100, b"trailing unknown"),
        '{"u":{"int64":[9]}}',
    ))
    recs.append((
        "float NaNs with unusual bits (negative quiet NaN with payload, signalling NaN) "
        "and float32 extremes given as raw bits",
        example_of_entries([map_entry("nan_bits", feat_float(float_list_packed_bits(
            [0xFFC00001, 0x7F800001, 0x7FFFFFFF, 0x00000001, 0x80000001, 0x7F7FFFFF, 0xFF7FFFFF,
             0x00800000, 0x007FFFFF])))]),
        '{"nan_bits":{"float":["NaN","NaN","NaN",1e-45,-1e-45,3.4028235e38,-3.4028235e38,'
        '1.1754944e-38,1.1754942e-38]}}',
    ))
    recs.append((
        "empty packed lists present on the wire (length-0 payloads) of every kind",
        example_of_entries([
            map_entry("e_i", feat_int64(ld(1, b""))),
            map_entry("e_f", feat_float(ld(1, b""))),
            map_entry("e_b", ld(1, b"")),
        ]),
        '{"e_b":{"bytes":[]},"e_f":{"float":[]},"e_i":{"int64":[]}}',
    ))
    recs.append((
        "int64 values written as over-long (10-byte) varints and a varint with all 10 bytes for 1",
        example_of_entries([map_entry("long_varint", feat_int64(
            ld(1, bytes([0x81, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00]) + varint(-2))))]),
        '{"long_varint":{"int64":[1,-2]}}',
    ))
    return recs


def api_records():
    """(description, spec) for records built with the TF Python API."""
    R = []
    R.append(("minimal: one int64 and one float", {"user_id": ("int64", [42]), "label": ("float", [1.0])}))
    R.append(("int64 edge values incl. 0, negatives, 32-bit limits, int64 min/max",
              {"i": ("int64", [0, 1, -1, 127, 128, -128, 255, 300, 2**31 - 1, -(2**31), 2**32,
                               2**53 + 1, -(2**53 + 1), I64_MAX, I64_MIN])}))
    R.append(("int64 max alone", {"max": ("int64", [I64_MAX])}))
    R.append(("int64 min alone", {"min": ("int64", [I64_MIN])}))
    R.append(("single int64 zero and -1", {"zero": ("int64", [0]), "minus_one": ("int64", [-1])}))
    R.append(("floats: zeros incl. -0.0, ordinary values, values not exact in float32 (0.1, pi)",
              {"f": ("float", [0.0, -0.0, 1.0, -1.0, 0.5, 0.1, 3.14159265358979, -2.75, 1e-7, 123456.789])}))
    R.append(("floats: tiny (min subnormal, max subnormal, min normal) and huge (FLT_MAX, 1e38)",
              {"tiny": ("float", [1e-45, -1e-45, 1.1754942e-38, 1.1754944e-38, 1e-40]),
               "huge": ("float", [3.4028235e38, -3.4028235e38, 1e38, 16777216.0, 16777217.0, 1e16])}))
    R.append(("floats: NaN, +inf, -inf", {"nonfinite": ("float", [float("nan"), float("inf"), float("-inf")])}))
    R.append(("floats: non-finite mixed with finite in one list",
              {"mixed": ("float", [1.0, float("nan"), -0.0, float("-inf"), 2.5, float("inf")])}))
    R.append(("floats: Python doubles outside float32 range become inf / 0 when stored",
              {"overflow": ("float", [1e39, -1e39, 1e-50, -1e-50])}))
    R.append(("bytes: a single empty value", {"b": ("bytes", [b""])}))
    R.append(("bytes: several empty values", {"b": ("bytes", [b"", b"", b""])}))
    R.append(("bytes: non-UTF-8 binary (all 256 byte values, invalid UTF-8, NULs)",
              {"bin": ("bytes", [bytes(range(256)), b"\xff\xfe\x00\x01", b"\x80", b"\xc3\x28", b"\x00"])}))
    R.append(("bytes: unicode text as UTF-8 (accents, CJK, emoji, combining marks, NUL, RTL)",
              {"text": ("bytes", ["héllo wörld".encode(), "日本語テキスト".encode(), "emoji 🦀🎉".encode(),
                                  "e\u0301".encode(), "nul\x00inside".encode(), "שלום".encode(),
                                  "quote\" backslash\\ newline\n tab\t".encode()])}))
    R.append(("bytes: one long value (100 KiB, compressible pattern)",
              {"long": ("bytes", [(b"tusk-" + bytes(range(32, 127))) * 1024]),
               "id": ("int64", [1])}))
    R.append(("bytes: 4 KiB incompressible value plus short ones",
              {"rnd": ("bytes", [det_bytes("rnd4k", 4096), b"a", det_bytes("rnd300", 300)])}))
    R.append(("empty lists of each kind", {"ei": ("int64", []), "ef": ("float", []), "eb": ("bytes", [])}))
    R.append(("empty lists next to non-empty ones",
              {"ei": ("int64", []), "i": ("int64", [5]), "ef": ("float", []), "f": ("float", [5.0])}))
    R.append(("long int64 list (2000 values, full range)",
              {"many_ids": ("int64", det_ints("many", 2000, I64_MIN, I64_MAX))}))
    R.append(("long float list (1000 values)",
              {"emb": ("float", [float(np.float32((v - 5000) / 997.0))
                                 for v in det_ints("emb", 1000, 0, 10000)])}))
    R.append(("many features in one record (200)",
              {"f%03d" % i: (("int64", [i]) if i % 3 == 0 else ("float", [i / 8.0]) if i % 3 == 1
                             else ("bytes", [b"v%d" % i])) for i in range(200)}))
    R.append(("feature names: non-ASCII, space, punctuation, very long, empty string",
              {"名前": ("bytes", ["値".encode()]), "a b": ("int64", [1]), "x/y:z.w-1": ("float", [2.0]),
               "n" * 300: ("int64", [3]), "": ("bytes", [b"empty-name"])}))
    R.append(("feature names that sort differently as bytes vs. naive case-folding",
              {"B": ("int64", [1]), "a": ("int64", [2]), "_": ("int64", [3]), "Z": ("int64", [4]),
               "é": ("int64", [5]), "z": ("int64", [6])}))
    R.append(("same name, different kinds across records (int64 here, see next)", {"poly": ("int64", [1, 2])}))
    R.append(("same name, different kinds across records (float here)", {"poly": ("float", [1.5])}))
    R.append(("same name, different kinds across records (bytes here)", {"poly": ("bytes", [b"p"])}))
    # recommendation-style samples with differing feature sets
    cats = ["US", "DE", "JP", "BR", "IN"]
    for r in range(12):
        ints = det_ints("rec%d" % r, 20, 0, 10**9)
        spec = {
            "user_id": ("int64", [ints[0]]),
            "item_id": ("int64", [ints[1]]),
            "label": ("float", [float(ints[2] % 2)]),
        }
        if r % 2 == 0:
            spec["dense"] = ("float", [float(np.float32((ints[3 + i] % 1000) / 37.0)) for i in range(4)])
        if r % 3 == 0:
            spec["hist_items"] = ("int64", ints[8:8 + 1 + ints[7] % 5])
        if r % 4 == 1:
            spec["country"] = ("bytes", [cats[ints[13] % len(cats)].encode()])
        if r % 5 == 2:
            del spec["label"]  # unlabeled sample
        if r == 7:
            spec["weight"] = ("float", [0.25])
        R.append(("recommendation sample %d (feature set varies: dense/hist/country/label/weight)" % r, spec))
    return R


def write_all(path, payloads, compression):
    opts = tf.io.TFRecordOptions(compression_type=compression)
    with tf.io.TFRecordWriter(path, opts) as w:
        for p in payloads:
            w.write(p)


def tf_error(path):
    """Read a file fully with TF; return (records read, error text or None)."""
    n = 0
    try:
        for _ in tfjson.read_records_with_tf(path):
            n += 1
    except tf.errors.OpError as e:
        return n, "%s: %s" % (type(e).__name__, tfjson.clean_tf_message(e.message))
    return n, None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("outdir")
    args = ap.parse_args()
    os.makedirs(args.outdir, exist_ok=True)

    index = []  # (description, payload, intended json)
    # Interleave so the odd records are spread through the file.
    for desc, spec in api_records():
        index.append((desc, to_example(spec).SerializeToString(deterministic=True), spec_json(spec)))
    index.insert(5, ("zero features: Example with an empty Features message (payload 0a00, 2 bytes)",
                     tf.train.Example(features=tf.train.Features()).SerializeToString(deterministic=True), "{}"))
    index.insert(20, ("zero features: default Example, empty payload (a 0-byte record)",
                      tf.train.Example().SerializeToString(deterministic=True), "{}"))
    for desc, payload, want in handmade_records():
        index.append(("hand-encoded: " + desc, payload, want))
    index.append(("last record: minimal again", to_example({"end": ("int64", [1])}).SerializeToString(deterministic=True),
                  '{"end":{"int64":[1]}}'))

    payloads = [p for _, p, _ in index]
    files = [("plain.tfrecord", ""), ("gzip.tfrecord.gz", "GZIP"), ("zlib.tfrecord.zz", "ZLIB")]
    for name, comp in files:
        write_all(os.path.join(args.outdir, name), payloads, comp)

    # TF's view, from each file; all three must agree.
    views = {}
    for name, comp in files:
        views[name] = list(tfjson.tf_json_lines(os.path.join(args.outdir, name), comp or "NONE"))
    expected = views["plain.tfrecord"]
    for name in views:
        if views[name] != expected:
            sys.exit("TF reads %s differently from plain.tfrecord" % name)
    if len(expected) != len(index):
        sys.exit("TF read %d records, wrote %d" % (len(expected), len(index)))
    # ... and must be what we meant to write (compared by value)
    for i, ((desc, _, want), got) in enumerate(zip(index, expected)):
        if tfjson.canonical(want) != tfjson.canonical(got):
            sys.exit("record %d (%s): TF reads\n  %s\nexpected\n  %s" % (i, desc, got[:300], want[:300]))
    with open(os.path.join(args.outdir, "expected.jsonl"), "w", encoding="utf-8") as f:
        for line in expected:
            f.write(line + "\n")

    # Damaged files: the first 3 records of the plain file, broken in one place.
    with open(os.path.join(args.outdir, "plain.tfrecord"), "rb") as f:
        plain = f.read()
    lens = []
    off = 0
    for _ in range(3):
        (n,) = struct.unpack_from("<Q", plain, off)
        lens.append((off, n))
        off += 12 + n + 4
    head = bytearray(plain[:off])
    r1_off, r1_len = lens[1]
    corrupt = {}

    def put(name, data, what):
        p = os.path.join(args.outdir, name)
        with open(p, "wb") as f:
            f.write(bytes(data))
        n, err = tf_error(p)
        corrupt[name] = {"what": what, "tf_records_before_error": n, "tf_error": err}

    b = bytearray(head)
    b[r1_off + 12] ^= 0x01  # first payload byte of record 1
    put("corrupt_data_crc.tfrecord", b, "record 1: one payload bit flipped (data CRC mismatch)")
    b = bytearray(head)
    b[r1_off + 12 + r1_len] ^= 0x01  # stored data CRC of record 1
    put("corrupt_data_crc_field.tfrecord", b, "record 1: stored data CRC changed, payload intact")
    b = bytearray(head)
    b[r1_off + 8] ^= 0x01  # stored length CRC of record 1
    put("corrupt_length_crc.tfrecord", b, "record 1: stored length CRC changed")
    b = bytearray(head)
    struct.pack_into("<Q", b, r1_off, r1_len + 1000)  # length no longer matches its CRC
    put("corrupt_length.tfrecord", b, "record 1: length field changed (length CRC mismatch)")
    put("truncated_payload.tfrecord", head[:r1_off + 12 + r1_len // 2],
        "cut inside record 1's payload")
    put("truncated_header.tfrecord", head[:r1_off + 5], "cut inside record 1's length field (5 of 12 header bytes)")
    put("truncated_length_crc.tfrecord", head[:r1_off + 10],
        "cut inside record 1's length CRC (10 of 12 header bytes)")
    put("truncated_crc.tfrecord", head[:r1_off + 12 + r1_len + 2], "cut inside record 1's data CRC")
    with open(os.path.join(args.outdir, "corrupt.json"), "w") as f:
        json.dump(corrupt, f, indent=2, sort_keys=True)
        f.write("\n")

    sizes = {n: os.path.getsize(os.path.join(args.outdir, n)) for n, _ in files}
    write_readme(args.outdir, index, sizes, corrupt)
    print("wrote %d records to %s (%s)" % (len(index), args.outdir,
                                           ", ".join("%s %d B" % kv for kv in sizes.items())))


def parse_example_view(payload, want_json):
    """What tf.io.parse_example (TF's C++ fast Example parser) makes of one payload,
    as a JSON line, or 'InvalidArgumentError: ...'."""
    kinds = {"int64": tf.int64, "float": tf.float32, "bytes": tf.string}
    spec = {}
    for name, feat in json.loads(want_json).items():
        (kind, _), = feat.items()
        spec[name] = (kind, tf.io.VarLenFeature(kinds[kind]))
    try:
        out = tf.io.parse_example([payload], {k: v for k, (_, v) in spec.items()})
    except tf.errors.OpError as e:
        msg = tfjson.clean_tf_message(e.message)
        msg = msg.split(", value:")[0].strip().splitlines()[0]  # drop the raw payload bytes
        return "%s: %s" % (type(e).__name__, msg.replace("`", "'")[:120])
    fake = tf.train.Example()
    for name, (kind, _) in spec.items():
        vals = out[name].values.numpy().tolist()
        getattr(fake.features.feature[name], kind + "_list" if kind != "bytes" else "bytes_list").value.extend(vals)
    return tfjson.example_to_json(fake)


def write_readme(outdir, index, sizes, corrupt):
    lines = [
        "# TensorFlow TFRecord / Example fixtures",
        "",
        "Generated by TensorFlow %s (protobuf %s, numpy %s) with `testing/tf/make_fixtures.py`;"
        % (tf.__version__, __import__("google.protobuf").protobuf.__version__, np.__version__),
        "do not edit by hand. Regenerate with:",
        "",
        "```sh",
        "TF_CPP_MIN_LOG_LEVEL=3 /root/.cache/tusk/venv/bin/python testing/tf/make_fixtures.py \\",
        "    crates/tusk-records/tests/fixtures/tf",
        "```",
        "",
        "(the venv: `python3 -m venv /root/.cache/tusk/venv && "
        "/root/.cache/tusk/venv/bin/pip install tensorflow-cpu==2.21.0 tensorboard`).",
        "The output is deterministic for a given TensorFlow version.",
        "",
        "| file | what |",
        "|---|---|",
        "| `plain.tfrecord` | %d records, uncompressed, `tf.io.TFRecordWriter` (%d bytes) |"
        % (len(index), sizes["plain.tfrecord"]),
        "| `gzip.tfrecord.gz` | the same records, `TFRecordOptions(compression_type=\"GZIP\")` (%d bytes) |"
        % sizes["gzip.tfrecord.gz"],
        "| `zlib.tfrecord.zz` | the same records, `compression_type=\"ZLIB\"` (%d bytes) |"
        % sizes["zlib.tfrecord.zz"],
        "| `expected.jsonl` | TF's view of them: `tf.data.TFRecordDataset` + `tf.train.Example.FromString`, "
        "one JSON object per line in the `tusk records cat` format |",
        "| `corrupt_*.tfrecord`, `truncated_*.tfrecord` | damaged copies of the first 3 records; "
        "TF's behaviour on each in `corrupt.json` |",
        "",
        "JSON format: feature name → exactly one of `{\"int64\": [...]}`, `{\"float\": [...]}`, "
        "`{\"bytes\": [...]}`; keys sorted; int64 as integers; bytes as padded standard base64; "
        "floats as the shortest decimal that round-trips to the float32, laid out like Rust's ryu / serde_json "
        "(`16777216.0`, `0.0001`, `1e16`, `1e-5`; exact ties between two shortest candidates round up), "
        "non-finite ones as the strings `\"NaN\"`, `\"Infinity\"`, `\"-Infinity\"`. A serde_json-based "
        "printer should match the file byte for byte; other printers may differ in float text only, so "
        "fall back to comparing by value (`testing/tf/tfjson.py: canonical`). NaN sign/payload bits are "
        "not represented.",
        "",
        "Notes on TF's behaviour these files pin down:",
        "",
        "- `tf.train.Example()` serializes to 0 bytes, so record %d is a zero-length record; "
        "`Example(features=Features())` is the 2-byte payload `0a 00`. Both read as `{}`."
        % [i for i, (_, p, _) in enumerate(index) if not p][0],
        "- Python's `FloatList` stores float32: 0.1 reads back as 0.10000000149011612, "
        "1e39 silently becomes inf, 1e-50 becomes 0.0.",
        "- NaN bits (sign, payload, signalling) are kept on the wire by TF's writer and Python protobuf.",
        "- A file that ends inside a record header (1 to 11 bytes after the last complete record) "
        "reads without error in TF: the partial header is taken as the end of the data. A cut at or "
        "after the 12th header byte is `DataLossError: truncated record at OFFSET`; a CRC mismatch "
        "(length or data) is `DataLossError: corrupted record at OFFSET`.",
        "- Map entries of TF-API records are written sorted by key (`SerializeToString(deterministic=True)`, "
        "needed for reproducible files); the hand-encoded records put keys out of order.",
        "- `expected.jsonl` is protobuf semantics (`Example.FromString`, upb). TF's own fast parser "
        "behind `tf.io.parse_example` differs on some of the hand-encoded records; its view, with a "
        "`VarLenFeature` of the right dtype for every feature, is below. Records it gets wrong are valid "
        "protobuf; the TF Python API never writes them.",
        "",
        "| # | `tf.io.parse_example` (VarLenFeature per feature) |",
        "|---|---|",
    ]
    for i, (desc, payload, want) in enumerate(index):
        if desc.startswith("hand-encoded"):
            got = parse_example_view(payload, want)
            same = tfjson.canonical(got) == tfjson.canonical(want) if got.startswith("{") else False
            lines.append("| %d | %s |" % (i, "same as expected.jsonl" if same else "`%s`" % got))
    lines += [
        "",
        "## Records (index = line in expected.jsonl, 0-based)",
        "",
        "| # | payload bytes | covers |",
        "|---|---|---|",
    ]
    for i, (desc, payload, _) in enumerate(index):
        lines.append("| %d | %d | %s |" % (i, len(payload), desc.replace("|", "\\|")))
    lines += ["", "## Damaged files (from `corrupt.json`)", "", "| file | damage | TF |", "|---|---|---|"]
    for name in sorted(corrupt):
        c = corrupt[name]
        lines.append("| `%s` | %s | %d record(s), then %s |" % (
            name, c["what"], c["tf_records_before_error"],
            "`%s`" % c["tf_error"] if c["tf_error"] else "clean end of data, no error"))
    with open(os.path.join(outdir, "README.md"), "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
