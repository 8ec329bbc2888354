"""The public surface is pinned, and ``import actstore`` stays light."""

from __future__ import annotations

import subprocess
import sys

import actstore


def test_all_is_sorted_and_resolvable() -> None:
    assert actstore.__all__ == sorted(actstore.__all__)
    for name in actstore.__all__:
        assert getattr(actstore, name) is not None, name


def test_exported_members_are_pinned() -> None:
    assert set(actstore.__all__) == {
        "ActstoreError", "CacheError", "ConcurrentWriteError", "ConfigMismatchError",
        "CredentialsError", "Dataset", "DatasetChangedError", "DatasetExistsError",
        "DatasetInfo", "DatasetNotFoundError", "DatasetWriter", "FormatError", "HubAuthError",
        "HubError", "IntegrityError", "InvalidArgumentError", "LayerNotFoundError",
        "MissingDependencyError", "NotFittedError", "OfflineError", "Probe", "UnifiedCache",
        "UnsafePathError", "UnsupportedVersionError", "VerifyReport", "__version__",
        "control_task", "convert", "cross_validate", "errors", "extract", "fetch_metadata",
        "fit_streaming", "mdl_probe", "merge", "open_dataset", "baselines", "BaselineBattery",
        "ProbeEnsemble", "pull_dataset", "push_dataset", "stream", "sweep_layers", "WriteError",
    }


def test_import_is_light() -> None:
    code = (
        "import sys, actstore, actstore.format, actstore.cli; actstore.cli.build_parser();"
        "heavy = {'torch', 'transformers', 'sklearn', 'huggingface_hub', 'datasets'};"
        "print(sorted(heavy & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_errors_inherit_builtins() -> None:
    assert issubclass(actstore.FormatError, ValueError)
    assert issubclass(actstore.DatasetNotFoundError, FileNotFoundError)
    assert issubclass(actstore.LayerNotFoundError, LookupError)
    assert issubclass(actstore.HubAuthError, PermissionError)
    assert issubclass(actstore.OfflineError, ConnectionError)
    assert issubclass(actstore.IntegrityError, actstore.FormatError)


def test_extract_shows_its_own_signature() -> None:
    """``actstore.extract?`` in a notebook shows the arguments, not ``(*args, **kwargs)``."""
    import inspect

    params = inspect.signature(actstore.extract).parameters
    assert {"model", "prompts", "out", "layers", "pooling", "model_name", "overwrite"} <= set(params)
