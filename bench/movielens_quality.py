#!/usr/bin/env python3
"""Quality parity on MovieLens-100K: tusk's NeuMF example vs the same model in PyTorch.

    python3 bench/movielens_quality.py [--tusk PATH] [--seeds 7,11,13] [--torch-seeds 0,1,2]
        [--variant 'NAME=--set train.x=y --set ...' ...] [--no-torch] [--no-baseline]

Protocol (the NCF paper's leave-one-out, with a validation split): per user the latest rating
(ties: the larger item id) is the test positive, the second-latest the validation positive,
each ranked against 100 items the user never rated; every other rating is a training
positive. Each row carries `history`, the user's 5 ratings before it (oldest first; only the
past). The splits, candidates and histories are made once by `tusk preprocess movielens
--negatives 0 --validation --history 5` and both systems read exactly those rows.

Model (both): NeuMF, one 64-wide table per sparse field (user_id, item_id, history), whose
first 32 values are the GMF embedding and last 32 the MLP embedding; the user vector is the
user's row plus the mean of its history rows (an empty history has a row of its own); GMF =
u_g * i_g; MLP on concat(u_m, i_m): 64 -> 64 -> 32 -> 16, ReLU after each; a linear layer on
concat(GMF, MLP) -> logit; binary cross-entropy. Adam lr 1e-3, batch 256, 4 negatives per
positive drawn fresh every epoch, uniformly from the items of the training data the user has
no training positive with. At most 25 epochs; after each, HR@10 on validation; training
stops after 4 epochs without a better value and the best epoch's test metrics are reported.
HR@10 / NDCG@10: the positive's rank is the number of its 100 candidates scoring at least as
high (ties count against the positive).

tusk: `examples/movielens/config.toml` (its seed replaced), plus each variant's `--set`s.
PyTorch (~/.cache/tusk/torch-venv, see bench/neumf_bench.py): dense nn.Embedding tables
initialised N(0, 0.01), torch.optim.Adam over everything, 2 threads.

Prints a table per run and one of mean / min..max per system and variant on stdout.
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
DATA = os.path.join(ROOT, "..", "shared", "data", "movielens-100k", "u.data")
TORCH_PY = os.path.expanduser("~/.cache/tusk/torch-venv/bin/python")
CONFIG = os.path.join(ROOT, "examples", "movielens", "config.toml")

EPOCHS, PATIENCE, K, NEG, BATCH, LR, DIM, HIST = 25, 4, 10, 4, 256, 1e-3, 64, 5


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def tusk_binary(path):
    if path:
        return path
    target = os.environ.get("CARGO_TARGET_DIR", os.path.expanduser("~/.cache/tusk/target"))
    log("building tusk (release)…")
    subprocess.run(["cargo", "build", "--release", "--locked", "-p", "tusk-cli"], cwd=ROOT,
                   check=True, env={**os.environ, "CARGO_TARGET_DIR": target})
    return os.path.join(target, "release", "tusk")


def prepare(tusk, udata, work, history):
    data = os.path.join(work, "data")
    subprocess.run([tusk, "preprocess", "movielens", "--input", udata, "--output", data,
                    "--negatives", "0", "--validation", "--history", str(history)],
                   check=True, capture_output=True)
    for split in ("train", "validation", "test"):
        with open(os.path.join(work, f"{split}.jsonl"), "w") as f:
            subprocess.run([tusk, "records", "cat", os.path.join(data, split)], check=True,
                           stdout=f)
    return data


def run_tusk(tusk, data, work, seed, sets):
    model = os.path.join(work, f"model-{seed}-{time.time_ns()}")
    cmd = [tusk, "train", CONFIG, "--model", model, "--json",
           "--set", f"data.train={data}/train", "--set", f"data.validation={data}/validation",
           "--set", f"data.test={data}/test", "--set", f"train.seed={seed}",
           "--set", f"data.entities.user_id={data}/entities/user_id",
           "--set", f"data.entities.item_id={data}/entities/item_id"]
    for s in sets:
        cmd += ["--set", s]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"tusk train failed:\n{p.stderr[-3000:]}")
    r = json.loads(p.stdout.strip().splitlines()[-1])
    shutil.rmtree(model, ignore_errors=True)
    best = r["history"][r["chosen_epoch"] - 1]
    return {
        "epoch": r["chosen_epoch"],
        "epochs_run": len(r["history"]),
        "val_hr": best["metrics"]["validation"][f"hr@{K}"],
        "hr": best["metrics"]["test"][f"hr@{K}"],
        "ndcg": best["metrics"]["test"][f"ndcg@{K}"],
        "sps": statistics.median(h["samples_per_sec"] for h in r["history"]),
    }


def run_torch(work, seed, history):
    p = subprocess.run([TORCH_PY, os.path.abspath(__file__), "--worker", work, "--seed",
                        str(seed), "--history", str(history)], capture_output=True, text=True,
                       env={**os.environ, "OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"})
    if p.returncode != 0:
        raise SystemExit(f"PyTorch run failed:\n{p.stderr[-3000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------- PyTorch worker


def load_rows(path):
    users, items, labels, hists = [], [], [], []
    with open(path) as f:
        for line in f:
            r = json.loads(line)
            users.append(r["user_id"]["int64"][0])
            items.append(r["item_id"]["int64"][0])
            labels.append(r["label"]["float"][0])
            hists.append(r.get("history", {}).get("int64", []))
    return users, items, labels, hists


def worker(work, seed, hist_len):
    import numpy as np
    import torch
    import torch.nn as nn

    torch.set_num_threads(2)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    tu, ti, tl, th = load_rows(os.path.join(work, "train.jsonl"))
    splits = {s: load_rows(os.path.join(work, f"{s}.jsonl")) for s in ("validation", "test")}
    all_users = sorted(set(tu) | {u for s in splits.values() for u in s[0]})
    all_items = sorted(set(ti) | {i for s in splits.values() for i in s[1]}
                       | {h for s in list(splits.values()) + [(tu, ti, tl, th)]
                          for hs in s[3] for h in hs})
    uix = {u: k for k, u in enumerate(all_users)}
    iix = {i: k for k, i in enumerate(all_items)}
    n_items = len(all_items)
    missing = n_items          # the history row of an empty history
    pad = n_items + 1          # padding, never read into the mean

    def encode(users, items, hists):
        u = torch.tensor([uix[x] for x in users])
        i = torch.tensor([iix[x] for x in items])
        h = torch.full((len(users), max(hist_len, 1)), pad, dtype=torch.long)
        for r, hs in enumerate(hists):
            if hs:
                h[r, :len(hs)] = torch.tensor([iix[x] for x in hs])
            else:
                h[r, 0] = missing
        return u, i, h

    pos = [r for r in range(len(tu)) if tl[r] == 1.0]
    pu, pi, ph = encode([tu[r] for r in pos], [ti[r] for r in pos], [th[r] for r in pos])
    catalogue = np.array(sorted({iix[ti[r]] for r in range(len(ti))}))
    positives = set(zip(pu.tolist(), pi.tolist()))
    evals = {s: encode(v[0], v[1], v[3]) for s, v in splits.items()}

    class NeuMF(nn.Module):
        def __init__(self):
            super().__init__()
            self.user = nn.Embedding(len(all_users), DIM)
            self.item = nn.Embedding(n_items, DIM)
            self.hist = nn.Embedding(n_items + 2, DIM)
            for e in (self.user, self.item, self.hist):
                nn.init.normal_(e.weight, std=0.01)
            self.mlp = nn.Sequential(nn.Linear(DIM, 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU(),
                                     nn.Linear(32, 16), nn.ReLU())
            self.out = nn.Linear(DIM // 2 + 16, 1)

        def forward(self, u, i, h):
            mask = (h != pad).unsqueeze(-1).float()
            hv = (self.hist(h) * mask).sum(1) / mask.sum(1)
            uv = self.user(u) + hv
            iv = self.item(i)
            g = DIM // 2
            gmf = uv[:, :g] * iv[:, :g]
            mlp = self.mlp(torch.cat([uv[:, g:], iv[:, g:]], 1))
            return self.out(torch.cat([gmf, mlp], 1)).squeeze(1)

    model = NeuMF()
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    loss_fn = nn.BCEWithLogitsLoss()

    def evaluate(split):
        u, i, h = evals[split]
        model.eval()
        with torch.no_grad():
            z = model(u, i, h).view(-1, 101)
        model.train()
        rank = (z[:, 1:] >= z[:, :1]).sum(1)
        hit = (rank < K).float()
        ndcg = hit / torch.log2(rank.float() + 2)
        return hit.mean().item(), ndcg.mean().item()

    best, best_epoch, since, hist = None, 0, 0, []
    train_secs, rows = 0.0, 0
    for epoch in range(1, EPOCHS + 1):
        # Fresh negatives: uniform over the catalogue, not a training positive of the user.
        nu = pu.repeat_interleave(NEG)
        nh = ph.repeat_interleave(NEG, 0)
        ni = catalogue[rng.integers(0, len(catalogue), len(nu))]
        for _ in range(32):
            bad = np.fromiter(((a, b) in positives for a, b in zip(nu.tolist(), ni.tolist())),
                              bool, len(nu))
            if not bad.any():
                break
            ni[bad] = catalogue[rng.integers(0, len(catalogue), int(bad.sum()))]
        u = torch.cat([pu, nu])
        i = torch.cat([pi, torch.from_numpy(ni)])
        h = torch.cat([ph, nh])
        y = torch.cat([torch.ones(len(pu)), torch.zeros(len(nu))])
        perm = torch.from_numpy(rng.permutation(len(y)))
        t = time.time()
        for s in range(0, len(y), BATCH):
            b = perm[s:s + BATCH]
            opt.zero_grad()
            loss = loss_fn(model(u[b], i[b], h[b]), y[b])
            loss.backward()
            opt.step()
        train_secs += time.time() - t
        rows += len(y)
        vhr, _ = evaluate("validation")
        thr, tndcg = evaluate("test")
        hist.append((vhr, thr, tndcg))
        print(f"seed {seed} epoch {epoch}: validation hr {vhr:.4f} test hr {thr:.4f}",
              file=sys.stderr, flush=True)
        if best is None or vhr > best:
            best, best_epoch, since = vhr, epoch, 0
        else:
            since += 1
            if since >= PATIENCE:
                break
    vhr, thr, tndcg = hist[best_epoch - 1]
    print(json.dumps({"epoch": best_epoch, "epochs_run": len(hist), "val_hr": vhr, "hr": thr,
                      "ndcg": tndcg, "sps": rows / train_secs}))


# ---------------------------------------------------------------- driver


def summarize(name, runs):
    def stat(key, fmt):
        v = [r[key] for r in runs]
        return f"{fmt.format(statistics.mean(v))} ({fmt.format(min(v))}–{fmt.format(max(v))})"
    return (f"| {name} | {len(runs)} | {stat('hr', '{:.4f}')} | {stat('ndcg', '{:.4f}')} | "
            f"{stat('val_hr', '{:.4f}')} | {statistics.mean(r['epoch'] for r in runs):.1f} | "
            f"{statistics.mean(r['sps'] for r in runs):,.0f} |")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--worker")
    ap.add_argument("--seed", type=int)
    ap.add_argument("--tusk")
    ap.add_argument("--data", default=DATA)
    ap.add_argument("--seeds", default="7,11,13")
    ap.add_argument("--torch-seeds", default="0,1,2")
    ap.add_argument("--variant", action="append", default=[],
                    help="NAME=--set k=v --set k2=v2 (tusk runs with these overrides)")
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--history", type=int, default=HIST,
                    help="previous ratings per row (both systems; the example uses 5)")
    ap.add_argument("--no-baseline", action="store_true", help="skip the example as committed")
    args = ap.parse_args()
    if args.worker:
        worker(args.worker, args.seed, args.history)
        return
    if not os.path.exists(args.data):
        raise SystemExit(f"{args.data} not found (MovieLens-100K)")
    tusk = tusk_binary(args.tusk)
    work = tempfile.mkdtemp(prefix="tusk-ml-quality-")
    try:
        data = prepare(tusk, args.data, work, args.history)
        variants = [] if args.no_baseline else [("tusk, example as committed", [])]
        for v in args.variant:
            name, _, rest = v.partition("=")
            sets = [s for s in rest.split("--set") if s.strip()]
            variants.append((f"tusk, {name}", [s.strip() for s in sets]))
        results = {}
        for name, sets in variants:
            for seed in [int(s) for s in args.seeds.split(",")]:
                log(f"{name}: seed {seed}")
                r = run_tusk(tusk, data, work, seed, sets)
                log(f"  {r}")
                results.setdefault(name, []).append({**r, "seed": seed})
        if not args.no_torch:
            if not os.path.exists(TORCH_PY):
                raise SystemExit(f"{TORCH_PY} missing: see bench/neumf_bench.py for the venv")
            for seed in [int(s) for s in args.torch_seeds.split(",")]:
                log(f"PyTorch: seed {seed}")
                r = run_torch(work, seed, args.history)
                log(f"  {r}")
                results.setdefault("PyTorch (dense Adam, N(0, 0.01) init)", []).append(
                    {**r, "seed": seed})
        print(f"\n## MovieLens-100K leave-one-out (history {args.history}): test metrics at the "
              "validation-chosen epoch\n")
        print("| system | seed | epoch (of run) | validation HR@10 | test HR@10 | test NDCG@10 | "
              "samples/s |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for name, runs in results.items():
            for r in runs:
                print(f"| {name} | {r['seed']} | {r['epoch']} ({r['epochs_run']}) | "
                      f"{r['val_hr']:.4f} | {r['hr']:.4f} | {r['ndcg']:.4f} | {r['sps']:,.0f} |")
        print("\n| system | runs | test HR@10 mean (min–max) | test NDCG@10 mean (min–max) | "
              "validation HR@10 | chosen epoch | samples/s |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for name, runs in results.items():
            print(summarize(name, runs))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
