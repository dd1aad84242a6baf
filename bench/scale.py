"""∇τ and its baselines against retraining where retraining costs minutes (issue 12, point 6).

Workloads, each trained once per seed with its recipe and cached under ``~/.cache/auditkit/bench-scale``
(``AUDITKIT_CACHE_DIR`` moves it):

- ``tensors-50k``: ``sklearn.datasets.make_classification(50_000, n_features=256, n_informative=64,
  n_classes=100, random_state=0)`` as a ``tensors`` file (the plugin's seeded 60/20/20 split: 29,998
  train, 10,000 validation, 10,002 test), the default ``mlp`` (one hidden layer of 256), the plugin's
  recipe with 40 epochs (batch 32, Adam, lr 1e-3);
- ``mnist1d-40k``: MNIST-1D with 40,000 generated samples as ``[1, 40]`` sequences (the plugin's
  40/20/40 split: 16,000 train), the ``cnn`` model (1-D convolutions 16 → 32 channels, 64 hidden), the
  plugin's recipe (30 epochs, batch 32, Adam, lr 1e-3).

For every seed × forget fraction (a seeded random subset of the training IDs) every method unlearns
the same original model, each cell in its own child process so its peak RSS (``ru_maxrss``) is its own;
the methods' order rotates from fraction to fraction, so no contender always runs first or last on the
shared machine. Each cell records the method's wall time, its ratio to the same seed and fraction's
retraining, the LR-on-loss MIA (forget vs test, the paper's attack, float64 losses) and the loss attack's
AUC beside retraining's, test accuracy, the child's peak RSS (data, torch and the method; ``rss_loaded``
is the peak before the method started) and the load average before and after.

Targets (issue 12): ∇τ with default options ≤ 0.1 × retraining's wall time at 1 % and 10 %, LR-MIA within
±0.03 of retraining, test accuracy within 1 point of retraining.

Usage: python bench/scale.py [--workloads tensors-50k,mnist1d-40k] [--fractions 1,10,30] [--seeds 0]
       [--methods nabla-tau,nabla-tau-official,finetune,neggrad-plus,retrain] [--threads 1]
       [--out bench/results/scale.json] [--merge]
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from _compare import fmt, summarise_against_retrain

ROOT = Path(__file__).resolve().parents[1]
WORKLOADS = ("tensors-50k", "mnist1d-40k")
FRACTIONS = (1, 10, 30)
#: Benchmark label → (method plugin, options).
METHODS = {
    "nabla-tau": ("nabla-tau", {}),
    "nabla-tau-official": ("nabla-tau", {"preset": "official"}),
    "finetune": ("finetune", {}),
    "neggrad-plus": ("neggrad-plus", {}),
    "retrain": ("retrain", {}),
}
TARGETS = {"time_ratio": 0.1, "mia_gap": 0.03, "acc_gap": 0.01}


def cache_dir() -> Path:
    base = os.environ.get("AUDITKIT_CACHE_DIR") or Path.home() / ".cache" / "auditkit"
    return Path(base) / "bench-scale"


def workload(name: str, *, seed: int):
    """``(data, build, recipe)`` of a workload; ``build()`` makes a fresh untrained model."""
    from auditkit.registry import Registry

    registry = Registry.default()
    if name == "tensors-50k":
        path = cache_dir() / "tensors-50k.pt"
        if not path.is_file():
            import torch
            from sklearn.datasets import make_classification

            features, labels = make_classification(50_000, n_features=256, n_informative=64, n_classes=100,
                                                   random_state=0)
            path.parent.mkdir(parents=True, exist_ok=True)
            torch.save({"X": torch.tensor(features, dtype=torch.float32), "y": torch.tensor(labels),
                        "ids": [f"s{i:05d}" for i in range(len(labels))]}, path)
        plugin, options, model, recipe_changes = "tensors", {"path": str(path), "split_seed": seed}, "mlp", {"epochs": 40}
    elif name == "mnist1d-40k":
        plugin, options = "mnist1d", {"num_samples": 40_000, "sequence": True, "split_seed": seed}
        model, recipe_changes = "cnn", {}
    else:
        raise SystemExit(f"unknown workload {name!r}; choose from {', '.join(WORKLOADS)}")
    dataset = registry.get("datasets", plugin)
    data = registry.create("datasets", plugin, **options).load()
    # The dataset's own model options for its default model (mlp: one hidden layer of 256), else the model's.
    model_plugin = registry.create("models", model, **(dataset.DEFAULT_MODEL_OPTIONS if model == dataset.DEFAULT_MODEL
                                                       else {}))
    recipe = dataclasses.replace(dataset.DEFAULT_RECIPE, **recipe_changes)

    def build():
        return model_plugin.build(input_shape=data.input_shape, num_classes=data.num_classes)

    return data, build, recipe


def forget_split(data, *, seed: int, fraction: int):
    """Sorted forget and retain positions: a seeded ``fraction`` % of the training split."""
    import numpy as np

    train = data.indices("train")
    order = np.random.default_rng([seed, fraction]).permutation(train)
    n_forget = max(1, int(round(fraction / 100 * len(train))))
    return np.sort(order[:n_forget]), np.sort(order[n_forget:])


def original_path(name: str, seed: int) -> Path:
    return cache_dir() / f"{name}-seed{seed}-original.pt"


def train_original(name: str, *, seed: int, threads: int) -> dict:
    """Train (once) and cache the workload's original model; returns how long training took."""
    import torch

    from auditkit.fsutil import atomic_write_bytes
    from auditkit.training import train_model

    torch.set_num_threads(threads)
    data, build, recipe = workload(name, seed=seed)
    torch.manual_seed(seed)
    started = time.perf_counter()
    model = train_model(build(), data.rows(data.indices("train")), recipe=recipe, seed=seed)
    seconds = time.perf_counter() - started
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    atomic_write_bytes(original_path(name, seed), buffer.getvalue())
    return {"seconds": seconds, "n_train": len(data.indices("train"))}


