"""The optional ``auditkit.toml``: defaults for every command, overridden by command-line flags.

Example::

    seed = 0
    checkpoint = "runs/model.pt"
    output_dir = "runs/latest"
    audit_trail = "audit-trail.jsonl"
    attacks = ["lr-loss", "loss", "entropy"]
    plugins = ["my_attack.py"]           # plugin files, like --plugins
    backend = "auto"
    id_column = "id"                     # the deletion request's ID column, like --id-column

    [dataset]                            # or simply: dataset = "digits"
    name = "digits"
    options = { split_seed = 0 }

    [model]
    name = "mlp"
    options = { widths = [256] }

    [method]
    name = "nabla-tau"
    options = {}

    [recipe]                             # training recipe for `auditkit train`
    epochs = 200

    [policy]                             # the audit's policy (see the README's policy table)
    retrained_margin = 0.03

Relative paths are relative to the folder of the config file. Every problem in the file is reported
at once, in one error.
"""

from __future__ import annotations

import difflib
import sys
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from auditkit.errors import AuditkitError, InputError
from auditkit.registry import Registry
from auditkit.training import TrainRecipe

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 ships no TOML reader
    import tomli as tomllib

CONFIG_NAME = "auditkit.toml"
MAX_SEED = 2**32 - 1
"""The largest seed every consumer accepts (scikit-learn's random_state stops at 2**32 - 1)."""
_PLUGIN_KEYS = {"dataset": "datasets", "model": "models", "method": "methods"}
_PATH_KEYS = ("checkpoint", "output_dir", "audit_trail")
_STRING_KEYS = ("backend", "id_column")
_TOP_LEVEL = (*_PLUGIN_KEYS, *_PATH_KEYS, *_STRING_KEYS, "seed", "attacks", "plugins", "policy", "recipe")


@dataclass(frozen=True)
class Config:
    """Settings from ``auditkit.toml`` (every field optional; ``None`` means "not set").

    ``*_options`` are plugin options; ``policy`` is handed to the audit's policy unchanged; ``recipe``
    overrides fields of the dataset's default training recipe; ``source`` is the file it came from.
    """

    dataset: str | None = None
    dataset_options: dict[str, Any] = field(default_factory=dict)
    model: str | None = None
    model_options: dict[str, Any] = field(default_factory=dict)
    method: str | None = None
    method_options: dict[str, Any] = field(default_factory=dict)
    checkpoint: Path | None = None
    attacks: tuple[str, ...] | None = None
    policy: dict[str, Any] = field(default_factory=dict)
    plugins: tuple[Path, ...] = ()
    output_dir: Path | None = None
    audit_trail: Path | None = None
    seed: int | None = None
    backend: str | None = None
    id_column: str | None = None
    recipe: dict[str, Any] = field(default_factory=dict)
    source: Path | None = None


def discover_config(directory: str | Path = ".") -> Path | None:
    """``directory/auditkit.toml`` when it exists, else ``None`` (the config file is optional)."""
    candidate = Path(directory) / CONFIG_NAME
    return candidate if candidate.is_file() else None


