"""Compare repeated runs of one benchmark on two versions of actstore: is every ratio within noise?

Each benchmark writes a Markdown section whose tables end in a number column (a ratio, or a
throughput); run the same script several times on each version, alternating, and keep each
run's section. This script lines the rows up by name and reports, per row, the median and the
spread (min–max over every run, and over the per-run spread a cell gives as ``0.64 (0.50–0.64)``)
before and after, and whether the two spreads overlap.

Usage::

    python benchmarks/before_after.py --title "format" \\
        --before '/tmp/runs/format_old_*.md' --after '/tmp/runs/format_new_*.md' >> out.md

Request counts in a row's name (``(1824 requests incl. index)``) are ignored when matching.
"""

from __future__ import annotations

import argparse
import glob
import re
import statistics

_NUMBER = re.compile(r"^([\d.,]+)\s*(×|x)?(?: faster)?(?:\s*\(([\d.,]+)[–-]([\d.,]+)\))?")
_COUNT = re.compile(r"\(\d[\d,]* requests")


def _num(text: str) -> float:
    return float(text.replace(",", ""))


def parse(path: str, columns: list[str] | None = None) -> dict[str, tuple[float, float, float, str]]:
    """``row name -> (value, low, high, unit)`` for every table row ending in a number; with
    ``columns``, instead every cell holding a number under a header containing one of them."""
    rows: dict[str, tuple[float, float, float, str]] = {}
    header: list[str] | None = None
    section = ""
    for line in open(path, encoding="utf-8"):
        if line.startswith("#"):
            section = line.strip("# \n")
        if not line.startswith("|"):
            header = None
            continue
        if line.startswith("|---"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if header is None:
            header = cells
            continue
        if columns:
            for col, head in enumerate(header[: len(cells)]):
                m = _NUMBER.match(cells[col]) if col and any(c in head for c in columns) else None
                if m:
                    value = _num(m.group(1))
                    low, high = (_num(m.group(3)), _num(m.group(4))) if m.group(3) else (value, value)
                    key = f"{cells[0]} — {head}"
                    if key in rows:  # the same row name in a later table: name its section
                        key = f"{section}: {key}"
                    rows[key] = (value, low, high, "×" if m.group(2) else "")
            continue
        # the ratio column: the last cell holding a number (a goal column may follow it)
        for col in range(len(cells) - 1, 0, -1):
            m = _NUMBER.match(cells[col])
            if m:
                break
        else:
            continue
        value = _num(m.group(1))
        low, high = (_num(m.group(3)), _num(m.group(4))) if m.group(3) else (value, value)
        name = _COUNT.sub("(N requests", cells[0])
        if col > 1 and not _NUMBER.match(cells[1]):
            name += f" / {cells[1]}"  # e.g. the codec column of a dtype table
        rows[f"{name} — {header[col]}"] = (value, low, high, "×" if m.group(2) else "")
    return rows


def compare(before: list[str], after: list[str], title: str, columns: list[str] | None = None) -> str:
    runs_b, runs_a = [parse(p, columns) for p in before], [parse(p, columns) for p in after]
    if not runs_b or not runs_a:
        raise SystemExit("need at least one run on each side")
    lines = [f"| {title}: figure | before: median (min–max) | after: median (min–max) | within noise? |",
             "|---|---:|---:|---|"]
    for key in runs_a[0]:
        if not all(key in r for r in runs_b + runs_a):
            continue

        def agg(runs: list[dict[str, tuple[float, float, float, str]]], key: str = key) -> tuple[float, float, float]:
            return (statistics.median(r[key][0] for r in runs), min(r[key][1] for r in runs),
                    max(r[key][2] for r in runs))

        b, a, unit = agg(runs_b), agg(runs_a), runs_a[0][key][3]
        if b[1] == b[2] == a[1] == a[2]:
            continue  # a baseline row (always 1.00)
        overlap = not (a[2] < b[1] or b[2] < a[1])
        verdict = "yes (spreads overlap)" if overlap else (
            "**no: lower after**" if a[0] < b[0] else "**no: higher after**")
        cell = lambda t, unit=unit: f"{t[0]:.3g}{unit} ({t[1]:.3g}–{t[2]:.3g})"  # noqa: E731
        lines.append(f"| {key} | {cell(b)} | {cell(a)} | {verdict} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", required=True, help="glob of the sections written by the old version")
    ap.add_argument("--after", required=True, help="glob of the sections written by the new version")
    ap.add_argument("--title", default="benchmark")
    ap.add_argument("--column", action="append", default=None,
                    help="compare the cells under headers containing this text (repeatable) instead "
                         "of each row's last number")
    args = ap.parse_args()
    print(compare(sorted(glob.glob(args.before)), sorted(glob.glob(args.after)), args.title, args.column))


if __name__ == "__main__":
    main()
