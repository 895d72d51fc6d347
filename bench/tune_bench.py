#!/usr/bin/env python3
"""`tusk tune` on MovieLens: wall time to a target validation HR@10 with ASHA against without
it, on the same budget of trials.

    python3 bench/tune_bench.py [--tusk PATH] [--trials 12] [--epochs 6] [--parallel 1]
        [--target HR]

Data: `tusk preprocess movielens` of ../shared/data/movielens-100k/u.data (history 5,
validation split). Trials: `train examples/movielens/config.toml` with `train.epochs` =
--epochs, over the space below (learning rate, GMF size, MLP widths, negatives), TPE with
seed 1, --parallel trials at once. Two studies, identical but for `--pruner asha` vs `none`.
The target (default: the best validation HR@10 the example's own config reaches in --epochs
epochs, measured first) is reached when some trial reports an epoch at or above it; the time
is read from the report files' modification times in the study journal (relative to the
study's start). Also printed: each study's wall time, best HR@10, trials pruned and the epochs
trained in total.
"""
import argparse
import glob
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPACE = """
"train.learning_rate" = { loguniform = [1e-3, 1e-2] }
"model.gmf_dim" = { choice = [16, 32] }
"model.layers" = { choice = [[32, 16, 8], [64, 32, 16]] }
"train.negatives" = { int = [2, 6] }
"""


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def run(cmd):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(map(str, cmd))} failed:\n{r.stderr}")
    return r


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tusk", default=os.path.expanduser("~/.cache/tusk/target/release/tusk"))
    ap.add_argument("--trials", type=int, default=12)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--parallel", type=int, default=1)
    ap.add_argument("--target", type=float)
    a = ap.parse_args()
    udata = os.path.join(ROOT, "..", "shared", "data", "movielens-100k", "u.data")
    work = tempfile.mkdtemp(prefix="tusk-tune-bench-")
    data = os.path.join(work, "data")
    run([a.tusk, "preprocess", "movielens", "--input", udata, "--output", data,
         "--negatives", "0", "--validation", "--history", "5"])
    config = os.path.join(ROOT, "examples", "movielens", "config.toml")
    sets = [f"data.{s}={data}/{s}" for s in ("train", "validation", "test")]
    sets += [f"data.entities.{k}={data}/entities/{k}" for k in ("user_id", "item_id")]
    sets.append(f"train.epochs={a.epochs}")
    set_args = [w for s in sets for w in ("--set", s)]
    target = a.target
    if target is None:
        t0 = time.time()
        r = run([a.tusk, "train", config, "--model", os.path.join(work, "default"), "--json"]
                + set_args)
        hist = json.loads(r.stdout)["history"]
        target = max(e["metrics"]["validation"]["hr@10"] for e in hist)
        log(f"the example's config, {a.epochs} epochs: validation HR@10 {target:.4f} "
            f"in {time.time() - t0:.1f} s")
    with open(os.path.join(work, "space.toml"), "w") as f:
        f.write(SPACE)
    rows = []
    for pruner in ("none", "asha"):
        study = os.path.join(work, f"study-{pruner}")
        t0 = time.time()
        run([a.tusk, "tune", os.path.join(work, "space.toml"), "--study", study,
             "--trials", str(a.trials), "--parallel", str(a.parallel), "--seed", "1",
             "--pruner", pruner, "--", "train", config] + set_args)
        wall = time.time() - t0
        reached = None
        epochs = 0
        best = 0.0
        for rep in glob.glob(os.path.join(study, "journal", "*", "report-*.json")):
            v = json.load(open(rep))["value"]
            epochs += 1
            best = max(best, v)
            if v >= target:
                at = os.path.getmtime(rep) - t0
                reached = at if reached is None else min(reached, at)
        pruned = sum(json.load(open(r))["state"] == "pruned"
                     for r in glob.glob(os.path.join(study, "journal", "*", "result.json")))
        rows.append((pruner, wall, reached, best, pruned, epochs))
        log(f"pruner {pruner}: {wall:.1f} s, target reached at "
            f"{'never' if reached is None else f'{reached:.1f} s'}, best {best:.4f}, "
            f"{pruned} pruned, {epochs} epochs")
    print(f"\nMovieLens, {a.trials} trials of up to {a.epochs} epochs, {a.parallel} at once, "
          f"TPE seed 1; target validation HR@10 {target:.4f}")
    print("| pruner | wall time (s) | time to target (s) | best HR@10 | pruned | epochs trained |")
    print("|---|---:|---:|---:|---:|---:|")
    for pruner, wall, reached, best, pruned, epochs in rows:
        reach = "never" if reached is None else f"{reached:.1f}"
        print(f"| {pruner} | {wall:.1f} | {reach} | {best:.4f} | {pruned} | {epochs} |")


if __name__ == "__main__":
    main()
