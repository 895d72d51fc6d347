"""tusk.Dataset: layouts and dtypes from every format, epochs, sharding, resume, errors, HDFS."""

import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import tusk
from conftest import require

N = 257


def table(n=N):
    ids = np.arange(n, dtype=np.int64) * 7 + 3
    return {
        "id": ids,
        "score": (ids % 13).astype(np.float32) / 4,
        "name": [f"item-{i}".encode() for i in ids],
        "hist": [list(range(int(i) % 4)) for i in ids],  # 0-3 values: ragged
        "vec": [[float(i), float(i) / 2] for i in ids],  # always 2 values, but a list: ragged
    }


def tf_or_skip():
    try:
        import tensorflow as tf  # noqa: F401
    except ImportError:
        require("TensorFlow", "TUSK_REQUIRE_TF", "tensorflow is not importable")
    import tensorflow as tf

    return tf


def write_tfrecord_with_tf(path, t, compression=None):
    tf = tf_or_skip()
    opts = tf.io.TFRecordOptions(compression_type=compression) if compression else None
    with tf.io.TFRecordWriter(str(path), options=opts) as w:
        for i in range(len(t["id"])):
            f = {
                "id": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(t["id"][i])])),
                "score": tf.train.Feature(float_list=tf.train.FloatList(value=[float(t["score"][i])])),
                "name": tf.train.Feature(bytes_list=tf.train.BytesList(value=[t["name"][i]])),
                "hist": tf.train.Feature(int64_list=tf.train.Int64List(value=t["hist"][i])),
                "vec": tf.train.Feature(float_list=tf.train.FloatList(value=t["vec"][i])),
            }
            w.write(tf.train.Example(features=tf.train.Features(feature=f)).SerializeToString())


def write_parquet(path, t):
    pq.write_table(
        pa.table(
            {
                "id": pa.array(t["id"]),
                "score": pa.array(t["score"]),
                "name": pa.array(t["name"], pa.binary()),
                "hist": pa.array(t["hist"], pa.list_(pa.int64())),
                "vec": pa.array(t["vec"], pa.list_(pa.float32())),
            }
        ),
        path,
        row_group_size=50,
    )


def write_csv(path, t):
    with open(path, "w") as f:
        f.write("id,score,name,hist,vec\n")
        for i in range(len(t["id"])):
            hist = " ".join(str(x) for x in t["hist"][i])
            vec = " ".join(repr(x) for x in t["vec"][i])
            f.write(f"{t['id'][i]},{float(t['score'][i])!r},{t['name'][i].decode()},{hist},{vec}\n")


def check_batch(b, t, idx):
    assert b["id"].dtype == np.int64 and b["id"].shape == (len(idx),)
    np.testing.assert_array_equal(b["id"], t["id"][idx])
    assert b["score"].dtype == np.float32
    np.testing.assert_array_equal(b["score"], t["score"][idx])
    assert b["name"].dtype == object
    assert list(b["name"]) == [t["name"][i] for i in idx]
    h = b["hist"]
    assert isinstance(h, tusk.Ragged)
    assert h.values.dtype == np.int64 and h.offsets.dtype == np.int64
    assert [list(h.values[h.offsets[k] : h.offsets[k + 1]]) for k in range(len(idx))] == [t["hist"][i] for i in idx]
    v = b["vec"]
    assert v.values.dtype == np.float32
    np.testing.assert_array_equal(v.values, np.array([t["vec"][i] for i in idx], np.float32).reshape(-1))


@pytest.mark.parametrize("fmt", ["tfrecord", "tfrecord.gz", "parquet", "csv"])
def test_every_format_gives_the_same_layouts_and_dtypes(tmp_path, fmt):
    t = table()
    if fmt.startswith("tfrecord"):
        path = tmp_path / f"data.{fmt}"
        write_tfrecord_with_tf(path, t, "GZIP" if fmt.endswith("gz") else None)
    elif fmt == "parquet":
        path = tmp_path / "data.parquet"
        write_parquet(path, t)
    else:
        path = tmp_path / "data.csv"
        write_csv(path, t)
        # CSV: a field of several values is a multi-valued column; this one sometimes has one.
    ds = tusk.Dataset(str(path), batch_size=100, shuffle=False, ragged=["hist", "vec"])
    assert ds.records == N
    assert {f[0]: (f[1], f[2]) for f in ds.fields} == {
        "id": ("int64", "scalar"),
        "score": ("float32", "scalar"),
        "name": ("bytes", "scalar"),
        "hist": ("int64", "ragged"),
        "vec": ("float32", "ragged"),
    }
    batches = list(ds)
    assert [len(b["id"]) for b in batches] == [100, 100, 57]
    for k, b in enumerate(batches):
        check_batch(b, t, np.arange(k * 100, min(N, k * 100 + 100)))
    assert len(ds) == 3


