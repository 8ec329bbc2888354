"""The saved-probe record and its two files, without pickle: ``probe.json`` + ``probe.safetensors``.

A fitted probe is saved as a :class:`SavedProbe`: its parameters, its fitted layout and one
affine head (see :mod:`actstore.probe.head`). :func:`write_probe` and :func:`read_probe`
move that record to and from a folder; they know nothing of :class:`~actstore.Probe`, which
builds the record (``Probe.save``) and builds itself from one (``Probe.load``).

Each file carries the other's checksum: the config records the weights' sha256, and the
weights' safetensors metadata records the sha256 of the config's canonical JSON (without
that one field). Reading checks the format version, both checksums, and every array's
shape, so an edit to either file (classes, layers, weights) is refused instead of silently
changing what the probe predicts.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from safetensors.numpy import load, save_file

from ..errors import FormatError, IntegrityError, InvalidArgumentError, UnsupportedVersionError
from ..format.durable import atomic_folder

__all__ = ["CONFIG", "PROBE_FORMAT_VERSION", "WEIGHTS", "HeadKind", "Label", "SavedProbe",
           "read_probe", "write_probe"]

PROBE_FORMAT_VERSION = 1
CONFIG, WEIGHTS = "probe.json", "probe.safetensors"
_FORMAT = "actstore-probe"
_KINDS = ("proba", "margin", "regression")
_ARRAYS = ("W", "b", "layer_scale")

HeadKind = Literal["proba", "margin", "regression"]
#: A class label as JSON holds it.
Label = int | float | str | bool


@dataclass(frozen=True)
class SavedProbe:
    """Everything a saved probe holds: what :func:`write_probe` writes and :func:`read_probe` returns.

    Attributes
    ----------
    params : dict
        The estimator's parameters (``Probe.get_params()``), JSON values; an estimator
        instance given as ``classifier`` is recorded by its built-in name.
    layers : list of int
        The fitted layers as stored numbers (``-1`` is the embeddings).
    layers_named : bool
        False when ``layers`` are positions in an array whose layers were not named.
    dim : int
        Input features per layer.
    kind : {"proba", "margin", "regression"}
        How the head's scores become predictions.
    classes : list or None
        The class labels (None for regression).
    provenance : dict or None
        What the probe was fitted on (None for arrays).
    W, b, layer_scale : numpy.ndarray
        The head ``x @ W + b`` over the concatenated, per-layer scaled features:
        ``W`` is ``(len(layers) * dim, outputs)``, ``b`` is ``(outputs,)`` and
        ``layer_scale`` ``(len(layers),)`` (float64 when read).
    """

    params: dict[str, Any]
    layers: list[int]
    layers_named: bool
    dim: int
    kind: HeadKind
    classes: list[Label] | None
    provenance: dict[str, Any] | None
    W: np.ndarray
    b: np.ndarray
    layer_scale: np.ndarray


def write_probe(saved: SavedProbe, path: str | os.PathLike[str]) -> None:
    """Write ``saved`` to the folder ``path`` (created, or its two files replaced atomically).

    Raises
    ------
    InvalidArgumentError
        The parameters are not JSON values, or ``path`` exists and is not a folder.
    """
    try:
        json.dumps(saved.params)
    except TypeError as exc:
        raise InvalidArgumentError(f"Probe parameters are not JSON-serialisable ({exc}).") from None
    config: dict[str, Any] = {
        "format": _FORMAT,
        "format_version": PROBE_FORMAT_VERSION,
        "params": saved.params,
        "layers_": [int(v) for v in saved.layers],  # stored numbers (-1 = the embeddings)
        "layers_named_": bool(saved.layers_named),
        "dim_": int(saved.dim),
        "kind": saved.kind,
        "classes_": saved.classes,
        "provenance": saved.provenance,
    }
    arrays = {"W": np.ascontiguousarray(saved.W), "b": np.ascontiguousarray(saved.b),
              "layer_scale": np.asarray(saved.layer_scale, dtype=np.float64)}
    _write_atomic(os.fspath(path), arrays, config)


def _write_atomic(path: str, arrays: dict[str, np.ndarray], config: dict[str, Any]) -> None:
    """Write both files into a fresh folder next to ``path``, flush them, then move them in.

    A failure before the move (an exception, a full disk) leaves a probe already at ``path``
    as it was. A new ``path`` is the staged folder renamed (atomic); an existing folder gets
    each file by an atomic ``os.replace``, weights first: a power loss between the two leaves
    old config with new weights, which :func:`read_probe` refuses (``weights_sha256``), never
    a silently mixed probe. Every file is ``fsync``'ed before its rename and every folder
    after, so the save is durable.
    """
    if os.path.lexists(path) and not os.path.isdir(path):
        raise InvalidArgumentError(f"{path!r} exists and is not a folder; save the probe elsewhere.")
    # the config last: it records the weights' sha256, so a crash between the two replaces
    # leaves a folder that read_probe refuses, never a silently mixed probe
    with atomic_folder(path, order=(WEIGHTS, CONFIG)) as staging:
        weights = os.path.join(staging, WEIGHTS)
        save_file(arrays, weights, metadata={"config_sha256": _config_sha256(config)})
        with open(weights, "rb") as f:
            config["weights_sha256"] = hashlib.sha256(f.read()).hexdigest()
        with open(os.path.join(staging, CONFIG), "w") as f:
            json.dump(config, f, indent=2)


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
    if not isinstance(cfg, dict) or cfg.get("format") != _FORMAT:
        raise FormatError(f"{cfg_path} is not an actstore probe config.")
    version = cfg.get("format_version")
    if version != PROBE_FORMAT_VERSION:
        raise UnsupportedVersionError(
            f"{cfg_path} has probe format version {version!r}; this actstore reads version "
            f"{PROBE_FORMAT_VERSION}. Upgrade actstore or re-save the probe."
        )
    return cfg


def _bad(file: str, what: str) -> IntegrityError:
    return IntegrityError(
        f"{file}: {what}; the saved probe is damaged or was edited. Save it again from the "
        "fitted probe, or download it again."
    )


def _check_config(cfg: dict[str, Any], file: str) -> tuple[list[int], int, HeadKind, list[Label] | None]:
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
                  classes: list[Label] | None, file: str) -> None:
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


def read_probe(path: str | os.PathLike[str]) -> SavedProbe:
    """Read and check the probe saved in the folder ``path``.

    Beyond the two checksums (which whoever made the files controls), the content is
    checked: the config's types, classes that fit the head, every array the config implies
    with its exact shape and finite values, and no other array.

    Raises
    ------
    FormatError
        ``path`` holds no probe config, or not a valid one.
    UnsupportedVersionError
        The config has another probe format version.
    IntegrityError
        Naming the file, when the files disagree with each other or with themselves.
    """
    path = os.fspath(path)
    cfg = _read_config(path)
    cfg_file = os.path.join(path, CONFIG)
    weights = os.path.join(path, WEIGHTS)
    blob = b""
    if os.path.exists(weights):
        with open(weights, "rb") as f:
            blob = f.read()
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
    return SavedProbe(
        params=dict(cfg.get("params") or {}), layers=layers, layers_named=cfg.get("layers_named_", True),
        dim=dim, kind=kind, classes=classes, provenance=cfg.get("provenance"),
        W=arrays["W"].astype(np.float64), b=arrays["b"].astype(np.float64),
        layer_scale=arrays["layer_scale"].astype(np.float64),
    )
