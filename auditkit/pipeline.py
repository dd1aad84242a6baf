"""Orchestration of `auditkit train`, `forget` and `audit`, in the order STYLE.md prescribes.

Everything that can be wrong with the command line (plugins, options, policy, backend, output folder,
audit trail) is resolved first, so a typo fails in a second rather than after a training run. Then the
checkpoint, dataset and request are loaded and checked against each other; then the battery's first
phase on the original model (so a broken attack fails, and an audit that cannot pass is announced, before
any unlearning), the method, and the battery's second phase; and only at the end are outputs written:
into a hidden temporary folder beside ``--out`` that the trail's publish protocol
(:mod:`auditkit.evidence.ledger`) logs and renames into place. An interrupted or failed run therefore
leaves no output folder, and the original checkpoint is only ever read.
"""

from __future__ import annotations

import copy
import dataclasses
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from auditkit import distributed
from auditkit.checkpoint import (
    check_matches_dataset,
    ids_sha256,
    load_checkpoint,
    load_dataset,
    model_builder,
    save_checkpoint,
    train_checkpoint,
)
from auditkit.data import SampleSet
from auditkit.errors import EXIT_INCONCLUSIVE, EXIT_POLICY_FAILED, AuditkitError, InputError
from auditkit.evidence.ledger import Published, RunLedger
from auditkit.evidence.record import RunRecord, collect_provenance, utc_now
from auditkit.evidence.trail import RECORD_FILE, TrailLine
from auditkit.fsutil import atomic_write_text, check_writable, not_a_file_error, note_written, sha256_file
from auditkit.interfaces import Attack, UnlearningMethod, UnlearningTask
from auditkit.ops import resolve_backend
from auditkit.progress import ProgressCallback, no_progress
from auditkit.registry import Registry
from auditkit.request import check_request_file, parse_request, resolve_request
from auditkit.training import accuracy

if TYPE_CHECKING:  # imported where used: `auditkit train` never needs scipy, scikit-learn or matplotlib
    from auditkit.audit.battery import AuditPlan
    from auditkit.audit.policy import Policy
    from auditkit.audit.shadows import ShadowTrainer, ShadowUnlearning

MODEL_FILE = "model.pt"
RETRAINED_FILE = "retrained.pt"
REPORT_FILE = "report.html"


@dataclass
class TrainSettings:
    """What `auditkit train` needs; None means "the dataset plugin's default"."""

    dataset: str
    out: Path | None = None
    dataset_options: dict[str, Any] = field(default_factory=dict)
    model: str | None = None
    model_options: dict[str, Any] | None = None
    recipe: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    force: bool = False
    plugin_files: list[Path] = field(default_factory=list)


@dataclass
class RunSettings:
    """What `auditkit forget` and `auditkit audit` need (the CLI merges auditkit.toml and flags into it).

    For ``forget``, ``checkpoint`` is the original model; for ``audit`` it is the model under audit and
    ``original`` the model it came from, and ``method`` (None unless given) says how it was unlearned, for
    u-lira's unlearned shadows. ``retrained`` is an optional model retrained without the
    forget set, against which the verdicts are then judged; ``retrain_reference`` has ``forget`` train
    that model itself (the checkpoint's recipe on the retain set) and write it as retrained.pt.
    """

    checkpoint: Path
    request: Path
    out: Path
    trail: Path
    method: str | None = "nabla-tau"
    method_options: dict[str, Any] = field(default_factory=dict)
    attacks: list[str] | None = None
    attack_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    policy: dict[str, Any] = field(default_factory=dict)
    backend: str = "auto"
    seed: int = 0
    audit: bool = True
    include_ids: bool = False
    force: bool = False
    id_column: str | None = None
    plugin_files: list[Path] = field(default_factory=list)
    config_path: Path | None = None
    original: Path | None = None
    retrained: Path | None = None
    retrain_reference: bool = False
    dataset: str | None = None
    out_is_default: bool = False  # --out was not given: a name taken meanwhile moves to the next free one


