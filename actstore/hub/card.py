"""The dataset card (README.md) pushed with a dataset.

Its YAML front matter points the Hub viewer and ``datasets.load_dataset(repo_id)`` at the
Parquet index, so the prompts and labels show up without actstore; the body says what is
stored and how to read it three ways (actstore, pyarrow + safetensors, datasets).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from ..format.codecs import card_lines
from ..format.info import DatasetInfo
from ..format.layersel import request, stored
from ..format.spec import INDEX_PATH

__all__ = ["build_dataset_card", "is_hub_id", "model_link"]


def is_hub_id(model: str | None) -> bool:
    """Whether ``model`` can be a Hub model id (``name`` or ``org/name``), not a local path."""
    if not model or model.startswith(("/", ".", "~")) or "\\" in model or ":" in model:
        return False
    parts = model.split("/")
    return len(parts) <= 2 and all(parts)


def model_link(model: str) -> str:
    """A Markdown link to the model's Hub page, or the name in code font when it is no Hub id."""
    return f"[{model}](https://huggingface.co/{model})" if is_hub_id(model) else f"`{model}`"


def _yaml_list(name: str, items: list[str]) -> list[str]:
    return [f"{name}:"] + [f"- {json.dumps(i)}" for i in items]


def _front_matter(info: DatasetInfo, license: str, tags: list[str]) -> str:
    lines = [f"license: {license}"]
    if is_hub_id(info.model):
        lines += [f"base_model: {json.dumps(info.model)}"]
    lines += _yaml_list("tags", tags)
    lines += ["task_categories:", "- feature-extraction"]
    lines += ["configs:", "- config_name: default", "  data_files:", "  - split: train",
              "    path: index/*.parquet"]
    return "---\n" + "\n".join(lines) + "\n---\n"


def _layers(layers: tuple[int | str, ...]) -> str:
    ints = all(isinstance(v, int) for v in layers)  # "embeddings" breaks a range
    if ints and len(layers) > 2 and list(layers) == list(range(layers[0], layers[-1] + 1)):
        return f"{layers[0]}–{layers[-1]}"
    return ", ".join(map(str, layers))


def _contents(info: DatasetInfo) -> list[str]:
    rows = ["| view | pooling | storage | layers | dim | dtype | shards per layer | size |",
            "|---|---|---|---|---|---|---|---|"]
    for i, name in enumerate(info.views):
        prefix = "tensors/" if i == 0 else f"tensors/{name}/"
        files = [f for p, f in info.files.items() if p.startswith(prefix + "hidden_layer")]
        shards = len(files) // max(len(info.layers), 1) if files else "?"
        size = sum(f["size"] for f in files)
        pooling, storage = (info.pooling, info.storage) if i == 0 else (name, "pooled")
        rows.append(f"| `{name}` | {pooling} | {storage} | {_layers(info.layers)} | {info.dim} "
                    f"| {info.dtype} | {shards} | {size / 1e6:,.1f} MB |")
    if info.logits_k:
        rows.append(f"| `logits_topk` | top-{info.logits_k} at the last token | pooled | – | – "
                    "| float32 / int32 | – | – |")
    return rows


def _per_layer(info: DatasetInfo) -> list[str]:
    """One row per stored layer: what a reader downloads for it, before downloading."""
    rows = ["| layer | rows | views | dtype | bytes |", "|---|---|---|---|---|"]
    views = ", ".join(f"`{v}`" for v in info.views)
    for layer in info.layers:
        tag = f"hidden_layer{stored(layer):03d}_"
        size = sum(f["size"] for p, f in info.files.items() if tag in p.rsplit("/", 1)[-1])
        rows.append(f"| {layer} | {info.num_prompts:,} | {views} | {info.dtype} "
                    f"| {size:,} ({size / 1e6:,.1f} MB) |")
    return rows


def _label_balance(counts: Mapping[str, int]) -> list[str]:
    total = sum(counts.values()) or 1
    rows = ["| label | rows | share |", "|---|---|---|"]
    rows += [f"| `{k}` | {n:,} | {n / total:.1%} |" for k, n in counts.items()]
    return rows


