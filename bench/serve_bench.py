#!/usr/bin/env python3
"""`tusk serve` under a fixed request rate while new versions are being published.

    python3 bench/serve_bench.py [--tusk PATH] [--loadgen PATH] [--rate 2000] [--seconds 60]

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
HTTP stack alone costs here. Not here yet: the Ray Serve peer.
"""
import argparse
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
UDATA = os.path.join(ROOT, "..", "shared", "data", "movielens-100k", "u.data")


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


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tusk")
    ap.add_argument("--loadgen")
    ap.add_argument("--echo", help="the floor server (crates/tusk-serve/examples/echo.rs)")
    ap.add_argument("--rate", type=float, default=2000)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--recommend-rate", type=float, default=250,
                    help="a second, lower rate for :recommend")
    args = ap.parse_args()
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
            # Above what the server sustains a run only grows its queue: 10 s show that.
            for rate, secs in ([] if batching else [(args.rate, min(args.seconds, 10)),
                                                    (args.recommend_rate, args.seconds)]):
                log(f"load: :recommend, {rate:.0f} req/s for {secs:.0f} s")
                out = subprocess.run([args.loadgen, f"127.0.0.1:{port}", "/v1/models/ml:recommend",
                                      bodies["rec"], str(rate), str(secs)],
                                     capture_output=True, text=True, check=True)
                r = json.loads(out.stdout.strip().splitlines()[-1])
                log(f"  {r}")
                rec_results.append((rate, secs, r))
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=30)
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
    finally:
        for p in procs:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
