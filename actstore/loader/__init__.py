"""The training loader: ``actstore.stream(ds, ...)`` feeds a training run from any dataset.

Batches come from contiguous blocks shuffled by ``(seed, epoch)`` and mixed inside a bounded
window, split over DDP ranks (equal batch counts) and DataLoader workers (the same order for
any ``num_workers``), resumable at any batch from a small JSON state. See :func:`stream`, and
:mod:`actstore.loader.order` for the exact order and its guarantees.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..format.reader import Dataset
from .loader import STATE_FORMAT, Stream
from .order import Plan

__all__ = ["STATE_FORMAT", "Plan", "Stream", "stream"]


def stream(ds: Dataset, *, layers: Any = None, view: str | None = None, tokens: bool = False,
           batch_size: int = 1024, shuffle: bool = True, seed: int = 0, block_rows: int | None = None,
           window: int | None = None, drop_last: bool = False, rank: int | None = None,
           world_size: int | None = None, columns: Sequence[str] = (), dtype: Any = None,
           prefetch: int = 1, threads: int = 4, skip_first_token: bool | str = False, device: Any = None,
           numpy: bool | None = None, mask: str | None = None) -> Stream:
    """A shuffled, sharded, resumable stream of batches for training.

    Parameters
    ----------
    ds : Dataset
        An open dataset (local, ``s3://``, ``hf://``, ``https://``; a cached one reads through
        its ``UnifiedCache``), or a selection of its rows.
    layers : int, str or list, optional
        The layers of each sample (all read from the same rows/tokens, as crosscoders and
        transcoders need); by default every stored layer of the view.
    view : str, optional
        The pooled view to stream (the primary one by default).
    tokens : bool
        One sample per token of a full-sequence dataset instead of one per row.
    batch_size : int
        Samples per batch.
    shuffle, seed : bool, int
        Shuffle blocks and windows by ``(seed, epoch)``; with ``shuffle=False`` the order is
        storage order (still split over ranks).
    block_rows, window : int, optional
        The two shuffle levels, in samples: contiguous blocks (one read each; default about
        4 MiB of the requested layers) and the window they are mixed in (default 16 blocks).
    drop_last : bool
        Drop the ``n % world_size`` samples that do not split evenly and a last short batch;
        otherwise ranks are padded by repeating at most ``world_size - 1`` samples and the
        last batch may be short (equally on every rank).
    rank, world_size : int, optional
        This process's part; by default from ``torch.distributed``, then ``RANK`` /
        ``WORLD_SIZE``, else the whole dataset.
    columns : list of str
        Index columns to carry along per sample (``row`` always is).
    dtype : optional
        ``"float32"``, ``"float16"`` or ``"bfloat16"`` (or the torch/numpy dtype); by default
        the stored dtype (bfloat16 stays bfloat16).
    prefetch, threads : int
        Windows read ahead, and read threads.
    skip_first_token : bool or "special"
        Token mode: leave out each row's first token (often an attention sink); ``"special"``
        only where it is a special token the tokenizer added (BOS, CLS; spec section 5c).
    device : optional
        Move batches to this device (without DataLoader workers; with workers use
        ``pin_memory=True`` and move them in the loop).
    numpy : bool, optional
        Yield numpy arrays instead of torch tensors (the default when torch is missing).
    mask : {"prompt", "continuation"}, optional
        Token mode: stream only each row's prompt tokens or only its generated continuation
        (the token masks of spec section 5c; also ``"first"``, ``"special"``).

    Returns
    -------
    Stream
        A ``torch.utils.data.IterableDataset`` when torch is installed (use it with
        ``DataLoader(stream, batch_size=None, num_workers=...)``), with ``set_epoch``,
        ``__len__``, ``state_dict`` and ``load_state_dict``.

    Examples
    --------
    >>> s = actstore.stream(ds, layers=[12], batch_size=4096, seed=0)        # doctest: +SKIP
    >>> loader = torch.utils.data.DataLoader(s, batch_size=None, num_workers=2)  # doctest: +SKIP
    >>> for epoch in range(3):                                               # doctest: +SKIP
    ...     s.set_epoch(epoch)
    ...     for batch in loader:
    ...         x = batch["layer_12"]
    """
    return Stream(ds, layers=layers, view=view, tokens=tokens, batch_size=batch_size, shuffle=shuffle,
                  seed=seed, block_rows=block_rows, window=window, drop_last=drop_last, rank=rank,
                  world_size=world_size, columns=columns, dtype=dtype, prefetch=prefetch, threads=threads,
                  skip_first_token=skip_first_token, device=device, numpy=numpy, mask=mask)
