"""A cache-warming worker process for the concurrency test (run as a script).

Usage: python warm_worker.py LOCATION START COUNT GO_FILE [STORAGE_OPTIONS_JSON]
Puts COUNT synthetic prompts starting at START, flushing every 25, after GO_FILE appears.
"""

from __future__ import annotations

import json
import os
import sys
import time

import numpy as np


def vector(i: int, dim: int = 64) -> np.ndarray:
    """The deterministic vector of prompt ``i`` (so any process can check it)."""
    return np.random.default_rng(i).standard_normal((1, dim)).astype(np.float32)


def main() -> None:
    location, start, count, go = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    opts = json.loads(sys.argv[5]) if len(sys.argv) > 5 else None
    from actstore.cache import UnifiedCache

    cache = UnifiedCache(location, storage_options=opts)
    while not os.path.exists(go):  # start all workers at the same moment
        time.sleep(0.005)
    for i in range(start, start + count):
        cache.put("m", [f"prompt {i}"], {"last_token": {0: vector(i), 1: -vector(i)}})
        if (i - start) % 25 == 24:
            cache.flush()
    cache.flush()


if __name__ == "__main__":
    main()
