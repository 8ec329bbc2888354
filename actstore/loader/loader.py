"""``Stream``: the training loader over a dataset (an ``IterableDataset`` when torch is here).

The batch sequence of a rank is fixed by :class:`~.order.Plan` and the epoch. A DataLoader
worker ``w`` of ``W`` produces batches ``w, w + W, w + 2W, ...`` of that sequence; DataLoader
asks its workers round-robin and returns their batches in order, so the loader yields the same
sequence for any ``num_workers`` (``tests/stream/test_stream_order.py`` checks it). Where a
window is read in yield order (local shuffled windows of rows >= 4 KiB, and every window with
``shuffle=False``) a worker reads only the samples of its own batches, so the workers of a rank
read each sample once between them (``tests/stream/test_stream_buffers.py::
test_each_dataloader_worker_reads_only_its_own_rows``); otherwise (remote or int8/fp8 shuffled
windows, whose samples are read as whole block ranges and then gathered) every worker reads the
whole windows its batches draw from, and the OS page cache or the ``UnifiedCache`` serves the
repeats.

Reading: a window is read as its contiguous pieces (parts of blocks), one thread task per
piece, ``prefetch`` windows ahead of the one being served; each piece is one contiguous byte
range per layer (reads and copies release the GIL), read by ``preadv`` straight into the
window's buffer, placed at the shards' page phase (kernel copies page to page). Memory per
iterator (per DataLoader worker): at most ``prefetch + 3 + ceil(batch_size / window)`` windows
and three batches, plus the buffers of batches the caller still holds, whatever the dataset's
size. With ``shuffle`` each batch is gathered (``np.take(..., out=)``, on threads) from its
window(s) into a batch buffer and handed out without a copy (``torch.from_numpy``); where the
window is in yield order a batch is a slice of it, no copy. Window and batch buffers are reused
(no page faults), within an epoch and across epochs (the stream keeps them until it is dropped),
once the caller has dropped every batch viewing them (:class:`~.buffers.BufferPool`), so a batch
kept by the caller is never written over. In a DataLoader worker (torch batches in the stored
dtype) the buffers are fresh shared memory instead, read into directly: a batch crosses to the
main process as a handle, not a copy (a buffer the main process may still view is never reused).

Epochs: ``set_epoch`` must reach the iterating copy, so use DataLoader's default
``persistent_workers=False`` (workers are started per epoch with the stream as it is then).
Workers may be started by fork, spawn or forkserver (the stream and its dataset pickle).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np

from ..errors import ConfigMismatchError, InvalidArgumentError, LayerNotFoundError, require
from ..format import spec
from ..format.dtypes import bf16_bits_to_f32, f32_to_bf16_bits
from ..format.layersel import request, resolve_layers
from ..format.locations import (
    data_offset,
    read_locations,
    scatter_locations,
    scatters,
    stored_code,
    view_layout,
)
from ..format.parallel import in_pieces, piece_count
from ..format.reader import Dataset
from ..format.rows import storage_numpy
from .buffers import PAGE, BufferPool
from .order import Plan
from .samples import RowSpace, TokenSpace, fingerprint

try:  # an IterableDataset when torch is installed; importing actstore alone never gets here
    from torch.utils.data import IterableDataset as _Base
except ImportError:  # pragma: no cover - exercised only without torch
    _Base = object  # type: ignore[assignment,misc]

__all__ = ["STATE_FORMAT", "Stream"]

#: The ``format`` entry of every state dict; a dict without it is not ours.
STATE_FORMAT = "actstore.stream/1"
#: Default block size in bytes of all requested layers, and blocks per window.
BLOCK_BYTES = 4 << 20
WINDOW_BLOCKS = 16
#: Batch gathers split across threads once a batch is this large.
GATHER_PIECE_BYTES = 4 << 20
#: Local shuffled windows are read row by row into their shuffled places (one ``preadv`` per
#: run of rows, no gather copy) when a row is at least this large; smaller rows are read whole
#: and gathered (a ``preadv`` buffer per tiny row costs more than the copy it saves).
SCATTER_ROW_BYTES = 4096
_DTYPES = ("float32", "float16", "bfloat16")


def _positive(name: str, value: Any, *, zero: bool = False) -> int:
    ok = isinstance(value, (int, np.integer)) and not isinstance(value, bool) and (value >= 0 if zero else value > 0)
    if not ok:
        raise InvalidArgumentError(
            f"{name} must be a{' non-negative' if zero else ' positive'} integer; got {value!r}."
        )
    return int(value)


def _dtype_name(dtype: Any) -> str | None:
    if dtype is None:
        return None
    name = str(dtype).removeprefix("torch.")
    name = {"float": "float32", "half": "float16", "bf16": "bfloat16"}.get(name, name)
    if name not in _DTYPES:
        try:
            name = np.dtype(dtype).name
        except TypeError:
            pass
    if name not in _DTYPES:
        raise InvalidArgumentError(
            f"The 'dtype' argument of stream must be one of {list(_DTYPES)} or None (the stored "
            f"dtype); got {dtype!r}."
        )
    return name


def _rank_world(rank: int | None, world_size: int | None) -> tuple[int, int]:
    """``rank``/``world_size`` as given, else from torch.distributed, else RANK/WORLD_SIZE."""
    if rank is None and world_size is None:
        try:
            import torch.distributed as dist

            if dist.is_available() and dist.is_initialized():
                return dist.get_rank(), dist.get_world_size()
        except ImportError:  # pragma: no cover - no torch
            pass
        env_r, env_w = os.environ.get("RANK"), os.environ.get("WORLD_SIZE")
        if env_r is None and env_w is None:
            return 0, 1
        try:
            rank, world_size = int(env_r or "0"), int(env_w or "1")
        except ValueError:
            raise InvalidArgumentError(
                f"RANK={env_r!r} and WORLD_SIZE={env_w!r} must be integers; pass rank= and "
                "world_size= to stream() instead."
            ) from None
    if rank is None or world_size is None:
        raise InvalidArgumentError(
            f"Pass both rank= and world_size= (got rank={rank!r}, world_size={world_size!r})."
        )
    world = _positive("world_size", world_size)
    r = _positive("rank", rank, zero=True)
    if r >= world:
        raise InvalidArgumentError(f"rank must be in [0, world_size); got rank={r} with world_size={world}.")
    return r, world


def _worker() -> tuple[int, int, bool]:
    """``(worker id, number of workers, True)`` in a DataLoader worker, else ``(0, 1, False)``."""
    if _Base is object:
        return 0, 1, False
    from torch.utils.data import get_worker_info

    info = get_worker_info()
    return (0, 1, False) if info is None else (int(info.id), int(info.num_workers), True)


def _select_layers(ds: Dataset, view: str | None, layers: Any) -> list[int]:
    """Stored numbers of the requested layers (every present one by default); missing raise."""
    v = view_layout(ds, view)
    wanted = list(v.layers) if layers is None else layers
    if not isinstance(wanted, (str, int, np.integer)):
        wanted = list(wanted)
    present = [request(L) for L in ds.present_layers(view)]
    got = resolve_layers(wanted, present, where=f"view {v.name!r} of the dataset")
    if not got:
        raise LayerNotFoundError("stream() needs at least one layer; got an empty list.")
    return got


def _select_columns(ds: Dataset, columns: Sequence[str]) -> dict[str, np.ndarray]:
    """The requested index columns as arrays (one value per row of ``ds``)."""
    cols = list(columns)
    have = ds.index.column_names
    missing = [c for c in cols if c not in have]
    if missing:
        raise InvalidArgumentError(f"The dataset has no column(s) {missing}; its columns are {have}.")
    clash = [c for c in cols if c in ("row", "token") or c.startswith("layer_")]
    if clash:
        raise InvalidArgumentError(f"Columns {clash} clash with the batch keys 'row', 'token', 'layer_*'.")
    return {c: ds.column(c) for c in cols}


def _block_window(block_rows: int | None, window: int | None, sample_bytes: int) -> tuple[int, int]:
    """Block and window sizes in samples: as given, or about 4 MiB blocks, 16 per window."""
    block = block_rows if block_rows is not None else max(16, min(1 << 16, BLOCK_BYTES // sample_bytes))
    block = _positive("block_rows", block)
    win = _positive("window", window if window is not None else WINDOW_BLOCKS * block)
    if win < block:
        raise InvalidArgumentError(
            f"window ({win} samples) must be at least one block (block_rows={block}); "
            f"pass window >= block_rows, e.g. window={WINDOW_BLOCKS * block}."
        )
    return block, win


class _Window:
    """One window's samples (per layer ``(m, dim)``, stored dtype), being read by threads.

    ``info`` (rows, tokens) is in buffer order. ``ordered``: the buffer holds the window's
    samples in yield order (storage order, or a local shuffled window read straight into its
    shuffled places), so a batch is a slice of it; then ``own`` lists the window positions the
    buffer holds (``None``: all of them; a DataLoader worker holds only its batches' positions).
    Otherwise the buffer is the whole window in storage order and ``perm[j]`` is the buffer
    position of the ``j``-th sample in yield order. ``shared``: per layer, the shared-memory
    tensor the buffer is (in a DataLoader worker), so a batch sliced from it crosses to the main
    process as a handle.
    """

    def __init__(self, raw: dict[int, np.ndarray], info: dict[str, np.ndarray], perm: np.ndarray | None,
                 futures: list[Future[None]], own: np.ndarray | None = None,
                 shared: dict[int, Any] | None = None) -> None:
        self.raw, self.info, self.perm, self.futures = raw, info, perm, futures
        self.own, self.shared = own, shared

    @property
    def ordered(self) -> bool:
        return self.perm is None

    def index(self, lo: int, hi: int) -> np.ndarray:
        """Buffer positions of the window's yield positions ``lo .. hi - 1``."""
        if self.perm is not None:
            return self.perm[lo:hi]
        c = lo if self.own is None else int(np.searchsorted(self.own, lo))
        return np.arange(c, c + hi - lo, dtype=np.int64)

    def ready(self) -> _Window:
        for f in self.futures:
            f.result()  # a read error surfaces here, in the iterating thread
        self.futures = []
        return self


def _positions(segs: list[tuple[int, int]], size: int) -> np.ndarray | None:
    """The positions of ``segs`` (sorted, disjoint), or ``None`` when they are all of ``0 .. size - 1``."""
    if sum(hi - lo for lo, hi in segs) == size:
        return None
    return np.concatenate([np.arange(lo, hi, dtype=np.int64) for lo, hi in segs])


def _clip(pieces: list[tuple[int, int]], segs: list[tuple[int, int]]) -> list[tuple[int, int, int]]:
    """The parts ``(a, b, at)`` of the sample ranges ``pieces`` (laid end to end, in window
    order) that fall in the window positions ``segs``; ``at`` is where each goes in a buffer
    holding only ``segs``' positions."""
    out, start, at, i = [], 0, 0, 0
    for a, b in pieces:
        end = start + b - a
        while i < len(segs) and segs[i][0] < end:
            lo, hi = max(segs[i][0], start), min(segs[i][1], end)
            if lo < hi:
                out.append((a + lo - start, a + hi - start, at))
                at += hi - lo
            if segs[i][1] > end:
                break
            i += 1
        start = end
    return out


class Stream(_Base):  # type: ignore[misc,valid-type]
    """A shuffled, sharded, resumable stream of batches over a dataset. See :func:`stream`.

    Each batch is a dict: ``"layer_<L>"`` per layer (``(n, dim)``, stored dtype unless
    ``dtype`` is given), ``"row"`` (the sample's row in the dataset), ``"token"`` (token
    mode: the token's position in its row), and each requested index column.
    """

    def __init__(self, ds: Dataset, *, layers: Any = None, view: str | None = None, tokens: bool = False,
                 batch_size: int = 1024, shuffle: bool = True, seed: int = 0, block_rows: int | None = None,
                 window: int | None = None, drop_last: bool = False, rank: int | None = None,
                 world_size: int | None = None, columns: Sequence[str] = (), dtype: Any = None,
                 prefetch: int = 1, threads: int = 4, skip_first_token: bool | str = False, device: Any = None,
                 numpy: bool | None = None, mask: str | None = None) -> None:
        if not isinstance(ds, Dataset):
            raise InvalidArgumentError(f"stream() needs an actstore Dataset (open_dataset(url)); got {type(ds).__name__}.")
        bs = _positive("batch_size", batch_size)
        self._prefetch = _positive("prefetch", prefetch, zero=True)
        self._threads = _positive("threads", threads)
        seed = _positive("seed", seed, zero=True)
        self._ds, self._view, self._tokens = ds, view, bool(tokens)
        v = view_layout(ds, view)
        if self._tokens and (v.storage != spec.STORAGE_FULL or v is not view_layout(ds)):
            raise InvalidArgumentError(
                f"tokens=True needs the full-sequence primary view; view {v.name!r} stores "
                f"{v.storage!r} rows. Use tokens=False (the default) to stream one sample per row."
            )
        if skip_first_token and not self._tokens:
            raise InvalidArgumentError("skip_first_token=True needs tokens=True (it drops a token of each row).")
        if mask is not None and not self._tokens:
            raise InvalidArgumentError(f"mask={mask!r} needs tokens=True (it selects tokens of each row).")
        self._codes = {L: stored_code(ds, L, view) for L in _select_layers(ds, view, layers)}
        self._phase = {L: data_offset(ds, L, view) for L in self._codes}
        self._dim = v.dim
        self._dtype = _dtype_name(dtype)
        self._columns = _select_columns(ds, columns)
        self._space: RowSpace | TokenSpace = TokenSpace(ds, skip_first_token=skip_first_token, mask=mask) \
            if self._tokens else RowSpace(ds)
        n = self._space.n
        if n == 0:
            raise InvalidArgumentError("The dataset holds no samples to stream (0 rows or tokens).")
        sample_bytes = sum(v.dim * storage_numpy(c).itemsize for c in self._codes.values())
        self._scatter = bool(shuffle) and scatters(ds, view) and \
            min(v.dim * storage_numpy(c).itemsize for c in self._codes.values()) >= SCATTER_ROW_BYTES
        block, win = _block_window(block_rows, window, sample_bytes)
        r, world = _rank_world(rank, world_size)
        self._plan = Plan(n, block, win, bs, bool(shuffle), seed, world, r, bool(drop_last))
        self._fingerprint = fingerprint(ds, self._space, v.name)
        if device is not None and not self._numpy_default(numpy):
            import torch

            device = torch.device(device)  # a bad name fails here, not in a worker
        self._device = device
        self._numpy = self._numpy_default(numpy)
        if not self._numpy and _Base is object:
            require("torch", "extract")
        self._epoch = 0
        self._pos = 0  # the next batch this process's iterator yields
        self._pos_worker: list[int] | None = None
        self._resume: tuple[int, list[int] | None] | None = None
        self._shared = False  # batches in shared memory (set per iteration, in workers)
        self._buffers: tuple[int, BufferPool, BufferPool] | None = None  # (pid, windows, batches)

    @staticmethod
    def _numpy_default(numpy: bool | None) -> bool:
        return (_Base is object) if numpy is None else bool(numpy)

    # -- the public surface --------------------------------------------------------------
    @property
    def plan(self) -> Plan:
        """The order's parameters (rank, world size, block, window, batch size, ...)."""
        return self._plan

    @property
    def epoch(self) -> int:
        return self._epoch

    @property
    def tokens(self) -> bool:
        """Whether a sample is a token (``tokens=True``) rather than a row."""
        return self._tokens

    @property
    def fingerprint(self) -> str:
        """A short hash of what the stream reads (dataset files, selected rows, sample space);
        a state dict is only accepted by a stream with the same fingerprint."""
        return self._fingerprint

    def __len__(self) -> int:
        """Batches per epoch on this rank (the same on every rank)."""
        return self._plan.batches

    def set_epoch(self, epoch: int) -> None:
        """Use epoch ``epoch``'s order from the next iteration on (as ``DistributedSampler``).

        After :meth:`load_state_dict`, setting the state's own epoch keeps the resume point.
        """
        epoch = _positive("epoch", epoch, zero=True)
        if self._resume is not None and epoch == self._epoch:
            return
        self._epoch, self._resume, self._pos, self._pos_worker = epoch, None, 0, None

    def state_dict(self, batch: int | None = None) -> dict[str, Any]:
        """Where this stream is: a small JSON-ready dict for :meth:`load_state_dict`.

        It says how many batches of the current epoch this process's iterator has yielded
        (inside a DataLoader worker, that worker's position, as torchdata's
        ``StatefulDataLoader`` saves it). With a plain DataLoader and workers the main process
        does not see the batches: pass ``batch=`` (batches consumed this epoch) instead.
        """
        pos, worker = (self._pos, self._pos_worker) if batch is None else (batch, None)
        if self._resume is not None and batch is None:
            pos, worker = self._resume
        return {"format": STATE_FORMAT, "fingerprint": self._fingerprint, "order": self._plan.order_key(),
                "epoch": self._epoch, "batch": _positive("batch", pos, zero=True),
                "worker": None if worker is None else list(worker)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume at the batch ``state`` names: the next iteration yields exactly the batches an
        uninterrupted run would have yielded after it.

        Raises
        ------
        ConfigMismatchError
            The state belongs to another dataset, world size, or order (seed, batch size,
            block, window, ...), so the guarantee could not be kept.
        InvalidArgumentError
            ``state`` is not a stream state dict.
        """
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT or not {
                "fingerprint", "order", "epoch", "batch"} <= set(state):
            raise InvalidArgumentError(
                f"Not a state dict of an actstore stream (expected a dict with format "
                f"{STATE_FORMAT!r}; got {type(state).__name__} "
                f"{sorted(state) if isinstance(state, dict) else ''}). Pass what Stream.state_dict() returned."
            )
        if state["fingerprint"] != self._fingerprint:
            raise ConfigMismatchError(
                f"The state was saved by a stream over another dataset or selection (fingerprint "
                f"{state['fingerprint']!r}, this one {self._fingerprint!r}); open the same dataset "
                "and rows to resume, or start a fresh stream."
            )
        mine, theirs = self._plan.order_key(), state["order"]
        if not isinstance(theirs, dict):
            raise InvalidArgumentError(f"The state's 'order' must be a dict; got {theirs!r}.")
        if theirs.get("world") != mine["world"]:
            raise ConfigMismatchError(
                f"The state was saved with world_size={theirs.get('world')!r}; this stream has "
                f"world_size={mine['world']}. Resume with the same number of ranks (each rank's "
                "samples depend on it)."
            )
        diff = sorted(k for k in mine if theirs.get(k) != mine[k])
        if diff:
            raise ConfigMismatchError(
                "The state was saved by a stream with another order: "
                + ", ".join(f"{k}={theirs.get(k)!r} (here {mine[k]!r})" for k in diff)
                + ". Pass the same arguments to stream() to resume."
            )
        epoch = _positive("epoch", state["epoch"], zero=True)
        b = _positive("batch", state["batch"], zero=True)
        worker = state.get("worker")
        if worker is not None and not (isinstance(worker, list) and len(worker) == 2 and all(
                isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in worker) and worker[0] < worker[1]):
            raise InvalidArgumentError(f"The state's 'worker' must be [id, num_workers] or None; got {worker!r}.")
        if b > self._plan.batches + (0 if worker is None else worker[1]):
            raise InvalidArgumentError(f"The state's batch {b} is past the {self._plan.batches} batches of an epoch.")
        self._epoch, self._resume = epoch, (b, None if worker is None else [int(worker[0]), int(worker[1])])
        self._pos, self._pos_worker = self._resume

    # -- iteration ----------------------------------------------------------------------
    def __iter__(self) -> Iterator[dict[str, Any]]:
        w, nw, in_worker = _worker()
        if self._device is not None and in_worker and self._device.type != "cpu":
            raise InvalidArgumentError(
                f"device={self._device!r} cannot be used inside DataLoader workers; pass "
                "pin_memory=True to the DataLoader and move batches in the training loop."
            )
        self._shared = in_worker and not self._numpy and self._dtype is None
        if in_worker:
            _refresh_after_fork(self._ds.source)
        resume, self._resume = self._resume, None
        if resume is None:
            first = w
        elif resume[1] is None:
            first = resume[0] + w
        elif resume[1] == [w, nw]:
            first = resume[0]
        else:
            raise ConfigMismatchError(
                f"The state was saved by DataLoader worker {resume[1][0]} of {resume[1][1]}; this is "
                f"worker {w} of {nw}. Resume with the same num_workers (StatefulDataLoader does)."
            )
        self._pos, self._pos_worker = first, (None if nw == 1 else [w, nw])
        return self._run(self._epoch, range(first, self._plan.batches, nw), nw)

    def _pools(self) -> tuple[BufferPool, BufferPool]:
        """This process's window and batch buffer pools, kept across epochs and iterations (a
        forked worker makes its own rather than writing over pages it shares with its parent)."""
        pools = self._buffers
        if pools is None or pools[0] != os.getpid():
            per_batch = -(-self._plan.batch // self._plan.window) + 1
            # window buffers: the held ones, the batch's, and one coming free (no page faults);
            # batch buffers: the one the loop holds, the one being made, one coming free
            pools = (os.getpid(), BufferPool(len(self._codes) * (self._prefetch + per_batch + 2)),
                     BufferPool(len(self._codes) * 3))
            self._buffers = pools
        return pools[1], pools[2]

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_buffers"] = None  # buffers stay in the process that made them
        return state

    def _run(self, epoch: int, batches: range, stride: int) -> Iterator[dict[str, Any]]:
        plan = self._plan
        blocks = plan.blocks(epoch)
        shares = plan.shares(batches)  # the windows this iterator needs, in order, and its part of each
        order = list(shares)
        where = {k: i for i, k in enumerate(order)}
        pool = ThreadPoolExecutor(self._threads, thread_name_prefix="actstore-stream")
        held: dict[int, _Window] = {}
        windows, out = self._pools()
        submitted = 0
        try:
            for b in batches:
                ks = plan.batch_windows(b)
                for k in [k for k in held if k < ks[0]]:
                    del held[k]  # its buffers come free once no batch views them
                upto = min(len(order), where[ks[-1]] + 1 + self._prefetch)
                while submitted < upto:
                    k = order[submitted]
                    held[k] = self._submit(pool, blocks, epoch, k, shares[k], windows)
                    submitted += 1
                batch = self._assemble(b, [(k, held[k].ready()) for k in ks], out)
                self._pos = b + stride
                yield batch
                del batch  # not held here while the next one is made: its buffer may come free
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def _window_buffers(self, m: int, buffers: BufferPool, shared: bool) -> tuple[dict[int, np.ndarray], Any]:
        """Per layer an ``(m, dim)`` buffer at the page phase of the shards' data (each block's
        ``preadv`` copies page to page): from the pool, or fresh shared memory (in a worker)."""
        if not shared:
            return {L: buffers.take((m, self._dim), storage_numpy(c), self._phase[L])
                    for L, c in self._codes.items()}, None
        import torch

        raw, tensors = {}, {}
        for L, code in self._codes.items():
            item = storage_numpy(code).itemsize
            nbytes = m * self._dim * item
            t = _shared_bytes(nbytes + PAGE)
            skip = (self._phase[L] - t.data_ptr()) % PAGE
            skip -= skip % item
            kind = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.int16}[code]
            t = t[skip : skip + nbytes].view(kind).view(m, self._dim)
            raw[L] = t.numpy().view(storage_numpy(code))
            tensors[L] = t.view(torch.bfloat16) if code == "BF16" else t
        return raw, tensors

    def _submit(self, pool: ThreadPoolExecutor, blocks: tuple[np.ndarray, np.ndarray], epoch: int,
                k: int, segs: list[tuple[int, int]], buffers: BufferPool) -> _Window:
        """Start reading window ``k``: only its positions ``segs`` (the iterator's batches)
        where the window is read in yield order, all of it otherwise."""
        plan = self._plan
        pieces = plan.window_pieces(blocks, k)
        size = plan.window_size(k)
        own = _positions(segs, size)
        scatter = self._scatter and plan.shuffle
        ordered = scatter or not plan.shuffle
        m = size if own is None or not ordered else own.size
        raw, shared = self._window_buffers(m, buffers, self._shared and ordered)
        infos: list[dict[str, np.ndarray]] = []
        futures = []
        if ordered and not scatter:  # storage order: read the samples of segs, end to end
            for a, b, at in _clip(pieces, segs):
                infos.append(self._space.rows(a, b))
                futures.append(pool.submit(self._read_piece, a, b, raw, at, None))
            info = {key: np.concatenate([i[key] for i in infos]) for key in infos[0]}
            return _Window(raw, info, None, futures, own, shared)
        perm = plan.window_perm(epoch, k)
        place = None
        if scatter:  # buffer position of each stored sample: its place in yield order (or -1: not ours)
            place = np.empty_like(perm)
            place[perm] = np.arange(perm.size, dtype=perm.dtype)
            if own is not None:
                compact = np.full(size, -1, dtype=np.int64)
                compact[own] = np.arange(own.size, dtype=np.int64)
                place = compact[place]
        at = 0
        for a, b in pieces:
            infos.append(self._space.rows(a, b))
            rows = None if place is None else place[at : at + b - a]
            futures.append(pool.submit(self._read_piece, a, b, raw, at, rows))
            at += b - a
        info = {key: np.concatenate([i[key] for i in infos]) for key in infos[0]}
        if place is None:
            return _Window(raw, info, perm, futures)
        pick = perm if own is None else perm[own]
        return _Window(raw, {key: values[pick] for key, values in info.items()}, None, futures, own, shared)

    def _read_piece(self, a: int, b: int, raw: dict[int, np.ndarray], at: int, rows: np.ndarray | None) -> None:
        """Read samples ``a .. b - 1``: to ``raw[at:]`` in order, or each to its ``rows`` entry
        (``-1``: not read, another worker's)."""
        shards, offsets = self._space.locate(a, b)
        if rows is not None and rows.size and rows.min() < 0:
            keep = rows >= 0
            shards, offsets, rows = shards[keep], offsets[keep], rows[keep]
        for L, buf in raw.items():
            if rows is None:
                read_locations(self._ds, L, shards, offsets, buf[at : at + b - a], view=self._view)
            elif rows.size:
                scatter_locations(self._ds, L, shards, offsets, buf, rows, view=self._view)

    def _assemble(self, b: int, windows: list[tuple[int, _Window]], buffers: BufferPool) -> dict[str, Any]:
        plan = self._plan
        q0, q1 = plan.batch_span(b)
        parts = []
        for k, win in windows:
            lo, hi = max(q0, k * plan.window) - k * plan.window, min(q1, (k + 1) * plan.window) - k * plan.window
            parts.append((win, win.index(lo, hi)))
        out: dict[str, Any] = {}
        for L, code in self._codes.items():
            if len(parts) == 1 and parts[0][0].ordered:  # the window is in yield order: a slice of it
                (win, idx), = parts
                c, n = int(idx[0]), idx.size
                if win.shared is not None:
                    out[f"layer_{request(L)}"] = win.shared[L][c : c + n]
                else:
                    out[f"layer_{request(L)}"] = self._convert(win.raw[L][c : c + n], code)
                continue
            raw, shared = self._batch_buffer(q1 - q0, code, buffers)
            at = 0
            for win, idx in parts:
                _gather(win.raw[L], idx, raw[at : at + idx.size])
                at += idx.size
            out[f"layer_{request(L)}"] = shared if shared is not None else self._convert(raw, code)
        info = {key: np.concatenate([win.info[key][idx] for win, idx in parts]) for key in parts[0][0].info}
        for key, values in info.items():
            out[key] = self._wrap(values)
        for name, col in self._columns.items():
            out[name] = self._wrap(col[info["row"]])
        return out

    def _batch_buffer(self, n: int, code: str, buffers: BufferPool) -> tuple[np.ndarray, Any]:
        """A batch's array (a reused one once the loop dropped its earlier batch), and in a
        DataLoader worker the shared-memory tensor it views: handing that tensor to the main
        process passes a handle instead of a copy."""
        if not self._shared:
            return buffers.take((n, self._dim), storage_numpy(code)), None
        import torch

        kind = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.int16}[code]
        t = _shared_bytes(n * self._dim * storage_numpy(code).itemsize).view(kind).view(n, self._dim)
        arr = t.numpy()
        return (arr.view(np.uint16) if code == "BF16" else arr), (t.view(torch.bfloat16) if code == "BF16" else t)

    def _convert(self, raw: np.ndarray, code: str) -> Any:
        """Stored rows to the requested dtype, as numpy or torch (bfloat16 bits kept as such)."""
        want = self._dtype or {"F32": "float32", "F16": "float16", "BF16": "bfloat16"}[code]
        if want == "bfloat16":
            bits = raw if code == "BF16" else f32_to_bf16_bits(raw.astype(np.float32, copy=False))
            if self._numpy:
                return bits.view(require("ml_dtypes", "bf16").bfloat16)  # type: ignore[attr-defined]
            import torch

            return self._place(torch.from_numpy(bits.view(np.int16)).view(torch.bfloat16))
        arr = bf16_bits_to_f32(raw) if code == "BF16" else raw
        arr = arr.astype(want, copy=False)
        return arr if self._numpy else self._place(_torch_from(arr))

    def _wrap(self, values: np.ndarray) -> Any:
        if self._numpy or values.dtype.kind not in "biuf":
            return values
        return self._place(_torch_from(values))

    def _place(self, t: Any) -> Any:
        if self._device is None:
            return t
        if self._device.type == "cuda":
            return t.pin_memory().to(self._device, non_blocking=True)
        return t.to(self._device)


def _shared_bytes(nbytes: int) -> Any:
    """A fresh uint8 torch tensor of ``nbytes`` in shared memory (a DataLoader worker's batch
    then crosses to the main process as a handle). ``UntypedStorage._new_shared`` makes it
    directly; ``empty().share_memory_()`` would also copy the fresh pages into it (measured
    61 vs 155 ms per 64 MiB here)."""
    import torch

    new = getattr(torch.UntypedStorage, "_new_shared", None)
    if new is None:  # pragma: no cover - older or newer torch without the private constructor
        return torch.empty(nbytes, dtype=torch.uint8).share_memory_()
    return torch.empty(0, dtype=torch.uint8).set_(new(nbytes))


def _refresh_after_fork(source: Any) -> None:
    """Give a forked DataLoader worker its own async fsspec filesystem.

    fsspec refuses to use an async filesystem (s3fs, HTTP) in a process forked from the one
    that made it ("This class is not fork-safe"); a fresh instance with the same arguments
    starts its own event loop here. The byte sources keep theirs as ``fs``.
    """
    fs = getattr(source, "fs", None)
    if fs is not None and getattr(fs, "async_impl", False) and getattr(fs, "_pid", os.getpid()) != os.getpid():
        source.fs = type(fs)(*fs.storage_args, **fs.storage_options)


def _gather(src: np.ndarray, idx: np.ndarray, out: np.ndarray) -> None:
    """``out[:] = src[idx]`` on parallel threads (numpy's take releases the GIL). The indices
    are in range by construction; ``mode="clip"`` spares numpy's buffered bounds check (3x)."""
    def piece(lo: int, hi: int) -> None:
        np.take(src, idx[lo:hi], axis=0, out=out[lo:hi], mode="clip")

    in_pieces(piece, idx.size, piece_count(idx.size, out.nbytes, GATHER_PIECE_BYTES))


def _torch_from(arr: np.ndarray) -> Any:
    import torch

    return torch.from_numpy(np.ascontiguousarray(arr))
