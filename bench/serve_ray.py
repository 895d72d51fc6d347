#!/usr/bin/env python3
"""The Ray Serve peer of bench/serve_bench.py: one fixed tusk model version, as a PyTorch
NeuMF, behind Ray Serve's HTTP ingress, answering tusk serve's TF-Serving `:predict`.

    RAY_PY=~/.cache/tusk/ray-venv/bin/python
    $RAY_PY bench/serve_ray.py serve --version-dir MODEL/versions/NNNNNN --port 8000 \
        [--replicas 1] [--threads 1] [--max-ongoing 128] [--max-batch 0 --batch-wait-ms 1]
    $RAY_PY bench/serve_ray.py score --version-dir MODEL/versions/NNNNNN BODY.json   # no Ray

Setup (once): `python3.11 -m venv ~/.cache/tusk/ray-venv &&
~/.cache/tusk/ray-venv/bin/pip install "ray[serve]" torch numpy` (CPU torch wheels from
https://download.pytorch.org/whl/cpu when that host is reachable; plain PyPI otherwise).

`serve` prints one line `READY {json}` on stdout once the application answers, then serves
until SIGTERM/SIGINT, when it shuts Serve and its own Ray cluster down (a private one, in a
temporary directory that this process names on the READY line, so the caller can find and
kill anything left over by that path).

What is loaded from the version directory (docs/DESIGN.md, "The model store"):
  model.json               the resolved config (TOML) and the fitted FeatureSpace: which
                           columns are sparse (hashed) and dense (standardised), NeuMF's
                           user/item fields, gmf_dim, mlp_dim, layers, train.init
  model.safetensors        mlp.K.weight/bias and predict.weight/bias, PyTorch names and
                           [out, in] shapes: loaded with load_state_dict(strict=True)
  embeddings.safetensors   keys (u64), values (rows x dim), with the table's seed and
                           init_scale as metadata (or embeddings-SSSSS-of-NNNNN.safetensors
                           from embedding servers: their rows together); optimiser state
                           is not needed to score
  entities.tfrecord        entity tables, if the version kept them: a row that lacks a
                           column gets it from the rows of the ids it carries, as tusk does

Rows are encoded as tusk encodes them (crates/tusk-data features.rs, tusk-serve rows.rs):
a sparse value's key is feature_key(column, id) = SplitMix64-mix(FNV-1a(column) ^ mix(id));
a string that reads as an integer keys like the integer, another string hashes its bytes; a
missing value (absent, null, empty list, blank/na/nan/null text) has its own key
(id = i64::MIN). A key the table lacks reads as tusk's deterministic initial row for it
(SplitMix64 stream from seed ^ key; uniform in +-init_scale, or normal), as HashedTable::peek
does; those rows are cached in a bounded spare area of the table tensor. A bag is mean-pooled
(sum of row * (1/n) in key order); the user vector is the sum of its fields' pooled rows, the
item vector likewise; logit = predict([u_g * i_g, mlp([u_m, i_m, dense])]); the answer is
the sigmoid. Ray Serve has no hot reload of tusk versions: one version, fixed at start.
"""

import argparse
import json
import math
import os
import re
import signal
import struct
import sys
import tempfile
import threading

MASK = (1 << 64) - 1
FNV_OFFSET = 0xCBF29CE484222325
FNV_PRIME = 0x100000001B3
I64_MIN = -(1 << 63)
# Rust's str::trim: Unicode White_Space.
RUST_WS = ("\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007"
           "\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000")
INT_TEXT = re.compile(r"[+-]?[0-9]+\Z")


# ============================================================ the model store (stdlib only)

def version_name(v):
    return "%06d" % v


