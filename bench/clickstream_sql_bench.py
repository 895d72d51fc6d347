#!/usr/bin/env python3
"""tusk vs Apache Spark (local[2]) on the clickstream SQL feature pipeline, in one run.

Both systems run the statements of crates/tusk-preprocess/sql/clickstream.sql over the same
REES46-layout CSV logs and write the training samples as Parquet, split into train and test:

  tusk   tusk preprocess clickstream --input LOGS --output WORKDIR/tusk-out-N
             --negatives K --format parquet --shards 2
         (DataFusion, eight partitions per core; also counts event types first, one extra pass)
  Spark  bench/spark/clickstream.py in a child Python: SparkSession local[2], driver memory 4g
         (-Xmx4g; in local mode the driver JVM runs every task), spark.sql.shuffle.partitions 4
         (2 cores → 2 tasks per wave, 2 waves per shuffle), session time zone UTC (DataFusion's
         TIMESTAMP has no zone), the CSV read with tusk's explicit schema (header=true), the SQL
         file read at run time with ${negatives} and ${seed}=42 substituted and minimal dialect
         rewrites (listed in the output), the final query written with
         .write.partitionBy("split").parquet(WORKDIR/spark-out-N) (snappy, like tusk)

The logs are generated once with `tusk datagen clickstream --seed 1` (kept in WORKDIR/logs and
reused while the parameters are the same) and read once before the runs, so every run sees a
warm page cache.  Runs alternate tusk, Spark, tusk, Spark ...

Measured per run:
  wall s       the child process's wall time, process start included (for Spark: Python and JVM
               start, SparkSession creation, the query, the write, and the shutdown)
  in-engine s  Spark only: measured inside the Spark script, from reading the CSV to the end of
               the Parquet write (session start and shutdown excluded)
  peak memory  the process tree's memory: the largest sum, over the child and all its
               descendants (Spark: python → java, plus anything the JVM forks), of their
               proportional set sizes (Pss in /proc/PID/smaps_rollup), sampled every 100 ms by
               walking /proc/*/stat for the tree.  PSS, not RSS: the JVM forks short-lived
               children (Hadoop's local file system shells out), and a fork shares its parent's
               pages, so a sum of RSS would count a 4 GB heap twice.  The table also gives the
               largest single process's high-water mark (VmHWM, exact); for tusk it equals
               os.wait4's ru_maxrss, which Linux reports in KiB.
Row counts: tusk's from OUTPUT/{train,test}/_manifest.json, Spark's by reading its output back
(not timed).  They must match exactly: the SQL is deterministic (hash-sampled negatives).

Setup (pyspark 4.0.1 runs on the machine's Java 17):

    python3 -m venv /root/.cache/tusk/spark-venv
    /root/.cache/tusk/spark-venv/bin/pip install pyspark==4.0.1

Run (markdown table on stdout, progress on stderr):

    python3 bench/clickstream_sql_bench.py [--events 10000000] [--users 100000] [--items 20000]
        [--days 7] [--negatives 4] [--runs 1] [--tusk PATH] [--workdir DIR]
        [--spark-only | --tusk-only] [--spark-python PATH] [--compare-content] [--json out.json]

The tusk binary: --tusk PATH, else $TUSK_BIN, else /root/.cache/tusk/target/release/tusk, else
target/release/tusk in this repository (it is also needed with --spark-only, to generate the
logs).  The Python for Spark: --spark-python, else this Python if it imports pyspark, else
/root/.cache/tusk/spark-venv/bin/python.  --compare-content also compares the two outputs row
by row (all columns) in one more Spark job after the runs (not timed).
"""

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPARK_SCRIPT = os.path.join(REPO, "bench", "spark", "clickstream.py")
SQL_FILE = os.path.join(REPO, "crates", "tusk-preprocess", "sql", "clickstream.sql")
SEED = 42  # tusk's default --seed for the negative sampler
DATAGEN_SEED = 1
DRIVER_MEMORY = "4g"
SHUFFLE_PARTITIONS = 4
PAGE = os.sysconf("SC_PAGE_SIZE")
VENV_PYTHON = "/root/.cache/tusk/spark-venv/bin/python"
INSTALL_HINT = ("python3 -m venv /root/.cache/tusk/spark-venv && "
                "/root/.cache/tusk/spark-venv/bin/pip install pyspark==4.0.1")


