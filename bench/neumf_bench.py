#!/usr/bin/env python3
"""tusk vs PyTorch: NeuMF training throughput on the same machine, in one run.

    python3 bench/neumf_bench.py [--tusk PATH] [--skip-synthetic] [--rows N]

Prints a table (case, system, samples/s, ratio tusk/pytorch, peak RSS MB) on stdout,
then per-run details and the asymmetries that remain; progress goes to stderr.

Cases
-----
(a) movielens  NeuMF on MovieLens-100K, leave-one-out: 99,057 training positives (every
               rating except each user's latest; ties: the larger item id), each with 4
               negatives drawn uniformly from items the user has no rating for, fresh every
               epoch, 495,285 rows per epoch, 3 epochs.
               tusk:    `tusk preprocess movielens --negatives 0` (untimed), then
                        `tusk train CONFIG --json` with `train.negatives = 4` and no
                        validation/test data, so no evaluation time is mixed in.
               PyTorch: the same split computed here from u.data with numpy.
(b) synthetic  1,000,000 users x 200,000 items, --rows training rows (default 2,000,000)
               of (user_id, item_id, label), ~20% positives, Zipf-like popularity on both
               sides (ids shuffled so popular ids are spread over the id range), written
               once as CSV for tusk (`train.csv`, header `user_id,item_id,label`) and as
               .npy for PyTorch; no sampled negatives; 3 epochs.

What is timed
-------------
samples/s is training rows (positives + negatives) per second of the training loop, the
median over epochs.  tusk: the `samples_per_sec` of each epoch in `tusk train --json`'s
`history`, which includes its input pipeline (reading records or parsing CSV, sampling
negatives, shuffle buffer, batching).  PyTorch: the loop over pre-built index tensors
(forward, loss, backward, optimizer step); drawing the epoch's negatives and shuffling
happen *before* the timed loop and are not counted.  That asymmetry favours PyTorch.

Fairness
--------
* Same model: one embedding table per side of width gmf_dim + mlp_dim = 64 whose halves
  are the GMF (32) and MLP (32) embeddings (equivalent to four tables, and the layout tusk
  uses); GMF = u_g * i_g; MLP on concat(u_m, i_m): 64->64, ReLU, 64->32, ReLU, 32->16,
  ReLU; prediction Linear(32 + 16 -> 1); binary cross-entropy on the logit.
* Same optimiser settings: Adam, lr 0.001, batch 256.  PyTorch runs two variants, each in
  its own process, and the faster one is reported (labelled):
    dense   nn.Embedding (dense gradients) + torch.optim.Adam on everything, as the NCF
            reference implementations do;
    sparse  nn.Embedding(sparse=True) + torch.optim.SparseAdam for the tables, Adam for
            the dense layers.
  On the synthetic case dense Adam touches all 76.8M embedding parameters every step, so
  it runs 10 untimed warm-up steps and then --dense-steps timed steps (default 200), and
  its samples/s is extrapolated from those.
* Same threads: torch.set_num_threads(--threads) (default 2, also OMP/MKL_NUM_THREADS);
  tusk runs as is on the same machine (the details table shows each run's CPU time, so
  the cores actually used are visible).
* Same data: the same split, the same number of negatives per positive, the same rows for
  the synthetic case.

Shared machines: with 2 threads on 2 cores, PyTorch's OpenMP workers slow down many times
over when another process takes a core, far more than tusk does.  So before each timed
run the script waits (up to --idle-wait s) for the CPUs to go idle, and the details table
shows, per run, how many cores other processes used meanwhile (from /proc/stat minus the
child's own CPU time); runs above 0.2 cores are flagged.

Peak RSS is each child process's own ru_maxrss from os.wait4 (this parent process only
uses the standard library and stays small, so its pre-exec high-water mark does not
leak into the children's figures).  For PyTorch it includes `import torch`, the input
arrays and the whole embedding tables, preallocated for every id (1.2M rows on (b), plus
Adam/SparseAdam state of the same size); tusk's hashed tables grow with the ids seen.

PyTorch comes from a virtual environment (--python, default
/root/.cache/tusk/torch-venv/bin/python); without it the script prints how to set it up.
The tusk binary: --tusk PATH, else target/release/tusk in this repository, else
$CARGO_TARGET_DIR/release/tusk.
"""

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_DATA = os.path.join(os.path.dirname(REPO), "shared", "data", "movielens-100k", "u.data")
DEFAULT_VENV = "/root/.cache/tusk/torch-venv"

