#!/usr/bin/env python3
"""Data-parallel benchmarks, peers in the same run, ratios first.

    python3 bench/distributed_bench.py [--tusk PATH] [--part allreduce,netns,overlap,train]

allreduce  2 ranks on this machine, 4 MiB and 64 MiB f32 sum in place: tusk's TCP ring
           (`tusk launch -n 2 -- allreduce-perf`) vs OpenMPI through mpi4py (PyPI) on
           Debian's OpenMPI, over shared memory (`--mca btl self,vader`) and over TCP
           (`--mca btl self,tcp`). Median of 20 timed iterations after 2 untimed, a barrier
           before each. Goal: tusk <= OpenMPI shared memory.
netns      an emulated cluster: 8 ranks in 8 network namespaces on a bridge, every link
           shaped to 1 Gbit/s by `tc` (token bucket, both directions); tusk's ring
           all-reduce at 64 MiB; bus bandwidth (nccl-tests: size * 2(N-1)/N / time) against
           the link rate. Goal >= 90%. Needs root.
overlap    dense all-reduce hidden behind the backward pass: a DLRM with a 3M-weight dense
           part, 2 ranks in 2 namespaces over 1 Gbit/s links, the gradient reduced after the
           backward pass (TUSK_BUCKET_BYTES=0) vs in 4 MiB / 1 MiB / 256 KiB buckets while it
           runs; all-reduce time per step, the part the step waited for (exposed) and the
           hidden share, as `tusk train --json` reports them. Needs root.
train      training throughput, NeuMF, global batch 256: 1 worker vs 2 workers
           (`tusk launch -n 2`) on MovieLens-100K (needs ../shared/data) and on the
           synthetic 1M users x 200k items set of bench/neumf_bench.py; with PyTorch
           DistributedDataParallel (2 processes, gloo, sparse embedding gradients +
           SparseAdam, the same global batch) when a torch venv exists
           (see bench/neumf_bench.py). Peak RSS per rank.

Prints a table per part on stdout; progress on stderr.
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
VENV_PY = os.path.expanduser("~/.cache/tusk/venv/bin/python")


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def tusk_binary(args):
    if args.tusk:
        return args.tusk
    target = os.environ.get("CARGO_TARGET_DIR", os.path.expanduser("~/.cache/tusk/target"))
    log("building tusk (release)…")
    subprocess.run(["cargo", "build", "--release", "--locked", "-p", "tusk-cli"], cwd=ROOT,
                   check=True, env={**os.environ, "CARGO_TARGET_DIR": target})
    return os.path.join(target, "release", "tusk")


def json_lines(text):
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("[rank 0] "):
            line = line[len("[rank 0] "):]
        if line.startswith("{"):
            out.append(json.loads(line))
    return out


def part_allreduce(tusk):
    sizes = [4 << 20, 64 << 20]
    rows = {}
    for name, shm in [("tusk, shared memory", "1"), ("tusk, TCP (TUSK_SHM=0)", "0")]:
        log(f"allreduce: {name}, 2 ranks")
        o = subprocess.run([tusk, "launch", "-n", "2", "--", "allreduce-perf", "--json", "--sizes",
                            ",".join(str(s) for s in sizes)], capture_output=True, text=True,
                           check=True, env={**os.environ, "TUSK_SHM": shm})
        for r in json_lines(o.stdout):
            rows[(name, r["bytes"])] = r["median_s"]
    env = {**os.environ, "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}
    for name, btl in [("OpenMPI shared memory", "self,vader"), ("OpenMPI TCP", "self,tcp")]:
        log(f"allreduce: {name}")
        o = subprocess.run(["mpirun", "--oversubscribe", "-np", "2", "--mca", "btl", btl, VENV_PY,
                            os.path.join(HERE, "allreduce_mpi4py.py")] + [str(s) for s in sizes],
                           capture_output=True, text=True, env=env, check=True)
        for r in json_lines(o.stdout):
            rows[(name, r["bytes"])] = r["median_s"]
    print("\n## All-reduce, 2 ranks, this machine (median ms; ratio = OpenMPI shm time / system time)\n")
    print("| size | system | ms | vs OpenMPI shm |")
    print("|---|---|---:|---:|")
    for size in sizes:
        shm = rows.get(("OpenMPI shared memory", size))
        for name in ["tusk, shared memory", "tusk, TCP (TUSK_SHM=0)", "OpenMPI shared memory",
                     "OpenMPI TCP"]:
            t = rows.get((name, size))
            if t is None:
                continue
            print(f"| {size >> 20} MiB | {name} | {t * 1e3:.2f} | {shm / t:.2f}× |")


def sh(*args, check=True):
    return subprocess.run(list(args), capture_output=True, text=True, check=check)


class Hosts:
    """n network namespaces 10.88.0.1.. on a bridge, every link shaped to `rate` by tc."""

    def __init__(self, n, rate):
        tag = f"tb{os.getpid() % 100000}"
        self.names = [f"{tag}-h{i}" for i in range(n)]
        self.br = f"{tag}-br"
        try:
            sh("ip", "netns", "add", self.br)
            sh("ip", "-n", self.br, "link", "add", "br0", "type", "bridge")
            sh("ip", "-n", self.br, "link", "set", "br0", "up")
            for i, ns in enumerate(self.names):
                a, b = f"{tag}a{i}", f"{tag}b{i}"
                sh("ip", "netns", "add", ns)
                sh("ip", "link", "add", a, "type", "veth", "peer", "name", b)
                sh("ip", "link", "set", a, "netns", ns)
                sh("ip", "link", "set", b, "netns", self.br)
                sh("ip", "-n", ns, "link", "set", a, "name", "eth0")
                sh("ip", "-n", ns, "addr", "add", f"10.88.0.{i + 1}/24", "dev", "eth0")
                sh("ip", "-n", ns, "link", "set", "eth0", "up")
                sh("ip", "-n", ns, "link", "set", "lo", "up")
                sh("ip", "-n", self.br, "link", "set", b, "master", "br0")
                sh("ip", "-n", self.br, "link", "set", b, "up")
                for space, dev in [(ns, "eth0"), (self.br, b)]:
                    sh("ip", "netns", "exec", space, "tc", "qdisc", "add", "dev", dev, "root",
                       "tbf", "rate", rate, "burst", "256kb", "latency", "50ms")
        except BaseException:
            self.close()
            raise
        log(f"netns: {n} hosts, links shaped to {rate}")

    def run_all(self, argv, env, port):
        """Run `argv` as rank i in namespace i (master 10.88.0.1); every rank's stdout."""
        env = {**os.environ, **env, "TUSK_JOB_SECRET": "bench",
               "WORLD_SIZE": str(len(self.names)), "MASTER_ADDR": "10.88.0.1",
               "MASTER_PORT": str(port)}
        procs = [subprocess.Popen(["ip", "netns", "exec", ns] + argv,
                                  env={**env, "RANK": str(i)}, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
                 for i, ns in enumerate(self.names)]
        try:
            outs = [p.communicate(timeout=900) for p in procs]
        finally:
            for p in procs:
                p.kill()
        for i, (p, (_, err)) in enumerate(zip(procs, outs)):
            if p.returncode != 0:
                raise SystemExit(f"rank {i} of {' '.join(argv)} failed:\n{err[-2000:]}")
        return [o for o, _ in outs]

    def close(self):
        for ns in self.names + [self.br]:
            sh("ip", "netns", "del", ns, check=False)


def part_netns(tusk, n=8, rate="1gbit"):
    hosts = Hosts(n, rate)
    try:
        outs = hosts.run_all([tusk, "allreduce-perf", "--json", "--iters", "5", "--sizes",
                              str(64 << 20)], {}, 29555)
        r = json_lines(outs[0])[0]
        link = 1e9 / 8 / 1e9  # GB/s
        print(f"\n## Emulated cluster: {n} ranks in {n} network namespaces, links {rate} (tc tbf)\n")
        print("| size | median s | algbw GB/s | busbw GB/s | busbw / link rate |")
        print("|---|---:|---:|---:|---:|")
        print(f"| 64 MiB | {r['median_s']:.3f} | {r['algbw_gbps']:.4f} | {r['busbw_gbps']:.4f} | "
              f"{r['busbw_gbps'] / link * 100:.1f}% |")
    finally:
        hosts.close()


OVERLAP_ROWS = 24_576
OVERLAP_BATCHES = [512, 2048]
OVERLAP_TOP = [1024, 1024, 512, 256]
OVERLAP_BOTTOM = [512, 256]


def overlap_data(work, batch):
    """A Criteo-like CSV (13 dense, 4 sparse columns) and a DLRM config whose dense part
    (about 2M weights, 8 MB of gradient per step) makes the all-reduce worth hiding."""
    import random
    rnd = random.Random(7)
    path = os.path.join(work, "ctr.csv")
    with open(path, "w") as f:
        f.write(",".join([f"d{i}" for i in range(13)] + [f"s{i}" for i in range(4)] + ["y"]) + "\n")
        for _ in range(OVERLAP_ROWS):
            dense = [f"{rnd.gauss(0, 1):.3f}" for _ in range(13)]
            sparse = [str(rnd.randrange(1000)) for _ in range(4)]
            y = "1" if float(dense[0]) + rnd.gauss(0, 1) > 0.5 else "0"
            f.write(",".join(dense + sparse + [y]) + "\n")
    cfg = os.path.join(work, f"dlrm-{batch}.toml")
    with open(cfg, "w") as f:
        f.write(f"""[data]
train = "{path}"
[features]
dense = {json.dumps([f"d{i}" for i in range(13)])}
sparse = {json.dumps([f"s{i}" for i in range(4)])}
label = "y"
[model]
kind = "dlrm"
emb_dim = 256
bottom = {json.dumps(OVERLAP_BOTTOM)}
top = {json.dumps(OVERLAP_TOP)}
interaction = "cat"
[train]
epochs = 1
batch_size = {batch}
learning_rate = 0.001
shuffle_buffer = 0
""")
    return cfg


def part_overlap(tusk, rate="1gbit"):
    """Dense all-reduce hidden behind the backward pass: 2 ranks in 2 namespaces over a
    shaped link, gradients reduced after the backward pass (TUSK_BUCKET_BYTES=0) vs in
    buckets while it runs."""
    work = tempfile.mkdtemp(prefix="tusk-overlap-bench-")
    hosts = Hosts(2, rate)
    rows = []
    try:
        for batch in OVERLAP_BATCHES:
            cfg = overlap_data(work, batch)
            for bucket in [0, 4 << 20, 1 << 20, 256 << 10]:
                model = os.path.join(work, f"m{bucket}")
                log(f"overlap: 2 ranks, global batch {batch}, bucket {bucket} bytes")
                outs = hosts.run_all([tusk, "train", cfg, "--model", model, "--json"],
                                     {"TUSK_BUCKET_BYTES": str(bucket)}, 29600 + len(rows))
                r = json_lines(outs[0])[-1]
                a = r["allreduce"]
                rows.append((batch, bucket, r["samples_per_sec"], a["seconds"] / a["steps"] * 1e3,
                             a["exposed_seconds"] / a["steps"] * 1e3, a["hidden"]))
                shutil.rmtree(model, ignore_errors=True)
    finally:
        hosts.close()
        shutil.rmtree(work, ignore_errors=True)
    print(f"\n## Overlap: dense all-reduce during the backward pass (DLRM, top {OVERLAP_TOP}, "
          f"bottom {OVERLAP_BOTTOM}, about 3.1M dense weights; 2 ranks in 2 namespaces, links "
          f"{rate})\n")
    print("| global batch | dense gradient reduced | samples/s vs after-backward | samples/s | "
          "all-reduce ms/step | exposed ms/step | hidden |")
    print("|---:|---|---:|---:|---:|---:|---:|")
    base = {}
    for batch, bucket, sps, ms, exposed, hidden in rows:
        base.setdefault(batch, sps)
        name = "after the backward pass" if bucket == 0 else f"in {bucket >> 10} KiB buckets"
        print(f"| {batch} | {name} | {sps / base[batch]:.2f}× | {sps:,.0f} | {ms:.1f} | "
              f"{exposed:.1f} | {hidden * 100:.0f}% |")


sys.path.insert(0, HERE)
import neumf_bench as nb  # noqa: E402  (same model, data and PyTorch code)

TORCH_PY = os.path.join(nb.DEFAULT_VENV, "bin", "python")


def run_timed(cmd, env=None):
    """Run cmd; return (stdout, peak RSS MB of its largest process, wall seconds)."""
    t = time.time()
    p = subprocess.run(["/usr/bin/time", "-v"] + cmd, capture_output=True, text=True, env=env)
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{p.stderr[-3000:]}")
    rss = 0.0
    for line in p.stderr.splitlines():
        if "Maximum resident set size" in line:
            rss = int(line.split()[-1]) / 1024
    return p.stdout, rss, time.time() - t


def tusk_runs(tusk, cfg, work, name):
    """samples/s (median over epochs, all ranks' rows) and peak RSS, for 1 and 2 workers."""
    out = {}
    for n in (1, 2):
        model = os.path.join(work, f"{name}-model-{n}")
        shutil.rmtree(model, ignore_errors=True)
        args = ["train", cfg, "--model", model, "--json"]
        cmd = [tusk] + args if n == 1 else [tusk, "launch", "-n", str(n), "--"] + args
        log(f"train: {name}, tusk, {n} worker(s)")
        stdout, rss, wall = run_timed(cmd)
        hist = json_lines(stdout)[-1]["history"]
        out[n] = (statistics.median(h["samples_per_sec"] for h in hist), rss, wall)
    return out


def ddp_run(case, data, epochs):
    if not os.path.exists(TORCH_PY):
        return None
    log(f"train: {case}, PyTorch DDP, 2 processes (gloo)")
    cmd = [TORCH_PY, "-m", "torch.distributed.run", "--nproc-per-node", "2",
           os.path.join(HERE, "ddp_neumf.py"), case, data, str(epochs)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    rows = json_lines(p.stdout)
    if p.returncode != 0 or not rows:
        err = [l for l in p.stderr.splitlines() if "Error" in l or "error" in l or "what()" in l]
        log(f"PyTorch DDP failed (exit {p.returncode}): {' | '.join(err[-3:])}")
        return None
    r = rows[-1]
    return r["samples_per_sec"], r["peak_rss_mb"], 0.0


def part_train(tusk, args):
    work = tempfile.mkdtemp(prefix="tusk-dist-bench-")
    rows = []
    if os.path.exists(nb.DEFAULT_DATA):
        data = os.path.join(work, "ml")
        sh(tusk, "preprocess", "movielens", "--input", nb.DEFAULT_DATA, "--output", data,
           "--negatives", "0")
        cfg = os.path.join(work, "ml.toml")
        nb.tusk_config(cfg, os.path.join(data, "train"), nb.ML_EPOCHS, nb.NEGATIVES)
        rows.append(("MovieLens-100K", tusk_runs(tusk, cfg, work, "ml"),
                     ddp_run("movielens", nb.DEFAULT_DATA, nb.ML_EPOCHS)))
    else:
        log(f"train: {nb.DEFAULT_DATA} missing, MovieLens case skipped")
    if os.path.exists(TORCH_PY) and args.rows > 0:
        d = os.path.join(work, "syn")
        os.makedirs(d)
        log(f"train: generating {args.rows} synthetic rows (numpy, untimed)")
        subprocess.run([TORCH_PY, os.path.join(HERE, "neumf_bench.py"), "--worker", "--case",
                        "generate", "--rows", str(args.rows), "--out", d], check=True,
                       capture_output=True)
        # 8 part files, so that each of 2 workers reads its own files (a single CSV is read
        # by every worker, each parsing all of it and keeping every 2nd row).
        with open(os.path.join(d, "train.csv")) as f:
            header = f.readline()
            parts = [open(os.path.join(d, f"part-{k}.csv"), "w") for k in range(8)]
            for p in parts:
                p.write(header)
            for j, line in enumerate(f):
                parts[j % 8].write(line)
            for p in parts:
                p.close()
        cfg = os.path.join(d, "neumf.toml")
        nb.tusk_config(cfg, os.path.join(d, "part-*.csv"), nb.SYN_EPOCHS, 0)
        rows.append((f"synthetic 1M x 200k, {args.rows:,} rows", tusk_runs(tusk, cfg, work, "syn"),
                     # 1 epoch: from the second epoch on, PyTorch 2.15's gloo sparse all-reduce
                     # aborts here with "malloc(): unaligned tcache chunk detected".
                     ddp_run("synthetic", d, 1)))
    print("\n## Training throughput on this 2-core machine (NeuMF, global batch 256, samples/s = "
          "all ranks' rows per second of the training loop, median over epochs)\n")
    print("| case | tusk 2 workers / 1 | tusk 2 workers / PyTorch DDP 2 | tusk 1 | tusk 2 | "
          "PyTorch DDP 2 | peak RSS MB: tusk 1 / tusk 2 (per rank) / DDP (rank 0) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, t, ddp in rows:
        ddp_sps = f"{ddp[0]:,.0f}" if ddp else "—"
        vs = f"{t[2][0] / ddp[0]:.2f}×" if ddp else "—"
        ddp_rss = f"{ddp[1]:.0f}" if ddp else "—"
        print(f"| {name} | {t[2][0] / t[1][0]:.2f}× | {vs} | {t[1][0]:,.0f} | {t[2][0]:,.0f} | "
              f"{ddp_sps} | {t[1][1]:.0f} / {t[2][1]:.0f} / {ddp_rss} |")
    shutil.rmtree(work, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tusk")
    ap.add_argument("--part", default="allreduce,netns,overlap,train")
    ap.add_argument("--rows", type=int, default=2_000_000, help="synthetic rows (0: skip)")
    args = ap.parse_args()
    tusk = tusk_binary(args)
    parts = args.part.split(",")
    if "allreduce" in parts:
        part_allreduce(tusk)
    if "netns" in parts:
        part_netns(tusk)
    if "overlap" in parts:
        part_overlap(tusk)
    if "train" in parts:
        part_train(tusk, args)


if __name__ == "__main__":
    main()