@dataclass
class RunOutcome:
    """A finished run: its record, where it was written and its audit-trail line."""

    record: RunRecord
    out: Path
    trail: Path
    trail_line: TrailLine
    warnings: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        """0 when the audit passed or was skipped, 1 when it failed the policy, 4 when it was inconclusive."""
        return {"failed": EXIT_POLICY_FAILED, "inconclusive": EXIT_INCONCLUSIVE}.get(self.record.summary["outcome"], 0)

    def summary(self) -> dict[str, Any]:
        """The ``--json`` payload: the record's summary plus where everything is."""
        return {**self.record.summary, "out": str(self.out), "record": str(self.out / RECORD_FILE),
                "report": str(self.out / REPORT_FILE), "model": str(self.out / MODEL_FILE) if
                (self.out / MODEL_FILE).exists() else None, "trail": str(self.trail),
                "trail_index": self.trail_line.index, "exit_code": self.exit_code}


# ---------------------------------------------------------------- resolution (no heavy work)


def _registry(plugin_files: list[Path]) -> Registry:
    return Registry.default(plugin_files=list(plugin_files))


def _plugin_entry(registry: Registry, kind: str, name: str) -> dict[str, str]:
    info = next(i for i in registry.infos() if i.kind == kind and i.name == name)
    return {"kind": kind, "name": name, "source": info.source, "version": info.version}


def _check_out(out: Path, *, force: bool, keep: tuple[Path | None, ...] = ()) -> None:
    """Refuse an existing ``out`` (unless ``force``), one that would swallow a file in ``keep`` (inputs,
    the trail), or an unwritable place. Creates nothing: a run that fails later leaves no trace."""
    if out.exists() and not force:
        raise InputError(f"output {str(out)!r} already exists",
                         hint="choose another --out, or pass --force to replace it")
    target = out.resolve()
    for path in keep:
        if path is not None and target in (Path(path).resolve(), *Path(path).resolve().parents):
            raise InputError(f"--out {str(out)!r} would replace {str(path)!r}, which this run reads or appends to",
                             hint="choose an --out folder of its own, e.g. runs/<name>")
    check_writable(out, flag="--out")


@dataclass
class _Resolved:
    registry: Registry
    method: UnlearningMethod | None
    attacks: list[Attack]
    policy: Policy | None
    plugins: list[dict[str, str]]
    backend: str
    device: torch.device
    ledger: RunLedger | None = None
    shadow_method: UnlearningMethod | None = None  # `audit`: the method u-lira's unlearned shadows use


def run_device(backend: str) -> torch.device:
    """Where models run: the GPU for ``cuda`` (and for ``auto`` when one is present), else the CPU."""
    wants_gpu = backend == "cuda" or (backend == "auto" and torch.cuda.is_available())
    return torch.device("cuda" if wants_gpu and torch.cuda.is_available() else "cpu")


