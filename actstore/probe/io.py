"""Saving and loading probes without pickle: ``probe.json`` + ``probe.safetensors``.

The fitted pipeline is collapsed into one affine map (see :mod:`actstore.probe.head`), so a
saved probe is a handful of arrays and a JSON config. Each file carries the other's
checksum: the config records the weights' sha256, and the weights' safetensors metadata
records the sha256 of the config's canonical JSON (without that one field). Loading checks
the format version, both checksums, and every array's shape, so an edit to either file
(classes, layers, weights) is refused instead of silently changing what the probe predicts.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from typing import Any

import numpy as np
from safetensors.numpy import load, save_file

from ..errors import FormatError, IntegrityError, InvalidArgumentError, UnsupportedVersionError
from .classifiers import CLASSIFIERS
from .head import LinearHead, collapse_pipeline
from .layers import request, stored

__all__ = ["PROBE_FORMAT_VERSION", "dataset_provenance", "load_probe", "save_probe"]

PROBE_FORMAT_VERSION = 1
CONFIG, WEIGHTS = "probe.json", "probe.safetensors"
_PARAMS = ("layers", "view", "classifier", "task", "normalize", "preprocessing",
           "pca_components", "classifier_kwargs", "random_state")


def dataset_provenance(data: Any, y: Any, view: str | None, layers: list[int]) -> dict[str, Any] | None:
    """What a probe fitted on ``data`` records about it (None for plain arrays).

    The dataset's URL and revision (the Hub commit a pulled copy or an ``@rev`` URL names),
    the model and its revision, the view, the layers and the label column.
    """
    from .data import is_dataset

    if not is_dataset(data):
        return None
    url = str(data.url)
    revision = None
    if url.startswith("hf://") and "@" in url:
        revision = url.rsplit("@", 1)[1].split("/", 1)[0]
    elif "://" not in url:
        record = _pulled_record(url)
        if record:
            url, revision = f"hf://datasets/{record['repo_id']}", record.get("revision")
    info = data.info
    label = y if isinstance(y, str) else ("label" if y is None else None)
    return {"dataset": url, "dataset_revision": revision, "model": info.model,
            "model_revision": info.revision, "view": view or info.views[0],
            "layers": [v if isinstance(v, str) else int(v) for v in layers], "label_column": label, "rows": len(data)}


def _pulled_record(local: str) -> dict[str, Any] | None:
    """``pull_dataset``'s record of the repo and commit a local copy came from."""
    try:
        with open(os.path.join(local, ".actstore", "hub.json"), encoding="utf-8") as f:
            record = json.load(f)
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and isinstance(record.get("repo_id"), str) else None


def _jsonable_classes(classes: np.ndarray | None) -> list[Any] | None:
    if classes is None:
        return None
    return [c.item() if isinstance(c, np.generic) else c for c in classes.tolist()]


def save_probe(probe: Any, path: str) -> None:
    """Write a fitted probe to the folder ``path``."""
    probe._check_fitted()
    from sklearn.pipeline import Pipeline

    if isinstance(probe.pipeline_, Pipeline):
        steps = [s for _, s in probe.pipeline_.steps[:-1]]
        head = collapse_pipeline(steps, probe.pipeline_.steps[-1][1], probe.n_features_in_)
    else:
        head = probe.pipeline_
    params = {k: getattr(probe, k) for k in _PARAMS}
    if not isinstance(params["classifier"], str):
        # an estimator instance is stored as the built-in name of its class (the fitted head
        # is what predicts; its own hyperparameters apply only to a refit)
        params["classifier"] = _builtin_name(probe.classifier)
    try:
        json.dumps(params)
    except TypeError as exc:
        raise InvalidArgumentError(f"Probe parameters are not JSON-serialisable ({exc}).") from None
    config = {
        "format": "actstore-probe",
        "format_version": PROBE_FORMAT_VERSION,
        "params": params,
        "layers_": [stored(v) for v in probe.layers_],  # stored numbers (-1 = the embeddings)
        "layers_named_": bool(getattr(probe, "layers_named_", True)),
        "dim_": int(probe.dim_),
        "kind": head.kind,
        "classes_": _jsonable_classes(head.classes_),
        "provenance": getattr(probe, "provenance_", None),
    }
    arrays = {"W": np.ascontiguousarray(head.W), "b": np.ascontiguousarray(head.b),
              "layer_scale": np.asarray(probe.layer_scale_, dtype=np.float64)}
    _write_atomic(path, arrays, config)


