"""Benchmark of the audit battery against the cost of looking at the audited rows once.

Workload (issue 10): ``sklearn.datasets.make_classification(50_000, n_features=256, n_informative=64,
n_classes=100, random_state=0)`` as a ``tensors`` file (the plugin's seeded 60/20/20 split: 29,998 train,
10,000 validation, 10,002 test), the default ``mlp`` (one hidden layer of 256) trained on the train split
with the plugin's recipe except for the epoch count (``--epochs``, 10 by default: the battery's cost does
not depend on how long the model trained), and 1 % of the training split forgotten (300 IDs). The
"unlearned" model is a copy of the original with its weights perturbed by 1 % Gaussian noise: the cost of
the battery depends on the architecture and the row counts, not on what the model learned.

Contenders, interleaved round by round on one thread (as the CLI runs by default):

- ``signals``: one forward pass plus the float64 signals over the audited rows (the forget set, the
  1,000-row retain sample, the test and validation splits: 21,301 rows) of one model;
- ``battery``: the default battery (``auditkit.audit.battery.run_audit``) on two models (original and
  unlearned), which includes computing both models' signals.

The target is ``battery ≤ 5 × signals``. With ``--baseline TREE`` (a checkout of another commit, e.g. the
base commit ``main`` exported with ``git archive main | tar -x -C TREE``) the same measurement runs
against that tree's code too, alternating between the trees call by call, so both ratios come from the
same stretch of machine load (``git rev-parse main > TREE/COMMIT`` records which commit it was). Load averages (``os.getloadavg()``) are recorded before and after every call.

Usage: python bench/audit.py [--rounds 5] [--calls 3] [--epochs 10] [--baseline TREE]
       [--out bench/results/audit.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FORGET_FRACTION = 0.01


def workload_dir() -> Path:
    base = os.environ.get("AUDITKIT_CACHE_DIR") or Path.home() / ".cache" / "auditkit"
    return Path(base) / "bench-audit"


def prepare(epochs: int) -> Path:
    """Write (once) the tensors file, the trained original model's state dict and the forget IDs."""
    import numpy as np
    import torch
    from sklearn.datasets import make_classification

    from auditkit.registry import Registry
    from auditkit.training import train_model

    folder = workload_dir() / f"epochs-{epochs}"
    if (folder / "original.pt").is_file():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    features, labels = make_classification(50_000, n_features=256, n_informative=64, n_classes=100, random_state=0)
    torch.save({"X": torch.tensor(features, dtype=torch.float32), "y": torch.tensor(labels),
                "ids": [f"s{i:05d}" for i in range(len(labels))]}, folder / "data.pt")
    registry = Registry.default()
    plugin = registry.get("datasets", "tensors")
    data = registry.create("datasets", "tensors", path=str(folder / "data.pt")).load()
    train = data.indices("train")
    torch.manual_seed(0)
    torch.set_num_threads(1)
    model = registry.create("models", plugin.DEFAULT_MODEL, **plugin.DEFAULT_MODEL_OPTIONS).build(
        input_shape=data.input_shape, num_classes=data.num_classes)
    recipe = dataclasses.replace(plugin.DEFAULT_RECIPE, epochs=epochs)
    started = time.perf_counter()
    train_model(model, *data.subset(train), recipe=recipe, seed=0)
    print(f"trained the original model for {epochs} epochs in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    forget = np.sort(np.random.default_rng(0).choice(train, int(round(FORGET_FRACTION * len(train))), replace=False))
    (folder / "forget.json").write_text(json.dumps(data.ids[forget].tolist()))
    torch.save(model.state_dict(), folder / "original.pt")
    return folder


def worker(folder: Path, rounds: int) -> dict:
    """Time both contenders ``rounds`` times, interleaved, with whichever auditkit is first on sys.path."""
    import copy

    import numpy as np
    import torch

    import auditkit
    from auditkit.audit.battery import DEFAULT_ATTACKS, run_audit
    from auditkit.audit.policy import Policy
    from auditkit.audit.signals import compute_signals
    from auditkit.registry import Registry

    torch.set_num_threads(1)
    registry = Registry.default()
    plugin = registry.get("datasets", "tensors")
    data = registry.create("datasets", "tensors", path=str(folder / "data.pt")).load()
    original = registry.create("models", plugin.DEFAULT_MODEL, **plugin.DEFAULT_MODEL_OPTIONS).build(
        input_shape=data.input_shape, num_classes=data.num_classes)
    original.load_state_dict(torch.load(folder / "original.pt", weights_only=True))
    original.eval()
    unlearned = copy.deepcopy(original)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for parameter in unlearned.parameters():
            parameter.mul_(1 + 0.01 * torch.randn(parameter.shape, generator=generator))
    forget = data.positions(json.loads((folder / "forget.json").read_text()))
    train = data.indices("train")
    retain = np.setdiff1d(train, forget)
    validation, test = data.indices("validation"), data.indices("test")
    policy = Policy()
    sample = np.sort(np.random.default_rng(0).choice(retain, policy.retain_sample_size, replace=False))
    positions = np.concatenate([forget, sample, test, validation])
    groups = np.repeat(["forget", "retain", "test", "validation"], [len(forget), len(sample), len(test), len(validation)])
    attacks = [registry.create("attacks", name) for name in DEFAULT_ATTACKS]

    def signals() -> None:
        compute_signals(original, data, positions, groups, model_name="original", backend="auto")

    def battery() -> None:
        run_audit(data=data, forget=forget, retain=retain, validation=validation, test=test,
                  models={"original": original, "unlearned": unlearned}, attacks=attacks, policy=policy, seed=0,
                  backend="auto")

    signals()  # warm-up: the op library, allocator, scikit-learn's caches
    battery()
    times: dict[str, list[float]] = {"signals": [], "battery": []}
    loads = [os.getloadavg()]
    for _ in range(rounds):
        for name, run in (("signals", signals), ("battery", battery)):
            started = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - started)
        loads.append(os.getloadavg())
    return {"auditkit": str(Path(auditkit.__file__).resolve().parent.parent), "rows": len(positions),
            "forget": len(forget), "times": times, "loadavg": loads}


