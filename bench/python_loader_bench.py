#!/usr/bin/env python3
"""tusk's Python data plane vs tf.data, PyTorch DataLoader and Petastorm, in one run.

    python bench/python_loader_bench.py [--rows N] [--dir DIR] [--petastorm-python PY]

Prints a table (system, format, samples/s, ratio to the fastest peer, peak RSS MB) on stdout,
progress on stderr.

The data: a recommendation-style table of N rows (default 5,000,000, about 1 GB as TFRecord):
user_id, item_id (int64), label (float32), 13 dense float32 columns ``d0..d12``, and
``history`` (0-20 int64 item ids, multi-valued). Written once by ``tusk.write_dataset`` as a
TFRecord dataset and as a Parquet dataset (8 shards each), untimed.

What is timed, each in a fresh process, one epoch, batch 1024, every column, into framework
tensors (numpy for tusk and Petastorm; torch tensors for the DataLoader; tf tensors for tf.data):
* tusk TFRecord / Parquet: ``tusk.Dataset(url, 1024, shuffle=False)`` (one Rust reader thread),
  batches as numpy arrays, converted with ``torch.from_numpy`` (no copy).
* tf.data: ``TFRecordDataset(files, num_parallel_reads=AUTOTUNE).batch(1024)
  .map(parse_example, AUTOTUNE).prefetch(AUTOTUNE)``, history as a RaggedTensor.
* PyTorch: ``DataLoader(num_workers=2, batch_size=None)`` over an IterableDataset yielding
  ``pyarrow.parquet`` row-group batches of 1024 as tensors (history as values + offsets).
* Petastorm 0.13.1 ``make_batch_reader(workers_count=2)`` over the Parquet files (needs its own
  venv with pyarrow 12 and numpy < 2: ``--petastorm-python``); skipped with a note otherwise.
  It cannot read the variable-length ``history`` column, so it is compared with tusk reading
  the same 16 columns into numpy (``tusk-numpy``, no framework imported by either).
samples/s counts from after the framework's import (not timed: TensorFlow's takes seconds)
and includes opening the dataset. Peak RSS is the child's maximum resident set size
(ru_maxrss), the interpreter and framework import included (``import torch`` alone is ~530 MB
here, TensorFlow ~560 MB); for the DataLoader the largest worker process is added
(RUSAGE_CHILDREN after they exit; workers share pages with the parent, so this overstates it). "over imports" is the peak minus the RSS right after the imports.
``tfdata-graph`` consumes the batches with ``Dataset.reduce`` in graph mode (they never reach
Python, as inside ``model.fit``): TensorFlow's upper bound, not a training loop.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))

CHILD = r"""
import json, os, resource, sys, time, glob
system, fmt, path = sys.argv[1], sys.argv[2], sys.argv[3]
B = 1024
n = 0
def rss_now():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
# Framework imports are not timed (TensorFlow's takes seconds); their memory is counted apart.
if system == "tusk":
    import torch, tusk
elif system == "tusk-numpy":
    import tusk
elif system.startswith("tfdata"):
    import tensorflow as tf
elif system == "torch":
    import numpy as np, pyarrow.parquet as pq, torch
elif system == "petastorm":
    from petastorm import make_batch_reader
base = rss_now()
t0 = time.perf_counter()
if system == "tusk-numpy":
    ds = tusk.Dataset(path, B, shuffle=False, columns=["user_id", "item_id", "label"] + [f"d{i}" for i in range(13)])
    for b in ds:
        n += len(b["user_id"])
elif system == "tusk":
    ds = tusk.Dataset(path, B, shuffle=False)
    for b in ds:
        t = torch.from_numpy(b["user_id"]); _ = torch.from_numpy(b["history"].values)
        n += len(t)
elif system.startswith("tfdata"):
    files = sorted(glob.glob(os.path.join(path, "*.tfrecord")))
    spec = {"user_id": tf.io.FixedLenFeature([], tf.int64), "item_id": tf.io.FixedLenFeature([], tf.int64),
            "label": tf.io.FixedLenFeature([], tf.float32), "history": tf.io.RaggedFeature(tf.int64)}
    for i in range(13):
        spec[f"d{i}"] = tf.io.FixedLenFeature([], tf.float32)
    # Files read one after another: on 2 cores num_parallel_reads=AUTOTUNE (a parallel
    # interleave of single records) ran at ~60k samples/s, ten times slower.
    ds = (tf.data.TFRecordDataset(files, buffer_size=8 << 20).batch(B)
          .map(lambda x: tf.io.parse_example(x, spec), num_parallel_calls=tf.data.AUTOTUNE)
          .prefetch(tf.data.AUTOTUNE))
    if system == "tfdata":
        for b in ds:
            n += int(b["user_id"].shape[0])
    else:
        # Graph mode: the batches never reach Python (TensorFlow's upper bound, as model.fit).
        n = int(ds.reduce(tf.constant(0, tf.int64), lambda acc, b: acc + tf.shape(b["user_id"], out_type=tf.int64)[0]))
elif system == "torch":
    from torch.utils.data import DataLoader, IterableDataset, get_worker_info
    files = sorted(glob.glob(os.path.join(path, "*.parquet")))
    class PQ(IterableDataset):
        def __iter__(self):
            info = get_worker_info()
            w, k = (info.id, info.num_workers) if info else (0, 1)
            for i, f in enumerate(files):
                if i % k != w:
                    continue
                for rb in pq.ParquetFile(f).iter_batches(batch_size=B):
                    out = {}
                    for name in rb.schema.names:
                        col = rb.column(name)
                        if name == "history":
                            out["history"] = torch.from_numpy(col.values.to_numpy(zero_copy_only=False))
                            out["history_offsets"] = torch.from_numpy(np.asarray(col.offsets))
                        else:
                            out[name] = torch.from_numpy(col.to_numpy(zero_copy_only=False))
                    yield out
    for b in DataLoader(PQ(), batch_size=None, num_workers=2):
        n += len(b["user_id"])
