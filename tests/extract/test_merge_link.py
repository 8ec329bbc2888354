"""``merge`` of full-sequence parts links their token shards instead of rewriting them
(spec section 5b "Merging parts"), and falls back to rewriting where it cannot."""

from __future__ import annotations

import importlib
import os
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest

import actstore
from actstore.format import spec
from actstore.format.reader import Dataset
from actstore.format.writer import DatasetWriter

merge_mod = importlib.import_module("actstore.extraction.merge")  # the package exports the function
KW = dict(layers=[0, 2], pooling=["all", "mean"], shard_size=3, device="cpu", progress=False)


def _run(gpt2, prompts, out, **kw):
    for rank in (1, 0):
        assert actstore.extract(gpt2, prompts, out=out, rank=rank, world_size=2, **{**KW, **kw}) is None


def _token_files(out):
    """``{relative path: (inode, mtime_ns)}`` of the token shard files (after the last-token ones)."""
    desc = actstore.open_dataset(out).info.tensors["hidden_layers"]
    lt = desc["last_token_shards"]
    got = {}
    for s in range(lt, len(desc["shards"])):
        for L in desc["layers"]:
            rel = desc["file_pattern"].format(layer=L, shard=s)
            st = os.stat(os.path.join(out, rel))
            got[rel] = (st.st_ino, st.st_mtime_ns)
    return got


def _same_reads(a, b):
    assert len(a) == len(b) and a.texts == b.texts
    assert a.column("num_tokens").tolist() == b.column("num_tokens").tolist()
    assert a.column("prompt_tokens").tolist() == b.column("prompt_tokens").tolist()
    assert a.column("special_first_token").tolist() == b.column("special_first_token").tolist()
    for L in (0, 2):
        ids = np.arange(a.num_tokens_total)
        np.testing.assert_array_equal(a.get_tokens(ids, layers=[L]), b.get_tokens(ids, layers=[L]))
        np.testing.assert_array_equal(a.layer(L), b.layer(L))
        np.testing.assert_array_equal(a.layer(L, view="mean"), b.layer(L, view="mean"))
        for r in range(len(a)):
            np.testing.assert_array_equal(a.tokens(r, L), b.tokens(r, L))
            assert a.token_range(r) == b.token_range(r)


@pytest.fixture
def rewritten(gpt2, tmp_path, prompts):
    """The same run merged by rewriting (the default threshold: these parts are tiny)."""
    out = str(tmp_path / "rewritten")
    _run(gpt2, prompts, out)
    return actstore.merge(out, lmprobe_compat=False)


@pytest.mark.parametrize("compat", [False, True])
def test_merge_links_token_shards_without_decoding(gpt2, tmp_path, prompts, monkeypatch, rewritten, compat):
    out = str(tmp_path / "linked")
    _run(gpt2, prompts, out)
    parts = [os.path.join(out, "_parts", p) for p in sorted(os.listdir(os.path.join(out, "_parts")))
             if p.startswith("shard-")]
    before = {}
    for part in parts:
        for rel, ino in _token_files(part).items():
            before[(part, rel)] = ino
    monkeypatch.setattr(merge_mod, "LINK_MIN_SHARD_BYTES", 0)

    def no_decode(*a, **k):
        raise AssertionError("merge decoded the parts' tokens")

    monkeypatch.setattr(Dataset, "get_tokens", no_decode)
    monkeypatch.setattr(Dataset, "tokens", no_decode)
    merged = actstore.merge(out, keep_parts=True, lmprobe_compat=compat)
    monkeypatch.undo()
    after = _token_files(out)
    # every merged token shard is one of the parts' files, same inode, never written again
    linked = {v for v in after.values()}
    assert len(after) == len(before) and linked == set(before.values())
    for (part, rel), ino in before.items():
        st = os.stat(os.path.join(part, rel))
        assert (st.st_ino, st.st_mtime_ns) == ino
    report = merged.verify()
    assert report.ok, str(report)
    _same_reads(actstore.open_dataset(out), rewritten)
    names = pq.read_schema(os.path.join(out, spec.INDEX_PATH)).names
    assert ("token_shard_ids" in names) is compat  # lmprobe's lists from the shifted locations
    # the rewriting merge made fewer, bigger token shards of its own
    assert all(os.stat(os.path.join(rewritten.url, rel)).st_ino not in {i for i, _ in linked}
               for rel in _token_files(rewritten.url))
    # the parts can go: the merged dataset holds its own names for the linked files
    shutil.rmtree(os.path.join(out, "_parts"))
    _same_reads(actstore.open_dataset(out), rewritten)


