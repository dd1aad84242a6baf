"""Benchmark of `--workers N`: wall time of whole CLI runs with 1 and 2 local worker processes.

Workloads, on the bundled digits data and the default digits model trained with its default recipe
(``auditkit train``), forgetting 20 training IDs:

- ``audit``: ``auditkit audit`` with the battery ``loss,lira-offline,rmia`` and ``--refs`` reference models
  (8 by default; RMIA uses the same ones). Each call gets an empty reference-model cache, so every call
  trains all of them: this is the work ``--workers`` splits across processes (model k on worker k mod N).
- ``u-lira``: ``auditkit audit`` with ``loss,u-lira`` and ``--shadows`` shadows (16 by default: 8 retrained,
  8 trained with the request and unlearned with ∇τ), in an empty cache: shadow k on worker k mod N.
- ``forget``: ``auditkit forget --no-audit`` with ∇τ's defaults: under N > 1 workers it runs data-parallel
  (DDP, gloo), each worker on its share of every batch.

Every call is a fresh process (it pays for importing torch, and with N > 1 for spawning N workers through
torch's elastic agent), as a user's command would. Contenders are interleaved round by round, their order
alternating, so both see the same stretch of machine load; ``os.getloadavg()`` is recorded before and
after every call. The result is the median wall time per contender and the ratio 1-worker / N-worker
(> 1: the workers pay off).

Usage: python bench/workers.py [--rounds 3] [--refs 8] [--shadows 16] [--workloads audit,u-lira,forget]
       [--workers 2] [--out bench/results/workers.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def prepare(folder: Path) -> None:
    """The default digits checkpoint and a request for 20 of its training IDs, in ``folder``."""
    import numpy as np

    subprocess.run([sys.executable, "-m", "auditkit", "-q", "train", "--out", "digits-mlp.pt"], cwd=folder,
                   check=True)
    from auditkit_plugins.datasets.sklearn_data import DigitsDataset

    data = DigitsDataset().load()
    ids = np.random.default_rng(0).choice(data.ids[data.indices("train")], size=20, replace=False)
    (folder / "request.csv").write_text("id\n" + "\n".join(sorted(ids)) + "\n", encoding="utf-8")


WORKLOADS = ("audit", "u-lira", "forget")


def command(workload: str, workers: int, *, refs: int, shadows: int, out: str) -> list[str]:
    common = [sys.executable, "-m", "auditkit", "-q", "--workers", str(workers)]
    if workload == "u-lira":
        return [*common, "audit", "--checkpoint", "digits-mlp.pt", "--original", "digits-mlp.pt",
                "--ids", "request.csv", "--attacks", "loss,u-lira", "--attack-option", f"u-lira.shadows={shadows}",
                "--method", "nabla-tau", "--out", out, "--trail", "trail.jsonl"]
    if workload == "audit":
        return [*common, "audit", "--checkpoint", "digits-mlp.pt", "--original", "digits-mlp.pt",
                "--ids", "request.csv", "--attacks", "loss,lira-offline,rmia",
                "--attack-option", f"lira-offline.references={refs}", "--attack-option", f"rmia.references={refs}",
                "--out", out, "--trail", "trail.jsonl"]
    return [*common, "forget", "--checkpoint", "digits-mlp.pt", "--ids", "request.csv", "--no-audit",
            "--out", out, "--trail", "trail.jsonl"]


def timed(folder: Path, argv: list[str], *, cache: Path | None) -> dict:
    """One call's wall time and load averages; ``cache``: emptied first and used as the reference-model
    cache (None: the default cache, where the fused op is already built)."""
    env = dict(os.environ)
    env.pop("AUDITKIT_WORKERS", None)
    if cache is not None:
        shutil.rmtree(cache, ignore_errors=True)
        env["AUDITKIT_CACHE_DIR"] = str(cache)
    load_before = os.getloadavg()
    started = time.perf_counter()
    done = subprocess.run(argv, cwd=folder, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode not in (0, 1, 4):
        raise SystemExit(f"{' '.join(argv)} exited {done.returncode}:\n{done.stderr}")
    return {"seconds": seconds, "exit_code": done.returncode, "load_before": load_before,
            "load_after": os.getloadavg()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--refs", type=int, default=8)
    parser.add_argument("--shadows", type=int, default=16)
    parser.add_argument("--workloads", default=",".join(WORKLOADS))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "workers.json")
    args = parser.parse_args()
    workloads = [w for w in args.workloads.split(",") if w]
    unknown = sorted(set(workloads) - set(WORKLOADS))
    if unknown:
        parser.error(f"unknown workload {unknown[0]!r}: choose from {', '.join(WORKLOADS)}")

    folder = Path(tempfile.mkdtemp(prefix="auditkit-bench-workers."))
    try:
        prepare(folder)
        counts = [1, args.workers]
        calls: list[dict] = []
        for round_ in range(args.rounds):
            for workload in workloads:
                for workers in counts if round_ % 2 == 0 else counts[::-1]:
                    out = f"runs/{workload}-{workers}-{round_}"
                    argv = command(workload, workers, refs=args.refs, shadows=args.shadows, out=out)
                    result = timed(folder, argv, cache=folder / "cache" if workload != "forget" else None)
                    calls.append({"round": round_, "workload": workload, "workers": workers, **result})
                    print(f"round {round_} {workload:6} --workers {workers}: {result['seconds']:6.2f} s "
                          f"(load {result['load_before'][0]:.2f} → {result['load_after'][0]:.2f})", flush=True)
    finally:
        shutil.rmtree(folder, ignore_errors=True)

    summary = {}
    print(f"\n{'workload':8} {'workers':>7} {'median s':>9} {'ratio 1/N':>9}")
    for workload in workloads:
        medians = {n: statistics.median(c["seconds"] for c in calls if c["workload"] == workload and c["workers"] == n)
                   for n in counts}
        ratio = medians[1] / medians[args.workers]
        summary[workload] = {"median_seconds": {str(n): m for n, m in medians.items()}, "ratio_1_over_n": ratio}
        for n in counts:
            print(f"{workload:8} {n:>7} {medians[n]:>9.2f} {ratio if n != 1 else 1.0:>9.2f}")
    loads = [c["load_before"][0] for c in calls] + [c["load_after"][0] for c in calls]
    result = {
        "benchmark": "workers", "date_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(), "platform": platform.platform(terse=True),
        "cpus": os.cpu_count(), "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "rounds": args.rounds, "reference_models": args.refs, "shadows": args.shadows, "workers": args.workers,
        "load_average_1min": {"min": min(loads), "max": max(loads), "mean": statistics.mean(loads)},
        "summary": summary, "calls": calls,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"\nload average (1 min) {min(loads):.2f}–{max(loads):.2f}; wrote {args.out}")


if __name__ == "__main__":
    main()
