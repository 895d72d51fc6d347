#!/usr/bin/env python3
"""The clickstream SQL pipeline on one process vs a Ballista cluster on this machine.

    python3 bench/sql_cluster_bench.py [--tusk target/release/tusk] [--events 10000000]
                                       [--executors 2] [--keep DIR]

One run: synthetic logs (`tusk datagen clickstream`, 3 days), then
  (a) `tusk preprocess clickstream` in one process (the embedded DataFusion engine), and
  (b) the same command with `--cluster`: one `tusk sql-scheduler` and N `tusk sql-executor`s
      (default 2, one task per core each), all on this machine.
Prints wall time, samples written, the ratio, and what the cluster moved: shuffle bytes (the
executors' work directories after the job: Arrow IPC shuffle files, kept until the job's
data is cleaned) and the CREATE TABLE ... AS Parquet (the scratch directory's peak size,
polled during the run; the client removes it at the end). Both outputs are compared byte
for byte.
"""
import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def du(path):
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            try:
                total += os.path.getsize(os.path.join(root, f))
            except OSError:
                pass
    return total


def shard_bytes(d):
    out = {}
    for root, _, files in os.walk(d):
        for f in files:
            if not f.startswith("_"):
                p = os.path.join(root, f)
                out[os.path.relpath(p, d)] = open(p, "rb").read()
    return out


def timed(cmd):
    t = time.time()
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{r.stderr}")
    return time.time() - t, r.stderr


def wait_text(path, needle, n, limit=120):
    t = time.time()
    while time.time() - t < limit:
        if open(path).read().count(needle) >= n:
            return
        time.sleep(0.1)
    sys.exit(f"'{needle}' not seen in {path}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tusk", default="target/release/tusk")
    ap.add_argument("--events", type=int, default=10_000_000)
    ap.add_argument("--executors", type=int, default=2)
    ap.add_argument("--keep", help="work here and keep it (default: a temp dir)")
    a = ap.parse_args()
    tusk = os.path.abspath(a.tusk)
    work = a.keep or tempfile.mkdtemp(prefix="tusk-sqlbench-")
    os.makedirs(work, exist_ok=True)
    logs = os.path.join(work, "logs")
    if not os.path.exists(os.path.join(logs, "_SUCCESS")):
        subprocess.run([tusk, "datagen", "clickstream", "--out", logs, "--events",
                        str(a.events), "--days", "3", "--overwrite"], check=True,
                       capture_output=True)
    common = ["preprocess", "clickstream", "--input", logs, "--negatives", "4",
              "--shards", "4", "--format", "parquet"]
    local = os.path.join(work, "local")
    shutil.rmtree(local, ignore_errors=True)
    t_local, _ = timed([tusk, *common, "--output", local])

    procs = []
    try:
        port = free_port()
        slog = os.path.join(work, "scheduler.log")
        env = dict(os.environ, TUSK_SQL_LOG="info")
        procs.append(subprocess.Popen(
            [tusk, "sql-scheduler", "--bind", f"127.0.0.1:{port}"],
            stdout=open(slog, "w"), stderr=subprocess.STDOUT, env=env,
            start_new_session=True))
        wait_text(slog, "listening on", 1)
        wdirs = []
        for i in range(a.executors):
            wd = os.path.join(work, f"exec{i}")
            shutil.rmtree(wd, ignore_errors=True)
            os.makedirs(wd)
            wdirs.append(wd)
            procs.append(subprocess.Popen(
                [tusk, "sql-executor", "--scheduler", f"127.0.0.1:{port}", "--bind",
                 f"127.0.0.1:{free_port()}", "--grpc-port", str(free_port()),
                 "--work-dir", wd],
                stdout=open(os.path.join(work, f"executor{i}.log"), "w"),
                stderr=subprocess.STDOUT, env=env, start_new_session=True))
        wait_text(slog, "register executor request", a.executors)
        remote = os.path.join(work, "remote")
        scratch = os.path.join(work, "scratch")
        shutil.rmtree(remote, ignore_errors=True)
        peak = [0]
        done = threading.Event()

        def watch():
            while not done.is_set():
                peak[0] = max(peak[0], du(scratch))
                time.sleep(0.5)

        w = threading.Thread(target=watch)
        w.start()
        t_remote, err = timed([tusk, *common, "--output", remote, "--cluster",
                               f"df://127.0.0.1:{port}", "--scratch", scratch])
        done.set()
        w.join()
        shuffle = sum(du(d) for d in wdirs)
    finally:
        for p in procs:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait(timeout=10)
    same = shard_bytes(local) == shard_bytes(remote)
    rows = [l for l in err.splitlines() if l.startswith("wrote ")]
    print(f"\nclickstream SQL, {a.events:,} events, negatives 4, 2 cores "
          f"(tusk {subprocess.run([tusk, '--version'], capture_output=True, text=True).stdout.strip()})\n")
    print("| run | wall s | vs one process |")
    print("|---|---:|---:|")
    print(f"| one process (embedded DataFusion) | {t_local:.1f} | 1.00x |")
    print(f"| Ballista: 1 scheduler + {a.executors} executors, same machine | {t_remote:.1f} | "
          f"{t_local / t_remote:.2f}x |")
    print(f"\nshuffle files written by the executors: {shuffle / 1e6:,.0f} MB; "
          f"CREATE TABLE ... AS Parquet (peak of the scratch dir): {peak[0] / 1e6:,.0f} MB")
    print(f"outputs identical byte for byte: {same}")
    for r in rows:
        print(r)
    if not a.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
