"""One torchrun rank: stream its part (rank and world size found automatically from the
initialised gloo process group), check every rank got the same batch count, and write the
rows it saw to OUT/rank<r>.npy."""

from __future__ import annotations

import os
import sys

import numpy as np
import torch
import torch.distributed as dist

import actstore


def main(dataset: str, out: str) -> None:
    dist.init_process_group("gloo")
    s = actstore.stream(actstore.open_dataset(dataset), layers=[0], batch_size=16, block_rows=8,
                        window=32, seed=1)
    assert (s.plan.rank, s.plan.world) == (dist.get_rank(), dist.get_world_size())
    rows = []
    for batch in s:
        x = torch.ones(1)
        dist.all_reduce(x)  # a DDP step: every rank must take part in each one
        assert torch.equal(batch["layer_0"][:, 0].long(), batch["row"])
        rows.append(batch["row"].numpy())
    n = torch.tensor([len(rows)])
    dist.all_reduce(n, op=dist.ReduceOp.MAX)
    assert n.item() == len(rows) == len(s)
    np.save(os.path.join(out, f"rank{dist.get_rank()}.npy"), np.concatenate(rows))
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
