"""Opening decodes only the index columns that locate rows; texts, labels and metadata columns
are decoded on first use (issue #14), and read the same as before."""

from __future__ import annotations

import numpy as np
import pyarrow.compute as pc

import actstore
from actstore.format.writer import DatasetWriter


def decoded(ds) -> set[str]:
    return ds._s.table.decoded


def test_open_and_reads_decode_no_text(tmp_path):
    texts = [f"a long prompt number {i} " * 20 for i in range(50)]
    with DatasetWriter(str(tmp_path / "ds"), model="m", layers=[0], dim=2, shard_bytes=16 * 8) as w:
        w.add(texts, hidden={0: np.arange(100, dtype=np.float32).reshape(50, 2)},
              labels=[i % 3 for i in range(50)], metadata={"source": [f"s{i}" for i in range(50)]})
    ds = actstore.open_dataset(str(tmp_path / "ds"))
    assert decoded(ds) == {"shard_index", "row_offset"}
    np.testing.assert_array_equal(ds.get([3, 7], layers=[0])[:, 0, 0], [6, 14])
    repr(ds)
    assert "text" not in decoded(ds) and "source" not in decoded(ds)
    assert ds.select([2, 0]).texts == [texts[2], texts[0]]
    assert "text" in decoded(ds) and "source" not in decoded(ds)
    np.testing.assert_array_equal(ds.labels, [i % 3 for i in range(50)])
    assert ds.column("source")[4] == "s4"
    assert ds.filter(pc.field("label") == 1).texts == texts[1::3]
    assert ds.index.num_rows == 50


def test_compact_full_sequence_tokens_decode_only_counts_and_starts(tmp_path):
    seqs = [np.ones((1 + i % 4, 2), np.float32) * i for i in range(20)]
    with DatasetWriter(str(tmp_path / "ds"), model="m", layers=[0], dim=2, pooling="all",
                       lmprobe_compat=False) as w:
        w.add([f"p{i} " * 50 for i in range(20)], hidden={0: seqs})
    ds = actstore.open_dataset(str(tmp_path / "ds"))
    np.testing.assert_array_equal(ds.tokens(7, 0), seqs[7])
    assert decoded(ds) == {"shard_index", "row_offset", "num_tokens", "token_shard", "token_start"}


def test_an_index_handed_in_is_used_as_it_is(tmp_path):
    with DatasetWriter(str(tmp_path / "ds"), model="m", layers=[0], dim=2) as w:
        w.add(["a", "b"], hidden={0: np.ones((2, 2), np.float32)})
    from actstore.format.reader import open_dataset, read_index
    from actstore.format.source import source_for_url
    src = source_for_url(str(tmp_path / "ds"), None)
    ds = open_dataset(str(tmp_path / "ds"), source=src, index=read_index(src))
    assert ds.texts == ["a", "b"]


def test_a_lazily_read_dataset_pickles(tmp_path):
    import pickle
    with DatasetWriter(str(tmp_path / "ds"), model="m", layers=[0], dim=2) as w:
        w.add(["a", "b", "c"], hidden={0: np.arange(6, dtype=np.float32).reshape(3, 2)})
    ds = actstore.open_dataset(str(tmp_path / "ds"))
    back = pickle.loads(pickle.dumps(ds))
    assert back.texts == ["a", "b", "c"]
    np.testing.assert_array_equal(back.layer(0), ds.layer(0))
    _ = ds.index  # decoded whole: pickles as the table
    assert pickle.loads(pickle.dumps(ds)).texts == ["a", "b", "c"]
