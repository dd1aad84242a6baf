"""The HTML compliance report: a pure view of a :class:`~auditkit.evidence.record.RunRecord`.

One Jinja2 environment (autoescape on, StrictUndefined) renders ``templates/report.html``; every
string from the record (IDs, plugin names, paths, options) is escaped. The only markup not escaped is
the SVG charts that this module draws with matplotlib's Agg/SVG backend, with a fixed hash salt and
no timestamp metadata, so the same record always gives the same bytes. CSS is inline and nothing is
loaded from the network.
"""

from __future__ import annotations

import io
import math
import os
import re
from collections.abc import Sequence
from typing import Any

import jinja2
import matplotlib
from markupsafe import Markup, escape

from auditkit.audit.results import HEADLINE_LABELS, power_summary
from auditkit.errors import InputError
from auditkit.evidence.record import RunRecord
from auditkit.fsutil import atomic_write_text
from auditkit.resources import resource_dir

matplotlib.use("Agg")  # before pyplot could ever be imported elsewhere: the report never needs a display

from matplotlib.backends.backend_svg import FigureCanvasSVG  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import FuncFormatter, MaxNLocator  # noqa: E402

MAX_EXPOSED_IDS = 25
_MODEL_COLOURS = {"original": "#b2182b", "unlearned": "#2166ac", "retrained": "#4d9221"}
_FALLBACK_COLOURS = ("#762a83", "#e08214", "#35978f", "#8c510a", "#01665e", "#c51b7d", "#5aae61", "#542788")
_RC = {
    "svg.hashsalt": "auditkit-report",  # deterministic element ids
    "svg.fonttype": "none",  # text stays text: small, selectable, crisp in print
    "text.parse_math": False,  # plugin names are plain labels: "$...$" prints as typed instead of crashing mathtext
    "font.family": "sans-serif",
    "font.size": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.color": "#dddddd",
    "grid.linewidth": 0.6,
    "axes.edgecolor": "#555555",
    "legend.frameon": True,  # a white box keeps the legend readable where it overlaps a curve
    "legend.framealpha": 0.85,
    "legend.edgecolor": "none",
    "legend.fontsize": 8,
}
_SVG_PROLOGUE = re.compile(r"^.*?(?=<svg)", re.DOTALL)


def _svg(figure: Figure) -> Markup:
    """The figure as inline SVG markup (no XML prologue, no date metadata)."""
    buffer = io.StringIO()
    FigureCanvasSVG(figure).print_svg(buffer, metadata={"Date": None, "Creator": None, "Format": None, "Type": None})
    return Markup(_SVG_PROLOGUE.sub("", buffer.getvalue(), count=1))


#: Log-axis tick labels as plain numbers (0.001, 0.01, ...): the default ones are mathtext, which
#: text.parse_math=False (needed for "$" in plugin names) would print raw.
_PLAIN_TICKS = FuncFormatter(lambda value, _position: f"{value:g}")


def _colour(name: str, index: int) -> str:
    return _MODEL_COLOURS.get(name, _FALLBACK_COLOURS[index % len(_FALLBACK_COLOURS)])


