"""The index is written in row groups with delta-encoded location columns (spec section 3, "Row
groups and encodings"), opened by byte ranges (footer, then the chunks of the columns used), and
indexes of the previous writer (one row group, dictionary/plain encodings) stay readable."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import actstore
from actstore.format import spec
from actstore.format.writer import DatasetWriter

INDEX = spec.INDEX_PATH
SCRIPTS = Path(__file__).parent / "lmprobe_scripts"
SNAPSHOT = "0123456789abcdef0123456789abcdef01234567"


def run_lmprobe(script: str, args: list[str], work: Path) -> None:
    """lmprobe 0.10.3 in a subprocess with its own offline HF environment (as in
    test_lmprobe_compat.py)."""
    env = dict(os.environ, HF_HOME=str(work / "hf"), HF_HUB_CACHE=str(work / "hf" / "hub"),
               LMPROBE_CACHE_DIR=str(work / "lmcache"), HF_HUB_OFFLINE="1")
    proc = subprocess.run([sys.executable, str(SCRIPTS / script), *args], capture_output=True,
                          text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]


def into_hub_cache(src: Path, hub: Path, repo: str) -> None:
    entry = hub / f"datasets--{repo.replace('/', '--')}"
    shutil.copytree(src, entry / "snapshots" / SNAPSHOT)
    (entry / "refs").mkdir()
    (entry / "refs" / "main").write_text(SNAPSHOT)


def write(path, n=1000, *, texts=None, dim=2, labels=True):
    texts = texts if texts is not None else [f"prompt {i} " + "x" * (i % 50) for i in range(n)]
    x = np.arange(n * dim, dtype=np.float32).reshape(n, dim)
    with DatasetWriter(str(path), model="m", layers=[0], dim=dim, shard_bytes=300 * dim * 4) as w:
        w.add(texts, hidden={0: x}, labels=[i % 3 for i in range(n)] if labels else None,
              metadata={"source": [f"s{i}" for i in range(n)]})
    return texts, x


def test_index_written_in_row_groups_with_delta_location_columns(tmp_path, monkeypatch):
    monkeypatch.setattr(spec, "INDEX_ROW_GROUP_ROWS", 256)
    write(tmp_path / "ds")
    md = pq.read_metadata(tmp_path / "ds" / INDEX)
    assert md.num_row_groups == 4 and md.row_group(0).num_rows == 256
    names = [md.schema.column(i).path for i in range(md.num_columns)]
    enc = {n: md.row_group(0).column(i).encodings for i, n in enumerate(names)}
    assert "DELTA_BINARY_PACKED" in enc["row_offset"] and "DELTA_BINARY_PACKED" in enc["shard_index"]
    assert not md.row_group(0).column(names.index("text")).is_stats_set  # no texts in the footer


def test_open_reads_footer_and_location_chunks_only(tmp_path):
    rng = np.random.default_rng(0)
    texts, x = write(tmp_path / "ds", n=3000,
                     texts=[f"{i} " + " ".join(map(str, rng.integers(0, 10**6, 60))) for i in range(3000)])
    size = (tmp_path / "ds" / INDEX).stat().st_size
    ds = actstore.open_dataset(str(tmp_path / "ds"))
    opened = ds._s.table.fetched
    assert opened < 0.05 * size, (opened, size)
    np.testing.assert_array_equal(ds.get([5, 2999], layers=[0])[:, 0], x[[5, 2999]])
    assert ds._s.table.fetched == opened  # reading rows needs no index bytes
    assert ds.texts == texts and ds._s.table.fetched > 0.5 * size


def test_a_few_rows_texts_read_only_their_row_groups(tmp_path, monkeypatch):
    monkeypatch.setattr(spec, "INDEX_ROW_GROUP_ROWS", 100)
    rng = np.random.default_rng(1)
    texts, _ = write(tmp_path / "ds", n=1000,
                     texts=[f"{i} " + " ".join(map(str, rng.integers(0, 10**6, 40))) for i in range(1000)])
    size = (tmp_path / "ds" / INDEX).stat().st_size
    ds = actstore.open_dataset(str(tmp_path / "ds"))
    sel = ds.select([950, 5, 7, 951])
    assert sel.texts == [texts[i] for i in (950, 5, 7, 951)]
    assert ds._s.table.fetched < 0.35 * size  # 2 of 10 groups' texts, not all
    assert list(sel.column("source")) == ["s950", "s5", "s7", "s951"]
    np.testing.assert_array_equal(sel.labels, [950 % 3, 5 % 3, 7 % 3, 951 % 3])
    assert ds.texts == texts and ds.select([999]).texts == [texts[999]]


def test_index_of_the_previous_writer_stays_readable(tmp_path):
    """One row group, pyarrow's default encodings (the writer before issue #14, and lmprobe)."""
    texts, x = write(tmp_path / "ds", n=500)
    path = tmp_path / "ds" / INDEX
    table = pq.read_table(path)
    pq.write_table(table, path)  # the previous writer: defaults, a single row group
    md = pq.read_metadata(path)
    assert md.num_row_groups == 1 and "DELTA_BINARY_PACKED" not in md.row_group(0).column(
        table.column_names.index("row_offset")).encodings
    ds = actstore.open_dataset(str(path.parent.parent))
    np.testing.assert_array_equal(ds.layer(0), x)
    assert ds.select([499, 0]).texts == [texts[499], texts[0]] and ds.texts == texts
    assert ds.column("source")[7] == "s7"


