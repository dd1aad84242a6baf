"""Start-up cost of the CLI: wall time of commands that do little work, this tree against another.

Each command runs as a fresh ``python -m auditkit …`` process, the two trees interleaved round by
round (``--before DIR`` is a checkout of an earlier version, e.g. ``git archive main | tar -x -C DIR``;
its ``auditkit`` and ``auditkit_plugins`` are put first on ``PYTHONPATH``). Reported: the median wall
time per command and tree, their ratio, the load average before and after, and the ten largest
cumulative ``-X importtime`` entries of ``train --help`` and of ``train`` for this tree.

Usage: python bench/startup.py [--before DIR] [--rounds 5] [--out bench/results/startup.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

COMMANDS = {
    "--help": ["--help"],
    "forget --help": ["forget", "--help"],
    "verify (empty trail)": ["verify", "trail.jsonl"],
    "plugins list": ["plugins", "list"],
    "train --epochs 1 (digits)": ["-q", "train", "--epochs", "1", "--out", "model.pt", "--force"],
}


def _env(tree: Path | None) -> dict[str, str]:
    env = {**os.environ, "AUDITKIT_CACHE_DIR": str(Path(tempfile.gettempdir()) / "auditkit-startup-cache")}
    if tree is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(tree), str(tree / "plugins"), env.get("PYTHONPATH", "")])
    return env


def _time(args: list[str], tree: Path | None, cwd: Path) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "auditkit", *args], cwd=cwd, env=_env(tree), check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def _importtime(args: list[str], cwd: Path) -> list[tuple[str, float]]:
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "auditkit", *args], cwd=cwd, env=_env(None),
                            capture_output=True, text=True, check=True)
    entries = []
    for line in result.stderr.splitlines():
        if line.startswith("import time:") and "|" in line and "cumulative" not in line:
            _, cumulative, name = line.split("|")
            if not name.startswith("  "):  # top-level imports only (nested ones are inside them)
                entries.append((name.strip(), int(cumulative) / 1e6))
    return sorted(entries, key=lambda entry: -entry[1])[:10]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, default=None)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "startup.json")
    args = parser.parse_args()
    trees = {"this": None, **({"before": args.before.resolve()} if args.before else {})}
    load_before = os.getloadavg()
    times: dict[str, dict[str, list[float]]] = {name: {tree: [] for tree in trees} for name in COMMANDS}
    with tempfile.TemporaryDirectory() as scratch:
        cwd = Path(scratch)
        (cwd / "trail.jsonl").write_text("")
        for tree in trees.values():  # warm the op cache and the OS file cache once per tree
            _time(COMMANDS["train --epochs 1 (digits)"], tree, cwd)
        for _ in range(args.rounds):
            for name, command in COMMANDS.items():
                for label, tree in trees.items():
                    times[name][label].append(_time(command, tree, cwd))
        imports = {"train --help": _importtime(["train", "--help"], cwd),
                   "train --epochs 1": _importtime(COMMANDS["train --epochs 1 (digits)"], cwd)}
    load_after = os.getloadavg()
    rows = []
    for name in COMMANDS:
        medians = {label: statistics.median(values) for label, values in times[name].items()}
        rows.append({"command": name, **{f"{label}_s": round(value, 3) for label, value in medians.items()},
                     **({"ratio": round(medians["this"] / medians["before"], 3)} if "before" in medians else {}),
                     "samples": {label: [round(v, 3) for v in values] for label, values in times[name].items()}})
    header = f"{'command':<28} {'this (s)':>9}" + (f" {'before (s)':>11} {'this/before':>12}" if args.before else "")
    print(header)
    for row in rows:
        line = f"{row['command']:<28} {row['this_s']:>9.3f}"
        if args.before:
            line += f" {row['before_s']:>11.3f} {row['ratio']:>12.3f}"
        print(line)
    for label, entries in imports.items():
        print(f"\nlargest top-level imports of `auditkit {label}` (cumulative s, -X importtime):")
        for module, seconds in entries:
            print(f"  {module:<40} {seconds:.3f}")
    print(f"\nload average before {load_before}, after {load_after}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"rows": rows, "importtime": imports, "rounds": args.rounds,
                                    "before_tree": str(args.before) if args.before else None,
                                    "loadavg_before": load_before, "loadavg_after": load_after,
                                    "python": sys.version.split()[0]}, indent=2) + "\n")


if __name__ == "__main__":
    main()
