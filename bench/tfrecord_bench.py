#!/usr/bin/env python3
"""tusk vs TensorFlow on one TFRecord file of tf.train.Example, in one run.

Make a test file (~1 GB of recommendation-style samples, TF's writer framing):

    TF_CPP_MIN_LOG_LEVEL=3 /root/.cache/tusk/venv/bin/python bench/tfrecord_bench.py \
        --make /tmp/bench.tfrecord --size-mb 1000

Benchmark it (prints a markdown table on stdout, progress on stderr):

    TF_CPP_MIN_LOG_LEVEL=3 /root/.cache/tusk/venv/bin/python bench/tfrecord_bench.py \
        /tmp/bench.tfrecord [--tusk target/release/tusk] [--runs 3] [--tf-only] [--json out.json]

Tasks, each run --runs times (best and median reported):

  framing   read every record and check both masked CRC32Cs, no Example parse
            TF:   tf.data.TFRecordDataset(FILE, buffer_size=...).batch(1024)
            tusk: tusk records stats FILE --framing-only
  parse     the above plus parse every Example
            TF:   ... .batch(1024).map(tf.io.parse_example(spec), AUTOTUNE).prefetch
                  (FixedLenFeature for the scalar features, VarLenFeature for the id lists)
            tusk: tusk records stats FILE

TF runs in a child Python process per task (timed inside it, after `import
tensorflow`, graph construction included); tusk is timed as a subprocess (wall
time, process start included).  Peak RSS and CPU time of each child come from
os.wait4.  The file is read once first so every run sees a warm page cache.
TF keeps its default thread pools (inter/intra op = 0 = one thread per core,
tf.data autotuning); the table notes the values.

The tusk binary: --tusk PATH, else $TUSK_BIN, else target/release/tusk in this
repository.  Without it, use --tf-only.
"""

import argparse
import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N_DENSE = 10
CATS = ("cat_a", "cat_b", "cat_c")
SCHEMA_DOC = {
    "user_id": "int64 [1]", "item_id": "int64 [1]", "label": "float [1]",
    "dense_0..dense_9": "float [1] each", "cat_a, cat_b, cat_c": "int64, 1-5 ids each",
    "context": "bytes [1], 5-16 bytes",
}


def log(*a):
    print(*a, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- make

def make_file(path, size_mb, pool_size, seed):
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    log("building a pool of %d Examples ..." % pool_size)
    devices = [b"android", b"ios", b"web", b"tv"]
    countries = [b"US", b"DE", b"JP", b"BR", b"IN", b"FR", b"GB", b"KR"]
    payloads = []
    for _ in range(pool_size):
        f = {
            "user_id": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(rng.integers(1, 50_000_000))])),
            "item_id": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(rng.integers(1, 2_000_000))])),
            "label": tf.train.Feature(float_list=tf.train.FloatList(value=[float(rng.random() < 0.1)])),
            "context": tf.train.Feature(bytes_list=tf.train.BytesList(value=[
                devices[rng.integers(len(devices))] + b"|" + countries[rng.integers(len(countries))]
                + b"|" + b"v%d" % rng.integers(1, 40)])),
        }
        for i in range(N_DENSE):
            f["dense_%d" % i] = tf.train.Feature(float_list=tf.train.FloatList(value=[float(rng.normal())]))
        for name in CATS:
            n = int(rng.integers(1, 6))
            f[name] = tf.train.Feature(int64_list=tf.train.Int64List(
                value=[int(v) for v in rng.integers(0, 2**40, size=n)]))
        payloads.append(tf.train.Example(features=tf.train.Features(feature=f)).SerializeToString())

    # Frame the pool with TF's writer, then cut the framed bytes back into records.
    pool_file = path + ".pool.tmp"
    with tf.io.TFRecordWriter(pool_file) as w:
        for p in payloads:
            w.write(p)
    with open(pool_file, "rb") as fh:
        blob = fh.read()
    os.remove(pool_file)
    framed = []
    off = 0
    for p in payloads:
        n = 12 + len(p) + 4
        assert int.from_bytes(blob[off:off + 8], "little") == len(p)
        framed.append(blob[off:off + n])
        off += n
    assert off == len(blob)

    target = int(size_mb * 1e6)
    written = 0
    records = 0
    log("writing %s (%d MB) by cycling through the pool in shuffled order ..." % (path, size_mb))
    with open(path, "wb") as out:
        while written < target:
            order = rng.permutation(len(framed))
            chunk = []
            for i in order:
                chunk.append(framed[i])
                written += len(framed[i])
                records += 1
                if written >= target:
                    break
            out.write(b"".join(chunk))
    meta = {"records": records, "bytes": written, "pool": pool_size, "seed": seed,
            "schema": SCHEMA_DOC, "made_by": "bench/tfrecord_bench.py --make, TensorFlow %s" % tf.__version__}
    with open(path + ".json", "w") as fh:
        json.dump(meta, fh, indent=2)
        fh.write("\n")
    log("wrote %d records, %d bytes in %.1f s (+ %s.json)" % (records, written, time.perf_counter() - t0, path))


