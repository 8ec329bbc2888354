"""Extraction throughput: ``actstore.extract`` vs a bare forward loop, vs lmprobe 0.10.3,
early stop (half the layers vs all), and peak RSS at two prompt counts.

Model: a random-weight GPT-2 (8 blocks, dim 256, vocab 8,192; LM head / blocks compute about
0.33, GPT-2 small is 0.45) with a local WordLevel tokenizer, on CPU. Prompts: mixed lengths,
8-240 words, shuffled. Tokens/s counts real (unpadded) tokens; every run sees the same prompts.

Usage: ``python benchmarks/bench_extract.py [--quick]`` -> ``benchmarks/results/extract.md``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_TMP = tempfile.mkdtemp(prefix="bench-extract-")
os.environ.setdefault("LMPROBE_CACHE_DIR", os.path.join(_TMP, "lmprobe"))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

HERE = Path(__file__).resolve().parent
WORDS = [f"w{i}" for i in range(400)]
N_LAYERS, DIM, VOCAB = 8, 256, 8192
# --device cuda: a random Llama-style model big enough to keep an H100 busy
GPU = {"layers": 16, "dim": 1024, "vocab": 32000, "prompts": 2048, "max_words": 480, "batch": 32}


def _config(gpu: bool):  # type: ignore[no-untyped-def]
    from transformers import GPT2Config, LlamaConfig

    if gpu:
        return LlamaConfig(hidden_size=GPU["dim"], intermediate_size=GPU["dim"] * 11 // 4,
                           num_hidden_layers=GPU["layers"], num_attention_heads=16,
                           num_key_value_heads=4, vocab_size=GPU["vocab"],
                           max_position_embeddings=1024, bos_token_id=1, eos_token_id=1)
    return GPT2Config(n_layer=N_LAYERS, n_embd=DIM, n_head=8, n_positions=512, vocab_size=VOCAB,
                      bos_token_id=1, eos_token_id=1)


def build_model(root: str, gpu: bool = False) -> str:
    """Save the benchmark model + tokenizer under ``root``; returns the path."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["<unk>", "</s>", *WORDS])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", eos_token="</s>",
                                   pad_token="</s>", padding_side="right")
    torch.manual_seed(0)
    path = os.path.join(root, "llama-bench" if gpu else "gpt2-bench")
    AutoModelForCausalLM.from_config(_config(gpu)).save_pretrained(path)
    fast.save_pretrained(path)
    return path


def make_prompts(n: int, seed: int = 0, max_words: int = 240) -> list[str]:
    import numpy as np

    rng = np.random.default_rng(seed)
    lengths = rng.integers(8, max_words, size=n)
    return [" ".join(rng.choice(WORDS, size=k)) for k in lengths]


def bare_loop(model, tok, prompts: list[str], batch_size: int) -> float:
    """Seconds for input-order batches through ``model(**batch, output_hidden_states=True)``."""
    import torch

    start = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, len(prompts), batch_size):
            batch = tok(prompts[i : i + batch_size], return_tensors="pt", padding=True).to(model.device)
            out = model(**batch, output_hidden_states=True)
            last = batch["attention_mask"].sum(1) - 1
            for h in out.hidden_states[1:]:  # block outputs, last token, to numpy
                h[torch.arange(h.shape[0]), last].float().cpu().numpy()
    return time.perf_counter() - start


def timed_extract(lm, prompts: list[str], **kw) -> float:
    import actstore.extraction as ex

    out = tempfile.mkdtemp(dir=_TMP)
    start = time.perf_counter()
    ex.extract(lm, prompts, out=os.path.join(out, "ds"), progress=False, **kw)
    return time.perf_counter() - start


def timed_lmprobe(path: str, prompts: list[str], batch_size: int, device: str, dtype: str) -> float:
    from lmprobe.extract import extract as lm_extract

    start = time.perf_counter()
    lm_extract(path, prompts, layers="all", output_dir=tempfile.mkdtemp(dir=_TMP), batch_size=batch_size,
               remote=False, device=device, backend="local", dtype=dtype)
    return time.perf_counter() - start


def load_time(path: str, device: str, dtype: str) -> float:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    start = time.perf_counter()
    AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(device)
    AutoTokenizer.from_pretrained(path)
    return time.perf_counter() - start