def measure(model, task) -> dict:
    """LR-loss MIA, loss-attack AUC (forget vs test) and accuracies, from float64 signals."""
    import numpy as np
    from sklearn.metrics import roc_auc_score

    from auditkit.audit.metrics import lr_mia_accuracies
    from auditkit.unlearning import split_signals

    signals = split_signals(model, task, splits=["forget", "test"])
    forget, test = signals.group("forget"), signals.group("test")
    members = np.concatenate([np.ones(len(forget)), np.zeros(len(test))])
    return {
        "mia_loss": float(lr_mia_accuracies(forget.loss, test.loss, seed=task.seed).mean()),
        "auc_loss": float(roc_auc_score(members, -np.concatenate([forget.loss, test.loss]))),
        "acc_test": float((test.logits.argmax(1) == test.labels).mean()),
        "acc_forget": float((forget.logits.argmax(1) == forget.labels).mean()),
        "forget_loss": float(forget.loss.mean()),
    }


def run_cell(name: str, *, seed: int, fraction: int, label: str, threads: int) -> dict:
    """One method on one workload, seed and fraction, in this (child) process."""
    import torch

    from auditkit.interfaces import UnlearningTask
    from auditkit.registry import Registry

    torch.set_num_threads(threads)
    data, build, recipe = workload(name, seed=seed)
    forget, retain = forget_split(data, seed=seed, fraction=fraction)
    model = build()
    model.load_state_dict(torch.load(original_path(name, seed), map_location="cpu", weights_only=True))

    def task_for(network):
        return UnlearningTask(model=network, build_model=build, recipe=recipe, data=data, forget=forget,
                              retain=retain, validation=data.indices("validation"), test=data.indices("test"),
                              seed=seed, backend="auto")

    row: dict = {"workload": name, "seed": seed, "fraction": fraction, "method": label,
                 "n_train": len(forget) + len(retain), "n_forget": len(forget)}
    if label == "original":
        return {**row, **measure(model, task_for(model)), "seconds": None}
    plugin, options = METHODS[label]
    method = Registry.default().create("methods", plugin, **options)
    rss_loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    started = time.perf_counter()
    outcome = method.unlearn(task_for(model))
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    unlearned = build()
    unlearned.load_state_dict(outcome.state_dict)
    settings = outcome.settings
    return {**row, **measure(unlearned, task_for(unlearned)), "seconds": seconds, "peak_rss_mib": peak,
            "rss_loaded_mib": rss_loaded, "backend": outcome.backend,
            "settings": {k: settings.get(k) for k in ("epochs", "alpha0", "batch_size", "forget_batches",
                                                      "alpha_rule", "epochs_rule", "gap", "history_mia")
                         if k in settings}}


def child(args: list[str], *, threads: int, timeout: float) -> dict:
    """Run ``bench/scale.py --child OUT …`` in a fresh process; its JSON row, with the load around it."""
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "row.json"
        before = os.getloadavg()
        started = time.perf_counter()
        subprocess.run([sys.executable, str(Path(__file__).resolve()), "--threads", str(threads),
                        "--child", str(out), *args], check=True, timeout=timeout)
        row = json.loads(out.read_text())
        row["process_seconds"] = time.perf_counter() - started
        row["loadavg_before"], row["loadavg_after"] = list(before), list(os.getloadavg())
        return row


def summarise(rows: list[dict]) -> list[dict]:
    """Per workload × fraction × method: means over seeds and the worst gap to the same seed's retraining."""
    summary = summarise_against_retrain(rows, group="workload", methods=METHODS,
                                        metrics=("mia_loss", "auc_loss", "acc_test", "seconds", "peak_rss_mib"),
                                        gaps={"mia_gap": "mia_loss", "auc_gap": "auc_loss", "acc_gap": "acc_test"},
                                        signed=("mia_gap", "acc_gap"))
    return summary


