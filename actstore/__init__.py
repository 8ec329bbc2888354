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

__version__ = "0.1.0"

# public name -> module that defines it (imported on first attribute access)
_LAZY: dict[str, str] = {
    "Dataset": "actstore.format.reader",
    "DatasetInfo": "actstore.format.metadata",
    "DatasetWriter": "actstore.format.writer",
    "convert": "actstore.format.convert",
    "VerifyReport": "actstore.format.verify",
    "open_dataset": "actstore.open",
    "UnifiedCache": "actstore.cache",
    "extract": "actstore.extract",
    "merge": "actstore.extract",
    "push_dataset": "actstore.hub",
    "pull_dataset": "actstore.hub",
    "fetch_metadata": "actstore.hub",
    "Probe": "actstore.probe",
    "sweep_layers": "actstore.probe",
    "cross_validate": "actstore.probe",
    "fit_streaming": "actstore.probe",
    "mdl_probe": "actstore.probe",
    "control_task": "actstore.probe",
}

__all__ = sorted([*errors.__all__, "__version__", "errors", *_LAZY])


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'actstore' has no attribute {name!r}")
    mod = importlib.import_module(module)
    # ``actstore.extract`` is a callable package: keep the package (``actstore.extract.merge``
    # keeps working), not the function it also holds under the same name
    value = mod if name == "extract" and callable(mod) else getattr(mod, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__


if TYPE_CHECKING:  # pragma: no cover
    from .format.reader import Dataset
    from .format.writer import DatasetWriter
    from .open import open_dataset
