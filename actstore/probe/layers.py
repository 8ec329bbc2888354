"""Layer specifications shared by probes and sweeps: ints, negatives, "all", "middle", "last"."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Union

from ..errors import InvalidArgumentError, LayerNotFoundError

LayerSpec = Union[int, str, Sequence[int]]  # noqa: UP007 (a runtime alias on Python 3.10)

__all__ = ["LayerSpec", "resolve_layers"]


def resolve_layers(spec: LayerSpec, available: Sequence[int]) -> list[int]:
    """Resolve a layer spec against the layers a dataset stores.

    Negative integers count from the end of ``available`` (``-1`` is the deepest stored
    layer); ``"middle"`` is the middle third, as in lmprobe; duplicates are dropped.

    Examples
    --------
    >>> resolve_layers("middle", list(range(12)))
    [4, 5, 6, 7]
    >>> resolve_layers([-1, 0, -1], [0, 3, 6])
    [6, 0]
    """
    avail = list(available)
    if not avail:
        raise LayerNotFoundError("The data holds no layers.")
    n = len(avail)
    if isinstance(spec, str):
        if spec == "all":
            return avail
        if spec == "last":
            return [avail[-1]]
        if spec == "middle":
            return avail[n // 3 : n - n // 3] or [avail[n // 2]]
        raise InvalidArgumentError(
            f"Unknown layer spec {spec!r}; use an int, a list of ints, 'all', 'middle' or 'last'."
        )
    values = [spec] if isinstance(spec, int) else list(spec)
    out: list[int] = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int):
            raise InvalidArgumentError(f"Layers must be integers; got {v!r}.")
        layer = v
        if v < 0 and v not in avail:
            if -v > n:
                raise LayerNotFoundError(f"Layer {v} is out of range; the data has {n} layers {avail}.")
            layer = avail[v]
        if layer not in avail:
            raise LayerNotFoundError(f"Layer {v} is not stored; stored layers are {avail}.")
        if layer not in out:
            out.append(layer)
    if not out:
        raise InvalidArgumentError("The layer list is empty; name at least one layer.")
    return out
