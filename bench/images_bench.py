#!/usr/bin/env python3
"""The image map job: tusk vs TensorFlow's own pipelines, on the same images, in one run.

    ~/.cache/tusk/venv/bin/python bench/images_bench.py [--tusk PATH] [--images 2000]
        [--runs 3] [--size 224x224] [--growth K]

Images: --images files, 200-400 px on each side (seeded), JPEG (quality 90) and a --png-share
of PNG (default 0.2), gradients plus --noise (default sd 12, so that file sizes are like
photos'), written once under a temporary directory. Every pipeline reads the same files and writes a TFRecord of
224x224 ImageNet-normalised CHW float tensors:

  tusk         `tusk images normalize --input DIR --output OUT --size 224x224 --mean ... --std
               ...` (Examples with image, shape, path; all cores)
  tusk mapper  `tusk mapper normalize-images` as Hadoop Streaming runs it: the file list on stdin,
               `path<TAB>base64(f32 CHW)` lines to a file
  TF graph     tf.data over the file list: read_file -> decode_image(channels=3) -> resize
               bilinear -> normalise -> transpose to CHW -> serialize_tensor,
               num_parallel_calls=AUTOTUNE, then TFRecordWriter; twice: with antialias=True
               (a triangle filter widened when shrinking: the same math as tusk's resize) and
               without (plain bilinear: samples 4 pixels whatever the scale, cheaper, aliased)
  TF loop      the usual Python loop: decode with tf.io, resize, normalise, build a
               tf.train.Example per image (float_list), TFRecordWriter

Each pipeline runs in its own process (`/usr/bin/time -v`: wall, peak RSS), --runs times,
alternating; the table shows the best and median wall and each one's time over tusk's.
--growth K then runs both tusk modes once more on K times as many images (hard links) and
prints peak RSS for both counts: memory must not grow with the number of images. The page cache
is warm (the files are read once first).
"""
import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
MEAN = "0.485,0.456,0.406"
STD = "0.229,0.224,0.225"


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def make_images(d, n, png_share, noise, seed=7):
    import numpy as np
    from PIL import Image
    rnd = random.Random(seed)
    rng = np.random.default_rng(seed)
    os.makedirs(d, exist_ok=True)
    for i in range(n):
        w, h = rnd.randint(200, 400), rnd.randint(200, 400)
        yy, xx = np.mgrid[0:h, 0:w]
        base = np.stack([(xx * rnd.uniform(0.3, 1.2)) % 256, (yy * rnd.uniform(0.3, 1.2)) % 256,
                         ((xx + yy) * rnd.uniform(0.2, 0.8)) % 256], axis=-1)
        img = np.clip(base + rng.normal(0, noise, base.shape), 0, 255).astype(np.uint8)
        if rnd.random() < png_share:
            Image.fromarray(img).save(os.path.join(d, f"img{i:05d}.png"))
        else:
            Image.fromarray(img).save(os.path.join(d, f"img{i:05d}.jpg"), quality=90)


TF_GRAPH = textwrap.dedent("""
    import glob, os, sys
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf
    src, out, w, h = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    antialias = sys.argv[5] == "antialias"
    files = sorted(glob.glob(os.path.join(src, "*")))
    mean = tf.constant([0.485, 0.456, 0.406]); std = tf.constant([0.229, 0.224, 0.225])
    def prep(path):
        img = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
        img = tf.image.resize(tf.cast(img, tf.float32) / 255.0, [h, w], antialias=antialias)
        img = tf.transpose((img - mean) / std, [2, 0, 1])
        return tf.io.serialize_tensor(img)
    ds = tf.data.Dataset.from_tensor_slices(files).map(prep, num_parallel_calls=tf.data.AUTOTUNE)
    with tf.io.TFRecordWriter(out) as wr:
        for rec in ds.prefetch(tf.data.AUTOTUNE):
            wr.write(rec.numpy())
""")

TF_LOOP = textwrap.dedent("""
    import glob, os, sys
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import numpy as np
    import tensorflow as tf
    src, out, w, h = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    mean = np.array([0.485, 0.456, 0.406], np.float32); std = np.array([0.229, 0.224, 0.225], np.float32)
    with tf.io.TFRecordWriter(out) as wr:
        for path in sorted(glob.glob(os.path.join(src, "*"))):
            img = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
            img = tf.image.resize(tf.cast(img, tf.float32) / 255.0, [h, w], antialias=True).numpy()
            chw = np.transpose((img - mean) / std, (2, 0, 1))
            ex = tf.train.Example(features=tf.train.Features(feature={
                "image": tf.train.Feature(float_list=tf.train.FloatList(value=chw.ravel())),
                "shape": tf.train.Feature(int64_list=tf.train.Int64List(value=list(chw.shape))),
                "path": tf.train.Feature(bytes_list=tf.train.BytesList(value=[path.encode()])),
            }))
            wr.write(ex.SerializeToString())
""")


