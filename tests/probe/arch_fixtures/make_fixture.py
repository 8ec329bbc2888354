"""Probes saved by actstore main (commit 2713561) before the saved-probe split; old files must
stay loadable. ``expected.json`` holds what that code's loader predicted from them.

Run with that code: ``git archive 2713561 actstore | tar -x -C SRC; PYTHONPATH=SRC python
make_fixture.py tests/probe/arch_fixtures``.
"""
import json
import sys

import numpy as np

from actstore.probe import Probe

out = sys.argv[1]
rng = np.random.default_rng(0)
X = rng.normal(size=(60, 2, 4)).astype(np.float32)
yb = (X[:, 0, 0] + X[:, 1, 1] > 0).astype(int)
ym = np.array(["a", "b", "c"])[(X[:, 1, 0] > 0).astype(int) + (X[:, 1, 2] > 0.5).astype(int)]
yr = X[:, 0, 0] * 2.0 + X[:, 1, 3]
probes = {
    "binary": Probe(layers=["embeddings", 3]).fit(X, yb, layers=["embeddings", 3]),
    "multiclass_pca": Probe(layers=[1], preprocessing="pca", pca_components=3, random_state=0).fit(X, ym),
    "regression": Probe(layers="all", classifier="ridge", task="regression").fit(X, yr),
}
Xq = rng.normal(size=(5, 2, 4)).astype(np.float32)
expected = {"X": Xq.tolist()}
for name, p in probes.items():
    p.save(f"{out}/{name}")
    p = Probe.load(f"{out}/{name}")  # what the old loader predicted from these files
    held = ["embeddings", 3] if name == "binary" else None
    pred = p.predict(Xq, layers=held) if held else p.predict(Xq)
    expected[name] = {"predict": pred.tolist()}
    if name != "regression":
        expected[name]["proba"] = (p.predict_proba(Xq, layers=held) if held else p.predict_proba(Xq)).tolist()
with open(f"{out}/expected.json", "w") as f:
    json.dump(expected, f, indent=1)
