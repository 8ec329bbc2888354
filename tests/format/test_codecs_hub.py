"""A codec dataset on the Hub (the loopback test server): metadata, pull and remote reads."""

from __future__ import annotations

import uuid

import numpy as np
import pytest

import actstore
from actstore.format.writer import DatasetWriter

WRITE = "hf_test_write"
pytestmark = pytest.mark.hub


def test_int8_dataset_pushes_pulls_and_reads_remotely(hub, tmp_path):
    repo = f"org/q-{uuid.uuid4().hex[:10]}"
    x = np.random.default_rng(0).standard_normal((20, 8)).astype(np.float32)
    x[:, 1] *= 500
    with DatasetWriter(str(tmp_path / "q"), model="m", layers=[0, 1], dim=8, dtype="int8",
                       shard_bytes=6 * 8) as w:
        w.add([f"p{i}" for i in range(20)], hidden={0: x, 1: -x}, labels=[i % 2 for i in range(20)])
    local = actstore.open_dataset(str(tmp_path / "q"))
    actstore.push_dataset(str(tmp_path / "q"), repo, token=WRITE, progress=False)
    info = actstore.fetch_metadata(repo, token=WRITE)
    assert info.dtype == "int8" and info.codec["scale"] == "per_channel_affine"
    assert info.codec["rel_l2"] == local.info.codec["rel_l2"]
    pulled = actstore.pull_dataset(repo, token=WRITE, out=tmp_path / "p", layers=[1])
    np.testing.assert_array_equal(pulled.layer(1), local.layer(1))
    remote = actstore.open_dataset(f"hf://datasets/{repo}", storage_options={"token": WRITE})
    np.testing.assert_array_equal(remote.layer(0), local.layer(0))
    np.testing.assert_array_equal(remote.get([19, 2], [1])[:, 0], local.layer(1)[[19, 2]])


def test_dataset_card_states_the_codec_and_its_error(tmp_path):
    from actstore.hub.card import build_dataset_card

    x = np.random.default_rng(1).standard_normal((10, 8)).astype(np.float32)
    with DatasetWriter(str(tmp_path / "q"), model="org/m", layers=["embeddings", 2], dim=8,
                       dtype="fp8_e4m3") as w:
        w.add([f"p{i}" for i in range(10)], hidden={"embeddings": x, 2: x})
    info = actstore.open_dataset(str(tmp_path / "q")).info
    card = build_dataset_card(info, "org/q")
    assert "## Storage codec" in card and "**fp8_e4m3**" in card and "**per_channel_affine**" in card and "code × scale + offset" in card
    rel = info.codec["layers"][2]["rel_l2"]
    assert f"| 2 | {100 * rel:.3f} % |" in card and "| embeddings |" in card