# The model and optimiser, shared by both systems.
GMF_DIM = 32
MLP_DIM = 32
LAYERS = [64, 32, 16]
BATCH = 256
LR = 0.001
NEGATIVES = 4
INIT_SCALE = 0.05  # tusk's default train.init_scale: embeddings uniform in +-0.05
SEED = 1

ML_EPOCHS = 3
SYN_USERS = 1_000_000
SYN_ITEMS = 200_000
SYN_EPOCHS = 3
SYN_POSITIVE_RATE = 0.2
SYN_USER_EXPONENT = 0.8  # popularity of rank r is proportional to r^-exponent
SYN_ITEM_EXPONENT = 1.0

GOALS = {"movielens": 1.5, "synthetic": 2.0}

SETUP = """\
PyTorch was not found ({python}: {error}).
Set up the venv once (CPU torch from PyPI; the download is large):

    python3.11 -m venv {venv}
    {venv}/bin/pip install torch numpy

then rerun, or point --python at an interpreter that has torch and numpy."""


def log(*a):
    print(*a, file=sys.stderr, flush=True)


# =========================================================================== parent side

def find_tusk(arg):
    candidates = [arg] if arg else [os.path.join(REPO, "target", "release", "tusk")]
    if not arg and os.environ.get("CARGO_TARGET_DIR"):
        candidates.append(os.path.join(os.environ["CARGO_TARGET_DIR"], "release", "tusk"))
    if not arg:
        # where scripts/test and scripts/quickstart keep their builds
        cache = os.environ.get("TUSK_CACHE", os.path.expanduser("~/.cache/tusk"))
        candidates.append(os.path.join(cache, "target", "release", "tusk"))
    for c in candidates:
        if os.path.isfile(c) and os.access(c, os.X_OK):
            return os.path.abspath(c)
    sys.exit("tusk binary not found (tried %s); pass --tusk PATH" % ", ".join(candidates))


