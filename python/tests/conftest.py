"""Fixtures: a real HDFS (testing/minidfs, the MiniDFSCluster the Rust tests use) and the tusk
CLI. Missing tools skip loudly, except under CI=true / TUSK_REQUIRE_HDFS=1, where they fail."""

import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def must_run(var: str) -> bool:
    return os.environ.get("CI") == "true" or os.environ.get(var) == "1"


def require(what: str, var: str, reason: str):
    if must_run(var):
        pytest.fail(f"{what} is required here (CI=true or {var}=1) but {reason}")
    pytest.skip(f"SKIPPED LOUDLY: {what}: {reason}")


class MiniDfs:
    def __init__(self, proc, rpc, http):
        self.proc, self.rpc, self.http = proc, rpc, http

    @property
    def hdfs(self) -> str:
        return f"hdfs://127.0.0.1:{self.rpc}"

    @property
    def webhdfs(self) -> str:
        return f"webhdfs://127.0.0.1:{self.http}"


@pytest.fixture(scope="session")
def minidfs():
    mvn = shutil.which("mvn")
    if mvn is None or shutil.which("java") is None:
        require("a real HDFS (MiniDFSCluster)", "TUSK_REQUIRE_HDFS", "mvn/java not found")
    proc = subprocess.Popen(
        [mvn, "-q", "-B", "-f", str(ROOT / "testing/minidfs"), "compile", "exec:java", "-Dexec.args=1"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,  # its own process group: killed whole at the end
    )
    ready = {}
    tail = []

    def read():
        for line in proc.stdout:
            if line.startswith("Ready! "):
                ready["line"] = line[len("Ready! ") :].strip()
            else:
                tail.append(line)
                del tail[:-40]

    t = threading.Thread(target=read, daemon=True)
    t.start()
    deadline = time.monotonic() + 600
    while "line" not in ready and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    try:
        if "line" not in ready:
            raise RuntimeError("MiniDFS did not start; last output:\n" + "".join(tail))
        kv = dict(p.split("=", 1) for p in ready["line"].split())
        yield MiniDfs(proc, int(kv["hdfs"]), int(kv["http"]))
    finally:
        try:
            proc.stdin.write("\n")
            proc.stdin.flush()
        except OSError:
            pass
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=30)


@pytest.fixture(scope="session")
def tusk_bin():
    """The tusk CLI: $TUSK_BIN, else the cargo build in $CARGO_TARGET_DIR (debug, then release)."""
    cands = [os.environ.get("TUSK_BIN")]
    target = os.environ.get("CARGO_TARGET_DIR") or str(Path.home() / ".cache/tusk/target")
    cands += [os.path.join(target, "debug/tusk"), os.path.join(target, "release/tusk"), str(ROOT / "target/debug/tusk")]
    for c in cands:
        if c and os.access(c, os.X_OK):
            return c
    require("the tusk CLI", "TUSK_REQUIRE_CLI", "no built tusk binary (set TUSK_BIN or run cargo build)")
