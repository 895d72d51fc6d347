"""tusk datasets as ``tf.data.Dataset`` s.

``tusk.tf.dataset(url, batch_size, ...)`` takes ``tusk.Dataset``'s arguments and returns a
``tf.data.Dataset`` of dicts with a declared ``element_spec``: one-value columns ``[None]``,
multi-valued ones ``tf.RaggedTensor`` (``[None, None]``, int64 row splits), images
``[None, C, H, W]``; int64, float32 and ``tf.string``. Each pass over it (each Keras epoch) reads
the next epoch of the seeded order, starting from ``epoch``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as _tf

import tusk as _tusk_pkg
from tusk import Ragged

__all__ = ["dataset", "element_spec"]

_DTYPES = {"int64": _tf.int64, "float32": _tf.float32, "bytes": _tf.string}


def element_spec(fields: Any) -> dict:
    """The ``element_spec`` of batches with these ``tusk.Dataset.fields``."""
    spec = {}
    for name, dtype, layout, shape in fields:
        t = _DTYPES[dtype]
        if layout == "scalar":
            spec[name] = _tf.TensorSpec([None], t)
        elif layout == "fixed":
            spec[name] = _tf.TensorSpec([None, *shape], t)
        else:
            spec[name] = _tf.RaggedTensorSpec([None, None], t, ragged_rank=1, row_splits_dtype=_tf.int64)
    return spec


def dataset(url: str, batch_size: int, epoch: int = 0, **kwargs: Any) -> "_tf.data.Dataset":
    ds = _tusk_pkg.Dataset(url, batch_size, **kwargs)
    spec = element_spec(ds.fields)
    state = {"epoch": epoch}

    def gen():
        ds.set_epoch(state["epoch"])
        state["epoch"] += 1
        for b in ds:
            out = {}
            for k, v in b.items():
                if isinstance(v, Ragged):
                    vals = v.values
                    if vals.dtype == object:
                        vals = np.array(list(vals), dtype=object) if len(vals) else np.zeros([0], dtype=object)
                    out[k] = _tf.RaggedTensor.from_row_splits(vals, v.offsets, validate=False)
                else:
                    out[k] = v
            yield out

    out = _tf.data.Dataset.from_generator(gen, output_signature=spec)
    # The batch count is known: Keras then knows an epoch's steps.
    return out.apply(_tf.data.experimental.assert_cardinality(len(ds)))
