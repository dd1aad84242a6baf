"""u-lira against models whose answer is known, through the CLI, with the population battery beside it.

For each dataset: ``auditkit train`` (the dataset plugin's default model and recipe, seed 0) trains the
original model; a seeded random ``--ids`` of its training IDs is the deletion request. Then, for each
number of shadows K, in a fresh shadow cache (so each K pays for its own shadows; within one K the
never-seen shadows and the with-forget trainings are shared by the rows, only the unlearning runs differ):

- ``original``: ``auditkit audit`` of the untouched original (u-lira's shadows unlearned with ∇τ): it still
  holds the samples, so a per-example attack should flag IDs;
- ``nabla-tau`` and ``finetune``: ``auditkit forget --method M`` (the shadows unlearned with M itself);
- ``retrain``: a model retrained without the request (``forget --method retrain --no-audit``), audited as
  if it were ∇τ's output (``audit --method nabla-tau``): it never saw the IDs, so a flag is a false one.

Every audit runs the default battery plus u-lira. Per row: the share of IDs u-lira flags, its held-out
balanced accuracy, the audit outcome, the loss and lr-loss verdicts (the population attacks' view of the
same run), and the command's wall time (shadow training included in the first row of each K). With
``--one-id``, a 1-ID request (the first ID of the request) is also forgotten with ∇τ and audited for the
original, at the smallest K. ``--workers N`` is passed to each forget/audit command.

Prints a Markdown table and writes bench/results/ulira.json (with the load average before and after).

Usage: python bench/ulira.py [--datasets mnist1d,digits] [--shadows 8,16,32] [--ids 20] [--one-id]
       [--workers N] [--out bench/results/ulira.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from auditkit.audit.battery import DEFAULT_ATTACKS
from auditkit.fsutil import atomic_write_text

ROWS = ("original", "nabla-tau", "finetune", "retrain")
POPULATION = ("loss", "lr-loss")


def _auditkit(*args: str, env: dict[str, str]) -> tuple[dict, float]:
    """Run one auditkit command; its --json summary (or {} without one) and its wall time."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "auditkit", *args], capture_output=True, text=True, env=env)
    elapsed = time.perf_counter() - started
    if done.returncode not in (0, 1, 4):
        raise SystemExit(f"auditkit {' '.join(args)} exited {done.returncode}:\n{done.stderr}")
    return (json.loads(done.stdout) if done.stdout.strip().startswith("{") else {}), elapsed


def _row(summary: dict, *, dataset: str, shadows: int, model: str, ids: int, wall: float) -> dict:
    record = json.loads(Path(summary["record"]).read_text())
    audit = record["audit"]
    ulira = next(a for a in audit["attacks"]
                 if (a["attack"], a["model"], a["population"]) == ("u-lira", "unlearned", "forget"))
    verdicts = {v["attack"]: v for v in audit["verdicts"]}
    parameters = ulira["parameters"]
    return {
        "dataset": dataset, "shadows": shadows, "model": model, "ids": ids,
        "flagged": parameters["flagged"], "flagged_share": ulira["headline_value"],
        "flagged_ci": ulira["headline_ci"], "bh_rate": parameters["bh_rate"],
        "balanced_accuracy": parameters["held_out_balanced_accuracy"],
        "smallest_p": min(row["p_value"] for row in ulira["per_example"]),
        "outcome": audit["outcome"], "u_lira_verdict": verdicts["u-lira"]["status"],
        "population": {name: {"status": verdicts[name]["status"], "value": verdicts[name]["value"]}
                       for name in POPULATION if name in verdicts},
        "population_outcome_without_u_lira": _without(audit, "u-lira"),
        "wall_s": round(wall, 2),
    }


def _without(audit: dict, attack: str) -> str:
    """What the outcome would have been from the other checks alone (their verdicts and power rows)."""
    from auditkit.audit.policy import Policy
    from auditkit.audit.results import PowerRow, Verdict

    policy = Policy.from_dict(audit["policy"])
    verdicts = [Verdict(**v) for v in audit["verdicts"] if v["attack"] != attack]
    power = [PowerRow(**p) for p in audit["power"] if p["attack"] != attack]
    losses = audit["losses"]["unlearned"]
    outcome, _, _ = policy.decide(verdicts, power, n_forget=len(losses["forget"]), n_test=len(losses["test"]),
                                  level=audit["verdict_level"])
    return outcome