def log(*a):
    print(*a, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- process-tree memory sampling

def _proc_table():
    """{pid: ppid} for every process."""
    table = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        # the command name is in parentheses and may hold spaces: fields after the last ')'
        fields = stat[stat.rfind(")") + 2:].split()
        table[int(name)] = int(fields[1])
    return table


def _tree(root):
    children = {}
    for pid, ppid in _proc_table().items():
        children.setdefault(ppid, []).append(pid)
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, ()))
    return out


def _rss_bytes(pid):
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * PAGE
    except (OSError, IndexError, ValueError):
        return 0


def _pss_bytes(pid):
    """Proportional set size: shared pages split among their sharers, so a tree's PSS adds up
    (a forked child shares its parent's pages copy-on-write; summing RSS would count them twice).
    Falls back to RSS where /proc/PID/smaps_rollup is missing (Linux < 4.14)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return _rss_bytes(pid)


def _hwm_bytes(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _comm(pid):
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return "?"


class TreeSampler(threading.Thread):
    """Every `interval` s: the summed PSS (and, for reference, RSS) of `root` and all its
    descendants, and each process's VmHWM."""

    def __init__(self, root, interval=0.1):
        super().__init__(daemon=True)
        self.root, self.interval = root, interval
        self.peak_pss = 0
        self.peak_rss = 0
        self.peak_hwm = {}  # pid → (comm, bytes)
        self.seen = set()  # names of every process seen in the tree
        self.stop = threading.Event()

    def run(self):
        while not self.stop.is_set():
            pss = rss = 0
            for pid in _tree(self.root):
                comm = _comm(pid)  # read every time: bash scripts exec into java
                self.seen.add(comm)
                pss += _pss_bytes(pid)
                rss += _rss_bytes(pid)
                hwm = _hwm_bytes(pid)
                if hwm > self.peak_hwm.get(pid, ("", 0))[1]:
                    self.peak_hwm[pid] = (comm, hwm)
            self.peak_pss = max(self.peak_pss, pss)
            self.peak_rss = max(self.peak_rss, rss)
            self.stop.wait(self.interval)

    def largest_hwm(self):
        return max(self.peak_hwm.values(), key=lambda v: v[1], default=("?", 0))


def run_measured(cmd, log_path, env=None):
    """Run cmd; return dict(rc, wall_s, peak_tree_mb, largest process VmHWM, ru_maxrss_mb)."""
    with open(log_path, "wb") as out:
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
        sampler = TreeSampler(p.pid)
        sampler.start()
        _, status, ru = os.wait4(p.pid, 0)
        wall = time.perf_counter() - t0
        sampler.stop.set()
        sampler.join()
    p.returncode = os.waitstatus_to_exitcode(status)
    comm, hwm = sampler.largest_hwm()
    return {
        "rc": p.returncode,
        "wall_s": wall,
        "peak_tree_mb": sampler.peak_pss / 1e6,
        "peak_tree_rss_sum_mb": sampler.peak_rss / 1e6,
        "tree_processes": sorted(sampler.seen),
        "largest_hwm_mb": hwm / 1e6,
        "largest_hwm_process": comm,
        # Linux: ru_maxrss is the child's own peak resident set in KiB (not its descendants')
        "ru_maxrss_mb": ru.ru_maxrss * 1024 / 1e6,
        "user_s": ru.ru_utime,
        "sys_s": ru.ru_stime,
    }


def tail(path, n=30):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError:
        return ""


# ------------------------------------------------------------------------------------ helpers

def find_tusk(arg):
    for cand in (arg, os.environ.get("TUSK_BIN"), "/root/.cache/tusk/target/release/tusk",
                 os.path.join(REPO, "target", "release", "tusk")):
        if cand and os.path.isfile(cand) and os.access(cand, os.X_OK):
            return cand
    sys.exit("error: no tusk binary (give --tusk PATH or set TUSK_BIN; build with "
             "`cargo build --release`)")


def find_spark_python(arg):
    cands = [arg] if arg else [sys.executable, VENV_PYTHON]
    for py in cands:
        if py and os.path.exists(py):
            r = subprocess.run([py, "-c", "import pyspark; print(pyspark.__version__)"],
                               capture_output=True, text=True)
            if r.returncode == 0:
                return py, r.stdout.strip()
    sys.exit("error: pyspark is not installed (looked in: " + ", ".join(c for c in cands if c) +
             ").\nInstall it with:\n    " + INSTALL_HINT)


