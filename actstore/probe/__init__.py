"""Probes trained on stored activations: never a language model, never a GPU.

Needs the ``probe`` extra (scikit-learn, matplotlib, pandas): ``pip install "actstore[probe]"``.
"""

from __future__ import annotations

from ..errors import require

require("sklearn", "probe")

from .baselines import BaselineBattery, BaselineResults, baselines  # noqa: E402
from .control import control_labels, control_task  # noqa: E402
from .ensemble import ProbeEnsemble  # noqa: E402
from .estimator import Probe  # noqa: E402
from .mdl import MDLResult, mdl_probe  # noqa: E402
from .results import append_results, report  # noqa: E402
from .streaming import (  # noqa: E402
    StreamingFit,
    StreamingStatistics,
    accumulate_statistics,
    fit_streaming,
    load_statistics,
)
from .sweep import SweepResult, cross_validate, sweep_layers  # noqa: E402

__all__ = [
    "BaselineBattery",
    "BaselineResults",
    "MDLResult",
    "Probe",
    "ProbeEnsemble",
    "StreamingFit",
    "StreamingStatistics",
    "SweepResult",
    "accumulate_statistics",
    "append_results",
    "baselines",
    "control_labels",
    "control_task",
    "cross_validate",
    "fit_streaming",
    "load_statistics",
    "mdl_probe",
    "report",
    "sweep_layers",
]