def run_dataset(dataset: str, shadows: list[int], *, ids: int, one_id: bool, workers: int | None,
                work: Path) -> list[dict]:
    env = {**os.environ}
    folder = work / dataset
    folder.mkdir()
    original = folder / "original.pt"
    _auditkit("train", "--dataset", dataset, "--out", str(original), env=env)
    listing = subprocess.run([sys.executable, "-m", "auditkit", "ids", "--checkpoint", str(original), "--split",
                              "train"], capture_output=True, text=True, check=True, env=env).stdout.splitlines()[1:]
    train_ids = [line.split(",")[0] for line in listing]
    chosen = sorted(np.random.default_rng(0).choice(train_ids, size=ids, replace=False).tolist())
    request = folder / "request.csv"
    request.write_text("id\n" + "".join(f"{i}\n" for i in chosen))
    retrained, _ = _auditkit("forget", "--ids", str(request), "--checkpoint", str(original), "--method", "retrain",
                             "--no-audit", "--out", str(folder / "retrained"), "--json", env=env)
    extra = ["--workers", str(workers)] if workers else []
    attacks = ",".join([*DEFAULT_ATTACKS, "u-lira"])
    rows = []
    for k in shadows:
        env = {**os.environ, "AUDITKIT_CACHE_DIR": str(folder / f"cache-{k}")}
        common = ["--ids", str(request), "--attacks", attacks, "--attack-option", f"u-lira.shadows={k}", "--json",
                  *extra]
        for model in ROWS:
            out = str(folder / f"{model}-{k}")
            if model == "original":
                args = ["audit", "--checkpoint", str(original), "--original", str(original), "--method", "nabla-tau"]
            elif model == "retrain":
                args = ["audit", "--checkpoint", retrained["model"], "--original", str(original),
                        "--method", "nabla-tau"]
            else:
                args = ["forget", "--checkpoint", str(original), "--method", model]
            summary, wall = _auditkit(*args, *common, "--out", out, env=env)
            rows.append(_row(summary, dataset=dataset, shadows=k, model=model, ids=ids, wall=wall))
            print(_line(rows[-1]), file=sys.stderr, flush=True)
    if one_id:
        k = min(shadows)
        env = {**os.environ, "AUDITKIT_CACHE_DIR": str(folder / "cache-one")}
        single = folder / "one.csv"
        single.write_text(f"id\n{chosen[0]}\n")
        common = ["--ids", str(single), "--attacks", attacks, "--attack-option", f"u-lira.shadows={k}", "--json",
                  *extra]
        for model, args in (("original", ["audit", "--checkpoint", str(original), "--original", str(original),
                                          "--method", "nabla-tau"]),
                            ("nabla-tau", ["forget", "--checkpoint", str(original), "--method", "nabla-tau"])):
            summary, wall = _auditkit(*args, *common, "--out", str(folder / f"one-{model}"), env=env)
            rows.append(_row(summary, dataset=dataset, shadows=k, model=model, ids=1, wall=wall))
            print(_line(rows[-1]), file=sys.stderr, flush=True)
    return rows


def _line(row: dict) -> str:
    population = ", ".join(f"{name} {v['status']}" for name, v in row["population"].items())
    accuracy = "–" if row["balanced_accuracy"] is None else f"{row['balanced_accuracy']:.3f}"
    return (f"| {row['dataset']} | {row['ids']} | {row['shadows']} | {row['model']} | {row['flagged']}/{row['ids']} "
            f"({row['flagged_share']:.2f}) | {row['smallest_p']:.2g} | {accuracy} | {row['outcome']} | "
            f"{row['population_outcome_without_u_lira']} | {population} | {row['wall_s']:.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="mnist1d,digits")
    parser.add_argument("--shadows", default="8,16,32")
    parser.add_argument("--ids", type=int, default=20)
    parser.add_argument("--one-id", action="store_true")
    parser.add_argument("--workers", type=int, default=None, help="passed to each forget/audit command")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "ulira.json")
    args = parser.parse_args()
    shadows = [int(k) for k in args.shadows.split(",")]
    load_before = os.getloadavg()
    started = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory(prefix="auditkit-ulira-") as work:
        for dataset in args.datasets.split(","):
            rows += run_dataset(dataset, shadows, ids=args.ids, one_id=args.one_id, workers=args.workers,
                                work=Path(work))
    header = ("| dataset | IDs | shadows | model | u-lira flagged | smallest p | held-out bal. acc. | outcome | "
              "outcome without u-lira | population verdicts | wall s |")
    print(header)
    print("|---" * (header.count("|") - 1) + "|")
    for row in rows:
        print(_line(row))
    result = {
        "benchmark": "ulira", "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]), "workers": args.workers or 1,
        "load_average_before": load_before, "load_average_after": os.getloadavg(),
        "cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
        "total_wall_s": round(time.perf_counter() - started, 1), "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
