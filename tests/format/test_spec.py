"""The spec's informative minimal reader (specs/format-v2.md §9) reads what the writer writes."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

import actstore
from actstore.format.writer import DatasetWriter

SPEC = Path(__file__).resolve().parents[2] / "specs" / "format-v2.md"


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_minimal_reader_from_the_spec(tmp_path, dtype):
    code = re.search(r"```python\n(.*?)```", SPEC.read_text(), re.S).group(1)
    assert len(code.strip().splitlines()) <= 30
    namespace: dict = {}
    exec(code, namespace)
    rng = np.random.default_rng(0)
    data = {L: rng.standard_normal((40, 6)).astype(np.float32) for L in (0, 4)}
    with DatasetWriter(str(tmp_path / "ds"), model="m", layers=[0, 4], dim=6, dtype=dtype,
                       shard_bytes=6 * 4 * 9) as w:
        w.add([str(i) for i in range(40)], hidden=data)
    ds = actstore.open_dataset(str(tmp_path / "ds"))
    got = namespace["read_layer"](str(tmp_path / "ds"), 4)
    np.testing.assert_array_equal(got, ds.layer(4).astype(np.float32))
