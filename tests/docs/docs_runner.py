"""Run a documentation page's code as a reader would: every ``python`` block, in order.

A page may also hold, inside HTML comments that the site does not show:

- ``<!-- docs:setup`` + a fenced ``python`` block + ``-->``: code run before the page's own
  blocks (making the dataset a guide loads, publishing it to the loopback servers);
- ``<!-- docs:check`` + a fenced ``python`` block + ``-->``: assertions run after the block
  above it;
- ``<!-- docs:skip REASON -->`` just before a block: the block is not run (a GPU, a model
  download), and the reason is required;
- ``<!-- docs:substitute TEXT => REPLACEMENT -->``: TEXT in the page's code is replaced before
  running (``${VAR}`` in REPLACEMENT expands from the environment). It exists for the one thing
  that cannot run offline as printed: an ``https://`` address, served here by a loopback HTTP
  server.

Blocks of other languages (bash, text) are shown, not run.
"""

from __future__ import annotations

import os
import re
import string
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

_TOKEN = re.compile(
    r"<!--\s*docs:(?P<kind>setup|check)\s*\n```python\n(?P<hidden>.*?)```\s*-->"
    r"|<!--\s*docs:skip\s+(?P<reason>[^\n]*?)\s*-->"
    r"|<!--\s*docs:substitute\s+(?P<old>\S+)\s*=>\s*(?P<new>\S+)\s*-->"
    r"|^```python\n(?P<code>.*?)^```",
    re.S | re.M,
)


@dataclass
class Page:
    """The runnable parts of one page."""

    path: Path
    script: str  # every block to run, in page order, with line markers
    blocks: int  # visible python blocks that run
    skipped: list[str]  # the reasons given for visible blocks not run


def parse(path: Path, env: dict[str, str] | None = None) -> Page:
    """Collect a page's blocks into one script (substitutions expanded from ``env``)."""
    text = path.read_text()
    parts: list[str] = []
    subs: list[tuple[str, str]] = []
    skipped: list[str] = []
    skip_next: str | None = None
    blocks = 0
    for m in _TOKEN.finditer(text):
        line = text.count("\n", 0, m.start()) + 1
        if m["kind"]:
            parts.append(f"# --- {path.name}:{line} ({m['kind']}, hidden)\n{m['hidden']}")
        elif m["reason"] is not None:
            if not m["reason"]:
                raise ValueError(f"{path}:{line}: docs:skip needs a reason")
            skip_next = m["reason"]
        elif m["old"]:
            subs.append((m["old"], string.Template(m["new"]).substitute(os.environ if env is None else env)))
        else:
            if skip_next is not None:
                skipped.append(skip_next)
                skip_next = None
                continue
            blocks += 1
            parts.append(f"# --- {path.name}:{line}\n{m['code']}")
    script = "\n".join(parts)
    for old, new in subs:
        if old not in script:
            raise ValueError(f"{path}: docs:substitute {old!r} does not occur in the page's code")
        script = script.replace(old, new)
    return Page(path, script, blocks, skipped)


def run(page: Page, cwd: Path, env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run a page's script in a fresh interpreter in ``cwd``."""
    script = cwd / f"{page.path.stem}.py"
    script.write_text(page.script)
    return subprocess.run([sys.executable, str(script)], cwd=cwd, env=env, text=True,
                          capture_output=True, timeout=timeout)
