"""tusk.load (a version's weights, embeddings, and tusk predict's scores in-process) and tusk.sql."""

import subprocess

import numpy as np
import pytest

import tusk


def write_rows(path, n, seed):
    rng = np.random.default_rng(seed)
    users = rng.integers(0, 40, n)
    items = rng.integers(0, 30, n)
    price = rng.random(n) * 10
    label = ((users % 2) == (items % 2)).astype(int)
    with open(path, "w") as f:
        f.write("user_id,item_id,price,label\n")
        for u, i, p, y in zip(users, items, price, label):
            f.write(f"{u},{i},{p:.3f},{y}\n")


CONFIG = """[data]
train = "{d}/train.csv"
[features]
sparse = ["user_id", "item_id"]
dense = ["price"]
label = "label"
[model]
kind = "neumf"
user = ["user_id"]
item = ["item_id"]
gmf_dim = 8
mlp_dim = 8
layers = [16, 8]
[train]
epochs = 2
batch_size = 32
learning_rate = 0.01
"""


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tusk_bin):
    d = tmp_path_factory.mktemp("model")
    write_rows(d / "train.csv", 2000, 1)
    (d / "cfg.toml").write_text(CONFIG.format(d=d))
    model = str(d / "model")
    r = subprocess.run([tusk_bin, "train", str(d / "cfg.toml"), "--model", model], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return d, model


def test_load_gives_weights_embeddings_and_the_scores_of_tusk_predict(trained, tusk_bin):
    pd = pytest.importorskip("pandas")
    d, model = trained
    m = tusk.load(model)
    assert m.version >= 1
    assert m.config["model"]["kind"] == "neumf"
    w = m.weights()
    assert w and all(isinstance(v, np.ndarray) and v.dtype == np.float32 for v in w.values())
    assert all(len(v.shape) in (1, 2) for v in w.values())
    keys, rows = m.embeddings()
    assert keys.dtype == np.uint64 and np.all(np.diff(keys.astype(np.float64)) > 0)
    assert rows.dtype == np.float32 and rows.shape[0] == len(keys) and rows.shape[1] > 0
    # A few pairs, one with a missing price, scored by the CLI and in-process.
    pairs = d / "pairs.csv"
    pairs.write_text("user_id,item_id,price\n1,5,2.5\n1,6,0.5\n7,3,\n39,29,9.0\n")
    out = d / "scores.csv"
    r = subprocess.run([tusk_bin, "predict", "--model", model, "--input", str(pairs), "--output", str(out)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    cli = pd.read_csv(out)["score"].to_numpy(np.float32)
    rows_in = pd.DataFrame({"user_id": [1, 1, 7, 39], "item_id": [5, 6, 3, 29], "price": [2.5, 0.5, None, 9.0]})
    got = m.predict(rows_in)
    assert got.dtype == np.float32 and got.shape == (4,)
    np.testing.assert_allclose(got, cli, rtol=0, atol=1e-6)
    # The same with a list of row dicts; an unknown version is a clear error.
    np.testing.assert_array_equal(m.predict([{"user_id": 1, "item_id": 5, "price": 2.5}]), got[:1])
    with pytest.raises(tusk.Error, match="999"):
        tusk.load(model, version=999)


def test_sql_runs_the_cli_engine_and_returns_arrow(tmp_path, tusk_bin):
    import pyarrow as pa

    write_rows(tmp_path / "t.csv", 500, 2)
    t = tusk.sql("SELECT user_id, count(*) AS n FROM clicks GROUP BY user_id ORDER BY user_id", {"clicks": str(tmp_path / "t.csv")}, tusk_bin=tusk_bin)
    assert isinstance(t, pa.Table)
    import csv

    counts = {}
    with open(tmp_path / "t.csv") as f:
        for row in csv.DictReader(f):
            counts[int(row["user_id"])] = counts.get(int(row["user_id"]), 0) + 1
    got = dict(zip(t.column("user_id").to_pylist(), t.column("n").to_pylist()))
    assert got == counts
    with pytest.raises(tusk.DataError):
        tusk.sql("SELECT nope FROM clicks", {"clicks": str(tmp_path / "t.csv")}, tusk_bin=tusk_bin)