def _resolve(settings: RunSettings, *, with_method: bool, progress: ProgressCallback = no_progress) -> _Resolved:
    """Plugins, options, policy, backend, output and trail: every cheap check, before any heavy work
    (the fused op's first-run build included, reported through ``progress``)."""
    for role, path in (("checkpoint", settings.checkpoint), ("request", settings.request),
                       ("original", settings.original), ("retrained", settings.retrained)):
        if role == "request":
            check_request_file(path)  # also refuses `-`, pipes and devices, without opening them
        elif path is not None and (error := not_a_file_error(path, role=f"{role} file",
                                                             hint="train one with `auditkit train`")):
            raise error
    from auditkit.audit.battery import DEFAULT_ATTACKS, check_battery
    from auditkit.audit.policy import Policy

    registry = _registry(settings.plugin_files)
    problems: list[AuditkitError] = []

    def attempt(create: Callable[[], Any]) -> Any:
        try:
            return create()
        except AuditkitError as exc:
            problems.append(exc)
            return None

    method = attempt(lambda: registry.create("methods", settings.method, **settings.method_options)) \
        if with_method else None
    names = (list(settings.attacks) if settings.attacks else list(DEFAULT_ATTACKS)) if settings.audit else []
    if len(set(names)) != len(names):
        problems.append(InputError(f"an attack is listed twice in {', '.join(names)}", hint="list each attack once"))
    attacks = [attempt(lambda name=name: registry.create("attacks", name, **settings.attack_options.get(name, {})))
               for name in names]
    shadow_method = None
    if not with_method and settings.method is not None and any(a is not None and a.shadow_pairs() for a in attacks):
        # `auditkit audit` of someone's unlearning: u-lira's shadows are unlearned the way --method says.
        shadow_method = attempt(lambda: registry.create("methods", settings.method, **settings.method_options))
    for name in sorted(set(settings.attack_options) - set(names)):
        problems.append(InputError(f"--attack-option names attack {name!r}, which is not in the battery",
                                   hint=f"add {name} to --attacks, or drop its options"))
    policy = attempt(lambda: Policy.from_dict(settings.policy)) if settings.audit else None
    if settings.audit and policy is not None and all(attacks):
        # e.g. a battery without the policy's exposure attack: found now, not after the unlearning.
        attempt(lambda: check_battery(attacks, policy, has_reference_trainer=True,
                                      has_unlearning=with_method or shadow_method is not None))
    if len(problems) == 1:
        raise problems[0]
    if problems:
        # Every plugin, option and policy problem at once, so one edit fixes them all.
        listed = "; ".join(f"({i}) {p.message}" for i, p in enumerate(problems, start=1))
        raise type(problems[0])(f"{len(problems)} problems: {listed}",
                                hint="; ".join(dict.fromkeys(p.hint for p in problems if p.hint)))
    plugins = ([_plugin_entry(registry, "methods", settings.method)] if with_method or shadow_method else []) + \
        [{**_plugin_entry(registry, "attacks", name), "options": dict(attack.options)}
         for name, attack in zip(names, attacks)]
    device = run_device(settings.backend)
    distributed.join(device=device)  # under torchrun or --workers; nothing in a single process
    backend = resolve_backend(settings.backend, device, progress=progress)
    if settings.out.exists() and not settings.out.is_dir():  # --force replaces run folders, never a file
        raise InputError(f"--out {str(settings.out)!r} is a file, not a run folder",
                         hint="choose another --out (a folder name, e.g. runs/<name>)")
    # The trail (a link, its keys, a broken chain) and --out against it (a dangling link, a logged run).
    ledger = RunLedger(trail=settings.trail, out=settings.out, force=settings.force,
                       out_is_default=settings.out_is_default)

    def check_outputs() -> None:  # probes by writing a temporary folder: on the writer alone
        _check_out(settings.out, force=settings.force,
                   keep=(settings.checkpoint, settings.request, settings.original, settings.retrained, settings.trail,
                         settings.config_path, *settings.plugin_files))
        ledger.check()

    distributed.on_writer(check_outputs, stage="checking the outputs")
    return _Resolved(registry, method, attacks, policy, plugins, backend, device, ledger, shadow_method)


# ---------------------------------------------------------------- train


def check_checkpoint_out(out: Path, *, force: bool, keep: tuple[Path | None, ...] = ()) -> None:
    """Refuse a checkpoint path that is a folder, exists (unless ``force``), would replace an input in
    ``keep``, or cannot be written; before any heavy work."""
    if out.is_dir():
        raise InputError(f"--out {str(out)!r} is a folder", hint="name the checkpoint file, e.g. --out runs/model.pt")
    if out.exists() and not force:
        raise InputError(f"checkpoint {str(out)!r} already exists",
                         hint="choose another --out, or pass --force to replace it")
    _check_out(out, force=True, keep=keep)


def run_train(settings: TrainSettings, *, progress: ProgressCallback = no_progress) -> dict[str, Any]:
    """Train a model plugin on a dataset's train split and write the checkpoint atomically.

    Returns a summary: checkpoint path, SHA-256, dataset, model, recipe, seed and train/test accuracy
    when the manifest records them.
    """
    registry = _registry(settings.plugin_files)
    model = settings.model or registry.get("datasets", settings.dataset).DEFAULT_MODEL
    out = settings.out if settings.out is not None else Path("runs") / f"{settings.dataset}-{model}.pt"
    check_checkpoint_out(out, force=settings.force, keep=tuple(settings.plugin_files))
    manifest, sha256 = train_checkpoint(
        registry=registry, dataset=settings.dataset, dataset_options=settings.dataset_options, model=model,
        model_options=settings.model_options, recipe=settings.recipe, seed=settings.seed, out=out, progress=progress,
    )
    note_written(f"checkpoint {out}")
    return {"checkpoint": str(out), "sha256": sha256, "dataset": manifest.dataset, "model": manifest.model,
            "model_options": manifest.to_dict()["model_options"], "recipe": manifest.recipe, "seed": manifest.seed,
            "metrics": dict(manifest.metrics)}


