#!/usr/bin/env python3
"""Embedding servers in training: throughput, memory and quality against replicated tables.

    python3 bench/ps_bench.py [--tusk PATH] [--part throughput|staleness|all] [--rows N]
                              [--big-ids N] [--seeds 7,11]

Part `throughput`: NeuMF trained by `tusk launch -n 2` with replicated tables, and by
`tusk launch -n 2 --servers 2` in `sync` and `async` (staleness 4) mode, in one run, on
  (a) the synthetic 1M users x 200k items workload of bench/neumf_bench.py (b): 2M rows,
      Zipf-like users (exponent 0.8) and items (1.0), 20% positives, GMF 32 + MLP 32,
      MLP 64-32-16, batch 256, Adam, 2 epochs;
  (b) a 10M-id table: --big-ids rows, each with a user id of its own (10M distinct ids by
      default), items as in (a); GMF 16 + MLP 16 (so 32 floats per user row plus Adam's two
      moments: a 3.9 GB table), 1 epoch.
Samples/s are the training rows of all workers over the epochs' wall time (tusk's per-epoch
timings, so start-up, feature statistics and the final save are outside); peak RSS is read
per process (VmHWM, polled every 0.2 s from /proc over the launcher's process tree).

Part `staleness`: the MovieLens example (examples/movielens: NeuMF with history, early
stopping on validation HR@10) with 2 workers + 2 servers at staleness 0 (= sync), 1, 4 and
16, per seed: test HR@10 and training samples/s. Needs ../shared/data/movielens-100k.

The machine here has 2 cores: 2 workers and 2 servers share them, so the throughput figures
measure the protocol's cost on one host, not what separate hosts would give.
"""
import argparse
import bisect
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
UDATA = os.path.join(ROOT, "..", "shared", "data", "movielens-100k", "u.data")


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def find_tusk(arg):
    if arg:
        return arg
    target = os.environ.get("CARGO_TARGET_DIR", os.path.expanduser("~/.cache/tusk/target"))
    subprocess.run(["cargo", "build", "--release", "--locked", "-p", "tusk-cli"], cwd=ROOT,
                   check=True, env={**os.environ, "CARGO_TARGET_DIR": target})
    return os.path.join(target, "release", "tusk")


def zipf_sampler(rng, n, exponent):
    """Ids 0..n-1 drawn with popularity rank^-exponent, ranks spread over the ids."""
    cdf, acc = [], 0.0
    for r in range(1, n + 1):
        acc += r ** -exponent
        cdf.append(acc)
    ids = list(range(n))
    rng.shuffle(ids)
    total = cdf[-1]
    return lambda: ids[bisect.bisect_left(cdf, rng.random() * total)]


def write_synthetic(path, rows, users, items, seed, distinct_users=False):
    rng = random.Random(seed)
    item = zipf_sampler(rng, items, 1.0)
    user = None if distinct_users else zipf_sampler(rng, users, 0.8)
    stride = 7_368_787  # coprime with every id count used here: a permutation of the ids
    with open(path, "w") as f:
        f.write("user_id,item_id,label\n")
        buf = []
        for r in range(rows):
            u = (r * stride) % users if distinct_users else user()
            buf.append(f"{u},{item()},{1 if rng.random() < 0.2 else 0}\n")
            if len(buf) == 100_000:
                f.write("".join(buf))
                buf.clear()
        f.write("".join(buf))


def config(path, train, dims, epochs):
    with open(path, "w") as f:
        f.write(f"""# written by bench/ps_bench.py
[data]
train = "{train}"
[features]
sparse = ["user_id", "item_id"]
label = "label"
[model]
kind = "neumf"
user = ["user_id"]
item = ["item_id"]
gmf_dim = {dims}
mlp_dim = {dims}
layers = [64, 32, 16]
[train]
epochs = {epochs}
batch_size = 256
learning_rate = 0.001
optimizer = "adam"
seed = 1
""")


