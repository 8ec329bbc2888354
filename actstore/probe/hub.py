"""Probes on the Hub: ``probe.push_to_hub`` / ``Probe.from_hub``, reusing the dataset transfer.

A probe repo (``repo_type="model"``) holds ``probe.json`` + ``probe.safetensors`` (the
pickle-free format of :mod:`actstore.probe.io`) and a model card. Loading pins the commit,
downloads the two files and goes through the checked loader.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ..config import cache_dir
from ..errors import DatasetNotFoundError
from ..hub_client import download_files, hub_errors, make_api, upload_folder_in_batches
from .io import CONFIG, WEIGHTS, load_probe, save_probe

__all__ = ["probe_card", "probe_from_hub", "push_probe"]


def probe_card(probe: Any, repo_id: str, metrics: dict[str, Any] | None = None,
               base_model: str | None = None) -> str:
    """A model card: YAML front matter, what the probe reads, and how to load it.

    Examples
    --------
    >>> print(probe_card(probe, "me/probe", base_model="gpt2"))  # doctest: +SKIP
    """
    front = ["---", "library_name: actstore", "tags:", "- actstore", "- probe", "- interpretability"]
    if base_model:
        front.append(f"base_model: {base_model}")
    front.append("---")
    classes = getattr(probe, "classes_", None)
    rows = [
        ("task", probe.task), ("classifier", str(probe.get_params()["classifier"])),
        ("layers", ", ".join(map(str, probe.layers_))), ("view", probe.view or "primary"),
        ("input dim per layer", str(probe.dim_)),
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


def push_probe(probe: Any, repo_id: str, *, token: str | bool | None = None, private: bool | None = None,
               endpoint: str | None = None, metrics: dict[str, Any] | None = None,
               base_model: str | None = None, commit_message: str = "Upload actstore probe") -> str:
    """Upload a fitted probe to a model repo; returns the commit sha.

    ``probe.json`` goes in last (``upload_folder_in_batches(last=...)``) so a reader never sees a
    config whose weights are not there yet. Parameters are those of :meth:`Probe.push_to_hub`.

    Examples
    --------
    >>> push_probe(probe, "me/probe", metrics=probe.evaluate(X_test, y_test))  # doctest: +SKIP
    """
    api = make_api(token, endpoint)
    with tempfile.TemporaryDirectory(prefix="actstore-probe-") as tmp:
        save_probe(probe, tmp)
        card = probe_card(probe, repo_id, metrics, base_model).encode()
        with _probe_errors(repo_id, "push to", write=True):
            api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
            return upload_folder_in_batches(tmp, repo_id, "model", api=api, last=lambda p: p == CONFIG,
                                            extra_files={"README.md": card}, message=commit_message)


@contextmanager
def _probe_errors(repo_id: str, action: str, **kw: Any) -> Iterator[None]:
    """The dataset transfer's error translation, worded for a probe's model repo."""
    try:
        with hub_errors(repo_id, action, **kw):
            yield
    except DatasetNotFoundError as exc:
        # same class and fix; only the repo kind in the shared message is wrong here
        raise DatasetNotFoundError(str(exc).replace("dataset repo", "probe (model) repo")
                                   .replace("Dataset repo", "Probe (model) repo")) from None


def probe_from_hub(repo_id: str, *, revision: str | None = None, token: str | bool | None = None,
                   endpoint: str | None = None, local_dir: str | None = None) -> Any:
    """Download a probe pinned to the commit ``revision`` resolves to, and load it safely.

    Files land in ``<cache_dir>/hub/probes/<owner>--<name>/<sha>`` (or ``local_dir``); the
    checked loader of :mod:`actstore.probe.io` refuses tampered weights.

    Examples
    --------
    >>> probe = probe_from_hub("me/probe", revision="main")  # doctest: +SKIP
    """
    api = make_api(token, endpoint)
    with _probe_errors(repo_id, "load the probe from", revision=revision):
        sha = str(api.model_info(repo_id, revision=revision).sha)
        local = local_dir or os.path.join(cache_dir(), "hub", "probes", repo_id.replace("/", "--"), sha)
        download_files(repo_id, "model", [CONFIG, WEIGHTS], revision=sha, local_dir=local,
                       token=token, endpoint=endpoint)
    probe = load_probe(local)
    probe.hub_revision_ = sha
    return probe
