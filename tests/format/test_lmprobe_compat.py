"""lmprobe 0.10.3 compatibility, both ways, with lmprobe itself (reference/lmprobe-v2.md §10).

(a) datasets the DatasetWriter writes (float32, float16, bfloat16, top-k logits) load in lmprobe
    (``load_activations``, ``load_activation_dataset``) bit for bit, through an offline HF-cache layout (route A);
(b) datasets lmprobe's own ``push_dataset`` writes (shuffled, float16 and bfloat16 behind a
    float32 claim, full sequence, int32 logits indices, MoE router shards, sidecar files) open in
    actstore with the values fed in;
(c) lmprobe-layout variants built by hand from the spec (``conftest.py``: f16/bf16 behind a
    float32 claim, no labels, I64 logits indices, newer minor versions and unknown keys, unknown
    files, a Hugging Face cache snapshot of links) read back what was put in.

lmprobe runs in subprocesses with their own HF/lmprobe environment, because huggingface_hub reads
its environment at import time; they hand their arrays back as .npy files.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import actstore
from actstore.format.dtypes import bf16_bits_to_f32, f32_to_bf16_bits
from actstore.format.writer import DatasetWriter

SCRIPTS = Path(__file__).parent / "lmprobe_scripts"
SNAPSHOT = "0123456789abcdef0123456789abcdef01234567"
N, DIM, LAYERS = 9, 5, [0, 3]


def lmprobe_env(work: Path, **extra: str) -> dict[str, str]:
    return dict(os.environ, HF_HOME=str(work / "hf"), HF_HUB_CACHE=str(work / "hf" / "hub"),
                LMPROBE_CACHE_DIR=str(work / "lmcache"), HF_HUB_OFFLINE="1", **extra)


def run_lmprobe(script: str, args: list[str], env: dict[str, str]) -> str:
    proc = subprocess.run([sys.executable, str(SCRIPTS / script), *args], capture_output=True,
                          text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def into_hub_cache(src: Path, hub: Path, repo: str) -> None:
    """Lay a local dataset out as an offline HF hub cache entry for ``repo`` (route A)."""
    entry = hub / f"datasets--{repo.replace('/', '--')}"
    shutil.copytree(src, entry / "snapshots" / SNAPSHOT)
    (entry / "refs").mkdir()
    (entry / "refs" / "main").write_text(SNAPSHOT)


# ---------------------------------------------------------------- (a) actstore -> lmprobe

CASES_A = {
    "f32": dict(dtype="float32", logits_k=None, shard_rows=4),
    "f16": dict(dtype="float16", logits_k=None, shard_rows=2),
    "bf16": dict(dtype="bfloat16", logits_k=None, shard_rows=4),
    "f32-logits": dict(dtype="float32", logits_k=4, shard_rows=3),
}


@pytest.fixture(scope="module")
def read_by_lmprobe(tmp_path_factory):
    work = tmp_path_factory.mktemp("to-lmprobe")
    rng = np.random.default_rng(3)
    written, jobs = {}, []
    for name, c in CASES_A.items():
        texts = [f"{name} prompt {i}" for i in range(N)]
        hidden = {L: rng.standard_normal((N, DIM)).astype(np.float32) for L in LAYERS}
        labels = [int(x) for x in rng.integers(0, 3, N)]
        vals = -np.sort(-rng.standard_normal((N, 4)).astype(np.float32), axis=1)
        idx = rng.integers(0, 50_000, (N, 4))
        item = 4 if c["dtype"] == "float32" else 2
        with DatasetWriter(str(work / name), model=f"org/{name}", layers=LAYERS, dim=DIM, dtype=c["dtype"],
                           shard_bytes=c["shard_rows"] * DIM * item, logits_k=c["logits_k"]) as w:
            for a, b in [(0, 5), (5, N)]:  # two add() batches
                w.add(texts[a:b], hidden={L: x[a:b] for L, x in hidden.items()}, labels=labels[a:b],
                      logits_topk=(vals[a:b], idx[a:b]) if c["logits_k"] else None)
        into_hub_cache(work / name, work / "hf" / "hub", f"org/{name}")
        (work / f"out-{name}").mkdir()
        jobs.append([f"org/{name}", LAYERS, str(work / f"out-{name}")])
        written[name] = dict(texts=texts, hidden=hidden, labels=labels, vals=vals, idx=idx)
    run_lmprobe("read_dataset.py", [json.dumps(jobs)], lmprobe_env(work))
    return work, written


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CASES_A))
def test_lmprobe_loads_what_actstore_writes_bit_for_bit(read_by_lmprobe, name):
    work, written = read_by_lmprobe
    w, out, dtype = written[name], work / f"out-{name}", CASES_A[name]["dtype"]
    result = json.loads((out / "result.json").read_text())
    assert result["prompts"] == w["texts"] and result["layers"] == LAYERS and result["num_prompts"] == N
    np.testing.assert_array_equal(np.load(out / "labels.npy"), w["labels"])
    assert (len(actstore.open_dataset(str(work / name)).info.tensors["hidden_layers"]["shards"]) > 1)
    for L in LAYERS:
        if dtype == "bfloat16":  # stored as bit patterns; lmprobe widens them to float32 exactly
            stored = f32_to_bf16_bits(w["hidden"][L])
            values = bf16_bits_to_f32(stored)
            assert result["dtypes"][f"hidden.layer_{L}"] == "torch.bfloat16"
        else:
            stored = w["hidden"][L].astype(dtype)
            values = stored.astype(np.float32)
        got = np.load(out / f"acts_{L}.npy")  # load_activations: prompt by prompt via the registry
        assert np.array_equal(got.astype(np.float32), values)
        if dtype != "bfloat16":
            np.testing.assert_array_equal(got.astype(dtype), stored)
        whole = np.load(out / f"tensor_hidden.layer_{L}.npy")  # load_activation_dataset: concatenated
        assert whole.dtype == stored.dtype and whole.tobytes() == stored.tobytes()


@pytest.mark.slow
def test_lmprobe_reads_actstore_top_k_logits(read_by_lmprobe):
    work, written = read_by_lmprobe
    w, out = written["f32-logits"], work / "out-f32-logits"
    values = np.load(out / "tensor_logits_topk.values.npy")
    indices = np.load(out / "tensor_logits_topk.indices.npy")
    assert values.tobytes() == w["vals"].tobytes()
    np.testing.assert_array_equal(indices, w["idx"])
    assert "logits_topk.values" not in json.loads((work / "out-f32" / "result.json").read_text())["dtypes"]


# ---------------------------------------------------------------- (b) lmprobe -> actstore

@pytest.fixture(scope="module")
def by_lmprobe(tmp_path_factory):
    work = tmp_path_factory.mktemp("from-lmprobe")
    out = run_lmprobe("write_shuffled.py", [str(work)], lmprobe_env(work, LMPROBE_CACHE_DTYPE="float16"))
    dirs = json.loads(out.strip().splitlines()[-1])
    return {k: Path(v) for k, v in dirs.items()}, np.load(work / "inputs.npz")


def rows_by_text(ds, prefix: str) -> list[int]:
    """lmprobe shuffled the rows: input number i of each row, from its text."""
    assert all(t.startswith(prefix) for t in ds.texts)
    return [int(t.rsplit(" ", 1)[1]) for t in ds.texts]


@pytest.mark.slow
def test_shuffled_pooled_float32_with_int32_logits_and_metadata(by_lmprobe):
    dirs, inputs = by_lmprobe
    ds = actstore.open_dataset(str(dirs["pooled"]))
    order = rows_by_text(ds, "pooled ")
    assert order != sorted(order)  # lmprobe really shuffled, so mapping by text is exercised
    X = inputs["pooled_X"][order]
    assert ds.info.dtype == "float32" and ds.info.layers == (1, 4) and len(ds) == 10
    np.testing.assert_array_equal(ds.layer(1), X[:, :6])
    np.testing.assert_array_equal(ds.get([7, 0, 7], layers=[4])[:, 0], X[[7, 0, 7], 6:])
    np.testing.assert_array_equal(ds.labels, [i % 2 for i in order])
    assert ds.column("src").tolist() == [f"s{i}" for i in order]
    logits = inputs["pooled_logits"][order]
    top = np.argsort(-logits, axis=1)[:, :3]
    values, indices = ds.logits_topk()
    np.testing.assert_array_equal(indices, top)
    np.testing.assert_array_equal(values, np.take_along_axis(logits, top, axis=1))
    sub_v, sub_i = ds.logits_topk([9, 2])
    np.testing.assert_array_equal(sub_i, top[[9, 2]])
    header = _shard_dtypes(dirs["pooled"] / "tensors" / "logits_topk_000.safetensors")
    assert header["logits_topk.indices"] == "I32"  # lmprobe's real index dtype, read as-is
    assert ds.verify().ok


@pytest.mark.slow
def test_float16_from_the_environment_behind_a_float32_claim(by_lmprobe):
    dirs, inputs = by_lmprobe
    ds = actstore.open_dataset(str(dirs["half"]))
    order = rows_by_text(ds, "half ")
    assert ds.info.tensors["hidden_layers"]["dtype"] == "float32" and ds.info.dtype == "float16"
    X = inputs["half_X"][order].astype(np.float16)
    got = ds.layer(4)
    assert got.dtype == np.float16
    np.testing.assert_array_equal(got, X[:, 6:])
    np.testing.assert_array_equal(ds.get([3, 1], layers=[1, 4], dtype=np.float32),
                                  X[[3, 1]].reshape(2, 2, 6).astype(np.float32))


@pytest.mark.slow
def test_bfloat16_cache_dtype_behind_a_float32_claim(by_lmprobe):
    dirs, inputs = by_lmprobe
    ds = actstore.open_dataset(str(dirs["bf16"]))
    order = rows_by_text(ds, "bf16 ")
    assert ds.info.tensors["hidden_layers"]["dtype"] == "float32" and ds.info.dtype == "bfloat16"
    bits = f32_to_bf16_bits(inputs["bf16_X"][order])  # torch's rounding == ours, bit for bit
    got = ds.layer(1)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, bf16_bits_to_f32(bits)[:, :6])
    np.testing.assert_array_equal(ds.get([2, 8], layers=[4])[:, 0], bf16_bits_to_f32(bits)[[2, 8], 6:])
    np.testing.assert_array_equal(ds.labels, [i % 2 for i in order])
    assert ds.verify().ok


@pytest.mark.slow
def test_router_logits_of_moe_datasets_are_ignored(by_lmprobe):
    dirs, inputs = by_lmprobe
    ds = actstore.open_dataset(str(dirs["moe"]))
    order = rows_by_text(ds, "moe ")
    assert ds.info.tensors["router_logits"]["type"] == "router"  # kept in info, not read
    assert (dirs["moe"] / "tensors" / "router_logits_000.safetensors").is_file()
    np.testing.assert_array_equal(ds.layer(4), inputs["moe_X"][order][:, 6:])
    assert ds.info.layers == (1, 4) and ds.verify().ok


@pytest.mark.slow
def test_full_sequence_tokens_last_tokens_and_logits(by_lmprobe):
    dirs, inputs = by_lmprobe
    ds = actstore.open_dataset(str(dirs["full"]))
    order = rows_by_text(ds, "full ")
    assert ds.info.storage == "full_sequence" and ds.info.logits_k == 3
    for row, i in enumerate(order):
        seq = inputs[f"full_seq_{i}"]
        np.testing.assert_array_equal(ds.tokens(row, 1), seq[:, :6])
        np.testing.assert_array_equal(ds.tokens(row, 4), seq[:, 6:])
    last = np.stack([inputs[f"full_seq_{i}"][-1] for i in order])
    np.testing.assert_array_equal(ds.layer(4), last[:, 6:])
    np.testing.assert_array_equal(ds.get([5, 0], layers=[1])[:, 0], last[[5, 0], :6])
    logits = inputs["full_logits"][order]
    values, indices = ds.logits_topk()
    np.testing.assert_array_equal(indices, np.argsort(-logits, axis=1)[:, :3])
    np.testing.assert_array_equal(ds.labels, [[1, 0][i % 2] for i in order])


@pytest.mark.slow
def test_lmprobe_sidecar_files_are_tolerated(by_lmprobe):
    dirs, _ = by_lmprobe
    for root in dirs.values():
        assert (root / "lmprobe_info.json").is_file() and (root / "_stage_complete").is_file()
        report = actstore.open_dataset(str(root)).verify()
        assert report.ok, report.problems


def _shard_dtypes(path: Path) -> dict[str, str]:
    import struct

    blob = path.read_bytes()
    n = struct.unpack("<Q", blob[:8])[0]
    return {k: v["dtype"] for k, v in json.loads(blob[8:8 + n]).items() if k != "__metadata__"}


# ---------------------------------------------------------------- (c) hand-built valid examples

EXAMPLES = ["lmprobe-f32", "lmprobe-f16-claims-f32", "lmprobe-bf16-claims-f32", "no-label-column", "logits-i64",
            "one-row-shards", "newer-minor-and-unknown-keys", "extra-files", "hf-snapshot"]


def test_the_example_list_is_complete(valid_examples):
    assert sorted(valid_examples) == sorted(EXAMPLES)


@pytest.mark.parametrize("name", EXAMPLES)
def test_valid_example_reads_back_what_was_written(valid_examples, name):
    root, want = valid_examples[name]
    ds = actstore.open_dataset(str(root))
    n = len(want["texts"])
    assert len(ds) == n and ds.texts == want["texts"] and ds.info.dtype == want["dtype"]
    if want["labels"] is None:
        assert ds.labels is None or all(x is None for x in ds.labels.tolist())
    else:
        assert ds.labels.tolist() == want["labels"]
    for L, x in want["X"].items():
        got = ds.layer(L)
        assert got.dtype == x.dtype and got.tobytes() == x.tobytes()
    rows = list(range(n))[::-1]
    got = ds.get(rows)
    for j, x in enumerate(want["X"].values()):
        np.testing.assert_array_equal(got[:, j], x[rows])
    values, indices = ds.logits_topk()
    np.testing.assert_array_equal(values, want["values"])
    np.testing.assert_array_equal(indices, want["indices"])
    assert ds.verify().ok
