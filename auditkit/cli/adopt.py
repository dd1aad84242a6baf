"""`auditkit adopt`: make an auditkit checkpoint of a model trained by your own code."""

from __future__ import annotations

from pathlib import Path

import click

from auditkit.cli.app import Application
from auditkit.cli.options import output_options, parse_key_values, plugins_option


@click.command()
@click.option("--state-dict", "state_dict", required=True, type=click.Path(path_type=Path),
              help="The weights: a file written by torch.save(model.state_dict(), FILE) (read with weights_only=True).")
@click.option("--model", required=True, help="Model plugin that builds the architecture, e.g. mlp, cnn or module.")
@click.option("--model-option", "model_options", multiple=True, metavar="KEY=VALUE",
              help="Model plugin option (repeatable), e.g. factory=nets.py:Net for --model module.")
@click.option("--dataset", required=True, help="Dataset plugin holding the data the model was trained on.")
@click.option("--dataset-option", "dataset_options", multiple=True, metavar="KEY=VALUE",
              help="Dataset plugin option (repeatable), e.g. path=/data/table.csv.")
@click.option("--train-ids", type=click.Path(path_type=Path), default=None,
              help="CSV of the IDs the model was trained on (an `id` column, or one column without header) "
                   "[default: the dataset's train split].")
@click.option("--recipe-option", "recipe_options", multiple=True, metavar="KEY=VALUE",
              help="How the model was trained (repeatable): epochs, batch_size and lr, optionally optimizer "
                   "(adam, adamw, sgd) and weight_decay. Without any, no recipe is recorded and retraining is refused.")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Checkpoint to write.")
@click.option("--force", is_flag=True, help="Replace an existing checkpoint.")
@plugins_option
@output_options
@click.pass_obj
def adopt(app: Application, state_dict: Path, model: str, model_options: tuple[str, ...], dataset: str,
          dataset_options: tuple[str, ...], train_ids: Path | None, recipe_options: tuple[str, ...], out: Path,
          force: bool, plugin_files: tuple[Path, ...]) -> int:
    """Turn a state dict trained elsewhere into a checkpoint that forget and audit accept.

    \b
    The weights must fit the model plugin exactly: missing, unexpected or mis-shaped keys are listed
    and nothing is written (exit code 2). With --train-ids the training split becomes exactly those IDs
    (listed validation/test samples move to train; unlisted train samples are left out of the audit).
    Exit code 0 when the checkpoint was written.
    """
    from auditkit.adoption import AdoptSettings, run_adopt

    app.start_torch()
    settings = AdoptSettings(
        state_dict=state_dict, model=model, dataset=dataset, out=out,
        model_options=parse_key_values(model_options, flag="--model-option"),
        dataset_options=parse_key_values(dataset_options, flag="--dataset-option"), train_ids=train_ids,
        recipe=parse_key_values(recipe_options, flag="--recipe-option"), force=force, plugin_files=list(plugin_files),
    )
    with app.progress() as progress:
        summary = run_adopt(settings, progress=progress)
    for warning in summary["warnings"]:
        app.warn(warning)
    trained_on = "its train split" if summary["train_ids"] == "train split" else "the listed IDs"
    app.info(f"adopted {summary['model']} for {summary['dataset']}: {summary['train_count']} training samples "
             f"({trained_on})")
    for key, value in sorted(summary["metrics"].items()):
        app.info(f"  {key.replace('_', ' ')}: {value:.3f}")
    if summary["recipe"] is None:
        app.info("  no training recipe recorded: retrain, --retrain-reference and reference-model attacks are refused")
    app.info(f"checkpoint: {summary['checkpoint']}")
    app.detail(f"sha256: {summary['sha256']}")
    app.emit_json(summary)
    return 0
