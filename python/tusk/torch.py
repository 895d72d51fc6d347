"""tusk datasets as PyTorch ``IterableDataset`` s.

Items are whole batches (use ``DataLoader(ds, batch_size=None, num_workers=k)``) as dicts of
tensors shared with the decoded buffers (``torch.from_numpy``, no copy); bytes columns stay
numpy object arrays; multi-valued columns are ``tusk.Ragged(values, offsets)`` of tensors.

Under DataLoader workers and DDP every record is read exactly once per epoch: the epoch is split
over ``world_size × num_workers`` consumers by record count (rank ``r``'s worker ``w`` is
consumer ``r * num_workers + w``). Call :meth:`Dataset.set_epoch` before each epoch, as with
``DistributedSampler``.

Resume: ``ds.state(batches=n)`` after your loop consumed ``n`` batches of the epoch (the
DataLoader delivers its workers' batches in turn, so ``n`` determines what each worker has
read), saved with your checkpoint; ``ds.load_state(state)`` then makes the next epoch pass
yield exactly the batches that were still to come.
"""

from __future__ import annotations

from typing import Any, Dict, Iterator, List, Optional, Tuple

import numpy as np
import torch as _torch
from torch.utils.data import IterableDataset, get_worker_info

import tusk as _tusk_pkg
from tusk import ConfigError, Ragged

__all__ = ["Dataset", "to_torch"]


def _tensor(a: Any) -> Any:
    if isinstance(a, np.ndarray) and a.dtype != object:
        return _torch.from_numpy(a)
    return a


def to_torch(batch: Dict[str, Any]) -> Dict[str, Any]:
    """A numpy batch of :class:`tusk.Dataset` as tensors (no copy)."""
    out = {}
    for k, v in batch.items():
        out[k] = Ragged(_tensor(v.values), _tensor(v.offsets)) if isinstance(v, Ragged) else _tensor(v)
    return out


def _round_robin(counts: List[int], n: int) -> Tuple[List[int], int]:
    """After ``n`` batches delivered in turn by workers with ``counts`` batches each (a worker
    that has no more is passed over, as DataLoader does with an IterableDataset's workers):
    the batches taken from each, and the worker whose turn is next."""
    k = len(counts)
    taken = [0] * k
    left = n
    nxt = 0
    while left > 0:
        active = [j for j in range(k) if taken[j] < counts[j]]
        if not active:
            break
        # Whole rounds at once (only from the start of a round).
        rounds = min(min(counts[j] - taken[j] for j in active), left // len(active)) if nxt == 0 else 0
        if rounds > 0:
            for j in active:
                taken[j] += rounds
            left -= rounds * len(active)
            continue
        for j in range(nxt, k):
            if taken[j] < counts[j]:
                taken[j] += 1
                left -= 1
                nxt = (j + 1) % k
                if left == 0:
                    break
        else:
            nxt = 0
    return taken, nxt


class Dataset(IterableDataset):
    """``tusk.Dataset``'s arguments; an IterableDataset of batches of tensors."""

    def __init__(self, url: str, batch_size: int, **kwargs: Any) -> None:
        super().__init__()
        self.ds = _tusk_pkg.Dataset(url, batch_size, **kwargs)
        self._start = 0
        self._pos = 0

    @property
    def fields(self):
        return self.ds.fields

    @property
    def records(self) -> int:
        return self.ds.records

    def __len__(self) -> int:
        return len(self.ds)

    def set_epoch(self, epoch: int) -> None:
        self.ds.set_epoch(epoch)
        self._start = self._pos = 0

    def state(self, batches: Optional[int] = None) -> Dict[str, Any]:
        """The resume point after ``batches`` batches of the current epoch (default: those this
        process iterated itself, right without DataLoader workers)."""
        s = self.ds.state()
        s["batch"] = self._pos if batches is None else int(batches)
        return s

    def load_state(self, state: Dict[str, Any]) -> None:
        self.ds.load_state(state)
        self._start = self._pos = int(state["batch"])

    def __iter__(self) -> Iterator[Dict[str, Any]]:
        info = get_worker_info()
        workers, wid = (info.num_workers, info.id) if info is not None else (1, 0)
        ds = self.ds
        parts = ds.world_size * workers
        first = ds.rank * workers
        plan = ds._plan()
        counts = [plan.part_batches(ds.batch_size, ds.drop_last, first + j, parts) for j in range(workers)]
        taken, turn = _round_robin(counts, self._start)
        # DataLoader asks its workers in turn from worker 0: after a resume, worker 0 plays the
        # consumer whose turn was next, so the batches come in the uninterrupted order.
        consumer = (turn + wid) % workers
        batches = ds._read(first + consumer, parts, taken[consumer])
        self._pos = self._start
        try:
            for b in batches:
                self._pos += 1
                yield to_torch(_tusk_pkg._wrap(b))
        finally:
            batches.close()
        self._start = 0
