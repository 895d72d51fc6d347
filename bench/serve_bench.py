#!/usr/bin/env python3
"""`tusk serve` under a fixed request rate while new versions are being published.

    python3 bench/serve_bench.py [--tusk PATH] [--loadgen PATH] [--rate 2000] [--seconds 60]
        [--ray-python PATH | --no-ray] [--search-seconds 5]

Model: NeuMF of examples/movielens (history 5) on MovieLens-100K (needs ../shared/data).
A training run keeps going in the background during every measurement (`nice -n 19`,
`checkpoint_every` steps), so the server reloads new versions while answering; the table
says how many versions answered. Load: `crates/tusk-serve/examples/loadgen.rs`, open loop
at --rate requests/s over 64 keep-alive connections, latency measured from each request's
scheduled start (no coordinated omission). Cases: `:predict` with 1 row and with 64 rows,
each without and with dynamic batching (`--max-batch 256 --batch-timeout 1`); `:recommend`
(k = 10 of the 1,682-item catalogue kept with the version, exclude_seen, one user) at --rate and
at --recommend-rate.

The floor: `crates/tusk-serve/examples/echo.rs` (axum on the same runtime, a fixed answer
after reading the body) under the same 1-row load, so tusk's p99 can be read against what the
HTTP stack alone costs here.

Sustained throughput: the same open-loop load at increasing offered rates (--search-rates,
--search-seconds each) against tusk serve (the running one, without batching) and the Ray
peer, 1-row and 64-row bodies; a rate is sustained when its p99 is at most 5 ms (--p99-goal)
with no errors and at least 95% of the offered rate achieved. A search goes on while the server
keeps up with the offered rate (p99 aside) and stops at the first rate it falls behind; it
reports the highest sustained rate, the highest rate achieved at all, and the ratio tusk ÷ Ray
(the issue's goal: at least 5× at p99 ≤ 5 ms).

The Ray Serve peer (bench/serve_ray.py): Ray Serve's HTTP ingress with one deployment holding
a PyTorch NeuMF built from one tusk version directory (model.safetensors loaded by name with
load_state_dict(strict=True), the rows of embeddings.safetensors, model.json's features,
entities.tfrecord), answering the same `POST /v1/models/ml:predict` bodies. Ray Serve cannot
follow new tusk versions, so it serves the version that was newest when it started, while
tusk serve reloads the versions training keeps publishing. Before any load the script checks
the peer: the load's own 65 rows, --check-rows random rows and edge rows (ids the table
lacks, an empty history, a string id, rows without history filled from the entity tables, an
unknown user) scored by the peer over HTTP and by `tusk predict --model-version` on the same
rows (written as a TFRecord, the history as a real list), and aborts when any probability
differs by more than 1e-5; it also reports how many of the load's keys are not in the table (ids training never saw: the peer answers them with
tusk's deterministic initial row, as tusk does). Settings (printed): 1 replica with
torch.set_num_threads(1) and OMP/MKL threads 1 (2 cores: one for the proxy, one for the
replica), max_ongoing_requests 128 (above loadgen's 64 connections: below them, the proxy's
router backs off and retries while the replica is full, and an overloaded peer's throughput
collapses: on a busy machine here 16 fell to ~20 req/s where 128 kept ~150), access log off,
no @serve.batch (--ray-max-batch N turns it on, N requests per batch).

The peer needs a Python with ray[serve] and torch: --ray-python PATH, else
~/.cache/tusk/ray-venv/bin/python when it exists (without either the peer is skipped). Set up:

    python3.11 -m venv ~/.cache/tusk/ray-venv
    ~/.cache/tusk/ray-venv/bin/pip install "ray[serve]" torch numpy

(CPU-only torch: `pip install torch --index-url https://download.pytorch.org/whl/cpu` where
that host is reachable.) Tried with ray 2.60.0, torch 2.15.0 (from PyPI), Python 3.11.7.
"""
import argparse
import json
import os
import random
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
UDATA = os.path.join(ROOT, "..", "shared", "data", "movielens-100k", "u.data")
RAY_VENV_PYTHON = os.path.expanduser("~/.cache/tusk/ray-venv/bin/python")
sys.path.insert(0, HERE)
import serve_ray  # noqa: E402  (its model-store helpers need only the standard library)


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def build(args):
    target = os.environ.get("CARGO_TARGET_DIR", os.path.expanduser("~/.cache/tusk/target"))
    env = {**os.environ, "CARGO_TARGET_DIR": target}
    if not args.tusk:
        subprocess.run(["cargo", "build", "--release", "--locked", "-p", "tusk-cli"], cwd=ROOT,
                       check=True, env=env)
        args.tusk = os.path.join(target, "release", "tusk")
    if not args.loadgen or not args.echo:
        subprocess.run(["cargo", "build", "--release", "--locked", "-p", "tusk-serve",
                        "--example", "loadgen", "--example", "echo"], cwd=ROOT, check=True,
                       env=env)
        args.loadgen = args.loadgen or os.path.join(target, "release", "examples", "loadgen")
        args.echo = args.echo or os.path.join(target, "release", "examples", "echo")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def wait_ready(port, proc, limit=120):
    t = time.time()
    while time.time() - t < limit:
        if proc.poll() is not None:
            raise SystemExit("tusk serve exited")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=2):
                return
        except Exception:
            time.sleep(0.2)
    raise SystemExit("tusk serve never became ready")


