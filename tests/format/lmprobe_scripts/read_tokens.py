"""Run in a subprocess (own HF_HUB_CACHE, HF_HUB_OFFLINE=1): every lmprobe 0.10.3 read of a
full-sequence dataset, each result or error saved, so the test compares without importing lmprobe.

usage: read_tokens.py REPO OUT_DIR
"""
import json
import sys

import numpy as np
from lmprobe import load_activation_dataset, load_activations, pull_dataset

repo, out = sys.argv[1], sys.argv[2]
result = {}


def attempt(name, fn):
    try:
        value = fn()
    except Exception as exc:  # the point: which error lmprobe raises itself
        result[name] = {"error": type(exc).__name__, "message": str(exc)[:300]}
        return
    result[name] = {"ok": True}
    return value


acts = attempt("load_activations", lambda: load_activations(repo, layers=[0], show_progress=False))
if acts is not None:
    np.save(f"{out}/last_0.npy", np.asarray(acts[0]))
whole = attempt("load_activation_dataset", lambda: load_activation_dataset(repo))
if whole is not None:
    np.save(f"{out}/whole_0.npy", whole[0]["hidden.layer_0"].numpy())
attempt("pull_materialize", lambda: pull_dataset(repo, materialize=True))
again = attempt("after_pull", lambda: load_activations(repo, layers=[0], show_progress=False))
if again is not None:
    np.save(f"{out}/after_pull_0.npy", np.asarray(again[0]))
for pooling in ("mean", "first_token"):
    got = attempt(f"after_pull_{pooling}", lambda p=pooling: load_activations(
        repo, layers=[0], pooling=p, show_progress=False))
    if got is not None:
        np.save(f"{out}/after_pull_{pooling}_0.npy", np.asarray(got[0]))
with open(f"{out}/result.json", "w") as f:
    json.dump(result, f)