def committed_versions(model_dir):
    """Committed version numbers, ascending: a version is committed when its parent's link
    (versions/NNNNNN/NEXT, or versions/ROOT for the first) names it."""
    vdir = os.path.join(model_dir, "versions")
    out = []
    try:
        names = os.listdir(vdir)
    except FileNotFoundError:
        return out
    for n in names:
        if not n.isdigit():
            continue
        v = int(n)
        try:
            with open(os.path.join(vdir, n, "MANIFEST.json")) as f:
                parent = json.load(f).get("parent")
            link = os.path.join(vdir, "ROOT" if parent is None else version_name(parent),
                                "" if parent is None else "NEXT")
            with open(link.rstrip("/")) as f:
                if json.load(f).get("version") == v:
                    out.append(v)
        except (OSError, ValueError):
            continue
    return sorted(out)


def latest_version(model_dir):
    vs = committed_versions(model_dir)
    return vs[-1] if vs else None


# ============================================================ tusk's keys and encodings

def _mix(z):
    z = (z + 0x9E3779B97F4A7C15) & MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
    return z ^ (z >> 31)


def fnv1a(h, data):
    for b in data:
        h = ((h ^ b) * FNV_PRIME) & MASK
    return h


class Keyer:
    """feature_key(feature, id) with the feature's FNV-1a prefix computed once."""

    def __init__(self, feature):
        self.feature = feature
        self.h = fnv1a(FNV_OFFSET, feature.encode())

    def int_key(self, v):
        return _mix(self.h ^ _mix(v & MASK))

    def missing_key(self):
        return self.int_key(I64_MIN)

    def text_key(self, data):
        """text_key: bytes (or str) that read as an i64 key like it; others hash their bytes."""
        b = data.encode() if isinstance(data, str) else data
        try:
            t = b.decode("utf-8").strip(RUST_WS)
        except UnicodeDecodeError:
            t = None
        if t is not None and INT_TEXT.match(t):
            v = int(t)
            if I64_MIN <= v < (1 << 63):
                return self.int_key(v)
        h = fnv1a(FNV_OFFSET, b)
        return self.int_key(h ^ 0x7F4A7C159E3779B9)


def is_missing_text(t):
    t = t.strip(RUST_WS)
    return t == "" or (t.isascii() and t.lower() in ("na", "nan", "null"))


class BadRequest(Exception):
    pass


# A cell as tusk's Cell: ("ints", [int]), ("floats", [f32 as float]), ("text", str),
# ("bytes", [bytes]); None when absent.

def json_cell(column, v):
    """tusk-serve rows::value: a JSON value as a cell; None for null."""
    if v is None:
        return None
    if isinstance(v, bool):
        return ("ints", [int(v)])
    if isinstance(v, int):
        if I64_MIN <= v < (1 << 63):
            return ("ints", [v])
        return ("floats", [_f32(float(v))])
    if isinstance(v, float):
        return ("floats", [_f32(v)])
    if isinstance(v, str):
        return ("text", v)
    if isinstance(v, dict):
        if len(v) == 1 and isinstance(v.get("b64"), str):
            import base64
            import binascii
            try:
                return ("bytes", [base64.b64decode(v["b64"], validate=True)])
            except (binascii.Error, ValueError) as e:
                raise BadRequest("feature `%s`: `b64` is not base64: %s" % (column, e))
        raise BadRequest("feature `%s`: an object must be {\"b64\": \"…\"}" % column)
    if isinstance(v, list):
        def is_i64(x):
            return isinstance(x, int) and not isinstance(x, bool) and I64_MIN <= x < (1 << 63)
        if all(is_i64(x) for x in v):
            return ("ints", v)
        if all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v):
            return ("floats", [_f32(float(x)) for x in v])
        if all(isinstance(x, str) for x in v):
            return ("bytes", [x.encode() for x in v])
        raise BadRequest("feature `%s`: a list must hold only integers, only numbers or only "
                         "strings" % column)
    raise BadRequest("feature `%s`: unsupported value" % column)


def _f32(x):
    return struct.unpack("<f", struct.pack("<f", x))[0] if math.isfinite(x) else x


def key_text(cell):
    """tusk_data::entities::key_text."""
    if cell is None:
        return None
    kind, v = cell
    if kind == "ints" and len(v) == 1:
        return str(v[0])
    if kind == "bytes" and len(v) == 1:
        try:
            return v[0].decode("utf-8")
        except UnicodeDecodeError:
            return None
    if kind == "text" and v.strip(RUST_WS):
        return v.strip(RUST_WS)
    return None


