"""Files that are not what the metadata says: non-regular files, bombs, mixed dtypes,
paths leaving the dataset, partial copies.

FIFO cases run in a subprocess with a timeout: today's reader blocks forever opening one.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import actstore
from actstore import DatasetWriter
from actstore.format.reader import read_index

INDEX = "index/train-00000-of-00001.parquet"
SHARD0 = "tensors/hidden_layer000_shard000.safetensors"
SHARD1 = "tensors/hidden_layer000_shard001.safetensors"
LOGITS = "tensors/logits_topk_000.safetensors"


@pytest.fixture(scope="module")
def valid(tmp_path_factory):
    base = tmp_path_factory.mktemp("files")
    rng = np.random.default_rng(1)
    with DatasetWriter(str(base / "ds"), model="m", layers=[0, 1], dim=4, shard_bytes=4 * 4 * 5,
                       logits_k=2) as w:
        w.add([f"t{i}" for i in range(8)], hidden={L: rng.normal(size=(8, 4)) for L in (0, 1)},
              labels=[0, 1] * 4, logits_topk=(np.ones((8, 2)), np.zeros((8, 2))))
    return base / "ds"


def copy(valid: Path, tmp_path: Path) -> Path:
    root = tmp_path / "ds"
    shutil.copytree(valid, root)
    return root


def edit_meta(root: Path, fn) -> None:
    t = pq.read_table(root / INDEX)
    meta = {k.decode(): json.loads(v) for k, v in t.schema.metadata.items()}
    fn(meta)
    pq.write_table(t.replace_schema_metadata({k: json.dumps(v) for k, v in meta.items()}), root / INDEX)


def run_python(code: str, root: Path, timeout: float = 30) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    try:
        return subprocess.run([sys.executable, "-c", code, str(root)], capture_output=True, text=True,
                              timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        pytest.fail(f"reading {root} hung for {timeout} s (a FIFO was opened)")


# os._exit: this test is about hangs; the unrelated exit-time abort of pyarrow's thread pool
# ("terminate called without an active exception", issue 11 scope 7) must not flake it
PROBE = """
import os, sys, actstore
try:
    ds = actstore.open_dataset(sys.argv[1])
    {action}
except actstore.ActstoreError as exc:
    print("ACTSTORE", type(exc).__name__, exc, flush=True)
    os._exit(0)
