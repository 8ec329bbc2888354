"""actstore: publish, share and load language-model activations, and train probes on them.

The public names below load lazily, so ``import actstore`` stays light: it imports none of
torch, transformers, scikit-learn or huggingface_hub. Each heavy dependency loads inside the
subpackage that needs it.

Examples
--------
>>> import actstore
>>> ds = actstore.open_dataset("path/to/dataset")        # doctest: +SKIP
>>> X = ds.layer(8)                                        # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from . import errors
from ._version import __version__
from .errors import (
    ActstoreError,
    CacheError,
    ConcurrentWriteError,
    ConfigMismatchError,
    CredentialsError,
    DatasetChangedError,
    DatasetExistsError,
    DatasetNotFoundError,
    FormatError,
    HubAuthError,
    HubError,
    IntegrityError,
    InvalidArgumentError,
    LayerNotFoundError,
    MissingDependencyError,
    NotFittedError,
    OfflineError,
    UnsafePathError,
    UnsupportedVersionError,
    WriteError,
)

# public name -> module that defines it (imported on first attribute access)
_LAZY: dict[str, str] = {
    "Dataset": "actstore.format.reader",
    "DatasetInfo": "actstore.format.info",
    "DatasetWriter": "actstore.format.writer",
    "convert": "actstore.format.convert",
    "VerifyReport": "actstore.format.verify",
    "open_dataset": "actstore.open",
    "UnifiedCache": "actstore.cache",
    "extract": "actstore.extraction",
    "merge": "actstore.extraction",
    "push_dataset": "actstore.hub",
    "pull_dataset": "actstore.hub",
    "fetch_metadata": "actstore.hub",
    "Probe": "actstore.probe",
    "baselines": "actstore.probe",
    "ProbeEnsemble": "actstore.probe",
    "BaselineBattery": "actstore.probe",
    "sweep_layers": "actstore.probe",
    "cross_validate": "actstore.probe",
    "fit_streaming": "actstore.probe",
    "mdl_probe": "actstore.probe",
    "control_task": "actstore.probe",
    "stream": "actstore.loader",
}

__all__ = sorted([*errors.__all__, "__version__", "errors", *_LAZY])


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'actstore' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__


if TYPE_CHECKING:  # pragma: no cover - for type checkers and the API reference (griffe)
    from .cache import UnifiedCache
    from .extraction import extract, merge
    from .format.convert import convert
    from .format.info import DatasetInfo
    from .format.reader import Dataset
    from .format.verify import VerifyReport
    from .format.writer import DatasetWriter
    from .hub import fetch_metadata, pull_dataset, push_dataset
    from .loader import stream
    from .open import open_dataset
    from .probe import (
        BaselineBattery,
        Probe,
        ProbeEnsemble,
        baselines,
        control_task,
        cross_validate,
        fit_streaming,
        mdl_probe,
        sweep_layers,
    )
