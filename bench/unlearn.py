"""Benchmark of ∇τ and its baselines against retraining: membership leakage, accuracy, time, memory.

For every dataset × split seed the dataset plugin's default model and recipe train an original model
once; then for every forget fraction (a seeded random subset of the training IDs) every method
unlearns a private copy with its default options. Each cell reports, for the resulting model: the
paper's LR membership attack on the loss and on the entropy (forget vs test, 0.5 = chance), the AUC of
the loss attack (lower loss = member), accuracy on retain / forget / test, wall time and the process's
peak RSS during the cell (Linux VmHWM, reset before each cell; it includes the ~0.3-0.5 GiB of the
interpreter and torch). The original model's row is the "original" method.

Targets for ∇τ (issue 4, default settings): |MIA − retrain MIA| ≤ 0.03, |test acc − retrain test acc|
≤ 1 point, wall time ≤ 0.2 × retrain's. Cells whose forget set has fewer than 10 samples have no MIA.

Usage: python bench/unlearn.py [--datasets digits,mnist1d,bbc-news,breast-cancer] [--fractions 3,15,30]
       [--seeds 0,1,2] [--methods nabla-tau,nabla-tau-ps,finetune,neggrad-plus,retrain]
       [--backend auto] [--threads 2] [--out bench/results/unlearn.json] [--merge]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from _compare import fmt, summarise_against_retrain
from auditkit.audit.metrics import lr_mia_accuracies
from auditkit.fsutil import atomic_write_text
from auditkit.interfaces import UnlearningMethod, UnlearningTask
from auditkit.registry import Registry
from auditkit.training import train_model
from auditkit.unlearning import split_signals

DATASETS = ("digits", "mnist1d", "bbc-news", "breast-cancer")
FRACTIONS = (3, 15, 30)
#: Benchmark label → (method plugin, options). "nabla-tau" is ∇τ's default (adaptive) preset,
#: "nabla-tau-official" the official code's configuration, "nabla-tau-ps" the default with the per-sample ReLU.
METHODS = {
    "nabla-tau": ("nabla-tau", {}),
    "nabla-tau-official": ("nabla-tau", {"preset": "official"}),
    "nabla-tau-ps": ("nabla-tau", {"per_sample": True}),
    "finetune": ("finetune", {}),
    "neggrad-plus": ("neggrad-plus", {}),
    "retrain": ("retrain", {}),
}
MIN_MIA_SAMPLES = 10


def reset_peak_rss() -> None:
    """Reset the kernel's peak-RSS counter of this process (Linux ≥ 4.0; a no-op elsewhere)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def peak_rss_mib() -> float:
    """Peak RSS since the last reset (VmHWM), in MiB; NaN where /proc is unavailable."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def measure(model: torch.nn.Module, task: UnlearningTask) -> dict[str, float]:
    """Leakage and utility of ``model`` on the task's splits (float64 signals, as the audit sees them)."""
    signals = split_signals(model, task, splits=["forget", "retain", "test"])
    forget, retain, test = (signals.group(name) for name in ("forget", "retain", "test"))
    row: dict[str, float | None] = {
        f"acc_{name}": float((table.logits.argmax(1) == table.labels).mean())
        for name, table in (("retain", retain), ("forget", forget), ("test", test))
    }
    if min(len(forget), len(test)) >= MIN_MIA_SAMPLES:
        row["mia_loss"] = float(lr_mia_accuracies(forget.loss, test.loss, seed=task.seed).mean())
        row["mia_entropy"] = float(lr_mia_accuracies(forget.entropy, test.entropy, seed=task.seed).mean())
        members = np.concatenate([np.ones(len(forget)), np.zeros(len(test))])
        row["auc_loss"] = float(roc_auc_score(members, -np.concatenate([forget.loss, test.loss])))
    else:
        row.update(mia_loss=None, mia_entropy=None, auc_loss=None)
    return row


def run_dataset(registry: Registry, name: str, *, seed: int, fractions, methods, backend: str, log) -> list[dict]:
    """All cells of one dataset and split seed: the original model once, then every fraction × method."""
    dataset = registry.get("datasets", name)
    data = registry.create("datasets", name, split_seed=seed).load()
    model_plugin = registry.create("models", dataset.DEFAULT_MODEL, **dataset.DEFAULT_MODEL_OPTIONS)
    recipe = dataset.DEFAULT_RECIPE

    def build() -> torch.nn.Module:
        return model_plugin.build(input_shape=data.input_shape, num_classes=data.num_classes)

    train = data.indices("train")
    torch.manual_seed(seed)
    started = time.perf_counter()
    original = train_model(build(), *data.subset(train), recipe=recipe, seed=seed)
    train_seconds = time.perf_counter() - started
    rows = []
    for fraction in fractions:
        order = np.random.default_rng([seed, fraction]).permutation(train)
        n_forget = max(1, int(round(fraction / 100 * len(train))))
        forget, retain = np.sort(order[:n_forget]), np.sort(order[n_forget:])

        def task_for(model: torch.nn.Module) -> UnlearningTask:
            return UnlearningTask(model=model, build_model=build, recipe=recipe, data=data, forget=forget,
                                  retain=retain, validation=data.indices("validation"), test=data.indices("test"),
                                  seed=seed, backend=backend)

        base = {"dataset": name, "seed": seed, "fraction": fraction, "n_train": len(train), "n_forget": n_forget}
        rows.append({**base, "method": "original", **measure(original, task_for(original)),
                     "seconds": train_seconds, "peak_rss_mib": None, "epochs": recipe.epochs, "backend": "pytorch"})
        for label in methods:
            plugin_name, options = METHODS[label]
            method: UnlearningMethod = registry.create("methods", plugin_name, **options)
            task = task_for(copy.deepcopy(original))
            reset_peak_rss()
            load = os.getloadavg()[0]
            started = time.perf_counter()
            outcome = method.unlearn(task)
            seconds = time.perf_counter() - started
            rss = peak_rss_mib()
            unlearned = build()
            unlearned.load_state_dict(outcome.state_dict)
            rows.append({**base, "method": label, **measure(unlearned, task_for(unlearned)), "seconds": seconds,
                         "peak_rss_mib": rss, "epochs": outcome.settings["epochs"],
                         "batch_size": outcome.settings.get("batch_size"), "backend": outcome.backend,
                         "loadavg_1min": load})
            log(rows[-1])
    return rows


