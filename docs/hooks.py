"""mkdocs hook: the docstrings cross-reference names Sphinx-style (:func:`open_dataset`),
which mkdocstrings renders literally as ":func:" before the code; drop the role, keep the
name in code font."""

from __future__ import annotations

import re
from typing import Any

_ROLE = re.compile(r":(?:func|meth|class|attr|mod|data|exc|obj):(?=<code>)")


def on_page_content(html: str, **kwargs: Any) -> str:
    return _ROLE.sub("", html)