print("NO ERROR", flush=True)
os._exit(0)
"""


def _fifo(root: Path, rel: str) -> None:
    os.remove(root / rel)
    os.mkfifo(root / rel)


def _link_to_fifo(root: Path, rel: str) -> None:
    os.remove(root / rel)
    os.mkfifo(root / "elsewhere.fifo")
    os.symlink(root / "elsewhere.fifo", root / rel)


def _directory(root: Path, rel: str) -> None:
    os.remove(root / rel)
    os.mkdir(root / rel)


def _device(root: Path, rel: str) -> None:
    os.remove(root / rel)
    os.symlink("/dev/zero", root / rel)


def _loop(root: Path, rel: str) -> None:
    os.remove(root / rel)
    os.symlink(root / rel, root / rel)


KINDS = [("fifo", _fifo), ("link-to-fifo", _link_to_fifo), ("directory", _directory),
         ("device", _device), ("symlink-loop", _loop)]


@pytest.mark.parametrize("kind,make", KINDS, ids=[k for k, _ in KINDS])
@pytest.mark.parametrize("rel,action", [
    (SHARD0, "ds.info; ds.layer(0)"),
    (SHARD0, "r = ds.verify(); print(r); raise actstore.FormatError(str(r)) if not r.ok else None"),
    (INDEX, "pass"),
], ids=["shard-info", "shard-verify", "index"])
def test_non_regular_files_are_refused_without_hanging(valid, tmp_path, kind, make, rel, action):
    root = copy(valid, tmp_path)
    if rel != INDEX:  # lmprobe-style (no recorded sizes): the shard itself is looked at
        edit_meta(root, lambda m: m.pop("actstore:files"))
    make(root, rel)
    res = run_python(PROBE.format(action=action), root)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "ACTSTORE" in res.stdout, res.stdout
    assert rel.split("/")[-1] in res.stdout, res.stdout
    assert "not a regular file" in res.stdout or "cannot be read" in res.stdout, res.stdout


def test_name_too_long_is_an_actstore_error(valid, tmp_path):
    root = copy(valid, tmp_path)
    long = "tensors/" + "x" * 300 + ".bin"
    edit_meta(root, lambda m: m["actstore:files"].update({long: {"size": 1, "sha256": "0" * 64}}))
    report = actstore.open_dataset(str(root)).verify()
    assert not report.ok and any("x" * 50 in p for p in report.problems)


# ---------------------------------------------------------------- bounded allocation

def test_index_decompression_bomb_is_refused_before_decoding(tmp_path):
    n = 5_000_000
    table = pa.table({"text": pa.DictionaryArray.from_arrays(np.zeros(n, np.int8), pa.array(["a"])),
                      "shard_index": pa.array(np.zeros(n, np.int32)),
                      "row_offset": pa.array(np.zeros(n, np.int32))})
    (tmp_path / "index").mkdir()
    pq.write_table(table, tmp_path / INDEX)
    size = os.path.getsize(tmp_path / INDEX)
    assert n / size > 50  # many rows per byte
    with pytest.raises(actstore.FormatError, match=r"declares 5000000 rows .*decompression bomb"):
        actstore.open_dataset(str(tmp_path))


class _LyingSource:
    """A server claiming an 8 GB index: nothing may be requested."""

    url = "http://example.invalid/ds"

    def size(self, path: str) -> int:
        return 8 << 30

    def read_ranges(self, path, ranges):
        raise AssertionError(f"read {ranges} of a claimed 8 GB index")

    def readinto(self, path, requests):
        raise AssertionError("readinto")


def test_huge_claimed_index_is_refused_before_reading():
    with pytest.raises(actstore.FormatError, match=r"index is 8589934592 bytes; at most"):
        read_index(_LyingSource())


# ---------------------------------------------------------------- dtypes

def _rewrite_shard(root: Path, rel: str, code: str, dtype) -> None:
    """Store one shard's rows in another dtype (same rows, valid header)."""
    blob = (root / rel).read_bytes()
    n = struct.unpack("<Q", blob[:8])[0]
    doc = json.loads(blob[8:8 + n])
    (key, entry), = [(k, v) for k, v in doc.items() if k != "__metadata__"]
    rows = np.frombuffer(blob[8 + n:], dtype=np.float32).reshape(entry["shape"])
    data = rows.astype(dtype).tobytes() if code != "BF16" else (rows.view(np.uint32) >> 16).astype(np.uint16).tobytes()
    head = json.dumps({key: {"dtype": code, "shape": entry["shape"], "data_offsets": [0, len(data)]}}).encode()
    head += b" " * (-len(head) % 8)
    (root / rel).write_bytes(struct.pack("<Q", len(head)) + head + data)


def _rerecord(root: Path) -> None:
    """Record the rewritten files' true sizes and sha256 (a consistent, hostile dataset)."""
    def fix(m):
        for rel in m["actstore:files"]:
            data = (root / rel).read_bytes()
            m["actstore:files"][rel] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    edit_meta(root, fix)


@pytest.mark.parametrize("code,dtype", [("F16", np.float16), ("BF16", None)])
def test_mixed_dtypes_across_shards_of_a_layer_are_refused(valid, tmp_path, code, dtype):
    root = copy(valid, tmp_path)
    _rewrite_shard(root, SHARD1, code, dtype)
    edit_meta(root, lambda m: m.pop("actstore:files"))  # lmprobe-style: no recorded dtype check
    ds = actstore.open_dataset(str(root))
    with pytest.raises(actstore.IntegrityError, match=rf"shard001.*{code} differs from F32 in shard 0"):
        ds.layer(0)
    with pytest.raises(actstore.IntegrityError, match=r"differs from F32"):
        ds.get([7], layers=[0])