def print_table(summary: list[dict]) -> None:
    head = ("| workload | forget % | method | seeds | time s | time / retrain | LR-MIA | ΔMIA | loss AUC | ΔAUC "
            "| test acc | Δacc | peak RSS MiB | load 1 min |")
    print(head)
    print("|" + "---|" * head.count(" | ") + "---|")
    for e in summary:
        load = ", ".join(f"{x:.1f}" for x in e.get("loadavg_1min", [])) or "n/a"
        print(f"| {e['workload']} | {e['fraction']} | {e['method']} | {e['seeds']} | {fmt(e['seconds'], '.1f')} "
              f"| {fmt(e.get('time_ratio'), '.3f')} | {fmt(e['mia_loss'], '.3f')} "
              f"| {fmt(e.get('signed_mia_gap'), '+.3f')} | {fmt(e['auc_loss'], '.3f')} "
              f"| {fmt(e.get('auc_gap'), '.3f')} | {fmt(e['acc_test'], '.3f')} "
              f"| {fmt(e.get('signed_acc_gap'), '+.3f')} | {fmt(e['peak_rss_mib'], '.0f')} | {load} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workloads", default=",".join(WORKLOADS))
    parser.add_argument("--fractions", default=",".join(map(str, FRACTIONS)), help="forget percentages")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads in every child")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds one cell may take")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "scale.json"))
    parser.add_argument("--merge", action="store_true", help="keep the cells of --out that this run does not redo")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        out, kind, name, seed, *rest = args.child
        if kind == "train":
            result = train_original(name, seed=int(seed), threads=args.threads)
        else:
            result = run_cell(name, seed=int(seed), fraction=int(rest[0]), label=rest[1], threads=args.threads)
        Path(out).write_text(json.dumps(result))
        return 0

    workloads = [w for w in args.workloads.split(",") if w]
    fractions = [int(f) for f in args.fractions.split(",") if f]
    seeds = [int(s) for s in args.seeds.split(",") if s]
    methods = [m for m in args.methods.split(",") if m]
    unknown = sorted(set(methods) - set(METHODS)) + sorted(set(workloads) - set(WORKLOADS))
    if unknown:
        parser.error(f"unknown methods or workloads {unknown}")
    run = {"threads": args.threads, "timeout": args.timeout}
    started = time.perf_counter()
    rows: list[dict] = []
    trained: dict[str, dict] = {}
    for name in workloads:
        for seed in seeds:
            if not original_path(name, seed).is_file():
                trained[f"{name}/{seed}"] = child(["train", name, str(seed)], **run)
                print(f"trained {name} seed {seed} in {trained[f'{name}/{seed}']['seconds']:.0f} s", file=sys.stderr,
                      flush=True)
            for turn, fraction in enumerate(fractions):
                rows.append(child(["cell", name, str(seed), str(fraction), "original"], **run))
                order = methods[turn % len(methods):] + methods[:turn % len(methods)]
                for label in order:
                    row = child(["cell", name, str(seed), str(fraction), label], **run)
                    rows.append(row)
                    print(f"  {name} seed {seed} {fraction}% {label}: {row['seconds']:.1f} s, MIA "
                          f"{row['mia_loss']:.3f}, AUC {row['auc_loss']:.3f}, test acc {row['acc_test']:.3f}, "
                          f"peak RSS {row['peak_rss_mib']:.0f} MiB, load {row['loadavg_before'][0]:.2f}",
                          file=sys.stderr, flush=True)
    out = Path(args.out)
    commands: list[str] = []
    if args.merge and out.exists():
        previous = json.loads(out.read_text())

        def key(row: dict) -> tuple:
            return row["workload"], row["seed"], row["fraction"], row["method"]

        redone = {key(r) for r in rows}
        rows = [r for r in previous["cells"] if key(r) not in redone] + rows
        commands = previous.get("commands", [])
        trained = {**previous.get("original_training", {}), **trained}
    summary = summarise(rows)
    print_table(summary)
    import torch

    from auditkit.fsutil import atomic_write_text

    result = {
        "schema_version": 1,
        "benchmark": "scale",
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "commands": [*commands, " ".join(["python", "bench/scale.py", *(sys.argv[1:] if argv is None else argv)])],
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
                    "threads": args.threads, "cpus": os.cpu_count()},
        "seconds_this_run": time.perf_counter() - started,
        "loadavg_end": list(os.getloadavg()),
        "targets": TARGETS,
        "original_training": trained,
        "summary": summary,
        "cells": rows,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps(result, indent=2) + "\n")
    print(f"wrote {out} ({result['seconds_this_run']:.0f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