def timed(cmd):
    p = subprocess.run(["/usr/bin/time", "-v"] + cmd, capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:3])} failed:\n{p.stderr[-2000:]}")
    wall, rss = None, None
    for line in p.stderr.splitlines():
        if "Elapsed (wall clock)" in line:
            t = line.rsplit(" ", 1)[-1].split(":")
            wall = sum(float(x) * 60 ** i for i, x in enumerate(reversed(t)))
        if "Maximum resident set size" in line:
            rss = int(line.split()[-1]) / 1024
    return wall, rss


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tusk")
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--size", default="224x224")
    ap.add_argument("--png-share", type=float, default=0.2, help="share of PNG files")
    ap.add_argument("--noise", type=float, default=12.0,
                    help="pixel noise (sd); lower makes smoother, smaller JPEGs")
    ap.add_argument("--growth", type=int, default=0, metavar="K",
                    help="also run tusk on K times the images (hard links) and print peak RSS "
                    "for both sizes")
    args = ap.parse_args()
    tusk = args.tusk or os.path.join(os.environ.get(
        "CARGO_TARGET_DIR", os.path.expanduser("~/.cache/tusk/target")), "release", "tusk")
    w, h = args.size.split("x")
    work = tempfile.mkdtemp(prefix="tusk-images-bench-")
    try:
        src = os.path.join(work, "images")
        log(f"making {args.images} images (untimed)")
        make_images(src, args.images, args.png_share, args.noise)
        for f in os.listdir(src):
            with open(os.path.join(src, f), "rb") as fh:
                fh.read()
        scripts = {}
        for name, text in (("graph", TF_GRAPH), ("loop", TF_LOOP)):
            scripts[name] = os.path.join(work, f"tf_{name}.py")
            with open(scripts[name], "w") as fh:
                fh.write(text)
        py = sys.executable
        listing = os.path.join(work, "images.txt")
        with open(listing, "w") as fh:
            fh.writelines(os.path.join(src, f) + "\n" for f in sorted(os.listdir(src)))

        def mapper(lst):
            return lambda o: ["sh", "-c", f'exec "$0" mapper normalize-images --size {args.size} '
                              f'--mean {MEAN} --std {STD} < "$1" > "$2"', tusk, lst, o + ".lines"]

        cases = {
            "tusk `images normalize`": lambda o: [tusk, "images", "normalize", "--input", src,
                                                  "--output", o, "--size", args.size,
                                                  "--mean", MEAN, "--std", STD],
            "tusk `mapper normalize-images` (Hadoop Streaming: paths in, base64 lines out)":
                mapper(listing),
            "TensorFlow, all in the graph (tf.data, AUTOTUNE), antialiased bilinear as tusk":
                lambda o: [py, scripts["graph"], src, o + ".tfrecord", w, h, "antialias"],
            "TensorFlow, all in the graph, plain bilinear (no antialiasing)":
                lambda o: [py, scripts["graph"], src, o + ".tfrecord", w, h, "plain"],
            "TensorFlow, Python loop building tf.train.Example": lambda o: [
                py, scripts["loop"], src, o + ".tfrecord", w, h],
        }
        res = {k: [] for k in cases}
        for r in range(args.runs):
            for name, cmd in cases.items():
                out = os.path.join(work, f"out-{r}-{len(res[name])}")
                log(f"run {r + 1}: {name}")
                res[name].append(timed(cmd(out)))
                shutil.rmtree(out, ignore_errors=True)
                for ext in (".tfrecord", ".lines"):
                    if os.path.exists(out + ext):
                        os.remove(out + ext)
        best = {k: min(x[0] for x in v) for k, v in res.items()}
        tusk_best = best["tusk `images normalize`"]
        print(f"\n## Image job: {args.images} images (200–400 px, {100 - args.png_share * 100:.0f}% "
              f"JPEG / {args.png_share * 100:.0f}% PNG, noise sd {args.noise}) → {args.size} "
              f"normalised CHW floats, {os.cpu_count()} cores, {args.runs} runs\n")
        print("| pipeline | best s | median s | best ÷ tusk's best | peak RSS MB (max) |")
        print("|---|---:|---:|---:|---:|")
        for name, v in res.items():
            walls = [x[0] for x in v]
            print(f"| {name} | {min(walls):.2f} | {statistics.median(walls):.2f} | "
                  f"{best[name] / tusk_best:.2f}× | {max(x[1] for x in v):.0f} |")
        if args.growth:
            growth(args, tusk, work, src, cases["tusk `images normalize`"], mapper)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def growth(args, tusk, work, src, normalize, mapper):
    """Peak RSS of both tusk modes on the images and on --growth times as many (hard links)."""
    many = os.path.join(work, "many")
    os.makedirs(many)
    names = sorted(os.listdir(src))
    for k in range(args.growth):
        for f in names:
            os.link(os.path.join(src, f), os.path.join(many, f"{k}-{f}"))
    rows = []
    for d in (src, many):
        lst = d + ".txt"
        with open(lst, "w") as fh:
            fh.writelines(os.path.join(d, f) + "\n" for f in sorted(os.listdir(d)))
        n = len(os.listdir(d))
        for name, cmd in (("images normalize", lambda o: normalize(o)[:4] + [d] + normalize(o)[5:]),
                          ("mapper normalize-images", mapper(lst))):
            out = os.path.join(work, "growth-out")
            wall, rss = timed(cmd(out))
            shutil.rmtree(out, ignore_errors=True)
            if os.path.exists(out + ".lines"):
                os.remove(out + ".lines")
            rows.append((name, n, wall, rss))
    print(f"\n## Memory against the number of images (tusk, {args.size})\n")
    print("| mode | images | wall s | peak RSS MB |")
    print("|---|---:|---:|---:|")
    for name, n, wall, rss in rows:
        print(f"| {name} | {n} | {wall:.2f} | {rss:.0f} |")


if __name__ == "__main__":
    main()
