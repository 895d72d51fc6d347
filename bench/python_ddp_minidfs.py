#!/usr/bin/env python3
"""A PyTorch DDP job of 2 ranks (torchrun, gloo) training on a tusk dataset read from HDFS
(a real MiniDFS) and, for comparison, from local disk: samples/s of the whole training loop.

    python bench/python_ddp_minidfs.py [--rows N] [--epochs E]

Starts testing/minidfs (Maven) itself and stops it at the end. Each rank reads its share with
``tusk.torch.Dataset`` (rank and world size from torchrun's environment) through
``DataLoader(num_workers=1)``; the model is a small DLRM-like net (an EmbeddingBag over
``history``, embeddings of user and item, an MLP over the 13 dense columns). Every rank checks
after each epoch that the ranks together saw every row exactly once (all-reduce of the sum and
count of the row ids).
"""

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

WORKER = r"""
import os, sys, time, json
import torch, torch.distributed as dist
from torch.utils.data import DataLoader
import tusk.torch as tt

url, epochs, outdir = sys.argv[1], int(sys.argv[2]), sys.argv[3]
dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
torch.set_num_threads(1)
ds = tt.Dataset(url, 1024, seed=0)

class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.user = torch.nn.Embedding(1 << 16, 16)
        self.item = torch.nn.Embedding(1 << 16, 16)
        self.hist = torch.nn.EmbeddingBag(1 << 16, 16, mode="mean")
        self.dense = torch.nn.Linear(13, 16)
        self.top = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 1))
    def forward(self, b):
        h = self.hist(b["history"].values % (1 << 16), b["history"].offsets[:-1])
        d = torch.stack([b[f"d{i}"] for i in range(13)], 1)
        x = torch.cat([self.user(b["user_id"] % (1 << 16)), self.item(b["item_id"] % (1 << 16)), h, self.dense(d)], 1)
        return self.top(x).squeeze(1)

model = torch.nn.parallel.DistributedDataParallel(Net())
opt = torch.optim.Adam(model.parameters(), 1e-3)
out = []
for epoch in range(epochs):
    ds.set_epoch(epoch)
    t = time.perf_counter(); n = 0; idsum = 0; loss_sum = 0.0
    for b in DataLoader(ds, batch_size=None, num_workers=1):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(b), b["label"])
        opt.zero_grad(); loss.backward(); opt.step()
        n += len(b["label"]); idsum += int(b["row"].sum()); loss_sum += loss.item() * len(b["label"])
    dt = time.perf_counter() - t
    tot = torch.tensor([n, idsum], dtype=torch.float64)
    dist.all_reduce(tot)
    out.append({"epoch": epoch, "rank": rank, "rows": n, "seconds": dt, "loss": loss_sum / n,
                "all_rows": int(tot[0]), "id_sum": int(tot[1])})
with open(os.path.join(outdir, f"rank{rank}.json"), "w") as f:
    json.dump(out, f)
dist.destroy_process_group()
"""


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def start_minidfs():
    mvn = shutil.which("mvn")
    if mvn is None:
        sys.exit("mvn not found: MiniDFS needs Java 17 and Maven")
    proc = subprocess.Popen(
        [mvn, "-q", "-B", "-f", os.path.join(ROOT, "testing/minidfs"), "compile", "exec:java", "-Dexec.args=1"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True,
    )
    ready = {}

    def read():
        for line in proc.stdout:
            if line.startswith("Ready! "):
                ready["line"] = line[7:].strip()

    threading.Thread(target=read, daemon=True).start()
    deadline = time.monotonic() + 600
    while "line" not in ready and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    if "line" not in ready:
        os.killpg(proc.pid, signal.SIGKILL)
        sys.exit("MiniDFS did not start")
    kv = dict(p.split("=", 1) for p in ready["line"].split())
    return proc, int(kv["hdfs"])


def stop(proc):
    try:
        proc.stdin.write("\n")
        proc.stdin.flush()
        proc.wait(timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=30)


def table(rows):
    import numpy as np
    import pyarrow as pa

    rng = np.random.default_rng(0)
    lens = rng.integers(0, 21, size=rows)
    offsets = np.concatenate([[0], np.cumsum(lens)]).astype(np.int32)
    cols = {
        "row": pa.array(np.arange(rows, dtype=np.int64)),
        "user_id": pa.array(rng.integers(0, 1_000_000, size=rows)),
        "item_id": pa.array(rng.integers(0, 200_000, size=rows)),
        "label": pa.array((rng.random(rows) < 0.2).astype(np.float32)),
        "history": pa.ListArray.from_arrays(pa.array(offsets), pa.array(rng.integers(0, 200_000, size=int(offsets[-1])))),
    }
    for i in range(13):
        cols[f"d{i}"] = pa.array(rng.random(rows, dtype=np.float32))
    return pa.table(cols)


def run(url, rows, epochs):
    import json

    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(WORKER)
        script = f.name
    env = dict(os.environ, OMP_NUM_THREADS="1")
    outdir = tempfile.mkdtemp(prefix="tusk-ddp-out-")
    r = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29561", script, url, str(epochs), outdir],
        capture_output=True, text=True, timeout=3600, env=env,
    )
    os.unlink(script)
    if r.returncode != 0:
        raise RuntimeError(r.stderr[-4000:])
    recs = []
    for rank in range(2):
        with open(os.path.join(outdir, f"rank{rank}.json")) as f:
            recs += json.load(f)
    shutil.rmtree(outdir, ignore_errors=True)
    for x in recs:
        assert x["all_rows"] == rows and x["id_sum"] == rows * (rows - 1) // 2, x
    return recs


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--epochs", type=int, default=2)
    args = ap.parse_args()
    import tusk

    t = table(args.rows)
    local = tempfile.mkdtemp(prefix="tusk-ddp-")
    proc, port = start_minidfs()
    try:
        hdfs = f"hdfs://127.0.0.1:{port}/bench/ddp"
        log(f"writing {args.rows:,} rows to {hdfs} and {local}")
        tusk.write_dataset(hdfs, t, format="parquet", shards=8)
        tusk.write_dataset(local + "/ddp", t, format="parquet", shards=8)
        results = []
        for name, url in (("MiniDFS (hdfs://)", hdfs), ("local disk", local + "/ddp")):
            log(f"2 ranks from {name}")
            results.append((name, run(url, args.rows, args.epochs)))
    finally:
        stop(proc)
        shutil.rmtree(local, ignore_errors=True)
    print(f"{'data on':<18} {'epoch':>5} {'rank':>4} {'rows':>9} {'seconds':>8} {'samples/s':>10} {'loss':>7}")
    for name, recs in results:
        for x in sorted(recs, key=lambda x: (x["epoch"], x["rank"])):
            print(f"{name:<18} {x['epoch']:>5} {x['rank']:>4} {x['rows']:>9,} {x['seconds']:>8.2f} {x['rows'] / x['seconds']:>10,.0f} {x['loss']:>7.4f}")
    print("every epoch: the two ranks together saw every row exactly once (count and id sum checked)")


if __name__ == "__main__":
    main()
