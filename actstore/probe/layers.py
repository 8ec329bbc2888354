"""Layer specifications of probes and sweeps: the shared rules of :mod:`actstore.format.layersel`.

``-1`` (and every negative) counts from the deepest stored *block* in numeric order,
``"last"`` is that block, ``"middle"`` one block (``blocks[(n - 1) // 2]``), ``"all"`` every
block, and the embedding output is asked for as ``"embeddings"``. Fitted probes list their
layers the same way (``layers_``, ``"embeddings"`` never ``-1``), so ``ds.get(rows,
layers=probe.layers_)`` reads what the probe was fitted on.
"""

from __future__ import annotations

from ..format.layersel import EMBEDDINGS, LayerSpec, request, resolve_layer, resolve_layers, stored

__all__ = ["EMBEDDINGS", "LayerSpec", "request", "resolve_layer", "resolve_layers", "stored"]
