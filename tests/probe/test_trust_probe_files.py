"""Saved probes are validated at load, not only checksummed (trust issue, scope 8).

Whoever made a probe folder controls both files, so each tampering here also rewrites the
two checksums consistently (the config's ``weights_sha256`` and the sha256 of the config
recorded in the weights); the loader must still refuse with an IntegrityError naming the file.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

import actstore
from actstore import Probe


def _resign(folder: Path, cfg: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    """Write ``cfg`` and ``arrays`` as a stranger would: both checksums made to agree."""
    body = {k: v for k, v in cfg.items() if k != "weights_sha256"}
    cfg_sha = hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    weights = folder / "probe.safetensors"
    save_file(arrays, str(weights), metadata={"config_sha256": cfg_sha})
    cfg["weights_sha256"] = hashlib.sha256(weights.read_bytes()).hexdigest()
    (folder / "probe.json").write_text(json.dumps(cfg))


def _saved(tmp_path: Path, arrays_fixture: Any, layers: Any = 2) -> Path:
    X, y, _ = arrays_fixture
    folder = tmp_path / "p"
    Probe(layers=layers, random_state=0).fit(X, y).save(str(folder))
    return folder


def _with(key: str, value: Any) -> Callable[[dict, dict], None]:
    def edit(cfg: dict, arrays: dict) -> None:
        cfg[key] = value
    return edit


def _array(name: str, fn: Callable[[np.ndarray], np.ndarray | None]) -> Callable[[dict, dict], None]:
    def edit(cfg: dict, arrays: dict) -> None:
        new = fn(arrays[name])
        if new is None:
            del arrays[name]
        else:
            arrays[name] = new
    return edit


def _nan(a: np.ndarray) -> np.ndarray:
    a = a.copy()
    a.flat[0] = np.nan
    return a


def _inf(a: np.ndarray) -> np.ndarray:
    a = a.copy()
    a.flat[-1] = np.inf
    return a


def _extra(cfg: dict, arrays: dict) -> None:
    arrays["bias2"] = np.zeros(1)


CASES = {
    "one class": (_with("classes_", [0]), "classes_"),
    "three classes for a binary head": (_with("classes_", [0, 1, 2]), "shape"),
    "duplicate classes": (_with("classes_", [1, 1]), "distinct"),
    "classes on a regression head": (_with("kind", "regression"), "no classes"),
    "unknown kind": (_with("kind", "softmax"), "'kind'"),
    "dim as a string": (_with("dim_", "24"), "'dim_'"),
    "layers not ints": (_with("layers_", ["2"]), "'layers_'"),
    "duplicate layers": (_with("layers_", [2, 2]), "'layers_'"),
    "layer scale that broadcasts": (_array("layer_scale", lambda a: np.ones(3)), "layer_scale"),
    "NaN weight": (_array("W", _nan), "NaN"),
    "infinite bias": (_array("b", _inf), "NaN or infinite"),
    "zero layer scale": (_array("layer_scale", lambda a: np.zeros_like(a)), "<= 0"),
    "W of the wrong shape": (_array("W", lambda a: a[:-1]), "shape"),
    "missing layer scale": (_array("layer_scale", lambda a: None), "exactly"),
    "missing bias": (_array("b", lambda a: None), "exactly"),
    "an extra array": (_extra, "exactly"),
    "integer weights": (_array("W", lambda a: a.astype(np.int64)), "dtype"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_tampered_probe_is_refused_even_with_consistent_checksums(tmp_path, arrays, case):
    folder = _saved(tmp_path, arrays)
    cfg = json.loads((folder / "probe.json").read_text())
    weights = load_file(str(folder / "probe.safetensors"))
    edit, message = CASES[case]
    edit(cfg, weights)
    _resign(folder, cfg, weights)
    with pytest.raises(actstore.IntegrityError, match=message) as err:
        Probe.load(str(folder))
    assert "probe.json" in str(err.value) or "probe.safetensors" in str(err.value)


def test_two_layer_scale_of_one_value_is_refused(tmp_path, arrays):
    # a (1,) scale would broadcast over both layers and silently change every prediction
    folder = _saved(tmp_path, arrays, layers=[1, 2])
    cfg = json.loads((folder / "probe.json").read_text())
    weights = load_file(str(folder / "probe.safetensors"))
    _resign(folder, cfg, weights)  # re-signed but untouched: still loads (the helper is sound)
    assert Probe.load(str(folder)).layers_ == [1, 2]
    weights["layer_scale"] = weights["layer_scale"][:1].copy()
    _resign(folder, cfg, weights)
    with pytest.raises(actstore.IntegrityError, match=r"probe.safetensors: tensor 'layer_scale' has shape \(1,\)"):
        Probe.load(str(folder))
