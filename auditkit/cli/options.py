"""Options shared by several commands, and the parsing of ``key=value`` pairs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from auditkit.cli.app import Application
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


def parse_attack_options(pairs: tuple[str, ...]) -> dict[str, dict[str, str]]:
    """``("lira-offline.references=4",)`` → ``{"lira-offline": {"references": "4"}}``."""
    options: dict[str, dict[str, str]] = {}
    for key, value in parse_key_values(pairs, flag="--attack-option").items():
        attack, dot, name = key.partition(".")
        if not dot or not attack or not name:
            raise InputError(f"--attack-option {key}={value} does not name its attack",
                             hint="write it like --attack-option lira-offline.references=4")
        options.setdefault(attack, {})[name] = value
    return options


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
    # Negative or huge seeds made torch, numpy or scikit-learn fail mid-run with a traceback. The range is
    # auditkit.config.MAX_SEED, written out: importing auditkit.config here would load torch for --help.
    return click.option("--seed", type=click.IntRange(0, 2**32 - 1), default=None,
                        help="Seed for a reproducible run [default: 0].")(function)


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
        click.option("--attack-option", "attack_options", multiple=True, metavar="ATTACK.KEY=VALUE",
                     help="Option of one attack (repeatable), e.g. --attack-option lira-offline.references=4."),
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


def load_settings_file(path: Path | None) -> Any:
    """The auditkit.toml named by --config, else ./auditkit.toml when present, else empty settings.

    Every problem of the file is raised at once, in one error: its structure (unknown keys, wrong types)
    and what it names (unknown plugins and options, policy, recipe and backend values).
    """
    from auditkit.config import Config, check_config, discover_config, read_config
    from auditkit.errors import AuditkitError
    from auditkit.fsutil import regular_file_problem
    from auditkit.registry import Registry

    source = path if path is not None else discover_config()
    if source is None:
        return Config()
    config, problems = read_config(source)
    try:
        # Files that are missing (or not files) are already among the problems: load the others.
        registry = Registry.default(plugin_files=[p for p in config.plugins if regular_file_problem(p) is None])
    except AuditkitError as exc:  # a broken plugin file named by the config: as with --plugins, unless
        if not problems:           # the file has other problems too, which are then listed with it
            raise
        problems.append(exc.message)
        registry = Registry.default()
    check_config(config, registry=registry, problems=problems)
    return config


def settings_from_options(flags: dict[str, Any], *, kind: str) -> Any:
    """Merge auditkit.toml and the command-line flags (flags win) into ``RunSettings``."""
    from auditkit.api import run_settings

    return run_settings(
        kind=kind, config=load_settings_file(flags["config_path"]), request=flags["request"],
        checkpoint=flags["checkpoint"], original=flags.get("original"), default_checkpoint=DEFAULT_CHECKPOINT,
        out=flags["out"], dataset=flags["dataset"], method=flags.get("method"),
        method_options=parse_key_values(flags.get("method_options", ()), flag="--option"),
        attacks=split_names(flags["attacks"]), attack_options=parse_attack_options(flags["attack_options"]),
        audit=not flags.get("no_audit", False), retrain_reference=flags.get("retrain_reference", False),
        retrained=flags["retrained"], backend=flags["backend"], seed=flags["seed"], trail=flags["trail"],
        include_ids=flags["include_ids"], force=flags["force"], id_column=flags["id_column"],
        plugins=list(flags["plugin_files"]),
    )


def output_options(function: Any) -> Any:
    """-v / -q / --json also after the command name (``auditkit forget ... --json``), not only before it."""

    def set_verbose(ctx: click.Context, _param: Any, value: int) -> None:
        if value:
            app = ctx.find_object(Application)
            app.verbosity = max(app.verbosity, 0) + value

    def set_quiet(ctx: click.Context, _param: Any, value: bool) -> None:
        if value:
            ctx.find_object(Application).verbosity = -1

    def set_json(ctx: click.Context, _param: Any, value: bool) -> None:
        if value:
            ctx.find_object(Application).json_output = True

    for decorate in (
        click.option("--json", is_flag=True, expose_value=False, callback=set_json,
                     help="Print a machine-readable summary on stdout."),
        click.option("-q", "--quiet", is_flag=True, expose_value=False, callback=set_quiet, help="Only errors on stderr."),
        click.option("-v", "--verbose", count=True, expose_value=False, callback=set_verbose,
                     help="More detail on stderr (repeatable)."),
    ):
        function = decorate(function)
    return function

