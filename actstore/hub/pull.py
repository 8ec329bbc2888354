"""``pull_dataset``: the index plus only the layers and views asked for, pinned to one
commit, every file's sha256 checked; ``pulled_revision`` reads what a pull recorded.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

from ..config import cache_dir
from ..errors import DatasetNotFoundError, InvalidArgumentError, LayerNotFoundError
from ..format.layersel import LayerSpec, resolve_layers
from ..format.metadata import ViewLayout, decode_schema_metadata, parse_files, parse_layout
from ..format.reader import Dataset
from ..hub_client import DownloadPool, hub_errors, make_api
from ._common import INDEX_PATH, RECORD, bars

__all__ = ['pull_dataset', 'pulled_revision']


def _read_local_meta(local_dir: str) -> tuple[dict[str, Any], dict[str, ViewLayout], Any, dict[str, Any]]:
    import pyarrow.parquet as pq

    meta = decode_schema_metadata(pq.read_schema(os.path.join(local_dir, INDEX_PATH)).metadata)
    views, logits = parse_layout(meta)
    return meta, views, logits, parse_files(meta)



def _wanted_files(views: dict[str, ViewLayout], logits: dict[str, Any] | None,
                  layers: Sequence[int | str] | None, names: Sequence[str] | None,
                  want_logits: bool) -> list[str]:
    names = list(names) if names is not None else list(views)
    unknown = [n for n in names if n not in views]
    if unknown:
        raise LayerNotFoundError(f"The dataset has no view {unknown}; it holds views {list(views)}.")
    out: list[str] = []
    for name in names:
        v = views[name]
        missing = sorted(L for L in (layers or ()) if isinstance(L, int) and L >= 0 and L not in v.layers)
        if missing:
            raise LayerNotFoundError(
                f"Layers {missing} are not in view {name!r} of the dataset; it holds layers "
                f"{list(v.layers)}. Pass layers from that list."
            )
        # the one meaning of a layer (format/layersel): -1 = deepest block, "embeddings" by name
        chosen = v.layers if layers is None else resolve_layers(layers, v.layers, where=f"view {name!r} of the dataset")
        for layer in chosen:
            out += [v.path(layer, s) for s in range(len(v.shard_rows))]
    if want_logits and logits is not None:
        out += [s["file"] for s in logits["shards"]]
    return out



def pull_dataset(
    repo_id: str, *, layers: LayerSpec | None = None, views: Sequence[str] | None = None,
    logits: bool | None = None, revision: str | None = None,
    out: str | os.PathLike[str] | None = None, token: str | bool | None = None,
    endpoint: str | None = None, progress: bool = True,
) -> Dataset:
    """Download a dataset's index and only the requested layers/views; returns a ``Dataset``.

    Parameters
    ----------
    repo_id : str
        Hub dataset repo.
    layers : int, str or sequence of them, optional
        Layers to download (default: all): block numbers (negatives count from the deepest
        stored block), ``"embeddings"``, ``"all"``, ``"middle"``, ``"last"``.
    views : sequence of str, optional
        Pooled views to download (default: all).
    logits : bool, optional
        Download the top-k logits shards (default: only on a full pull).
    revision : str, optional
        Branch or commit sha; the pull is pinned to the commit it resolves to, which is
        recorded in ``<out>/.actstore/hub.json``.
    out : str or PathLike, optional
        Local folder (default: ``<actstore cache>/hub/datasets/<org>--<name>/<sha>``).
    progress : bool
        Show the Hub client's download bars.

    Examples
    --------
    >>> ds = actstore.pull_dataset("org/acts", layers=[16])   # doctest: +SKIP
    >>> X = ds.layer(16)                                       # doctest: +SKIP
    """
    from ..format.reader import open_dataset

    if layers is not None:  # the resolver's language (format/layersel), checked again on the index
        layers = [layers] if isinstance(layers, (int, str)) else list(layers)
        if not all(isinstance(i, (int, str)) and not isinstance(i, bool) for i in layers):
            raise InvalidArgumentError(
                f"layers must be ints or names ('embeddings', 'all', 'middle', 'last'); got {layers!r}."
            )
    api = make_api(token, endpoint)
    with hub_errors(repo_id, "pull", revision=revision), bars(progress):
        sha = str(api.dataset_info(repo_id, revision=revision).sha)
        local = os.fspath(out) if out is not None else os.path.join(
            cache_dir(), "hub", "datasets", repo_id.replace("/", "--"), sha)
        with DownloadPool(repo_id, "dataset", revision=sha, local_dir=local, token=token,
                          endpoint=endpoint) as pool:
            # the index and the card at once; the shards the moment the index names them
            index, card = pool.submit(INDEX_PATH), pool.submit("README.md")
            if not pool.wait([index])[0]:
                raise DatasetNotFoundError(
                    f"Dataset repo {repo_id!r} at {sha} holds no dataset index ({INDEX_PATH}); "
                    "it is not an actstore/lmprobe dataset, or a push to it did not finish "
                    "(rerun push_dataset)."
                )
            _, vs, lg, files = _read_local_meta(local)
            full = layers is None and views is None
            wanted = _wanted_files(vs, lg, layers, views, full if logits is None else logits)
            pool.wait([pool.submit(p, files.get(p, {}).get("sha256"), files.get(p, {}).get("size"))
                       for p in wanted] + [card])
    _record(local, {"repo_id": repo_id, "revision": sha, "requested_revision": revision,
                    "endpoint": api.endpoint, "files": wanted})
    return open_dataset(local)



def _record(local: str, record: dict[str, Any]) -> None:
    os.makedirs(os.path.join(local, ".actstore"), exist_ok=True)
    with open(os.path.join(local, RECORD), "w", encoding="utf-8") as f:
        json.dump(record, f, indent=2)



def pulled_revision(local_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    """What ``pull_dataset`` recorded for ``local_dir`` (repo id, commit sha, files), if any."""
    try:
        with open(os.path.join(local_dir, RECORD), encoding="utf-8") as f:
            return json.load(f)  # type: ignore[no-any-return]
    except FileNotFoundError:
        return None
