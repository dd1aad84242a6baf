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
at once, in one error: :func:`read_config` finds the structural ones (unknown keys, wrong types) and
:func:`check_config` the rest (unknown plugins and options, policy and recipe values), and the CLI raises
both lists together. The file must be a regular file of at most :data:`MAX_CONFIG_BYTES` (a config is a
few lines; a 10 MB one took 73 s and 656 MB to list its problems), nested at most a few hundred levels.
"""

from __future__ import annotations

import difflib
import sys
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from auditkit.errors import AuditkitError, InputError
from auditkit.fsutil import not_a_file_error, open_regular_file, regular_file_problem
from auditkit.messages import bare, shown
from auditkit.registry import Registry
from auditkit.training import TrainRecipe

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 ships no TOML reader
    import tomli as tomllib

CONFIG_NAME = "auditkit.toml"
MAX_CONFIG_BYTES = 1 << 20
"""The largest auditkit.toml read (1 MiB)."""
_MAX_LISTED = 200
"""Problems kept for one error; the message lists as many as fit on its line and counts the rest."""
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
    """``directory/auditkit.toml`` when it exists, else ``None`` (the config file is optional).

    One that exists but is not a regular file (a folder, a named pipe) is returned too, so that loading
    it says what it is instead of silently running without it.
    """
    candidate = Path(directory) / CONFIG_NAME
    return candidate if candidate.exists() else None


def load_config(path: str | Path) -> Config:
    """Parse and check ``path``; one :class:`InputError` lists every structural problem found."""
    config, problems = read_config(path)
    _raise_if(problems, str(config.source))
    return config


def _parse(file: Path) -> dict[str, Any]:
    """The TOML table of ``file``; an :class:`InputError` for anything that is not a small TOML file."""
    where = f"config file {shown(file)}"
    with open_regular_file(file, role="config file", hint="check the --config path") as handle:
        data = handle.read(MAX_CONFIG_BYTES + 1)
    if len(data) > MAX_CONFIG_BYTES:
        raise InputError(f"{where} is larger than {MAX_CONFIG_BYTES // 2**20} MiB; an auditkit.toml holds a few "
                         "settings", hint="check that --config (or ./auditkit.toml) is the right file")
    try:
        return tomllib.loads(data.decode("utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"{where} is not valid TOML: {exc}", hint="fix the syntax at that line") from None
    except UnicodeDecodeError:
        raise InputError(f"{where} is not UTF-8 text", hint="save it as UTF-8") from None
    except RecursionError:  # tomllib recurses once per nested array or inline table
        raise InputError(f"{where} nests arrays or tables too deeply to read",
                         hint="a setting needs at most a few levels of nesting; check that this is the right file") from None


def read_config(path: str | Path) -> tuple[Config, list[str]]:
    """Parse ``path``; returns the settings that are well-formed and the problems with the rest.

    Raises :class:`InputError` only when the file cannot be read as TOML at all.
    """
    file = Path(path)
    error = not_a_file_error(file, role="config file", hint="check the --config path")
    if error is not None:
        raise error
    values = _parse(file)
    problems: list[str] = []
    settings: dict[str, Any] = {"source": file}
    base = file.resolve().parent
    unknown_keys = [key for key in values if key not in _TOP_LEVEL]
    for number, key in enumerate(unknown_keys):
        close = difflib.get_close_matches(key, _TOP_LEVEL, n=1) if number < 10 else []  # the rest are only counted
        problems.append(f"unknown key {shown(key, limit=30)}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    for key in _PLUGIN_KEYS:
        if key in values:
            name, options = _plugin_entry(key, values[key], problems)
            settings[key], settings[f"{key}_options"] = name, options
    for key in _PATH_KEYS:
        if key in values:
            if isinstance(values[key], str) and values[key]:
                settings[key] = (base / values[key]).resolve()
            else:
                problems.append(f"{key} must be a path string, not {shown(values[key], limit=30)}")
    for key in _STRING_KEYS:
        if key in values:
            if isinstance(values[key], str):
                settings[key] = values[key]
            else:
                problems.append(f"{key} must be a string, not {shown(values[key], limit=30)}")
    if "seed" in values:
        if isinstance(values["seed"], int) and not isinstance(values["seed"], bool) and 0 <= values["seed"] <= MAX_SEED:
            settings["seed"] = values["seed"]
        else:
            problems.append(f"seed must be an integer from 0 to 2**32 - 1, not {shown(values['seed'], limit=30)}")
    if "attacks" in values:
        attacks = _string_list("attacks", values["attacks"], problems)
        if attacks is not None:
            settings["attacks"] = tuple(attacks)
    if "plugins" in values:
        plugins = _string_list("plugins", values["plugins"], problems)
        for entry in plugins or []:
            problem = regular_file_problem(base / entry)
            if problem is not None:
                problems.append(f"plugin file {shown(entry, limit=40)} {problem}")
        settings["plugins"] = tuple((base / entry).resolve() for entry in plugins or [])
    for key in ("policy", "recipe"):
        if key in values:
            if isinstance(values[key], dict):
                settings[key] = dict(values[key])
            else:
                problems.append(f"[{key}] must be a table")
    if isinstance(settings.get("recipe"), dict):
        fields_ = list(TrainRecipe.__dataclass_fields__)
        for key in sorted(set(settings["recipe"]) - set(fields_))[:_MAX_LISTED]:
            close = difflib.get_close_matches(key, fields_, n=1)
            problems.append(f"[recipe] has no field {shown(key, limit=20)}" +
                            (f" (did you mean {close[0]!r}?)" if close else f" (valid: {', '.join(fields_)})"))
    return Config(**settings), problems


def _plugin_entry(key: str, value: Any, problems: list[str]) -> tuple[str | None, dict[str, Any]]:
    """``key = "name"`` or ``[key] name = "…" options = {…}``."""
    if isinstance(value, str):
        return value, {}
    if not isinstance(value, dict):
        problems.append(f"{key} must be a plugin name or a [{key}] table, not {shown(value, limit=30)}")
        return None, {}
    extra = sorted(set(value) - {"name", "options"})
    if extra:
        problems.append(f"[{key}] has unknown keys {', '.join(shown(e, limit=20) for e in extra[:5])}"
                        f"{', …' if len(extra) > 5 else ''} (expected name and options)")
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


class ConfigProblems(InputError):
    """Every problem of a config file at once: the message lists as many as fit on one line and counts the
    rest; ``problems`` holds them all (the CLI's ``--json`` failure object carries them)."""

    def __init__(self, message: str, *, hint: str, problems: list[str]) -> None:
        super().__init__(message, hint=hint)
        self.problems = problems


def _raise_if(problems: list[str], where: str) -> None:
    if not problems:
        return
    head = f"{bare(where, limit=100)} has {len(problems)} problem{'s' if len(problems) > 1 else ''}: "
    listed: list[str] = []
    for number, problem in enumerate(problems[:_MAX_LISTED], start=1):
        part = f"({number}) {problem}"
        if listed and len(head) + sum(len(p) + 2 for p in listed) + len(part) > 260:
            break
        listed.append(part)
    rest = len(problems) - len(listed)
    raise ConfigProblems(head + "; ".join(listed) + (f"; … and {rest:,} more" if rest else ""),
                         hint=f"fix them in {bare(where, limit=100)}" + (" (--json lists them all)" if rest else ""),
                         problems=problems[:_MAX_LISTED])


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


def check_config(config: Config, *, registry: Registry, problems: list[str] | None = None) -> None:
    """Resolve every plugin the settings name and validate their options, policy, recipe and backend,
    before any heavy work.

    Raises one :class:`InputError` listing ``problems`` (e.g. :func:`read_config`'s) and every unknown or
    unusable plugin, bad option or value found here.
    """
    from auditkit.audit.policy import Policy
    from auditkit.ops import BACKENDS

    problems = list(problems or [])
    for key, kind in _PLUGIN_KEYS.items():
        name = getattr(config, key)
        if name is not None:
            _try(problems, lambda: registry.create(kind, name, **getattr(config, f"{key}_options")))
    for attack in list(dict.fromkeys(config.attacks or ()))[:_MAX_LISTED]:
        _try(problems, lambda: registry.get("attacks", attack))
    if config.recipe:
        _try(problems, lambda: TrainRecipe.from_dict(config.recipe))
    if config.policy:
        _try(problems, lambda: Policy.from_dict(config.policy))
    if config.backend is not None and config.backend not in BACKENDS:
        problems.append(f"backend {shown(config.backend, limit=30)} is not one of {', '.join(BACKENDS)}")
    _raise_if(problems, str(config.source) if config.source else "the settings")


def _try(problems: list[str], check) -> None:
    try:
        check()
    except AuditkitError as exc:
        # The fix in brief ("did you mean 'digits'?"): the listing shares one line with every other problem.
        hint = (exc.hint or "").partition(" (see ")[0]
        problems.append(f"{exc.message} ({hint})" if hint and len(hint) <= 60 else exc.message)
