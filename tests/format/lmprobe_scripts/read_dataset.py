"""Run in a subprocess with its own HF_HUB_CACHE and HF_HUB_OFFLINE=1: read datasets that sit in an
offline HF cache layout with lmprobe 0.10.3 (route A of reference/lmprobe-v2.md §10) and save what
lmprobe returns as .npy files, so the test compares them without importing lmprobe itself (which
would read the test process's HF environment at import).

usage: read_dataset.py JOBS_JSON   where JOBS_JSON = [[repo_id, layers, out_dir], ...]
"""
import json
import sys

import numpy as np
import torch
from lmprobe import fetch_dataset_metadata, load_activation_dataset, load_activations

for repo, layers, out in json.loads(sys.argv[1]):
    meta = fetch_dataset_metadata(repo)
    acts, labels = load_activations(repo, layers=layers, return_labels=True, show_progress=False)
    for layer, x in acts.items():
        np.save(f"{out}/acts_{layer}.npy", np.asarray(x))
    np.save(f"{out}/labels.npy", np.asarray(labels))
    tensors, info = load_activation_dataset(repo)
    dtypes = {}
    for key, t in tensors.items():
        dtypes[key] = str(t.dtype)
        # numpy has no bfloat16: hand its bit patterns back as uint16
        arr = t.view(torch.int16).numpy().view(np.uint16) if t.dtype == torch.bfloat16 else t.numpy()
        np.save(f"{out}/tensor_{key}.npy", arr)
    with open(f"{out}/result.json", "w") as f:
        json.dump({"prompts": list(meta.prompts), "layers": list(meta.available_layers),
                   "num_prompts": meta.num_prompts, "dtypes": dtypes}, f)