def test_rows_cheaper_than_the_reader_accepts_are_written_plainly(tmp_path):
    """All texts alike: a delta-encoded index would fall under 1/16 byte per row, which readers
    refuse as a decompression bomb, so the writer stores the offsets plainly."""
    n = 70_000
    with DatasetWriter(str(tmp_path / "ds"), model="m", layers=[0], dim=1) as w:
        w.add(["same"] * n, hidden={0: np.zeros((n, 1), np.float32)})
    size = (tmp_path / "ds" / INDEX).stat().st_size
    assert n <= spec.MAX_INDEX_ROWS_PER_BYTE * size + spec.INDEX_ROWS_SLACK
    ds = actstore.open_dataset(str(tmp_path / "ds"))
    assert len(ds) == n and ds.select([n - 1]).texts == ["same"]


def test_a_chunk_declared_past_the_file_end_is_refused(tmp_path):
    from actstore.format.lazy_index import IndexTable, open_sparse
    from actstore.format.source import LocalSource

    write(tmp_path / "ds", n=50)
    src = LocalSource(tmp_path / "ds")
    size = src.size(INDEX)
    sparse, _ = open_sparse(src, INDEX, size)
    sparse.size = 100  # the footer's offsets now point past the end
    with pytest.raises(actstore.FormatError, match=r"column 'source' declares bytes \d+\.\.\d+ of a \d+-byte file"):
        IndexTable(sparse, path=INDEX).column("source")


def test_not_parquet_is_refused_by_its_tail(tmp_path):
    write(tmp_path / "ds", n=10)
    path = tmp_path / "ds" / INDEX
    path.write_bytes(path.read_bytes()[:-4] + b"XXXX")
    with pytest.raises(actstore.FormatError, match="not a readable Parquet file"):
        actstore.open_dataset(str(tmp_path / "ds"))


@pytest.mark.slow
def test_lmprobe_reads_an_index_of_several_delta_encoded_row_groups(tmp_path, monkeypatch):
    monkeypatch.setattr(spec, "INDEX_ROW_GROUP_ROWS", 4)
    n, dim = 9, 5
    texts = [f"rg prompt {i}" for i in range(n)]
    x = np.random.default_rng(0).standard_normal((n, dim)).astype(np.float32)
    with DatasetWriter(str(tmp_path / "ds"), model="org/rg", layers=[0, 3], dim=dim,
                       shard_bytes=4 * dim * 4) as w:
        w.add(texts, hidden={0: x, 3: -x}, labels=[i % 2 for i in range(n)])
    assert pq.read_metadata(tmp_path / "ds" / INDEX).num_row_groups == 3
    into_hub_cache(tmp_path / "ds", tmp_path / "hf" / "hub", "org/rg")
    (tmp_path / "out").mkdir()
    run_lmprobe("read_dataset.py", [json.dumps([["org/rg", [0, 3], str(tmp_path / "out")]])], tmp_path)
    result = json.loads((tmp_path / "out" / "result.json").read_text())
    assert result["prompts"] == texts and result["num_prompts"] == n
    np.testing.assert_array_equal(np.load(tmp_path / "out" / "acts_0.npy"), x)
    np.testing.assert_array_equal(np.load(tmp_path / "out" / "labels.npy"), [i % 2 for i in range(n)])
    assert pa.types.is_int32(pq.read_schema(tmp_path / "ds" / INDEX).field("row_offset").type)
