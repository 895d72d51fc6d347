#!/usr/bin/env python3
"""HBase as the online store: serving latency with features from HBase, and export rate.

    python3 bench/hbase_bench.py [--tusk PATH] [--loadgen PATH] [--rate 300] [--seconds 20]
        [--users 1000000] [--skip-latency] [--skip-export]

Both parts run on one HBase mini cluster (`testing/minihbase`: HBase 2.6.1's own mini
cluster, one region server, with its REST and Thrift 1 gateways in the same JVM), started by
this script.

Latency (needs ../shared/data/movielens-100k): NeuMF of examples/movielens (history 5, one
epoch) exported with `tusk export hbase`; three `tusk serve` processes on the same version:
the version's tables (no --features), --features with no cache, --features with a 60 s cache.
Each gets the same open-loop load (crates/tusk-serve/examples/loadgen.rs: --rate requests/s
for --seconds, latency from each request's scheduled start) for `:predict` (one row naming
a user and an item: the user's history comes from the entity tables or HBase) and
`:recommend` (k = 10 of the 1,682-item catalogue, exclude_seen). The table gives p50/p99 and
the ratio of each to the run without HBase.

Export: a version with --users users (a NeuMF trained one epoch on one row per user, its
user table holding user_id and a 5-item history) exported by `tusk export hbase` (wall time of
the whole command, loading the version included), against happybase 1.3 writing the same
cells (the same serialized tf.train.Feature values and embedding bytes, prepared before the
clock starts) through the Thrift gateway with `table.batch(batch_size=1000)`, into a fresh
table each. Rows per second, and tusk ÷ happybase.
"""
import argparse
import json
import os
import random
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bench"))
from serve_bench import _ld, _varint, free_port, wait_ready  # noqa: E402  (the same helpers)
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.expanduser("~/.cache/tusk/target"))


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def build(args):
    env = {**os.environ, "CARGO_TARGET_DIR": TARGET}
    if not args.tusk:
        subprocess.run(["cargo", "build", "--release", "--locked", "-p", "tusk-cli"], cwd=ROOT,
                       check=True, env=env)
        args.tusk = os.path.join(TARGET, "release", "tusk")
    if not args.loadgen:
        subprocess.run(["cargo", "build", "--release", "--locked", "-p", "tusk-serve",
                        "--example", "loadgen"], cwd=ROOT, check=True, env=env)
        args.loadgen = os.path.join(TARGET, "release", "examples", "loadgen")


class MiniHBase:
    """testing/minihbase in a JVM of its own; closed by writing an empty line."""

    def __init__(self):
        proj = os.path.join(ROOT, "testing", "minihbase")
        subprocess.run(["mvn", "-q", "-B", "-f", proj, "compile"], check=True)
        self.p = subprocess.Popen(["mvn", "-q", "-B", "-f", proj, "exec:java"],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.DEVNULL, text=True, start_new_session=True)
        t = time.time()
        for line in self.p.stdout:
            m = re.search(r"Ready! rest=(\d+) thrift=(\d+)", line)
            if m:
                self.rest, self.thrift = int(m.group(1)), int(m.group(2))
                break
            if time.time() - t > 600:
                break
        else:
            raise SystemExit("MiniHBase never became ready")
        log(f"MiniHBase ready in {time.time() - t:.1f} s: REST :{self.rest}, Thrift :{self.thrift}")

    def close(self):
        try:
            self.p.stdin.write("\n")
            self.p.stdin.flush()
            self.p.wait(60)
        except Exception:
            os.killpg(self.p.pid, 9)
            self.p.wait()


def run(cmd, **kw):
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(map(str, cmd))} failed:\n{r.stderr}")
    return r


def loadgen(args, port, path, body_file, rate, secs):
    out = run([args.loadgen, f"127.0.0.1:{port}", path, body_file, str(rate), str(secs)])
    return json.loads(out.stdout.strip().splitlines()[-1])


