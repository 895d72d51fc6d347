"""Storage: write and read MB/s of one big file on each backend against the usual tool, and
`tusk demo` on HDFS with a DataNode stopped mid-run against an undisturbed run.

1. `tusk fs cp` of a SIZE MB file (random bytes) into and out of
   - HDFS (testing/minidfs, 128 MB blocks) with 1 DataNode and with 3 (replication 3), against
     Hadoop's own CLI (`hdfs dfs -put/-get`: org.apache.hadoop.fs.FsShell on the MiniDFS
     classpath);
   - S3 (moto's server), against boto3's transfer manager (`upload_file`/`download_file`,
     what `aws s3 cp` runs);
   - local disk, against `cp`.
   Runs alternate tusk and the peer, R rounds; the table has the best MB/s of each.
2. `tusk demo --storage hdfs://…` on 3 DataNodes (1 MB blocks) undisturbed, then with
   DataNode 0 stopped 10 s in: the summary's metrics and the wall time.

    python bench/storage_bench.py [--size-mb 1024] [--rounds 2] [--tusk PATH] [--skip-demo]
        [--only hdfs,s3,local]

Needs Java 17 + Maven, the .ci/run venv (moto, boto3) and a release build of tusk.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MiniDfs:
    """testing/minidfs with N DataNodes and the given block size; obeys fault commands."""

    def __init__(self, datanodes, block, flags=""):
        self.proc = subprocess.Popen(
            ["mvn", "-q", "-B", "-f", os.path.join(REPO, "testing/minidfs"), "compile",
             "exec:java", ("-Dexec.args=%d %d " % (datanodes, block)) + flags],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            text=True, start_new_session=True)
        self.lines = []
        self.cv = threading.Condition()

        def read():
            for line in self.proc.stdout:
                with self.cv:
                    self.lines.append(line.strip())
                    self.cv.notify_all()
        threading.Thread(target=read, daemon=True).start()
        ready = self.wait_for(lambda l: l.startswith("Ready! "), 600)
        self.url = "hdfs://127.0.0.1:%s" % re.search(r"hdfs=(\d+)", ready).group(1)

    def wait_for(self, pred, timeout):
        deadline = time.time() + timeout
        with self.cv:
            while True:
                for i, l in enumerate(self.lines):
                    if pred(l):
                        del self.lines[: i + 1]
                        return l
                left = deadline - time.time()
                if left <= 0 or self.proc.poll() is not None:
                    self.stop()
                    sys.exit("MiniDFS did not answer")
                self.cv.wait(left)

    def command(self, cmd):
        self.proc.stdin.write(cmd + "\n")
        self.proc.stdin.flush()
        reply = self.wait_for(lambda l: l.startswith("ok") or l.startswith("error"), 120)
        if not reply.startswith("ok"):
            sys.exit("MiniDFS refused %s: %s" % (cmd, reply))

    def stop(self):
        try:
            self.proc.stdin.write("\n")
            self.proc.stdin.flush()
            self.proc.wait(timeout=30)
        except Exception:
            try:
                os.killpg(self.proc.pid, 9)
            except ProcessLookupError:
                pass
            self.proc.wait(timeout=15)


def timed(cmd, env=None, timeout=1800):
    t = time.time()
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                         env={**os.environ, **(env or {})})
    if out.returncode != 0:
        sys.exit("failed: %s\n%s" % (" ".join(cmd)[-300:], out.stderr[-3000:]))
    return time.time() - t, out.stdout + out.stderr


def hadoop_classpath():
    f = tempfile.NamedTemporaryFile(suffix=".cp", delete=False)
    f.close()
    subprocess.run(["mvn", "-q", "-B", "-f", os.path.join(REPO, "testing/minidfs"),
                    "dependency:build-classpath", "-Dmdep.outputFile=" + f.name], check=True)
    cp = open(f.name).read().strip()
    os.unlink(f.name)
    # An empty client configuration first on the classpath (the test jars on it name a
    # core-site.xml that FsShell then fails to load).
    conf = tempfile.mkdtemp(prefix="tusk-bench-conf-")
    for name in ("core-site.xml", "hdfs-site.xml"):
        with open(os.path.join(conf, name), "w") as out:
            out.write('<?xml version="1.0"?>\n<configuration></configuration>\n')
    return conf + ":" + cp + ":" + os.path.join(REPO, "testing/minidfs/target/classes")


def best_mbs(size_mb, runs):
    return size_mb / min(runs)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mb", type=int, default=1024)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--tusk", default=os.path.expanduser("~/.cache/tusk/target/release/tusk"))
    ap.add_argument("--skip-demo", action="store_true")
    ap.add_argument("--only", default="hdfs,s3,local",
                    help="backends to measure, comma-separated: hdfs, s3, local")
    a = ap.parse_args()
    only = set(a.only.split(","))
    tusk = a.tusk
    work = tempfile.mkdtemp(prefix="tusk-storage-bench-")
    rows = []
    try:
        src = os.path.join(work, "big.bin")
        with open(src, "wb") as f:
            for _ in range(a.size_mb):
                f.write(os.urandom(1 << 20))
        cp = hadoop_classpath()
        fs_shell = ["java", "-Xmx1g", "-cp", cp, "org.apache.hadoop.fs.FsShell"]

        def roundtrip(name, up_tusk, down_tusk, up_peer, down_peer, peer_name, env=None):
            t_up, t_down, p_up, p_down = [], [], [], []
            for r in range(a.rounds):
                for f in (os.path.join(work, "back.bin"), os.path.join(work, "back-peer.bin")):
                    if os.path.exists(f):
                        os.unlink(f)
                t_up.append(timed(up_tusk(r), env)[0])
                p_up.append(timed(up_peer(r), env)[0])
                t_down.append(timed(down_tusk(r), env)[0])
                p_down.append(timed(down_peer(r), env)[0])
            for what, t, p in (("write", t_up, p_up), ("read", t_down, p_down)):
                rows.append((name, what, best_mbs(a.size_mb, t), peer_name, best_mbs(a.size_mb, p)))
            print(rows[-2], rows[-1], flush=True)

        back, back_peer = os.path.join(work, "back.bin"), os.path.join(work, "back-peer.bin")
        for dns in ((1, 3) if "hdfs" in only else ()):
            dfs = MiniDfs(dns, 134217728)
            try:
                u = dfs.url
                roundtrip(
                    "HDFS, %d DataNode%s" % (dns, "s" if dns > 1 else ""),
                    lambda r: [tusk, "fs", "cp", src, "%s/t%d.bin" % (u, r)],
                    lambda r: [tusk, "fs", "cp", "%s/t%d.bin" % (u, r), back],
                    lambda r: fs_shell + ["-fs", u, "-put", src, "/p%d.bin" % r],
                    lambda r: fs_shell + ["-fs", u, "-get", "/p%d.bin" % r, back_peer],
                    "hdfs dfs -put/-get")
            finally:
                dfs.stop()

        if "s3" in only:
            # S3: moto's server; the peer is boto3's transfer manager (aws s3 cp's engine).
            port = free_port()
            moto = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p",
                                     str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                    start_new_session=True)
            try:
                endpoint = "http://127.0.0.1:%d" % port
                for _ in range(100):
                    try:
                        socket.create_connection(("127.0.0.1", port), 0.2).close()
                        break
                    except OSError:
                        time.sleep(0.1)
                env = {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing",
                       "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1"}
                boto = ("import boto3,sys; s3=boto3.client('s3',endpoint_url=%r,aws_access_key_id='testing',"
                        "aws_secret_access_key='testing',region_name='us-east-1'); " % endpoint)
                subprocess.run([sys.executable, "-c", boto + "s3.create_bucket(Bucket='bench')"], check=True)
                roundtrip(
                    "S3 (moto server)",
                    lambda r: [tusk, "fs", "cp", src, "s3://bench/t%d.bin" % r],
                    lambda r: [tusk, "fs", "cp", "s3://bench/t%d.bin" % r, back],
                    lambda r: [sys.executable, "-c", boto + "s3.upload_file(%r,'bench','p%d.bin')" % (src, r)],
                    lambda r: [sys.executable, "-c", boto + "s3.download_file('bench','p%d.bin',%r)" % (r, back_peer)],
                    "boto3 upload_file/download_file", env)
            finally:
                os.killpg(moto.pid, 9)
                moto.wait()

        if "local" in only:
            roundtrip(
                "local disk",
                lambda r: [tusk, "fs", "cp", src, os.path.join(work, "t%d.bin" % r)],
                lambda r: [tusk, "fs", "cp", os.path.join(work, "t%d.bin" % r), back],
                lambda r: ["cp", src, os.path.join(work, "p%d.bin" % r)],
                lambda r: ["cp", os.path.join(work, "p%d.bin" % r), back_peer],
                "cp")

        print("\n1. One %d MB file, best of %d rounds (MB/s; higher is better)" % (a.size_mb, a.rounds))
        print("| backend | direction | tusk fs cp | peer | peer MB/s | tusk / peer |")
        print("|---|---|---:|---|---:|---:|")
        for name, what, t, peer, p in rows:
            print("| %s | %s | %.0f | %s | %.0f | %.2f× |" % (name, what, t, peer, p, t / p))

        if not a.skip_demo:
            # HDFS's default dead-node interval (10.5 min), as on a real cluster: the NameNode
            # goes on placing blocks on the stopped DataNode and the writer routes around it.
            dfs = MiniDfs(3, 1 << 20, "slow-dead")
            try:
                res = []
                # A first, unreported run warms the cluster's JVMs up (it took 22 s against
                # 16 s for the same run after it).
                timed([tusk, "demo", "--storage", dfs.url + "/demo-warmup"])
                for disturb in (False, True):
                    url = "%s/demo-%s" % (dfs.url, "fault" if disturb else "calm")
                    timer = None
                    if disturb:
                        timer = threading.Timer(10.0, dfs.command, ["stop-datanode 0"])
                        timer.start()
                    wall, out = timed([tusk, "demo", "--storage", url])
                    if timer:
                        timer.join()
                    auc = re.findall(r"AUC[^\n]*", out)
                    res.append((disturb, wall, auc[-1] if auc else "?", out))
                print("\n2. tusk demo on HDFS (3 DataNodes, 1 MB blocks)")
                print("| run | wall (s) | last AUC line of the summary |")
                print("|---|---:|---|")
                for disturb, wall, auc, _ in res:
                    print("| %s | %.1f | %s |" % ("DataNode 0 stopped at 10 s" if disturb else "undisturbed", wall, auc.strip()))
                same = res[0][2] == res[1][2]
                print("same metrics: %s; time penalty %.1f s" % (same, res[1][1] - res[0][1]))
            finally:
                dfs.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
