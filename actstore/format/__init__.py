"""The v2 format: spec constants, index metadata, the shard catalog, the streaming writer, the
lazy reader and ``verify``.

The bottom layer above the leaves (``errors``, ``config``): it imports nothing else of
actstore. Third-party imports are numpy and pyarrow at module level, fsspec only when a URL is
not local (``format/source.py``), and never the ``safetensors`` package (headers are parsed and
built by hand, ``format/header.py``). torch and ml_dtypes are imported only when a caller passes
a torch tensor or asks for one (``Dataset.torch``, ``dtype="bfloat16"``).

Where each concept lives: ``spec`` (index path, dtype table, reserved columns, limits),
``metadata`` (strict parsing of the index's schema metadata), ``info`` (``DatasetInfo``),
``header`` + ``shards`` (safetensors headers, entries, checksums), ``layersel`` (layer
selection), ``durable`` (atomic, durable file replacement), ``writer`` / ``reader`` / ``verify``.
"""

from __future__ import annotations

__all__: list[str] = []