def dense_value(column, cell):
    """tusk_data::features::dense_value: a float or None."""
    if cell is None:
        return None
    kind, v = cell
    if kind in ("ints", "floats"):
        if len(v) == 0:
            return None
        if len(v) > 1:
            raise BadRequest("feature `%s`: dense features hold one value, found %d"
                             % (column, len(v)))
        x = float(v[0])
    elif kind == "text":
        if is_missing_text(v):
            return None
        t = v.strip(RUST_WS)
        try:
            x = float(t)
        except ValueError:
            raise BadRequest("`%s` is not a number (dense features are numeric)" % t)
        if "_" in t:
            raise BadRequest("`%s` is not a number (dense features are numeric)" % t)
    else:
        raise BadRequest("feature `%s`: dense features must be numeric" % column)
    return x if math.isfinite(x) else None


# ============================================================ files

def read_safetensors(path):
    """{name: numpy array} and the metadata of a safetensors file."""
    import numpy as np
    dtypes = {"F32": np.float32, "F64": np.float64, "U64": np.uint64, "I64": np.int64,
              "U32": np.uint32, "I32": np.int32, "U8": np.uint8}
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    meta = header.pop("__metadata__", {}) or {}
    base = 8 + n
    out = {}
    for name, t in header.items():
        a, b = t["data_offsets"]
        arr = np.frombuffer(data, dtype=dtypes[t["dtype"]], count=(b - a) //
                            np.dtype(dtypes[t["dtype"]]).itemsize, offset=base + a)
        out[name] = arr.reshape(t["shape"]).copy()
    return out, meta


def _varint(b, i):
    x, shift = 0, 0
    while True:
        c = b[i]
        i += 1
        x |= (c & 0x7F) << shift
        if c < 0x80:
            return x, i
        shift += 7


def _fields(b):
    """(field number, wire type, value) of a protobuf message; value: int or bytes."""
    i, n = 0, len(b)
    while i < n:
        tag, i = _varint(b, i)
        f, w = tag >> 3, tag & 7
        if w == 0:
            v, i = _varint(b, i)
        elif w == 1:
            v, i = b[i:i + 8], i + 8
        elif w == 2:
            ln, i = _varint(b, i)
            v, i = b[i:i + ln], i + ln
        elif w == 5:
            v, i = b[i:i + 4], i + 4
        else:
            raise ValueError("protobuf wire type %d" % w)
        yield f, w, v


