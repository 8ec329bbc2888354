"""Prompt sets from Python lists or files (.txt, .jsonl, .csv, .parquet), and templates."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

from ..errors import InvalidArgumentError

__all__ = ["PromptSet", "apply_template", "read_prompts"]


@dataclass
class PromptSet:
    """Texts plus optional labels and per-row metadata columns."""

    texts: list[str]
    labels: list[Any] | None = None
    metadata: dict[str, list[Any]] = field(default_factory=dict)
    raw: list[str] | None = None  # the prompts as given, when a template rewrote ``texts``

    @property
    def given(self) -> list[str]:
        """The prompts before any template (the activation cache's keys)."""
        return self.texts if self.raw is None else self.raw


def _table_rows(path: str) -> list[dict[str, Any]]:
    ext = os.path.splitext(path)[1].lower()
    if ext == ".jsonl":
        with open(path, encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]
    if ext == ".csv":
        import pyarrow.csv as pcsv

        return pcsv.read_csv(path).to_pylist()
    if ext == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    raise InvalidArgumentError(
        f"Cannot read prompts from {path!r}; expected a .txt, .jsonl, .csv or .parquet file."
    )


def read_prompts(
    source: Any,
    *,
    text_column: str = "text",
    label_column: str | None = None,
    labels: Any = None,
) -> PromptSet:
    """Read prompts from a list of strings or a file; other file columns become metadata."""
    if isinstance(source, (str, os.PathLike)) and os.path.isfile(source):
        path = os.fspath(source)
        if path.endswith(".txt"):
            with open(path, encoding="utf-8") as f:
                prompts = PromptSet([line.rstrip("\n") for line in f if line.strip()])
        else:
            prompts = _from_rows(_table_rows(path), text_column, label_column, path)
    elif isinstance(source, str):
        raise InvalidArgumentError(
            f"prompts={source!r} is neither a list of strings nor an existing file."
        )
    else:
        texts = list(source)
        if not all(isinstance(t, str) for t in texts):
            raise InvalidArgumentError("prompts must be strings (or a path to a prompt file).")
        prompts = PromptSet(texts)
    if labels is not None:
        labels = list(labels)
        if len(labels) != len(prompts.texts):
            raise InvalidArgumentError(
                f"labels has {len(labels)} entries but there are {len(prompts.texts)} prompts."
            )
        prompts.labels = labels
    if not prompts.texts:
        raise InvalidArgumentError("The prompt list is empty; give at least one prompt.")
    empty = [i for i, t in enumerate(prompts.texts) if not t.strip()]
    if empty:
        raise InvalidArgumentError(
            f"Prompts {empty[:5]} are empty strings; remove them (an empty prompt has no tokens)."
        )
    return prompts


def _from_rows(rows: list[dict[str, Any]], text_column: str, label_column: str | None, path: str) -> PromptSet:
    if rows and text_column not in rows[0]:
        raise InvalidArgumentError(
            f"{path} has no column {text_column!r}; its columns are {sorted(rows[0])}. "
            "Pass --text-column."
        )
    if label_column and rows and label_column not in rows[0]:
        raise InvalidArgumentError(f"{path} has no label column {label_column!r}; columns: {sorted(rows[0])}.")
    texts = [str(r[text_column]) for r in rows]
    labels = [r.get(label_column) for r in rows] if label_column else None
    skip = {text_column, label_column}
    names = [k for k in (rows[0] if rows else {}) if k not in skip]
    return PromptSet(texts, labels, {k: [r.get(k) for r in rows] for k in names})


def apply_template(texts: list[str], template: str | None, tokenizer: Any, chat: bool) -> list[str]:
    """Format prompts with ``template`` (``"Q: {prompt}\\nA:"``) or the tokenizer's chat template."""
    if template is not None:
        if "{prompt}" not in template:
            raise InvalidArgumentError(f"template must contain '{{prompt}}'; got {template!r}.")
        texts = [template.replace("{prompt}", t) for t in texts]
    if chat:
        if not getattr(tokenizer, "chat_template", None):
            raise InvalidArgumentError("chat_template=True but the tokenizer has no chat template.")
        texts = [
            tokenizer.apply_chat_template([{"role": "user", "content": t}], tokenize=False,
                                          add_generation_prompt=True)
            for t in texts
        ]
    return texts