def loadgen(args, port, path, body, rate, secs):
    out = subprocess.run([args.loadgen, f"127.0.0.1:{port}", path, body, str(rate), str(secs)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def search(args, port, body, label):
    """Sustained throughput: open-loop runs at increasing offered rates. Goes on while the
    server keeps up with the offered rate (whatever its p99), stops at the first it does not."""
    runs = []
    for rate in args.search_rates:
        r = loadgen(args, port, "/v1/models/ml:predict", body, rate, args.search_seconds)
        ok = (r["errors"] == 0 and r["p99_ms"] <= args.p99_goal and r["rate"] >= 0.95 * rate)
        log(f"  search {label}: offered {rate:.0f}/s: achieved {r['rate']:.0f}/s, "
            f"p99 {r['p99_ms']:.2f} ms, {r['errors']} errors{'' if ok else ' (not sustained)'}")
        runs.append((rate, r, ok))
        if r["rate"] < 0.9 * rate or r["errors"]:
            break
    sustained = max((r["rate"] for _, r, ok in runs if ok), default=0.0)
    achieved = max(r["rate"] for _, r, _ in runs)
    capped = runs[-1][2] and len(runs) == len(args.search_rates)
    return {"runs": runs, "sustained": sustained, "achieved": achieved, "capped": capped}


# ---------------------------------------------------------------- TFRecord rows for tusk predict

def _crc32c_table():
    t = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        t.append(c)
    return t


CRC32C = _crc32c_table()


def masked_crc32c(data):
    c = 0xFFFFFFFF
    for b in data:
        c = CRC32C[(c ^ b) & 0xFF] ^ (c >> 8)
    c ^= 0xFFFFFFFF
    return (((c >> 15) | (c << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _varint(x):
    x &= (1 << 64) - 1
    out = bytearray()
    while True:
        b = x & 0x7F
        x >>= 7
        if x:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _ld(field, payload):
    return _varint(field << 3 | 2) + _varint(len(payload)) + payload


def example_bytes(row):
    """A tf.train.Example of a request row: ints as int64_list, strings as bytes_list."""
    entries = b""
    for name, v in row.items():
        vals = v if isinstance(v, list) else [v]
        if all(isinstance(x, int) for x in vals):
            feat = _ld(3, _ld(1, b"".join(_varint(x) for x in vals)))
        else:
            feat = _ld(1, b"".join(_ld(1, str(x).encode()) for x in vals))
        entries += _ld(1, _ld(1, name.encode()) + _ld(2, feat))
    return _ld(1, entries)


def write_tfrecord(path, rows):
    with open(path, "wb") as f:
        for row in rows:
            data = example_bytes(row)
            n = struct.pack("<Q", len(data))
            f.write(n + struct.pack("<I", masked_crc32c(n)) + data +
                    struct.pack("<I", masked_crc32c(data)))


# ---------------------------------------------------------------- the Ray Serve peer

class RayPeer:
    """bench/serve_ray.py under the Ray venv's python, in its own process group."""

    def __init__(self, args, version_dir, port, logfile):
        cmd = [args.ray_python, os.path.join(HERE, "serve_ray.py"), "serve",
               "--version-dir", version_dir, "--port", str(port),
               "--replicas", str(args.ray_replicas), "--threads", str(args.ray_threads),
               "--max-ongoing", str(args.ray_max_ongoing), "--max-batch", str(args.ray_max_batch)]
        self.port, self.settings, self.logfile = port, None, logfile
        self.log = open(logfile, "w")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self.log, text=True,
                                     start_new_session=True)
        lines = []
        def read():
            for line in self.proc.stdout:
                lines.append(line)
        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        t = time.time()
        while time.time() - t < 300:
            ready = [x for x in lines if x.startswith("READY ")]
            if ready:
                self.settings = json.loads(ready[0][6:])
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.5)
        self.stop()
        with open(logfile) as f:
            tail = f.read()[-3000:]
        raise SystemExit(f"the Ray Serve peer did not start:\n{tail}")

    def post(self, body):
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}/v1/models/ml:predict",
                                     data=body, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as r:
            return json.loads(r.read())

    def stats(self):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/stats", timeout=60) as r:
            return json.loads(r.read())

    def stop(self):
        """SIGTERM (Serve and Ray shut down), then SIGKILL the group and anything still
        running under the peer's Ray temporary directory."""
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=60)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()
        # Ray's actors (proxy, controller, replica) run in process groups of their own, in
        # the peer's session; other Ray processes name its temporary directory.
        t = time.time()
        while self.left() and time.time() - t < 20:
            for pid in self.left():
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.2)
        tmp = (self.settings or {}).get("temp_dir")
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
        self.log.close()

    def left(self):
        """Live processes of the peer: its session, or naming its Ray directory."""
        tmp = (self.settings or {}).get("temp_dir")
        return sorted(set(session_members(self.proc.pid)) |
                      set(pids_mentioning(tmp) if tmp else []))


