"""``verify``: check a dataset's files against its metadata, reporting every problem.

It works on the dataset's :class:`~.shards.ShardCatalog` (headers, entries, checksums), never
on the reader's internals, so the reader and ``verify`` check a file in one way.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from ..errors import ActstoreError
from .metadata import bounded_json
from .shards import ShardCatalog
from .source import ByteSource, LocalSource

__all__ = ["VerifyReport", "verify_catalog"]


@dataclass
class VerifyReport:
    """Outcome of :func:`verify_catalog` (``Dataset.verify()``): ``ok`` is True when ``problems`` is empty.

    Examples
    --------
    >>> import actstore
    >>> report = actstore.open_dataset("acts/minilm").verify()   # doctest: +SKIP
    >>> report.ok                                             # doctest: +SKIP
    True
    """

    url: str
    files_checked: int = 0
    bytes_hashed: int = 0
    problems: list[str] = field(default_factory=list)
    #: Layers not in this local copy that its pull record says were not asked for.
    not_pulled: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def __str__(self) -> str:
        head = f"{self.url}: {'OK' if self.ok else 'FAILED'} ({self.files_checked} files"
        head += f", {self.bytes_hashed / 1e6:.1f} MB hashed)"
        notes = [f"  (not pulled: {n})" for n in self.not_pulled]
        return "\n".join([head, *(f"  - {p}" for p in self.problems), *notes])

    def __repr__(self) -> str:  # the readable report, in a notebook or the REPL too
        return f"VerifyReport({self})"

    def _repr_html_(self) -> str:
        import html

        color = "green" if self.ok else "crimson"
        head = (f"<b>{html.escape(self.url)}</b>: <b style='color:{color}'>"
                f"{'OK' if self.ok else 'FAILED'}</b> ({self.files_checked} files, "
                f"{self.bytes_hashed / 1e6:.1f} MB hashed)")
        items = "".join(f"<li>{html.escape(p)}</li>" for p in self.problems)
        return head + (f"<ul>{items}</ul>" if items else "")


def _exists(catalog: ShardCatalog, path: str) -> bool:
    try:
        catalog.source.size(path)
    except FileNotFoundError:
        return False
    except ActstoreError:
        return True
    return True


def _pulled_files(source: ByteSource) -> set[str] | None:
    """The files a partial ``pull_dataset`` fetched into this local copy, from its record."""
    if not isinstance(source, LocalSource):
        return None
    try:
        with open(os.path.join(source.root, ".actstore", "hub.json"), "rb") as f:
            record = bounded_json(f.read(1 << 24), where=".actstore/hub.json")
    except (OSError, ActstoreError):
        return None
    files = record.get("files") if isinstance(record, dict) else None
    if not isinstance(files, list) or not all(isinstance(p, str) for p in files):
        return None
    return set(files)


def verify_catalog(catalog: ShardCatalog, url: str, *, checksums: bool = True) -> VerifyReport:
    """Check structure (headers, shapes, dtypes, layout) and, by default, sha256.

    Every shard the metadata names must exist and have a header consistent with it; every
    file listed in ``actstore:files`` must have the recorded size and sha256. Problems are
    collected, not raised, so one run lists them all. ``Dataset.verify`` calls this with the
    dataset's own catalog.
    """
    report = VerifyReport(url)
    referenced: set[str] = set()
    pulled = _pulled_files(catalog.source)
    skipped: set[str] = set()
    files, logits = catalog.files, catalog.logits
    for view in catalog.views.values():
        present = set(catalog.present_layers(view))
        absent = [L for L in view.layers if L not in present]
        # a layer with no file at all here: one line for all of them, not one per shard
        absent = [L for L in absent if not any(
            catalog.local_exists(view.path(L, sh)) for sh in range(len(view.shard_rows)))]
        if absent:
            paths = {view.path(L, sh) for L in absent for sh in range(len(view.shard_rows))}
            skipped |= paths
            if pulled is not None and not paths & pulled:
                report.not_pulled.append(f"view {view.name!r} layers {absent}")
            else:
                report.problems.append(
                    f"view {view.name!r}: layers {absent} have no shard files here "
                    f"({len(paths)} files missing); re-download them (actstore pull) or restore them."
                )
        for layer in (L for L in view.layers if L not in absent):
            for shard in range(len(view.shard_rows)):
                try:
                    path = view.path(layer, shard)
                    referenced.add(path)
                    catalog.entry(view, layer, shard)
                    if view.codec is not None:  # int8/fp8: the scales are checked too
                        catalog.scales(view, layer, shard)
                except ActstoreError as exc:
                    report.problems.append(str(exc))
    if logits is not None:
        for shard in logits["shards"]:
            referenced.add(shard["file"])
            try:
                catalog.header(shard["file"])
            except ActstoreError as exc:
                report.problems.append(str(exc))
    if logits is not None and pulled is not None:
        for shard in logits["shards"]:  # logits not asked for in a partial pull
            if shard["file"] not in pulled and not _exists(catalog, shard["file"]):
                skipped.add(shard["file"])
        report.problems = [p for p in report.problems
                           if not any(p.startswith(f"{f}: ") for f in skipped)]
        if any(sh["file"] in skipped for sh in logits["shards"]):
            report.not_pulled.append("top-k logits")
    if files:
        for path in sorted(referenced - set(files)):
            report.problems.append(f"{path}: used by the metadata but has no checksum in actstore:files.")
    for path, rec in sorted(files.items()):
        if path in skipped:
            continue
        report.files_checked += 1
        try:
            size = catalog.size(path, origin=True)  # remote: its real size
        except FileNotFoundError:
            if not any(p.startswith(f"{path}: ") for p in report.problems):  # said once per file
                report.problems.append(f"{path}: listed in actstore:files but missing.")
            continue
        except ActstoreError as exc:  # not a regular file, name too long, a link loop
            report.problems.append(str(exc))
            continue
        if size != rec["size"]:
            report.problems.append(f"{path}: size {size} != recorded {rec['size']}.")
            continue
        if checksums:
            try:
                # a remote dataset read through the cache: hash the remote's bytes, not cached ones
                digest = catalog.sha256(path, size, origin=True)
            except ActstoreError as exc:
                report.problems.append(str(exc))
                continue
            report.bytes_hashed += size
            if digest != rec["sha256"]:
                report.problems.append(f"{path}: sha256 {digest} != recorded {rec['sha256']}.")
    if not files:
        report.files_checked = len(referenced)
    report.problems = list(dict.fromkeys(report.problems))  # a shard-0 problem is met per shard
    return report
