"""Cache poisoning over S3 (the real moto server, real s3fs): a stranger's bucket that claims
the victim's sha256s, or holds the victim's very index (same ETag), never makes the victim
read the stranger's bytes or index; ``verify`` of a corrupted S3 copy checks S3, not the cache."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import numpy as np
import pyarrow.parquet as pq
import pytest

import actstore
from actstore.cache import UnifiedCache
from actstore.format.reader import INDEX_PATH

ROWS, DIM = 1000, 32
pytest.importorskip("s3fs")
pytest.importorskip("moto")


def _fs(opts):
    import s3fs

    return s3fs.S3FileSystem(**opts)


def _write(path: str, write_ds, *, value: float | None = None) -> dict:
    arrays = write_ds(path, rows=ROWS, dim=DIM, shard_bytes=ROWS * DIM * 4 // 2)
    if value is None:
        return arrays
    from actstore.format.writer import DatasetWriter

    fill = {L: np.full_like(a, value) for L, a in arrays.items()}
    with DatasetWriter(path, model="test/model", layers=list(fill), dim=DIM, dtype="float32",
                       pooling="last_token", shard_bytes=ROWS * DIM * 4 // 2, overwrite=True) as w:
        for s in range(0, ROWS, 500):
            w.add([f"prompt {i}" for i in range(s, s + 500)],
                  hidden={L: a[s : s + 500] for L, a in fill.items()}, labels=[i % 2 for i in range(s, s + 500)])
    return fill


def _claim_files_of(evil: str, victim: str) -> None:
    vmeta = pq.read_schema(os.path.join(victim, INDEX_PATH)).metadata
    table = pq.read_table(os.path.join(evil, INDEX_PATH))
    meta = dict(table.schema.metadata)
    meta[b"actstore:files"] = vmeta[b"actstore:files"]
    pq.write_table(table.replace_schema_metadata(meta), os.path.join(evil, INDEX_PATH))


def _upload(fs, local: str, url: str) -> None:
    for d, _, names in os.walk(local):
        for n in names:
            full = os.path.join(d, n)
            fs.put_file(full, f"{url}/{os.path.relpath(full, local)}")


def _read_every_byte(ds) -> None:
    for path in ds.source.files:
        ds.source.read_ranges(path, [(0, ds.source.size(path))])


def test_a_strangers_bucket_claiming_the_victims_sha256s_never_feeds_the_victim(s3, tmp_path, write_ds):
    opts, bucket = s3
    fs = _fs(opts)
    fs.mkdir(f"{bucket}-evil")
    victim, evil = str(tmp_path / "victim"), str(tmp_path / "evil")
    good = _write(victim, write_ds)
    _write(evil, write_ds, value=666.0)
    _claim_files_of(evil, victim)
    _upload(fs, victim, f"{bucket}/ds")
    _upload(fs, evil, f"{bucket}-evil/ds")  # same key names, another bucket
    rows = np.arange(0, ROWS, 7)
    cache = UnifiedCache(tmp_path / "shared-cache")
    bad = actstore.open_dataset(f"s3://{bucket}-evil/ds", storage_options=opts, cache=cache)
    assert (bad.get(rows, layers=[0]) == 666.0).all()
    _read_every_byte(bad)  # whole files too: their sha256, computed on admission, is wrong
    cache.flush()
    mine = actstore.open_dataset(f"s3://{bucket}/ds", storage_options=opts,
                                 cache=UnifiedCache(tmp_path / "shared-cache"))
    np.testing.assert_array_equal(mine.get(rows, layers=[0])[:, 0], good[0][rows])
    np.testing.assert_array_equal(mine.layer(1), good[1])
    assert mine.verify().ok


def test_the_victims_index_in_a_strangers_bucket_same_etag_never_serves_the_strangers_shards(
        s3, tmp_path, write_ds):
    opts, bucket = s3
    fs = _fs(opts)
    fs.mkdir(f"{bucket}-copy")
    victim, evil = str(tmp_path / "victim"), str(tmp_path / "evil")
    good = _write(victim, write_ds)
    _write(evil, write_ds, value=666.0)
    _upload(fs, victim, f"{bucket}/ds")
    _upload(fs, evil, f"{bucket}-copy/ds")
    fs.put_file(os.path.join(victim, INDEX_PATH), f"{bucket}-copy/ds/{INDEX_PATH}")  # the very index
    assert fs.info(f"{bucket}/ds/{INDEX_PATH}")["ETag"] == fs.info(f"{bucket}-copy/ds/{INDEX_PATH}")["ETag"]
    rows = np.arange(0, ROWS, 3)
    cache = UnifiedCache(tmp_path / "shared-cache")
    bad = actstore.open_dataset(f"s3://{bucket}-copy/ds", storage_options=opts, cache=cache)
    mine = actstore.open_dataset(f"s3://{bucket}/ds", storage_options=opts,
                                 cache=UnifiedCache(tmp_path / "shared-cache"))
    assert bad.source.index_id == mine.source.index_id  # one ETag, two buckets
    got = bad.get(rows, layers=[0])  # the stranger's shards, under the victim's sha256 claims
    assert (got == 666.0).all()
    assert not bad.verify().ok
    np.testing.assert_array_equal(mine.get(rows, layers=[0])[:, 0], good[0][rows])
    np.testing.assert_array_equal(mine.layer(1), good[1])


def test_verify_of_a_corrupted_s3_copy_after_a_good_read_reports_the_corruption(
        s3, tmp_path, write_ds, monkeypatch):
    opts, bucket = s3
    fs = _fs(opts)
    local = str(tmp_path / "ds")
    _write(local, write_ds)
    _upload(fs, local, f"{bucket}/ds")
    url = f"s3://{bucket}/ds"
    monkeypatch.setenv("ACTSTORE_CACHE_DIR", str(tmp_path / "cache"))
    ds = actstore.open_dataset(url, storage_options=opts)
    assert ds.verify().ok
    ds.get(np.arange(ROWS), layers=[0, 1])  # every byte of the good copy is cached
    rel = sorted(p for p in ds.info.files if p.startswith("tensors/"))[0]
    raw = bytearray(fs.cat_file(f"{bucket}/ds/{rel}"))
    raw[-5] ^= 0x10  # same size, one flipped bit
    fs.pipe_file(f"{bucket}/ds/{rel}", bytes(raw))
    report = actstore.open_dataset(url, storage_options=opts).verify()
    assert not report.ok and any(rel in p and "sha256" in p for p in report.problems), report


def _moto_in_another_process(port: int) -> subprocess.Popen:
    """A second S3 server with its own buckets (moto servers in one process share state)."""
    code = ("import time; from moto.server import ThreadedMotoServer as S; "
            f"S(ip_address='127.0.0.1', port={port}, verbose=False).start(); time.sleep(600)")
    proc = subprocess.Popen([sys.executable, "-c", code])
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("the second moto server did not start")


def test_one_bucket_name_on_two_s3_servers_chosen_by_the_environment_is_two_origins(
        moto_server, tmp_path, write_ds, monkeypatch):
    """``AWS_ENDPOINT_URL`` (or a profile) picks the server; storage options do not show it,
    yet the cache must not serve one server's pieces of ``s3://shared/ds`` to the other."""
    import s3fs

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    other = _moto_in_another_process(port)
    try:
        for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                     "AWS_DEFAULT_REGION": "us-east-1"}.items():
            monkeypatch.setenv(k, v)
        victim, evil = str(tmp_path / "victim"), str(tmp_path / "evil")
        good = _write(victim, write_ds)
        _write(evil, write_ds, value=666.0)
        _claim_files_of(evil, victim)
        stranger = f"http://127.0.0.1:{port}"
        for endpoint, local in ((moto_server, victim), (stranger, evil)):
            fs = s3fs.S3FileSystem(skip_instance_cache=True, client_kwargs={"endpoint_url": endpoint})
            fs.mkdir("shared-name")
            _upload(fs, local, "shared-name/ds")
        rows = np.arange(0, ROWS, 7)
        opts = {"skip_instance_cache": True}
        monkeypatch.setenv("AWS_ENDPOINT_URL", stranger)
        bad = actstore.open_dataset("s3://shared-name/ds", storage_options=opts,
                                    cache=UnifiedCache(tmp_path / "shared-cache"))
        assert (bad.get(rows, layers=[0]) == 666.0).all()
        monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server)
        mine = actstore.open_dataset("s3://shared-name/ds", storage_options=opts,
                                     cache=UnifiedCache(tmp_path / "shared-cache"))
        np.testing.assert_array_equal(mine.get(rows, layers=[0])[:, 0], good[0][rows])
        np.testing.assert_array_equal(mine.layer(1), good[1])
        assert mine.source.origin != bad.source.origin
    finally:
        other.kill()
        other.wait()


