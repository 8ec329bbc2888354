"""``verify``: check a dataset's files against its metadata, reporting every problem."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..errors import ActstoreError

if TYPE_CHECKING:
    from .reader import Dataset

__all__ = ["VerifyReport", "verify_dataset"]


@dataclass
class VerifyReport:
    """Outcome of :func:`verify_dataset`: ``ok`` is True when ``problems`` is empty."""

    url: str
    files_checked: int = 0
    bytes_hashed: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def __str__(self) -> str:
        head = f"{self.url}: {'OK' if self.ok else 'FAILED'} ({self.files_checked} files"
        head += f", {self.bytes_hashed / 1e6:.1f} MB hashed)"
        return "\n".join([head, *(f"  - {p}" for p in self.problems)])

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


def _sha256(ds: Dataset, path: str, size: int) -> str:
    h = hashlib.sha256()
    step = 16 << 20
    for start in range(0, size, step):
        (blob,) = ds.source.read_ranges(path, [(start, min(size, start + step))])
        h.update(blob)
    return h.hexdigest()


def verify_dataset(ds: Dataset, *, checksums: bool = True) -> VerifyReport:
    """Check structure (headers, shapes, dtypes, index ranges) and, by default, sha256.

    Every shard the metadata names must exist and have a header consistent with it; every
    file listed in ``actstore:files`` must have the recorded size and sha256. Problems are
    collected, not raised, so one run lists them all.
    """
    s = ds._s
    report = VerifyReport(ds.url)
    referenced: set[str] = set()
    for view in s.views.values():
        for layer in view.layers:
            for shard in range(len(view.shard_rows)):
                try:
                    path = view.path(layer, shard)
                    referenced.add(path)
                    ds._entry(view, layer, shard)
                except ActstoreError as exc:
                    report.problems.append(str(exc))
    if s.logits is not None:
        for shard in s.logits["shards"]:
            referenced.add(shard["file"])
            try:
                ds._header(shard["file"])
            except ActstoreError as exc:
                report.problems.append(str(exc))
    if s.files:
        for path in sorted(referenced - set(s.files)):
            report.problems.append(f"{path}: used by the metadata but has no checksum in actstore:files.")
    for path, rec in sorted(s.files.items()):
        report.files_checked += 1
        try:
            size = s.source.size(path)
        except FileNotFoundError:
            report.problems.append(f"{path}: listed in actstore:files but missing.")
            continue
        if size != rec["size"]:
            report.problems.append(f"{path}: size {size} != recorded {rec['size']}.")
            continue
        if checksums:
            digest = _sha256(ds, path, size)
            report.bytes_hashed += size
            if digest != rec["sha256"]:
                report.problems.append(f"{path}: sha256 {digest} != recorded {rec['sha256']}.")
    if not s.files:
        report.files_checked = len(referenced)
    return report
