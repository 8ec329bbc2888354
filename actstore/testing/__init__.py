"""Test kit: a Hub-compatible server on loopback for testing code that uses ``huggingface_hub``.

Examples
--------
>>> from actstore.testing import HubServer
>>> with HubServer("/tmp/hub", tokens={"hf_write": "write"}) as hub:   # doctest: +SKIP
...     print(hub.endpoint)
"""

from __future__ import annotations

from .hub_server import HubServer, TokenInfo

__all__ = ["HubServer", "TokenInfo"]
