"""What a fitted probe records about the data it was fitted on (saved with it)."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

from .data import FeatureSource, LabelSource, is_dataset

__all__ = ["dataset_provenance"]


def dataset_provenance(data: FeatureSource, y: LabelSource, view: str | None,
                       layers: Sequence[int | str]) -> dict[str, Any] | None:
    """What a probe fitted on ``data`` records about it (None for plain arrays).

    The dataset's URL and revision (the Hub commit a pulled copy or an ``@rev`` URL names),
    the model and its revision, the view, the layers and the label column.
    """
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
            "layers": [v if isinstance(v, str) else int(v) for v in layers], "label_column": label,
            "rows": len(data)}


def _pulled_record(local: str) -> dict[str, Any] | None:
    """``pull_dataset``'s record of the repo and commit a local copy came from."""
    try:
        with open(os.path.join(local, ".actstore", "hub.json"), encoding="utf-8") as f:
            record = json.load(f)
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and isinstance(record.get("repo_id"), str) else None
