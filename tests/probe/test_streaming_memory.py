"""Peak resident memory of a streaming fit does not grow with the number of rows."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np

from actstore.format.writer import DatasetWriter

_RUN = textwrap.dedent("""
    import json, resource, sys
    import actstore, actstore.probe
    def peak():
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    ds = actstore.open_dataset(sys.argv[1])
    opened = peak()  # the reader's index (about 100 bytes a row) is not the fit's
    fit = actstore.fit_streaming(ds, layers="all", classifiers=("ridge", "lda", "mass_mean"), block_rows=2048)
    assert len(fit.probes) == 9
    print(json.dumps({"fit": peak() - opened, "total": peak()}))
""")


def _write(path: str, n: int, dim: int) -> None:
    rng = np.random.default_rng(0)
    with DatasetWriter(path, model="synthetic", layers=[0, 1, 2], dim=dim, shard_bytes=dim * 4 * 16384) as w:
        for start in range(0, n, 10_000):
            X = rng.normal(size=(10_000, dim)).astype(np.float32)
            w.add([f"p{i}" for i in range(start, start + 10_000)], hidden={L: X + L for L in (0, 1, 2)},
                  labels=(X[:, 0] > 0).astype(int).tolist())


def test_peak_rss_is_independent_of_rows(tmp_path):
    dim, peak = 96, {}
    for n in (20_000, 80_000):
        path = str(tmp_path / f"ds{n}")
        _write(path, n, dim)
        out = subprocess.run([sys.executable, "-c", _RUN, path], capture_output=True, text=True, check=True)
        peak[n] = json.loads(out.stdout.strip().splitlines()[-1])
    layer_80k = 80_000 * dim * 4  # 31 MB; the three layers are 92 MB
    # 4x the rows: the statistics and the blocks in flight stay the same size; the labels and
    # their class and fold numbers (~40 bytes a row while they are made) are the only per-row state
    assert peak[80_000]["fit"] - peak[20_000]["fit"] < 0.25 * layer_80k, peak
    assert peak[80_000]["fit"] < layer_80k, peak