# ---------------------------------------------------------------- forget and audit


@dataclass
class _Loaded:
    checkpoint: Any
    data: SampleSet
    request: Any
    forget: np.ndarray
    retain: np.ndarray
    validation: np.ndarray
    test: np.ndarray


def _load(settings: RunSettings, resolved: _Resolved, path: Path) -> _Loaded:
    registry = resolved.registry
    loaded = load_checkpoint(path, registry=registry)
    manifest = loaded.manifest
    if settings.dataset is not None and settings.dataset != manifest.dataset:
        raise InputError(f"checkpoint {str(path)!r} was trained on dataset {manifest.dataset!r}, not {settings.dataset!r}",
                         hint=f"drop --dataset or pass --dataset {manifest.dataset}")
    _check_recipe(settings, resolved, manifest, path)
    data = load_dataset(manifest, registry=registry)
    request = parse_request(settings.request, id_column=settings.id_column)
    listing = f"auditkit ids --checkpoint {shlex.quote(str(path))} --split train"
    forget = np.asarray(resolve_request(request, data, ids_command=listing), dtype=np.int64)
    train = data.indices("train")
    retain = np.setdiff1d(train, forget)
    return _Loaded(loaded, data, request, forget, retain, data.indices("validation"), data.indices("test"))


def _check_recipe(settings: RunSettings, resolved: _Resolved, manifest: Any, path: Path) -> None:
    """Refuse, before the data is loaded, what would train with a recipe the checkpoint does not record."""
    if manifest.recipe is not None:
        return
    needs = [f"--method {settings.method}"] if resolved.method is not None and resolved.method.NEEDS_RECIPE else []
    needs += ["--retrain-reference"] if settings.retrain_reference else []
    needs += [f"{a.PLUGIN_NAME} ({a.reference_models()} reference models)" if not a.shadow_pairs() else
              f"{a.PLUGIN_NAME} ({2 * a.shadow_pairs()} shadow models)"
              for a in resolved.attacks if a.reference_models() or a.shadow_pairs()]
    if needs:
        raise InputError(f"checkpoint {str(path)!r} records no training recipe (adopted without --recipe-option), "
                         f"which {', '.join(needs)} {'needs' if len(needs) == 1 else 'need'} to train models",
                         hint="re-adopt it with --recipe-option epochs=N --recipe-option batch_size=B "
                              "--recipe-option lr=LR (how the model was trained), or drop those options")


def _shadow_trainer(loaded: _Loaded, registry: Registry, device: torch.device) -> ShadowTrainer:
    from auditkit.audit.shadows import ShadowTrainer

    manifest = loaded.checkpoint.manifest
    return ShadowTrainer(build=model_builder(manifest, registry=registry), recipe=manifest.train_recipe,
                         model_key=manifest.describe_model(), device=device)


def _shadow_unlearning(settings: RunSettings, resolved: _Resolved, loaded: _Loaded) -> ShadowUnlearning | None:
    """The method (the run's, or `audit`'s --method) that u-lira's unlearned shadows are put through."""
    from auditkit.audit.shadows import ShadowUnlearning

    method = resolved.method or resolved.shadow_method
    if method is None or not any(a.shadow_pairs() for a in resolved.attacks):
        return None
    return ShadowUnlearning(method=method, method_name=settings.method, forget=loaded.forget,
                            validation=loaded.validation, test=loaded.test, backend=resolved.backend)


def _prepare_audit(settings: RunSettings, resolved: _Resolved, loaded: _Loaded, original: torch.nn.Module,
                   progress: ProgressCallback) -> AuditPlan:
    """The battery's first phase, on the original model alone: run before any unlearning, so a broken attack
    plugin fails and an audit that cannot pass is announced in seconds (the deletion still goes ahead)."""
    from auditkit.audit.battery import prepare_audit

    needs_references = any(a.reference_models() or a.shadow_pairs() for a in resolved.attacks)
    return prepare_audit(
        data=loaded.data, forget=loaded.forget, retain=loaded.retain, validation=loaded.validation,
        test=loaded.test, original=original, attacks=resolved.attacks, policy=resolved.policy, seed=settings.seed,
        backend=settings.backend,
        reference_trainer=_shadow_trainer(loaded, resolved.registry, resolved.device) if needs_references else None,
        shadow_unlearning=_shadow_unlearning(settings, resolved, loaded), progress=progress,
    )


