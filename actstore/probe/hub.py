"""Probes on the Hub: upload a saved probe's folder to a model repo, or download one.

A probe repo (``repo_type="model"``) holds ``probe.json`` + ``probe.safetensors`` (the
pickle-free files of :mod:`actstore.probe.saved`) and a model card. This module only moves
folders (``Probe.push_to_hub`` / ``Probe.from_hub`` save and load them); the Hub transfer
calls are in :func:`upload_probe_folder` and :func:`download_probe_folder`.
"""

from __future__ import annotations

import os
from typing import Any

from ..config import cache_dir
from ..hub_client import download_files, hub_errors, make_api, upload_folder_in_batches
from .classifiers import DEFAULT_CLASSIFIER
from .layers import request
from .saved import CONFIG, WEIGHTS, SavedProbe

__all__ = ["download_probe_folder", "probe_card", "upload_probe_folder"]


def probe_card(saved: SavedProbe, repo_id: str, metrics: dict[str, float | int] | None = None,
               base_model: str | None = None) -> str:
    """A model card for the saved probe: YAML front matter, what it reads, and how to load it.

    Examples
    --------
    >>> from actstore.probe.saved import read_probe
    >>> print(probe_card(read_probe("probe/"), "me/probe", base_model="gpt2"))  # doctest: +SKIP
    """
    front = ["---", "library_name: actstore", "tags:", "- actstore", "- probe", "- interpretability"]
    if base_model:
        front.append(f"base_model: {base_model}")
    front.append("---")
    params, classes = saved.params, saved.classes
    rows = [
        ("task", params.get("task")), ("classifier", str(params.get("classifier") or DEFAULT_CLASSIFIER.get(str(params.get("task")), "logistic_regression"))),
        ("layers", ", ".join(str(request(v)) for v in saved.layers)), ("view", params.get("view") or "primary"),
        ("input dim per layer", str(saved.dim)),
        ("classes", ", ".join(map(str, classes)) if classes is not None else "-"),
    ]
    body = [f"# Linear probe `{repo_id}`", "", "| | |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows)]
    if metrics:
        body += ["", "## Held-out metrics", "", "| metric | value |", "|---|---|"]
        body += [f"| {k} | {v:.4f} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in metrics.items()]
    body += ["", "## Use", "", "```python", "import actstore",
             f'probe = actstore.Probe.from_hub("{repo_id}")',
             'ds = actstore.open_dataset("<a dataset with the same model and layers>")',
             "probe.predict(ds)", "```", "",
             "Saved as JSON + safetensors (no pickle); the loader checks the weights' sha256.", ""]
    return "\n".join(front + [""] + body)


def upload_probe_folder(folder: str, repo_id: str, *, card: str, token: str | bool | None = None,
                        private: bool | None = None, endpoint: str | None = None,
                        commit_message: str = "Upload actstore probe") -> str:
    """Upload a saved probe's ``folder`` and its model ``card`` to a model repo; returns the commit sha.

    ``probe.json`` goes in last (``upload_folder_in_batches(last=...)``) so a reader never sees a
    config whose weights are not there yet. Parameters are those of :meth:`Probe.push_to_hub`.
    """
    api = make_api(token, endpoint)
    with _probe_errors(repo_id, "push to", write=True):
        api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        return upload_folder_in_batches(folder, repo_id, "model", api=api, last=lambda p: p == CONFIG,
                                        extra_files={"README.md": card.encode()}, message=commit_message)


def _probe_errors(repo_id: str, action: str, **kw: Any) -> Any:
    """The shared Hub error translation, worded for a probe's model repo."""
    return hub_errors(repo_id, action, repo_kind="probe (model)", **kw)


def download_probe_folder(repo_id: str, *, revision: str | None = None, token: str | bool | None = None,
                          endpoint: str | None = None, local_dir: str | None = None) -> tuple[str, str]:
    """Download a probe's two files, pinned to the commit ``revision`` resolves to.

    Files land in ``<cache_dir>/hub/probes/<owner>--<name>/<sha>`` (or ``local_dir``).
    Returns that folder and the commit sha; ``Probe.load`` reads it with the checked reader.

    Examples
    --------
    >>> folder, sha = download_probe_folder("me/probe", revision="main")  # doctest: +SKIP
    """
    api = make_api(token, endpoint)
    with _probe_errors(repo_id, "load the probe from", revision=revision):
        sha = str(api.model_info(repo_id, revision=revision).sha)
        local = local_dir or os.path.join(cache_dir(), "hub", "probes", repo_id.replace("/", "--"), sha)
        download_files(repo_id, "model", [CONFIG, WEIGHTS], revision=sha, local_dir=local,
                       token=token, endpoint=endpoint)
    return local, sha
