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

    path, ds = _far_rows_dataset(hub, repo_id, tmp_path)
    hub.reset_counters()
    monkeypatch.setattr(ranges, "HUB_GAP", 64)  # rows 10 apart (576 B of gap) are now "far"
    np.testing.assert_array_equal(ds.get([10, 20, 30])[:, 0],
                                  actstore.open_dataset(path).get([10, 20, 30])[:, 0])
    assert len(_tensor_gets(hub, repo_id)) == 3
    assert hub.bytes_served(repo_id, "tensors/") == 3 * DIM * 4


def _far_rows_dataset(hub: HubServer, repo_id: str, tmp_path: Path) -> tuple[Path, actstore.Dataset]:
    path = tmp_path / "ds"
    write_dataset(path, n=N, dim=DIM, layers=(0,), shard_bytes=N * DIM * 4, views=False)
    actstore.push_dataset(path, repo_id, token=WRITE, progress=False)
    ds = actstore.open_dataset(f"hf://datasets/{repo_id}", cache=False,
                               storage_options={"endpoint": hub.endpoint, "token": WRITE})
    ds.get([0])  # the shard's header
    return path, ds


@pytest.mark.parametrize(("env", "requests", "served_rows"), [
    ({}, 1, 21),                                          # default 4 MiB gap: rows 10..30, one read
    ({"ACTSTORE_HUB_GAP": "64"}, 3, 3),                   # 576 B gaps are now "far": exact rows
    ({"ACTSTORE_HUB_GAP": "0"}, 3, 3),
    ({"ACTSTORE_HUB_GAP": "1K"}, 1, 21),                  # a unit, as in ACTSTORE_CACHE_MAX_BYTES
    ({"ACTSTORE_HUB_MAX_SPAN": "64K"}, 1, 21),            # the minimum span still holds 21 rows
], ids=["default", "gap-64", "gap-0", "gap-1K", "span-64K"])
def test_hub_gap_and_span_are_user_settings(hub: HubServer, repo_id: str, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch, env: dict[str, str],
                                            requests: int, served_rows: int) -> None:
    path, ds = _far_rows_dataset(hub, repo_id, tmp_path)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    hub.reset_counters()
    np.testing.assert_array_equal(ds.get([10, 20, 30]), actstore.open_dataset(path).get([10, 20, 30]))
    assert len(_tensor_gets(hub, repo_id)) == requests
    assert hub.bytes_served(repo_id, "tensors/") == served_rows * DIM * 4


def test_hub_max_span_splits_merged_reads(hub: HubServer, repo_id: str, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Rows 0 and 3999 are 250 KiB apart: one read under the default 16 MiB span, two reads
    of exact bytes when the span is 64 KiB (the gap alone would merge them)."""
    path, ds = _far_rows_dataset(hub, repo_id, tmp_path)
    rows = [1, N - 1]
    hub.reset_counters()
    ds.get(rows)
    assert len(_tensor_gets(hub, repo_id)) == 1
    monkeypatch.setenv("ACTSTORE_HUB_MAX_SPAN", "64K")
    hub.reset_counters()
    np.testing.assert_array_equal(ds.get(rows), actstore.open_dataset(path).get(rows))
    assert len(_tensor_gets(hub, repo_id)) == 2
    assert hub.bytes_served(repo_id, "tensors/") == 2 * DIM * 4


@pytest.mark.parametrize(("var", "value", "match"), [
    ("ACTSTORE_HUB_GAP", "-1", r"ACTSTORE_HUB_GAP '-1' is not a byte count.*non-negative"),
    ("ACTSTORE_HUB_GAP", "lots", r"ACTSTORE_HUB_GAP 'lots' is not a byte count.*'4M'"),
    ("ACTSTORE_HUB_MAX_SPAN", "1K", r"ACTSTORE_HUB_MAX_SPAN '1K' is 1024 bytes, below .*'64K'"),
], ids=["negative", "not-a-number", "span-too-small"])
def test_bad_hub_settings_are_refused_before_any_request(hub: HubServer, repo_id: str,
                                                         tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch,
                                                         var: str, value: str, match: str) -> None:
    from actstore.errors import InvalidArgumentError

    _, ds = _far_rows_dataset(hub, repo_id, tmp_path)
    monkeypatch.setenv(var, value)
    hub.reset_counters()
    with pytest.raises(InvalidArgumentError, match=match):
        ds.get([10, 20, 30])
    assert _tensor_gets(hub, repo_id) == []


def test_request_policy_arguments_beat_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from actstore.errors import InvalidArgumentError
    from actstore.format import ranges

    monkeypatch.setenv("ACTSTORE_HUB_GAP", "1M")
    monkeypatch.setenv("ACTSTORE_REMOTE_MAX_SPAN", "128K")
    assert ranges.request_policy(("hf",)) == (1 << 20, ranges.HUB_MAX_SPAN)
    assert ranges.request_policy(("hf",), gap=0, max_span="32M") == (0, 32 << 20)
    assert ranges.request_policy(("s3", "s3a")) == (ranges.REMOTE_GAP, 128 << 10)
    with pytest.raises(InvalidArgumentError, match=r"max_span= 100 is 100 bytes"):
        ranges.request_policy(("hf",), max_span=100)
