"""Publish datasets to the Hugging Face Hub and get them back: push, pull, metadata.

``push_dataset`` (:mod:`.push`) uploads with the official client, data first and the index
(with the card) last, so a reader never sees an index pointing at missing shards; rerunning an
interrupted push sends only what is missing. ``pull_dataset`` (:mod:`.pull`) downloads the
index plus only the layers and views asked for, pinned to one commit, and checks every file's
sha256. ``fetch_metadata`` (:mod:`.metadata`) reads just the Parquet footer by range requests.

Everything Hub-generic (batched uploads, pinned downloads, limits, error mapping) lives in the
shared leaf :mod:`actstore.hub_client`, which probes use too.
"""

from __future__ import annotations

from ._common import INDEX_PATH
from .card import build_dataset_card
from .metadata import fetch_metadata
from .pull import _wanted_files, pull_dataset, pulled_revision
from .push import push_dataset

__all__ = ["INDEX_PATH", "build_dataset_card", "fetch_metadata", "pull_dataset", "pulled_revision",
           "push_dataset"]
_ = _wanted_files  # re-exported for callers that check layer selection (tests)