# --------------------------------------------------------------------------- TF worker (child process)

def tf_spec(tf):
    spec = {
        "user_id": tf.io.FixedLenFeature([], tf.int64),
        "item_id": tf.io.FixedLenFeature([], tf.int64),
        "label": tf.io.FixedLenFeature([], tf.float32),
        "context": tf.io.FixedLenFeature([], tf.string),
    }
    for i in range(N_DENSE):
        spec["dense_%d" % i] = tf.io.FixedLenFeature([], tf.float32)
    for name in CATS:
        spec[name] = tf.io.VarLenFeature(tf.int64)
    return spec


def tf_worker(args):
    import numpy as np
    import tensorflow as tf

    spec = tf_spec(tf)
    buf = int(args.buffer_size_mb * 2**20)
    AUTOTUNE = tf.data.AUTOTUNE

    @tf.autograph.experimental.do_not_convert
    def parse(b):
        return tf.io.parse_example(b, spec)

    def run_once():
        ds = tf.data.TFRecordDataset(args.file, buffer_size=buf).batch(args.batch)
        if args.task == "framing":
            # consume every record's bytes: sum of the string lengths
            @tf.autograph.experimental.do_not_convert
            def step(acc, b):
                return (acc[0] + tf.cast(tf.size(b), tf.int64),
                        acc[1] + tf.reduce_sum(tf.cast(tf.strings.length(b), tf.int64)))
        else:
            ds = ds.map(parse, num_parallel_calls=AUTOTUNE).prefetch(AUTOTUNE)

            # touch every output tensor so nothing can be pruned
            @tf.autograph.experimental.do_not_convert
            def step(acc, b):
                n = tf.cast(tf.shape(b["label"])[0], tf.int64)
                vals = tf.add_n([tf.cast(tf.size(b[k].values if isinstance(b[k], tf.SparseTensor) else b[k]),
                                         tf.int64) for k in sorted(b)])
                return acc[0] + n, acc[1] + vals
        n, work = ds.reduce((np.int64(0), np.int64(0)), step)
        return int(n), int(work)

    runs = []
    for _ in range(args.runs):
        r0 = resource.getrusage(resource.RUSAGE_SELF)
        t0 = time.perf_counter()
        n, work = run_once()
        dt = time.perf_counter() - t0
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
        runs.append({"seconds": dt, "cpu_seconds": cpu, "records": n, "check": work})
        log("  TF %-8s %.3f s  (%d records, cpu %.2f s)" % (args.task, dt, n, cpu))
    info = {
        "tf_version": tf.__version__,
        "inter_op": tf.config.threading.get_inter_op_parallelism_threads(),
        "intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
        "buffer_size": buf,
        "batch": args.batch,
    }
    print(json.dumps({"runs": runs, "info": info}))


# --------------------------------------------------------------------------- parent

def _vm_hwm_kib(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def run_child(cmd):
    """Run cmd; return (rc, wall seconds, rusage, peak RSS in MiB, stdout text, stderr text).

    Peak RSS: the child's ru_maxrss from wait4 is at least this (parent) process's
    own peak RSS, because Linux carries the pre-exec address space's high-water
    mark across fork+exec.  So a thread also samples VmHWM of the child's own
    address space every 5 ms; wait4's figure is used only when it exceeds our
    own peak (then it is the child's).
    """
    own_peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, stdout=out, stderr=err)
        sampled = [0]
        done = threading.Event()

        def sample():
            while not done.is_set():
                v = _vm_hwm_kib(p.pid)
                if v is not None:
                    sampled[0] = max(sampled[0], v)
                done.wait(0.005)

        th = threading.Thread(target=sample, daemon=True)
        th.start()
        _, status, ru = os.wait4(p.pid, 0)
        dt = time.perf_counter() - t0
        done.set()
        th.join()
        p.returncode = os.waitstatus_to_exitcode(status)
        peak_kib = sampled[0]
        if ru.ru_maxrss > own_peak_kib:
            peak_kib = max(peak_kib, ru.ru_maxrss)
        out.seek(0)
        err.seek(0)
        return (p.returncode, dt, ru, peak_kib / 1024.0,
                out.read().decode(errors="replace"), err.read().decode(errors="replace"))


