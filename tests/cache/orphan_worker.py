"""A cache writer that stops for good in the middle of publishing a segment (run as a script).

Usage: python orphan_worker.py LOCATION READY_FILE
Puts one entry and flushes; the data file is published, then the index is written to its
temporary name and the process waits (forever) instead of renaming it, so a SIGKILL leaves
exactly what a writer killed mid-admission leaves: a ``.seg`` without ``.idx`` and a
``.idx.tmp-*`` file. READY_FILE is created at that moment.
"""

from __future__ import annotations

import os
import sys
import time


def main() -> None:
    location, ready = sys.argv[1], sys.argv[2]
    real = os.replace

    def stalled_replace(src: str, dst: str) -> None:
        if str(dst).endswith(".idx"):
            open(ready, "w").close()
            while True:
                time.sleep(1)
        real(src, dst)

    os.replace = stalled_replace
    from actstore.cache import UnifiedCache

    cache = UnifiedCache(location)
    cache.store.put("k:orphan", os.urandom(300_000))
    cache.flush()


if __name__ == "__main__":
    main()