def latency(args, hb, work):
    udata = os.path.join(ROOT, "..", "shared", "data", "movielens-100k", "u.data")
    if not os.path.exists(udata):
        log(f"{udata} not found: latency part skipped")
        return None
    data = os.path.join(work, "ml")
    run([args.tusk, "preprocess", "movielens", "--input", udata, "--output", data,
         "--negatives", "0", "--validation", "--history", "5"])
    model = os.path.join(work, "ml-model")
    sets = [f"data.{s}={data}/{s}" for s in ("train", "validation", "test")]
    sets += [f"data.entities.{k}={data}/entities/{k}" for k in ("user_id", "item_id")]
    cmd = [args.tusk, "train", os.path.join(ROOT, "examples/movielens/config.toml"),
           "--model", model, "--set", "train.epochs=1"]
    for s in sets:
        cmd += ["--set", s]
    run(cmd)
    run([args.tusk, "export", "hbase", "--model", model, "--table", "ml",
         "--rest", f"http://127.0.0.1:{hb.rest}"])
    features = f"hbase://127.0.0.1:{hb.rest}/ml"
    cases = [("version's tables", []),
             ("HBase, no cache", ["--features", features]),
             ("HBase, 60 s cache", ["--features", features, "--features-ttl", "60"])]
    bodies = {
        "predict": ("/v1/models/ml:predict", {"instances": [{"user_id": 7, "item_id": 50}]}),
        "recommend": ("/v1/models/ml:recommend", {"user_id": 7, "k": 10, "exclude_seen": True}),
    }
    files = {}
    for name, (_, body) in bodies.items():
        files[name] = os.path.join(work, f"{name}.json")
        with open(files[name], "w") as f:
            json.dump(body, f)
    results = {}
    for label, extra in cases:
        port = free_port()
        p = subprocess.Popen([args.tusk, "serve", "--model", f"ml={model}",
                              "--addr", f"127.0.0.1:{port}"] + extra,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
        try:
            wait_ready(port, p)
            for name, (path, _) in bodies.items():
                loadgen(args, port, path, files[name], args.rate, 3)  # warm-up
                r = loadgen(args, port, path, files[name], args.rate, args.seconds)
                results[(label, name)] = r
                log(f"  {label:18} {name:9}: p50 {r['p50_ms']:.2f} ms, p99 {r['p99_ms']:.2f} ms, "
                    f"{r['rate']:.0f}/s, {r['errors']} errors")
            if extra:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics") as m:
                    text = m.read().decode()
                counts = {k: v for k, v in re.findall(
                    r"^(tusk_features_\w+_total) (\d+)", text, re.M)}
                log(f"  {label}: {counts}")
        finally:
            os.killpg(p.pid, 15)
            p.wait(30)
    return results


def feature_bytes(kind, values):
    """A serialized tf.train.Feature: kind 'int64' (packed varints)."""
    assert kind == "int64"
    payload = b"".join(_varint(v) for v in values)
    return _ld(3, _ld(1, payload))  # Feature.int64_list { Int64List.value (packed) }


def export(args, hb, work):
    import happybase
    n = args.users
    rng = random.Random(7)
    train = os.path.join(work, "big.csv")
    users = os.path.join(work, "users.csv")
    histories = []
    with open(train, "w") as t, open(users, "w") as u:
        t.write("user_id,item_id,label,history\n")
        u.write("user_id,history\n")
        for i in range(n):
            h = [rng.randrange(1000) for _ in range(5)]
            histories.append(h)
            t.write(f"{i},{rng.randrange(1000)},{rng.randrange(2)},{' '.join(map(str, h))}\n")
            u.write(f"{i},{' '.join(map(str, h))}\n")
    cfg = os.path.join(work, "big.toml")
    with open(cfg, "w") as f:
        f.write(f"""[data]
train = "{train}"
entities = {{ user_id = "{users}" }}
[features]
sparse = ["user_id", "item_id", "history"]
label = "label"
[model]
kind = "neumf"
user = ["user_id", "history"]
item = ["item_id"]
gmf_dim = 8
mlp_dim = 8
layers = [16, 8]
[train]
epochs = 1
batch_size = 1024
""")
    model = os.path.join(work, "big-model")
    t0 = time.time()
    run([args.tusk, "train", cfg, "--model", model])
    log(f"trained the {n}-user version in {time.time() - t0:.0f} s")
    t0 = time.time()
    r = run([args.tusk, "export", "hbase", "--model", model, "--table", "big_tusk",
             "--rest", f"http://127.0.0.1:{hb.rest}", "--batch-rows", str(args.batch_rows),
             "--in-flight", str(args.in_flight)])
    tusk_s = time.time() - t0
    line = r.stderr.strip().splitlines()[-1]
    log(line)
    m = re.search(r"([0-9]+) rows/s; the version loaded in ([0-9.]+) s", line)
    phase = n / float(m.group(1)) if m else float("nan")

    # The peer: the same cells through the Thrift gateway. Embeddings: gmf 8 + mlp 8 floats.
    conn = happybase.Connection("127.0.0.1", port=hb.thrift, autoconnect=True)
    conn.create_table("big_thrift", {"f": dict(max_versions=3), "e": dict(max_versions=3),
                                     "m": dict(max_versions=3)})
    table = conn.table("big_thrift")
    emb = struct.pack("<16f", *([0.01] * 16))
    rows = []
    for i, h in enumerate(histories):
        rows.append((f"user_id:{i}".encode(), {
            b"f:history": feature_bytes("int64", h),
            b"f:user_id": feature_bytes("int64", [i]),
            b"e:user_id": emb,
        }))
    t0 = time.time()
    with table.batch(batch_size=1000, timestamp=1) as b:
        for key, cells in rows:
            b.put(key, cells)
    thrift_s = time.time() - t0
    conn.close()
    return {"rows": n, "tusk_s": tusk_s, "tusk_write_s": phase, "thrift_s": thrift_s}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tusk")
    ap.add_argument("--loadgen")
    ap.add_argument("--rate", type=float, default=300)
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--users", type=int, default=1_000_000)
    ap.add_argument("--skip-latency", action="store_true")
    ap.add_argument("--skip-export", action="store_true")
    ap.add_argument("--batch-rows", type=int, default=1000)
    ap.add_argument("--in-flight", type=int, default=4)
    args = ap.parse_args()
    build(args)
    work = tempfile.mkdtemp(prefix="tusk-hbase-bench-")
    hb = MiniHBase()
    try:
        lat = None if args.skip_latency else latency(args, hb, work)
        exp = None if args.skip_export else export(args, hb, work)
    finally:
        hb.close()
        shutil.rmtree(work, ignore_errors=True)
    if lat:
        print(f"\n:predict / :recommend at {args.rate:.0f} req/s for {args.seconds:.0f} s "
              "(ms; ratio to the version's tables)")
        print(f"| features from | predict p50 | predict p99 | recommend p50 | recommend p99 |")
        print("|---|---|---|---|---|")
        base = {k[1]: v for k, v in lat.items() if k[0] == "version's tables"}
        for label in ("version's tables", "HBase, no cache", "HBase, 60 s cache"):
            cells = []
            for name in ("predict", "recommend"):
                r = lat[(label, name)]
                for q in ("p50_ms", "p99_ms"):
                    ratio = r[q] / base[name][q] if base[name][q] else float("nan")
                    cells.append(f"{r[q]:.2f} ({ratio:.2f}×)")
            print(f"| {label} | " + " | ".join(cells) + " |")
    if exp:
        n = exp["rows"]
        t, h = n / exp["tusk_s"], n / exp["thrift_s"]
        print(f"\nexport of {n:,} user rows (3 cells each)")
        print("| writer | seconds | rows/s |")
        print("|---|---|---|")
        print(f"| tusk export hbase (REST, whole command) | {exp['tusk_s']:.1f} | {t:,.0f} |")
        w = n / exp["tusk_write_s"]
        print(f"| tusk export hbase, writing only | {exp['tusk_write_s']:.1f} | {w:,.0f} |")
        print(f"| happybase batch(1000) (Thrift) | {exp['thrift_s']:.1f} | {h:,.0f} |")
        print(f"| tusk ÷ happybase (whole command; writing only) | | {t / h:.2f}×; {w / h:.2f}× |")


if __name__ == "__main__":
    main()
