"""What the unlearning benchmarks share: a method's runs summarised against the same seed's retraining."""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence


def fmt(value, spec: str) -> str:
    """``value`` formatted by ``spec``, or ``n/a`` when it was not measured."""
    return "n/a" if value is None else format(value, spec)


def mean(values) -> float | None:
    """The mean of the measured values (None skipped), or None when none was measured."""
    present = [v for v in values if v is not None]
    return statistics.fmean(present) if present else None


def summarise_against_retrain(
    rows: Sequence[dict], *, group: str, methods: Sequence[str], metrics: Sequence[str], gaps: Mapping[str, str],
    signed: Sequence[str] = (),
) -> list[dict]:
    """Per ``group`` × fraction × method (in ``methods`` order, ``original`` first): the mean over seeds of each
    of ``metrics``, and for every unlearning method, paired with the same seed's ``retrain`` row, the worst
    (largest) time ratio and, for each ``gaps`` entry ``name: metric``, the worst ``|method − retrain|`` as
    ``name`` (pairs where either value is missing skipped), and for the names in ``signed`` also the mean
    signed difference as ``signed_<name>``. ``loadavg_1min`` lists the 1-minute load average before each
    row ran, where the rows recorded it (``loadavg_before``).
    """
    order = ["original", *methods]
    keys = sorted({(r[group], r["fraction"], r["method"]) for r in rows}, key=lambda k: (k[0], k[1], order.index(k[2])))
    summary = []
    for name, fraction, method in keys:
        cell = [r for r in rows if (r[group], r["fraction"], r["method"]) == (name, fraction, method)]
        entry = {group: name, "fraction": fraction, "method": method, "seeds": len(cell),
                 **{metric: mean(r.get(metric) for r in cell) for metric in metrics}}
        retrained = {r["seed"]: r for r in rows if (r[group], r["fraction"], r["method"]) == (name, fraction, "retrain")}
        paired = [(r, retrained[r["seed"]]) for r in cell if r["seed"] in retrained]
        if paired and method not in ("retrain", "original"):
            entry["time_ratio"] = max(r["seconds"] / t["seconds"] for r, t in paired)
            for gap, metric in gaps.items():
                diffs = [r[metric] - t[metric] for r, t in paired if r[metric] is not None and t[metric] is not None]
                entry[gap] = max(map(abs, diffs)) if diffs else None
                if gap in signed:
                    entry[f"signed_{gap}"] = statistics.fmean(diffs) if diffs else None
        loads = [r["loadavg_before"][0] for r in cell if "loadavg_before" in r]
        if loads:
            entry["loadavg_1min"] = loads
        summary.append(entry)
    return summary
