"""The one meaning of a layer, shared by extraction, the reader, probes and the CLI.

A *layer* is the output of a transformer block: layer ``i`` is the residual stream after
block ``i`` (as lmprobe numbers them). The embedding output (the input of block 0) is not a
block: it is asked for by name, ``"embeddings"``, and stored on disk as layer number ``-1``
(the lmprobe value, kept for compatibility). In the API ``-1`` never means the embeddings.

A layer specification is resolved against the layers *available* — a model's blocks (and
its embedding output), or the layers a dataset stores:

- an int ``i >= 0`` is block ``i``, which must be available;
- a negative int counts from the deepest available block, in numeric order (never in the
  order the layers were written): with blocks ``[8, 4, 0]`` stored, ``-1`` is 8, ``-2`` is 4;
- ``"last"`` is the deepest block (same as ``-1``);
- ``"middle"`` is ONE block: the lower of the two central blocks on an even count, i.e.
  ``blocks[(n - 1) // 2]`` in numeric order (for a 12-block model, block 5 — the output
  after half of the blocks). It is never a concatenation of several layers;
- ``"all"`` is every available block, in numeric order (the embeddings only by name);
- ``"embeddings"`` is the embedding output;
- a list of any of these (strings of digits such as ``"-2"`` too, for command lines); the
  result keeps the order given, without duplicates.

The result is a list of *stored layer numbers* (``-1`` for the embeddings), the numbers
used in file names and metadata. Pass them back to the reader through :func:`request`,
which turns ``-1`` into ``"embeddings"``. ``DatasetInfo.layers`` lists the stored layers
the same way (``"embeddings"``, never ``-1``), so every entry of it can be passed to the
reader as it is; :func:`stored` gives the number back.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable, Sequence
from typing import Union

from ..errors import InvalidArgumentError, LayerNotFoundError

__all__ = ["EMBEDDINGS", "EMBEDDINGS_STORED", "LayerSpec", "blocks_of", "explicit_layer", "explicit_layers",
           "model_layers", "request",
           "resolve_layer", "resolve_layers", "stored"]

#: The name that asks for the embedding output.
EMBEDDINGS = "embeddings"
#: The layer number under which the embedding output is stored on disk (lmprobe's value).
EMBEDDINGS_STORED = -1
_WORDS = ("all", "middle", "last")

LayerItem = Union[int, str]  # noqa: UP007 (a runtime alias on Python 3.10)
LayerSpec = Union[int, str, Sequence[LayerItem]]  # noqa: UP007


def blocks_of(available: Iterable[int | str]) -> list[int]:
    """The available block numbers (not the embeddings), in numeric order."""
    return sorted({stored(v) for v in available if stored(v) >= 0})


def request(stored: int) -> int | str:
    """What to pass to the reader to get the stored layer number ``stored`` back.

    Examples
    --------
    >>> request(-1), request(7)
    ('embeddings', 7)
    """
    return EMBEDDINGS if stored == EMBEDDINGS_STORED else stored


def stored(layer: int | str) -> int:
    """The stored layer number of an entry of ``DatasetInfo.layers`` (``"embeddings"`` -> ``-1``).

    Examples
    --------
    >>> stored("embeddings"), stored(3)
    (-1, 3)
    """
    return EMBEDDINGS_STORED if layer == EMBEDDINGS else int(layer)


def _describe(avail: Sequence[int], where: str) -> str:
    blocks = blocks_of(avail)
    extra = " and 'embeddings'" if EMBEDDINGS_STORED in avail else ""
    return f"in {where}, stored layers are {blocks}{extra}"


def _one_item(item: object, avail: Sequence[int], blocks: list[int], where: str) -> list[int]:
    if isinstance(item, str):
        text = item.strip()
        if text == EMBEDDINGS:
            if EMBEDDINGS_STORED not in avail:
                raise LayerNotFoundError(
                    f"Layer 'embeddings' is not available {_describe(avail, where)}. Extract "
                    "with layers=['embeddings', ...] to store the embedding output."
                )
            return [EMBEDDINGS_STORED]
        if text in _WORDS:
            if not blocks:
                raise LayerNotFoundError(f"Layer {item!r} needs at least one block; {_describe(avail, where)}.")
            if text == "all":
                return list(blocks)
            return [blocks[-1]] if text == "last" else [blocks[(len(blocks) - 1) // 2]]
        if text.lstrip("-").isdigit():
            return _one_item(int(text), avail, blocks, where)
        raise InvalidArgumentError(
            f"Unknown layer {item!r}; use ints (negatives count from the deepest block), "
            "'all', 'middle', 'last' or 'embeddings'."
        )
    if isinstance(item, bool) or not isinstance(item, numbers.Integral):
        raise InvalidArgumentError(
            f"Layers must be ints or one of 'all', 'middle', 'last', 'embeddings'; got {item!r}."
        )
    value = int(item)
    if value < 0:
        # negatives index the blocks in numeric order; -1 is never the embeddings
        if -value > len(blocks):
            valid = f" (valid negatives: -{len(blocks)}..-1)" if blocks else ""
            raise LayerNotFoundError(f"Layer {value} is out of range{valid}: {_describe(avail, where)}.")
        return [blocks[value]]
    if value not in blocks:
        if where.startswith("a model"):
            raise LayerNotFoundError(
                f"Layer {value} is out of range for {where} (valid: 0..{len(blocks) - 1} or "
                f"-{len(blocks)}..-1, or 'embeddings')."
            )
        raise LayerNotFoundError(f"Layer {value} is not stored {_describe(avail, where)}.")
    return [value]


def resolve_layers(spec: LayerSpec, available: Iterable[int | str], *, where: str = "the data") -> list[int]:
    """Resolve a layer specification to stored layer numbers (``-1`` = the embeddings).

    Parameters
    ----------
    spec : int, str or sequence of int/str
        See the module docstring.
    available : iterable of int or str
        The layers available: stored numbers (``-1`` = the embeddings) or the entries of
        ``DatasetInfo.layers`` (which name the embeddings ``"embeddings"``).
    where : str
        Named in error messages ("the dataset", "the model").

    Examples
    --------
    >>> resolve_layers("last", [8, 4, 0]), resolve_layers("middle", [8, 4, 0, 2])
    ([8], [2])
    >>> resolve_layers([-1, "embeddings", -2], [-1, 0, 3, 6])
    [6, -1, 3]
    """
    avail = [stored(v) for v in available]
    blocks = blocks_of(avail)
    if isinstance(spec, (str, numbers.Integral)):
        items: list[object] = [spec]
    else:
        try:
            items = list(spec)
        except TypeError:
            raise InvalidArgumentError(f"layers must be an int, a string or a list; got {spec!r}.") from None
    out: list[int] = []
    for item in items:
        for layer in _one_item(item, avail, blocks, where):
            if layer not in out:
                out.append(layer)
    if not out:
        raise InvalidArgumentError("The layer list is empty; name at least one layer.")
    return out


def resolve_layer(spec: LayerItem, available: Iterable[int | str], *, where: str = "the data") -> int:
    """Resolve a specification that must name exactly one layer (``"all"`` is refused).

    Examples
    --------
    >>> resolve_layer(-1, [-1, 0, 1]), resolve_layer("embeddings", [-1, 0, 1])
    (1, -1)
    """
    got = resolve_layers(spec, available, where=where)
    if len(got) != 1 or not isinstance(spec, (str, numbers.Integral)):
        raise InvalidArgumentError(f"Expected one layer; {spec!r} names {len(got)} layers {got}.")
    return got[0]


def model_layers(num_layers: int) -> list[int]:
    """The stored numbers a model with ``num_layers`` blocks can give: embeddings + blocks."""
    return [EMBEDDINGS_STORED, *range(num_layers)]


def explicit_layer(layer: object, *, what: str = "layers") -> int:
    """The stored number of a layer given on *write* (no model depth known): a block number
    ``>= 0`` or ``"embeddings"`` (stored ``-1``). Negatives are refused, since ``-1`` means
    the deepest block everywhere else and a writer or cache cannot know which that is.

    Examples
    --------
    >>> explicit_layer("embeddings"), explicit_layer(3)
    (-1, 3)
    """
    if isinstance(layer, str) and layer.strip() == EMBEDDINGS:
        return EMBEDDINGS_STORED
    if isinstance(layer, bool) or not isinstance(layer, numbers.Integral):
        raise InvalidArgumentError(
            f"{what}: a layer must be a block number (0, 1, ...) or 'embeddings'; got {layer!r}."
        )
    value = int(layer)
    if value < 0:
        raise InvalidArgumentError(
            f"{what}: got layer {value}. When writing, give the block number explicitly (0 is "
            "the first block) and the embedding output by name, 'embeddings': a negative layer "
            "counts from the deepest block, and here the model's depth is not known."
        )
    return value


def explicit_layers(layers: Iterable[object], *, what: str = "layers") -> list[int]:
    """:func:`explicit_layer` of every entry (order kept; duplicates are the caller's check)."""
    if isinstance(layers, (str, numbers.Integral)):
        layers = [layers]
    try:
        items = list(layers)
    except TypeError:
        raise InvalidArgumentError(f"{what} must be a list of layers; got {layers!r}.") from None
    return [explicit_layer(v, what=what) for v in items]
