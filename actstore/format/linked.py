"""Token shards a writer adopts as they are: hard-linked (or byte-copied), never decoded.

``merge`` of full-sequence parts (:mod:`actstore.extraction.merge`) hands each part's token
shards (spec section 5b: the shards after the last-token ones) to
:meth:`~actstore.format.writer.DatasetWriter.add` as :class:`LinkedTokens`; the writer
re-encodes only the last tokens and the pooled views, and writes an index whose
``token_shard`` values are shifted to the merged shard numbers. A shard file's bytes stay
as they are (same safetensors key and header: every token shard of layer ``L`` holds
``hidden.layer_{L}``), so its recorded size and sha256 carry over unchanged.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import IntegrityError

__all__ = ["LinkedFile", "LinkedTokens", "TokenShard"]


@dataclass(frozen=True)
class TokenShard:
    """One token shard of a finished dataset: per stored layer, ``(path, size, sha256)``.

    ``num_prompts``/``num_tokens`` are the shard's descriptor (metadata ``shards[i]``).
    """

    files: Mapping[int, tuple[str, int, str]]
    num_prompts: int
    num_tokens: int


@dataclass(frozen=True)
class LinkedTokens:
    """The token shards of a batch of full-sequence rows, and where each row's tokens are.

    ``shard[i]``/``start[i]``: the row's tokens before its last one start at row
    ``start[i]`` of ``shards[shard[i]]``; ``counts[i]`` tokens in all (the last one is in
    the last-token shards, written by the writer from the batch's ``hidden``).
    """

    shards: Sequence[TokenShard]
    shard: np.ndarray
    start: np.ndarray
    counts: np.ndarray


class LinkedFile:
    """A finished shard file in the writer's staging area, duck-typed as a
    :class:`~.shardfile.StreamingTensorFile` (``path``, ``wait``, ``close``, ``discard``).

    The source is hard-linked into ``path`` (same inode: no byte is read or written); where
    a link is impossible (another file system, no link support), its bytes are copied.
    """

    def __init__(self, path: str, source: str, size: int, sha256: str) -> None:
        got = os.stat(source).st_size
        if got != size:
            raise IntegrityError(
                f"{source}: holds {got} bytes but its dataset records {size}; the part is "
                "damaged: extract that shard again (delete its part folder), then merge."
            )
        try:
            os.link(source, path)
            self.linked = True
        except OSError:
            shutil.copyfile(source, path)
            self.linked = False
        self.path, self.size, self.sha256 = path, size, sha256

    def wait(self) -> None:
        """Nothing is pending: the file is complete."""

    def close(self, *, sync: bool = False) -> tuple[int, str]:
        """``(size, sha256)`` as the source dataset recorded them (the bytes are the same)."""
        return self.size, self.sha256

    def discard(self) -> None:
        """Remove the staged name (the source keeps its own)."""
        if os.path.exists(self.path):
            os.remove(self.path)