def dir_bytes(path):
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            total += os.path.getsize(os.path.join(root, f))
    return total


def warm(path):
    """Read every file once so the runs start from the same (warm) page cache."""
    for root, _, files in os.walk(path):
        for f in files:
            with open(os.path.join(root, f), "rb") as fh:
                while fh.read(1 << 24):
                    pass


def generate(tusk, a, logs):
    params = {"users": a.users, "items": a.items, "events": a.events, "days": a.days,
              "seed": DATAGEN_SEED, "tusk": os.path.realpath(tusk)}
    stamp = logs + ".params.json"
    if os.path.exists(os.path.join(logs, "_SUCCESS")) and os.path.exists(stamp):
        with open(stamp) as f:
            if json.load(f) == params:
                log(f"reusing logs in {logs}")
                return None
    shutil.rmtree(logs, ignore_errors=True)
    cmd = [tusk, "datagen", "clickstream", "--out", logs, "--users", str(a.users), "--items",
           str(a.items), "--events", str(a.events), "--days", str(a.days), "--seed", str(DATAGEN_SEED)]
    log("$ " + " ".join(cmd))
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"error: datagen failed:\n{r.stdout}{r.stderr}")
    secs = time.perf_counter() - t0
    log((r.stdout + r.stderr).strip())
    with open(stamp, "w") as f:
        json.dump(params, f)
    return secs


def tusk_rows(out):
    rows = {}
    for split in ("train", "test"):
        with open(os.path.join(out, split, "_manifest.json")) as f:
            rows[split] = json.load(f)["records"]
    return rows


def machine_info(tusk, spark_py):
    info = {"nproc": os.cpu_count(), "cpu": platform.processor() or "?", "os": platform.platform()}
    try:
        with open("/proc/cpuinfo") as f:
            m = re.search(r"^model name\s*:\s*(.+)$", f.read(), re.M)
            if m:
                info["cpu"] = m.group(1).strip()
    except OSError:
        pass
    try:
        with open("/proc/meminfo") as f:
            info["mem_gib"] = round(int(f.readline().split()[1]) / 2**20, 1)
    except (OSError, ValueError, IndexError):
        pass
    try:
        info["nproc"] = int(subprocess.run(["nproc"], capture_output=True, text=True).stdout)
    except (OSError, ValueError):
        pass
    if tusk:
        info["tusk"] = subprocess.run([tusk, "--version"], capture_output=True, text=True).stdout.strip()
    if spark_py:
        r = subprocess.run(["java", "-version"], capture_output=True, text=True)
        info["java"] = (r.stderr or r.stdout).splitlines()[0] if (r.stderr or r.stdout) else "?"
    return info


def fmt(x, nd=1):
    return "–" if x is None else f"{x:.{nd}f}"


