"""``hf://`` reads of scattered rows are a few requests per shard file, not one per row (#16).

The Hub rate-limits resolve calls, so one ``get()`` of 1 % of the rows must not send one range
request per row: the ranges of one shard file are merged (``HUB_GAP``) and the dataset's source
counts the requests it sent (``ds.source.counters``), with or without the cache.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import actstore
from actstore.testing import HubServer

from .conftest import WRITE, write_dataset

N, DIM, SHARD_ROWS, LAYERS = 4000, 16, 1000, (0, 1, 2)  # 64 B rows, 4 shards per layer


def _tensor_gets(hub: HubServer, repo_id: str) -> list[str]:
    return [t for m, t, _ in hub.requests if m == "GET" and f"{repo_id}/resolve/" in t and "/tensors/" in t]


@pytest.mark.parametrize("cached", [False, True], ids=["uncached", "cached"])
def test_get_of_one_percent_of_rows_is_a_few_requests_per_shard(hub: HubServer, repo_id: str,
                                                                tmp_path: Path, cached: bool) -> None:
    from actstore.cache import UnifiedCache

    path = tmp_path / "ds"
    write_dataset(path, n=N, dim=DIM, layers=LAYERS, shard_bytes=SHARD_ROWS * DIM * 4, views=False)
    actstore.push_dataset(path, repo_id, token=WRITE, progress=False)
    ds = actstore.open_dataset(f"hf://datasets/{repo_id}",
                               cache=UnifiedCache(tmp_path / "cache") if cached else False,
                               storage_options={"endpoint": hub.endpoint, "token": WRITE})
    rows = np.sort(np.random.default_rng(1).choice(N, N // 100, replace=False))
    files = len(LAYERS) * np.unique(rows // SHARD_ROWS).size  # shard files holding the rows
    hub.reset_counters()
    before = ds.source.counters["requests"]
    got = ds.get(rows)
    np.testing.assert_array_equal(got, actstore.open_dataset(path).get(rows))
    sent = _tensor_gets(hub, repo_id)
    # per shard file: its header, then one merged read of its rows (not one request per row)
    assert 0 < len(sent) <= 2 * files < rows.size, sent
    assert ds.source.counters["requests"] - before == len(sent)
    if cached:  # read again: from the cache, no request
        hub.reset_counters()
        np.testing.assert_array_equal(ds.get(rows), got)
        assert _tensor_gets(hub, repo_id) == []


def test_far_apart_rows_stay_separate_requests_of_exact_bytes(hub: HubServer, repo_id: str,
                                                              tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Ranges further apart than ``HUB_GAP`` are not merged: the gap would cost more than a request."""
    from actstore.format import ranges

    path = tmp_path / "ds"
    write_dataset(path, n=N, dim=DIM, layers=(0,), shard_bytes=N * DIM * 4, views=False)
    actstore.push_dataset(path, repo_id, token=WRITE, progress=False)
    ds = actstore.open_dataset(f"hf://datasets/{repo_id}", cache=False,
                               storage_options={"endpoint": hub.endpoint, "token": WRITE})
    ds.get([0])  # the shard's header
    hub.reset_counters()
    monkeypatch.setattr(ranges, "HUB_GAP", 64)  # rows 10 apart (576 B of gap) are now "far"
    np.testing.assert_array_equal(ds.get([10, 20, 30])[:, 0],
                                  actstore.open_dataset(path).get([10, 20, 30])[:, 0])
    assert len(_tensor_gets(hub, repo_id)) == 3
    assert hub.bytes_served(repo_id, "tensors/") == 3 * DIM * 4