def test_info_reports_the_header_dtype_and_refuses_a_false_claim(valid, tmp_path):
    root = copy(valid, tmp_path)
    for L in (0, 1):
        for s in (0, 1):
            _rewrite_shard(root, f"tensors/hidden_layer{L:03d}_shard{s:03d}.safetensors", "F16", np.float16)
    _rerecord(root)  # metadata still claims float32
    with pytest.raises(actstore.IntegrityError, match=r"header dtype F16 disagrees with the metadata dtype 'float32'"):
        _ = actstore.open_dataset(str(root)).info


# ---------------------------------------------------------------- reads outside the dataset

class _Recorder(SimpleHTTPRequestHandler):
    requested: list[str] = []

    def log_message(self, *args: object) -> None:
        pass

    def do_HEAD(self) -> None:
        type(self).requested.append(self.path)
        super().do_HEAD()

    def do_GET(self) -> None:
        type(self).requested.append(self.path)
        super().do_GET()


@pytest.fixture()
def http_parent(tmp_path):
    handler = lambda *a, **k: _Recorder(*a, directory=str(tmp_path), **k)  # noqa: E731
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Recorder.requested = []
    yield tmp_path, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_percent_encoded_dotdot_over_http_is_refused_unrequested(valid, http_parent):
    parent, base = http_parent
    root = parent / "ds"
    shutil.copytree(valid, root)
    (parent / "private").mkdir()
    shutil.copy(root / LOGITS, parent / "private" / "logits_topk_000.safetensors")
    edit_meta(root, lambda m: m["lmprobe:tensors"]["logits_topk"]["shards"][0].update(
        {"file": "tensors/%2e%2e/%2e%2e/private/logits_topk_000.safetensors"}))
    with pytest.raises(actstore.UnsafePathError, match=r"escapes the dataset root"):
        actstore.open_dataset(f"{base}/ds").logits_topk()
    assert not [p for p in _Recorder.requested if "private" in p], _Recorder.requested


def test_dotdot_through_a_link_inside_the_dataset_is_refused(valid, tmp_path):
    root = copy(valid, tmp_path)
    outside = tmp_path / "outside"
    (outside / "sub").mkdir(parents=True)
    shutil.copy(root / LOGITS, outside / "logits_topk_000.safetensors")  # a look-alike
    os.symlink(outside / "sub", root / "tensors" / "link")
    # lexically "tensors/logits_topk_000.safetensors"; on disk link/.. is outside/
    edit_meta(root, lambda m: m["lmprobe:tensors"]["logits_topk"]["shards"][0].update(
        {"file": "tensors/link/../logits_topk_000.safetensors"}))
    with pytest.raises(actstore.UnsafePathError, match=r"'\.\.' segments"):
        actstore.open_dataset(str(root)).logits_topk()


# ---------------------------------------------------------------- partial copies

def _partial(valid: Path, tmp_path: Path, record: bool) -> Path:
    root = copy(valid, tmp_path)
    for s in (0, 1):
        os.remove(root / f"tensors/hidden_layer001_shard{s:03d}.safetensors")
    if record:
        kept = [str(p.relative_to(root)) for p in root.rglob("*.safetensors")] + [INDEX]
        (root / ".actstore").mkdir()
        (root / ".actstore" / "hub.json").write_text(json.dumps({"repo_id": "o/r", "files": kept}))
    return root


def test_partial_copy_lists_only_the_layers_it_has(valid, tmp_path):
    ds = actstore.open_dataset(str(_partial(valid, tmp_path, record=True)))
    assert ds.info.layers == (0,) and ds.info.absent_layers == (1,)
    assert "layers=[0]" in repr(ds) and "not here: layers [1]" in repr(ds)
    assert ds.info.dtype == "float32"


def test_verify_of_a_partial_pull_says_what_was_not_pulled(valid, tmp_path):
    report = actstore.open_dataset(str(_partial(valid, tmp_path, record=True))).verify()
    assert report.ok, str(report)
    assert report.not_pulled == ["view 'last_token' layers [1]"]
    assert "not pulled" in str(report)


def test_verify_of_a_copy_missing_whole_layers_reports_one_line(valid, tmp_path):
    report = actstore.open_dataset(str(_partial(valid, tmp_path, record=False))).verify()
    assert not report.ok and len(report.problems) == 1, report.problems
    assert "layers [1] have no shard files here (2 files missing)" in report.problems[0]
