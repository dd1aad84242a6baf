"""The public Python API: the CLI's commands as functions, for notebooks and pipelines.

Each function builds the same settings as its command and calls the same pipeline function, so a call
gives the same run as the command line with the same inputs (the same record apart from times and
the host); expected failures raise :class:`auditkit.errors.AuditkitError` subclasses
(:class:`~auditkit.errors.InputError` for bad input) instead of exiting. Unlike the CLI, nothing reads
``./auditkit.toml`` unless ``config=`` names it, and torch's thread count is left as it is unless
``threads=`` sets it (the CLI's ``--threads`` default is 1).

Example::

    import auditkit

    checkpoint = auditkit.adopt("weights.pt", model="module", model_options={"factory": "net.py:Net"},
                                dataset="tensors", dataset_options={"path": "data.pt"}, out="adopted.pt")
    record = auditkit.forget(checkpoint, "request.csv", out="runs/request-17")
    print(record.summary["passed"])
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from auditkit.checkpoint import LoadedCheckpoint
    from auditkit.config import Config
    from auditkit.evidence.record import RunRecord
    from auditkit.pipeline import RunSettings
    from auditkit.progress import Progress

PathLike = str | Path
ProgressFunction = Callable[["Progress"], None]


def train(
    *,
    dataset: str = "digits",
    out: PathLike | None = None,
    dataset_options: Mapping[str, Any] | None = None,
    model: str | None = None,
    model_options: Mapping[str, Any] | None = None,
    recipe: Mapping[str, Any] | None = None,
    seed: int = 0,
    force: bool = False,
    plugins: Sequence[PathLike] = (),
    threads: int | None = None,
    loader_workers: int | None = None,
    progress: ProgressFunction | None = None,
) -> Path:
    """Train a model plugin on a dataset's train split, like ``auditkit train``; returns the checkpoint path.

    ``model``/``model_options``/``recipe`` default to the dataset plugin's; ``recipe`` overrides single
    fields (``epochs``, ``batch_size``, ``lr``, ``weight_decay``, ``optimizer``). ``out`` defaults to
    ``runs/<dataset>-<model>.pt``.
    """
    from auditkit.pipeline import TrainSettings, run_train

    settings = TrainSettings(
        dataset=dataset, out=None if out is None else Path(out), dataset_options=dict(dataset_options or {}),
        model=model, model_options=None if model_options is None else dict(model_options), recipe=dict(recipe or {}),
        seed=seed, force=force, plugin_files=[Path(p) for p in plugins],
    )
    with _runtime(threads, loader_workers):
        return Path(run_train(settings, progress=progress or _silent)["checkpoint"])


def adopt(
    state_dict: PathLike | Mapping[str, torch.Tensor] | torch.nn.Module,
    *,
    model: str,
    dataset: str,
    out: PathLike,
    model_options: Mapping[str, Any] | None = None,
    dataset_options: Mapping[str, Any] | None = None,
    train_ids: PathLike | Sequence[str] | None = None,
    recipe: Mapping[str, Any] | None = None,
    force: bool = False,
    plugins: Sequence[PathLike] = (),
    threads: int | None = None,
    loader_workers: int | None = None,
    progress: ProgressFunction | None = None,
) -> Path:
    """Make an auditkit checkpoint of a model trained elsewhere, like ``auditkit adopt``; returns its path.

    Args:
        state_dict: a file written by ``torch.save(model.state_dict(), path)`` (read with
            ``weights_only=True``), the state dict itself, or the ``nn.Module``. Its tensors must fit the
            model plugin's architecture exactly (for ``[B, *input_shape]`` inputs and ``C`` classes of
            the dataset), or an :class:`~auditkit.errors.InputError` lists what differs.
        model / model_options: the model plugin that builds that architecture, e.g. ``"module"`` with
            ``{"factory": "net.py:Net"}`` for your own class.
        dataset / dataset_options: the dataset plugin holding the data the model was trained on.
        train_ids: a CSV file of the IDs the model trained on, or the IDs; default the dataset's train split.
        recipe: how the model was trained (``epochs``, ``batch_size`` and ``lr``, optionally ``optimizer``
            and ``weight_decay``); without it, retraining and reference-model attacks are refused later.
        force: replace an existing ``out``.

    A test accuracy at chance level (the sign of other preprocessing or label order) is a
    :class:`UserWarning`; the measured accuracies are in ``load(path).manifest.metrics``.
    """
    from auditkit.adoption import AdoptSettings, run_adopt

    given = Path(state_dict) if isinstance(state_dict, (str, Path)) else state_dict
    ids = Path(train_ids) if isinstance(train_ids, (str, Path)) else train_ids
    settings = AdoptSettings(
        state_dict=given, model=model, dataset=dataset, out=Path(out), model_options=dict(model_options or {}),
        dataset_options=dict(dataset_options or {}), train_ids=ids, recipe=dict(recipe or {}), force=force,
        plugin_files=[Path(p) for p in plugins],
    )
    with _runtime(threads, loader_workers):
        summary = run_adopt(settings, progress=progress or _silent)
    for message in summary["warnings"]:
        warnings.warn(message, UserWarning, stacklevel=2)
    return Path(summary["checkpoint"])


def forget(
    checkpoint: PathLike,
    ids: PathLike | Sequence[str],
    *,
    out: PathLike | None = None,
    method: str | None = None,
    method_options: Mapping[str, Any] | None = None,
    attacks: Sequence[str] | None = None,
    attack_options: Mapping[str, Mapping[str, Any]] | None = None,
    audit: bool = True,
    retrain_reference: bool = False,
    retrained: PathLike | None = None,
    dataset: str | None = None,
    backend: str | None = None,
    seed: int | None = None,
    trail: PathLike | None = None,
    include_ids: bool = False,
    force: bool = False,
    id_column: str | None = None,
    plugins: Sequence[PathLike] = (),
    config: PathLike | None = None,
    threads: int | None = None,
    loader_workers: int | None = None,
    progress: ProgressFunction | None = None,
) -> RunRecord:
    """Forget ``ids`` from ``checkpoint`` and audit the result, like ``auditkit forget``; returns the run record.

    Args:
        checkpoint: the original model's checkpoint (from :func:`train`, :func:`adopt` or the CLI).
        ids: the deletion request, a CSV file (an ``id`` column or one column without header), or the IDs.
            A list is written to ``<out>.request.csv`` first and kept: it is the request the audit
            trail's line vouches for.
        out: the run folder to create (default ``runs/<UTC time>``); it then holds ``model.pt``,
            ``record.json`` and ``report.html`` (and ``retrained.pt`` with ``retrain_reference``).
        method / method_options: the unlearning method plugin (default ``nabla-tau``) and its options.
        attacks / attack_options: the battery (default: the cheap one) and options per attack name.
        audit: ``False`` skips the battery (the record says so).
        retrain_reference / retrained: judge against a model retrained without ``ids``, trained now with
            the checkpoint's recipe or given as a checkpoint.
        trail: the audit trail to append to (default ``audit-trail.jsonl`` beside ``out``).
        config: an ``auditkit.toml`` whose settings apply under these arguments.

    The record's ``summary["passed"]`` is ``True``/``False`` for the verdict (``None`` without audit);
    ``record.audit`` holds every attack result and verdict, ``record.history`` the method's epochs.
    """
    return _run("forget", checkpoint, ids, out=out, config=config, threads=threads, loader_workers=loader_workers,
                progress=progress, dataset=dataset, method=method, method_options=method_options, attacks=attacks,
                attack_options=attack_options, audit=audit, retrain_reference=retrain_reference, retrained=retrained,
                backend=backend, seed=seed, trail=trail, include_ids=include_ids, force=force, id_column=id_column,
                plugins=plugins)


def audit_checkpoint(
    checkpoint: PathLike,
    ids: PathLike | Sequence[str],
    *,
    original: PathLike,
    out: PathLike | None = None,
    retrained: PathLike | None = None,
    attacks: Sequence[str] | None = None,
    attack_options: Mapping[str, Mapping[str, Any]] | None = None,
    dataset: str | None = None,
    backend: str | None = None,
    seed: int | None = None,
    trail: PathLike | None = None,
    include_ids: bool = False,
    force: bool = False,
    id_column: str | None = None,
    plugins: Sequence[PathLike] = (),
    config: PathLike | None = None,
    threads: int | None = None,
    loader_workers: int | None = None,
    progress: ProgressFunction | None = None,
) -> RunRecord:
    """Audit ``checkpoint`` (in the role of the unlearned model) against ``original``, like ``auditkit
    audit``; returns the run record. Arguments as for :func:`forget`.

    (Not ``auditkit.audit``: that name is the :mod:`auditkit.audit` subpackage.)
    """
    return _run("audit", checkpoint, ids, out=out, config=config, threads=threads, loader_workers=loader_workers,
                progress=progress, original=original, dataset=dataset, attacks=attacks, attack_options=attack_options,
                retrained=retrained, backend=backend, seed=seed, trail=trail, include_ids=include_ids, force=force,
                id_column=id_column, plugins=plugins)


def load(path: PathLike, *, plugins: Sequence[PathLike] = ()) -> LoadedCheckpoint:
    """Read a checkpoint (``weights_only``): ``.model`` (CPU, eval mode), ``.manifest``, ``.sha256``."""
    from auditkit.checkpoint import load_checkpoint
    from auditkit.registry import Registry

    return load_checkpoint(path, registry=Registry.default(plugin_files=[Path(p) for p in plugins]))


def run_settings(
    *,
    kind: str,
    config: Config,
    request: Path,
    checkpoint: Path | None = None,
    original: Path | None = None,
    default_checkpoint: Path | None = None,
    out: Path | None = None,
    dataset: str | None = None,
    method: str | None = None,
    method_options: Mapping[str, Any] | None = None,
    attacks: Sequence[str] | None = None,
    attack_options: Mapping[str, Mapping[str, Any]] | None = None,
    audit: bool = True,
    retrain_reference: bool = False,
    retrained: Path | None = None,
    backend: str | None = None,
    seed: int | None = None,
    trail: Path | None = None,
    include_ids: bool = False,
    force: bool = False,
    id_column: str | None = None,
    plugins: Sequence[Path] = (),
    out_is_default: bool | None = None,
) -> RunSettings:
    """``config`` (an auditkit.toml, or empty) with the given values on top, as the ``RunSettings`` of
    ``kind`` ``"forget"`` or ``"audit"``: the one place where the CLI and this API turn options into a run.

    The file's ``checkpoint`` is the trained (original) model: what forget unlearns, what audit compares
    with; ``default_checkpoint`` stands in when neither names one. ``out_is_default`` says that ``out``
    is the default ``runs/<UTC time>`` (default: when neither ``out`` nor the file names a folder), so
    the trail's publish protocol may move it to the next free name if a run took it meanwhile.
    """
    from auditkit.config import merge
    from auditkit.evidence.ledger import TRAIL_FILE, default_run_dir
    from auditkit.pipeline import RunSettings

    merged = merge(
        config, checkpoint=checkpoint if kind == "forget" else None, dataset=dataset, method=method,
        method_options=dict(method_options) if method_options else None,
        attacks=list(attacks) if attacks is not None else None, plugins=list(plugins) or None, output_dir=out,
        audit_trail=trail, seed=seed, backend=backend, id_column=id_column,
    )
    trained = merged.checkpoint or default_checkpoint
    if kind == "audit":
        checkpoint, original = checkpoint, original or trained
    else:
        checkpoint, original = trained, None
    folder = merged.output_dir or default_run_dir()
    return RunSettings(
        checkpoint=checkpoint, request=request, out=folder, trail=merged.audit_trail or folder.parent / TRAIL_FILE,
        # `audit` has a method only when one is named: it says how the audited checkpoint was unlearned.
        method=merged.method or ("nabla-tau" if kind == "forget" else None), method_options=dict(merged.method_options),
        attacks=list(merged.attacks) if merged.attacks else None, policy=dict(merged.policy),
        backend=merged.backend or "auto", seed=0 if merged.seed is None else merged.seed, audit=audit,
        include_ids=include_ids, force=force, id_column=merged.id_column, plugin_files=list(merged.plugins),
        config_path=merged.source, retrained=retrained, retrain_reference=retrain_reference,
        attack_options={name: dict(values) for name, values in (attack_options or {}).items()},
        dataset=merged.dataset, original=original,
        out_is_default=merged.output_dir is None if out_is_default is None else out_is_default,
    )


def _run(kind: str, checkpoint: PathLike, ids: PathLike | Sequence[str], *, out: PathLike | None,
         config: PathLike | None, threads: int | None, loader_workers: int | None, progress: ProgressFunction | None,
         original: PathLike | None = None, retrained: PathLike | None = None, trail: PathLike | None = None,
         plugins: Sequence[PathLike] = (), **options: Any) -> RunRecord:
    """:func:`forget` or :func:`audit_checkpoint`: the settings from :func:`run_settings`, then the pipeline."""
    from auditkit.pipeline import run_audit_checkpoint, run_forget

    folder = _run_folder(out, config)
    request = _request_file(ids, folder)
    settings = run_settings(
        kind=kind, config=_config(config), request=request, checkpoint=Path(checkpoint), out=folder,
        out_is_default=out is None and _config(config).output_dir is None,
        original=None if original is None else Path(original), retrained=None if retrained is None else Path(retrained),
        trail=None if trail is None else Path(trail), plugins=[Path(p) for p in plugins], **options,
    )
    run = run_forget if kind == "forget" else run_audit_checkpoint
    with _runtime(threads, loader_workers), _request_kept_on_success(request, ids):
        return run(settings, progress=progress or _silent).record


def _silent(_report: Progress) -> None:
    return None


def _config(path: PathLike | None) -> Config:
    from auditkit.config import Config, load_config

    return load_config(path) if path is not None else Config()


def _run_folder(out: PathLike | None, config: PathLike | None) -> Path:
    """``out``, else the config's output folder, else ``runs/<UTC time>`` (decided once, before the request)."""
    from auditkit.evidence.ledger import default_run_dir

    if out is not None:
        return Path(out)
    return _config(config).output_dir or default_run_dir()