def test_schema_decides_the_layout_without_hints(tmp_path):
    t = table()
    write_parquet(tmp_path / "d.parquet", t)
    ds = tusk.Dataset(str(tmp_path / "d.parquet"), batch_size=10, shuffle=False, columns=["vec", "id"])
    assert [f[0] for f in ds.fields] == ["vec", "id"]
    b = next(iter(ds))
    assert set(b) == {"vec", "id"}
    assert isinstance(b["vec"], tusk.Ragged)
    padded, lengths = b["hist"].to_padded() if "hist" in b else (None, None)
    assert padded is None
    r = tusk.Ragged(np.array([1, 2, 3]), np.array([0, 2, 2, 3]))
    p, n = r.to_padded(pad=-1)
    np.testing.assert_array_equal(p, [[1, 2], [-1, -1], [3, -1]])
    np.testing.assert_array_equal(n, [2, 0, 1])


def test_every_record_once_per_epoch_over_ranks_balanced(tmp_path):
    # Uneven files: a glob over parquet files of very different sizes.
    sizes = [5, 170, 1, 64, 333, 0, 90]
    start = 0
    for i, n in enumerate(sizes):
        pq.write_table(pa.table({"id": pa.array(np.arange(start, start + n, dtype=np.int64))}), tmp_path / f"part-{i}.parquet")
        start += n
    total = start
    url = str(tmp_path / "part-*.parquet")
    for world in (1, 2, 3, 5):
        for epoch in (0, 1):
            seen = []
            counts = []
            for rank in range(world):
                ds = tusk.Dataset(url, batch_size=16, seed=11, rank=rank, world_size=world)
                ds.set_epoch(epoch)
                ids = np.concatenate([b["id"] for b in ds])
                counts.append(len(ids))
                seen.append(ids)
            allids = np.concatenate(seen)
            assert sorted(allids.tolist()) == list(range(total)), (world, epoch)
            assert max(counts) - min(counts) <= 1


def test_same_seed_and_epoch_same_order_other_epoch_other_order(tmp_path):
    url = str(tmp_path / "d")
    tusk.write_dataset(url, {"id": np.arange(5000, dtype=np.int64)}, format="parquet", shards=4)

    def order(seed, epoch, window=None):
        ds = tusk.Dataset(url, batch_size=64, seed=seed, shuffle_window=window)
        ds.set_epoch(epoch)
        return np.concatenate([b["id"] for b in ds])

    a = order(1, 0)
    assert np.array_equal(a, order(1, 0))
    assert sorted(a.tolist()) == list(range(5000))
    assert not np.array_equal(a, order(1, 1))
    assert not np.array_equal(a, order(2, 0))
    assert not np.array_equal(a, np.arange(5000))
    # Small windows still cover everything exactly once.
    b = order(1, 3, window=100)
    assert sorted(b.tolist()) == list(range(5000))


@pytest.mark.parametrize("window", [None, 50])
def test_resume_mid_epoch_gives_the_rest_of_the_uninterrupted_epoch(tmp_path, window):
    url = str(tmp_path / "d")
    tusk.write_dataset(url, {"id": np.arange(3000, dtype=np.int64), "v": np.arange(3000, dtype=np.float32)}, format="tfrecord", shards=3)
    ds = tusk.Dataset(url, batch_size=64, seed=5, shuffle_window=window, rank=1, world_size=2)
    ds.set_epoch(2)
    full = [b["id"].copy() for b in ds]
    ds2 = tusk.Dataset(url, batch_size=64, seed=5, shuffle_window=window, rank=1, world_size=2)
    ds2.set_epoch(2)
    it = iter(ds2)
    head = [next(it)["id"].copy() for _ in range(7)]
    state = ds2.state()
    assert state["epoch"] == 2 and state["batch"] == 7
    del it
    ds3 = tusk.Dataset(url, batch_size=64, seed=5, shuffle_window=window, rank=1, world_size=2)
    ds3.load_state(state)
    rest = [b["id"].copy() for b in ds3]
    assert len(head) + len(rest) == len(full)
    for x, y in zip(head + rest, full):
        np.testing.assert_array_equal(x, y)
    # A state from another configuration is refused, not silently misapplied.
    other = tusk.Dataset(url, batch_size=32, seed=5)
    with pytest.raises(tusk.ConfigError, match="batch_size"):
        other.load_state(state)