def bench_tf(args, task):
    cmd = [sys.executable, os.path.abspath(__file__), args.file, "--_tf-worker", task,
           "--runs", str(args.runs), "--batch", str(args.batch), "--buffer-size-mb", str(args.buffer_size_mb)]
    log("TF %s: %d run(s) in one child process ..." % (task, args.runs))
    rc, _, _, peak_mb, out, err = run_child(cmd)
    for line in err.splitlines():
        if line.startswith("  TF "):
            log(line)
    if rc != 0:
        sys.exit("TF worker failed (rc %d):\n%s" % (rc, err[-3000:]))
    res = json.loads(out.strip().splitlines()[-1])
    res["peak_rss_mb"] = peak_mb
    return res


def record_counts(text):
    """Numbers printed next to the word 'record(s)' in tusk's output (a loose check)."""
    nums = re.findall(r"records?\W{0,5}([\d][\d_,]*)", text, re.I) + re.findall(r"([\d][\d_,]*)\W{0,5}records?", text, re.I)
    return sorted({int(re.sub(r"[_,]", "", x)) for x in nums})


def bench_tusk(args, task):
    cmd = [args.tusk, "records", "stats", args.file] + (["--framing-only"] if task == "framing" else [])
    log("tusk %s: %s" % (task, " ".join(cmd)))
    runs = []
    peak = 0.0
    first_out = None
    for _ in range(args.runs):
        rc, dt, ru, peak_mb, out, err = run_child(cmd)
        if rc != 0:
            sys.exit("tusk failed (rc %d): %s\n%s%s" % (rc, " ".join(cmd), out[-2000:], err[-2000:]))
        if first_out is None:
            first_out = out + err
        cpu = ru.ru_utime + ru.ru_stime
        peak = max(peak, peak_mb)
        runs.append({"seconds": dt, "cpu_seconds": cpu, "record_counts_seen": record_counts(out + err)})
        log("  tusk %-8s %.3f s  (cpu %.2f s)" % (task, dt, cpu))
    return {"runs": runs, "peak_rss_mb": peak, "output": first_out, "cmd": " ".join(cmd)}


def machine_info():
    model = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = "?"
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal"):
                    mem = "%.1f GiB" % (int(line.split()[1]) / 2**20)
    except OSError:
        pass
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_count": os.cpu_count(),
        "cpu_model": model,
        "mem_total": mem,
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


def warm_cache(path):
    t0 = time.perf_counter()
    buf = bytearray(1 << 20)  # small, to keep this process's own peak RSS low (see run_child)
    with open(path, "rb", buffering=0) as f:
        while f.readinto(buf):
            pass
    return time.perf_counter() - t0


def summarize(runs):
    secs = [r["seconds"] for r in runs]
    best = min(range(len(runs)), key=lambda i: secs[i])
    return secs[best], statistics.median(secs), runs[best]["cpu_seconds"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("file", nargs="?", help="TFRecord file to benchmark (made by --make)")
    ap.add_argument("--make", metavar="FILE", help="write a test file and exit (unless FILE is also given)")
    ap.add_argument("--size-mb", type=float, default=1000, help="size of the --make file in MB (1e6 bytes)")
    ap.add_argument("--pool", type=int, default=10000, help="distinct Examples in the --make file")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--tusk", default=os.environ.get("TUSK_BIN") or os.path.join(REPO, "target/release/tusk"),
                    help="tusk binary (default $TUSK_BIN or target/release/tusk)")
    ap.add_argument("--tf-only", action="store_true", help="skip tusk")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--buffer-size-mb", type=float, default=8, help="TFRecordDataset buffer_size")
    ap.add_argument("--json", metavar="OUT", help="also write the raw results here")
    ap.add_argument("--_tf-worker", dest="tf_worker", choices=["framing", "parse"], help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.tf_worker:
        args.task = args.tf_worker
        return tf_worker(args)
    if args.make:
        make_file(args.make, args.size_mb, args.pool, args.seed)
    if not args.file:
        if not args.make:
            ap.error("give a FILE to benchmark and/or --make FILE")
        return 0
    if not os.path.isfile(args.file):
        sys.exit("no such file: %s (make one with --make %s --size-mb 1000)" % (args.file, args.file))
    if not args.tf_only and not (os.path.isfile(args.tusk) and os.access(args.tusk, os.X_OK)):
        sys.exit("tusk binary not found or not executable: %s\n"
                 "build it (cargo build --release -p tusk-cli), pass --tusk PATH or set TUSK_BIN, "
                 "or run with --tf-only" % args.tusk)

    size = os.path.getsize(args.file)
    meta = {}
    if os.path.isfile(args.file + ".json"):
        with open(args.file + ".json") as f:
            meta = json.load(f)
    log("warming the page cache: %.1f s for %.0f MB" % (warm_cache(args.file), size / 1e6))

    results = {"file": args.file, "bytes": size, "meta": meta, "machine": machine_info(), "tf": {}, "tusk": {}}
    for task in ("framing", "parse"):
        results["tf"][task] = bench_tf(args, task)
    if not args.tf_only:
        for task in ("framing", "parse"):
            results["tusk"][task] = bench_tusk(args, task)

    # record count sanity checks
    n = results["tf"]["parse"]["runs"][0]["records"]
    for task in ("framing", "parse"):
        for r in results["tf"][task]["runs"]:
            if r["records"] != n:
                log("WARNING: TF %s counted %d records, TF parse %d" % (task, r["records"], n))
    if meta.get("records") not in (None, n):
        log("WARNING: TF counted %d records, %s.json says %d" % (n, args.file, meta["records"]))
    for task, res in results["tusk"].items():
        seen = res["runs"][0]["record_counts_seen"]
        if n not in seen:
            log("WARNING: tusk %s output does not mention %d records (TF's count); numbers next to "
                "'records' in it: %s" % (task, n, seen or "none"))

    print(render(results, args, n))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2, default=str)
    return 0


