"""The sample order of a stream: a pure function of its plan and the epoch.

Samples (rows, or tokens in token mode) are numbered ``0 .. n-1`` in storage order. One epoch's
order on one rank is built in three steps, each seeded only by ``(seed, epoch, ...)``:

1. **Blocks.** The samples are cut into contiguous blocks of ``block`` samples (the last may be
   shorter); with ``shuffle`` the blocks are permuted. Concatenated, they give the epoch's
   global sequence ``G`` of ``n`` samples. Each block is one contiguous byte range per layer.
2. **Ranks.** ``G`` is cut into ``world`` equal contiguous parts of ``per_rank`` samples. With
   ``drop_last`` the ``n % world`` samples at the end of ``G`` are left out (each epoch others,
   as ``G`` is reshuffled); otherwise ``per_rank = ceil(n / world)`` and the parts run past the
   end of ``G`` wrap around to its start, repeating at most ``world - 1`` samples (as torch's
   ``DistributedSampler`` pads). Every rank gets the same number of samples, hence of batches,
   so DDP never waits on a rank that ran out.
3. **Windows.** A rank's part is cut into consecutive windows of ``window`` samples (``window /
   block`` blocks, drawn from all over the dataset by step 1); with ``shuffle`` each window is
   permuted. The result is cut into batches of ``batch`` samples; with ``drop_last`` a last short
   batch is dropped, otherwise it is yielded short (it is equally short on every rank).

Nothing here depends on the number of DataLoader workers, threads or timing: workers only
choose which batches of this sequence they produce (see :mod:`.loader`).

Mixing: consecutive samples of a batch come from up to ``window / block`` randomly chosen
blocks. On a dataset sorted by label (4 classes, the worst case) the lag-1 autocorrelation of
consecutive labels is about ``block / window``: measured 0.06 for 16 blocks per window, 0.24 for
4, 0.96 for 1, against 0.01 for a full permutation and 1.0 in storage order
(``tests/stream/test_stream_order.py::test_mixing_quality_label_autocorrelation``). Raise
``window`` (memory) or lower ``block_rows`` (smaller reads) to mix better.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

__all__ = ["Plan"]

#: Domain tags of the seed sequences, so block and window permutations never share a stream.
_BLOCKS, _WINDOWS = 0, 1


def _rng(*key: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(k) for k in key])))


@dataclass(frozen=True)
class Plan:
    """Everything the order depends on; the order of every epoch follows from it alone."""

    n: int
    block: int
    window: int
    batch: int
    shuffle: bool
    seed: int
    world: int
    rank: int
    drop_last: bool

    # -- sizes ---------------------------------------------------------------------------
    @property
    def per_rank(self) -> int:
        """Samples of ``G`` given to each rank (before the last-batch rule)."""
        return self.n // self.world if self.drop_last else -(-self.n // self.world)

    @property
    def batches(self) -> int:
        """Batches each rank yields per epoch (the same on every rank)."""
        return self.per_rank // self.batch if self.drop_last else -(-self.per_rank // self.batch)

    @property
    def samples(self) -> int:
        """Samples each rank yields per epoch."""
        return self.batches * self.batch if self.drop_last else self.per_rank

    def order_key(self) -> dict[str, Any]:
        """The fields that fix the order on every rank (a resume state must match them)."""
        d = asdict(self)
        d.pop("rank")  # ranks move in lockstep: any rank's position is every rank's
        return d

    # -- step 1: blocks ------------------------------------------------------------------
    def blocks(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """``(block ids in G order, start of each in G)`` for one epoch."""
        nb = -(-self.n // self.block)
        ids = _rng(self.seed, epoch, _BLOCKS).permutation(nb) if self.shuffle else np.arange(nb)
        lens = np.full(nb, self.block, dtype=np.int64)
        lens[-1] = self.n - self.block * (nb - 1)
        starts = np.concatenate(([0], np.cumsum(lens[ids])[:-1])).astype(np.int64)
        return ids.astype(np.int64), starts

    def pieces(self, blocks: tuple[np.ndarray, np.ndarray], g0: int, g1: int) -> list[tuple[int, int]]:
        """The contiguous sample ranges ``[a, b)`` that make up ``G[g0:g1]``, in order
        (``0 <= g0 <= g1 <= n``)."""
        ids, starts = blocks
        if g1 <= g0:
            return []
        j0 = int(np.searchsorted(starts, g0, side="right")) - 1
        j1 = int(np.searchsorted(starts, g1 - 1, side="right")) - 1
        out = []
        for j in range(j0, j1 + 1):
            base = int(ids[j]) * self.block
            lo = max(g0, int(starts[j])) - int(starts[j])
            end = int(starts[j + 1]) if j + 1 < len(starts) else self.n
            hi = min(g1, end) - int(starts[j])
            out.append((base + lo, base + hi))
        return out

    # -- steps 2 and 3: this rank's windows ----------------------------------------------
    @property
    def windows(self) -> int:
        return -(-self.samples // self.window) if self.samples else 0

    def window_pieces(self, blocks: tuple[np.ndarray, np.ndarray], k: int) -> list[tuple[int, int]]:
        """Sample ranges of window ``k`` of this rank, in window order."""
        q0, q1 = k * self.window, min((k + 1) * self.window, self.samples)
        g0 = self.rank * self.per_rank + q0
        g1 = self.rank * self.per_rank + q1
        out: list[tuple[int, int]] = []
        while g0 < g1:  # padding wraps past the end of G to its start (drop_last=False only)
            a = g0 % self.n
            take = min(g1 - g0, self.n - a)
            out += self.pieces(blocks, a, a + take)
            g0 += take
        return out

    def window_perm(self, epoch: int, k: int) -> np.ndarray:
        """Position in window ``k``'s buffer of each of its samples, in yield order."""
        size = self.window_size(k)
        if not self.shuffle:
            return np.arange(size, dtype=np.int64)
        return _rng(self.seed, epoch, _WINDOWS, self.rank, k).permutation(size).astype(np.int64)

    def batch_span(self, b: int) -> tuple[int, int]:
        """This rank's positions ``[q0, q1)`` of batch ``b``."""
        return b * self.batch, min((b + 1) * self.batch, self.samples)

    def shares(self, batches: range) -> dict[int, list[tuple[int, int]]]:
        """The positions ``[lo, hi)`` inside each window (``0 <= lo < hi <= window``) that
        ``batches`` take, in yield order, keyed by window in the order the batches need them.

        A DataLoader worker's batches are every ``num_workers``-th one: it reads only these
        positions of each window, so the workers of a rank together read each sample once.
        """
        out: dict[int, list[tuple[int, int]]] = {}
        for b in batches:
            q0, q1 = self.batch_span(b)
            for k in self.batch_windows(b):
                lo, hi = max(q0, k * self.window) - k * self.window, min(q1, (k + 1) * self.window) - k * self.window
                segs = out.setdefault(k, [])
                if segs and segs[-1][1] == lo:
                    segs[-1] = (segs[-1][0], hi)
                else:
                    segs.append((lo, hi))
        return out

    def window_size(self, k: int) -> int:
        """Samples in window ``k`` of this rank."""
        return min(self.window, self.samples - k * self.window)

    def batch_windows(self, b: int) -> range:
        """The windows batch ``b`` draws from."""
        q0, q1 = self.batch_span(b)
        return range(q0 // self.window, (q1 - 1) // self.window + 1)
