"""Orphans of writers killed mid-admission (SIGKILL): counted by stats, shown by ls, reclaimed by evict."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from actstore.cache import UnifiedCache
from actstore.cli import main

WORKER = os.path.join(os.path.dirname(__file__), "orphan_worker.py")


def _stalled_writer(location: str, tmp_path, name: str) -> subprocess.Popen:
    ready = tmp_path / f"{name}.ready"
    proc = subprocess.Popen([sys.executable, WORKER, location, str(ready)], env=dict(os.environ))
    deadline = time.monotonic() + 60
    while not ready.exists():
        assert proc.poll() is None and time.monotonic() < deadline, "worker did not reach the index write"
        time.sleep(0.02)
    return proc


def test_orphans_of_a_killed_writer_are_counted_listed_and_reclaimed(tmp_path, capsys):
    location = str(tmp_path / "cache")
    good = UnifiedCache(location)
    good.store.put("k:good", b"x" * 1000)
    good.flush()
    killed = _stalled_writer(location, tmp_path, "killed")
    os.kill(killed.pid, signal.SIGKILL)
    killed.wait()
    live = _stalled_writer(location, tmp_path, "live")  # mid-publish right now, still running
    try:
        cache = UnifiedCache(location)
        stats = cache.stats()
        assert stats["orphan_files"] == 4 and stats["orphan_bytes"] >= 2 * 300_000
        assert stats["segments"] == 1 and stats["entries"] == 1
        rows = [r for r in cache.ls() if r["orphan"]]
        assert len(rows) == 4 and sum(r["reclaimable"] for r in rows) == 2
        assert main(["cache", "--location", location, "ls"]) == 0
        assert capsys.readouterr().out.count("orphan of a killed writer") == 4
        assert cache.evict(max_bytes="1G") == []  # under the bound: no segment evicted ...
        after = cache.stats()
        assert after["orphan_files"] == 2 and after["reclaimed_orphans"] == 2  # ... the dead writer's files reclaimed
        assert cache.store.get("k:good") == b"x" * 1000
        assert main(["cache", "--location", location, "stats"]) == 0
        assert json.loads(capsys.readouterr().out)["orphan_files"] == 2  # the live writer's are kept
        left = sorted(os.listdir(os.path.join(location, "v1", "segments")))
        assert all(str(live.pid) in n for n in left if ".tmp-" in n or n.endswith(".seg") and n[:-4] + ".idx" not in left)
    finally:
        live.kill()
        live.wait()
    assert UnifiedCache(location).evict(max_bytes="1G") == []
    assert UnifiedCache(location).stats()["orphan_files"] == 0