def descendants(pid):
    kids = {}
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            with open(f"/proc/{p}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except OSError:
            continue
        kids.setdefault(ppid, []).append(int(p))
    out, todo = [], [pid]
    while todo:
        q = todo.pop()
        for c in kids.get(q, []):
            out.append(c)
            todo.append(c)
    return out


def role(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
        if b"embedding-server" in argv:
            return "server %s" % argv[argv.index(b"--shard") + 1].decode() \
                if b"--shard" in argv else "server"
        if b"train" in argv:
            with open(f"/proc/{pid}/environ", "rb") as f:
                env = dict(kv.split(b"=", 1) for kv in f.read().split(b"\0") if b"=" in kv)
            return "worker %s" % env.get(b"RANK", b"?").decode()
    except (OSError, ValueError, IndexError):
        pass
    return None


def hwm_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def launch(tusk, n, servers, cfg, model, sets):
    """Runs `tusk launch` to the end; returns (rank 0's --json summary, peak RSS MB by role)."""
    cmd = [tusk, "launch", "-n", str(n)] + (["--servers", str(servers)] if servers else []) + [
        "--", "train", cfg, "--model", model, "--json"]
    for s in sets:
        cmd += ["--set", s]
    env = {k: v for k, v in os.environ.items()
           if k not in ("TUSK_JOB_SECRET", "TUSK_EMBEDDING_SERVERS", "TF_CONFIG")}
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        p = subprocess.Popen(cmd, stdout=out, stderr=err, env=env, start_new_session=True)
        peaks, roles = {}, {}
        done = threading.Event()

        def poll():
            while not done.is_set():
                for q in descendants(p.pid):
                    if q not in roles:
                        roles[q] = role(q)
                    h = hwm_kib(q)
                    if h is not None and roles[q]:
                        peaks[q] = max(peaks.get(q, 0), h)
                time.sleep(0.2)
        t = threading.Thread(target=poll, daemon=True)
        t.start()
        rc = p.wait()
        done.set()
        t.join()
        out.seek(0)
        err.seek(0)
        text, errs = out.read().decode(), err.read().decode()
    if rc != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({rc}):\n{errs[-4000:]}")
    summary = None
    for line in text.splitlines():
        body = line.split("] ", 1)[1] if line.startswith("[") else line
        if body.startswith("{"):
            summary = json.loads(body)
    if summary is None:
        raise SystemExit(f"no --json summary from {' '.join(cmd)}:\n{text[-2000:]}")
    by_role = {}
    for q, kib in peaks.items():
        r = roles[q]
        by_role[r] = max(by_role.get(r, 0), kib / 1024.0)
    lead = None
    for line in errs.splitlines():
        if "pulls ran at most " in line:
            lead = int(line.split("pulls ran at most ")[1].split()[0])
    return summary, by_role, lead


def epoch_rate(summary, rows_per_epoch):
    hist = summary["history"]
    secs = sum(h["seconds"] for h in hist)
    return rows_per_epoch * len(hist) / secs, secs


MODES = [("replicated", 0, ['train.embedding="replicated"']),
         ("sync", 2, ['train.embedding="sync"']),
         ("async, staleness 4", 2, ['train.embedding="async"', "train.staleness=4"])]


def throughput(args, tusk, work):
    cases = [("1M users x 200k items, 2M rows", args.rows, 1_000_000, False, 32, 2),
             (f"{args.big_ids / 1e6:g}M-id table, dim 16+16", args.big_ids, args.big_ids, True, 16, 1)]
    results = []
    for name, rows, users, distinct, dims, epochs in cases:
        d = os.path.join(work, "syn-%d" % rows)
        os.makedirs(d, exist_ok=True)
        csv = os.path.join(d, "train.csv")
        log(f"== {name}: generating {rows:,} rows")
        write_synthetic(csv, rows, users, 200_000, 1, distinct)
        cfg = os.path.join(d, "neumf.toml")
        config(cfg, csv, dims, epochs)
        for mode, servers, sets in MODES:
            log(f"-- {mode}")
            model = os.path.join(d, "model-" + mode.split(",")[0])
            s, rss, _ = launch(tusk, 2, servers, cfg, model, sets)
            rate, secs = epoch_rate(s, rows)
            log(f"   {rate:,.0f} samples/s over {secs:.1f} s; peak RSS {rss}")
            results.append((name, mode, rate, rss))
            shutil.rmtree(model, ignore_errors=True)
        os.remove(csv)
    print("\n## Training with embedding servers: 2 workers, replicated tables vs 2 servers\n")
    print("| workload | tables | samples/s | vs replicated | peak RSS per process (MB) |")
    print("|---|---|---:|---:|---|")
    for name, mode, rate, rss in results:
        base = next(r for n, m, r, _ in results if n == name and m == "replicated")
        per = ", ".join(f"{k} {v:,.0f}" for k, v in sorted(rss.items()))
        print(f"| {name} | {mode} | {rate:,.0f} | {rate / base:.2f}x | {per} |")


def staleness(args, tusk, work):
    if not os.path.exists(UDATA):
        raise SystemExit(f"{UDATA} not found (MovieLens-100K)")
    data = os.path.join(work, "ml")
    subprocess.run([tusk, "preprocess", "movielens", "--input", UDATA, "--output", data,
                    "--negatives", "0", "--validation", "--history", "5"], check=True,
                   capture_output=True)
    cfg = os.path.join(ROOT, "examples", "movielens", "config.toml")
    sets = [f"data.{s}={data}/{s}" for s in ("train", "validation", "test")] + [
        f"data.entities.{k}={data}/entities/{k}" for k in ("user_id", "item_id")]
    with open(os.path.join(data, "train", "_manifest.json")) as f:
        rows = sum(s["records"] for s in json.load(f)["shards"]) * 5  # + 4 negatives each
    rows_table = []
    for seed in args.seeds:
        for st in args.staleness:
            mode = ['train.embedding="sync"'] if st == 0 else [
                'train.embedding="async"', f"train.staleness={st}"]
            model = os.path.join(work, f"ml-model-{seed}-{st}")
            log(f"-- MovieLens, seed {seed}, staleness {st}")
            s, _, lead = launch(tusk, 2, 2, cfg, model, sets + mode + [f"train.seed={seed}"])
            rate, _ = epoch_rate(s, rows)
            o = subprocess.run([tusk, "eval", "--model", model, "--data", f"{data}/test",
                                "--json"], check=True, capture_output=True, text=True)
            hr = json.loads(o.stdout)["hr@10"]
            log(f"   HR@10 {hr:.4f}, {rate:,.0f} samples/s, max lead {lead}, "
                f"{len(s['history'])} epochs")
            rows_table.append((seed, st, hr, rate, lead, len(s["history"])))
            shutil.rmtree(model, ignore_errors=True)
    print("\n## Quality vs staleness: MovieLens-100K, 2 workers + 2 servers\n")
    print("| staleness | seed | test HR@10 | samples/s | epochs run | max lead seen |")
    print("|---:|---:|---:|---:|---:|---:|")
    for seed, st, hr, rate, lead, ep in sorted(rows_table, key=lambda r: (r[1], r[0])):
        print(f"| {st} | {seed} | {hr:.4f} | {rate:,.0f} | {ep} | {lead} |")
    print("\n| staleness | mean HR@10 | mean samples/s |")
    print("|---:|---:|---:|")
    for st in args.staleness:
        rs = [r for r in rows_table if r[1] == st]
        print(f"| {st} | {sum(r[2] for r in rs) / len(rs):.4f} | "
              f"{sum(r[3] for r in rs) / len(rs):,.0f} |")


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tusk")
    ap.add_argument("--part", choices=["throughput", "staleness", "all"], default="all")
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--big-ids", type=int, default=10_000_000)
    ap.add_argument("--seeds", default="7,11")
    ap.add_argument("--staleness", default="0,1,4,16")
    ap.add_argument("--work", help="scratch directory (default: a temporary one)")
    args = ap.parse_args()
    args.seeds = [int(s) for s in args.seeds.split(",")]
    args.staleness = [int(s) for s in args.staleness.split(",")]
    tusk = find_tusk(args.tusk)
    work = args.work or tempfile.mkdtemp(prefix="tusk-ps-bench-")
    os.makedirs(work, exist_ok=True)
    try:
        if args.part in ("throughput", "all"):
            throughput(args, tusk, work)
        if args.part in ("staleness", "all"):
            staleness(args, tusk, work)
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