def _audit_summary(audit: dict[str, Any] | None) -> dict[str, Any]:
    """The record summary's verdict fields: ``outcome``, ``passed`` (True/False/None) and why."""
    if audit is None:
        return {"outcome": None, "passed": None, "outcome_reason": None}
    per_example = {a["attack"]: {"flagged": sum(row["flagged"] for row in a["per_example"]), "ids": len(a["per_example"])}
                   for a in audit["attacks"] if a.get("per_example") is not None
                   and (a["model"], a["population"]) == ("unlearned", "forget")}
    return {"outcome": audit["outcome"], "passed": audit["passed"],
            "outcome_reason": "; ".join(filter(None, (audit["outcome_reason"], audit["conclusive_hint"]))),
            **({"per_example": per_example} if per_example else {})}


def _request_block(settings: RunSettings, loaded: _Loaded) -> dict[str, Any]:
    return {"sha256": loaded.request.sha256, "count": int(loaded.request.count), "file": str(settings.request),
            "id_column": loaded.request.id_column, "duplicates_dropped": int(loaded.request.duplicates_dropped),
            "ids": sorted(str(i) for i in loaded.request.ids) if settings.include_ids else None}


def _dataset_block(data: SampleSet) -> dict[str, Any]:
    return {"name": data.name, "options": dict(data.options), "num_classes": int(data.num_classes),
            "sizes": {split: int(len(data.indices(split))) for split in ("train", "validation", "test")}}


def _inputs(settings: RunSettings, loaded: _Loaded) -> dict[str, str]:
    inputs = {"checkpoint": loaded.checkpoint.sha256, "request": loaded.request.sha256}
    for role, path in (("original", settings.original), ("retrained", settings.retrained)):
        if path is not None:
            inputs[role] = sha256_file(path)
    for path in settings.plugin_files:
        inputs[f"plugin-file:{path}"] = sha256_file(path)
    if settings.config_path is not None:
        inputs["config"] = sha256_file(settings.config_path)
    return inputs


def _load_model(path: Path | None, registry: Registry, device: torch.device, data: SampleSet,
                retain: np.ndarray) -> torch.nn.Module | None:
    """The --retrained model, refused unless it was trained on ``data``'s training split or on exactly
    its ``retain`` positions (a manifest that lists the retain set, as a model retrained elsewhere would)."""
    if path is None:
        return None
    loaded = load_checkpoint(path, registry=registry)
    manifest = loaded.manifest
    if manifest.train_ids_sha256 == ids_sha256(data.ids[retain]):
        manifest = dataclasses.replace(manifest, train_ids_sha256=ids_sha256(data.ids[data.indices("train")]))
    try:
        check_matches_dataset(manifest, data)
    except InputError as exc:  # verdicts judged against a model of other data would mean nothing
        raise InputError(f"--retrained {str(path)!r}: {exc.message}", hint=exc.hint) from None
    return loaded.model.to(device).eval()


def _finish(record: RunRecord, ledger: RunLedger, tmp: Path) -> Published:
    """Render the report and hash the outputs; the ledger writes the record, logs the run and publishes it."""
    from auditkit.evidence.report import render_report

    atomic_write_text(tmp / REPORT_FILE, render_report(record))
    record.outputs = {name: sha256_file(tmp / name) for name in (MODEL_FILE, RETRAINED_FILE, REPORT_FILE)
                      if (tmp / name).exists()}
    return ledger.publish(tmp, record)


