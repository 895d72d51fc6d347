"""tusk for Python: tusk datasets streamed into numpy, PyTorch and TensorFlow.

Reading is tusk's Rust code on a Rust thread (the GIL is released while it reads and
decodes); Python receives finished batches, dicts of numpy arrays that own the decoded
buffers::

    import tusk
    ds = tusk.Dataset("hdfs://nn:8020/data/clicks", batch_size=1024, seed=7)
    for epoch in range(3):
        ds.set_epoch(epoch)
        for batch in ds:            # {"user_id": int64[B], "history": Ragged(values, offsets), ...}
            ...

Layouts (the same for TFRecord, Parquet and CSV input):

* a column with exactly one value per record: a 1-D array ``[B]``;
* a multi-valued column: ``Ragged(values, offsets)``, ``values[offsets[i]:offsets[i+1]]`` the
  values of record ``i`` (``offsets`` int64, length ``B + 1``); ``Ragged.to_padded()`` pads;
* an image column written by ``tusk images normalize``: float32 ``[B, C, H, W]``.

dtypes: integers int64, floats float32, bytes/strings numpy object arrays of ``bytes``.

Files on any tusk storage (a local path, ``hdfs://``, ``webhdfs://``): ``read_bytes``,
``write_bytes`` (atomic: a reader sees the old file or the whole new one, never a part),
``exists``, ``list_dir``, ``delete``; with them a training script keeps its checkpoints on HDFS::

    buf = io.BytesIO(); torch.save(state, buf)
    tusk.write_bytes("hdfs://nn:8020/ckpt/epoch-3.pt", buf.getvalue())

See ``tusk.torch`` (an IterableDataset for DataLoader and DDP) and ``tusk.tf`` (a tf.data.Dataset).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from typing import Any, Dict, Iterator, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from . import _tusk
from ._tusk import (
    ConfigError,
    DataError,
    Error,
    NotFoundError,
    StorageError,
    delete,
    exists,
    list_dir,
    read_bytes,
    write_bytes,
)

__version__ = _tusk.__version__

__all__ = [
    "Dataset",
    "Ragged",
    "Model",
    "load",
    "sql",
    "write_dataset",
    "world",
    "read_bytes",
    "write_bytes",
    "exists",
    "list_dir",
    "delete",
    "Error",
    "DataError",
    "StorageError",
    "NotFoundError",
    "ConfigError",
]


class Ragged(NamedTuple):
    """A multi-valued column of a batch: record ``i`` holds ``values[offsets[i]:offsets[i+1]]``."""

    values: Any
    offsets: Any

    def lengths(self) -> np.ndarray:
        """Values per record."""
        return np.diff(np.asarray(self.offsets))

    def to_padded(self, pad: Any = 0, max_len: Optional[int] = None) -> Tuple[np.ndarray, np.ndarray]:
        """``([B, L] array, lengths)``: each record's values left-aligned, then ``pad``; ``L`` is
        the longest record, or ``max_len`` (longer records are cut)."""
        values = np.asarray(self.values)
        offsets = np.asarray(self.offsets)
        lengths = np.diff(offsets)
        width = int(lengths.max(initial=0)) if max_len is None else int(max_len)
        out = np.full((len(lengths), width), pad, dtype=values.dtype)
        for i, (a, n) in enumerate(zip(offsets[:-1], lengths)):
            n = min(int(n), width)
            out[i, :n] = values[a : a + n]
        return out, np.minimum(lengths, width)


def world(rank: Optional[int] = None, world_size: Optional[int] = None) -> Tuple[int, int]:
    """This process's ``(rank, world_size)``: the arguments when given, else the environment of
    torchrun (``RANK``/``WORLD_SIZE``), OpenMPI (``OMPI_COMM_WORLD_RANK``/``_SIZE``), MPICH/Intel
    MPI (``PMI_RANK``/``PMI_SIZE``) or Slurm (``SLURM_PROCID``/``SLURM_NTASKS``), else ``(0, 1)``."""
    if (rank is None) != (world_size is None):
        raise ConfigError("give both rank and world_size, or neither (they are then read from the environment)")
    if rank is None:
        rank, world_size = 0, 1
        for r, s in (
            ("RANK", "WORLD_SIZE"),
            ("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE"),
            ("PMI_RANK", "PMI_SIZE"),
            ("SLURM_PROCID", "SLURM_NTASKS"),
        ):
            if r in os.environ and s in os.environ:
                try:
                    rank, world_size = int(os.environ[r]), int(os.environ[s])
                except ValueError:
                    raise ConfigError(f"environment: {r}={os.environ[r]!r} / {s}={os.environ[s]!r} are not integers") from None
                break
    if not isinstance(rank, int) or not isinstance(world_size, int) or world_size < 1 or not 0 <= rank < world_size:
        raise ConfigError(f"rank {rank!r} of world_size {world_size!r}: expected 0 <= rank < world_size")
    return rank, world_size


def _wrap(batch: Dict[str, Any]) -> Dict[str, Any]:
    for k, v in batch.items():
        if type(v) is tuple:
            batch[k] = Ragged(v[0], v[1])
    return batch


class Dataset:
    """Batches of a tusk dataset directory, TFRecord/Parquet/CSV file or glob, on any storage
    tusk reads (a path or ``file://``, ``hdfs://``, ``webhdfs://``, ``memory://``).

    Each rank of ``world_size`` reads its own share of every epoch (balanced by record count,
    every record exactly once); with ``shuffle`` the files are put in a seeded order per epoch
    and records are shuffled within windows of ``shuffle_window`` records (default: about
    64 MiB of decoded data). The same ``seed`` and epoch give the same batches.

    Arguments: ``columns`` (all when None; a name that does not exist is an error), ``ragged``
    (columns to read as ``Ragged`` whatever the schema says: records lacking them give empty
    rows), ``prefetch`` (batches decoded ahead), ``rank``/``world_size`` (default: from the
    environment, see :func:`world`).
    """

    def __init__(
        self,
        url: str,
        batch_size: int,
        columns: Optional[Sequence[str]] = None,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
        rank: Optional[int] = None,
        world_size: Optional[int] = None,
        prefetch: int = 4,
        ragged: Optional[Sequence[str]] = None,
        shuffle_window: Optional[int] = None,
    ) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"batch_size must be a positive integer, not {batch_size!r}")
        if shuffle_window is not None and (not isinstance(shuffle_window, int) or shuffle_window < 1):
            raise ConfigError(f"shuffle_window must be a positive integer, not {shuffle_window!r}")
        if not isinstance(prefetch, int) or prefetch < 1:
            raise ConfigError(f"prefetch must be a positive integer, not {prefetch!r}")
        if not isinstance(seed, int) or seed < 0:
            raise ConfigError(f"seed must be a non-negative integer, not {seed!r}")
        if isinstance(columns, str) or isinstance(ragged, str):
            raise ConfigError("columns and ragged are lists of names, not one string")
        self.url = str(url)
        self.batch_size = batch_size
        self.columns = list(columns) if columns is not None else None
        self.ragged = list(ragged) if ragged is not None else None
        self.shuffle = bool(shuffle)
        self.seed = seed
        self.drop_last = bool(drop_last)
        self.rank, self.world_size = world(rank, world_size)
        self.prefetch = prefetch
        self.shuffle_window = shuffle_window
        self._epoch = 0
        self._start = 0  # batch of the epoch the next iteration starts at
        self._pos = 0  # batches of the epoch delivered so far by this process
        self._plan_obj: Optional[_tusk.Plan] = None
        self._pid = -1
        self._plan()

    # --- the opened plan, re-opened in a forked or unpickled copy
    def _plan(self) -> "_tusk.Plan":
        if self._plan_obj is None or self._pid != os.getpid():
            self._plan_obj = _tusk.Plan(self.url, self.columns, self.ragged)
            self._pid = os.getpid()
        return self._plan_obj

    def __getstate__(self) -> Dict[str, Any]:
        d = dict(self.__dict__)
        d["_plan_obj"] = None
        return d

    def __setstate__(self, d: Dict[str, Any]) -> None:
        self.__dict__.update(d)

    # --- what is read
    @property
    def records(self) -> int:
        """Records per epoch (all ranks together)."""
        return self._plan().records

    @property
    def fields(self) -> List[Tuple[str, str, str, Optional[List[int]]]]:
        """``[(name, dtype, layout, shape)]`` of the batch columns: dtype ``int64``/``float32``/
        ``bytes``; layout ``scalar`` (``[B]``), ``ragged`` (``Ragged``) or ``fixed`` (``[B, *shape]``)."""
        return self._plan().fields

    @property
    def files(self) -> List[Tuple[str, int]]:
        """``[(url, records)]`` of the files read, in stored order."""
        return self._plan().files

    def __len__(self) -> int:
        """Batches this rank yields per epoch."""
        return self._plan().part_batches(self.batch_size, self.drop_last, self.rank, self.world_size)

    # --- epochs and resume
    def set_epoch(self, epoch: int) -> None:
        """Read epoch ``epoch`` next (its order is fixed by the seed and the epoch), from its start.
        As with PyTorch's DistributedSampler, the order only changes when this is called."""
        if not isinstance(epoch, int) or epoch < 0:
            raise ConfigError(f"epoch must be a non-negative integer, not {epoch!r}")
        self._epoch, self._start, self._pos = epoch, 0, 0

    @property
    def epoch(self) -> int:
        return self._epoch

    def state(self) -> Dict[str, Any]:
        """Where reading stands: pass it to :meth:`load_state` (of a Dataset with the same
        arguments) to continue the epoch with the very batches that would have come next."""
        return {
            "epoch": self._epoch,
            "batch": self._pos,
            "seed": self.seed,
            "batch_size": self.batch_size,
            "world_size": self.world_size,
            "records": self.records,
            "shuffle": self.shuffle,
        }

    def load_state(self, state: Dict[str, Any]) -> None:
        """Continue from :meth:`state`: the next iteration yields the rest of that epoch."""
        try:
            epoch, batch = int(state["epoch"]), int(state["batch"])
        except (KeyError, TypeError, ValueError):
            raise ConfigError(f"not a tusk Dataset state: {state!r}") from None
        for k in ("seed", "batch_size", "world_size", "records", "shuffle"):
            if k in state and state[k] != self.state()[k]:
                raise ConfigError(
                    f"state was saved with {k}={state[k]!r} but this dataset has {k}={self.state()[k]!r}: the order would differ"
                )
        if epoch < 0 or batch < 0:
            raise ConfigError(f"not a tusk Dataset state: {state!r}")
        self._epoch, self._start, self._pos = epoch, batch, batch

    # --- reading
    def _read(self, part: int, parts: int, skip: int, arrow: bool = False) -> Any:
        return self._plan().read(
            self.batch_size,
            self.shuffle,
            self.seed,
            self.drop_last,
            self.shuffle_window,
            self.prefetch,
            self._epoch,
            part,
            parts,
            skip,
            arrow,
        )

    def __iter__(self) -> Iterator[Dict[str, Any]]:
        self._pos = self._start
        batches = self._read(self.rank, self.world_size, self._start)
        try:
            for b in batches:
                self._pos += 1
                yield _wrap(b)
        finally:
            batches.close()
        # A finished epoch is finished: iterating again repeats it from its start.
        self._start = 0

    def arrow(self) -> "Any":
        """This rank's batches of the epoch as a ``pyarrow.RecordBatchReader``, through the Arrow C
        stream interface (the decoded buffers are handed over, not copied): scalar columns as
        int64/float32/large_binary, multi-valued ones as ``large_list``, fixed shapes as nested
        ``fixed_size_list``. Each call reads the epoch (from the resume point, if any) again."""
        import pyarrow as pa

        return pa.RecordBatchReader.from_stream(self._read(self.rank, self.world_size, self._start, arrow=True))


def write_dataset(url: str, data: Any, format: str = "parquet", shards: int = 1) -> int:
    """Write ``data`` as a tusk dataset directory at ``url`` (any storage tusk writes): shard files
    balanced by record count, then ``_manifest.json`` last (create-only: an existing dataset is
    never overwritten). ``data``: a ``pyarrow.Table``/``RecordBatch``, a pandas ``DataFrame``, a
    dict of columns, a list of row dicts, or an iterable of record batches. ``format``: ``parquet``, ``tfrecord``,
    ``tfrecord.gz`` or ``tfrecord.zlib``. Returns the records written."""
    return _tusk.write_arrow(str(url), _ipc(data), format, shards)


def _ipc(data: Any) -> bytes:
    """``data`` (a pyarrow Table/RecordBatch, a pandas DataFrame, a dict of columns or a list of
    row dicts) as an Arrow IPC stream."""
    import pyarrow as pa

    if isinstance(data, dict):
        table = pa.table(data)
    elif isinstance(data, list):
        table = pa.Table.from_pylist(data)
    elif isinstance(data, (pa.Table, pa.RecordBatch)):
        table = data
    elif type(data).__name__ == "DataFrame" and hasattr(data, "to_dict"):
        table = pa.Table.from_pandas(data, preserve_index=False)
    else:
        batches = list(data)
        if not batches:
            raise ConfigError("no record batches given")
        table = pa.Table.from_batches(batches)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as w:
        w.write(table)
    return sink.getvalue().to_pybytes()


class Model:
    """A committed version of a tusk model (``tusk.load``): its config, fitted features, dense
    weights (PyTorch names and shapes) and embedding rows as numpy arrays, and ``predict``, which
    scores rows exactly as ``tusk predict`` does."""

    def __init__(self, url: str, version: Optional[int] = None) -> None:
        self._m = _tusk.Model(str(url), version)

    @property
    def version(self) -> int:
        return self._m.version

    @property
    def url(self) -> str:
        return self._m.url

    @property
    def config(self) -> Dict[str, Any]:
        """The resolved training config."""
        return json.loads(self._m.config_json)

    @property
    def features(self) -> Dict[str, Any]:
        """The feature space fitted on the training data (sparse columns, dense statistics)."""
        return json.loads(self._m.features_json)

    def weights(self) -> Dict[str, np.ndarray]:
        """Dense tensors by PyTorch name: ``{k: torch.from_numpy(v) for k, v in m.weights().items()}``
        loads into a module with the same layout."""
        return self._m.weights()

    def embeddings(self) -> Tuple[np.ndarray, np.ndarray]:
        """``(keys, rows)``: the table's hashed keys (uint64, ascending) and rows (float32 ``[n, dim]``)."""
        return self._m.embeddings()

    def predict(self, rows: Any) -> np.ndarray:
        """Probabilities for ``rows`` (a DataFrame, Arrow table, dict of columns or list of row
        dicts carrying the model's feature columns), in order: the scores ``tusk predict`` writes
        for the same rows, the version's entity tables filling columns a row lacks."""
        return self._m.predict_ipc(_ipc(rows))

    def __repr__(self) -> str:
        return f"tusk.Model({self.url!r}, version={self.version})"


def load(url: str, version: Optional[int] = None) -> Model:
    """Load a committed version of the model at ``url`` (the newest when ``version`` is None)."""
    return Model(url, version)


def _tusk_cli(tusk_bin: Optional[str]) -> str:
    exe = tusk_bin or os.environ.get("TUSK_BIN") or shutil.which("tusk")
    if not exe:
        raise ConfigError(
            "tusk.sql runs the tusk CLI's SQL engine (DataFusion is not in the wheel): put `tusk` on PATH, set TUSK_BIN or pass tusk_bin="
        )
    return exe


def sql(query: str, tables: Dict[str, str], tusk_bin: Optional[str] = None) -> "Any":
    """Run SQL (statements separated by ``;``, the last one a query) over ``tables`` (name → URL of
    a CSV/Parquet file, directory or glob) with ``tusk sql``'s DataFusion engine, and return the
    result as a ``pyarrow.Table`` (integers int64, floats float32, strings as in the dataset).

    The engine is the CLI's (``tusk`` on PATH, ``TUSK_BIN`` or ``tusk_bin``): DataFusion would
    add about 15 minutes to the wheel's build and tens of MB to it, for a call whose cost is
    the query, not the process start."""
    import pyarrow.parquet as pq

    exe = _tusk_cli(tusk_bin)
    if not tables:
        raise ConfigError("tusk.sql: give at least one table (name → URL)")
    with tempfile.TemporaryDirectory(prefix="tusk-sql-") as d:
        qfile = os.path.join(d, "query.sql")
        with open(qfile, "w") as f:
            f.write(query)
        out = os.path.join(d, "out")
        cmd = [exe, "sql", "--query", qfile, "--output", out, "--format", "parquet", "--shards", "1"]
        for name, url in tables.items():
            cmd += ["--table", f"{name}={url}"]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            msg = r.stderr.strip().splitlines()
            raise DataError(msg[-1] if msg else f"tusk sql exited with {r.returncode}")
        return pq.read_table(out)