elif system == "petastorm":
    # Petastorm's batch reader cannot read a variable-length list column ("Length of all values
    # in column 'history' are expected to be the same length"): it reads every other column.
    cols = ["user_id", "item_id", "label"] + [f"d{i}" for i in range(13)]
    with make_batch_reader("file://" + path, num_epochs=1, workers_count=2, schema_fields=cols) as r:
        for b in r:
            # Row-group sized batches, sliced into batches of 1024 (views, no copy).
            for i in range(0, len(b.user_id), B):
                n += len(b.user_id[i : i + B])
dt = time.perf_counter() - t0
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
if system == "torch":
    # The DataLoader's worker processes (the largest of them; they share pages with this one).
    rss += resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(json.dumps({"rows": n, "seconds": dt, "rss_mb": rss / 1024, "base_mb": base}))
"""


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def make_data(root, rows):
    import numpy as np
    import pyarrow as pa

    import tusk

    tf_dir, pq_dir = os.path.join(root, "tfrecord"), os.path.join(root, "parquet")
    if os.path.exists(os.path.join(pq_dir, "_manifest.json")):
        return tf_dir, pq_dir
    log(f"writing {rows:,} rows as TFRecord and Parquet datasets under {root}")
    rng = np.random.default_rng(0)
    chunk = 500_000
    batches = []
    for start in range(0, rows, chunk):
        m = min(chunk, rows - start)
        lens = rng.integers(0, 21, size=m)
        offsets = np.concatenate([[0], np.cumsum(lens)]).astype(np.int32)
        cols = {
            "user_id": pa.array(rng.integers(0, 1_000_000, size=m)),
            "item_id": pa.array(rng.integers(0, 200_000, size=m)),
            "label": pa.array((rng.random(m) < 0.2).astype(np.float32)),
            "history": pa.ListArray.from_arrays(pa.array(offsets), pa.array(rng.integers(0, 200_000, size=int(offsets[-1])))),
        }
        for i in range(13):
            cols[f"d{i}"] = pa.array(rng.random(m, dtype=np.float32))
        batches.append(pa.RecordBatch.from_pydict(cols))
    table = pa.Table.from_batches(batches)
    tusk.write_dataset(tf_dir, table, format="tfrecord", shards=8)
    tusk.write_dataset(pq_dir, table, format="parquet", shards=8)
    return tf_dir, pq_dir


def run(python, system, fmt, path):
    r = subprocess.run([python, "-c", CHILD, system, fmt, path], capture_output=True, text=True, timeout=3600)
    if r.returncode != 0:
        raise RuntimeError(f"{system}/{fmt} failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=5_000_000)
    ap.add_argument("--dir", default=os.path.join(tempfile.gettempdir(), "tusk-loader-bench"))
    ap.add_argument("--petastorm-python", default=None)
    args = ap.parse_args()
    root = os.path.join(args.dir, str(args.rows))
    tf_dir, pq_dir = make_data(root, args.rows)
    size = sum(os.path.getsize(os.path.join(tf_dir, f)) for f in os.listdir(tf_dir))
    log(f"TFRecord dataset: {size / 1e9:.2f} GB")
    cases = [
        ("tusk", "tfrecord", tf_dir),
        ("tusk", "parquet", pq_dir),
        ("tfdata", "tfrecord", tf_dir),
        ("tfdata-graph", "tfrecord", tf_dir),
        ("torch", "parquet", pq_dir),
    ]
    if args.petastorm_python:
        # Petastorm cannot read `history`: tusk reads the same 16 columns too, for a like pair.
        cases.append(("tusk-numpy", "parquet-16col", pq_dir))
        cases.append(("petastorm", "parquet-16col", pq_dir))
    res = []
    for system, fmt, path in cases:
        py = args.petastorm_python if system == "petastorm" else sys.executable
        log(f"running {system} / {fmt}")
        r = run(py, system, fmt, path)
        assert r["rows"] == args.rows, r
        log(f"  {args.rows / r['seconds']:,.0f} samples/s, {r['rss_mb']:,.0f} MB")
        res.append((system, fmt, args.rows / r["seconds"], r["rss_mb"], r["rss_mb"] - r["base_mb"]))
    # Ratios within a group of like work: all 17 columns into torch/tf tensors; the 16 columns
    # Petastorm can read, into numpy (neither imports a framework, so RSS compares too).
    print(f"{'system':<13} {'format':<14} {'samples/s':>12} {'x best peer':>12} {'peak RSS MB':>12} {'over imports MB':>16}")
    for group in (lambda fmt: not fmt.endswith("16col"), lambda fmt: fmt.endswith("16col")):
        rows = [x for x in res if group(x[1])]
        peers = [x[2] for x in rows if not x[0].startswith("tusk")]
        if not rows or not peers:
            continue
        best = max(peers)
        for system, fmt, sps, rss, over in rows:
            print(f"{system:<13} {fmt:<14} {sps:>12,.0f} {sps / best:>12.2f} {rss:>12,.0f} {over:>16,.0f}")
    if not args.petastorm_python:
        print("petastorm: not run (give --petastorm-python, a venv with petastorm 0.13.1, pyarrow 12, numpy<2)")


if __name__ == "__main__":
    main()
