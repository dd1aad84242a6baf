"""Options shared by several commands, and the parsing of ``key=value`` pairs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from auditkit.errors import InputError

DEFAULT_CHECKPOINT = Path("runs") / "digits-mlp.pt"
"""Where `auditkit train` writes by default, and where `forget` / `audit` look for the original model."""


def parse_key_values(pairs: tuple[str, ...], *, flag: str) -> dict[str, str]:
    """``("lr=0.01", "per_sample=true")`` → ``{"lr": "0.01", "per_sample": "true"}`` (plugins coerce types)."""
    values: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise InputError(f"{flag} {pair!r} is not key=value", hint=f"write it like {flag} name=value")
        values[key.strip()] = value.strip()
    return values


def split_names(value: str | None) -> list[str] | None:
    """``"loss, lr-loss"`` → ``["loss", "lr-loss"]``; None stays None (the default battery)."""
    if value is None:
        return None
    names = [part.strip() for part in value.split(",") if part.strip()]
    if not names:
        raise InputError("--attacks is empty", hint="name at least one attack, e.g. --attacks lr-loss,loss")
    return names


def plugins_option(function: Any) -> Any:
    return click.option("--plugins", "plugin_files", multiple=True, type=click.Path(path_type=Path),
                        help="A Python file defining plugin classes (repeatable).")(function)


def seed_option(function: Any) -> Any:
    return click.option("--seed", type=int, default=None, help="Seed for a reproducible run [default: 0].")(function)


def run_options(function: Any) -> Any:
    """The options `forget` and `audit` share (flags override auditkit.toml)."""
    decorators = [
        click.option("--checkpoint", type=click.Path(path_type=Path), default=None,
                     help=f"Checkpoint to unlearn (forget) or to audit (audit) [forget default: {DEFAULT_CHECKPOINT}]."),
        click.option("--dataset", default=None,
                     help="Expected dataset plugin (the checkpoint's manifest names it; a mismatch is an error)."),
        click.option("--id-column", default=None, help="Column of the request CSV holding the IDs [default: id]."),
        click.option("--config", "config_path", type=click.Path(path_type=Path), default=None,
                     help="auditkit.toml with defaults for these options [default: ./auditkit.toml if present]."),
        click.option("--attacks", default=None, help="Comma-separated attack plugins [default: the cheap battery]."),
        click.option("--retrained", type=click.Path(path_type=Path), default=None,
                     help="A checkpoint retrained without the samples: verdicts are judged against it."),
        click.option("--backend", type=click.Choice(["auto", "cpu", "cuda", "reference"]), default=None,
                     help="Op backend [default: auto = the fused op for the device]."),
        seed_option,
        click.option("--out", type=click.Path(path_type=Path), default=None,
                     help="Output folder [default: runs/<UTC time>]; never overwritten without --force."),
        click.option("--force", is_flag=True, help="Replace an existing --out folder."),
        click.option("--include-ids", is_flag=True, help="List the forgotten IDs in record.json (off: hash and count only)."),
        click.option("--trail", type=click.Path(path_type=Path), default=None,
                     help="Audit trail to append to [default: audit-trail.jsonl in the folder holding --out]."),
        plugins_option,
    ]
    for decorate in reversed(decorators):
        function = decorate(function)
    return function


def settings_from_options(app: Any, flags: dict[str, Any], *, kind: str) -> Any:
    """Merge auditkit.toml (when given or present) and the command-line flags into ``RunSettings``."""
    from auditkit.pipeline import TRAIL_FILE, RunSettings, default_run_dir

    checkpoint = flags["checkpoint"] or (DEFAULT_CHECKPOINT if kind == "forget" else None)
    out = flags["out"] or default_run_dir()
    settings = RunSettings(
        checkpoint=checkpoint, request=flags["request"], out=out,
        trail=flags["trail"] or out.parent / TRAIL_FILE,
        method=flags.get("method") or "nabla-tau",
        method_options=parse_key_values(flags.get("method_options", ()), flag="--option"),
        attacks=split_names(flags["attacks"]), backend=flags["backend"] or "auto",
        seed=0 if flags["seed"] is None else flags["seed"], audit=not flags.get("no_audit", False),
        include_ids=flags["include_ids"], force=flags["force"], id_column=flags["id_column"],
        plugin_files=list(flags["plugin_files"]), config_path=flags["config_path"], retrained=flags["retrained"],
        dataset=flags["dataset"],
    )
    return settings
