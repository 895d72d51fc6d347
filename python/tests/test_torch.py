"""tusk.torch: DataLoader workers × DDP ranks read every record once; resume; a real training loop."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import tusk
from conftest import require

try:
    import torch
    from torch.utils.data import DataLoader
except ImportError:  # pragma: no cover
    torch = None


@pytest.fixture(autouse=True)
def need_torch():
    if torch is None:
        require("PyTorch", "TUSK_REQUIRE_TORCH", "torch is not importable")


def uneven(tmp_path):
    sizes = [5, 170, 1, 64, 333, 0, 90, 41]
    start = 0
    for i, n in enumerate(sizes):
        ids = np.arange(start, start + n, dtype=np.int64)
        pq.write_table(pa.table({"id": pa.array(ids), "x": pa.array(ids.astype(np.float32))}), tmp_path / f"part-{i:02}.parquet")
        start += n
    return str(tmp_path / "part-*.parquet"), start


def test_two_ranks_three_workers_read_every_record_once_per_epoch(tmp_path):
    import tusk.torch as tt

    url, total = uneven(tmp_path)
    bs = 16
    for epoch in (0, 1):
        per_rank = []
        orders = []
        for rank in range(2):
            ds = tt.Dataset(url, bs, seed=9, rank=rank, world_size=2)
            ds.set_epoch(epoch)
            dl = DataLoader(ds, batch_size=None, num_workers=3)
            got = [b["id"] for b in dl]
            assert all(isinstance(g, torch.Tensor) and g.dtype == torch.int64 for g in got)
            ids = torch.cat(got).tolist()
            per_rank.append(len(ids))
            orders.append(ids)
        assert sorted(orders[0] + orders[1]) == list(range(total))
        assert abs(per_rank[0] - per_rank[1]) <= bs
        # Same seed and epoch: the same order again (workers included).
        ds = tt.Dataset(url, bs, seed=9, rank=0, world_size=2)
        ds.set_epoch(epoch)
        again = torch.cat([b["id"] for b in DataLoader(ds, batch_size=None, num_workers=3)]).tolist()
        assert again == orders[0]


def test_resume_under_dataloader_workers(tmp_path):
    import tusk.torch as tt

    url, total = uneven(tmp_path)
    ds = tt.Dataset(url, 8, seed=1)
    ds.set_epoch(4)
    full = [b["id"].tolist() for b in DataLoader(ds, batch_size=None, num_workers=3)]
    for consumed in (0, 1, 5, 17, len(full) - 1):
        ds = tt.Dataset(url, 8, seed=1)
        ds.set_epoch(4)
        dl = DataLoader(ds, batch_size=None, num_workers=3)
        head = []
        for b in dl:
            if len(head) == consumed:
                break
            head.append(b["id"].tolist())
        state = ds.state(batches=consumed)
        resumed = tt.Dataset(url, 8, seed=1)
        resumed.load_state(state)
        rest = [b["id"].tolist() for b in DataLoader(resumed, batch_size=None, num_workers=3)]
        assert head + rest == full, consumed


def test_ragged_and_bytes_columns_cross_the_dataloader(tmp_path):
    import tusk.torch as tt

    pq.write_table(
        pa.table({"h": pa.array([[1, 2], [], [3]], pa.list_(pa.int64())), "s": pa.array([b"a", b"bb", b"c"])}),
        tmp_path / "r.parquet",
    )
    b = next(iter(DataLoader(tt.Dataset(str(tmp_path / "r.parquet"), 3, shuffle=False), batch_size=None, num_workers=1)))
    assert isinstance(b["h"], tusk.Ragged)
    assert b["h"].values.tolist() == [1, 2, 3] and b["h"].offsets.tolist() == [0, 2, 2, 3]
    assert list(b["s"]) == [b"a", b"bb", b"c"]


def test_a_pytorch_loop_trains_on_a_dataset_read_from_minidfs(minidfs):
    import tusk.torch as tt

    rng = np.random.default_rng(0)
    n, d = 4096, 8
    x = rng.normal(size=(n, d)).astype(np.float32)
    w = rng.normal(size=d).astype(np.float32)
    y = (x @ w > 0).astype(np.float32)
    url = minidfs.hdfs + "/py/train"
    tusk.write_dataset(url, {"x": pa.array(list(x), pa.list_(pa.float32())), "y": y}, format="tfrecord", shards=2)
    ds = tt.Dataset(url, 128, seed=0)
    assert {f[0]: f[2] for f in ds.fields} == {"x": "ragged", "y": "scalar"}
    torch.manual_seed(0)
    model = torch.nn.Linear(d, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    losses = []
    for epoch in range(3):
        ds.set_epoch(epoch)
        total, count = 0.0, 0
        for b in DataLoader(ds, batch_size=None, num_workers=2):
            xb = b["x"].values.view(-1, d)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(model(xb).squeeze(1), b["y"])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(b["y"])
            count += len(b["y"])
        assert count == n
        losses.append(total / count)
    assert losses[-1] < losses[0] * 0.6, losses


def test_round_robin_resume_arithmetic_matches_dataloader_order():
    """DataLoader takes one batch from each worker in turn, passing over exhausted ones; a resume
    after n batches must continue that exact sequence with rotated workers."""
    import random

    from tusk.torch import _round_robin

    rnd = random.Random(0)
    for _ in range(500):
        k = rnd.randint(1, 4)
        counts = [rnd.randint(0, 6) for _ in range(k)]

        def order(start, taken):
            taken, seq = list(taken), []
            while True:
                moved = False
                for w in range(k):
                    c = (start + w) % k
                    if taken[c] < counts[c]:
                        seq.append(c)
                        taken[c] += 1
                        moved = True
                if not moved:
                    return seq

        full = order(0, [0] * k)
        for n in range(len(full) + 1):
            taken, turn = _round_robin(counts, n)
            assert taken == [full[:n].count(j) for j in range(k)]
            assert order(turn, taken) == full[n:]
