"""Sufficient statistics of a group of rows, accumulated block by block and merged exactly.

A :class:`Moments` holds a group's row count, mean and centred scatter matrix
``M = sum (x - mean)(x - mean)^T``, and, for LDA's Ledoit-Wolf shrinkage, two fourth-moment
matrices of ``u = x - ref`` about a fixed shift ``ref`` close to the mean (the mean of the
first block that held the group).

Numerics: each block's moments are centred on the block's own mean and merged with Chan et
al.'s pairwise update (``M = Ma + Mb + na nb / n (mb - ma)(mb - ma)^T``), so a large common
offset (activations ``1e4 + N(0, 1)``) costs no precision. Two groups accumulated with
different shifts (two workers) are brought to one shift exactly before their fourth moments
are added (:func:`shift_fourth`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Moments", "block_moments", "empty", "shift_fourth"]


@dataclass
class Moments:
    """Count, mean and centred scatter of one group of rows (+ LDA's shifted 4th moments).

    ``A21[i, j] = sum u_i**2 u_j`` and ``A22[i, j] = sum u_i**2 u_j**2`` with ``u = x - ref``.
    """

    n: int
    mean: np.ndarray
    M: np.ndarray
    ref: np.ndarray | None = None
    A21: np.ndarray | None = None
    A22: np.ndarray | None = None

    @property
    def fourth(self) -> bool:
        return self.A21 is not None

    def merge(self, other: Moments) -> None:
        """Add ``other``'s rows to these statistics, in place (Chan et al.'s pairwise merge)."""
        if other.n == 0:
            return
        if self.n == 0:
            self.n, self.mean, self.M = other.n, other.mean.copy(), other.M.copy()
            if self.fourth:
                assert other.ref is not None and other.A21 is not None and other.A22 is not None
                self.ref, self.A21, self.A22 = other.ref.copy(), other.A21.copy(), other.A22.copy()
            return
        if self.fourth:
            assert self.ref is not None and self.A21 is not None and self.A22 is not None
            A21, A22 = shift_fourth(other, self.ref)
            self.A21 += A21
            self.A22 += A22
        n = self.n + other.n
        delta = other.mean - self.mean
        self.M += other.M
        self.M += np.outer(delta, delta) * (self.n * other.n / n)
        self.mean = self.mean + delta * (other.n / n)
        self.n = n

    def copy(self) -> Moments:
        def c(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else a.copy()

        return Moments(self.n, self.mean.copy(), self.M.copy(), c(self.ref), c(self.A21), c(self.A22))

    def second(self) -> Moments:
        """The count, mean and scatter only (a view, no fourth moments)."""
        return Moments(self.n, self.mean, self.M)


def empty(d: int, fourth: bool) -> Moments:
    """Statistics of no rows, of width ``d``."""
    z = np.zeros((d, d))
    return Moments(0, np.zeros(d), z.copy(), np.zeros(d) if fourth else None,
                   z.copy() if fourth else None, z.copy() if fourth else None)


def block_moments(X: np.ndarray, ref: np.ndarray | None, *, overwrite: bool = False) -> Moments:
    """Moments of one block of rows (float64), centred on the block's mean; with ``ref``
    also the fourth moments of ``X - ref``. ``overwrite`` lets it centre ``X`` in place."""
    mean = X.mean(0)
    C = X if overwrite else X.copy()
    C -= mean
    m = Moments(X.shape[0], mean, C.T @ C)
    if ref is not None:
        # x - ref, near zero; float32 products (twice as fast) suffice here: the fourth moments
        # only enter LDA's shrinkage intensity, a scalar per class, summed in float64
        U = (C + (mean - ref)).astype(np.float32)
        U2 = U * U
        m.ref, m.A21, m.A22 = ref, (U2.T @ U).astype(np.float64), (U2.T @ U2).astype(np.float64)
    return m


def shift_fourth(m: Moments, ref: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``m``'s fourth moments about ``ref`` instead of ``m.ref`` (exact algebra).

    With ``u = x - m.ref``, ``s = m.ref - ref`` and ``v = u + s``:
    ``v_i**2 = u_i**2 + 2 s_i u_i + s_i**2``, expanded against ``v_j`` and ``v_j**2`` in terms
    of the sums of ``u``, ``u u^T``, ``u**2`` and the stored ``A21``, ``A22``.
    """
    assert m.ref is not None and m.A21 is not None and m.A22 is not None
    s = m.ref - ref
    if not s.any():
        return m.A21, m.A22
    delta = m.mean - m.ref
    S = m.n * delta                               # sum u
    A11 = m.M + m.n * np.outer(delta, delta)      # sum u u^T
    P = np.diag(A11).copy()                       # sum u**2
    n = m.n
    A21 = (m.A21 + np.outer(P, s) + 2 * s[:, None] * A11 + 2 * np.outer(s * S, s)
           + np.outer(s**2, S) + n * np.outer(s**2, s))
    # B[i, j] = sum u_i**2 u_j + ... : the shifted A21 appears on both sides of A22's expansion
    A22 = (m.A22 + 2 * m.A21 * s[None, :] + np.outer(P, s**2) + 2 * (s[:, None] * m.A21.T)
           + 4 * np.outer(s, s) * A11 + 2 * np.outer(s * S, s**2) + np.outer(s**2, P)
           + 2 * np.outer(s**2, s * S) + n * np.outer(s**2, s**2))
    return A21, A22