def load_config(path: str | Path) -> Config:
    """Parse and check ``path``; one :class:`InputError` lists every problem found."""
    file = Path(path)
    if not file.is_file():
        raise InputError(f"config file {str(file)!r} does not exist", hint="check the --config path")
    try:
        with open(file, "rb") as handle:
            values = tomllib.load(handle)
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"config file {str(file)!r} is not valid TOML: {exc}", hint="fix the syntax at that line") from None
    except UnicodeDecodeError:
        raise InputError(f"config file {str(file)!r} is not UTF-8 text", hint="save it as UTF-8") from None
    problems: list[str] = []
    settings: dict[str, Any] = {"source": file}
    base = file.resolve().parent
    for key in values:
        if key not in _TOP_LEVEL:
            close = difflib.get_close_matches(key, _TOP_LEVEL, n=1)
            problems.append(f"unknown key {key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    for key in _PLUGIN_KEYS:
        if key in values:
            name, options = _plugin_entry(key, values[key], problems)
            settings[key], settings[f"{key}_options"] = name, options
    for key in _PATH_KEYS:
        if key in values:
            if isinstance(values[key], str) and values[key]:
                settings[key] = (base / values[key]).resolve()
            else:
                problems.append(f"{key} must be a path string, not {values[key]!r}")
    for key in _STRING_KEYS:
        if key in values:
            if isinstance(values[key], str):
                settings[key] = values[key]
            else:
                problems.append(f"{key} must be a string, not {values[key]!r}")
    if "seed" in values:
        if isinstance(values["seed"], int) and not isinstance(values["seed"], bool) and 0 <= values["seed"] <= MAX_SEED:
            settings["seed"] = values["seed"]
        else:
            problems.append(f"seed must be a non-negative integer up to 2**32 - 1, not {values['seed']!r}")
    if "attacks" in values:
        attacks = _string_list("attacks", values["attacks"], problems)
        if attacks is not None:
            settings["attacks"] = tuple(attacks)
    if "plugins" in values:
        plugins = _string_list("plugins", values["plugins"], problems)
        for entry in plugins or []:
            if not (base / entry).is_file():
                problems.append(f"plugin file {entry!r} does not exist (relative to {str(base)!r})")
        settings["plugins"] = tuple((base / entry).resolve() for entry in plugins or [])
    for key in ("policy", "recipe"):
        if key in values:
            if isinstance(values[key], dict):
                settings[key] = dict(values[key])
            else:
                problems.append(f"[{key}] must be a table")
    if isinstance(settings.get("recipe"), dict):
        unknown = sorted(set(settings["recipe"]) - set(TrainRecipe.__dataclass_fields__))
        if unknown:
            problems.append(f"[recipe] has unknown fields {', '.join(unknown)} "
                            f"(valid: {', '.join(TrainRecipe.__dataclass_fields__)})")
    _raise_if(problems, str(file))
    return Config(**settings)


def _plugin_entry(key: str, value: Any, problems: list[str]) -> tuple[str | None, dict[str, Any]]:
    """``key = "name"`` or ``[key] name = "…" options = {…}``."""
    if isinstance(value, str):
        return value, {}
    if not isinstance(value, dict):
        problems.append(f"{key} must be a plugin name or a table with name and options, not {value!r}")
        return None, {}
    extra = sorted(set(value) - {"name", "options"})
    if extra:
        problems.append(f"[{key}] has unknown keys {', '.join(extra)} (expected name and options)")
    name = value.get("name")
    if not isinstance(name, str) or not name:
        problems.append(f"[{key}] needs name = \"…\"")
        name = None
    options = value.get("options", {})
    if not isinstance(options, dict):
        problems.append(f"[{key}] options must be a table")
        options = {}
    return name, dict(options)


def _string_list(key: str, value: Any, problems: list[str]) -> list[str] | None:
    if isinstance(value, list) and all(isinstance(item, str) and item for item in value):
        return value
    problems.append(f"{key} must be a list of names, like {key} = [\"a\", \"b\"]")
    return None


def _raise_if(problems: list[str], where: str) -> None:
    if problems:
        listed = "; ".join(f"({i}) {problem}" for i, problem in enumerate(problems, start=1))
        raise InputError(f"{where} has {len(problems)} problem{'s' if len(problems) > 1 else ''}: {listed}",
                         hint=f"fix them in {where}")


def merge(config: Config, **overrides: Any) -> Config:
    """``config`` with command-line values on top; a ``None`` override means "flag not given".

    Option dicts (``dataset_options``, ``model_options``, ``method_options``, ``policy``, ``recipe``)
    are merged key by key. When a flag names a different plugin than the file, the file's options for
    the old plugin are dropped, since they belong to it.
    """
    known = {f.name for f in fields(Config)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise TypeError(f"merge() got unknown settings {unknown}")
    given = {key: value for key, value in overrides.items() if value is not None}
    for key in _PLUGIN_KEYS:
        if key in given and given[key] != getattr(config, key):
            config = replace(config, **{f"{key}_options": {}})
    for key in ("dataset_options", "model_options", "method_options", "policy", "recipe"):
        if key in given:
            given[key] = {**getattr(config, key), **given[key]}
    if "attacks" in given:
        given["attacks"] = tuple(given["attacks"])
    if "plugins" in given:
        # A file named both in auditkit.toml and by --plugins must load once: a second import would
        # register its classes again and collide with themselves.
        unique: dict[Path, Path] = {}
        for path in (*config.plugins, *map(Path, given["plugins"])):
            unique.setdefault(path.resolve(), path)
        given["plugins"] = tuple(unique.values())
    return replace(config, **given)


def check_config(config: Config, *, registry: Registry) -> None:
    """Resolve every plugin the settings name and validate their options, before any heavy work.

    Raises one :class:`InputError` listing every unknown or unusable plugin and every bad option.
    """
    problems: list[str] = []
    for key, kind in _PLUGIN_KEYS.items():
        name = getattr(config, key)
        if name is not None:
            _try(problems, lambda: registry.create(kind, name, **getattr(config, f"{key}_options")))
    for attack in config.attacks or ():
        _try(problems, lambda: registry.get("attacks", attack))
    if config.recipe:
        _try(problems, lambda: TrainRecipe.from_dict(config.recipe))
    _raise_if(problems, str(config.source) if config.source else "the settings")


def _try(problems: list[str], check) -> None:
    try:
        check()
    except AuditkitError as exc:
        problems.append(str(exc))