def test_write_dataset_from_pandas_and_arrow_round_trip(tmp_path):
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame({"user": np.arange(10, dtype=np.int64), "item": np.arange(10, 20), "w": np.linspace(0, 1, 10, dtype=np.float32), "s": [f"s{i}" for i in range(10)]})
    url = str(tmp_path / "out")
    assert tusk.write_dataset(url, df, format="tfrecord.gz", shards=2) == 10
    assert (Path(url) / "_manifest.json").exists()
    with pytest.raises(tusk.Error, match="already exists"):
        tusk.write_dataset(url, df)
    ds = tusk.Dataset(url, batch_size=10, shuffle=False)
    b = next(iter(ds))
    # Round-robin shards: record order is shard by shard.
    order = np.argsort(b["user"])
    np.testing.assert_array_equal(b["item"][order], np.arange(10, 20))
    assert [x for x in b["s"][order]] == [f"s{i}".encode() for i in range(10)]
    rbs = list(ds.arrow())
    assert rbs[0].num_rows == 10 and rbs[0].schema.field("user").type == pa.int64()


def test_bad_input_raises_the_documented_errors_and_the_process_lives_on(tmp_path):
    with pytest.raises(tusk.NotFoundError, match="nope"):
        tusk.Dataset(str(tmp_path / "nope.tfrecord"), batch_size=4)
    with pytest.raises(tusk.ConfigError):
        tusk.Dataset(str(tmp_path / "x"), batch_size=0)
    url = str(tmp_path / "d")
    tusk.write_dataset(url, {"id": np.arange(100, dtype=np.int64)}, format="tfrecord", shards=1)
    with pytest.raises(tusk.DataError, match="no column 'missing'"):
        tusk.Dataset(url, batch_size=4, columns=["missing"])
    # Flip one byte inside a record's payload: a CRC mismatch naming file, record and offset.
    shard = next(p for p in Path(url).iterdir() if p.name.endswith(".tfrecord"))
    data = bytearray(shard.read_bytes())
    data[-10] ^= 0xFF  # in the last record: past the sample read at open, so iteration finds it
    shard.write_bytes(bytes(data))
    ds = tusk.Dataset(url, batch_size=4, shuffle=False)
    with pytest.raises(tusk.DataError, match=r"corrupt record #\d+ at byte offset \d+") as e:
        for _ in ds:
            pass
    assert shard.name in str(e.value)
    # Still alive and reading.
    good = str(tmp_path / "g")
    tusk.write_dataset(good, {"id": np.arange(8, dtype=np.int64)})
    assert sum(len(b["id"]) for b in tusk.Dataset(good, batch_size=3)) == 8
    # A missing value in a one-value column names the record and the way out.
    pq.write_table(pa.table({"a": pa.array([1, None, 3], pa.int64())}), tmp_path / "n.parquet")
    with pytest.raises(tusk.DataError, match=r"row 1, column `a`.*ragged=\['a'\]"):
        list(tusk.Dataset(str(tmp_path / "n.parquet"), batch_size=3, shuffle=False))
    b = next(iter(tusk.Dataset(str(tmp_path / "n.parquet"), batch_size=3, shuffle=False, ragged=["a"])))
    np.testing.assert_array_equal(b["a"].offsets, [0, 1, 1, 2])


