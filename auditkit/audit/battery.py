"""The membership-inference battery: signals once per model, every attack on them, metrics, verdicts.

For each audited model (``original``, ``unlearned`` and, when given, ``retrained``) one forward pass over
the forget set, a seeded retain sample, the test split (non-members) and the validation split (the
population) gives a :class:`~auditkit.audit.signals.SignalTable`. Every attack then scores the forget set vs
the test split and the retain sample vs the test split. The :class:`Policy` judges the unlearned model's
forget-vs-test results, two-sided: still leaking membership fails, and so does a forget set that looks
*less* like members than unseen data (over-forgetting is itself a membership signal).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np
from torch import nn

from auditkit.audit.metrics import attack_metrics, percentile_interval
from auditkit.audit.policy import Policy
from auditkit.audit.reference_models import ReferenceTrainer, train_reference_models
from auditkit.audit.results import AttackResult, AuditResult, SampleExposure, UtilityRow, Verdict
from auditkit.audit.signals import SignalTable, compute_signals
from auditkit.data import SampleSet
from auditkit.errors import InputError, RunError
from auditkit.interfaces import Attack, AttackInput
from auditkit.progress import Progress, ProgressCallback, no_progress

DEFAULT_ATTACKS = ("lr-loss", "lr-entropy", "loss", "entropy", "modified-entropy", "confidence", "grad-norm")
"""The battery run when none is chosen; the reference-model attacks (lira-offline, rmia) are opt-in."""


MODEL_NAMES = ("original", "unlearned", "retrained")


def check_battery(attacks: list[Attack], policy: Policy, *, has_reference_trainer: bool) -> None:
    """Fail early (before any training or unlearning) on a battery that :func:`run_audit` would reject."""
    names = [attack.PLUGIN_NAME for attack in attacks]
    if not names:
        raise InputError("the attack battery is empty", hint=f"name at least one attack, e.g. {DEFAULT_ATTACKS[0]}")
    if len(set(names)) != len(names):
        raise InputError(f"an attack is listed twice in {', '.join(names)}", hint="list each attack once")
    if policy.exposure_attack not in names:
        raise InputError(f"the policy's exposure attack {policy.exposure_attack!r} is not in the battery",
                         hint=f"add it to the attacks or set exposure_attack to one of {', '.join(names)}")
    needy = [attack.PLUGIN_NAME for attack in attacks if attack.reference_models()]
    if needy and not has_reference_trainer:
        raise InputError(f"{', '.join(needy)} need reference models but no reference trainer was given",
                         hint="audit a checkpoint with a recorded training recipe, or drop those attacks")


def run_audit(
    *,
    data: SampleSet,
    forget: np.ndarray,
    retain: np.ndarray,
    validation: np.ndarray,
    test: np.ndarray,
    models: Mapping[str, nn.Module],
    attacks: list[Attack],
    policy: Policy,
    seed: int,
    backend: str = "auto",
    reference_trainer: ReferenceTrainer | None = None,
    progress: ProgressCallback = no_progress,
) -> AuditResult:
    """Run the battery and judge the unlearned model.

    Args:
        data: the dataset; ``forget``, ``retain``, ``validation`` and ``test`` are ``int64`` positions into it.
        models: ``"original"`` and ``"unlearned"`` (required) and ``"retrained"`` (optional, trained
            without the forget set): each maps ``[B, *input_shape]`` to logits ``[B, C]``.
        attacks: the battery (see :data:`DEFAULT_ATTACKS`); the policy's exposure attack must be one of them.
        seed: seeds the retain sample, the reference models, the attacks and the bootstrap.
        backend: op backend for the gradient-norm signal.
        reference_trainer: trains the reference models that attacks such as ``lira-offline`` and
            ``rmia`` ask for (required only then); they are cached on disk.
        progress: receives ``signals``, ``reference-models`` and ``attacks`` stage reports; the cost of
            the reference models is announced before any of them is trained.
    """
    missing = [name for name in ("original", "unlearned") if name not in models]
    unknown = sorted(set(models) - set(MODEL_NAMES))
    if missing or unknown:
        raise InputError(f"the audit needs models 'original' and 'unlearned', got {sorted(models)}",
                         hint="pass models={'original': ..., 'unlearned': ...} and optionally 'retrained'")
    forget, retain, validation, test = (np.asarray(p, dtype=np.int64) for p in (forget, retain, validation, test))
    for name, group in (("forget", forget), ("retain", retain), ("test", test)):
        if len(group) == 0:
            raise InputError(f"the {name} set is empty", hint="check the deletion request and the dataset split")
    check_battery(attacks, policy, has_reference_trainer=reference_trainer is not None)
    reference_count = max((attack.reference_models() for attack in attacks), default=0)

    rng = np.random.default_rng(seed)
    retain_sample = np.sort(rng.choice(retain, size=min(policy.retain_sample_size, len(retain)), replace=False))
    positions = np.concatenate([forget, retain_sample, test, validation])
    groups = np.repeat(["forget", "retain", "test", "validation"],
                       [len(forget), len(retain_sample), len(test), len(validation)])

    reference_models, reference_members = None, None
    if reference_count:
        reference_models, halves = train_reference_models(
            reference_trainer, data=data, retain=retain, count=reference_count, seed=seed, progress=progress
        )
        # Which audited rows each reference model trained on: only retain rows can be members.
        reference_members = np.zeros((reference_count, len(positions)), dtype=bool)
        for k in range(reference_count):
            reference_members[k] = np.isin(positions, retain[halves[k]])

    tables: dict[str, SignalTable] = {}
    for done, (name, model) in enumerate(models.items()):
        table = compute_signals(model, data, positions, groups, model_name=name, backend=backend,
                                reference_models=reference_models if not tables else None,
                                reference_members=reference_members)
        if tables and reference_models is not None:
            # The reference models' logits do not depend on the audited model: computed once, shared.
            table = dataclasses.replace(table, reference_logits=next(iter(tables.values())).reference_logits)
        tables[name] = table
        progress(Progress("signals", done + 1, len(models), message=name))

    results, (exposure_target, exposure_scores, exposure_members) = _run_attacks(
        tables, attacks, policy=policy, seed=seed, progress=progress
    )
    verdicts = _verdicts(tables, results, attacks, policy=policy, seed=seed)
    exposures = _exposures(exposure_target, exposure_scores, exposure_members, fpr=policy.exposure_fpr)
    warnings = _design_warnings(len(forget), len(test), fpr=policy.exposure_fpr)
    return AuditResult(
        passed=all(verdict.status == "pass" for verdict in verdicts),
        policy=policy.to_dict(),
        attacks=results,
        verdicts=verdicts,
        utility=[_utility(table) for table in tables.values()],
        exposure_attack=policy.exposure_attack,
        exposures=exposures,
        losses={name: {group: table.group(group).loss.tolist() for group in ("forget", "retain", "test")}
                for name, table in tables.items()},
        warnings=warnings,
    )


def _run_attacks(
    tables: dict[str, SignalTable], attacks: list[Attack], *, policy: Policy, seed: int, progress: ProgressCallback
) -> tuple[list[AttackResult], tuple[SignalTable, np.ndarray, np.ndarray]]:
    """Every attack on every model, forget vs test and retain vs test.

    Also returns the rows, scores and member mask of the policy's exposure attack on the unlearned
    model's forget-vs-test target.
    """
    results: list[AttackResult] = []
    exposure: tuple[SignalTable, np.ndarray, np.ndarray] | None = None
    total = len(tables) * 2 * len(attacks)
    for name, table in tables.items():
        population = table.group("validation")
        calibration = table.group("retain")
        for group in ("forget", "retain"):
            target = table.take((table.groups == group) | (table.groups == "test"))
            members = target.groups == group
            for attack in attacks:
                output = attack.score(AttackInput(
                    target=target, members=members, population=population, seed=seed,
                    calibration=calibration if attack.reference_models() else None,
                ))
                scores = np.asarray(output.scores, dtype=np.float64)
                if scores.shape != (len(target),) or not np.isfinite(scores).all():
                    raise RunError(f"attack {attack.PLUGIN_NAME!r} returned {scores.shape} scores for "
                                   f"{len(target)} samples, or non-finite ones",
                                   hint="an attack must return one finite score per target row")
                metrics = attack_metrics(scores, members, seed=seed, bootstrap_rounds=policy.bootstrap_rounds)
                statistic = output.statistic
                if statistic is not None:
                    headline, value = statistic.name, statistic.value
                    ci = (statistic.ci_low if statistic.ci_low is not None else value,
                          statistic.ci_high if statistic.ci_high is not None else value)
                else:
                    headline, value, ci = "auc", metrics.auc, metrics.auc_ci
                results.append(AttackResult(
                    attack=attack.PLUGIN_NAME, model=name, population=group, metrics=metrics,
                    headline=headline, headline_value=value, headline_ci=ci,
                    statistic=dataclasses.asdict(statistic) if statistic is not None else None,
                ))
                if (name, group, attack.PLUGIN_NAME) == ("unlearned", "forget", policy.exposure_attack):
                    exposure = (target, scores, members)
                progress(Progress("attacks", len(results), total, message=f"{attack.PLUGIN_NAME} on {name}/{group}"))
    return results, exposure


def _verdicts(
    tables: dict[str, SignalTable], results: list[AttackResult], attacks: list[Attack], *, policy: Policy, seed: int
) -> list[Verdict]:
    """The policy's verdict on each attack's unlearned forget-vs-test result, plus the loss-ratio check."""
    by_key = {(r.attack, r.model, r.population): r for r in results}
    unlearned = tables["unlearned"]
    forget_loss, test_loss = unlearned.group("forget").loss, unlearned.group("test").loss
    judged = len(attacks) + 1
    verdicts = [
        policy.judge(by_key[(a.PLUGIN_NAME, "unlearned", "forget")], by_key.get((a.PLUGIN_NAME, "retrained", "forget")),
                     forget_loss_higher=forget_loss.mean() > test_loss.mean(), judged=judged)
        for a in attacks
    ]
    level = policy.verdict_level(judged)
    ratio, ci = _loss_ratio(forget_loss, test_loss, seed=seed, rounds=policy.bootstrap_rounds, level=level)
    reference = None
    if "retrained" in tables:
        reference = _loss_ratio(tables["retrained"].group("forget").loss, tables["retrained"].group("test").loss,
                                seed=seed, rounds=policy.bootstrap_rounds, level=level)[0]
    verdicts.append(policy.judge_loss_ratio(ratio, ci, reference, level=level))
    utility = {name: _utility(table).test_accuracy for name, table in tables.items()}
    verdicts.append(policy.judge_utility(utility["original"], utility["unlearned"], utility.get("retrained")))
    return verdicts


def _loss_ratio(
    forget: np.ndarray, test: np.ndarray, *, seed: int, rounds: int, level: float
) -> tuple[float, tuple[float, float]]:
    """Mean forget loss / mean test loss and its bootstrap interval at ``level`` (each set resampled separately)."""
    rng = np.random.default_rng(seed)
    tiny = np.finfo(np.float64).tiny
    forget_means = forget[rng.integers(0, len(forget), (rounds, len(forget)))].mean(1)
    test_means = test[rng.integers(0, len(test), (rounds, len(test)))].mean(1)
    ratio = float(forget.mean() / max(test.mean(), tiny))
    return ratio, percentile_interval(forget_means / np.maximum(test_means, tiny), level=level)


def _exposures(target: SignalTable, scores: np.ndarray, members: np.ndarray, *, fpr: float) -> list[SampleExposure]:
    """Each forgotten ID's score, most exposed first, and whether it clears the ``fpr`` threshold.

    The threshold is the smallest test score with at most ``fpr`` of the test scores above it, so
    flagging "score > threshold" has a false-positive rate of at most ``fpr`` on unseen data.
    """
    threshold = np.quantile(scores[~members], 1 - fpr, method="higher")
    ids, member_scores = target.ids[members], scores[members]
    order = np.argsort(-member_scores, kind="stable")
    return [SampleExposure(str(ids[i]), float(member_scores[i]), bool(member_scores[i] > threshold)) for i in order]


def _utility(table: SignalTable) -> UtilityRow:
    """Top-1 accuracy per group, from the logits the battery already computed (the retain sample for retain)."""
    def accuracy(group: str) -> float:
        rows = table.group(group)
        return float((rows.logits.argmax(1) == rows.labels).mean()) if len(rows) else float("nan")

    return UtilityRow(table.model, accuracy("retain"), accuracy("forget"), accuracy("test"))


def _design_warnings(n_forget: int, n_test: int, *, fpr: float) -> list[str]:
    """What the sizes of the audited sets limit, stated in the result rather than left for the reader to infer."""
    warnings = []
    if n_forget < 50:
        warnings.append(f"only {n_forget} forgotten samples: the intervals are wide and a pass is weak evidence")
    if n_test * fpr < 1:
        warnings.append(f"only {n_test} test samples: the {fpr:.1%} FPR threshold of the per-sample verdicts "
                        "is the largest test score")
    return warnings
