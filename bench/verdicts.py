"""How often the audit reaches each outcome on models whose answer is known.

For every dataset × seed: the dataset plugin's default model and recipe train an original model on the
split seeded by ``seed``; a seeded ``--fraction`` of the training IDs is the deletion request; a model is
retrained from scratch on the rest (the same recipe, the gold standard). Two audits with the default
battery and policy (``auditkit.audit.battery.run_audit``):

- ``original``: the untouched original model audited as if it were the unlearned one. It still holds the
  samples, so the right answers are ``failed`` or, when the battery cannot see its leak, ``inconclusive``;
  ``passed`` would be a false pass.
- ``retrained``: the retrained model as the unlearned one. It never saw the samples, so the right
  answers are ``passed`` or ``inconclusive``; ``failed`` is a false failure (the policy allows ~5 %).

Prints a Markdown table of outcome counts and writes every audit's outcome, reason and power to JSON.

Usage: python bench/verdicts.py [--datasets digits,breast-cancer,mnist1d] [--seeds 0-9] [--fraction 15]
       [--threads 1] [--out bench/results/verdicts.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from auditkit.audit.battery import DEFAULT_ATTACKS, run_audit
from auditkit.audit.policy import Policy
from auditkit.fsutil import atomic_write_text
from auditkit.registry import Registry
from auditkit.training import train_model

DATASETS = ("digits", "breast-cancer", "mnist1d")
OUTCOMES = ("passed", "failed", "inconclusive")


def _seeds(text: str) -> list[int]:
    if "-" in text:
        low, high = text.split("-")
        return list(range(int(low), int(high) + 1))
    return [int(s) for s in text.split(",") if s]


def run_cell(registry: Registry, name: str, seed: int, fraction: float) -> list[dict]:
    dataset = registry.get("datasets", name)
    data = registry.create("datasets", name, split_seed=seed).load()
    model_plugin = registry.create("models", dataset.DEFAULT_MODEL, **dataset.DEFAULT_MODEL_OPTIONS)

    def train(positions: np.ndarray, model_seed: int) -> torch.nn.Module:
        torch.manual_seed(model_seed)
        model = model_plugin.build(input_shape=data.input_shape, num_classes=data.num_classes)
        return train_model(model, *data.subset(positions), recipe=dataset.DEFAULT_RECIPE, seed=model_seed).eval()

    train_rows = data.indices("train")
    order = np.random.default_rng([seed, int(fraction * 100)]).permutation(train_rows)
    n_forget = max(1, int(round(fraction / 100 * len(train_rows))))
    forget, retain = np.sort(order[:n_forget]), np.sort(order[n_forget:])
    original = train(train_rows, seed)
    retrained = train(retain, seed + 1000)
    rows = []
    for audited, model in (("original", original), ("retrained", retrained)):
        started = time.perf_counter()
        result = run_audit(data=data, forget=forget, retain=retain, validation=data.indices("validation"),
                           test=data.indices("test"), models={"original": original, "unlearned": model},
                           attacks=[registry.create("attacks", a) for a in DEFAULT_ATTACKS], policy=Policy(),
                           seed=seed)
        loss = next(p for p in result.power if p.attack == "loss")
        unlearned_loss = next(r for r in result.attacks if (r.attack, r.model, r.population) == ("loss", "unlearned",
                                                                                                  "forget"))
        rows.append({
            "dataset": name, "seed": seed, "audited": audited, "n_forget": int(n_forget),
            "n_test": int(len(data.indices("test"))), "outcome": result.outcome, "reason": result.outcome_reason,
            "hint": result.conclusive_hint, "not_passing": [v.attack for v in result.verdicts if v.status != "pass"],
            "mde_auc": loss.minimum_detectable, "original_loss_auc": loss.original_value,
            "original_loss_auc_ci": loss.original_ci, "audited_loss_auc": unlearned_loss.headline_value,
            "conclusive_attacks": [p.attack for p in result.power if p.conclusive],
            "audit_seconds": time.perf_counter() - started,
        })
        print(f"{name} seed {seed} {audited}: {result.outcome} ({result.outcome_reason[:120]})", file=sys.stderr)
    return rows


def print_table(rows: list[dict]) -> None:
    print("| dataset | forgotten / test | audited model | passed | failed | inconclusive | original loss AUC "
          "(mean) | minimum detectable AUC |")
    print("|---|---|---|---:|---:|---:|---:|---:|")
    for name in dict.fromkeys(r["dataset"] for r in rows):
        for audited in ("original", "retrained"):
            cell = [r for r in rows if (r["dataset"], r["audited"]) == (name, audited)]
            if not cell:
                continue
            counts = Counter(r["outcome"] for r in cell)
            print(f"| {name} | {cell[0]['n_forget']} / {cell[0]['n_test']} | {audited} | "
                  + " | ".join(str(counts.get(o, 0)) for o in OUTCOMES)
                  + f" | {np.mean([r['original_loss_auc'] for r in cell]):.3f} | {cell[0]['mde_auc']:.3f} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--seeds", default="0-9")
    parser.add_argument("--fraction", type=float, default=15.0, help="forgotten share of the training split, in %%")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "verdicts.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    registry = Registry.default()
    started = time.perf_counter()
    loads = [os.getloadavg()]
    rows = []
    for name in [d for d in args.datasets.split(",") if d]:
        for seed in _seeds(args.seeds):
            rows += run_cell(registry, name, seed, args.fraction)
            loads.append(os.getloadavg())
    print_table(rows)
    payload = {
        "schema_version": 1, "benchmark": "audit outcomes on the original and a retrained model (issue 10)",
        "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count(),
                    "threads": args.threads},
        "policy": Policy().to_dict(), "fraction_percent": args.fraction, "seconds_this_run": time.perf_counter() - started,
        "loadavg": loads, "rows": rows,
    }
    atomic_write_text(args.out, json.dumps(payload, indent=2) + "\n")
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
