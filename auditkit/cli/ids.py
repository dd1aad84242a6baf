"""`auditkit ids`: a dataset's or a checkpoint's sample IDs by split, as CSV on stdout.

Only training IDs can be forgotten, and which rows landed in the training split is decided by the
dataset's seeded split, not visible in the user's own file. This lists them, so a request can be built
from real training IDs: ``auditkit ids --split train --match 'patient-17*' > request.csv``.
"""

from __future__ import annotations

import csv
import fnmatch
import sys
from pathlib import Path

import click

from auditkit.cli.app import Application
from auditkit.cli.options import (
    DEFAULT_CHECKPOINT,
    load_settings_file,
    output_options,
    parse_key_values,
    plugins_option,
)

SPLIT_NAMES = ("train", "validation", "test", "unused")


@click.command()
@click.option("--checkpoint", type=click.Path(path_type=Path), default=None,
              help=f"List the data this checkpoint was trained on, with its split [default: {DEFAULT_CHECKPOINT}, "
                   "or auditkit.toml's checkpoint].")
@click.option("--dataset", default=None, help="List a dataset plugin's IDs instead of a checkpoint's.")
@click.option("--dataset-option", "dataset_options", multiple=True, metavar="KEY=VALUE",
              help="Dataset plugin option (repeatable), with --dataset.")
@click.option("--split", "splits", multiple=True, type=click.Choice(SPLIT_NAMES),
              help="Only this split (repeatable) [default: all]. Only train IDs can be forgotten; unused ones "
                   "(an adopted model's) were neither trained on nor audited.")
@click.option("--match", "patterns", multiple=True, metavar="PATTERN",
              help="Only IDs matching this shell-style pattern, e.g. 'digits-00*' (repeatable: any of them).")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="At most this many IDs.")
@click.option("--config", "config_path", type=click.Path(path_type=Path), default=None,
              help="auditkit.toml with defaults [default: ./auditkit.toml if present].")
@plugins_option
@output_options
@click.pass_obj
def ids(app: Application, checkpoint: Path | None, dataset: str | None, dataset_options: tuple[str, ...],
        splits: tuple[str, ...], patterns: tuple[str, ...], limit: int | None, config_path: Path | None,
        plugin_files: tuple[Path, ...]) -> int:
    """List sample IDs and their split as CSV (columns id,split) on stdout, to build a deletion request.

    \b
    Examples:
      auditkit ids --split train > request.csv         (then trim it to the IDs to forget)
      auditkit ids --checkpoint runs/patients.pt --split train --match 'patient-17*'
      auditkit ids --dataset csv --dataset-option path=data.csv --split validation
    The output's `id` column is what `auditkit forget --ids` reads. Matching is case-sensitive, as IDs are.
    """
    from auditkit.checkpoint import load_dataset, read_manifest
    from auditkit.config import merge
    from auditkit.errors import InputError
    from auditkit.fsutil import not_a_file_error
    from auditkit.messages import escaped
    from auditkit.registry import Registry

    if checkpoint is not None and dataset is not None:
        raise InputError("--checkpoint and --dataset both name the data to list",
                         hint="pass --checkpoint (its training data and split) or --dataset (any dataset plugin)")
    if dataset_options and dataset is None:
        raise InputError("--dataset-option needs --dataset", hint="name the dataset plugin with --dataset NAME")
    app.start_torch()
    config = merge(load_settings_file(config_path), plugins=plugin_files or None)
    registry = Registry.default(plugin_files=list(config.plugins))
    if dataset is not None:
        options = {**(config.dataset_options if dataset == config.dataset else {}),
                   **parse_key_values(dataset_options, flag="--dataset-option")}
        data = registry.create("datasets", dataset, **options).load()
        source = f"dataset {dataset}"
    else:
        path = checkpoint or config.checkpoint or DEFAULT_CHECKPOINT
        error = not_a_file_error(path, role="checkpoint", hint="train one with `auditkit train`, or pass --dataset NAME")
        if error is not None:
            raise error
        manifest = read_manifest(path)
        data = load_dataset(manifest, registry=registry)  # the split the model was trained with (adopted: its IDs)
        source = f"checkpoint {path} (dataset {manifest.dataset})"

    wanted = set(splits or SPLIT_NAMES)
    rows = []
    for sample_id, split in zip(data.ids.tolist(), data.splits.tolist()):
        if split in wanted and (not patterns or any(fnmatch.fnmatchcase(sample_id, p) for p in patterns)):
            rows.append((sample_id, split))
            if limit is not None and len(rows) == limit:
                break
    if app.json_output:
        app.emit_json({"source": source, "count": len(rows), "ids": [{"id": i, "split": s} for i, s in rows]})
    else:
        # csv quoting keeps an ID holding a comma, quote or line break one cell, as the request parser reads it.
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(("id", "split"))
        writer.writerows(rows)
    counts = ", ".join(f"{sum(1 for _, s in rows if s == name)} {name}" for name in SPLIT_NAMES
                       if name in wanted and (name != "unused" or "unused" in splits or name in data.splits))
    app.info(escaped(f"{len(rows)} IDs listed ({counts}) of {len(data)} in {source}"))
    return 0