def _snippets(repo_id: str, info: DatasetInfo) -> list[str]:
    layer = stored(info.layers[len(info.layers) // 2])  # file names use the stored number
    name = f"tensors/hidden_layer{layer:03d}_shard000.safetensors"
    return [
        "## Load it", "", "With actstore (downloads only the index and the layers asked for):", "",
        "```python", "import actstore",
        f'ds = actstore.pull_dataset("{repo_id}", layers=[{request(layer)!r}])',  # never -1
        f"X, y = ds.layer({request(layer)!r}), ds.labels", "```", "",
        "Lazily, without downloading whole shards:", "",
        "```python", f'ds = actstore.open_dataset("hf://datasets/{repo_id}")', "```", "",
        "With plain pyarrow + safetensors:", "",
        "```python", "import pyarrow.parquet as pq",
        "from huggingface_hub import hf_hub_download", "from safetensors.numpy import load_file",
        f'idx = pq.read_table(hf_hub_download("{repo_id}", "{INDEX_PATH}", repo_type="dataset"))',
        f'shard = load_file(hf_hub_download("{repo_id}", "{name}", repo_type="dataset"))',
        f'X = shard["hidden.layer_{layer}"]  # rows: idx["shard_index"] == 0, at idx["row_offset"]',
        "```", "",
        "The prompts and labels with `datasets`:", "",
        "```python", "from datasets import load_dataset",
        f'prompts = load_dataset("{repo_id}", split="train")', "```", "",
    ]


def build_dataset_card(info: DatasetInfo, repo_id: str, *, license: str = "cc-by-4.0",
                       tags: list[str] | None = None,
                       label_counts: Mapping[str, int] | None = None,
                       sweep_image: str | None = None) -> str:
    """Render the README.md dataset card for ``info``.

    Parameters
    ----------
    info : DatasetInfo
        What the dataset holds (``ds.info`` of the local dataset).
    repo_id : str
        Used in the code snippets.
    license : str
        SPDX-style license id for the front matter.
    tags : list of str, optional
        Extra tags; ``actstore``, ``lmprobe``, ``activations`` and ``interpretability`` are
        always there.
    label_counts : mapping, optional
        Rows per label value (``push_dataset`` passes the index's), shown as the label balance.
    sweep_image : str, optional
        Repo path of a probe-sweep plot pushed with the dataset, shown in the card.

    Examples
    --------
    >>> card = build_dataset_card(ds.info, "org/acts")   # doctest: +SKIP
    >>> card.startswith("---")                           # doctest: +SKIP
    True
    """
    all_tags = ["actstore", "lmprobe", "activations", "interpretability", *(tags or [])]
    if is_hub_id(info.model):
        all_tags.append(info.model.split("/")[-1].lower())
    model = info.model or "unknown model"
    rev = f" at revision `{info.revision}`" if info.revision else ""
    lines = [_front_matter(info, license, list(dict.fromkeys(all_tags))),
             f"# {model} — activation dataset", "",
             f"Hidden states of {model_link(model) if info.model else model}{rev}, "
             f"{info.num_prompts:,} prompts, stored in the lmprobe v2 layout "
             f"(format {info.format_version}, actstore extensions {info.actstore_version}).", ""]
    if info.description:
        lines += [info.description, ""]
    lines += ["## Contents", "", *_contents(info), ""]
    if info.layers:
        lines += ["### Per layer", "", *_per_layer(info), ""]
    if info.codec:  # int8/fp8 storage: say so, with the error measured at write
        lines += card_lines(info.codec)
    if info.labels:
        lines += [f"Labels: `{json.dumps(info.labels)}`", ""]
    if label_counts:
        lines += ["### Label balance", "", *_label_balance(label_counts), ""]
    if sweep_image:
        lines += ["## Probe sweep", "", f"![Probe accuracy per layer]({sweep_image})", ""]
    lines += _snippets(repo_id, info)
    lines += ["## Provenance", ""] + _provenance(info) + [""]
    return "\n".join(lines)


def _provenance(info: DatasetInfo) -> list[str]:
    items: dict[str, Any] = {"model": info.model, "model revision": info.revision,
                             **info.provenance}
    for k, v in info.extraction.items():
        items.setdefault(f"extraction.{k}", v)
    return [f"- **{k}**: `{json.dumps(v) if not isinstance(v, str) else v}`"
            for k, v in items.items() if v is not None]