def _run_worker(tree: Path, folder: Path, rounds: int) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tree), str(tree / "plugins")])}
    done = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--worker", str(folder), "--rounds",
                           str(rounds)], env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"worker for {tree} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _git_commit(tree: Path) -> str | None:
    """The tree's commit: ``git rev-parse HEAD``, or the ``COMMIT`` file an exported tree carries."""
    done = subprocess.run(["git", "-C", str(tree), "rev-parse", "HEAD"], capture_output=True, text=True, check=False)
    if done.returncode == 0 and (tree / ".git").exists():
        return done.stdout.strip()
    marker = tree / "COMMIT"
    return marker.read_text().strip() if marker.is_file() else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5, help="measurements of each contender per worker call")
    parser.add_argument("--calls", type=int, default=3, help="worker calls per tree, alternating between trees")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--baseline", type=Path, default=None, help="another checkout to measure the same way")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "audit.json")
    parser.add_argument("--worker", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker is not None:
        print(json.dumps(worker(args.worker, args.rounds)))
        return

    folder = prepare(args.epochs)
    trees = {"after": ROOT} if args.baseline is None else {"before": args.baseline.resolve(), "after": ROOT}
    calls: dict[str, list[dict]] = {label: [] for label in trees}
    started = time.perf_counter()
    for _ in range(args.calls):
        for label, tree in trees.items():
            calls[label].append(_run_worker(tree, folder, args.rounds))
    summary = {}
    for label, results in calls.items():
        signals = [t for r in results for t in r["times"]["signals"]]
        battery = [t for r in results for t in r["times"]["battery"]]
        ratios = [b / s for r in results for s, b in zip(r["times"]["signals"], r["times"]["battery"])]
        summary[label] = {"signals_ms": 1000 * statistics.median(signals), "battery_ms": 1000 * statistics.median(battery),
                          "ratio_median": statistics.median(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios),
                          "measurements": len(ratios), "rows": results[0]["rows"], "forget": results[0]["forget"],
                          "tree": str(trees[label]), "commit": _git_commit(trees[label])}
    print(f"\n{'code':<7} | {'signals (ms)':>12} | {'battery (ms)':>12} | {'battery / signals':>17} | range")
    print(f"{'-' * 7} | {'-' * 12} | {'-' * 12} | {'-' * 17} | {'-' * 13}")
    for label, row in summary.items():
        print(f"{label:<7} | {row['signals_ms']:12.0f} | {row['battery_ms']:12.0f} | {row['ratio_median']:17.2f} | "
              f"{row['ratio_min']:.2f}–{row['ratio_max']:.2f}")
    print("target: battery / signals ≤ 5")
    loads = [load for results in calls.values() for r in results for load in r["loadavg"]]
    payload = {
        "schema_version": 1,
        "benchmark": "audit battery vs one forward pass + float64 signals (issue 10)",
        "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count()},
        "workload": {"make_classification": {"n_samples": 50_000, "n_features": 256, "n_informative": 64,
                                             "n_classes": 100, "random_state": 0},
                     "model": "mlp (default widths)", "train_epochs": args.epochs, "forget_fraction": FORGET_FRACTION,
                     "threads": 1},
        "target": "battery on two models <= 5 x (one forward pass + float64 signals over the audited rows)",
        "seconds_this_run": time.perf_counter() - started,
        "loadavg_min_max": [min(load[0] for load in loads), max(load[0] for load in loads)],
        "summary": summary,
        "calls": calls,
    }
    from auditkit.fsutil import atomic_write_text

    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(payload, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