def _write_atomic(path: str, arrays: dict[str, np.ndarray], config: dict[str, Any]) -> None:
    """Write both files into a fresh folder next to ``path``, flush them, then move them in.

    A failure before the move (an exception, a full disk) leaves a probe already at ``path``
    as it was. A new ``path`` is the staged folder renamed (atomic); an existing folder gets
    each file by an atomic ``os.replace``, weights first: a power loss between the two leaves
    old config with new weights, which :func:`load_probe` refuses (``weights_sha256``), never
    a silently mixed probe. Every file is ``fsync``'ed before its rename and every folder
    after, so the save is durable.
    """
    from ..format.durable import fsync_dir, fsync_file

    path = os.path.abspath(os.fspath(path))
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    staging = os.path.join(parent, f".{os.path.basename(path)}.actstore-tmp-{os.urandom(6).hex()}")
    os.mkdir(staging)
    try:
        weights = os.path.join(staging, WEIGHTS)
        save_file(arrays, weights, metadata={"config_sha256": _config_sha256(config)})
        with open(weights, "rb") as f:
            config["weights_sha256"] = hashlib.sha256(f.read()).hexdigest()
        with open(os.path.join(staging, CONFIG), "w") as f:
            json.dump(config, f, indent=2)
        for name in (WEIGHTS, CONFIG):
            fsync_file(os.path.join(staging, name))
        fsync_dir(staging)
        if not os.path.exists(path):
            os.rename(staging, path)
            fsync_dir(parent)
            return
        if not os.path.isdir(path):
            raise InvalidArgumentError(f"{path!r} exists and is not a folder; save the probe elsewhere.")
        for name in (WEIGHTS, CONFIG):
            os.replace(os.path.join(staging, name), os.path.join(path, name))
        fsync_dir(path)
    finally:
        if os.path.isdir(staging):
            import shutil

            shutil.rmtree(staging, ignore_errors=True)


def _builtin_name(estimator: Any) -> str:
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
    from sklearn.linear_model import LogisticRegression, Ridge, RidgeClassifier
    from sklearn.svm import LinearSVC, LinearSVR

    from .classifiers import MassMeanProbe

    if isinstance(estimator, MassMeanProbe):
        return "mass_mean_iid" if estimator.covariance else "mass_mean"
    names = {LogisticRegression: "logistic_regression", LinearDiscriminantAnalysis: "lda",
             Ridge: "ridge", RidgeClassifier: "ridge", LinearSVC: "linear_svm", LinearSVR: "linear_svm"}
    return next((v for k, v in names.items() if isinstance(estimator, k)), type(estimator).__name__)