def test_environment_gives_rank_and_world_size(monkeypatch):
    for k in ("RANK", "WORLD_SIZE", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "PMI_RANK", "PMI_SIZE", "SLURM_PROCID", "SLURM_NTASKS"):
        monkeypatch.delenv(k, raising=False)
    assert tusk.world() == (0, 1)
    monkeypatch.setenv("SLURM_PROCID", "3")
    monkeypatch.setenv("SLURM_NTASKS", "4")
    assert tusk.world() == (3, 4)
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert tusk.world() == (1, 2)
    with pytest.raises(tusk.ConfigError):
        tusk.world(rank=2, world_size=2)


def test_images_from_tusk_images_normalize_come_back_as_nchw(tmp_path, tusk_bin):
    import subprocess
    import zlib
    import struct

    def png(path, w, h, seed):
        rng = np.random.default_rng(seed)
        px = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
        raw = b"".join(b"\x00" + px[y].tobytes() for y in range(h))

        def chunk(t, d):
            return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)

        path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
        return px

    src = tmp_path / "imgs"
    src.mkdir()
    for i in range(6):
        png(src / f"{i}.png", 10 + i, 8, i)
    out = tmp_path / "norm"
    r = subprocess.run([tusk_bin, "images", "normalize", "--input", str(src), "--output", str(out), "--size", "6x4"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    ds = tusk.Dataset(str(out), batch_size=4, shuffle=False)
    f = {x[0]: x for x in ds.fields}
    assert f["image"][2] == "fixed" and f["image"][3] == [3, 4, 6]
    b = next(iter(ds))
    assert b["image"].shape == (4, 3, 4, 6) and b["image"].dtype == np.float32
    # Selecting the image without its shape column keeps the layout (the shape is read for it).
    only = tusk.Dataset(str(out), batch_size=4, shuffle=False, columns=["image", "path"])
    assert [x[0] for x in only.fields] == ["image", "path"]
    c = next(iter(only))
    assert sorted(c) == ["image", "path"] and c["image"].shape == (4, 3, 4, 6)
    np.testing.assert_array_equal(c["image"], b["image"])


def test_a_dataset_on_minidfs_over_hdfs_and_webhdfs(minidfs):
    url = minidfs.hdfs + "/py/clicks"
    n = 4321
    tusk.write_dataset(url, {"user": np.arange(n, dtype=np.int64) % 97, "item": np.arange(n, dtype=np.int64), "label": (np.arange(n) % 2).astype(np.float32)}, format="parquet", shards=3)
    for base in (minidfs.hdfs, minidfs.webhdfs):
        ds = tusk.Dataset(base + "/py/clicks", batch_size=500, seed=3, rank=0, world_size=2)
        a = np.concatenate([b["item"] for b in ds])
        ds1 = tusk.Dataset(base + "/py/clicks", batch_size=500, seed=3, rank=1, world_size=2)
        c = np.concatenate([b["item"] for b in ds1])
        assert sorted(np.concatenate([a, c]).tolist()) == list(range(n))


def test_ctrl_c_interrupts_a_blocked_read(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    path = str(tmp_path / "a.csv")
    script = f"""
import os, tusk
p = {path!r}
with open(p, "w") as f:
    f.write("x\\n1\\n2\\n")
ds = tusk.Dataset(p, batch_size=1, shuffle=False)
os.remove(p)
os.mkfifo(p)  # opening it for reading blocks until a writer comes: none will
print("ready", flush=True)
try:
    for b in ds:
        pass
except KeyboardInterrupt:
    print("interrupted", flush=True)
"""
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(1.0)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
        assert "interrupted" in out
        assert proc.returncode == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def test_arrow_stream_carries_the_same_values(tmp_path):
    t = table()
    write_parquet(tmp_path / "d.parquet", t)
    ds = tusk.Dataset(str(tmp_path / "d.parquet"), batch_size=100, shuffle=False)
    reader = ds.arrow()
    assert isinstance(reader, pa.RecordBatchReader)
    tab = reader.read_all()
    assert tab.num_rows == N
    assert tab.schema.field("id").type == pa.int64()
    assert tab.schema.field("name").type == pa.large_binary()
    assert pa.types.is_large_list(tab.schema.field("hist").type)
    assert tab.column("id").to_pylist() == t["id"].tolist()
    assert tab.column("name").to_pylist() == t["name"]
    assert tab.column("hist").to_pylist() == t["hist"]
    np.testing.assert_array_equal(np.array(tab.column("vec").to_pylist(), np.float32), np.array(t["vec"], np.float32))