def _procs():
    for d in os.listdir("/proc"):
        if d.isdigit() and int(d) != os.getpid():
            yield int(d)


def session_members(sid):
    """Live (not zombie) processes of session `sid`."""
    out = []
    for pid in _procs():
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[3]) == sid:
            out.append(pid)
    return out


def pids_mentioning(text):
    out = []
    for pid in _procs():
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if text.encode() in f.read():
                    out.append(pid)
        except OSError:
            pass
    return out


def check_rows(n):
    """Random rows as the load sends, plus rows for every path of the encoding."""
    rnd = random.Random(2)
    rows = [{"user_id": rnd.randrange(1, 944), "item_id": rnd.randrange(1, 1683),
             "history": [rnd.randrange(1, 1683) for _ in range(5)]} for _ in range(n)]
    rows += [
        {"user_id": 5000, "item_id": 99999, "history": [1, 2, 99998, 3, 4]},  # not in the table
        {"user_id": 7, "item_id": 10, "history": [50]},                       # a bag of one
        {"user_id": 7, "item_id": 10, "history": [50, 50, 1682]},             # a repeated id
        {"user_id": 7, "item_id": 10, "history": []},                         # missing: own key
        {"user_id": "42", "item_id": "abc", "history": [1, 2, 3, 4, 5]},      # strings
        {"user_id": 3, "item_id": 20},             # history from the version's entity tables
        {"user_id": 943, "item_id": 1682},
        {"user_id": 123456, "item_id": 20},        # unknown user: history missing
        {"item_id": 20, "history": [1, 2]},        # user_id missing
    ]
    return rows