def run_forget(settings: RunSettings, *, progress: ProgressCallback = no_progress) -> RunOutcome:
    """Validate the request, unlearn, audit, and write model.pt, record.json and report.html."""
    started = utc_now()
    resolved = _resolve(settings, with_method=True, progress=progress)
    loaded = _load(settings, resolved, settings.checkpoint)
    retrained = _load_model(settings.retrained, resolved.registry, resolved.device, loaded.data, loaded.retain)
    manifest = loaded.checkpoint.manifest
    original = loaded.checkpoint.model.to(resolved.device).eval()
    plan = _prepare_audit(settings, resolved, loaded, original, progress) if settings.audit else None

    torch.manual_seed(settings.seed)
    task = UnlearningTask(
        model=copy.deepcopy(original), build_model=model_builder(manifest, registry=resolved.registry),
        recipe=manifest.train_recipe, data=loaded.data, forget=loaded.forget, retain=loaded.retain,
        validation=loaded.validation, test=loaded.test, seed=settings.seed, backend=settings.backend,
        device=resolved.device,
    )
    outcome = resolved.method.unlearn(task, progress=progress)
    unlearned = copy.deepcopy(original)
    unlearned.load_state_dict(outcome.state_dict)
    unlearned.eval()
    reference = None
    if settings.retrain_reference:
        # The gold standard, trained like the original but without the forget set: the verdicts and the
        # report then say how far the unlearned model is from it, not only from chance.
        retrain = resolved.registry.create("methods", "retrain")
        reference = retrain.unlearn(dataclasses.replace(task, model=copy.deepcopy(original)), progress=progress)
        retrained = copy.deepcopy(original)
        retrained.load_state_dict(reference.state_dict)
        retrained.eval()

    audit = None
    if plan is not None:
        from auditkit.audit.battery import complete_audit

        audit = complete_audit(plan, unlearned=unlearned, retrained=retrained, progress=progress).to_dict()

    def publish() -> RunOutcome:  # the writer (rank 0) alone writes the run and its trail line
        with resolved.ledger.staging() as tmp:
            # Same manifest (architecture, dataset, split fingerprint: the unlearned model audits against the
            # same data), with the unlearned model's own accuracies instead of the original's.
            unlearned_manifest = dataclasses.replace(manifest, metrics=_accuracies(unlearned, loaded, resolved.device))
            unlearned_sha = save_checkpoint(tmp / MODEL_FILE, state_dict=outcome.state_dict, manifest=unlearned_manifest)
            reference_block = _retrained_block(settings)
            if reference is not None:
                # Like model.pt (and `forget --method retrain`), it keeps the original's split fingerprint, so
                # `auditkit audit --checkpoint retrained.pt` and `--retrained retrained.pt` accept it.
                retrained_manifest = dataclasses.replace(manifest, metrics=_accuracies(retrained, loaded, resolved.device))
                reference_block = {"retrained": {"path": RETRAINED_FILE, "sha256": save_checkpoint(
                    tmp / RETRAINED_FILE, state_dict=reference.state_dict, manifest=retrained_manifest)}}
            plugins = [*resolved.plugins, _plugin_entry(resolved.registry, "datasets", manifest.dataset),
                       _plugin_entry(resolved.registry, "models", manifest.model)]
            record = RunRecord(
                kind="forget",
                summary={"kind": "forget", **_audit_summary(audit), "request_sha256": loaded.request.sha256,
                         "request_count": int(loaded.request.count), "original_sha256": loaded.checkpoint.sha256,
                         "unlearned_sha256": unlearned_sha, "method": settings.method, "dataset": loaded.data.name},
                request=_request_block(settings, loaded),
                dataset=_dataset_block(loaded.data),
                checkpoints={"original": {"path": str(settings.checkpoint), "sha256": loaded.checkpoint.sha256},
                             "unlearned": {"path": MODEL_FILE, "sha256": unlearned_sha},
                             **reference_block},
                method={"name": settings.method, "options": dict(resolved.method.options),
                        "settings": dict(outcome.settings), "backend": outcome.backend,
                        **({"retrained": {"name": "retrain", "settings": dict(reference.settings)}} if reference else {})},
                history=list(outcome.history),
                audit=audit,
                provenance=_provenance(settings, loaded, backend=outcome.backend, plugins=plugins, started=started),
            )
            published = _finish(record, resolved.ledger, tmp)
        return RunOutcome(record=record, out=published.out, trail=settings.trail, trail_line=published.line,
                          warnings=[*loaded.request.warnings(), *published.notes])

    return distributed.on_writer(publish)


