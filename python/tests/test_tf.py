"""tusk.tf: a tf.data.Dataset with a declared element_spec feeds Keras model.fit."""

import numpy as np
import pyarrow as pa
import pytest

import tusk
from conftest import require


def test_tf_data_pipeline_feeds_model_fit(tmp_path):
    try:
        import tensorflow as tf
    except ImportError:
        require("TensorFlow", "TUSK_REQUIRE_TF", "tensorflow is not importable")
    import tusk.tf as ttf

    rng = np.random.default_rng(1)
    n, d = 2048, 4
    x = rng.normal(size=(n, d)).astype(np.float32)
    y = (x.sum(axis=1) > 0).astype(np.float32)
    url = str(tmp_path / "d")
    tusk.write_dataset(url, {"x": pa.array(list(x), pa.list_(pa.float32())), "y": y, "tag": [b"t"] * n}, format="parquet", shards=2)
    ds = ttf.dataset(url, 256, seed=0)
    spec = ds.element_spec
    assert spec["y"] == tf.TensorSpec([None], tf.float32)
    assert isinstance(spec["x"], tf.RaggedTensorSpec)
    assert spec["tag"] == tf.TensorSpec([None], tf.string)
    first = next(iter(ds))
    assert first["x"].shape[0] == 256 and first["tag"].dtype == tf.string

    def to_xy(b):
        return b["x"].to_tensor(shape=[None, d]), b["y"]

    train = ds.map(to_xy)
    tf.keras.utils.set_random_seed(0)
    model = tf.keras.Sequential([tf.keras.Input(shape=(d,)), tf.keras.layers.Dense(1)])
    model.compile(optimizer=tf.keras.optimizers.SGD(0.5), loss=tf.keras.losses.BinaryCrossentropy(from_logits=True))
    hist = model.fit(train, epochs=3, verbose=0)
    losses = hist.history["loss"]
    assert losses[-1] < losses[0], losses
