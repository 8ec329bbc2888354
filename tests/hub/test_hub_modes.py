"""What a user meets in both modes (Xet on, the default, and Xet off): probes trained on a
dataset read from the Hub, and nothing in actstore switching the client's Xet setting (#16).

Every test here runs twice (the ``hub_mode`` fixture of this folder's conftest).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

import actstore
from actstore.testing import HubServer

from .conftest import WRITE, write_dataset


def test_probe_on_a_hub_dataset_equals_the_local_probe(hub: HubServer, repo_id: str,
                                                       tmp_path: Path) -> None:
    path = tmp_path / "ds"
    write_dataset(path, n=120, dim=8, shard_bytes=8 * 4 * 50, views=False)
    actstore.push_dataset(path, repo_id, token=WRITE, progress=False)
    opts = {"token": WRITE, "endpoint": hub.endpoint}
    lazy = actstore.open_dataset(f"hf://datasets/{repo_id}", storage_options=opts, cache=False)
    pulled = actstore.pull_dataset(repo_id, layers=[2], token=WRITE, out=tmp_path / "pulled",
                                   progress=False)
    local = actstore.open_dataset(path)
    ref = actstore.Probe(layers=2, random_state=0).fit(local, "label")
    for ds in (lazy, pulled):
        probe = actstore.Probe(layers=2, random_state=0).fit(ds, "label")
        np.testing.assert_array_equal(probe.pipeline_[-1].coef_, ref.pipeline_[-1].coef_)
        np.testing.assert_array_equal(probe.predict_proba(ds), ref.predict_proba(local))


def test_demo_publishes_in_the_clients_mode_and_leaves_the_client_alone(hub_mode: str,
                                                                        tmp_path: Path) -> None:
    import huggingface_hub.constants as hf_constants

    from actstore.demo import _publish

    src = tmp_path / "ds"
    write_dataset(src, n=20, dim=8, shard_bytes=1 << 20, views=False)
    setting = hf_constants.HF_HUB_DISABLE_XET
    url, server = _publish(str(src), str(tmp_path / "demo"), quiet=True)
    try:
        assert hf_constants.HF_HUB_DISABLE_XET is setting  # the client is as the user left it
        assert server.xet is (hub_mode == "xet")  # the demo's server follows the client
        assert (server.xet_bytes_stored > 0) is (hub_mode == "xet")  # pushed through hf_xet
        assert url.startswith("hf://datasets/")
    finally:
        server.stop()


def test_no_module_of_actstore_sets_the_xet_switch() -> None:
    """Xet is the client's default and the user's choice: no module may turn it off (the old
    demo flipped ``huggingface_hub.constants.HF_HUB_DISABLE_XET`` for the whole process)."""
    root = Path(actstore.__file__).parent
    setters = re.compile(r"HF_HUB_DISABLE_XET\s*=(?!=)|HF_HUB_DISABLE_XET['\"]\s*\]\s*=(?!=)"
                         r"|setdefault\(\s*['\"]HF_HUB_DISABLE_XET|setattr\([^)]*HF_HUB_DISABLE_XET")
    found = [f"{p.relative_to(root)}:{i}" for p in root.rglob("*.py")
             for i, line in enumerate(p.read_text().splitlines(), 1)
             if setters.search(line.split("#", 1)[0]) and '"""' not in line and "``" not in line]
    assert found == []