def _roc_chart(attacks: list[dict[str, Any]], models: Sequence[str]) -> Markup | None:
    """Log-log ROC curves of every attack on the forget set, one panel per model."""
    attacks = [a for a in attacks if a["metrics"] is not None]  # no ROC for scores that cannot rank
    panels = [m for m in models if any(a["model"] == m and a["population"] == "forget" and a["metrics"]["roc_fpr"]
                                       for a in attacks)]
    if not panels:
        return None
    with matplotlib.rc_context(_RC):
        figure = Figure(figsize=(3.3 * len(panels), 3.6))
        # Fixed margins: constrained layout re-measures every log-axis tick label and took 2/3 of the render.
        figure.subplots_adjust(left=0.16 / len(panels) * 1.6, right=0.98, bottom=0.25, top=0.92, wspace=0.08)
        axes = figure.subplots(1, len(panels), sharey=True, squeeze=False)[0]
        names = sorted({a["attack"] for a in attacks})
        for ax, model in zip(axes, panels):
            floor = 1.0
            for a in attacks:
                if a["model"] != model or a["population"] != "forget" or not a["metrics"]["roc_fpr"]:
                    continue
                metrics = a["metrics"]
                floor = min(floor, 1.0 / max(metrics["n_nonmembers"], 1))
                fpr = [max(x, floor) for x in metrics["roc_fpr"]]
                tpr = [max(y, floor) for y in metrics["roc_tpr"]]
                ax.plot(fpr, tpr, lw=1.2, color=_FALLBACK_COLOURS[names.index(a["attack"]) % len(_FALLBACK_COLOURS)],
                        label=a["attack"], drawstyle="steps-post")
            ax.plot([floor, 1], [floor, 1], ls="--", lw=0.8, color="#888888", label="chance")
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.minorticks_off()  # hundreds of minor log ticks cost most of the render time and add nothing
            ax.xaxis.set_major_formatter(_PLAIN_TICKS)
            ax.yaxis.set_major_formatter(_PLAIN_TICKS)
            ax.set_xlim(floor, 1)
            ax.set_ylim(floor, 1.05)
            ax.set_title(f"{model} model, forget vs test")
            ax.set_xlabel("false positive rate")
        axes[0].set_ylabel("true positive rate")
        handles, labels = axes[0].get_legend_handles_labels()
        # One legend under the panels: inside a panel it hides the low-FPR corner that matters most.
        figure.legend(handles, labels, loc="lower center", ncol=min(len(labels), 8), frameon=False)
        return _svg(figure)


def _loss_histograms(losses: dict[str, dict[str, list[float]]], models: Sequence[str]) -> Markup | None:
    """Per-sample loss histograms, forget vs test, one panel per model (shared bins)."""
    panels = [m for m in models if m in losses and losses[m].get("forget") and losses[m].get("test")]
    if not panels:
        return None
    values = [v for m in panels for g in ("forget", "test") for v in losses[m][g] if v is not None]
    # Log-spaced bins: well-fit samples have losses of 1e-4 and below while unseen ones reach several
    # nats, and both ends matter. Losses under the floor are counted in the first bin.
    floor = max(min((v for v in values if v > 0), default=1e-6), 1e-6)
    top = max(max(values), floor * 10)
    edges = [floor * (top / floor) ** (i / 40) for i in range(41)]
    with matplotlib.rc_context(_RC):
        figure = Figure(figsize=(3.3 * len(panels), 2.8))
        figure.subplots_adjust(left=0.17 / len(panels) * 1.6, right=0.98, bottom=0.17, top=0.9, wspace=0.08)
        axes = figure.subplots(1, len(panels), sharey=True, squeeze=False)[0]
        for ax, model in zip(axes, panels):
            for group, colour in (("test", "#999999"), ("forget", _colour(model, 0))):
                data = [max(v, floor) for v in losses[model][group] if v is not None]
                weights = [1 / len(data)] * len(data)
                ax.hist(data, bins=edges, weights=weights, histtype="stepfilled", alpha=0.45, color=colour,
                        edgecolor=colour, linewidth=0.8, label=f"{group} (n={len(data)})")
            ax.set_xscale("log")
            ax.minorticks_off()
            ax.xaxis.set_major_formatter(_PLAIN_TICKS)
            ax.set_title(f"{model} model")
            ax.set_xlabel("cross-entropy loss (log scale)")
            ax.legend(loc="upper left")
        axes[0].set_ylabel("fraction of samples")
        return _svg(figure)


