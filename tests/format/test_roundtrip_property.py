"""Property: any dataset the writer accepts reads back identical (hypothesis)."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import actstore
from actstore.format.dtypes import bf16_bits_to_f32, f32_to_bf16_bits
from actstore.format.writer import DatasetWriter

LABELS = {
    "int": st.integers(-5, 5),
    "bool": st.booleans(),
    "str": st.sampled_from(["a", "b", "c"]),
    "float": st.floats(-10, 10, allow_nan=False, width=32),
}


@st.composite
def datasets(draw):
    n = draw(st.integers(1, 40))
    dim = draw(st.integers(1, 16))
    layers = draw(st.lists(st.integers(0, 30), min_size=1, max_size=4, unique=True))
    dtype = draw(st.sampled_from(["float32", "float16", "bfloat16"]))
    views = draw(st.sampled_from([["last_token"], ["last_token", "mean"], ["mean"]]))
    kind = draw(st.sampled_from(sorted(LABELS)))
    labels = draw(st.lists(LABELS[kind], min_size=n, max_size=n))
    cuts = sorted(draw(st.sets(st.integers(1, max(1, n - 1)), max_size=4)))
    shard_rows = draw(st.integers(1, 12))
    seed = draw(st.integers(0, 2**16))
    return n, dim, layers, dtype, views, labels, cuts, shard_rows, seed


def expected(x: np.ndarray, dtype: str) -> np.ndarray:
    if dtype == "bfloat16":
        return bf16_bits_to_f32(f32_to_bf16_bits(x))
    return x.astype(dtype)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(spec=datasets(), rows=st.lists(st.integers(0, 39), min_size=1, max_size=10))
def test_written_datasets_read_back_identical(tmp_path_factory, spec, rows):
    n, dim, layers, dtype, views, labels, cuts, shard_rows, seed = spec
    rng = np.random.default_rng(seed)
    data = {v: {L: (rng.standard_normal((n, dim)) * 3).astype(np.float32) for L in layers} for v in views}
    texts = [f"row {i}" for i in range(n)]
    path = str(tmp_path_factory.mktemp("prop") / "ds")
    itemsize = 4 if dtype == "float32" else 2
    with DatasetWriter(path, model="m", layers=layers, dim=dim, dtype=dtype, pooling=views,
                       shard_bytes=shard_rows * dim * itemsize) as w:
        for a, b in zip([0, *cuts], [*cuts, n]):
            if a < b:
                w.add(texts[a:b], hidden={L: x[a:b] for L, x in data[views[0]].items()},
                      views={v: {L: x[a:b] for L, x in data[v].items()} for v in views[1:]},
                      labels=labels[a:b], metadata={"i": list(range(a, b))})
    ds = actstore.open_dataset(path)
    assert ds.texts == texts and ds.column("i").tolist() == list(range(n))
    got_labels = ds.labels.tolist()
    if isinstance(labels[0], float):
        np.testing.assert_allclose(got_labels, labels)
    else:
        assert got_labels == labels
    for v in views:
        for L in layers:
            np.testing.assert_array_equal(ds.layer(L, view=v), expected(data[v][L], dtype))
    picks = [r % n for r in rows]
    got = ds.get(picks, layers=layers, view=views[-1])
    for j, L in enumerate(layers):
        np.testing.assert_array_equal(got[:, j], expected(data[views[-1]][L], dtype)[picks])
    assert ds.verify().ok