def _request_file(ids: PathLike | Sequence[str], out: Path) -> Path:
    """The request as a file: ``ids`` itself, or a list written to ``<out>.request.csv``."""
    if isinstance(ids, (str, Path)):
        return Path(ids)
    listed = [str(i) for i in ids]
    request = out.with_name(out.name + ".request.csv")
    if request.exists():
        from auditkit.errors import InputError

        raise InputError(f"{str(request)!r} already exists; it would hold this run's request",
                         hint="choose another out, or pass the request as a file")
    from auditkit.fsutil import atomic_write_text

    request.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(request, "id\n" + "".join(f"{i}\n" for i in listed))
    return request


@contextlib.contextmanager
def _request_kept_on_success(request: Path, ids: PathLike | Sequence[str]) -> Iterator[None]:
    """Remove a request file this API wrote when the run fails (a failed run leaves nothing behind)."""
    try:
        yield
    except BaseException:
        if not isinstance(ids, (str, Path)):
            request.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def _runtime(threads: int | None, loader_workers: int | None) -> Iterator[None]:
    """Apply ``threads`` (torch's CPU threads, kept afterwards as ``torch.set_num_threads`` does) and
    ``loader_workers`` (DataLoader workers, restored afterwards) when given."""
    import torch

    from auditkit.data import loader_workers_set_to

    if threads is not None:
        torch.set_num_threads(threads)
    with loader_workers_set_to(loader_workers) if loader_workers is not None else contextlib.nullcontext():
        yield
