"""`auditkit train`: train a model plugin on a dataset's train split and write a checkpoint."""

from __future__ import annotations

from pathlib import Path

import click

from auditkit.cli.app import Application
from auditkit.cli.options import (
    DEFAULT_CHECKPOINT,
    load_settings_file,
    output_options,
    parse_key_values,
    plugins_option,
    seed_option,
)


@click.command()
@click.option("--dataset", default=None, help="Dataset plugin [default: digits].")
@click.option("--dataset-option", "dataset_options", multiple=True, metavar="KEY=VALUE",
              help="Dataset plugin option (repeatable).")
@click.option("--model", default=None, help="Model plugin [default: the dataset's default model].")
@click.option("--model-option", "model_options", multiple=True, metavar="KEY=VALUE",
              help="Model plugin option (repeatable), e.g. widths=128,128.")
@click.option("--epochs", type=int, default=None, help="Training epochs [default: the dataset's recipe].")
@click.option("--lr", type=float, default=None, help="Learning rate [default: the dataset's recipe].")
@click.option("--batch-size", type=int, default=None, help="Batch size [default: the dataset's recipe].")
@click.option("--weight-decay", type=float, default=None, help="Weight decay [default: the dataset's recipe].")
@seed_option
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help=f"Checkpoint to write [default: runs/<dataset>-<model>.pt, e.g. {DEFAULT_CHECKPOINT}].")
@click.option("--force", is_flag=True, help="Replace an existing checkpoint.")
@click.option("--config", "config_path", type=click.Path(path_type=Path), default=None,
              help="auditkit.toml with defaults for these options [default: ./auditkit.toml if present].")
@plugins_option
@output_options
@click.pass_obj
def train(app: Application, dataset: str, dataset_options: tuple[str, ...], model: str | None,
          model_options: tuple[str, ...], epochs: int | None, lr: float | None, batch_size: int | None,
          weight_decay: float | None, seed: int | None, out: Path | None, force: bool, config_path: Path | None,
          plugin_files: tuple[Path, ...]) -> int:
    """Train a model on a dataset's train split (the demo: `auditkit train` on digits)."""
    from auditkit.config import merge
    from auditkit.pipeline import TrainSettings, run_train

    app.start_torch()

    recipe = {key: value for key, value in (("epochs", epochs), ("lr", lr), ("batch_size", batch_size),
                                            ("weight_decay", weight_decay)) if value is not None}
    config = merge(
        load_settings_file(config_path), dataset=dataset,
        dataset_options=parse_key_values(dataset_options, flag="--dataset-option") or None, model=model,
        model_options=parse_key_values(model_options, flag="--model-option") or None, recipe=recipe or None,
        seed=seed, plugins=plugin_files or None, checkpoint=out,
    )
    settings = TrainSettings(
        dataset=config.dataset or "digits", dataset_options=dict(config.dataset_options), model=config.model,
        model_options=dict(config.model_options) if config.model_options else None, recipe=dict(config.recipe),
        seed=0 if config.seed is None else config.seed, force=force, plugin_files=list(config.plugins),
        out=config.checkpoint,
    )
    with app.progress() as progress:
        summary = run_train(settings, progress=progress)
    app.info(f"trained {summary['model']} on {summary['dataset']} (seed {summary['seed']})")
    for key, value in sorted(summary["metrics"].items()):
        app.info(f"  {key.replace('_', ' ')}: {value:.3f}")
    app.info(f"checkpoint: {summary['checkpoint']}")
    app.detail(f"sha256: {summary['sha256']}")
    app.emit_json(summary)
    return 0

