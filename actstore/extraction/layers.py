"""Layer numbering for extraction: the shared rules of :mod:`actstore.format.layersel`.

Layer ``i`` is the output of block ``i``; negatives count from the deepest block; ``"all"``,
``"middle"`` (one block: ``(n - 1) // 2``) and ``"last"`` are accepted; duplicates are
dropped. The embedding output (the input of block 0) is asked for with the string
``"embeddings"`` and stored as layer ``-1`` (lmprobe's number); ``-1`` itself is the deepest
block, never the embeddings.
"""

from __future__ import annotations

from ..format.layersel import EMBEDDINGS_STORED, LayerSpec, model_layers, resolve_layers

__all__ = ["EMBEDDINGS", "resolve_model_layers"]

#: Stored layer number of the embedding output (what capture keys it by).
EMBEDDINGS = EMBEDDINGS_STORED
LayerArg = LayerSpec


def resolve_model_layers(spec: LayerArg, num_layers: int) -> list[int]:
    """Stored layer numbers to extract, in the order given (``-1`` = embedding output).

    Examples
    --------
    >>> resolve_model_layers("middle", 12)
    [5]
    >>> resolve_model_layers([4, 8, -1, 8], 12)
    [4, 8, 11]
    >>> resolve_model_layers(["embeddings", 0], 12)
    [-1, 0]
    """
    return resolve_layers(spec, model_layers(num_layers), where=f"a model with {num_layers} layers")
