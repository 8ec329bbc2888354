"""What push, pull and metadata share: where the index lives, the pull record, quiet bars."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from ..format import spec

INDEX_PATH = spec.INDEX_PATH
RECORD = os.path.join(".actstore", "hub.json")

__all__ = ['INDEX_PATH', 'RECORD', 'bars', 'is_index']


def is_index(path: str) -> bool:
    return path.startswith(spec.INDEX_DIR + "/")



@contextlib.contextmanager
def bars(enabled: bool) -> Iterator[None]:
    """The Hub client's progress bars off for the block when ``enabled`` is False."""
    from huggingface_hub.utils import (
        are_progress_bars_disabled,
        disable_progress_bars,
        enable_progress_bars,
    )

    was_off = are_progress_bars_disabled()
    if not enabled:
        disable_progress_bars()
    try:
        yield
    finally:
        if not enabled and not was_off:
            enable_progress_bars()
