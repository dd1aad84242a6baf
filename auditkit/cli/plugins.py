"""`auditkit plugins list`: every plugin of every kind, what it does, its options, where it comes from, and
why it failed to load.

The listing is the command's output, so it goes to stdout (``auditkit plugins list | grep attacks``), as
``pip list`` does: a table on a terminal, one tab-separated line per plugin otherwise. A plugin file named
with ``--plugins`` that fails to import is listed with its error, like a broken installed plugin, and the
command still succeeds; ``forget``, ``audit`` and ``train`` instead stop on it (exit 3), since they were
asked to use it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from auditkit.cli.app import Application
from auditkit.cli.options import output_options, plugins_option
from auditkit.messages import escaped


@click.group()
def plugins() -> None:
    """Inspect the installed plugins (datasets, models, methods, attacks)."""


def _options(cls: Any) -> dict[str, Any]:
    """A plugin's options and their defaults as JSON values (tuples as lists, anything odd as its repr)."""
    def plain(value: Any) -> Any:
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {str(k): plain(v) for k, v in value.items()}
        return value if value is None or isinstance(value, (bool, int, float, str)) else repr(value)

    options = getattr(cls, "OPTIONS", None) if cls is not None else None
    return {str(k): plain(v) for k, v in options.items()} if isinstance(options, dict) else {}


def _option_text(options: dict[str, Any]) -> str:
    return ", ".join(f"{key}={value!r}" for key, value in options.items())


@plugins.command("list")
@click.option("--kind", type=click.Choice(["datasets", "models", "methods", "attacks"]), default=None,
              help="Only this kind.")
@plugins_option
@output_options
@click.pass_obj
def list_plugins(app: Application, kind: str | None, plugin_files: tuple[Path, ...]) -> int:
    """List plugins on stdout: kind, name, description, options with defaults, source and version, status.

    A --plugins file that fails to import is listed with its error and skipped (exit code 0).
    """
    from auditkit.errors import AuditkitError
    from auditkit.fsutil import not_a_file_error
    from auditkit.registry import Registry

    registry = Registry.default()
    broken_files: list[dict[str, Any]] = []
    for path in plugin_files:
        missing = not_a_file_error(path, role="plugin file", hint="check the --plugins path")
        if missing is not None:  # a typo in the command, not a broken plugin
            raise missing
        try:
            registry.load_file(path)
        except AuditkitError as exc:
            broken_files.append({"kind": None, "name": str(path), "source": f"file {path}", "version": "",
                                 "description": "", "options": {}, "error": exc.message})
    rows = [{"kind": i.kind, "name": i.name, "source": i.source, "version": i.version, "description": i.description,
             "options": _options(i.cls), "error": i.error}
            for i in registry.infos() if kind is None or i.kind == kind] + broken_files
    if app.json_output:
        app.emit_json({"plugins": rows})
        return 0
    out = Console(highlight=False)  # stdout, resolved at print time
    if out.is_terminal:
        out.print(_table(rows, verbose=app.verbosity >= 1))
    else:
        # Plain lines for pipes: one plugin per line, tab-separated, so grep and cut see whole rows.
        for row in rows:
            cells = [row["kind"] or "file", row["name"], row["description"], _option_text(row["options"]),
                     _origin(row), row["source"].partition(" (")[2].rstrip(")") if app.verbosity >= 1 else None,
                     f"error: {row['error']}" if row["error"] else "ok"]
            click.echo("\t".join(_flat(c) for c in cells if c is not None))
    return 0


def _origin(row: dict[str, Any]) -> str:
    # Sources read "<distribution> (entry point module:Class)" or "file <path>".
    return f"{row['source'].partition(' (')[0]} {row['version']}".strip()


def _flat(text: str) -> str:
    """A cell on one line: whitespace runs (a description can span lines) become one space, and any other
    non-printable character (an escape code, a bidi override) is shown escaped."""
    return escaped(" ".join(str(text).split()))


def _table(rows: list[dict[str, Any]], *, verbose: bool) -> Table:
    table = Table(show_edge=False, header_style="bold")
    table.add_column("kind", no_wrap=True)
    table.add_column("name", no_wrap=True)
    table.add_column("description", overflow="fold")
    table.add_column("options (defaults)", overflow="fold")
    table.add_column("from", overflow="fold")
    if verbose:
        table.add_column("location", overflow="fold")
    table.add_column("status", overflow="fold")
    for row in rows:
        status = Text(_flat(f"error: {row['error']}"), style="red") if row["error"] else Text("ok", style="green")
        # Text() cells: names and sources come from third parties and must not be read as rich markup.
        cells = [row["kind"] or "file", row["name"], row["description"], _option_text(row["options"]), _origin(row)]
        if verbose:
            cells.append(row["source"].partition(" (")[2].rstrip(")"))
        table.add_row(*(Text(_flat(cell)) for cell in cells), status)
    return table
