"""Run in a subprocess: write three datasets with lmprobe 0.10.3 itself (pooled float32 with
top-k logits and different hidden/logits shard boundaries; float16 cache dtype, whose descriptor
still claims float32; full sequence), offline, and print where its staging dirs are (JSON).

lmprobe has no local-output API: push_dataset writes the complete dataset to its staging dir
before any Hub call, and HF_HUB_OFFLINE=1 makes the Hub step fail (reference/lmprobe-v2.md §10).
"""
import json
import os
import sys

os.environ["HF_HUB_OFFLINE"] = "1"  # before huggingface_hub is imported (by lmprobe)

import numpy as np  # noqa: E402
import torch  # noqa: E402
from lmprobe import cache, push_dataset  # noqa: E402
from lmprobe.sharing import _staging_dir_path  # noqa: E402

out = sys.argv[1]
rng = np.random.default_rng(0)
result = {}
def push(repo, model, prompts, labels, **kw):
    try:
        push_dataset(repo, model, prompts, labels=labels, shuffle=False, **kw)
    except Exception:  # the offline Hub step fails after the dataset is staged
        pass
    return str(_staging_dir_path(repo, model, prompts, labels=labels, shuffle=False, **kw))
# 1. pooled float32 + logits
layers, dim, n = [0, 2], 8, 12
prompts = [f"pooled prompt {i}" for i in range(n)]
X = rng.standard_normal((n, len(layers) * dim)).astype(np.float32)
V = 50
LOGITS = []
for i, p in enumerate(prompts):
    cache.save_prompt_pooled_activations("m-pooled", p, layers, torch.from_numpy(X[i:i+1]), "last_token")
    L = rng.standard_normal((1, 3, V)).astype(np.float32)
    LOGITS.append(L[0, -1])
    logits = torch.from_numpy(L)
    cache.save_prompt_logits("m-pooled", p, logits, torch.ones(1, 3, dtype=torch.long), top_k=4, positions="last")
np.save(f"{out}/pooled_X.npy", X)
np.save(f"{out}/pooled_logits.npy", np.stack(LOGITS))
result["pooled"] = push("org/pooled", "m-pooled", prompts, [i % 2 for i in range(n)], shard_max_bytes=160)
# 2. float16 cache dtype (descriptor still claims float32)
cache.set_cache_dtype("float16")
prompts16 = [f"half prompt {i}" for i in range(n)]
X16 = rng.standard_normal((n, len(layers) * dim)).astype(np.float32)
for i, p in enumerate(prompts16):
    cache.save_prompt_pooled_activations("m-half", p, layers, torch.from_numpy(X16[i:i+1]), "last_token")
np.save(f"{out}/half_X.npy", X16)
result["half"] = push("org/half", "m-half", prompts16, [i % 3 for i in range(n)])
cache.set_cache_dtype(None)
# 3. full sequence
lengths = [1, 4, 2, 6, 3, 5]
promptsf = [f"full prompt {i}" for i in range(len(lengths))]
seqs = []
for p, t in zip(promptsf, lengths):
    A = rng.standard_normal((1, t, len(layers) * dim)).astype(np.float32)
    seqs.append(A[0])
    cache.save_prompt_activations("m-full", p, layers, torch.from_numpy(A), torch.ones(1, t, dtype=torch.long))
np.savez(f"{out}/full.npz", *seqs)
result["full"] = push("org/full", "m-full", promptsf, [0, 1, 0, 1, 0, 1], shard_max_bytes=200)
print(json.dumps(result))