def _retrained_block(settings: RunSettings) -> dict[str, dict[str, str]]:
    """The record's entry for the --retrained reference checkpoint, if one was given."""
    if not settings.retrained:
        return {}
    return {"retrained": {"path": str(settings.retrained), "sha256": sha256_file(settings.retrained)}}


def _provenance(settings: RunSettings, loaded: _Loaded, *, backend: str | None, plugins: list[dict[str, str]],
                started: str) -> dict:
    config_sha256 = sha256_file(settings.config_path) if settings.config_path else None
    return collect_provenance(seed=settings.seed, backend=backend, plugins=plugins, config_sha256=config_sha256,
                              inputs=_inputs(settings, loaded), started=started, finished=utc_now(),
                              processes=distributed.describe())


def _accuracies(model: torch.nn.Module, loaded: _Loaded, device: torch.device) -> dict[str, float]:
    return {f"{name}_accuracy": accuracy(model.to(device), loaded.data.rows(positions))
            for name, positions in (("retain", loaded.retain), ("forget", loaded.forget), ("test", loaded.test))}


def run_audit_checkpoint(settings: RunSettings, *, progress: ProgressCallback = no_progress) -> RunOutcome:
    """Run the battery on ``settings.checkpoint`` (as the unlearned model) against ``settings.original``."""
    started = utc_now()
    if settings.original is None:
        raise InputError("auditing needs the original model the checkpoint was derived from",
                         hint="pass --original PATH (the model trained on the full data)")
    settings = dataclasses.replace(settings, audit=True)
    resolved = _resolve(settings, with_method=False, progress=progress)
    loaded = _load(settings, resolved, settings.checkpoint)
    original = load_checkpoint(settings.original, registry=resolved.registry)
    if original.manifest.dataset != loaded.checkpoint.manifest.dataset:
        raise InputError(f"the original checkpoint is for dataset {original.manifest.dataset!r}, the audited one "
                         f"for {loaded.checkpoint.manifest.dataset!r}", hint="pass checkpoints of the same dataset")
    try:  # same dataset name, but also the same options and training split
        check_matches_dataset(original.manifest, loaded.data)
    except InputError as exc:
        raise InputError(f"--original {str(settings.original)!r}: {exc.message}", hint=exc.hint) from None
    retrained = _load_model(settings.retrained, resolved.registry, resolved.device, loaded.data, loaded.retain)
    plan = _prepare_audit(settings, resolved, loaded, original.model.to(resolved.device).eval(), progress)
    from auditkit.audit.battery import complete_audit

    audit = complete_audit(plan, unlearned=loaded.checkpoint.model.to(resolved.device).eval(), retrained=retrained,
                           progress=progress).to_dict()
    manifest = loaded.checkpoint.manifest
    def publish() -> RunOutcome:  # the writer (rank 0) alone writes the run and its trail line
        with resolved.ledger.staging() as tmp:
            plugins = [*resolved.plugins, _plugin_entry(resolved.registry, "datasets", manifest.dataset),
                       _plugin_entry(resolved.registry, "models", manifest.model)]
            record = RunRecord(
                kind="audit",
                summary={"kind": "audit", **_audit_summary(audit), "request_sha256": loaded.request.sha256,
                         "request_count": int(loaded.request.count), "original_sha256": original.sha256,
                         "unlearned_sha256": loaded.checkpoint.sha256, "method": None, "dataset": loaded.data.name},
                request=_request_block(settings, loaded),
                dataset=_dataset_block(loaded.data),
                checkpoints={"original": {"path": str(settings.original), "sha256": original.sha256},
                             "audited": {"path": str(settings.checkpoint), "sha256": loaded.checkpoint.sha256},
                             **_retrained_block(settings)},
                method=None, history=[], audit=audit,
                provenance=_provenance(settings, loaded, backend=resolved.backend, plugins=plugins, started=started),
            )
            published = _finish(record, resolved.ledger, tmp)
        return RunOutcome(record=record, out=published.out, trail=settings.trail, trail_line=published.line,
                          warnings=[*loaded.request.warnings(), *published.notes])

    return distributed.on_writer(publish)
