"""push_dataset / pull_dataset / fetch_metadata against the loopback Hub, real client."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import actstore
from actstore.errors import (
    DatasetExistsError,
    DatasetNotFoundError,
    HubAuthError,
    HubError,
    IntegrityError,
    LayerNotFoundError,
)
from actstore.hub import pulled_revision
from actstore.testing import HubServer

from .conftest import READ, WRITE, write_dataset

pytest.importorskip("huggingface_hub")
INDEX = "index/train-00000-of-00001.parquet"


def _commits(hub: HubServer, repo_id: str) -> list[dict]:
    """The repo's commits on main, oldest first, read from the server's store."""
    repo = hub.store.load("dataset", repo_id)
    out, sha = [], repo["branches"]["main"]
    while sha:
        out.append(repo["commits"][sha])
        sha = repo["commits"][sha]["parent"]
    return out[::-1]


def _assert_consistent(hub: HubServer, repo_id: str, local: Path) -> None:
    """No commit ever holds an index whose files are not all present with the right sha256."""
    ds = actstore.open_dataset(local)
    for c in _commits(hub, repo_id):
        if INDEX in c["files"]:
            for p, f in ds.info.files.items():
                assert c["files"][p]["sha256"] == f["sha256"], (c["title"], p)


def test_small_push_is_one_commit_and_pull_fetches_only_one_layer(hub: HubServer, repo_id: str,
                                                                  local_ds, tmp_path: Path) -> None:
    path, texts, hidden, mean = local_ds
    sha = actstore.push_dataset(path, repo_id, token=WRITE, private=True, progress=False)
    assert len(_commits(hub, repo_id)) == 2  # the repo's initial commit + ours
    hub.reset_counters()
    ds = actstore.pull_dataset(repo_id, layers=[1], views=["last_token"], token=WRITE,
                               out=tmp_path / "pulled")
    np.testing.assert_array_equal(ds.layer(1), hidden[1])
    assert ds.texts == texts and list(ds.labels) == [i % 2 for i in range(len(texts))]
    assert pulled_revision(tmp_path / "pulled")["revision"] == sha
    layer1 = sum(f["size"] for p, f in ds.info.files.items() if p.startswith("tensors/hidden_layer001"))
    # with Xet the bytes come from the CAS through hf_xet, none over HTTP
    assert hub.bytes_served(repo_id, "tensors/") == (0 if hub.xet else layer1)
    got = sorted(p.name for p in (tmp_path / "pulled" / "tensors").rglob("*.safetensors"))
    assert got == sorted(p.rsplit("/", 1)[1] for p in ds.info.files
                         if p.startswith("tensors/hidden_layer001"))
    with pytest.raises(LayerNotFoundError, match=r"\[7\].*holds layers \[0, 1, 2\]"):
        actstore.pull_dataset(repo_id, layers=[7], token=WRITE, out=tmp_path / "p2")
    with pytest.raises(LayerNotFoundError, match="holds views"):
        actstore.pull_dataset(repo_id, views=["nope"], token=WRITE, out=tmp_path / "p3")


def test_large_push_in_batches_index_last_and_resumes_after_faults(hub: HubServer, repo_id: str,
                                                                   local_ds, tmp_path: Path) -> None:
    path, texts, hidden, mean = local_ds
    for nth in (1, 5, 8):  # interrupt at the start, then twice further on
        hub.clear_faults()
        hub.fail_uploads(nth, times=1000)
        with pytest.raises(HubError, match="Rerun to resume"):
            actstore.push_dataset(path, repo_id, token=WRITE, batch_bytes=2000, progress=False)
        _assert_consistent(hub, repo_id, path)
    hub.clear_faults()
    before = hub.upload_count
    actstore.push_dataset(path, repo_id, token=WRITE, batch_bytes=2000, progress=False)
    resumed = hub.upload_count - before
    total_files = len(actstore.open_dataset(path).info.files) + 1  # + the index
    assert 0 < resumed < total_files  # only what was missing
    commits = _commits(hub, repo_id)
    assert INDEX in commits[-1]["files"] and all(INDEX not in c["files"] for c in commits[:-1])
    _assert_consistent(hub, repo_id, path)
    # a rerun of a complete push uploads nothing and commits nothing
    before, n = hub.upload_count, len(commits)
    actstore.push_dataset(path, repo_id, token=WRITE, batch_bytes=2000, progress=False)
    assert hub.upload_count == before and len(_commits(hub, repo_id)) == n
    ds = actstore.pull_dataset(repo_id, token=WRITE, out=tmp_path / "full")
    np.testing.assert_array_equal(ds.layer(2, view="mean"), mean[2])
    assert ds.verify().ok


def test_dropped_connections_are_survived(hub: HubServer, repo_id: str, local_ds,
                                          tmp_path: Path) -> None:
    path, texts, hidden, _ = local_ds
    hub.drop_connection("/xet-write-token/" if hub.xet else "/lfs-upload/", nth=2 - hub.xet)
    actstore.push_dataset(path, repo_id, token=WRITE, progress=False)
    hub.drop_connection("/xet-read-token/" if hub.xet else "/resolve/", nth=2 - hub.xet)
    ds = actstore.pull_dataset(repo_id, layers=[0], token=WRITE, out=tmp_path / "p")
    np.testing.assert_array_equal(ds.layer(0), hidden[0])
    assert all(f.seen >= f.nth for f in hub.state.faults)  # both cuts happened


def test_push_to_a_branch_and_pull_it(hub: HubServer, repo_id: str, local_ds,
                                      tmp_path: Path) -> None:
    path, _, hidden, _ = local_ds
    actstore.push_dataset(path, repo_id, token=WRITE, revision="v1", progress=False)
    repo = hub.store.load("dataset", repo_id)
    assert INDEX not in repo["commits"][repo["branches"]["main"]]["files"]
    ds = actstore.pull_dataset(repo_id, layers=[0], revision="v1", token=WRITE, out=tmp_path / "b")
    np.testing.assert_array_equal(ds.layer(0), hidden[0])
    assert pulled_revision(tmp_path / "b")["revision"] == repo["branches"]["v1"]


def test_refuses_a_different_dataset_unless_overwrite(hub: HubServer, repo_id: str, local_ds,
                                                      tmp_path: Path) -> None:
    path, _, hidden, _ = local_ds
    first = actstore.push_dataset(path, repo_id, token=WRITE, progress=False)
    other = tmp_path / "other"
    _, hidden_b, _ = write_dataset(other, layers=(0, 1), seed=1, views=False)
    with pytest.raises(DatasetExistsError, match=f"{repo_id}.*overwrite=True"):
        actstore.push_dataset(other, repo_id, token=WRITE, progress=False)
    actstore.push_dataset(other, repo_id, token=WRITE, overwrite=True, progress=False)
    files = _commits(hub, repo_id)[-1]["files"]
    assert not any(p.startswith(("tensors/hidden_layer002", "tensors/mean/")) for p in files)
    ds = actstore.pull_dataset(repo_id, layers=[1], token=WRITE, out=tmp_path / "b")
    np.testing.assert_array_equal(ds.layer(1), hidden_b[1])
    # the old commit is still pullable, pinned by sha
    old = actstore.pull_dataset(repo_id, layers=[2], revision=first, token=WRITE, out=tmp_path / "a")
    np.testing.assert_array_equal(old.layer(2), hidden[2])
    assert pulled_revision(tmp_path / "a")["revision"] == first


@pytest.mark.parametrize(("token", "what"), [(False, "401"), ("hf_wrong", "401"), (READ, "403")])
def test_bad_tokens_give_hub_auth_error_and_commit_nothing(hub: HubServer, repo_id: str,
                                                           local_ds, token, what) -> None:
    path = local_ds[0]
    with pytest.raises(HubAuthError, match=f"{repo_id}.*HTTP {what}.*HF_TOKEN"):
        actstore.push_dataset(path, repo_id, token=token, progress=False)
    assert hub.store.load("dataset", repo_id) is None
    actstore.push_dataset(path, repo_id, token=WRITE, progress=False)
    n = len(_commits(hub, repo_id))
    with pytest.raises(HubAuthError, match="write access"):
        actstore.push_dataset(path, repo_id, token=token, overwrite=True, progress=False)
    assert len(_commits(hub, repo_id)) == n


def test_unknown_repo_revision_and_private_access(hub: HubServer, repo_id: str, local_ds,
                                                   tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match="org/missing"):
        actstore.pull_dataset("org/missing", token=WRITE, out=tmp_path / "x")
    with pytest.raises(DatasetNotFoundError, match="org/missing"):
        actstore.fetch_metadata("org/missing", token=WRITE)
    actstore.push_dataset(local_ds[0], repo_id, token=WRITE, private=True, progress=False)
    with pytest.raises(DatasetNotFoundError, match="'deadbeef' does not exist"):
        actstore.pull_dataset(repo_id, revision="deadbeef", token=WRITE, out=tmp_path / "y")
    with pytest.raises(DatasetNotFoundError, match=repo_id):
        actstore.pull_dataset(repo_id, token=False, out=tmp_path / "z")  # private, anonymous
    assert actstore.fetch_metadata(repo_id, token=READ).num_prompts == 40


def test_checksum_mismatch_is_refused_and_file_not_kept(hub: HubServer, repo_id: str, local_ds,
                                                        tmp_path: Path) -> None:
    from huggingface_hub import HfApi

    actstore.push_dataset(local_ds[0], repo_id, token=WRITE, progress=False)
    target = "tensors/hidden_layer001_shard000.safetensors"
    bad = bytearray((local_ds[0] / target).read_bytes())
    bad[-1] ^= 0xFF
    HfApi(token=WRITE).upload_file(path_or_fileobj=bytes(bad), path_in_repo=target,
                                   repo_id=repo_id, repo_type="dataset")
    out = tmp_path / "p"
    with pytest.raises(IntegrityError, match=f"{target}.*not used"):
        actstore.pull_dataset(repo_id, layers=[1], token=WRITE, out=out)
    assert not (out / target).exists()


def test_fetch_metadata_reads_only_the_footer(hub: HubServer, repo_id: str, tmp_path: Path) -> None:
    path = tmp_path / "big"
    write_dataset(path, n=3000, dim=4, shard_bytes=1 << 20, views=False)
    actstore.push_dataset(path, repo_id, token=WRITE, progress=False)
    hub.reset_counters()
    info = actstore.fetch_metadata(repo_id, token=WRITE)
    assert info.num_prompts == 3000 and info.layers == (0, 1, 2) and info.model == "org/tiny-model"
    assert set(info.files) == set(actstore.open_dataset(path).info.files)
    import pyarrow.parquet as pq

    index_size = (path / INDEX).stat().st_size
    footer = pq.read_metadata(path / INDEX).serialized_size + 8
    assert 0 < hub.bytes_served(repo_id, "index/") <= max(footer, 16384) < index_size
    assert 0 < hub.bytes_served(repo_id, "tensors/") <= 1024  # one shard header (the true dtype)


def test_card_and_datasets_load_dataset(hub: HubServer, repo_id: str, local_ds,
                                        tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    from huggingface_hub import hf_hub_download

    path, texts, _, _ = local_ds
    actstore.push_dataset(path, repo_id, token=WRITE, license="mit", tags=["safety"],
                          progress=False)
    card = Path(hf_hub_download(repo_id, "README.md", repo_type="dataset", token=WRITE,
                                local_dir=tmp_path / "card")).read_text()
    front = card.split("---")[1]
    for needle in ("license: mit", 'base_model: "org/tiny-model"', '- "safety"', "configs:",
                   "path: index/*.parquet"):
        assert needle in front
    for needle in ("| `mean` |", "actstore.pull_dataset", "safetensors.numpy", "load_dataset(",
                   "## Provenance", "a" * 40):
        assert needle in card
    ds = datasets.load_dataset(repo_id, split="train", token=WRITE,
                               cache_dir=str(tmp_path / "dcache"))
    assert ds["text"] == texts and ds["label"] == [i % 2 for i in range(len(texts))]


def test_lmprobe_reads_what_actstore_pushed(hub: HubServer, repo_id: str, local_ds) -> None:
    lmprobe = pytest.importorskip("lmprobe")
    path, texts, hidden, _ = local_ds
    actstore.push_dataset(path, repo_id, token=WRITE, progress=False)  # public: lmprobe reads anonymously
    acts, labels = lmprobe.load_activations(repo_id, layers=[0, 2], return_labels=True,
                                            show_progress=False)
    ours = actstore.pull_dataset(repo_id, layers=[0, 2], token=WRITE)
    for layer in (0, 2):
        np.testing.assert_array_equal(np.asarray(acts[layer]), ours.layer(layer))
    np.testing.assert_array_equal(np.asarray(labels), ours.labels)


def test_cli_push_and_pull(hub: HubServer, repo_id: str, local_ds, tmp_path: Path,
                           monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    from actstore.cli import main

    monkeypatch.setenv("HF_TOKEN", WRITE)
    path, _, hidden, _ = local_ds
    assert main(["push", str(path), repo_id, "--private"]) == 0
    assert "at commit" in capsys.readouterr().out
    assert hub.store.load("dataset", repo_id)["private"] is True
    out = tmp_path / "cli"
    assert main(["pull", repo_id, "--layers", "2", "--out", str(out)]) == 0
    rec = json.loads((out / ".actstore" / "hub.json").read_text())
    assert rec["files"] and all("layer002" in f for f in rec["files"])
    np.testing.assert_array_equal(actstore.open_dataset(out).layer(2), hidden[2])
    monkeypatch.delenv("HF_TOKEN")
    assert main(["pull", "org/nowhere", "--out", str(tmp_path / "n")]) == 2
    assert "org/nowhere" in capsys.readouterr().err
