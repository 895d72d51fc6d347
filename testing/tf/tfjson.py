"""Shared helpers: TensorFlow's view of TFRecord files as tusk-style JSON lines.

The JSON format (one object per record, one record per line) is the one
`tusk records cat` prints:

    {"label":{"float":[1.0]},"user_id":{"int64":[42]}}

* keys (feature names) sorted by code point (= UTF-8 byte order), output as
  UTF-8 (not \\u-escaped), compact separators;
* each feature is exactly one of {"int64": [...]}, {"float": [...]},
  {"bytes": [...]}; a feature with no kind set is {} (fixtures avoid it);
* int64 values as JSON integers;
* float values: the shortest decimal that parses back to the same float32
  (numpy's Dragon4 "unique" mode), laid out like Rust's ryu / serde_json
  (16777216.0, 0.0001, 1e16, 1e-5); non-finite values as the JSON strings
  "NaN", "Infinity", "-Infinity" (the NaN sign and payload are not kept);
* bytes values as standard base64 with padding.

Float text is not canonical across implementations (1e+16 vs 1e16 vs
10000000000000000.0), so prefer comparing records by value: parse the JSON, compare
floats as float32 bit patterns (NaN == NaN), everything else exactly.
"""

import base64
import json
import math
import os
import re
from fractions import Fraction

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402


def float32_text(x):
    """JSON text for one float32 value (given as a Python float or np.float32)."""
    with np.errstate(over="ignore"):
        f = np.float32(x)  # a Python double outside float32 range becomes +-inf, as in protobuf
    if math.isnan(f):
        return '"NaN"'
    if math.isinf(f):
        return '"Infinity"' if f > 0 else '"-Infinity"'
    s = _layout(f)
    # sanity: the text must denote exactly this float32 under correct
    # (single) rounding, as e.g. Rust's str::parse::<f32> does
    assert _rounds_to(s, f), (s, f)
    return s


def _layout(f):
    """Shortest round-trip digits of float32 f (numpy's Dragon4 'unique' mode), laid
    out as the Rust `ryu` crate (and so serde_json) does: plain decimal when the
    value is in [1e-4, 1e16), with at least one fractional digit (16777216.0, 0.1,
    0.0001); scientific otherwise (1e16, 3.4028235e38, 1e-5, 1.1754944e-38)."""
    if f == 0:
        return "-0.0" if np.signbit(f) else "0.0"
    sign = "-" if f < 0 else ""
    mant, exp = np.format_float_scientific(abs(f), unique=True, trim="-").split("e")
    digits = mant.replace(".", "").rstrip("0") or "0"
    kk = int(exp) + 1  # position of the decimal point relative to the first digit
    # When f lies exactly halfway between two shortest candidates (512313.625 ->
    # 512313.62 or 512313.63), numpy rounds the last digit half-to-even, ryu rounds
    # half up; both round-trip.  Follow ryu, so the text matches serde_json's.
    unit = Fraction(10) ** (kk - len(digits))
    exact = abs(Fraction(float(f)))
    if exact - int(digits) * unit == unit / 2:
        up = str(int(digits) + 1)
        kk += len(up) - len(digits)
        digits = up.rstrip("0")
    n = len(digits)
    if n <= kk <= 16:
        out = digits + "0" * (kk - n) + ".0"
    elif 0 < kk <= 16:
        out = digits[:kk] + "." + digits[kk:]
    elif -4 < kk <= 0:
        out = "0." + "0" * (-kk) + digits
    elif n == 1:
        out = digits + "e" + str(kk - 1)
    else:
        out = digits[0] + "." + digits[1:] + "e" + str(kk - 1)
    return sign + out


def _rounds_to(text, f):
    """True if the decimal `text` rounds (nearest, ties to even) to float32 `f`."""
    d = Fraction(text)
    if f == 0 and d == 0:
        return True
    v = Fraction(float(f))
    for direction in (np.float32(np.inf), np.float32(-np.inf)):
        with np.errstate(over="ignore"):
            nb = np.nextafter(f, direction)
        if math.isinf(nb):
            continue  # beyond FLT_MAX: overflow threshold is far away for shortest reprs
        nbv = Fraction(float(nb))
        if abs(d - v) > abs(d - nbv):
            return False
        if abs(d - v) == abs(d - nbv) and (int(f.view(np.uint32)) & 1):
            return False
    return True


def feature_to_json(feature):
    kind = feature.WhichOneof("kind")
    if kind is None:
        return "{}"
    if kind == "int64_list":
        return '{"int64":[' + ",".join(str(int(v)) for v in feature.int64_list.value) + "]}"
    if kind == "float_list":
        return '{"float":[' + ",".join(float32_text(v) for v in feature.float_list.value) + "]}"
    if kind == "bytes_list":
        return '{"bytes":[' + ",".join(
            '"' + base64.b64encode(v).decode("ascii") + '"' for v in feature.bytes_list.value
        ) + "]}"
    raise ValueError("unknown Feature kind %r" % kind)


def example_to_json(example):
    """One JSON line (without newline) for a tf.train.Example."""
    parts = []
    for name in sorted(example.features.feature):
        parts.append(json.dumps(name, ensure_ascii=False) + ":" + feature_to_json(example.features.feature[name]))
    return "{" + ",".join(parts) + "}"


def clean_tf_message(msg):
    """A TF op error message without the {{function_node ...}} and [Op:...] noise."""
    msg = re.sub(r"\{\{function_node [^}]*\}\}\s*", "", msg)
    msg = re.sub(r"\s*\[Op:[^\]]*\].*$", "", msg, flags=re.S)
    return msg.strip()


def read_records_with_tf(path, compression="NONE"):
    """Yield each record payload (bytes) as tf.data.TFRecordDataset sees it."""
    import tensorflow as tf

    comp = "" if compression.upper() == "NONE" else compression.upper()
    ds = tf.data.TFRecordDataset(path, compression_type=comp)
    for t in ds:
        yield t.numpy()


def tf_json_lines(path, compression="NONE"):
    """Yield JSON lines for every record of a TFRecord file, read and parsed by TF."""
    import tensorflow as tf

    for payload in read_records_with_tf(path, compression):
        yield example_to_json(tf.train.Example.FromString(payload))


def _decode_float(v):
    """float32 for one JSON float value (v is the raw text: see parse_float=str)."""
    special = {"NaN": "nan", "Infinity": "inf", "-Infinity": "-inf"}
    if v in special:
        return np.float32(special[v])
    with np.errstate(over="ignore"):
        f = np.float32(v)  # goes through float64; fix the rare double-rounding case
        if not math.isinf(f) and not _rounds_to(v, f):
            for nb in (np.nextafter(f, np.float32(np.inf)), np.nextafter(f, np.float32(-np.inf))):
                if _rounds_to(v, nb):
                    return nb
    return f


def canonical(line):
    """Parse one JSON line into a comparable structure (floats -> float32 bits,
    with every NaN mapped to one value)."""
    obj = json.loads(line, parse_float=str, parse_int=int)
    out = {}
    for name, feat in obj.items():
        if not feat:
            out[name] = None
            continue
        (kind, values), = feat.items()
        if kind == "float":
            vals = []
            for v in values:
                f = _decode_float(v if isinstance(v, str) else str(v))
                vals.append("NaN" if math.isnan(f) else f.tobytes())
            out[name] = (kind, vals)
        else:
            out[name] = (kind, list(values))
    return out
