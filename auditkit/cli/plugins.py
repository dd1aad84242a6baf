"""`auditkit plugins list`: every plugin of every kind, where it comes from, and why it failed to load."""

from __future__ import annotations

from pathlib import Path

import click
from rich.table import Table
from rich.text import Text

from auditkit.cli.app import Application
from auditkit.cli.options import output_options, plugins_option


@click.group()
def plugins() -> None:
    """Inspect the installed plugins (datasets, models, methods, attacks)."""


@plugins.command("list")
@click.option("--kind", type=click.Choice(["datasets", "models", "methods", "attacks"]), default=None,
              help="Only this kind.")
@plugins_option
@output_options
@click.pass_obj
def list_plugins(app: Application, kind: str | None, plugin_files: tuple[Path, ...]) -> int:
    """List plugins: kind, name, source distribution and version, load errors."""
    from auditkit.registry import Registry

    infos = [i for i in Registry.default(plugin_files=list(plugin_files)).infos() if kind is None or i.kind == kind]
    table = Table(show_edge=False, header_style="bold")
    table.add_column("kind", no_wrap=True)
    table.add_column("name", no_wrap=True)
    table.add_column("from", overflow="fold")
    if app.verbosity >= 1:
        table.add_column("location", overflow="fold")
    table.add_column("status", overflow="fold")
    for info in infos:
        # Sources read "<distribution> (entry point module:Class)" or "file <path>".
        origin, _, location = info.source.partition(" (")
        status = Text(f"error: {info.error}", style="red") if info.error else Text("ok", style="green")
        # Text() cells: names and sources come from third parties and must not be read as rich markup.
        cells = [Text(info.kind), Text(info.name), Text(f"{origin} {info.version}".strip())]
        if app.verbosity >= 1:
            cells.append(Text(location.rstrip(")")))
        table.add_row(*cells, status)
    if app.verbosity >= 0:
        app.console.print(table)
    app.emit_json({"plugins": [{"kind": i.kind, "name": i.name, "source": i.source, "version": i.version,
                                "description": i.description, "error": i.error} for i in infos]})
    return 0