def busy_cpu_seconds():
    """CPU seconds spent non-idle by the whole machine since boot (/proc/stat)."""
    with open("/proc/stat") as fh:
        f = [int(x) for x in fh.readline().split()[1:]]
    idle = f[3] + f[4]  # idle + iowait
    return (sum(f[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def wait_for_idle(max_wait):
    """Wait (at most max_wait s) until other processes use under a quarter of a core, so a
    shared machine's background jobs disturb the timings less."""
    t_end = time.time() + max_wait
    while True:
        b0, t0 = busy_cpu_seconds(), time.perf_counter()
        time.sleep(1.0)
        load = (busy_cpu_seconds() - b0) / (time.perf_counter() - t0)
        if load < 0.25:
            return
        if time.time() >= t_end:
            log("   (machine still busy: %.1f cores in use by others; going on)" % load)
            return
        log("   waiting for the machine to go idle (%.1f cores in use by others)" % load)


def run_child(cmd, env=None, idle_wait=0):
    """Run cmd to completion and return a dict: wall (s), cpu (user+sys s), peak RSS (MB),
    others (cores used by other processes meanwhile), stdout text.  The child's stderr
    passes through to ours (progress).  Resource usage is that child's alone: os.wait4 on
    its pid."""
    if idle_wait:
        wait_for_idle(idle_wait)
    with tempfile.TemporaryFile() as out:
        b0, t0 = busy_cpu_seconds(), time.perf_counter()
        p = subprocess.Popen(cmd, stdout=out, env=env)
        _, status, ru = os.wait4(p.pid, 0)
        wall = time.perf_counter() - t0
        busy = busy_cpu_seconds() - b0
        p.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        text = out.read().decode()
    if p.returncode != 0:
        raise RuntimeError("%s exited with %d" % (" ".join(cmd), p.returncode))
    cpu = ru.ru_utime + ru.ru_stime
    return {
        "wall": wall,
        "cpu": cpu,
        "others": max(0.0, busy - cpu) / wall,
        "rss_mb": ru.ru_maxrss / 1024.0,  # Linux: KiB
        "stdout": text,
    }


def torch_env(threads):
    env = dict(os.environ)
    for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[k] = str(threads)
    return env


def check_torch(python):
    try:
        r = subprocess.run([python, "-c", "import numpy, torch; print(torch.__version__)"],
                           capture_output=True, text=True, timeout=300)
    except OSError as e:
        return None, str(e)
    if r.returncode != 0:
        lines = r.stderr.strip().splitlines()
        return None, lines[-1] if lines else "exit %d" % r.returncode
    return r.stdout.strip(), None


def tusk_config(path, train_url, epochs, negatives):
    with open(path, "w") as fh:
        fh.write(f"""\
# written by bench/neumf_bench.py
[data]
train = "{train_url}"

[features]
sparse = ["user_id", "item_id"]
label = "label"

[model]
kind = "neumf"
user = ["user_id"]
item = ["item_id"]
gmf_dim = {GMF_DIM}
mlp_dim = {MLP_DIM}
layers = {json.dumps(LAYERS)}

[train]
epochs = {epochs}
batch_size = {BATCH}
learning_rate = {LR}
optimizer = "adam"
negatives = {negatives}
seed = {SEED}
""")


def run_tusk_train(tusk, config, model_dir, idle_wait):
    r = run_child([tusk, "train", config, "--model", model_dir, "--json"], idle_wait=idle_wait)
    summary = json.loads(r["stdout"].strip().splitlines()[-1])
    hist = summary["history"]
    return {
        "system": "tusk",
        "variant": "",
        "samples_per_sec": statistics.median(h["samples_per_sec"] for h in hist),
        "epochs": [round(h["samples_per_sec"]) for h in hist],
        "epoch_seconds": [round(h["seconds"], 2) for h in hist],
        "loss": hist[-1]["train_loss"],
        "wall": r["wall"],
        "cpu": r["cpu"],
        "rss_mb": r["rss_mb"],
        "others": r["others"],
        "note": "whole process %.1f s (feature statistics, sampler build, checkpoints included)" % r["wall"],
    }


def run_torch(args, worker_args):
    cmd = [args.python, os.path.abspath(__file__), "--worker", "--threads", str(args.threads)]
    r = run_child(cmd + worker_args, env=torch_env(args.threads), idle_wait=args.idle_wait)
    res = json.loads(r["stdout"].strip().splitlines()[-1])
    res.update(system="pytorch", wall=r["wall"], cpu=r["cpu"], rss_mb=r["rss_mb"],
               others=r["others"])
    return res


def best_torch(results):
    return max(results, key=lambda r: r["samples_per_sec"])


def bench_movielens(args, tusk, work):
    log("== (a) NeuMF on MovieLens-100K")
    data = os.path.join(work, "ml", "data")
    run_child([tusk, "preprocess", "movielens", "--input", args.data, "--output", data,
               "--negatives", "0"])
    config = os.path.join(work, "ml", "neumf.toml")
    tusk_config(config, os.path.join(data, "train"), ML_EPOCHS, NEGATIVES)
    log("-- tusk train")
    t = run_tusk_train(tusk, config, os.path.join(work, "ml", "model"), args.idle_wait)
    torch_runs = []
    for variant in ("dense", "sparse"):
        log("-- pytorch, %s embeddings" % variant)
        torch_runs.append(run_torch(args, [
            "--case", "movielens", "--variant", variant, "--data", args.data,
            "--epochs", str(ML_EPOCHS)]))
    return t, torch_runs


def bench_synthetic(args, tusk, work):
    log("== (b) synthetic: %d users x %d items, %d rows" % (SYN_USERS, SYN_ITEMS, args.rows))
    d = os.path.join(work, "syn")
    os.makedirs(d, exist_ok=True)
    log("-- generating rows (numpy, untimed)")
    gen = run_child([args.python, os.path.abspath(__file__), "--worker", "--case", "generate",
                     "--rows", str(args.rows), "--out", d], env=torch_env(args.threads))
    info = json.loads(gen["stdout"].strip().splitlines()[-1])
    config = os.path.join(d, "neumf.toml")
    tusk_config(config, os.path.join(d, "train.csv"), SYN_EPOCHS, 0)
    log("-- tusk train")
    t = run_tusk_train(tusk, config, os.path.join(d, "model"), args.idle_wait)
    torch_runs = []
    for variant in ("sparse", "dense"):
        log("-- pytorch, %s embeddings" % variant)
        extra = ["--max-steps", str(args.dense_steps)] if variant == "dense" else []
        torch_runs.append(run_torch(args, [
            "--case", "synthetic", "--variant", variant, "--out", d,
            "--epochs", str(SYN_EPOCHS)] + extra))
    return t, torch_runs, info


def fmt_int(x):
    return "{:,}".format(int(round(x)))


def print_report(cases, torch_version, tusk, args, syn_info):
    rows = []
    for case, t, torch_runs in cases:
        best = best_torch(torch_runs)
        ratio = t["samples_per_sec"] / best["samples_per_sec"]
        goal = GOALS[case]
        verdict = "met" if ratio >= goal else "NOT met"
        rows.append([case, "tusk", fmt_int(t["samples_per_sec"]),
                     "%.2fx (goal >= %.1fx: %s)" % (ratio, goal, verdict), "%.0f" % t["rss_mb"]])
        rows.append([case, "pytorch (%s)" % best["variant"], fmt_int(best["samples_per_sec"]),
                     "", "%.0f" % best["rss_mb"]])
    print_table(["case", "system", "samples/s", "ratio tusk/pytorch", "peak RSS MB"], rows)

    print()
    print("Details (samples/s per epoch; wall, cpu = user+sys seconds of the whole process;")
    print("others' cores = CPU used by other processes on the machine during the run):")
    rows = []
    for case, t, torch_runs in cases:
        for r in [t] + torch_runs:
            name = r["system"] + (" " + r["variant"] if r["variant"] else "")
            rows.append([case, name, fmt_int(r["samples_per_sec"]),
                         " / ".join(fmt_int(x) for x in r["epochs"]),
                         "%.4f" % r["loss"], "%.1f" % r["wall"], "%.1f" % r["cpu"],
                         "%.0f" % r["rss_mb"], "%.2f" % r["others"], r.get("note", "")])
    print_table(["case", "run", "median samples/s", "per epoch", "last loss", "wall s", "cpu s",
                 "peak RSS MB", "others' cores", "note"], rows)
    busy = [r for _, t, runs in cases for r in [t] + runs if r["others"] > 0.2]
    if busy:
        print("WARNING: other processes used over 0.2 cores during %d run(s) (\"others' cores\");"
              % len(busy))
        print("         those timings are disturbed; rerun on an idle machine.")

    print()
    print("Machine: %s, %d CPUs, Python %s, PyTorch %s (torch.set_num_threads(%d)), tusk %s"
          % (platform.platform(), os.cpu_count(), platform.python_version(), torch_version,
             args.threads, tusk))
    if syn_info:
        print("Synthetic rows: %s rows, %s distinct users, %s distinct items, %.1f%% positives "
              "(user popularity ~ rank^-%.1f, item ~ rank^-%.1f)"
              % (fmt_int(syn_info["rows"]), fmt_int(syn_info["distinct_users"]),
                 fmt_int(syn_info["distinct_items"]), 100 * syn_info["positive_rate"],
                 SYN_USER_EXPONENT, SYN_ITEM_EXPONENT))
    print("Notes:")
    print(" - tusk samples/s include its input pipeline (record/CSV reading, negative sampling,")
    print("   shuffle buffer of 100,000 rows, batching); PyTorch's exclude sampling and shuffling")
    print("   (a full permutation), which are done before each timed epoch.")
    print(" - PyTorch reports the faster of dense Adam and SparseAdam, each its own process;")
    print("   on the synthetic case dense Adam is timed on %d steps after 10 warm-up steps and"
          % args.dense_steps)
    print("   extrapolated.")


def print_table(header, rows):
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    line = lambda cells: "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"
    print(line(header))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        print(line(r))


def parent(args):
    tusk = find_tusk(args.tusk)
    if not os.path.isfile(args.data):
        sys.exit("MovieLens ratings not found at %s (pass --data)" % args.data)
    torch_version, err = check_torch(args.python)
    if torch_version is None:
        print(SETUP.format(python=args.python, error=err, venv=DEFAULT_VENV), file=sys.stderr)
        sys.exit(2)
    log("tusk: %s\nPyTorch %s via %s" % (tusk, torch_version, args.python))
    work = tempfile.mkdtemp(prefix="neumf-bench-", dir=args.workdir)
    t0 = time.perf_counter()
    try:
        cases = []
        t, runs = bench_movielens(args, tusk, work)
        cases.append(("movielens", t, runs))
        syn_info = None
        if not args.skip_synthetic:
            t, runs, syn_info = bench_synthetic(args, tusk, work)
            cases.append(("synthetic", t, runs))
    finally:
        if args.keep:
            log("kept %s" % work)
        else:
            shutil.rmtree(work, ignore_errors=True)
    log("total %.0f s" % (time.perf_counter() - t0))
    print_report(cases, torch_version, tusk, args, syn_info)


# =========================================================================== worker side
# Runs in the PyTorch venv's interpreter, one process per (case, variant), and prints one
# JSON object as its last stdout line.

def load_movielens(path):
    """Leave-one-out split of u.data: (train users, train items, rated codes, n_users, n_items).
    Held out per user: the latest rating, ties broken by the larger item id."""
    import numpy as np

    r = np.loadtxt(path, dtype=np.int64)
    user, item, ts = r[:, 0], r[:, 1], r[:, 3]
    order = np.lexsort((item, ts, user))  # by user, then time, then item
    user, item = user[order], item[order]
    last = np.r_[user[1:] != user[:-1], True]  # the last row of each user's run
    n_users, n_items = int(user.max()) + 1, int(item.max()) + 1
    rated = np.unique(user * n_items + item)  # every rating, held-out ones included
    return user[~last], item[~last], rated, n_users, n_items


def movielens_epochs(path, epochs, rng):
    """Yield (users, items, labels) for each epoch: positives plus NEGATIVES fresh uniform
    negatives each from items 1..max the user never rated, shuffled."""
    import numpy as np

    pu, pi, rated, n_users, n_items = load_movielens(path)
    yield n_users, n_items, len(pu)
    for _ in range(epochs):
        nu = np.repeat(pu, NEGATIVES)
        ni = rng.integers(1, n_items, size=len(nu))
        bad = np.isin(nu * n_items + ni, rated)
        while bad.any():  # redraw the ones the user has rated
            ni[bad] = rng.integers(1, n_items, size=int(bad.sum()))
            bad = np.isin(nu * n_items + ni, rated)
        users = np.concatenate([pu, nu])
        items = np.concatenate([pi, ni])
        labels = np.concatenate([np.ones(len(pu), np.float32), np.zeros(len(nu), np.float32)])
        perm = rng.permutation(len(users))
        yield users[perm], items[perm], labels[perm]


def synthetic_epochs(out, epochs, rng):
    import numpy as np

    users = np.load(os.path.join(out, "users.npy"))
    items = np.load(os.path.join(out, "items.npy"))
    labels = np.load(os.path.join(out, "labels.npy"))
    yield SYN_USERS, SYN_ITEMS, len(users)
    for _ in range(epochs):
        perm = rng.permutation(len(users))
        yield users[perm], items[perm], labels[perm]


def generate(args):
    """The synthetic rows: train.csv for tusk, users/items/labels.npy for PyTorch."""
    import numpy as np

    rng = np.random.default_rng(SEED)

    def popular_ids(n, exponent, size):
        cdf = np.cumsum(np.arange(1, n + 1, dtype=np.float64) ** -exponent)
        ranks = np.searchsorted(cdf, rng.random(size) * cdf[-1])
        return rng.permutation(n)[ranks]  # rank -> id, so popular ids are spread out

    users = popular_ids(SYN_USERS, SYN_USER_EXPONENT, args.rows)
    items = popular_ids(SYN_ITEMS, SYN_ITEM_EXPONENT, args.rows)
    labels = (rng.random(args.rows) < SYN_POSITIVE_RATE).astype(np.float32)
    np.save(os.path.join(args.out, "users.npy"), users)
    np.save(os.path.join(args.out, "items.npy"), items)
    np.save(os.path.join(args.out, "labels.npy"), labels)
    table = np.stack([users, items, labels.astype(np.int64)], axis=1)
    np.savetxt(os.path.join(args.out, "train.csv"), table, fmt="%d", delimiter=",",
               header="user_id,item_id,label", comments="")
    print(json.dumps({"rows": args.rows, "distinct_users": int(len(np.unique(users))),
                      "distinct_items": int(len(np.unique(items))),
                      "positive_rate": float(labels.mean())}))


def build_model(torch, n_users, n_items, sparse):
    nn = torch.nn

    class NeuMF(nn.Module):
        def __init__(self):
            super().__init__()
            width = GMF_DIM + MLP_DIM  # [GMF half | MLP half]
            self.user = nn.Embedding(n_users, width, sparse=sparse)
            self.item = nn.Embedding(n_items, width, sparse=sparse)
            for t in (self.user, self.item):
                nn.init.uniform_(t.weight, -INIT_SCALE, INIT_SCALE)
            mlp, width = [], 2 * MLP_DIM
            for h in LAYERS:
                mlp += [nn.Linear(width, h), nn.ReLU()]
                width = h
            self.mlp = nn.Sequential(*mlp)
            self.predict = nn.Linear(GMF_DIM + LAYERS[-1], 1)

        def forward(self, u, i):
            eu, ei = self.user(u), self.item(i)
            gmf = eu[:, :GMF_DIM] * ei[:, :GMF_DIM]
            mlp = self.mlp(torch.cat([eu[:, GMF_DIM:], ei[:, GMF_DIM:]], dim=1))
            return self.predict(torch.cat([gmf, mlp], dim=1)).squeeze(1)

    return NeuMF()


def torch_worker(args):
    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(SEED)
    import_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    rng = np.random.default_rng(SEED)
    epochs = (movielens_epochs(args.data, args.epochs, rng) if args.case == "movielens"
              else synthetic_epochs(args.out, args.epochs, rng))
    n_users, n_items, _ = next(epochs)

    sparse = args.variant == "sparse"
    model = build_model(torch, n_users, n_items, sparse)
    tables = [model.user.weight, model.item.weight]
    dense_params = [p for n, p in model.named_parameters() if not n.startswith(("user.", "item."))]
    if sparse:
        optimizers = [torch.optim.SparseAdam(tables, lr=LR), torch.optim.Adam(dense_params, lr=LR)]
    else:
        optimizers = [torch.optim.Adam(model.parameters(), lr=LR)]
    loss_fn = torch.nn.BCEWithLogitsLoss()

    def step(u, i, y):
        for o in optimizers:
            o.zero_grad(set_to_none=True)
        loss = loss_fn(model(u, i), y)
        loss.backward()
        for o in optimizers:
            o.step()
        return loss

    rates, losses = [], []
    for epoch, (users, items, labels) in enumerate(epochs, 1):
        # Untimed: the epoch's tensors, already sampled and shuffled.
        u_all = torch.from_numpy(np.ascontiguousarray(users))
        i_all = torch.from_numpy(np.ascontiguousarray(items))
        y_all = torch.from_numpy(np.ascontiguousarray(labels))
        n = len(u_all)
        starts = range(0, n, BATCH)
        if args.max_steps:  # step-limited: warm up untimed, then time max_steps steps
            warm = 10
            for s in starts[:warm]:
                step(u_all[s:s + BATCH], i_all[s:s + BATCH], y_all[s:s + BATCH])
            starts = starts[warm:warm + args.max_steps]
        loss_sum, rows = 0.0, 0
        t0 = time.perf_counter()
        for s in starts:
            y = y_all[s:s + BATCH]
            loss = step(u_all[s:s + BATCH], i_all[s:s + BATCH], y)
            loss_sum += loss.item() * len(y)
            rows += len(y)
        secs = time.perf_counter() - t0
        rates.append(rows / secs)
        losses.append(loss_sum / rows)
        log("   pytorch %s epoch %d: %d rows in %.2f s, %.0f samples/s, loss %.4f"
            % (args.variant, epoch, rows, secs, rows / secs, loss_sum / rows))
        if args.max_steps:
            break  # one measurement is enough for the extrapolated variant

    note = "training loop only (negatives + shuffle before it)"
    if args.max_steps:
        note = "extrapolated from %d steps after 10 warm-up steps" % args.max_steps
    note += "; %.0f MB RSS right after import torch" % import_rss_mb
    print(json.dumps({"variant": args.variant, "samples_per_sec": statistics.median(rates),
                      "epochs": [round(r) for r in rates], "loss": losses[-1], "note": note,
                      "torch_version": torch.__version__}))


# =========================================================================== main

def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tusk", help="tusk binary (default: target/release/tusk, then "
                   "$CARGO_TARGET_DIR/release/tusk)")
    p.add_argument("--python", default=os.path.join(DEFAULT_VENV, "bin", "python"),
                   help="interpreter with torch and numpy (default: %(default)s)")
    p.add_argument("--data", default=DEFAULT_DATA, help="MovieLens-100K u.data (default: %(default)s)")
    p.add_argument("--skip-synthetic", action="store_true", help="only case (a)")
    p.add_argument("--rows", type=int, default=2_000_000, help="synthetic training rows (default: %(default)s)")
    p.add_argument("--threads", type=int, default=2, help="PyTorch threads (default: %(default)s)")
    p.add_argument("--dense-steps", type=int, default=200,
                   help="timed steps of dense Adam on the synthetic case (default: %(default)s)")
    p.add_argument("--idle-wait", type=float, default=30,
                   help="before each timed run, wait up to this many seconds for other processes "
                   "to leave the CPUs idle; 0: don't (default: %(default)s)")
    p.add_argument("--workdir", help="where the temporary directory goes (default: $TMPDIR)")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory")
    # Internal: the child processes.
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--case", choices=["movielens", "synthetic", "generate"], help=argparse.SUPPRESS)
    p.add_argument("--variant", choices=["dense", "sparse"], help=argparse.SUPPRESS)
    p.add_argument("--epochs", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--max-steps", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args()
    if not args.worker:
        parent(args)
    elif args.case == "generate":
        generate(args)
    else:
        torch_worker(args)


if __name__ == "__main__":
    main()