@pytest.mark.hub
def test_one_repo_name_on_two_hubs_chosen_by_hf_endpoint_is_two_origins(hub, tmp_path, write_ds):
    """``HF_ENDPOINT`` (a mirror) picks the Hub without a storage option; the cache must not
    serve one Hub's pieces of ``hf://datasets/org/same`` to the other."""
    from huggingface_hub import HfApi

    from actstore.testing import HubServer

    victim, evil = str(tmp_path / "victim"), str(tmp_path / "evil")
    good = _write(victim, write_ds)
    _write(evil, write_ds, value=666.0)
    _claim_files_of(evil, victim)
    tokens = {"hf_test_write": "write", "hf_test_read": "read"}
    with HubServer(tmp_path / "mirror-store", tokens=tokens) as mirror:
        for server, folder in ((hub, victim), (mirror, evil)):
            api = HfApi(endpoint=server.endpoint, token="hf_test_write")
            api.create_repo("org/same", repo_type="dataset", exist_ok=True)
            api.upload_folder(folder_path=folder, repo_id="org/same", repo_type="dataset")
        rows = np.arange(0, ROWS, 9)
        code = (
            "import sys, numpy as np, actstore\n"
            "from actstore.cache import UnifiedCache\n"
            "c = UnifiedCache(sys.argv[1])\n"
            "ds = actstore.open_dataset('hf://datasets/org/same', storage_options={'token': 'hf_test_read'}, cache=c)\n"
            "assert (ds.get(np.arange(0, 1000, 9), layers=[0]) == 666.0).all()\n"
            "c.flush(); print('read the mirror')\n"
        )
        env = {**os.environ, "HF_ENDPOINT": mirror.endpoint,  # another process, another Hub
               "PYTHONPATH": os.pathsep.join([os.getcwd(), *sys.path])}
        out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "cache")], env=env,
                             capture_output=True, text=True, timeout=120)
        assert "read the mirror" in out.stdout, out.stderr
        mine = actstore.open_dataset("hf://datasets/org/same", storage_options={"token": "hf_test_read"},
                                     cache=UnifiedCache(tmp_path / "cache"))
        np.testing.assert_array_equal(mine.get(rows, layers=[0])[:, 0], good[0][rows])
        np.testing.assert_array_equal(mine.layer(1), good[1])