def _per_example_chart(by_model: dict[str, dict[str, Any]], models: Sequence[str]) -> Markup | None:
    """Histogram of a per-example attack's p-values over the forgotten IDs, one panel per audited model.

    A model that never saw the IDs gives roughly uniform p-values; a pile-up near 0 is IDs that still look seen.
    """
    panels = [m for m in models if m in by_model and by_model[m]["per_example"]]
    if not panels:
        return None
    edges = [i / 20 for i in range(21)]
    with matplotlib.rc_context(_RC):
        figure = Figure(figsize=(3.3 * len(panels), 2.6))
        figure.subplots_adjust(left=0.17 / len(panels) * 1.6, right=0.98, bottom=0.19, top=0.88, wspace=0.08)
        axes = figure.subplots(1, len(panels), sharey=True, squeeze=False)[0]
        for index, (ax, model) in enumerate(zip(axes, panels)):
            rows = by_model[model]["per_example"]
            values = [min(max(row["p_value"], 0.0), 1.0) for row in rows]
            flagged = sum(row["flagged"] for row in rows)
            ax.hist(values, bins=edges, weights=[1 / len(values)] * len(values), histtype="stepfilled", alpha=0.5,
                    color=_colour(model, index), edgecolor=_colour(model, index), linewidth=0.8)
            ax.axhline(1 / 20, color="#999999", linewidth=0.8, linestyle="--")
            ax.set_xlim(0, 1)
            ax.set_title(f"{model} model: {flagged} of {len(rows)} flagged")
            ax.set_xlabel("p-value (never-seen null)")
        axes[0].set_ylabel("fraction of forgotten IDs")
        return _svg(figure)


def _per_example_sections(attacks: list[dict[str, Any]], models: Sequence[str]) -> list[dict[str, Any]]:
    """Per-example attacks (u-lira): their p-value chart and the most exposed forgotten IDs on the unlearned model."""
    sections = []
    for name in dict.fromkeys(a["attack"] for a in attacks if a.get("per_example")):
        by_model = {a["model"]: a for a in attacks if a["attack"] == name and a["population"] == "forget"
                    and a.get("per_example") is not None}
        unlearned = by_model.get("unlearned")
        if unlearned is None:
            continue
        rows = sorted(unlearned["per_example"], key=lambda row: (row["p_value"], -row["score"]))
        sections.append({"attack": name, "parameters": unlearned["parameters"], "total": len(rows),
                         "flagged": sum(row["flagged"] for row in rows), "rows": rows[:MAX_EXPOSED_IDS],
                         "original_flagged": sum(row["flagged"] for row in by_model["original"]["per_example"])
                         if "original" in by_model else None,
                         "chart": _per_example_chart(by_model, models)})
    return sections


#: Most epochs the history table lists; longer runs show evenly spaced epochs and always the last.
MAX_HISTORY_ROWS = 20