def check_ray(args, peer, model, version, work, bodies):
    """Ray's probabilities against `tusk predict` of the same version on the same rows: the
    load's own bodies (sent first, so the peer's count of keys it answered with their initial
    row covers them alone), then random and edge rows."""
    load_rows = []
    for n in (1, 64):
        with open(bodies[n]) as f:
            load_rows += json.load(f)["instances"]
    rows = load_rows + check_rows(args.check_rows)
    inp = os.path.join(work, "check.tfrecord")
    out = os.path.join(work, "check-scores.csv")
    write_tfrecord(inp, rows)
    subprocess.run([args.tusk, "predict", "--model", model, "--model-version", str(version),
                    "--input", inp, "--output", out], check=True, capture_output=True)
    import csv
    with open(out, newline="") as f:
        tusk_scores = [float(rec[-1]) for rec in list(csv.reader(f))[1:]]
    ray_scores = []
    for n in (1, 64):
        with open(bodies[n], "rb") as f:
            ray_scores += peer.post(f.read())["predictions"]
    load_initial = peer.stats()["initial_rows_cached"]
    for i in range(len(load_rows), len(rows), 64):
        ray_scores += peer.post(json.dumps({"instances": rows[i:i + 64]}).encode())["predictions"]
    if len(tusk_scores) != len(rows) or len(ray_scores) != len(rows):
        raise SystemExit(f"check: {len(rows)} rows, tusk predict scored {len(tusk_scores)}, "
                         f"the Ray peer {len(ray_scores)}")
    diffs = [abs(a - b) for a, b in zip(tusk_scores, ray_scores)]
    worst = max(range(len(rows)), key=lambda i: diffs[i])
    stats = peer.stats()
    res = {"rows": len(rows), "load_rows": len(load_rows), "max_abs_diff": diffs[worst],
           "load_max_abs_diff": max(diffs[:len(load_rows)]), "worst_row": rows[worst],
           "tusk": tusk_scores[worst], "ray": ray_scores[worst],
           "load_initial_keys": load_initial, "initial_keys": stats["initial_rows_cached"],
           "table_rows": stats["table_rows"]}
    log(f"  check: {res}")
    if diffs[worst] > 1e-5:
        raise SystemExit(f"the Ray peer disagrees with tusk predict (version {version}): {res}")
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tusk")
    ap.add_argument("--loadgen")
    ap.add_argument("--echo", help="the floor server (crates/tusk-serve/examples/echo.rs)")
    ap.add_argument("--rate", type=float, default=2000)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--recommend-rate", type=float, default=250,
                    help="a second, lower rate for :recommend")
    ap.add_argument("--ray-python", help="python with ray[serve] and torch (default: "
                    f"{RAY_VENV_PYTHON} when it exists)")
    ap.add_argument("--no-ray", action="store_true", help="skip the Ray Serve peer")
    ap.add_argument("--ray-replicas", type=int, default=1)
    ap.add_argument("--ray-threads", type=int, default=1, help="torch threads per replica")
    ap.add_argument("--ray-max-ongoing", type=int, default=128,
                    help="max_ongoing_requests per replica")
    ap.add_argument("--ray-max-batch", type=int, default=0,
                    help="@serve.batch max_batch_size in requests (0: off)")
    ap.add_argument("--check-rows", type=int, default=300,
                    help="random rows of the Ray-vs-tusk-predict check (plus edge rows)")
    ap.add_argument("--search-rates",
                    default="25,50,100,200,400,800,1600,2000,4000,8000,16000,32000",
                    help="offered rates of the sustained-throughput search")
    ap.add_argument("--search-seconds", type=float, default=5)
    ap.add_argument("--no-search", action="store_true",
                    help="skip the sustained-throughput search (fixed-rate cases only)")
    ap.add_argument("--p99-goal", type=float, default=5.0, help="ms")
    args = ap.parse_args()
    args.search_rates = [float(x) for x in args.search_rates.split(",")]
    if args.no_ray:
        args.ray_python = None
    elif not args.ray_python and os.path.exists(RAY_VENV_PYTHON):
        args.ray_python = RAY_VENV_PYTHON
    if not os.path.exists(UDATA):
        raise SystemExit(f"{UDATA} not found (MovieLens-100K)")
    build(args)
    work = tempfile.mkdtemp(prefix="tusk-serve-bench-")
    procs = []
    try:
        data = os.path.join(work, "data")
        subprocess.run([args.tusk, "preprocess", "movielens", "--input", UDATA, "--output", data,
                        "--negatives", "0", "--validation", "--history", "5"], check=True,
                       capture_output=True)
        model = os.path.join(work, "model")
        cfg = os.path.join(ROOT, "examples", "movielens", "config.toml")
        trainer = subprocess.Popen(
            ["nice", "-n", "19", args.tusk, "train", cfg, "--model", model,
             "--set", f"data.train={data}/train", "--set", f"data.validation={data}/validation",
             "--set", f"data.test={data}/test", "--set", "train.epochs=1000", "--set", "train.checkpoint_every=2000",
             "--set", f"data.entities.user_id={data}/entities/user_id",
             "--set", f"data.entities.item_id={data}/entities/item_id",
             "--set", "eval.patience=1000"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        procs.append(trainer)
        while not os.path.exists(os.path.join(model, "versions")) or not any(
                os.path.exists(os.path.join(model, "versions", v, "MANIFEST.json"))
                for v in os.listdir(os.path.join(model, "versions"))):
            if trainer.poll() is not None:
                raise SystemExit("training failed")
            time.sleep(0.5)
        rnd = random.Random(1)

        def row():
            return {"user_id": rnd.randrange(1, 944), "item_id": rnd.randrange(1, 1683),
                    "history": [rnd.randrange(1, 1683) for _ in range(5)]}
        bodies = {}
        for n in (1, 64):
            p = os.path.join(work, f"body{n}.json")
            with open(p, "w") as f:
                json.dump({"instances": [row() for _ in range(n)]}, f)
            bodies[n] = p
        bodies["rec"] = os.path.join(work, "recommend.json")
        with open(bodies["rec"], "w") as f:
            json.dump({"user_id": 42, "k": 10, "exclude_seen": True}, f)
        results = []
        rec_results = []
        searches = {}
        port = free_port()
        echo = subprocess.Popen([args.echo, f"127.0.0.1:{port}"], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
        procs.append(echo)
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        log(f"load: echo floor, 1 row, {args.rate:.0f} req/s for {args.seconds:.0f} s")
        out = subprocess.run([args.loadgen, f"127.0.0.1:{port}", "/v1/models/ml:predict", bodies[1],
                              str(args.rate), str(args.seconds)], capture_output=True, text=True,
                             check=True)
        floor = json.loads(out.stdout.strip().splitlines()[-1])
        log(f"  {floor}")
        os.killpg(echo.pid, signal.SIGTERM)
        echo.wait(timeout=30)
        for batching in (False, True):
            port = free_port()
            cmd = [args.tusk, "serve", "--model", f"ml={model}", "--addr", f"127.0.0.1:{port}",
                   "--poll-interval", "1"]
            if batching:
                cmd += ["--max-batch", "256", "--batch-timeout", "1"]
            server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                      start_new_session=True)
            procs.append(server)
            wait_ready(port, server)
            for n in (1, 64):
                log(f"load: {n} row(s) per request, batching {'on' if batching else 'off'}, "
                    f"{args.rate:.0f} req/s for {args.seconds:.0f} s")
                out = subprocess.run([args.loadgen, f"127.0.0.1:{port}", "/v1/models/ml:predict",
                                      bodies[n], str(args.rate), str(args.seconds)],
                                     capture_output=True, text=True, check=True)
                r = json.loads(out.stdout.strip().splitlines()[-1])
                log(f"  {r}")
                results.append((n, batching, r))
            for rate, secs in ([] if batching else [(args.rate, args.seconds),
                                                    (args.recommend_rate, args.seconds)]):
                log(f"load: :recommend, {rate:.0f} req/s for {secs:.0f} s")
                out = subprocess.run([args.loadgen, f"127.0.0.1:{port}", "/v1/models/ml:recommend",
                                      bodies["rec"], str(rate), str(secs)],
                                     capture_output=True, text=True, check=True)
                r = json.loads(out.stdout.strip().splitlines()[-1])
                log(f"  {r}")
                rec_results.append((rate, secs, r))
            if not batching and not args.no_search:
                for n in (1, 64):
                    log(f"search: tusk serve, {n} row(s) per request, "
                        f"{args.search_seconds:.0f} s per rate")
                    searches[("tusk", n)] = search(args, port, bodies[n], f"tusk {n}")
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=30)
        ray = None
        if args.ray_python:
            version = serve_ray.latest_version(model)
            vdir = os.path.join(model, "versions", serve_ray.version_name(version))
            port = free_port()
            log(f"Ray Serve peer: version {version} (fixed: Ray Serve does not follow new tusk "
                f"versions), {args.ray_python}")
            peer = RayPeer(args, vdir, port, os.path.join(work, "ray.log"))
            try:
                log(f"  settings: {peer.settings}")
                ray = {"settings": peer.settings, "version": version,
                       "check": check_ray(args, peer, model, version, work, bodies),
                       "results": []}
                for n in (1, 64):
                    log(f"search: Ray Serve, {n} row(s) per request, "
                        f"{args.search_seconds:.0f} s per rate")
                    searches[("ray", n)] = search(args, port, bodies[n], f"ray {n}")
                for n in (1, 64):
                    # Above what the peer sustains a run only grows its queue: 10 s show
                    # that, or fewer when it drains slowly (about 30 s of its top rate).
                    top = searches[("ray", n)]["achieved"]
                    secs = (args.seconds if top >= 0.95 * args.rate
                            else min(args.seconds, 10, max(1.0, 30 * top / args.rate)))
                    log(f"load: Ray Serve, {n} row(s) per request, {args.rate:.0f} req/s for "
                        f"{secs:.0f} s")
                    r = loadgen(args, port, "/v1/models/ml:predict", bodies[n], args.rate, secs)
                    log(f"  {r}")
                    ray["results"].append((n, secs, r))
            finally:
                peer.stop()
            left = peer.left()
            if left:
                log(f"  WARNING: processes left after the Ray peer stopped: {left}")
        print(f"\n## tusk serve: `:predict` at {args.rate:.0f} req/s for {args.seconds:.0f} s "
              "(open loop, 64 connections), versions published meanwhile\n")
        print("| rows per request | dynamic batching | achieved req/s | p50 ms | p99 ms | "
              "p99.9 ms | max ms | errors | versions that answered |")
        print("|---:|---|---:|---:|---:|---:|---:|---:|---:|")
        for n, batching, r in results:
            print(f"| {n} | {'on (256 rows, 1 ms)' if batching else 'off'} | {r['rate']:,.0f} | "
                  f"{r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['p999_ms']:.2f} | "
                  f"{r['max_ms']:.1f} | {r['errors']} | {r['versions']} |")
        tusk1 = next(r for n, b, r in results if n == 1 and not b)
        print(f"\nFloor (echo server, 1-row body, same load): p50 {floor['p50_ms']:.2f} ms, p99 "
              f"{floor['p99_ms']:.2f} ms, p99.9 {floor['p999_ms']:.2f} ms, {floor['errors']} errors; "
              f"tusk's 1-row p99 is {tusk1['p99_ms'] / floor['p99_ms']:.2f}× the floor's.")
        print("\n## tusk serve: `:recommend` (k = 10 of 1,682 items, exclude_seen), versions "
              "published meanwhile\n")
        print("| offered req/s | seconds | achieved req/s | p50 ms | p99 ms | p99.9 ms | max ms | "
              "errors | versions that answered |")
        print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for rate, secs, r in rec_results:
            print(f"| {rate:,.0f} | {secs:.0f} | {r['rate']:,.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | "
                  f"{r['p999_ms']:.2f} | {r['max_ms']:.1f} | {r['errors']} | {r['versions']} |")
        if ray:
            report_ray(args, ray, results)
        report_search(args, searches)
    finally:
        for p in procs:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait()
        shutil.rmtree(work, ignore_errors=True)


def report_ray(args, ray, results):
    st, c = ray["settings"], ray["check"]
    print(f"\n## Ray Serve peer: `:predict` at {args.rate:.0f} req/s (open loop, 64 connections), "
          f"version {ray['version']} fixed (Ray Serve has no hot reload of tusk versions)\n")
    print(f"Ray {st['ray']}, PyTorch {st['torch']}, Python {st['python']}: {st['replicas']} "
          f"replica(s) (num_cpus {st['replica_num_cpus']}), torch.set_num_threads("
          f"{st['torch_threads']}), max_ongoing_requests {st['max_ongoing_requests']}, "
          f"@serve.batch {st['serve_batch'] or 'off'}, access log off, {st['proxy']}, "
          f"ray.init(num_cpus={st['ray_num_cpus']}).")
    print(f"Check against `tusk predict --model-version {ray['version']}`: {c['rows']} rows "
          f"(the load's {c['load_rows']}, random and edge rows), max |Δp| "
          f"{c['max_abs_diff']:.2e} (limit 1e-5; the load's rows: {c['load_max_abs_diff']:.2e}). "
          f"Keys not in the {c['table_rows']:,}-row table, answered with tusk's initial row "
          f"for them: {c['load_initial_keys']} in the load's rows (ids training never saw "
          f"there), {c['initial_keys']} in all.\n")
    print("| rows per request | seconds | achieved req/s | p50 ms | p99 ms | p99.9 ms | max ms | "
          "errors | tusk p99 ms (no batching) |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for n, secs, r in ray["results"]:
        t = next((x for m, b, x in results if m == n and not b), None)
        tusk_p99 = f"{t['p99_ms']:.2f}" if t else ""
        print(f"| {n} | {secs:.0f} | {r['rate']:,.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | "
              f"{r['p999_ms']:.2f} | {r['max_ms']:.1f} | {r['errors']} | {tusk_p99} |")


def report_search(args, searches):
    if not searches:
        return
    print(f"\n## Sustained throughput: open loop, {args.search_seconds:.0f} s per offered rate; "
          f"sustained = p99 ≤ {args.p99_goal:g} ms, no errors, ≥ 95% of the offered rate\n")
    print("| server | rows per request | offered req/s | achieved req/s | p50 ms | p99 ms | "
          "errors | sustained |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for (who, n), s in searches.items():
        for rate, r, ok in s["runs"]:
            print(f"| {'tusk serve' if who == 'tusk' else 'Ray Serve'} | {n} | {rate:,.0f} | "
                  f"{r['rate']:,.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['errors']} | "
                  f"{'yes' if ok else 'no'} |")
    print()
    for n in (1, 64):
        t, r = searches.get(("tusk", n)), searches.get(("ray", n))
        for who, s in (("tusk serve", t), ("Ray Serve", r)):
            if s:
                more = " (the highest rate tried: more is likely)" if s["capped"] else ""
                print(f"- {who}, {n} row(s): sustained {s['sustained']:,.0f} req/s at p99 ≤ "
                      f"{args.p99_goal:g} ms{more}; highest achieved {s['achieved']:,.0f} req/s")
        if t and r:
            if r["sustained"] > 0:
                ratio = t["sustained"] / r["sustained"]
                verdict = "met" if ratio >= 5 else "NOT met"
                capped = "; tusk capped by the rates tried" if t["capped"] else ""
                print(f"- **{n} row(s): tusk ÷ Ray at p99 ≤ {args.p99_goal:g} ms = "
                      f"{ratio:.1f}×** (goal ≥ 5×: {verdict}{capped}); highest achieved: "
                      f"{t['achieved'] / r['achieved']:.1f}×")
            else:
                print(f"- {n} row(s): Ray sustained no rate tried at p99 ≤ {args.p99_goal:g} ms")
    print("\nloadgen runs on the same cores as the server under test (at tens of thousands of "
          "requests per second it takes a real share of them).")


if __name__ == "__main__":
    main()