def rss_child(path: str, n: int) -> float:
    """Peak RSS (MB) of a fresh process extracting ``n`` prompts (all layers, two views)."""
    code = (
        "import resource, sys, tempfile, os\n"
        f"sys.path.insert(0, {str(HERE)!r})\n"
        "from bench_extract import make_prompts\n"
        "import actstore.extraction as ex\n"
        f"ex.extract({path!r}, make_prompts({n}, seed=1), out=os.path.join(tempfile.mkdtemp(), 'd'),\n"
        "           layers='all', pooling=['last_token', 'mean'], batch_size=16, shard_size=64,\n"
        "           device='cpu', progress=False)\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="small prompt set, < 60 s")
    ap.add_argument("--device", default="cpu", help="cpu (the RESULTS figures) or cuda")
    args = ap.parse_args()
    import torch

    from actstore.extraction import load_model

    gpu = args.device.startswith("cuda")
    n, rss_n, rounds = (64, 32, 2) if args.quick else (384, 256, 3)
    bs, words, dtype = 16, 240, "float32"
    if gpu:
        n, bs, words, dtype = GPU["prompts"] // (4 if args.quick else 1), GPU["batch"], GPU["max_words"], "bfloat16"
        rounds = 2
    path = build_model(_TMP, gpu)
    prompts = make_prompts(n, max_words=words)
    lm = load_model(path, device=args.device, dtype=getattr(torch, dtype))
    depth = lm.model.config.num_hidden_layers
    tokens = sum(len(x) for x in lm.tokenizer(prompts)["input_ids"])
    sync = torch.cuda.synchronize if gpu else (lambda: None)
    bare_loop(lm.model, lm.tokenizer, prompts[:bs], bs)  # warm-up
    kw = dict(batch_size=bs, dtype=dtype)
    runs = {
        "bare": lambda: bare_loop(lm.model, lm.tokenizer, prompts, bs),
        "ours": lambda: timed_extract(lm, prompts, layers="all", **kw),
        "ours_all": lambda: timed_extract(lm, prompts, layers="all", pooling=["all"], **kw),
        "half": lambda: timed_extract(lm, prompts, layers=list(range(depth // 2)), **kw),
        "lmprobe": lambda: timed_lmprobe(path, prompts, bs, args.device, dtype)
        - load_time(path, args.device, dtype),
    }
    if importlib.util.find_spec("lmprobe") is None:  # e.g. a GPU box without it
        del runs["lmprobe"]
    # the machine is shared: interleave the contenders and keep each one's best round
    t: dict[str, float] = {}
    for _ in range(rounds):
        for name, run in runs.items():
            sync()
            t[name] = min(t.get(name, float("inf")), run())
    if "lmprobe" in t:
        t["lmprobe_load"] = load_time(path, args.device, dtype)
    rss = {} if gpu else {k: rss_child(path, k) for k in (rss_n, 4 * rss_n)}
    what = (f"random Llama-style model, {depth} blocks, dim {GPU['dim']}, vocab {GPU['vocab']}, "
            f"bfloat16, on {torch.cuda.get_device_name()}" if gpu else
            f"random GPT-2, {depth} blocks, dim {DIM}, vocab {VOCAB}, float32")
    write(t, rss, n, tokens, args, torch.get_num_threads(), rounds, what, words, bs, depth)


def write(t: dict, rss: dict, n: int, tokens: int, args: argparse.Namespace, threads: int,
          rounds: int, what: str, words: int, bs: int, depth: int) -> None:
    tps = {k: tokens / v for k, v in t.items() if k != "lmprobe_load"}
    rows = [
        ("extract, all layers, last_token", "bare output_hidden_states loop", "ours", "bare"),
        ("extract, all layers, full sequence ('all')", "lmprobe 0.10.3 extract (local, full seq)",
         "ours_all", "lmprobe"),
        ("extract, all layers, last_token", "lmprobe 0.10.3 extract (local, full seq)", "ours", "lmprobe"),
        (f"extract, layers 0-{depth // 2 - 1} (<= depth/2)", "extract, all layers", "half", "ours"),
    ]
    gpu = args.device.startswith("cuda")
    flags = (" --quick" if args.quick else "") + (f" --device {args.device}" if gpu else "")
    lines = [
        f"## Extraction (actstore.extract, {'GPU' if gpu else 'CPU'})",
        "",
        f"Command: `python benchmarks/bench_extract.py{flags}`; machine: "
        f"{platform.machine()}, {os.cpu_count()} cores ({threads} torch threads), Python "
        f"{platform.python_version()}. Model: {what}. {n} prompts of 8-{words} words "
        f"({tokens:,} real tokens), batch size {bs}; best of {rounds} interleaved rounds per contender.",
        "",
        "| figure | actstore tokens/s | baseline | baseline tokens/s | ratio |",
        "|---|---|---|---|---|",
    ]
    for name, base, k1, k2 in rows:
        if k1 not in tps or k2 not in tps:
            continue
        lines.append(f"| {name} | {tps[k1]:,.0f} | {base} | {tps[k2]:,.0f} | {tps[k1] / tps[k2]:.2f} |")
    lines += [
        "",
        "Ratios are tokens/s over the baseline's tokens/s (higher is better). extract's time includes",
        "tokenising, writing the dataset (shards, index, checksums) and the merge; the bare loop only",
        "runs the model and copies last-token states out. lmprobe's time is its `extract()` call minus",
        f"a separately measured model + tokenizer load ({t.get('lmprobe_load', 0):.2f} s); it stores padded",
        "full sequences for every layer, so the full-sequence row is the like-for-like one.",
    ]
    if rss:
        (a, b) = sorted(rss)
        lines += ["", f"Peak RSS of a fresh extracting process (all layers, last_token + mean, "
                  f"shard_size 64): {rss[a]:,.0f} MB at {a} prompts, {rss[b]:,.0f} MB at {b} prompts "
                  f"(ratio {rss[b] / rss[a]:.2f} for 4x the prompts)."]
    out = HERE / "results" / ("extract_gpu.md" if gpu else "extract.md")
    out.parent.mkdir(exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(json.dumps({k: round(v, 3) for k, v in t.items()}))


if __name__ == "__main__":
    main()