def render(results, args, n):
    size = results["bytes"]
    m = results["machine"]
    info = results["tf"]["parse"]["info"]
    label = {"framing": "read + CRC (no parse)", "parse": "read + CRC + parse Example"}
    rows = []
    tf_best = {}
    for task in ("framing", "parse"):
        best, med, cpu = summarize(results["tf"][task]["runs"])
        tf_best[task] = best
        rows.append(("TensorFlow", task, best, med, cpu, results["tf"][task]["peak_rss_mb"]))
    for task in ("framing", "parse"):
        if task in results["tusk"]:
            best, med, cpu = summarize(results["tusk"][task]["runs"])
            rows.append(("tusk", task, best, med, cpu, results["tusk"][task]["peak_rss_mb"]))
    rows.sort(key=lambda r: (r[1] != "framing", r[0] != "TensorFlow"))

    out = []
    out.append("## TFRecord read: tusk vs TensorFlow")
    out.append("")
    out.append("File: `%s`, %.1f MB, %d records (%.0f bytes/record)%s." % (
        results["file"], size / 1e6, n, size / max(n, 1),
        ", made by `--make` (pool %s, seed %s)" % (results["meta"].get("pool"), results["meta"].get("seed"))
        if results["meta"] else ""))
    out.append("Machine: %s, %d cores usable (nproc; os.cpu_count %s), %s RAM, Linux %s, Python %s, "
               "TensorFlow %s." % (m["cpu_model"], m["nproc"], m["cpu_count"], m["mem_total"], m["kernel"],
                                   m["python"], info["tf_version"]))
    out.append("TF settings: inter_op_parallelism_threads=%d, intra_op_parallelism_threads=%d (0 = default, one "
               "per core), TFRecordDataset buffer_size=%d, batch %d, parse via "
               "map(tf.io.parse_example, num_parallel_calls=AUTOTUNE) + prefetch(AUTOTUNE)." % (
                   info["inter_op"], info["intra_op"], info["buffer_size"], info["batch"]))
    out.append("%d runs each, warm page cache; MB = 10^6 bytes; rates from the best run; "
               "TF timed in-process after import, tusk as a whole subprocess." % args.runs)
    out.append("")
    out.append("| tool | task | best s | median s | records/s | MB/s | CPU s | peak RSS MB | speedup vs TF |")
    out.append("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for tool, task, best, med, cpu, rss in rows:
        speed = "1.00x" if tool == "TensorFlow" else "%.2fx" % (tf_best[task] / best)
        out.append("| %s | %s | %.3f | %.3f | %s | %.0f | %.2f | %.0f | %s |" % (
            tool, label[task], best, med, "{:,.0f}".format(n / best), size / 1e6 / best, cpu, rss, speed))
    out.append("")
    out.append("speedup = TF best seconds / tool best seconds for the same task. CPU s = user+sys of the best run "
               "(TF uses several threads). Peak RSS: whole child process (TF's includes the Python runtime "
               "and TensorFlow itself).")
    for task, res in results["tusk"].items():
        out.append("")
        out.append("`%s` printed (first run):" % res["cmd"])
        out.append("")
        out.append("```")
        text = res["output"].strip()
        out.append(text[-1500:] if text else "(nothing)")
        out.append("```")
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
