#!/usr/bin/env python3
"""The model store on HDFS vs local: `tusk demo` on a real HDFS (MiniDFSCluster) against the same
demo on a local directory, in one run, and what TensorBoard event writing costs over a long run.

    python3 bench/model_store_bench.py [--tusk PATH] [--reps 2] [--steps 100000] [--every 1000]

Prints three tables:
1. `tusk demo` (300k events → SQL features → 3 epochs of a DLRM-style model → evaluation →
   scoring), storage local vs `hdfs://`: the demo's own "train DLRM" seconds and the whole run.
2. `tusk train` of the demo's model from the same local features, with the model URL local vs
   on HDFS: what the model store (versions, events) adds, separate from reading the data.
3. Event writing on HDFS: STEPS steps of three scalars, a flush every EVERY steps (the example
   `crates/tusk-board/examples/event_flush_cost.rs`): the first and last flushes' cost, with
   today's file per flush and with the whole-file rewrite tusk did before.

Needs Java 17 + Maven (the MiniDFS of testing/minidfs, as the tests use) and a release build:
`cargo build --release -p tusk-cli` (the tusk binary: --tusk PATH, else target/release/tusk in
this repository, else $CARGO_TARGET_DIR or ~/.cache/tusk/target). The MiniDFS runs on this
machine, so its NameNode and DataNode take CPU from the 2 cores that tusk also uses. About 3
minutes.
"""

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from storage_bench import MiniDfs  # testing/minidfs, started as tusk-testkit does

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def target_dirs():
    dirs = [os.path.join(REPO, "target")]
    if os.environ.get("CARGO_TARGET_DIR"):
        dirs.append(os.environ["CARGO_TARGET_DIR"])
    cache = os.environ.get("TUSK_CACHE", os.path.expanduser("~/.cache/tusk"))
    dirs.append(os.path.join(cache, "target"))
    return dirs


def find_tusk(arg):
    candidates = [arg] if arg else [os.path.join(d, "release", "tusk") for d in target_dirs()]
    for c in candidates:
        if os.path.isfile(c) and os.access(c, os.X_OK):
            return os.path.abspath(c)
    sys.exit("tusk binary not found (tried %s); pass --tusk PATH" % ", ".join(candidates))


def run(cmd, timeout=900):
    t = time.time()
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        sys.exit("failed: %s\n%s" % (" ".join(cmd), out.stderr[-3000:]))
    return time.time() - t, out.stdout + out.stderr


def demo(tusk, storage):
    wall, out = run([tusk, "demo", "--storage", storage])
    m = re.search(r"^train DLRM\s+([\d.]+)", out, re.M)
    if not m:
        sys.exit("no 'train DLRM' line in the demo's output:\n" + out[-2000:])
    return float(m.group(1)), wall


def build_example():
    log("building the event_flush_cost example (release)")
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "tusk-board", "--example",
                    "event_flush_cost"], cwd=REPO, check=True)
    for d in target_dirs():
        p = os.path.join(d, "release", "examples", "event_flush_cost")
        if os.path.isfile(p):
            return p
    sys.exit("event_flush_cost was built but not found")


def table(header, rows):
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    line = lambda r: "| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths)) + " |"
    print(line(header))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        print(line(r))
    print()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tusk")
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--steps", type=int, default=100_000)
    ap.add_argument("--every", type=int, default=1_000)
    args = ap.parse_args()
    tusk = find_tusk(args.tusk)
    example = build_example()
    work = tempfile.mkdtemp(prefix="tusk-store-bench-")
    log("starting MiniDFS")
    # HDFS's default 128 MB blocks (the tests use 1 MB to exercise multi-block files).
    dfs = MiniDfs(1, 134217728)
    try:
        # 1. The demo, alternating local and HDFS.
        rows = {"local": [], "hdfs": []}
        for rep in range(args.reps):
            for kind in ("local", "hdfs"):
                where = (os.path.join(work, "demo-%d" % rep) if kind == "local"
                         else "%s/bench/demo-%d" % (dfs.url, rep))
                log("demo rep %d on %s" % (rep + 1, kind))
                rows[kind].append(demo(tusk, where))
        best = {k: min(v) for k, v in rows.items()}
        print("## tusk demo, local directory vs HDFS (MiniDFS), best of %d each\n" % args.reps)
        table(["storage", "train DLRM (s)", "whole demo (s)", "train / local"],
              [[k, "%.1f" % best[k][0], "%.1f" % best[k][1],
                "%.2f×" % (best[k][0] / best["local"][0])] for k in ("local", "hdfs")])

        # 2. Training only: same local features, model URL local vs HDFS.
        features = os.path.join(work, "demo-0", "features")
        config = os.path.join(work, "demo-0", "config.toml")
        times = {"local": [], "hdfs": []}
        for rep in range(args.reps):
            for kind in ("local", "hdfs"):
                model = (os.path.join(work, "model-%d" % rep) if kind == "local"
                         else "%s/bench/model-%d" % (dfs.url, rep))
                log("train rep %d, model on %s" % (rep + 1, kind))
                t, _ = run([tusk, "train", config, "--model", model,
                            "--set", "data.train=%s/train" % features,
                            "--set", "data.test=%s/test" % features])
                times[kind].append(t)
        print("## tusk train (demo model, local features), model URL local vs HDFS, best of %d\n"
              % args.reps)
        table(["model URL", "wall (s)", "/ local"],
              [[k, "%.2f" % min(times[k]), "%.2f×" % (min(times[k]) / min(times["local"]))]
               for k in ("local", "hdfs")])

        # 3. Event writing over a long run on HDFS: per flush, now and as before.
        runs = {}
        for mode in ("file per flush (now)", "rewrite whole file (before)"):
            log("event writing, %s: %d steps, a flush every %d" % (mode, args.steps, args.every))
            cmd = [example, "%s/bench/events-%d" % (dfs.url, len(runs)), str(args.steps),
                   str(args.every)] + (["rewrite"] if "rewrite" in mode else [])
            out = subprocess.run(cmd, capture_output=True, text=True, check=True)
            runs[mode] = json.loads(out.stdout.strip().splitlines()[-1])
        first = next(iter(runs.values()))
        n = len(first["flush_ms"])
        k = max(1, n // 10)
        print("## TensorBoard events on HDFS: %d steps × 3 scalars, a flush every %d steps "
              "(%d flushes, %.1f MB in all)\n" % (first["steps"], first["every"], n,
                                                first["bytes"] / 1e6))
        rows = []
        for mode, r in runs.items():
            ms = r["flush_ms"]
            rows.append([mode, "%.0f" % statistics.median(ms[:k]),
                         "%.0f" % statistics.median(ms[-k:]), "%.1f" % (sum(ms) / 1e3),
                         "%.1f" % (r["written"] / 1e6)])
        table(["scheme", "median ms, first %d flushes" % k, "median ms, last %d" % k,
               "all flushes (s)", "MB written"], rows)
    finally:
        dfs.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