def decode_example(b):
    """A tf.train.Example as {feature: cell}."""
    feats = {}
    for f, _, v in _fields(b):
        if f != 1:
            continue
        for f2, _, entry in _fields(v):
            if f2 != 1:
                continue
            key, feat = None, None
            for f3, _, x in _fields(entry):
                if f3 == 1:
                    key = bytes(x).decode()
                elif f3 == 2:
                    feat = x
            if key is None or feat is None:
                continue
            cell = None
            for kind, _, lst in _fields(feat):
                if kind == 1:  # bytes_list
                    cell = ("bytes", [bytes(x) for g, _, x in _fields(lst) if g == 1])
                elif kind == 2:  # float_list
                    vals = []
                    for g, w, x in _fields(lst):
                        if g != 1:
                            continue
                        if w == 2:
                            vals += list(struct.unpack("<%df" % (len(x) // 4), x))
                        else:
                            vals.append(struct.unpack("<f", x)[0])
                    cell = ("floats", vals)
                elif kind == 3:  # int64_list
                    vals = []
                    for g, w, x in _fields(lst):
                        if g != 1:
                            continue
                        if w == 2:
                            j = 0
                            while j < len(x):
                                u, j = _varint(x, j)
                                vals.append(u - (1 << 64) if u >> 63 else u)
                        else:
                            vals.append(x - (1 << 64) if x >> 63 else x)
                    cell = ("ints", vals)
            if cell is not None:
                feats[key] = cell
    return feats


def read_tfrecords(data):
    i = 0
    while i < len(data):
        (n,) = struct.unpack("<Q", data[i:i + 8])
        yield data[i + 12:i + 12 + n]
        i += 12 + n + 4


class Entities:
    """tusk_data::Entities: key column -> id text -> Example, and Entities::fill."""

    TABLE = "__entity_key"

    def __init__(self, data):
        self.tables = {}
        for rec in read_tfrecords(data):
            ex = decode_example(rec)
            tag = ex.pop(self.TABLE, None)
            if tag is None or tag[0] != "bytes" or len(tag[1]) != 1:
                raise ValueError("entities.tfrecord: a record without %s" % self.TABLE)
            key = tag[1][0].decode()
            ident = key_text(ex.get(key))
            if ident is None:
                raise ValueError("entities.tfrecord: a record without a single %s" % key)
            self.tables.setdefault(key, {})[ident] = ex
        self.keys = sorted(self.tables)

    def fill(self, row):
        """The examples of the ids `row` ({column: JSON value}) names, in key order."""
        found = []
        for key in self.keys:
            ident = key_text(json_cell(key, row.get(key)))
            if ident is not None:
                ex = self.tables[key].get(ident)
                if ex is not None:
                    found.append(ex)
        return found


# ============================================================ the model

class Peer:
    """One tusk version as a PyTorch NeuMF with its encoder. Thread-unsafe (one caller)."""

    SPARE_ROWS = 65536  # rows for keys the table lacks (their initial values), reused

    def __init__(self, version_dir, threads=1):
        import numpy as np
        import tomllib
        import torch

        self.np, self.torch = np, torch
        torch.set_num_threads(threads)
        self.version_dir = os.path.abspath(version_dir)
        self.version = int(os.path.basename(self.version_dir.rstrip("/")))
        with open(os.path.join(version_dir, "model.json")) as f:
            meta = json.load(f)
        cfg = tomllib.loads(meta["config"])
        space = meta["features"]
        fc = space["config"]
        mc = cfg["model"]
        if mc.get("kind") != "neumf":
            raise SystemExit("only NeuMF models (model.kind = %r)" % mc.get("kind"))
        self.sparse = list(fc["sparse"])
        self.dense_stats = space.get("dense", [])
        self.known = set(self.sparse) | set(fc.get("dense", [])) | {fc["label"]}
        if fc.get("weight"):
            self.known.add(fc["weight"])
        self.user = [self.sparse.index(c) for c in mc["user"]]
        self.item = [self.sparse.index(c) for c in mc["item"]]
        self.used = sorted(set(self.user) | set(self.item))
        self.g, self.m = int(mc.get("gmf_dim", 0)), int(mc.get("mlp_dim", 0))
        self.layers = list(mc.get("layers", []))
        self.dim = self.g + self.m
        if meta["emb_dim"] != self.dim:
            raise SystemExit("emb_dim %s != gmf_dim + mlp_dim" % meta["emb_dim"])
        self.init = cfg.get("train", {}).get("init", "uniform")
        self.keyers = [Keyer(c) for c in self.sparse]
        self.dense_width = sum(1 + bool(d["flag"]) for d in self.dense_stats)

        # Embedding rows: one file, or the shards embedding servers wrote.
        names = sorted(n for n in os.listdir(version_dir)
                       if n == "embeddings.safetensors"
                       or re.fullmatch(r"embeddings-\d{5}-of-\d{5}\.safetensors", n))
        if "embeddings.safetensors" in names:
            names = ["embeddings.safetensors"]
        keys, values, seed, scale = [], [], None, None
        for n in names:
            t, md = read_safetensors(os.path.join(version_dir, n))
            keys.append(t["keys"])
            values.append(t["values"].reshape(-1, self.dim))
            seed = int(md.get("seed", 0))
            scale = np.float32(float(md.get("init_scale", 0.05)))
        if not names:
            raise SystemExit("%s holds no embeddings file" % version_dir)
        keys = np.concatenate(keys)
        values = np.concatenate(values)
        self.seed, self.init_scale = seed, scale
        # Row 0: zeros (padding of bags); rows 1..n: the table; then the spare area.
        self.n_table = len(keys)
        table = np.zeros((1 + self.n_table + self.SPARE_ROWS, self.dim), np.float32)
        table[1:1 + self.n_table] = values
        self.table = torch.from_numpy(table)
        self.row_of = {int(k): 1 + r for r, k in enumerate(keys.tolist())}
        self.spare_of = {}
        self.spare_next = 0
        self.cache = [dict() for _ in self.sparse]  # int id -> table row (table keys only)

        # Dense layers, loaded by their tusk (= PyTorch) names.
        nn = torch.nn
        model = nn.Module()
        width = 2 * self.m + self.dense_width
        mlp = []
        tower = 0
        if width > 0:
            for h in self.layers:
                mlp.append(nn.Linear(width, h))
                width = h
            tower = width
        model.mlp = nn.ModuleList(mlp)
        model.predict = nn.Linear(self.g + tower, 1)
        self.tower = width > 0 and (2 * self.m + self.dense_width) > 0
        st, _ = read_safetensors(os.path.join(version_dir, "model.safetensors"))
        model.load_state_dict({k: torch.from_numpy(v) for k, v in st.items()}, strict=True)
        model.eval()
        self.model = model

        self.entities = None
        ents = os.path.join(version_dir, "entities.tfrecord")
        if os.path.exists(ents):
            with open(ents, "rb") as f:
                self.entities = Entities(f.read())

    def stats(self):
        """Rows in the table, and keys answered with their initial row (cached now)."""
        return {"version": self.version, "table_rows": self.n_table,
                "initial_rows_cached": len(self.spare_of), "spare_rows": self.SPARE_ROWS,
                "entity_tables": sorted(self.entities.tables) if self.entities else []}

    # ---------------------------------------------------------------- rows

    def initial_row(self, key):
        """HashedTable::initial_row: the value of a row the table lacks."""
        np = self.np
        s = _mix((self.seed ^ key) & MASK)
        n = self.dim * (2 if self.init == "normal" else 1)
        units = np.empty(n, np.float32)
        for j in range(n):
            s = _mix(s)
            units[j] = np.float32(s >> 40) / np.float32(1 << 24)
        if self.init == "normal":
            u1 = np.float32(1.0) - units[0::2]
            u2 = units[1::2]
            z = np.array([math.sqrt(-2.0 * math.log(float(a))) * math.cos(math.tau * float(b))
                          for a, b in zip(u1, u2)], np.float64)
            return z.astype(np.float32) * self.init_scale
        return (units * np.float32(2.0) - np.float32(1.0)) * self.init_scale

    def row_for_key(self, key):
        r = self.row_of.get(key)
        if r is not None:
            return r
        r = self.spare_of.get(key)
        if r is None:
            if self.spare_next >= self.SPARE_ROWS:
                raise OverflowError
            r = 1 + self.n_table + self.spare_next
            self.spare_next += 1
            self.table[r] = self.torch.from_numpy(self.initial_row(key))
            self.spare_of[key] = r
        return r

    def cell_rows(self, f, cell):
        """Table rows of field f's cell: tusk_data::features::sparse_keys (a cell without
        keys gets the missing key), then each key's row."""
        k = self.keyers[f]
        kind, v = cell if cell is not None else ("ints", ())
        if kind == "bytes":
            out = [self.row_for_key(k.text_key(b)) for b in v]
        elif kind == "text":
            out = [] if is_missing_text(v) else [self.row_for_key(k.text_key(v))]
        elif kind == "ints":
            cache = self.cache[f]
            out = []
            for x in v:
                r = cache.get(x)
                if r is None:
                    key = k.int_key(x)
                    r = self.row_of.get(key)
                    if r is None:
                        r = self.row_for_key(key)
                    elif len(cache) < 1_000_000:
                        cache[x] = r
                out.append(r)
        else:
            raise BadRequest("sparse features must be integer ids or strings, `%s` holds "
                             "floats" % self.sparse[f])
        return out or [self.row_for_key(k.missing_key())]

    def raw_rows(self, f, v):
        """cell_rows of a JSON value, with a fast path for ids and lists of ids that are in
        the table (already cached)."""
        cache = self.cache[f]
        if type(v) is int:
            r = cache.get(v)
            if r is not None:
                return [r]
        elif type(v) is list and v:
            out = [cache.get(x) if type(x) is int else None for x in v]
            if None not in out:
                return out
        return self.cell_rows(f, json_cell(self.sparse[f], v))

    def encode(self, rows):
        """Per sparse field a list of row lists, and the dense values, of request rows
        (each {column: JSON value}, nulls dropped)."""
        fields = [[] for _ in self.sparse]
        dense = []
        known, ents = self.known, self.entities
        for i, row in enumerate(rows):
            for c in row:
                if c not in known:
                    raise BadRequest("instance %d: unknown feature `%s` (the model reads: %s)"
                                     % (i, c, ", ".join(self.sparse + [d["name"] for d in
                                                                     self.dense_stats])))
            found = None
            for f, c in enumerate(self.sparse):
                v = row.get(c)
                if v is None or (type(v) is str and not v.strip(RUST_WS)):
                    # Missing here: the entity tables may have it (Entities::fill).
                    if found is None:
                        found = ents.fill(row) if ents is not None else ()
                    cell = None if v is None else ("text", v)
                    fields[f].append(self.cell_rows(f, cell_of(cell, found, c)))
                else:
                    fields[f].append(self.raw_rows(f, v))
            for d in self.dense_stats:
                c = d["name"]
                cell = json_cell(c, row.get(c))
                if cell is None or (cell[0] == "text" and not cell[1].strip(RUST_WS)):
                    if found is None:
                        found = ents.fill(row) if ents is not None else ()
                    cell = cell_of(cell, found, c)
                x = dense_value(c, cell)
                if x is None:
                    dense.append(0.0)
                    if d["flag"]:
                        dense.append(1.0)
                else:
                    dense.append(float(self.np.float32((x - d["mean"]) / d["std"])))
                    if d["flag"]:
                        dense.append(0.0)
        return fields, dense

    def encode_safe(self, rows):
        try:
            return self.encode(rows)
        except OverflowError:  # the spare area is full: start it over, once
            self.spare_of.clear()
            self.spare_next = 0
            try:
                return self.encode(rows)
            except OverflowError:
                raise BadRequest("more than %d ids the model has never seen in one request"
                                 % self.SPARE_ROWS)

    # ---------------------------------------------------------------- forward

    def probabilities(self, rows):
        torch = self.torch
        n = len(rows)
        if n == 0:
            return []
        fields, dense = self.encode_safe(rows)
        T = self.table
        with torch.inference_mode():
            # Every index of every used field in one tensor: single-key fields as n ids,
            # bags padded to their longest with row 0 (zeros).
            flat, spans, lens = [], {}, []
            for f in self.used:
                bags = fields[f]
                longest = max(map(len, bags))
                start = len(flat)
                if longest == 1:
                    flat += [b[0] for b in bags]
                else:
                    for b in bags:
                        flat += b
                        if len(b) < longest:
                            flat += [0] * (longest - len(b))
                    spans[f + len(self.sparse)] = len(lens)
                    lens += [float(len(b)) for b in bags]
                spans[f] = (start, longest)
            idx = torch.tensor(flat)
            if lens:
                # 1/n in f32 as tusk computes it.
                inv = torch.ones(len(lens), 1) / torch.tensor(lens).view(-1, 1)
            pooled = {}
            for f in self.used:
                start, longest = spans[f]
                if longest == 1:
                    pooled[f] = T[idx[start:start + n]]
                    continue
                rows_ = T[idx[start:start + n * longest]].view(n, longest, -1)
                j0 = spans[f + len(self.sparse)]
                scale = inv[j0:j0 + n]
                # The sum of row * (1/n) in key order; adding the zero rows changes nothing.
                acc = rows_[:, 0] * scale
                for j in range(1, longest):
                    acc = acc + rows_[:, j] * scale
                pooled[f] = acc
            u = pooled[self.user[0]]
            for f in self.user[1:]:
                u = u + pooled[f]
            it = pooled[self.item[0]]
            for f in self.item[1:]:
                it = it + pooled[f]
            g = self.g
            parts = [u[:, :g] * it[:, :g]] if g else []
            if self.tower:
                x = [u[:, g:], it[:, g:]]
                if self.dense_width:
                    x.append(torch.tensor(dense, dtype=torch.float32).view(n, -1))
                h = torch.cat(x, dim=1)
                for lin in self.model.mlp:
                    h = torch.relu(lin(h))
                parts.append(h)
            z = torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]
            logits = self.model.predict(z).view(-1)
            return torch.sigmoid(logits).tolist()

    def answer(self, body):
        """(status, JSON-able answer) for a v1 `:predict` body (bytes)."""
        try:
            req = json.loads(body)
        except ValueError as e:
            return 400, {"error": "malformed JSON: %s" % e}
        try:
            rows, out_key = parse_rows(req)
            return 200, {out_key: self.probabilities(rows)}
        except BadRequest as e:
            return 400, {"error": str(e)}


def parse_rows(req):
    """tusk-serve v1_rows: `instances` (rows), or `inputs` as rows or as columns."""
    if not isinstance(req, dict):
        raise BadRequest("the body must be a JSON object with `instances` or `inputs`")
    inst, inp = req.get("instances"), req.get("inputs")
    if inst is not None and inp is not None:
        raise BadRequest("give `instances` or `inputs`, not both")
    if inst is not None or ("instances" in req and inp is None):
        return row_list(inst, "instances"), "predictions"
    if isinstance(inp, list):
        return row_list(inp, "inputs"), "outputs"
    if isinstance(inp, dict):
        n = None
        for c, v in inp.items():
            if not isinstance(v, list):
                raise BadRequest("inputs.%s: expected a list with one value per row" % c)
            if n is not None and len(v) != n:
                raise BadRequest("inputs.%s has %d values: every column needs one per row"
                                 % (c, len(v)))
            n = len(v)
        rows = [dict() for _ in range(n or 0)]
        for c, v in inp.items():
            for i, x in enumerate(v):
                if x is not None:
                    rows[i][c] = x
        return rows, "outputs"
    raise BadRequest("the body has neither `instances` nor `inputs`")


def cell_of(cell, found, c):
    """Filled::get: the row's own cell wins (blank text does not), else the first entity
    row that has the column; None when missing."""
    if cell is not None and not (cell[0] == "text" and not cell[1].strip(RUST_WS)):
        return cell
    for ex in found:
        if c in ex:
            return ex[c]
    return cell


def row_list(v, what):
    if not isinstance(v, list):
        raise BadRequest("`%s` must be a list of rows" % what)
    rows = []
    for i, r in enumerate(v):
        if not isinstance(r, dict):
            raise BadRequest("%s[%d]: each row must be an object of feature values" % (what, i))
        rows.append({c: x for c, x in r.items() if x is not None} if None in r.values() else r)
    return rows


# ============================================================ Ray Serve

def serve_main(a):
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray
    from ray import serve
    from starlette.responses import Response

    stop = threading.Event()
    for s in (signal.SIGTERM, signal.SIGINT):
        signal.signal(s, lambda *_: stop.set())

    version_dir = os.path.abspath(a.version_dir)
    threads = a.threads
    max_batch, wait_s = a.max_batch, a.batch_wait_ms / 1000.0

    class NeuMFPeer:
        def __init__(self):
            self.peer = Peer(version_dir, threads)
            self.version = str(self.peer.version)

        def _reply(self, status, obj):
            return Response(json.dumps(obj).encode(), status_code=status,
                            media_type="application/json",
                            headers={"x-model-version": self.version})

        async def __call__(self, request):
            path = request.url.path
            if request.method == "GET" and path in ("/v2/health/ready", "/v2/health/live"):
                return Response(b"", status_code=200)
            if request.method == "GET" and path == "/stats":
                return self._reply(200, self.peer.stats())
            if request.method != "POST" or not path.endswith(":predict"):
                return self._reply(404, {"error": "no endpoint %s" % path})
            body = await request.body()
            if max_batch > 0:
                status, obj = await self.batched(body)
            else:
                status, obj = self.peer.answer(body)
            return self._reply(status, obj)

        @serve.batch(max_batch_size=max(1, max_batch), batch_wait_timeout_s=wait_s)
        async def batched(self, bodies):
            # Every request's rows scored in one forward; a bad request answers alone.
            parsed, rows = [], []
            for b in bodies:
                try:
                    r, key = parse_rows(json.loads(b))
                    parsed.append((len(rows), len(r), key))
                    rows += r
                except (ValueError, BadRequest) as e:
                    parsed.append((None, str(e), None))
            try:
                probs = self.peer.probabilities(rows)
            except BadRequest:  # score each alone to answer the bad one with its error
                return [self.peer.answer(b) for b in bodies]
            return [(400, {"error": n}) if start is None else (200, {key: probs[start:start + n]})
                    for start, n, key in parsed]

    tmp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")
    ray.init(num_cpus=a.cpus, include_dashboard=False, _temp_dir=tmp, log_to_driver=False,
             logging_level="WARNING", configure_logging=True)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": a.port},
                    logging_config={"log_level": "WARNING", "enable_access_log": False})
        dep = serve.deployment(
            NeuMFPeer, name="NeuMFPeer", num_replicas=a.replicas,
            max_ongoing_requests=a.max_ongoing,
            ray_actor_options={"num_cpus": a.replica_cpus,
                               "runtime_env": {"env_vars": {
                                   "OMP_NUM_THREADS": str(threads),
                                   "MKL_NUM_THREADS": str(threads)}}})
        serve.run(dep.bind(), name="ml", route_prefix="/")
        import torch
        settings = {"port": a.port, "version": int(os.path.basename(version_dir)),
                    "replicas": a.replicas, "torch_threads": threads,
                    "max_ongoing_requests": a.max_ongoing, "replica_num_cpus": a.replica_cpus,
                    "ray_num_cpus": a.cpus, "serve_batch": max_batch or None,
                    "batch_wait_ms": a.batch_wait_ms if max_batch else None,
                    "ray": ray.__version__, "torch": torch.__version__,
                    "python": sys.version.split()[0], "temp_dir": tmp,
                    "access_log": False, "proxy": "Serve's HTTP proxy (uvicorn) on this node"}
        print("READY " + json.dumps(settings), flush=True)
        while not stop.wait(0.5):
            pass
    finally:
        try:
            serve.shutdown()
        except Exception as e:  # noqa: BLE001 - shutting down regardless
            print("serve.shutdown: %s" % e, file=sys.stderr)
        ray.shutdown()


def score_main(a):
    peer = Peer(a.version_dir, a.threads)
    with open(a.body, "rb") as f:
        status, obj = peer.answer(f.read())
    print(json.dumps(obj))
    sys.exit(0 if status == 200 else 1)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--version-dir", required=True)
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--replicas", type=int, default=1)
    s.add_argument("--threads", type=int, default=1, help="torch.set_num_threads per replica")
    s.add_argument("--max-ongoing", type=int, default=128,
                   help="max_ongoing_requests per replica")
    s.add_argument("--replica-cpus", type=float, default=1.0)
    s.add_argument("--cpus", type=int, default=os.cpu_count() or 2, help="ray.init num_cpus")
    s.add_argument("--max-batch", type=int, default=0,
                   help="@serve.batch max_batch_size in requests (0: no batching)")
    s.add_argument("--batch-wait-ms", type=float, default=1.0)
    c = sub.add_parser("score")
    c.add_argument("--version-dir", required=True)
    c.add_argument("--threads", type=int, default=1)
    c.add_argument("body")
    a = ap.parse_args()
    if a.cmd == "serve":
        serve_main(a)
    else:
        score_main(a)


if __name__ == "__main__":
    main()