def _history_rows(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """At most :data:`MAX_HISTORY_ROWS` history entries, evenly spaced, first and last included."""
    if len(history) <= MAX_HISTORY_ROWS:
        return list(history)
    step = math.ceil((len(history) - 1) / (MAX_HISTORY_ROWS - 1))
    return [*history[:-1:step], history[-1]]


def _history_chart(history: list[dict[str, Any]]) -> Markup | None:
    """MIA, τ and forget loss over the unlearning epochs."""
    if not history:
        return None
    epochs = [h.get("epoch", i + 1) for i, h in enumerate(history)]

    def series(key: str) -> list[float]:
        return [math.nan if h.get(key) is None else float(h[key]) for h in history]

    with matplotlib.rc_context(_RC):
        figure = Figure(figsize=(6.8, 2.8))
        figure.subplots_adjust(left=0.1, right=0.98, bottom=0.17, top=0.9, wspace=0.3)
        left, right = figure.subplots(1, 2, squeeze=True)
        if any(h.get("mia") is not None for h in history):
            left.plot(epochs, series("mia"), marker="o", ms=3, color=_MODEL_COLOURS["unlearned"], label="LR-loss MIA")
        left.axhline(0.5, ls="--", lw=0.8, color="#888888", label="chance (0.5)")
        for ax in (left, right):
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        left.set_title("membership attack over epochs")
        left.set_xlabel("epoch")
        left.set_ylabel("MIA accuracy (forget vs test)")
        left.legend(loc="best")
        right.plot(epochs, series("forget_loss"), marker="o", ms=3, color=_MODEL_COLOURS["original"], label="forget loss")
        right.plot(epochs, series("tau"), ls="--", color="#333333", label="τ (validation loss)")
        if any(h.get("retain_loss") is not None for h in history):
            right.plot(epochs, series("retain_loss"), lw=1, color=_MODEL_COLOURS["retrained"], label="retain loss")
        right.set_title("forget loss vs τ")
        right.set_xlabel("epoch")
        right.set_ylabel("mean cross-entropy")
        right.legend(loc="best")
        return _svg(figure)


def _number(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if value != 0 and abs(value) < 10 ** -digits:
        # Fixed decimals would print "-0.0000" for the tiny losses of well-fit samples: keep the digits.
        return f"{value:.{digits - 1}e}"
    return f"{value:.{digits}f}"


def _interval(pair: Any, digits: int = 3) -> str:
    if not pair or any(v is None for v in pair):
        return "—"
    return f"[{_number(pair[0], digits)}, {_number(pair[1], digits)}]"


def _percent(value: Any) -> str:
    return "—" if value is None else f"{100 * float(value):.1f} %"


#: Longest sample ID shown whole in the report; longer ones are elided (record.json keeps the full value).
MAX_ID_CHARS = 80


def _visible(text: str, *, keep: str = "") -> Markup:
    """``text`` HTML-escaped, with each non-printable character but those in ``keep`` shown as its escape.

    A bidirectional override would reorder what the reader sees (``abc\u202egnp.exe`` displays as
    ``abcexe.png``) and a control character is invisible; both appear as a marked ``\u202e`` instead.
    """
    if text.isprintable():
        return escape(text)
    parts = [escape(c) if c.isprintable() or c in keep else Markup('<span class="esc">%s</span>') % repr(c)[1:-1]
             for c in text]
    return Markup("").join(parts)


def _sample_id(value: Any) -> Markup:
    """A sample ID for a table cell: control and bidi characters visible, a long one elided with its length."""
    text = str(value)
    if len(text) <= MAX_ID_CHARS:
        return _visible(text)
    head, tail = text[: MAX_ID_CHARS * 3 // 4], text[-(MAX_ID_CHARS // 4):]
    return (_visible(head) + Markup("…") + _visible(tail) +
            Markup(' <span class="muted">(%s characters; the full ID is in record.json)</span>') % f"{len(text):,}")


def _finalize(value: Any) -> Any:
    """Every ``{{ }}`` string the template prints: bidi and control characters (not line breaks or tabs)
    shown escaped, so a plugin name, path or option cannot reorder or hide what the report says."""
    if isinstance(value, str) and not isinstance(value, Markup) and not value.isprintable():
        return _visible(value, keep="\n\t")
    return value


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(resource_dir("templates"))),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        finalize=_finalize,
    )
    env.filters.update(num=_number, interval=_interval, percent=_percent, sample_id=_sample_id)
    return env


def _model_order(names: Sequence[str]) -> list[str]:
    preferred = [m for m in ("original", "unlearned", "retrained") if m in names]
    return preferred + sorted(set(names) - set(preferred))


def _cell(result: dict[str, Any] | None) -> dict[str, Any] | None:
    """How one attack result is shown in a table: its headline (the number the policy judges), or why it abstained."""
    if result is None:
        return None
    if result["abstained"]:
        return {"abstained": result["abstained"], "value": None, "ci": None, "spread": None}
    statistic = result["statistic"] or {}
    draws = result["parameters"].get("draws")
    spread = (f"sd {_number(statistic['spread'])} over {draws} draws"
              if statistic.get("spread") is not None and draws and draws > 1 else None)
    return {"abstained": None, "value": result["headline_value"], "ci": result["headline_ci"], "spread": spread}


def _caveats(audit: dict[str, Any]) -> list[str]:
    """What limits the evidence, for the banner: the audit's own warnings, then what any pass cannot show."""
    caveats = list(audit["warnings"])
    per_example = sorted({a["attack"] for a in audit["attacks"] if a.get("per_example") is not None})
    if per_example:
        caveats.append(f"{', '.join(per_example)} tested each forgotten ID on its own against shadow models: an ID it "
                       "does not flag did not stand out at the power of those shadows (see its held-out accuracy), "
                       "which does not prove it safe.")
    else:
        caveats.append("The attacks judge the forgotten samples as a group: a pass does not show that every individual "
                       "sample is safe (Hayes et al. 2024); see the per-sample exposure table, or add u-lira.")
    return caveats


def report_context(record: RunRecord) -> dict[str, Any]:
    """Everything the template needs, derived from the record only (no model work)."""
    audit = record.audit
    attacks = audit["attacks"] if audit else []
    models = _model_order(sorted({a["model"] for a in attacks} | ({u["model"] for u in audit["utility"]} if audit else set())))
    forget_rows: list[dict[str, Any]] = []
    retain_rows: list[dict[str, Any]] = []
    if audit:
        verdicts = {v["attack"]: v for v in audit["verdicts"]}
        power = {p["attack"]: p for p in audit["power"]}
        for name in dict.fromkeys(a["attack"] for a in attacks):
            for population, rows in (("forget", forget_rows), ("retain", retain_rows)):
                by_model = {a["model"]: a for a in attacks if a["attack"] == name and a["population"] == population}
                if by_model:
                    first = next(iter(by_model.values()))
                    rows.append({"attack": name, "headline": HEADLINE_LABELS.get(first["headline"], first["headline"]),
                                 "by_model": by_model, "cells": {m: _cell(r) for m, r in by_model.items()},
                                 "verdict": verdicts.get(name), "power": power.get(name)})
    attack_names = {a["attack"] for a in attacks}
    # Checks that are not attacks (e.g. the forget/test loss ratio that flags over- and under-forgetting).
    other_checks = [v for v in audit["verdicts"] if v["attack"] not in attack_names] if audit else []
    exposures = audit["exposures"][:MAX_EXPOSED_IDS] if audit else []
    return {
        "record": record,
        "audit": audit,
        "models": models,
        "forget_rows": forget_rows,
        "retain_rows": retain_rows,
        "other_checks": other_checks,
        "power_line": power_summary(audit) if audit else None,
        "caveats": _caveats(audit) if audit else [],
        "exposures": exposures,
        "per_example": _per_example_sections(attacks, models) if audit else [],
        "exposures_total": len(audit["exposures"]) if audit else 0,
        "exposures_flagged": sum(1 for e in audit["exposures"] if e["exceeds_1pct_fpr"]) if audit else 0,
        "roc_chart": _roc_chart(attacks, models) if audit else None,
        "loss_chart": _loss_histograms(audit["losses"], models) if audit else None,
        "history_chart": _history_chart(record.history),
        "history_rows": _history_rows(record.history),
        "history_keys": [k for k in ("epoch", "tau", "alpha", "lr", "forget_loss", "retain_loss",
                                     "forget_below_tau", "test_accuracy", "mia")
                         if any(k in h for h in record.history)],
    }


def render_report(record: RunRecord) -> str:
    """The self-contained HTML report of ``record``; identical bytes for an identical record."""
    try:
        return _environment().get_template("report.html").render(**report_context(record))
    except (jinja2.UndefinedError, KeyError, TypeError) as exc:
        # A hand-edited or truncated record: name the missing piece instead of showing a traceback.
        detail = exc.message if isinstance(exc, jinja2.UndefinedError) else f"{type(exc).__name__}: {exc}"
        raise InputError(f"the record is incomplete or malformed ({detail})",
                         hint="render the record.json exactly as auditkit wrote it") from None


def write_report(record: RunRecord, path: str | os.PathLike[str]) -> None:
    """Render ``record`` and write the HTML atomically to ``path``."""
    atomic_write_text(path, render_report(record))
