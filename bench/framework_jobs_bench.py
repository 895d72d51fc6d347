"""Framework jobs: `tusk launch` against `torchrun`, and the image CNN's input path.

1. The same DDP script (the digits CNN, gloo, 2 workers) under `tusk launch -n 2` and under
   `torchrun --nproc-per-node 2`, alternating, R rounds: the wall time from starting the launcher
   to the first finished training step, and the steady samples/s of epochs after the first.
2. The CNN's samples/s reading through `tusk.torch` (TFRecord from `tusk images normalize`)
   against a torchvision-style map Dataset of the same PNG files, decoded with PIL per sample
   under DistributedSampler and a DataLoader (0 and 2 loader workers), same model, same launch.

    python bench/framework_jobs_bench.py [--rounds 3] [--tusk PATH]

Prints tables of medians with the ratios tusk / peer.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EX = ROOT / "examples" / "images"

FIRST_STEP = '''
import os, sys, time, runpy
import torch.optim
_orig = torch.optim.SGD.step
def _step(self, *a, **k):
    r = _orig(self, *a, **k)
    if not getattr(torch.optim.SGD, "_seen", False):
        torch.optim.SGD._seen = True
        if os.environ.get("RANK") == "0":
            print(f"FIRST_STEP {time.time():.6f}", flush=True)
    return r
torch.optim.SGD.step = _step
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
'''


def run(cmd, env=None):
    t0 = time.time()
    r = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=1200)
    if r.returncode != 0:
        raise SystemExit(f"{cmd} failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    out = r.stdout + r.stderr
    m = re.search(r"FIRST_STEP ([0-9.]+)", out)
    first = float(m.group(1)) - t0 if m else float("nan")
    rates = [float(x) for x in re.findall(r"epoch [0-9]+: .* ([0-9.]+) samples/s", out)]
    return first, statistics.median(rates[1:]) if len(rates) > 1 else float("nan")


def free_port():
    """A port nobody listens on now (torchrun's `--master-port 0` hangs its workers)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--tusk", default=shutil.which("tusk") or os.path.expanduser("~/.cache/tusk/target/release/tusk"))
    a = p.parse_args()
    d = Path(tempfile.mkdtemp(prefix="tusk-bench-"))
    try:
        subprocess.run([sys.executable, str(EX / "prepare_digits.py"), str(d / "png")], check=True, capture_output=True)
        for split in ("train", "test"):
            subprocess.run([a.tusk, "images", "normalize", "--input", str(d / "png" / split), "--output", str(d / split)], check=True, capture_output=True)
        shim = d / "first_step.py"
        shim.write_text(FIRST_STEP)
        data = ["--train", str(d / "train"), "--test", str(d / "test"), "--epochs", str(a.epochs)]
        script = [str(shim), str(EX / "train_cnn.py")]
        env = {"OMP_NUM_THREADS": "1"}
        res = {"tusk launch": [], "torchrun": []}
        for _ in range(a.rounds):
            res["tusk launch"].append(run([a.tusk, "launch", "-n", "2", "--", sys.executable, *script, *data], env))
            res["torchrun"].append(run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(free_port()), *script, *data], env))
        print(f"\n1. DDP CNN, 2 workers (gloo), {a.rounds} rounds, medians")
        print(f"{'launcher':<14}{'start → first step (s)':>24}{'steady samples/s':>20}")
        med = {k: (statistics.median(x[0] for x in v), statistics.median(x[1] for x in v)) for k, v in res.items()}
        for k, (f, r) in med.items():
            print(f"{k:<14}{f:>24.2f}{r:>20.0f}")
        t, o = med["tusk launch"], med["torchrun"]
        print(f"{'tusk/torchrun':<14}{t[0] / o[0]:>23.2f}×{t[1] / o[1]:>19.2f}×")

        inputs = {
            "tusk.torch (TFRecord)": ["--input", "tusk", "--train", str(d / "train"), "--test", str(d / "test")],
            "PNG + PIL, 0 loader workers": ["--input", "png", "--train", str(d / "png" / "train"), "--test", str(d / "png" / "test")],
            "PNG + PIL, 2 loader workers": ["--input", "png", "--loader-workers", "2", "--train", str(d / "png" / "train"), "--test", str(d / "png" / "test")],
        }
        rates = {k: [] for k in inputs}
        for _ in range(a.rounds):
            for k, args in inputs.items():
                rates[k].append(run([a.tusk, "launch", "-n", "2", "--", sys.executable, str(EX / "train_cnn.py"), *args, "--epochs", str(a.epochs)], env)[1])
        print(f"\n2. The CNN's input path, 2 workers, steady samples/s (medians of {a.rounds})")
        base = statistics.median(rates["tusk.torch (TFRecord)"])
        for k, v in rates.items():
            m = statistics.median(v)
            print(f"{k:<30}{m:>10.0f}   tusk / this: {base / m:.2f}×")
    finally:
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
