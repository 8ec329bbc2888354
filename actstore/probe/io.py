"""Saving and loading probes: the functions kept from before the saved-probe split.

The files and their checks live in :mod:`actstore.probe.saved` (:func:`read_probe` /
:func:`write_probe` of a :class:`SavedProbe` record, which knows nothing of ``Probe``);
``Probe.save`` / ``Probe.load`` build the record and the probe. These two functions call
them.
"""

from __future__ import annotations

import os

from .estimator import Probe
from .provenance import dataset_provenance
from .saved import CONFIG, PROBE_FORMAT_VERSION, WEIGHTS, SavedProbe, read_probe, write_probe

__all__ = ["CONFIG", "PROBE_FORMAT_VERSION", "WEIGHTS", "SavedProbe", "dataset_provenance", "load_probe",
           "read_probe", "save_probe", "write_probe"]


def save_probe(probe: Probe, path: str | os.PathLike[str]) -> None:
    """Write a fitted probe to the folder ``path`` (:meth:`Probe.save`)."""
    probe.save(path)


def load_probe(path: str | os.PathLike[str]) -> Probe:
    """Load a probe saved with :func:`save_probe` (:meth:`Probe.load`).

    Raises
    ------
    IntegrityError
        Naming the file, when the files disagree with each other or with themselves.
    """
    return Probe.load(path)
