"""Plugin discovery: entry points, plugin files and the ``register`` decorator, all in one registry.

Built-in plugins are registered through the same entry-point groups as a third party's. An entry point
is imported only when its plugin is asked for (or listed), so a command pays only for the plugins it
uses, never for another plugin's heavy imports. A plugin that fails to import is kept with its error
(``auditkit plugins list`` shows it); a name registered twice is kept as an error naming both sources,
raised when that name is asked for.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib.util
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from auditkit.errors import InputError, PluginError
from auditkit.fsutil import not_a_file_error
from auditkit.interfaces import Attack, DatasetPlugin, ModelPlugin, Plugin, UnlearningMethod

KINDS: dict[str, type[Plugin]] = {
    "datasets": DatasetPlugin,
    "models": ModelPlugin,
    "methods": UnlearningMethod,
    "attacks": Attack,
}
_SINGULAR = {"datasets": "dataset", "models": "model", "methods": "method", "attacks": "attack"}
_manual: list[tuple[str, type[Plugin], str]] = []


@dataclass
class PluginInfo:
    """One registered (or failed) plugin as `auditkit plugins list` shows it."""

    kind: str
    name: str
    source: str
    version: str
    cls: type[Plugin] | None = None
    error: str | None = None
    entry_point: metadata.EntryPoint | None = None  # not imported yet

    @property
    def description(self) -> str:
        return getattr(self.cls, "DESCRIPTION", "") if self.cls else ""


def register(kind: str):
    """Class decorator registering a plugin in every registry made afterwards (tests, notebooks)."""
    if kind not in KINDS:
        raise ValueError(f"unknown plugin kind {kind!r}; expected one of {sorted(KINDS)}")

    def decorate(cls: type[Plugin]) -> type[Plugin]:
        _manual.append((kind, cls, f"register() in {cls.__module__}"))
        return cls

    return decorate


class Registry:
    """All plugins of the four kinds, with their sources and load errors."""

    def __init__(self) -> None:
        self._plugins: dict[tuple[str, str], PluginInfo] = {}

    @classmethod
    def default(cls, *, plugin_files: list[str | Path] = ()) -> Registry:
        """Entry points, then ``register()``-ed classes, then the given plugin files."""
        registry = cls()
        registry.discover_entry_points()
        for kind, plugin, source in _manual:
            registry.add(kind, plugin, source=source, version="")
        for path in plugin_files:
            registry.load_file(path)
        return registry

    def discover_entry_points(self) -> None:
        """Record every entry point of the four groups; each is imported when first needed (:meth:`_load`)."""
        for kind in KINDS:
            for entry_point in metadata.entry_points(group=f"auditkit.{kind}"):
                dist = entry_point.dist
                source = f"{dist.metadata['Name']} (entry point {entry_point.value})" if dist else entry_point.value
                version = dist.version if dist else ""
                existing = self._plugins.get((kind, entry_point.name))
                if existing is None:
                    self._record(PluginInfo(kind, entry_point.name, source, version, entry_point=entry_point))
                elif (existing.entry_point is None or existing.entry_point.value != entry_point.value) \
                        and existing.source != source:
                    existing.error = _duplicate(kind, entry_point.name, existing.source, source)

    def _load(self, info: PluginInfo) -> PluginInfo:
        """Import ``info``'s entry point if it has not been (a failure is kept as the plugin's error)."""
        entry_point, info.entry_point = info.entry_point, None
        if entry_point is None or info.error is not None:
            return info
        try:
            plugin = entry_point.load()
        except Exception as exc:  # a broken third-party plugin must not break auditkit
            info.error = _describe(exc)
            return info
        base = KINDS[info.kind]
        if not (isinstance(plugin, type) and issubclass(plugin, base)):
            info.error = f"is not a subclass of auditkit.interfaces.{base.__name__}"
        else:
            info.cls = plugin
        return info

    def load_file(self, path: str | Path) -> None:
        """Import a plugin file and register every plugin class it defines."""
        file = Path(path)
        missing = not_a_file_error(file, role="plugin file", hint="check the --plugins path")
        if missing is not None:  # a named pipe would block the import: refused by stat, like a missing file
            raise missing
        module_name = "auditkit_user_plugin_" + hashlib.sha256(str(file.resolve()).encode()).hexdigest()[:12]
        spec = importlib.util.spec_from_file_location(module_name, file)
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            raise PluginError(
                f"plugin file {str(file)!r} failed to import: {_describe(exc)}",
                hint="fix the error in the plugin file or drop it from --plugins",
            ) from None
        found = 0
        for value in vars(module).values():
            if isinstance(value, type) and value.__module__ == module_name and hasattr(value, "PLUGIN_NAME"):
                for kind, base in KINDS.items():
                    if issubclass(value, base):
                        self.add(kind, value, source=f"file {file}", version="")
                        found += 1
        if not found:
            raise PluginError(
                f"plugin file {str(file)!r} defines no plugin class",
                hint="subclass auditkit.interfaces.Attack (or DatasetPlugin, ModelPlugin, UnlearningMethod) and set PLUGIN_NAME",
            )

    def add(self, kind: str, plugin: type, *, source: str, version: str, name: str | None = None) -> None:
        name = name or getattr(plugin, "PLUGIN_NAME", None)
        base = KINDS[kind]
        if not (isinstance(plugin, type) and issubclass(plugin, base)):
            self._record(PluginInfo(kind, name or repr(plugin), source, version,
                                    error=f"is not a subclass of auditkit.interfaces.{base.__name__}"))
            return
        existing = self._plugins.get((kind, name))
        if existing is not None and self._load(existing).cls is not plugin:
            existing.error = _duplicate(kind, name, existing.source, source)
            return
        self._record(PluginInfo(kind, name, source, version, cls=plugin))

    def _record(self, info: PluginInfo) -> None:
        self._plugins[(info.kind, info.name)] = info

    def infos(self) -> list[PluginInfo]:
        """Every plugin, loaded or failed, sorted by kind and name (imports every entry point)."""
        return sorted((self._load(info) for info in self._plugins.values()), key=lambda info: (info.kind, info.name))

    def names(self, kind: str) -> list[str]:
        """Names of the usable plugins of ``kind`` (imports that kind's entry points)."""
        return sorted(name for (k, name), info in self._plugins.items() if k == kind and self._load(info).error is None)

    def get(self, kind: str, name: str) -> type[Plugin]:
        """The plugin class ``name`` of ``kind``; a clear error if unknown, broken or ambiguous."""
        info = self._plugins.get((kind, name))
        if info is not None:
            self._load(info)
        singular = _SINGULAR[kind]
        if info is None:
            known = sorted(n for (k, n) in self._plugins if k == kind)
            close = difflib.get_close_matches(name, known, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"available: {', '.join(known) or 'none'}"
            raise InputError(f"unknown {singular} {name!r}", hint=hint + " (see `auditkit plugins list`)")
        if info.error is not None:
            raise PluginError(f"{singular} plugin {name!r} is unusable: {info.error}",
                              hint="see `auditkit plugins list` for every plugin's status")
        return info.cls

    def create(self, kind: str, name: str, **options) -> Plugin:
        """Instantiate plugin ``name`` of ``kind`` with validated ``options``."""
        return self.get(kind, name)(**options)


def _duplicate(kind: str, name: str, first: str, second: str) -> str:
    return f"two {kind} plugins are named {name!r}: {first} and {second}; uninstall or rename one of them"


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".splitlines()[0]
