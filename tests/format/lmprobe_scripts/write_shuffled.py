"""Run in a subprocess with LMPROBE_CACHE_DTYPE=float16 and HF_HUB_OFFLINE=1: write datasets with
lmprobe 0.10.3's own push_dataset (default shuffle=True, so rows are in lmprobe's shuffled order and
the test maps them back by text), offline; the staging dir is the dataset (reference §10).

1. "half": pooled, cache dtype float16 from the environment (descriptor still claims float32);
2. "bf16": pooled, cache dtype bfloat16 via set_cache_dtype (descriptor still claims float32);
3. "moe": pooled float32 plus MoE router logits (a router_logits tensor actstore must ignore);
4. "pooled": pooled float32 + top-k logits (int32 indices), metadata column, tiny shards;
5. "full": full-sequence float32 + top-k logits, tiny shards.
Inputs are saved next to the datasets (inputs.npz) and the staging dirs printed as JSON.

usage: write_shuffled.py OUT_DIR
"""
import json
import os
import sys

import numpy as np
import torch
from lmprobe import cache, push_dataset
from lmprobe.sharing import _staging_dir_path

assert os.environ.get("HF_HUB_OFFLINE") == "1" and os.environ.get("LMPROBE_CACHE_DTYPE") == "float16"
out = sys.argv[1]
rng = np.random.default_rng(7)
layers, dim, n, vocab, k = [1, 4], 6, 10, 40, 3
saved, result = {}, {}


def push(repo, model, prompts, labels, **kw):
    try:
        push_dataset(repo, model, prompts, labels=labels, **kw)
    except Exception:  # the offline Hub step (create_repo) fails after the dataset is staged
        pass
    return str(_staging_dir_path(repo, model, prompts, labels=labels, **kw))


def pooled(model, prompts):
    X = rng.standard_normal((len(prompts), len(layers) * dim)).astype(np.float32)
    for i, p in enumerate(prompts):
        cache.save_prompt_pooled_activations(model, p, layers, torch.from_numpy(X[i:i + 1]), "last_token")
    return X


def logits(model, prompts, seq):
    last = []
    for p in prompts:
        L = rng.standard_normal((1, seq, vocab)).astype(np.float32)
        last.append(L[0, -1])
        cache.save_prompt_logits(model, p, torch.from_numpy(L), torch.ones(1, seq, dtype=torch.long),
                                 top_k=k, positions="last")
    return np.stack(last)


texts = [f"half {i}" for i in range(n)]
saved["half_X"] = pooled("m-half", texts)
result["half"] = push("org/half", "m-half", texts, [i % 3 for i in range(n)])
cache.set_cache_dtype("bfloat16")  # BF16 shards, descriptor still claims float32
texts = [f"bf16 {i}" for i in range(n)]
saved["bf16_X"] = pooled("m-bf16", texts)
result["bf16"] = push("org/bf16", "m-bf16", texts, [i % 2 for i in range(n)])
cache.set_cache_dtype(None)  # the rest stays float32
texts = [f"moe {i}" for i in range(n)]
saved["moe_X"] = pooled("m-moe", texts)
for p in texts:  # MoE router logits: lmprobe adds a router_logits tensor and shard file
    cache.save_prompt_router_logits("m-moe", p, {L: torch.randn(3, 5) for L in layers})
result["moe"] = push("org/moe", "m-moe", texts, [i % 2 for i in range(n)])
texts = [f"pooled {i}" for i in range(n)]
saved["pooled_X"] = pooled("m-pooled", texts)
saved["pooled_logits"] = logits("m-pooled", texts, 2)
result["pooled"] = push("org/pooled", "m-pooled", texts, [i % 2 for i in range(n)],
                        metadata=[{"src": f"s{i}"} for i in range(n)], shard_max_bytes=3 * dim * 4)
lengths = [3, 1, 5, 2, 4, 2]
texts = [f"full {i}" for i in range(len(lengths))]
for i, (p, t) in enumerate(zip(texts, lengths)):
    A = rng.standard_normal((1, t, len(layers) * dim)).astype(np.float32)
    saved[f"full_seq_{i}"] = A[0]
    cache.save_prompt_activations("m-full", p, layers, torch.from_numpy(A), torch.ones(1, t, dtype=torch.long))
saved["full_logits"] = logits("m-full", texts, 4)
result["full"] = push("org/full", "m-full", texts, [1, 0, 1, 0, 1, 0], shard_max_bytes=4 * dim * 4)
np.savez(f"{out}/inputs.npz", **saved)
print(json.dumps(result))