def summarise(rows: list[dict]) -> list[dict]:
    """Mean over seeds per dataset × fraction × method, plus ∇τ's distance to retraining per cell."""
    summary = summarise_against_retrain(
        rows, group="dataset", methods=METHODS,
        metrics=("mia_loss", "mia_entropy", "auc_loss", "acc_retain", "acc_forget", "acc_test", "seconds",
                 "peak_rss_mib"),
        gaps={"mia_gap": "mia_loss", "acc_gap": "acc_test"})
    return summary


def print_table(summary: list[dict]) -> None:
    """A Markdown table; gap and ratio columns are the worst over seeds, vs the same seed's retrain."""
    head = ("| dataset | forget % | method | seeds | MIA loss | MIA entropy | AUC loss | acc retain | acc forget "
            "| acc test | time s | peak RSS MiB | max abs ΔMIA vs retrain | max abs Δacc test | max time / retrain |")
    print(head)
    print("|" + "---|" * head.count(" | ") + "---|")
    for e in summary:
        print(f"| {e['dataset']} | {e['fraction']} | {e['method']} | {e['seeds']} | {fmt(e['mia_loss'], '.3f')} "
              f"| {fmt(e['mia_entropy'], '.3f')} | {fmt(e['auc_loss'], '.3f')} | {fmt(e['acc_retain'], '.3f')} "
              f"| {fmt(e['acc_forget'], '.3f')} | {fmt(e['acc_test'], '.3f')} | {fmt(e['seconds'], '.2f')} "
              f"| {fmt(e['peak_rss_mib'], '.0f')} | {fmt(e.get('mia_gap'), '.3f')} "
              f"| {fmt(e.get('acc_gap'), '.3f')} | {fmt(e.get('time_ratio'), '.2f')} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--fractions", default=",".join(map(str, FRACTIONS)), help="forget percentages")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--backend", default="auto", help="op backend: auto (the fused op), cpu, cuda or reference")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0 = torch's default)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "unlearn.json"))
    parser.add_argument("--merge", action="store_true",
                        help="keep the cells of --out that this run does not redo (to build the table in parts)")
    args = parser.parse_args(argv)
    datasets = [d for d in args.datasets.split(",") if d]
    fractions = [int(f) for f in args.fractions.split(",") if f]
    seeds = [int(s) for s in args.seeds.split(",") if s]
    methods = [m for m in args.methods.split(",") if m]
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        parser.error(f"unknown methods {unknown}; choose from {', '.join(METHODS)}")
    if args.threads:
        torch.set_num_threads(args.threads)

    def log(row: dict) -> None:
        print(f"  {row['dataset']} seed {row['seed']} {row['fraction']}% {row['method']}: "
              f"MIA {fmt(row['mia_loss'], '.3f')} test acc {row['acc_test']:.3f} {row['seconds']:.1f}s",
              file=sys.stderr, flush=True)

    registry = Registry.default()
    started = time.perf_counter()
    rows = []
    for name in datasets:
        for seed in seeds:
            rows += run_dataset(registry, name, seed=seed, fractions=fractions, methods=methods,
                                backend=args.backend, log=log)
    out = Path(args.out)
    commands = []
    if args.merge and out.exists():
        previous = json.loads(out.read_text())
        def key(row: dict) -> tuple:
            return row["dataset"], row["seed"], row["fraction"], row["method"]

        redone = {key(r) for r in rows}
        rows = [r for r in previous["cells"] if key(r) not in redone] + rows
        commands = previous.get("commands", [])
    summary = summarise(rows)
    print_table(summary)
    result = {
        "schema_version": 1,
        "benchmark": "unlearn",
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "commands": [*commands, " ".join(["python", "bench/unlearn.py", *(sys.argv[1:] if argv is None else argv)])],
        "machine": {"platform": platform.platform(), "python": platform.python_version(),
                    "torch": torch.__version__, "threads": torch.get_num_threads()},
        "seconds_this_run": time.perf_counter() - started,
        "loadavg_end": list(os.getloadavg()),
        "targets": {"mia_gap": 0.03, "acc_gap": 0.01, "time_ratio": 0.2},
        "summary": summary,
        "cells": rows,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps(result, indent=2) + "\n")
    print(f"wrote {out} ({result['seconds_this_run']:.0f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