# --------------------------------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser(description="tusk vs Spark local[2] on the clickstream SQL pipeline")
    ap.add_argument("--events", type=int, default=10_000_000)
    ap.add_argument("--users", type=int, default=100_000)
    ap.add_argument("--items", type=int, default=20_000)
    ap.add_argument("--days", type=int, default=7)
    ap.add_argument("--negatives", type=int, default=4)
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--tusk")
    ap.add_argument("--workdir", default="/tmp/tusk-clickstream-bench")
    only = ap.add_mutually_exclusive_group()
    only.add_argument("--spark-only", action="store_true")
    only.add_argument("--tusk-only", action="store_true")
    ap.add_argument("--spark-python")
    ap.add_argument("--master", default="local[2]")
    ap.add_argument("--shuffle-partitions", type=int, default=SHUFFLE_PARTITIONS,
                    help="spark.sql.shuffle.partitions (default %(default)s)")
    ap.add_argument("--compare-content", action="store_true",
                    help="after the runs, compare the last tusk and Spark outputs row by row (Spark job, not timed)")
    ap.add_argument("--keep-outputs", action="store_true", help="keep every run's output (default: the last)")
    ap.add_argument("--json", help="also write all measurements here")
    a = ap.parse_args()

    tusk = find_tusk(a.tusk)
    spark_py, pyspark_version = (None, None) if a.tusk_only else find_spark_python(a.spark_python)
    os.makedirs(a.workdir, exist_ok=True)
    logs = os.path.join(a.workdir, "logs")

    datagen_s = generate(tusk, a, logs)
    logs_bytes = dir_bytes(logs)
    log(f"logs: {logs_bytes / 1e9:.2f} GB under {logs}; warming the page cache")
    warm(logs)

    translations = None
    if spark_py:
        r = subprocess.run([spark_py, SPARK_SCRIPT, "--print-sql", "--negatives", str(a.negatives),
                            "--seed", str(SEED)], capture_output=True, text=True, check=True)
        translations = r.stdout.strip().splitlines()[-1].removeprefix("-- translations: ").split("; ")

    results = {"tusk": [], "spark": []}
    systems = [s for s, skip in (("tusk", a.spark_only), ("spark", a.tusk_only)) if not skip]
    for n in range(1, a.runs + 1):
        for system in systems:
            out = os.path.join(a.workdir, f"{system}-out-{n}")
            shutil.rmtree(out, ignore_errors=True)
            logf = os.path.join(a.workdir, f"{system}-{n}.log")
            if system == "tusk":
                cmd = [tusk, "preprocess", "clickstream", "--input", logs, "--output", out,
                       "--negatives", str(a.negatives), "--seed", str(SEED), "--format", "parquet",
                       "--shards", "2"]
            else:
                res_json = os.path.join(a.workdir, f"spark-{n}.json")
                if os.path.exists(res_json):
                    os.remove(res_json)
                cmd = [spark_py, SPARK_SCRIPT, "--input", logs, "--output", out,
                       "--negatives", str(a.negatives), "--seed", str(SEED), "--master", a.master,
                       "--driver-memory", DRIVER_MEMORY, "--shuffle-partitions", str(a.shuffle_partitions),
                       "--json", res_json]
            log(f"run {n}/{a.runs} {system}: $ " + " ".join(cmd))
            m = run_measured(cmd, logf)
            if m["rc"] != 0:
                sys.exit(f"error: {system} failed (exit {m['rc']}); log {logf}:\n{tail(logf)}")
            if system == "tusk":
                m["rows"] = tusk_rows(out)
            else:
                with open(res_json) as f:
                    m.update(json.load(f))
            m["out_bytes"] = dir_bytes(out)
            log(f"  {system}: {m['wall_s']:.1f} s wall, rows {m['rows']}, peak tree PSS "
                f"{m['peak_tree_mb']:.0f} MB (RSS sum {m['peak_tree_rss_sum_mb']:.0f} MB), processes "
                f"{', '.join(m['tree_processes'])}, log {logf}")
            results[system].append(m)
            if not a.keep_outputs and n > 1:
                shutil.rmtree(os.path.join(a.workdir, f"{system}-out-{n - 1}"), ignore_errors=True)

    # ---- row counts
    mismatch = None
    if results["tusk"] and results["spark"]:
        t, s = results["tusk"][-1]["rows"], results["spark"][-1]["rows"]
        diff = {k: s.get(k, 0) - t.get(k, 0) for k in sorted(set(t) | set(s))}
        if any(diff.values()):
            mismatch = diff
            log(f"WARNING: row counts differ (Spark − tusk per split): {diff}")

    comparison = None
    if a.compare_content and results["tusk"] and results["spark"]:
        cmp_json = os.path.join(a.workdir, "compare.json")
        log("comparing outputs row by row (Spark job, not timed)")
        subprocess.run([spark_py, SPARK_SCRIPT, "--output", os.path.join(a.workdir, f"spark-out-{a.runs}"),
                        "--compare-tusk", os.path.join(a.workdir, f"tusk-out-{a.runs}"),
                        "--driver-memory", DRIVER_MEMORY, "--master", a.master, "--json", cmp_json],
                       check=True, stdout=subprocess.DEVNULL,
                       stderr=open(os.path.join(a.workdir, "compare.log"), "wb"))
        with open(cmp_json) as f:
            comparison = json.load(f)

    # ---- report
    info = machine_info(tusk, spark_py)
    if results["spark"]:
        info["spark"] = results["spark"][-1]["spark_version"]

    def best(rs, key):
        return min(r[key] for r in rs) if rs and rs[0].get(key) is not None else None

    print(f"## tusk vs Spark: clickstream SQL pipeline, {a.events:,} events\n")
    print(f"Input: `tusk datagen clickstream --users {a.users} --items {a.items} --events {a.events} "
          f"--days {a.days} --seed {DATAGEN_SEED}` → {logs_bytes / 1e9:.2f} GB of CSV in {a.days} files"
          + (f" (generated in {datagen_s:.1f} s)" if datagen_s is not None else "") +
          f"; negatives {a.negatives}, seed {SEED}; output Parquet (snappy), split train/test.")
    print(f"Runs: {a.runs} per system (alternating), best wall and in-engine time shown, memory the "
          f"largest over the runs.\n")
    print("| system | wall s | in-engine s | rows train | rows test | peak memory MB (tree PSS) | "
          "largest process VmHWM MB | output MB | speed-up of tusk (Spark wall / tusk wall) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    tw, sw = best(results["tusk"], "wall_s"), best(results["spark"], "wall_s")
    for system, label in (("tusk", "tusk (DataFusion)"), ("spark", f"Spark {a.master}")):
        rs = results[system]
        if not rs:
            continue
        last = rs[-1]
        hwm = max(rs, key=lambda r: r["largest_hwm_mb"])
        speed = f"{sw / tw:.2f}x" if (tw and sw and system == "tusk") else ("baseline" if tw and sw else "–")
        print(f"| {label} | {fmt(best(rs, 'wall_s'))} | {fmt(best(rs, 'query_s'))} | "
              f"{last['rows'].get('train', 0):,} | {last['rows'].get('test', 0):,} | "
              f"{max(r['peak_tree_mb'] for r in rs):.0f} | {hwm['largest_hwm_mb']:.0f} "
              f"({hwm['largest_hwm_process']}) | {last['out_bytes'] / 1e6:.0f} | {speed} |")
    print()
    for system, rs in results.items():
        if len(rs) > 1:
            print(f"{system} runs: " + ", ".join(
                f"{r['wall_s']:.1f} s" + (f" (in-engine {r['query_s']:.1f} s)" if r.get("query_s") else "")
                for r in rs))
    if a.runs > 1:
        print()
    if results["tusk"] and results["spark"]:
        if mismatch:
            print(f"**WARNING: row counts differ** (Spark − tusk): {mismatch}\n")
        else:
            print("Row counts per split: identical.")
        if comparison:
            print(f"Row-by-row comparison (all columns, multiset difference): {json.dumps(comparison)}")
        print()
    if results["spark"]:
        s = results["spark"][-1]
        print(f"Spark settings: master {a.master}, spark.driver.memory {DRIVER_MEMORY} "
              f"(JVM max heap {s['jvm_max_heap_mib']:.0f} MiB), spark.sql.shuffle.partitions "
              f"{a.shuffle_partitions}, spark.sql.session.timeZone UTC, UI off; session start "
              f"{s['session_s']:.1f} s (in wall, not in in-engine).")
        print("Spark dialect translations of clickstream.sql (applied programmatically): "
              + "; ".join(f"`{t}`" for t in translations) + ".")
    print("Peak memory (tree PSS) = the largest sum, over the child process and all its descendants, of "
          "their proportional set sizes (/proc/PID/smaps_rollup), sampled every 100 ms; VmHWM = the "
          "largest single process's own resident high-water mark (exact, not sampled).")
    if results["tusk"]:
        t = results["tusk"][-1]
        print("tusk: os.wait4 ru_maxrss " + ", ".join(f"{r['ru_maxrss_mb']:.0f}" for r in results["tusk"])
              + " MB, CPU " + ", ".join(f"{r['user_s'] + r['sys_s']:.1f}" for r in results["tusk"])
              + " s (user+sys) per run; it also counts event types in a first pass over the CSV.")
    print()
    parts = [f"nproc {info['nproc']}", f"CPU {info['cpu']}"]
    if "mem_gib" in info:
        parts.append(f"{info['mem_gib']} GiB RAM")
    parts.append(info["os"])
    if "tusk" in info:
        parts.append(f"`{info['tusk']}` ({os.path.realpath(tusk)})")
    if "java" in info:
        parts.append(info["java"])
    if "spark" in info:
        parts.append(f"Spark {info['spark']} (pyspark {pyspark_version})")
    print("Machine: " + ", ".join(parts))

    if a.json:
        with open(a.json, "w") as f:
            json.dump({"args": vars(a), "logs_bytes": logs_bytes, "datagen_s": datagen_s,
                       "results": results, "row_diff": mismatch, "comparison": comparison,
                       "translations": translations, "machine": info}, f, indent=1)


if __name__ == "__main__":
    main()