def _config_sha256(config: dict[str, Any]) -> str:
    """sha256 of the config's canonical JSON, leaving out the weights checksum it holds."""
    body = {k: v for k, v in config.items() if k != "weights_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _safetensors_metadata(blob: bytes, name: str) -> dict[str, str]:
    # the safetensors header: 8-byte little-endian length, then JSON with "__metadata__"
    try:
        (size,) = struct.unpack("<Q", blob[:8])
        meta = json.loads(blob[8 : 8 + size]).get("__metadata__") or {}
    except (struct.error, ValueError, AttributeError):
        raise FormatError(f"{name} is not a safetensors file.") from None
    return meta if isinstance(meta, dict) else {}


def _read_config(path: str) -> dict[str, Any]:
    cfg_path = os.path.join(path, CONFIG)
    if not os.path.exists(cfg_path):
        raise FormatError(f"{cfg_path} is missing; {path!r} is not a saved actstore probe.")
    try:
        with open(cfg_path) as f:
            cfg = json.load(f)
    except ValueError as exc:
        raise FormatError(f"{cfg_path} is not valid JSON ({exc}).") from None
    if not isinstance(cfg, dict) or cfg.get("format") != "actstore-probe":
        raise FormatError(f"{cfg_path} is not an actstore probe config.")
    version = cfg.get("format_version")
    if version != PROBE_FORMAT_VERSION:
        raise UnsupportedVersionError(
            f"{cfg_path} has probe format version {version!r}; this actstore reads version "
            f"{PROBE_FORMAT_VERSION}. Upgrade actstore or re-save the probe."
        )
    return cfg


_KINDS = ("proba", "margin", "regression")
_ARRAYS = ("W", "b", "layer_scale")


def _bad(file: str, what: str) -> IntegrityError:
    return IntegrityError(
        f"{file}: {what}; the saved probe is damaged or was edited. Save it again from the "
        "fitted probe, or download it again."
    )


def _check_config(cfg: dict[str, Any], file: str) -> tuple[list[int], int, str, list[Any] | None]:
    """Types and ranges of the config's fitted fields: ``layers_``, ``dim_``, ``kind``, ``classes_``."""
    layers, dim, kind, classes = cfg.get("layers_"), cfg.get("dim_"), cfg.get("kind"), cfg.get("classes_")
    if (not isinstance(layers, list) or not layers
            or any(type(v) is not int or v < -1 for v in layers) or len(set(layers)) != len(layers)):
        raise _bad(file, f"'layers_' must be a non-empty list of distinct layer numbers (>= -1); got {layers!r}")
    if type(dim) is not int or dim <= 0:
        raise _bad(file, f"'dim_' must be a positive int; got {dim!r}")
    if kind not in _KINDS:
        raise _bad(file, f"'kind' must be one of {_KINDS}; got {kind!r}")
    if not isinstance(cfg.get("params", {}), dict) or type(cfg.get("layers_named_", True)) is not bool:
        raise _bad(file, "'params' must be an object and 'layers_named_' a bool")
    if kind == "regression":
        if classes is not None:
            raise _bad(file, f"a regression head has no classes; 'classes_' is {classes!r}")
        return layers, dim, kind, None
    if (not isinstance(classes, list) or len(classes) < 2
            or any(isinstance(c, (dict, list)) or c is None for c in classes)):
        raise _bad(file, f"a classifier needs 'classes_' with at least two labels; got {classes!r}")
    if len({json.dumps(c) for c in classes}) != len(classes) or np.asarray(classes).ndim != 1:
        raise _bad(file, f"'classes_' must be distinct scalar labels; got {classes!r}")
    return layers, dim, kind, classes


def _check_arrays(arrays: dict[str, np.ndarray], layers: list[int], dim: int,
                  classes: list[Any] | None, file: str) -> None:
    """Every array the config implies, of the right shape, finite; nothing else."""
    if sorted(arrays) != sorted(_ARRAYS):
        raise _bad(file, f"holds tensors {sorted(arrays)}; a saved probe holds exactly {list(_ARRAYS)}")
    scale = arrays["layer_scale"]
    for name in _ARRAYS:
        if arrays[name].dtype.kind != "f":
            raise _bad(file, f"tensor {name!r} has dtype {arrays[name].dtype}; expected floating point")
    # one score column for binary and regression heads, one per class otherwise
    outputs = 1 if classes is None or len(classes) == 2 else len(classes)
    expect = {"W": (len(layers) * dim, outputs), "b": (outputs,), "layer_scale": (len(layers),)}
    for name, shape in expect.items():
        if arrays[name].shape != shape:
            raise _bad(file, f"tensor {name!r} has shape {arrays[name].shape}; the config "
                             f"({len(layers)} layers of dim {dim}, {outputs} outputs) implies {shape}")
    for name in _ARRAYS:
        if not np.isfinite(arrays[name]).all():
            raise _bad(file, f"tensor {name!r} holds NaN or infinite values")
    if not (scale > 0).all():
        raise _bad(file, "tensor 'layer_scale' holds values <= 0")


def load_probe(path: str) -> Any:
    """Load a probe saved with :func:`save_probe`.

    Beyond the two checksums (which whoever made the files controls), the content is
    checked: the config's types, classes that fit the head, every array the config implies
    with its exact shape and finite values, and no other array.

    Raises
    ------
    IntegrityError
        Naming the file, when the files disagree with each other or with themselves.
    """
    from .estimator import Probe

    cfg = _read_config(path)
    cfg_file = os.path.join(path, CONFIG)
    weights = os.path.join(path, WEIGHTS)
    blob = open(weights, "rb").read() if os.path.exists(weights) else b""
    if hashlib.sha256(blob).hexdigest() != cfg.get("weights_sha256"):
        raise IntegrityError(
            f"{weights} does not match the sha256 recorded in {CONFIG}; the probe was modified "
            "or is incomplete. Save it again from the fitted probe, or download it again."
        )
    if _safetensors_metadata(blob, weights).get("config_sha256") != _config_sha256(cfg):
        raise IntegrityError(
            f"{cfg_file} was modified after saving: it no longer matches the "
            f"checksum stored in {WEIGHTS}. Save the probe again instead of editing its config."
        )
    layers, dim, kind, classes = _check_config(cfg, cfg_file)
    try:
        arrays = load(blob)
    except Exception as exc:  # safetensors raises its own error types for a malformed file
        raise _bad(weights, f"is not a readable safetensors file ({exc})") from None
    _check_arrays(arrays, layers, dim, classes, weights)
    W, b = arrays["W"].astype(np.float64), arrays["b"].astype(np.float64)
    params = dict(cfg.get("params") or {})
    if params.get("classifier") not in (None, *CLASSIFIERS):
        params["classifier"] = "logistic_regression"  # the fitted head is what predicts
    probe = Probe(**{k: params.get(k) for k in ("layers", "view", "classifier", "task", "normalize",
                                                 "preprocessing", "pca_components",
                                                 "classifier_kwargs", "random_state")
                     if k in params})
    probe.pipeline_ = LinearHead(W, b, kind, None if classes is None else np.asarray(classes))
    probe.layers_, probe.dim_ = [request(L) for L in layers], dim
    probe.layers_named_ = cfg.get("layers_named_", True)
    probe.layer_scale_ = arrays["layer_scale"].astype(np.float64)
    probe.n_features_in_ = W.shape[0]
    probe.provenance_ = cfg.get("provenance")
    if kind != "regression":
        probe.classes_ = probe.pipeline_.classes_
    return probe
