"""The v2 format: spec constants, index metadata, the streaming writer and the lazy reader.

This layer imports only numpy, pyarrow, safetensors-free stdlib code and fsspec; it never
imports torch unless a caller passes a torch tensor or asks for one.
"""

from __future__ import annotations

__all__: list[str] = []
