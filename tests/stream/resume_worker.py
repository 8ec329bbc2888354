"""Run part of a stream in a fresh process (for the resume tests).

Usage: ``python resume_worker.py SPEC.json`` where the spec names the dataset, the stream
arguments, the loader (``plain`` DataLoader or torchdata's ``stateful`` one), ``num_workers``,
the epoch, a state file to load first (or none), how many batches to take (or all), and where
to write the batches' rows (``.npy``) and, afterwards, the state.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import torch
from torch.utils.data import DataLoader

import actstore


def main(spec_path: str) -> None:
    spec = json.load(open(spec_path))
    ds = actstore.open_dataset(spec["dataset"])
    s = actstore.stream(ds, **spec["stream"])
    s.set_epoch(spec["epoch"])
    if spec["loader"] == "stateful":
        from torchdata.stateful_dataloader import StatefulDataLoader

        loader = StatefulDataLoader(s, batch_size=None, num_workers=spec["num_workers"])
        if spec.get("load"):
            loader.load_state_dict(torch.load(spec["load"], weights_only=True))
    else:
        if spec.get("load"):
            s.load_state_dict(json.load(open(spec["load"])))
            s.set_epoch(spec["epoch"])  # the state's own epoch: keeps the resume point
        loader = DataLoader(s, batch_size=None, num_workers=spec["num_workers"])
    rows, sums, taken = [], [], 0
    for batch in loader:
        rows.append(batch["row"].numpy())
        sums.append(batch[spec["key"]].float().sum(dim=1).numpy())
        taken += 1
        if taken == spec.get("take"):
            break  # before the loader fetches another batch
    np.save(spec["out"], np.stack([np.concatenate(rows), np.concatenate(sums)]) if rows else np.zeros((2, 0)))
    if spec.get("save"):
        if spec["loader"] == "stateful":
            torch.save(loader.state_dict(), spec["save"])
        else:
            json.dump(s.state_dict(batch=taken + spec.get("already", 0)), open(spec["save"], "w"))


if __name__ == "__main__":
    main(sys.argv[1])