def test_merge_to_a_url_uploads_the_token_shards_as_they_are(gpt2, tmp_path, prompts, monkeypatch, rewritten):
    url, work = "memory://merge-link/ds", str(tmp_path / "work")
    for rank in (1, 0):
        assert actstore.extract(gpt2, prompts, out=url, work_dir=work, rank=rank, world_size=2, **KW) is None
    monkeypatch.setattr(merge_mod, "LINK_MIN_SHARD_BYTES", 0)
    monkeypatch.setattr(Dataset, "get_tokens", lambda *a, **k: pytest.fail("merge decoded the tokens"))
    merged = actstore.merge(url, work_dir=work, lmprobe_compat=False)
    monkeypatch.undo()
    assert merged.url.startswith("memory://") and merged.verify().ok
    _same_reads(actstore.open_dataset(url), rewritten)


def test_merge_link_rule_falls_back_to_rewriting(gpt2, tmp_path, prompts, rewritten, monkeypatch):
    # 1. shards smaller than LINK_MIN_SHARD_BYTES (these parts at the default): rewritten,
    #    into one token shard per layer instead of one per part
    n_parts = -(-len(prompts) // KW["shard_size"])
    desc = rewritten.info.tensors["hidden_layers"]
    assert len(desc["shards"]) - desc["last_token_shards"] < n_parts
    assert rewritten.verify().ok
    # 2. a codec dtype: the parts hold float32, encoded once at the merge
    out = str(tmp_path / "int8")
    _run(gpt2, prompts, out, dtype="int8")
    monkeypatch.setattr(merge_mod, "LINK_MIN_SHARD_BYTES", 0)
    parts = [actstore.open_dataset(os.path.join(out, "_parts", f"shard-{s:05d}")) for s in range(n_parts)]
    assert "codec" in merge_mod.link_rule(parts, "int8")
    merged = actstore.merge(out)
    assert merged.info.dtype == "int8" and merged.verify().ok
    np.testing.assert_allclose(merged.tokens(1, 2), rewritten.tokens(1, 2), atol=0.1, rtol=0.05)
    # 3. parts in another dtype than the merged dataset
    fp32 = [actstore.open_dataset(str(tmp_path / "rewritten"))]
    assert "holds float32, the merged dataset float16" in merge_mod.link_rule(fp32, "float16")
    assert merge_mod.link_rule(fp32, "float32") is None
    # 4. pooled parts have no token shards
    pooled = str(tmp_path / "pooled")
    with DatasetWriter(pooled, model="m", layers=[0], dim=4) as w:
        w.add(["a"], hidden={0: np.ones((1, 4))})
    assert "pooled" in merge_mod.link_rule([actstore.open_dataset(pooled)], "float32")
    # 5. a part with lmprobe's per-token lists only (no compact columns)
    lists = str(tmp_path / "lists")
    with DatasetWriter(lists, model="m", layers=[0], dim=4, pooling="all", lmprobe_compat=True) as w:
        w.add(["a", "b"], hidden={0: [np.ones((3, 4)), np.ones((2, 4))]})
    path = os.path.join(lists, spec.INDEX_PATH)
    table = pq.read_table(path)
    pq.write_table(table.drop_columns(["token_shard", "token_start"]), path)
    assert "per-token lists only" in merge_mod.link_rule([actstore.open_dataset(lists)], "float32")
    # 6. a part file whose size is not the recorded one is refused, not linked
    out = str(tmp_path / "damaged")
    _run(gpt2, prompts, out)
    part = os.path.join(out, "_parts", "shard-00001")
    rel = sorted(_token_files(part))[0]
    with open(os.path.join(part, rel), "ab") as f:
        f.write(b"x")
    with pytest.raises(actstore.IntegrityError, match="shard-00001.*holds .* bytes but its dataset records"):
        actstore.merge(out)
    assert not os.path.exists(os.path.join(out, spec.INDEX_PATH))  # nothing committed
