"""The membership-inference battery: signals once per model, every attack on them, metrics, verdicts.

For each audited model (``original``, ``unlearned`` and, when given, ``retrained``) one forward pass over
the forget set, a seeded retain sample, the test split (non-members) and the validation split (the
population) gives a :class:`~auditkit.audit.signals.SignalTable`. Every attack then scores the forget set vs
the test split and the retain sample vs the test split. The :class:`Policy` judges the unlearned model's
forget-vs-test results, two-sided: still leaking membership fails, and so does a forget set that looks
*less* like members than unseen data (over-forgetting is itself a membership signal).

It runs in two phases. :func:`prepare_audit` needs only the original model: reference models, signals,
every attack (so a plugin that returns the wrong number of scores fails here, before any unlearning),
and the audit's power: whether any attack detects leakage on the original model and could resolve the
policy's margin at this request size. An audit that cannot pass is known at this point, in seconds.
:func:`complete_audit` then adds the unlearned (and retrained) model and decides the outcome.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
from torch import nn

from auditkit.audit.metrics import attack_metrics
from auditkit.audit.policy import Policy
from auditkit.audit.results import AttackResult, AuditResult, PowerRow, SampleExposure, UtilityRow
from auditkit.audit.shadows import ShadowTrainer, ShadowUnlearning, train_shadows
from auditkit.audit.signals import SignalTable, compute_signals
from auditkit.audit.stats import POWER, RatioEstimate, minimum_detectable_auc, ratio_of_means, t_interval
from auditkit.data import SampleSet
from auditkit.errors import InputError, RunError
from auditkit.interfaces import Attack, AttackInput, AttackOutput
from auditkit.progress import Progress, ProgressCallback, no_progress

DEFAULT_ATTACKS = ("lr-loss", "lr-entropy", "loss", "entropy", "modified-entropy", "confidence", "grad-norm")
"""The battery run when none is chosen; the shadow-model attacks (lira-offline, rmia, u-lira) are opt-in."""


MODEL_NAMES = ("original", "unlearned", "retrained")

METHODS = {
    "auc": "Mann–Whitney AUC with DeLong's variance (fast midrank algorithm, Sun & Xu 2014) and a t quantile "
           "with min(members, non-members) − 1 degrees of freedom; an attack abstains below 2 members or 2 "
           "non-members, or when its scores are all equal",
    "lr_accuracy": "the ∇τ paper's LR attack (balanced seeded subsample, 10-split StratifiedShuffleSplit, "
                   "scikit-learn LogisticRegression() solved exactly by Newton steps), averaged over seeded "
                   "subsample draws (the attack's draws option; draw 0 is the paper's); Nadeau & Bengio's "
                   "corrected resampled t over every split, its variance floored at the binomial one",
    "verdict_intervals": "each verdict's interval at 1 − (1 − confidence)/k, Bonferroni over the k attacks and "
                         "the loss-ratio check",
    "power": f"minimum detectable AUC at {POWER:.0%} power from Hanley & McNeil's (1982) variance at the verdict "
             "confidence; minimum detectable LR accuracy from the binomial variance of each split's held-out "
             "accuracy, Nadeau & Bengio-corrected",
    "tpr_at_fpr": "TPR at the threshold only 1 % (0.1 %) of non-members exceed, exact 95 % Clopper–Pearson interval",
    "epsilon_lower_bound": "δ = 1e-5; threshold and DP inequality chosen on a seeded half of the members and "
                           "non-members, 95 % Clopper–Pearson bounds on that one threshold on the other half",
    "u_lira": "per forgotten ID, Gaussians of the logit-scaled confidence under K/2 unlearned and K/2 never-seen "
              "shadows (Hayes et al. 2024), log likelihood ratio of the audited model's value, p-value = the "
              "never-seen predictive distribution's mass where the ratio is at least as high (closed form: a "
              "quadratic region), Benjamini–Hochberg at min(fdr, 1 − verdict level); flagged share with a 95 % "
              "Clopper–Pearson interval; held-out balanced accuracy by leaving one shadow pair out",
    "forget_loss_ratio": "mean forget loss / mean test loss; interval from the pivot mean(A)/mean(B) of "
                         "test losses resampled at both sets' sizes (valid for heavy-tailed losses under "
                         "forget ~ R · test); abstains below 2 forgotten samples",
}
"""How each statistic in the result was computed (recorded as ``AuditResult.methods``)."""


def check_battery(attacks: list[Attack], policy: Policy, *, has_reference_trainer: bool,
                  has_unlearning: bool = False) -> None:
    """Fail early (before any training or unlearning) on a battery that :func:`run_audit` would reject.

    ``has_unlearning``: the audited run's unlearning method is known (u-lira's unlearned shadows need it).
    """
    names = [attack.PLUGIN_NAME for attack in attacks]
    if not names:
        raise InputError("the attack battery is empty", hint=f"name at least one attack, e.g. {DEFAULT_ATTACKS[0]}")
    if len(set(names)) != len(names):
        raise InputError(f"an attack is listed twice in {', '.join(names)}", hint="list each attack once")
    if policy.exposure_attack not in names:
        raise InputError(f"the policy's exposure attack {policy.exposure_attack!r} is not in the battery",
                         hint=f"add it to the attacks or set exposure_attack to one of {', '.join(names)}")
    needy = [attack.PLUGIN_NAME for attack in attacks if attack.reference_models() or attack.shadow_pairs()]
    if needy and not has_reference_trainer:
        raise InputError(f"{', '.join(needy)} need reference models but no reference trainer was given",
                         hint="audit a checkpoint with a recorded training recipe, or drop those attacks")
    unlearning = [attack.PLUGIN_NAME for attack in attacks if attack.shadow_pairs()]
    if unlearning and not has_unlearning:
        raise InputError(f"{', '.join(unlearning)} unlearns shadow models with the audited run's method, and none "
                         "was given", hint="name how the audited checkpoint was unlearned: --method NAME "
                                           "[--option KEY=VALUE], or drop u-lira")


@dataclass
class AuditPlan:
    """What :func:`prepare_audit` found with the original model alone; :func:`complete_audit` finishes it.

    ``diagnosis`` says whether the audit can pass and why; ``conclusive_hint`` is None when it can,
    else what would make it conclusive (the outcome can then only be failed or inconclusive).
    """

    data: SampleSet
    forget: np.ndarray
    retain: np.ndarray
    test: np.ndarray
    positions: np.ndarray
    groups: np.ndarray
    attacks: list[Attack]
    policy: Policy
    seed: int
    backend: str
    level: float
    reference_models: list[nn.Module] | None
    reference_members: np.ndarray | None
    reference_hashes: list[str]
    pair_hashes: tuple[list[str], list[str]]
    unlearning: dict | None
    tables: dict[str, SignalTable]
    results: list[AttackResult]
    power: list[PowerRow]
    diagnosis: str
    conclusive_hint: str | None
    exposure_scores: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def can_pass(self) -> bool:
        return self.conclusive_hint is None


def prepare_audit(
    *,
    data: SampleSet,
    forget: np.ndarray,
    retain: np.ndarray,
    validation: np.ndarray,
    test: np.ndarray,
    original: nn.Module,
    attacks: list[Attack],
    policy: Policy,
    seed: int,
    backend: str = "auto",
    reference_trainer: ShadowTrainer | None = None,
    shadow_unlearning: ShadowUnlearning | None = None,
    progress: ProgressCallback = no_progress,
) -> AuditPlan:
    """Phase one: everything the audit needs from the original model, before any unlearning.

    Trains (or loads) the reference models, computes the original model's signals, runs every attack on
    it (checking each plugin's output), and states the audit's power. Reports a ``power`` stage with the
    diagnosis through ``progress``. See :func:`run_audit` for the arguments.
    """
    forget, retain, validation, test = (np.asarray(p, dtype=np.int64) for p in (forget, retain, validation, test))
    for name, group in (("forget", forget), ("retain", retain), ("test", test)):
        if len(group) == 0:
            raise InputError(f"the {name} set is empty", hint="check the deletion request and the dataset split")
    check_battery(attacks, policy, has_reference_trainer=reference_trainer is not None,
                  has_unlearning=shadow_unlearning is not None)
    reference_count = max((attack.reference_models() for attack in attacks), default=0)
    pairs = max((attack.shadow_pairs() for attack in attacks), default=0)
    on_halves = {attack.shadow_pairs_on_halves() for attack in attacks if attack.shadow_pairs()}
    if len(on_halves) > 1:
        raise InputError("the battery's per-example attacks ask for shadow pairs on halves and on the whole retain "
                         "set at once", hint="run them in separate audits (the shadows are cached)")

    rng = np.random.default_rng(seed)
    retain_sample = np.sort(rng.choice(retain, size=min(policy.retain_sample_size, len(retain)), replace=False))
    positions = np.concatenate([forget, retain_sample, test, validation])
    groups = np.repeat(["forget", "retain", "test", "validation"],
                       [len(forget), len(retain_sample), len(test), len(validation)])

    reference_models, reference_members, reference_hashes, pair_hashes = None, None, [], ([], [])
    shadow_models: list[nn.Module] = []
    if reference_count or pairs:
        # The largest count any attack asks for is trained once; each attack then gets its first K.
        halves_only = on_halves == {True}
        shadows = train_shadows(reference_trainer, data=data, retain=retain, references=reference_count, seed=seed,
                                pairs=pairs, unlearning=shadow_unlearning, halves_only=halves_only, progress=progress)
        reference_models, reference_hashes = shadows.references, shadows.reference_hashes
        pair_hashes = (shadows.never_seen_hashes, shadows.unlearned_hashes)
        # Which audited rows each reference model trained on: only retain rows can be members.
        reference_members = np.zeros((len(reference_models), len(positions)), dtype=bool)
        for k in range(len(reference_models)):
            reference_members[k] = np.isin(positions, retain[shadows.halves[k]])
        # One forward pass for every shadow model (on halves, the never-seen ones are reference models).
        shadow_models = [*reference_models, *([] if halves_only else shadows.never_seen), *shadows.unlearned]

    table = compute_signals(original, data, positions, groups, model_name="original", backend=backend,
                            reference_models=shadow_models or None)
    if shadow_models:
        logits, count = table.reference_logits, len(reference_models)
        never_seen = logits[:pairs] if halves_only else logits[count:count + pairs]
        table = dataclasses.replace(table, reference_logits=logits[:count] if count else None,
                                    reference_members=reference_members if count else None,
                                    never_seen_logits=never_seen if pairs else None,
                                    unlearned_logits=logits[len(logits) - pairs:] if pairs else None)
    progress(Progress("signals", 1, 1, message="original"))
    level = policy.verdict_level(len(attacks) + 1)
    plan = AuditPlan(data=data, forget=forget, retain=retain, test=test, positions=positions, groups=groups,
                     attacks=attacks, policy=policy, seed=seed, backend=backend, level=level,
                     reference_models=reference_models, reference_members=reference_members,
                     reference_hashes=reference_hashes, pair_hashes=pair_hashes,
                     unlearning=shadow_unlearning.key() if shadow_unlearning and pairs else None,
                     tables={"original": table}, results=[], power=[],
                     diagnosis="", conclusive_hint=None)
    plan.results = _attack_results(plan, table, progress=progress)
    higher = _forget_loss_higher(table)
    plan.power = [policy.power(_find(plan.results, a.PLUGIN_NAME, "original"), level=level, forget_loss_higher=higher)
                  for a in attacks]
    plan.diagnosis, plan.conclusive_hint = policy.diagnose(plan.power, n_forget=len(forget), n_test=len(test),
                                                           level=level)
    verdict = "the audit can pass: " if plan.can_pass else "the audit will be inconclusive (unless a check fails): "
    progress(Progress("power", 0, 1, message=verdict + plan.diagnosis))
    progress(Progress("power", 1, 1))
    return plan


def complete_audit(
    plan: AuditPlan,
    *,
    unlearned: nn.Module,
    retrained: nn.Module | None = None,
    progress: ProgressCallback = no_progress,
) -> AuditResult:
    """Phase two: the unlearned (and retrained) model's signals and attacks, the verdicts and the outcome."""
    shadows = plan.tables["original"]
    models = {"unlearned": unlearned, **({"retrained": retrained} if retrained is not None else {})}
    for done, (name, model) in enumerate(models.items()):
        table = compute_signals(model, plan.data, plan.positions, plan.groups, model_name=name, backend=plan.backend)
        # The shadow models' logits do not depend on the audited model: computed once, shared.
        table = dataclasses.replace(table, reference_logits=shadows.reference_logits,
                                    reference_members=shadows.reference_members,
                                    never_seen_logits=shadows.never_seen_logits,
                                    unlearned_logits=shadows.unlearned_logits)
        plan.tables[name] = table
        progress(Progress("signals", done + 1, len(models), message=name))
        plan.results += _attack_results(plan, table, progress=progress)

    policy, tables, results = plan.policy, plan.tables, plan.results
    unlearned_table = tables["unlearned"]
    higher = _forget_loss_higher(unlearned_table)
    verdicts = [policy.judge(_find(results, a.PLUGIN_NAME, "unlearned"), _find(results, a.PLUGIN_NAME, "retrained"),
                             forget_loss_higher=higher, level=plan.level) for a in plan.attacks]
    retrained_ratio = _loss_ratio(tables["retrained"], seed=plan.seed) if "retrained" in tables else None
    verdicts.append(policy.judge_loss_ratio(_loss_ratio(unlearned_table, seed=plan.seed),
                                            retrained_ratio.ratio if retrained_ratio else None, level=plan.level))
    utility = {name: _utility(table) for name, table in tables.items()}
    verdicts.append(policy.judge_utility(utility["original"].test_accuracy, utility["unlearned"].test_accuracy,
                                         utility["retrained"].test_accuracy if "retrained" in utility else None))
    outcome, reason, hint = policy.decide(verdicts, plan.power, n_forget=len(plan.forget), n_test=len(plan.test),
                                          level=plan.level)
    return AuditResult(
        outcome=outcome,
        outcome_reason=reason,
        conclusive_hint=hint,
        passed={"passed": True, "failed": False}.get(outcome),
        policy=policy.to_dict(),
        verdict_level=plan.level,
        attacks=results,
        verdicts=verdicts,
        power=plan.power,
        utility=list(utility.values()),
        exposure_attack=policy.exposure_attack,
        exposures=_exposures(plan, fpr=policy.exposure_fpr),
        losses={name: {group: _loss(table, group).tolist() for group in ("forget", "retain", "test")}
                for name, table in tables.items()},
        methods=dict(METHODS),
        warnings=_design_warnings(plan),
    )


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
    reference_trainer: ShadowTrainer | None = None,
    shadow_unlearning: ShadowUnlearning | None = None,
    progress: ProgressCallback = no_progress,
) -> AuditResult:
    """Run the battery and judge the unlearned model: :func:`prepare_audit` then :func:`complete_audit`.

    Args:
        data: the dataset; ``forget``, ``retain``, ``validation`` and ``test`` are ``int64`` positions into it.
        models: ``"original"`` and ``"unlearned"`` (required) and ``"retrained"`` (optional, trained
            without the forget set): each maps ``[B, *input_shape]`` to logits ``[B, C]``.
        attacks: the battery (see :data:`DEFAULT_ATTACKS`); the policy's exposure attack must be one of them.
        seed: seeds the retain sample, the reference models, the attacks and the ε halves.
        backend: op backend for the gradient-norm signal.
        reference_trainer: trains the reference models that attacks such as ``lira-offline`` and
            ``rmia`` ask for (required only then); they are cached on disk.
        shadow_unlearning: the audited run's method, for the unlearned shadows ``u-lira`` asks for.
        progress: receives ``signals``, ``reference-models``, ``attacks`` and ``power`` stage reports;
            the cost of the reference models is announced before any of them is trained.
    """
    missing = [name for name in ("original", "unlearned") if name not in models]
    unknown = sorted(set(models) - set(MODEL_NAMES))
    if missing or unknown:
        raise InputError(f"the audit needs models 'original' and 'unlearned', got {sorted(models)}",
                         hint="pass models={'original': ..., 'unlearned': ...} and optionally 'retrained'")
    plan = prepare_audit(data=data, forget=forget, retain=retain, validation=validation, test=test,
                         original=models["original"], attacks=attacks, policy=policy, seed=seed, backend=backend,
                         reference_trainer=reference_trainer, shadow_unlearning=shadow_unlearning, progress=progress)
    return complete_audit(plan, unlearned=models["unlearned"], retrained=models.get("retrained"), progress=progress)


@functools.lru_cache(maxsize=32)
def _minimum_detectable_auc(n_members: int, n_nonmembers: int, level: float) -> float | None:
    return minimum_detectable_auc(n_members, n_nonmembers, level=level)


def _find(results: list[AttackResult], attack: str, model: str, population: str = "forget") -> AttackResult | None:
    return next((r for r in results if (r.attack, r.model, r.population) == (attack, model, population)), None)


def _with_references(table: SignalTable, count: int, pairs: int = 0) -> SignalTable:
    """``table`` carrying only its first ``count`` reference models and first ``pairs`` shadow pairs (none for 0)."""

    def first(values: np.ndarray | None, k: int) -> np.ndarray | None:
        return values[:k] if k and values is not None else None

    return dataclasses.replace(table, reference_logits=first(table.reference_logits, count),
                               reference_members=first(table.reference_members, count),
                               never_seen_logits=first(table.never_seen_logits, pairs),
                               unlearned_logits=first(table.unlearned_logits, pairs))


def _attack_results(plan: AuditPlan, table: SignalTable, *, progress: ProgressCallback) -> list[AttackResult]:
    """Every attack on ``table``'s model, forget vs test and retain sample vs test."""
    results: list[AttackResult] = []
    total = 2 * len(plan.attacks)
    population, calibration = table.group("validation"), table.group("retain")
    for group in ("forget", "retain"):
        rows = table.take((table.groups == group) | (table.groups == "test"))
        members = rows.groups == group
        n_members, n_nonmembers = int(members.sum()), int((~members).sum())
        for attack in plan.attacks:
            count, pairs = attack.reference_models(), attack.shadow_pairs()
            output = attack.score(AttackInput(
                target=_with_references(rows, count, pairs), members=members,
                population=_with_references(population, count, pairs), seed=plan.seed,
                calibration=_with_references(calibration, count, pairs) if count else None, level=plan.level,
            ))
            scores = _checked_scores(attack, output, len(rows))
            result = _result(attack, output, scores, members, model=table.model, population=group,
                             level=plan.level, seed=plan.seed)
            result.reference_models = [*plan.reference_hashes[:count], *plan.pair_hashes[0][:pairs],
                                       *plan.pair_hashes[1][:pairs]]
            if pairs and plan.unlearning is not None:
                result.parameters["unlearned_shadows"] = {**plan.unlearning, "pairs": pairs}
            if result.headline == "auc":
                result.minimum_detectable = _minimum_detectable_auc(n_members, n_nonmembers, plan.level)
            else:
                result.minimum_detectable = attack.minimum_detectable_statistic(
                    n_members=n_members, n_nonmembers=n_nonmembers, level=plan.level)
            results.append(result)
            if group == "forget" and attack.PLUGIN_NAME == plan.policy.exposure_attack and scores is not None:
                plan.exposure_scores[table.model] = scores
            progress(Progress("attacks", len(results), total, message=f"{attack.PLUGIN_NAME} on {table.model}/{group}"))
    return results


def _checked_scores(attack: Attack, output: AttackOutput, rows: int) -> np.ndarray | None:
    """The attack's ``[rows]`` float64 scores, or a :class:`RunError` naming what the plugin got wrong."""
    name = attack.PLUGIN_NAME
    if not isinstance(output, AttackOutput):
        raise RunError(f"attack {name!r} returned {type(output).__name__}, not an AttackOutput",
                       hint="return AttackOutput(scores=...) from score()")
    if output.scores is None:
        if output.abstained:
            return None
        raise RunError(f"attack {name!r} returned no scores without abstaining",
                       hint="return one score per target row, or AttackOutput(scores=None, abstained='why')")
    scores = np.asarray(output.scores, dtype=np.float64)
    if scores.shape != (rows,):
        raise RunError(f"attack {name!r} returned scores of shape {list(scores.shape)} for {rows} target rows",
                       hint="an attack must return one finite score per row of data.target")
    if not np.isfinite(scores).all():
        raise RunError(f"attack {name!r} returned {int((~np.isfinite(scores)).sum())} non-finite scores",
                       hint="an attack must return one finite score per row of data.target")
    statistic = output.statistic
    if statistic is not None and not all(
            value is None or math.isfinite(value)
            for value in (statistic.value, statistic.ci_low, statistic.ci_high, statistic.se, statistic.df)):
        raise RunError(f"attack {name!r} returned a non-finite statistic {statistic.name!r}",
                       hint="return finite values (or None) in Statistic")
    return scores


def _result(attack: Attack, output: AttackOutput, scores: np.ndarray | None, members: np.ndarray, *, model: str,
            population: str, level: float, seed: int) -> AttackResult:
    """One attack's result: its metrics when the scores can rank, its headline unless it abstains."""
    n_members, n_nonmembers = int(members.sum()), int((~members).sum())
    statistic = output.statistic
    base = {"attack": attack.PLUGIN_NAME, "model": model, "population": population,
            "parameters": dict(output.parameters), "per_example": output.per_example}
    metrics = None
    rankable = scores is not None and n_members >= 2 and n_nonmembers >= 2 and scores.min() < scores.max()
    if rankable:
        metrics = attack_metrics(scores, members, seed=seed)
    abstained = output.abstained
    if abstained is None and statistic is None and not rankable:
        abstained = (f"an AUC interval needs at least 2 members and 2 non-members, and there are {n_members} "
                     f"and {n_nonmembers}" if min(n_members, n_nonmembers) < 2
                     else "its scores are all equal, so they cannot rank these samples")
    if abstained is None and statistic is not None and statistic.se is None and (
            statistic.ci_low is None or statistic.ci_high is None):
        abstained = f"its statistic {statistic.name!r} comes without an interval"
    if abstained:
        return AttackResult(**base, metrics=metrics, headline=statistic.name if statistic else "auc",
                            headline_value=None, headline_ci=None, abstained=abstained,
                            statistic=dataclasses.asdict(statistic) if statistic else None)
    if statistic is None:
        return AttackResult(**base, metrics=metrics, headline="auc", headline_value=metrics.auc,
                            headline_ci=metrics.auc_ci, headline_se=metrics.auc_se, headline_df=metrics.auc_df)
    ci = (statistic.ci_low, statistic.ci_high)
    if None in ci:  # only a standard error: its own 95 % interval
        ci = t_interval(statistic.value, statistic.se, statistic.df, 0.95)
    return AttackResult(**base, metrics=metrics, headline=statistic.name, headline_value=statistic.value,
                        headline_ci=ci, headline_se=statistic.se, headline_df=statistic.df,
                        statistic=dataclasses.asdict(statistic))


def _loss(table: SignalTable, group: str) -> np.ndarray:
    """The per-sample losses of one group (without copying the table's logits, as ``table.group`` would)."""
    return table.loss[table.groups == group]


def _forget_loss_higher(table: SignalTable) -> bool:
    return bool(_loss(table, "forget").mean() > _loss(table, "test").mean())


def _loss_ratio(table: SignalTable, *, seed: int) -> RatioEstimate | None:
    """Mean forget loss / mean test loss with its interval, or None with fewer than 2 forgotten samples."""
    forget, test = _loss(table, "forget"), _loss(table, "test")
    return ratio_of_means(forget, test, seed=seed) if len(forget) >= 2 and len(test) >= 2 else None


def _exposures(plan: AuditPlan, *, fpr: float) -> list[SampleExposure]:
    """Each forgotten ID's score under the exposure attack, most exposed first, and whether it is flagged.

    The threshold is the smallest test score with at most ``fpr`` of the test scores above it, so
    flagging "score > threshold" has a false-positive rate of at most ``fpr`` on unseen data.
    """
    scores = plan.exposure_scores.get("unlearned")
    if scores is None:
        return []
    target = plan.tables["unlearned"]
    rows = (target.groups == "forget") | (target.groups == "test")
    members = target.groups[rows] == "forget"
    threshold = np.quantile(scores[~members], 1 - fpr, method="higher")
    ids, member_scores = target.ids[rows][members], scores[members]
    losses, original_losses = _loss(target, "forget"), _loss(plan.tables["original"], "forget")
    order = np.argsort(-member_scores, kind="stable")
    return [SampleExposure(str(ids[i]), float(member_scores[i]), float(losses[i]), float(original_losses[i]),
                           bool(member_scores[i] > threshold)) for i in order]


def _utility(table: SignalTable) -> UtilityRow:
    """Top-1 accuracy per group, from the logits the battery already computed (the retain sample for retain)."""
    correct = table.logits.argmax(1) == table.labels

    def accuracy(group: str) -> float:
        rows = table.groups == group
        return float(correct[rows].mean()) if rows.any() else float("nan")

    return UtilityRow(table.model, accuracy("retain"), accuracy("forget"), accuracy("test"))


def _design_warnings(plan: AuditPlan) -> list[str]:
    """What the sizes of the audited sets limit, stated in the result rather than left for the reader to infer."""
    n_forget, n_test, fpr = len(plan.forget), len(plan.test), plan.policy.exposure_fpr
    warnings = []
    auc = minimum_detectable_auc(n_forget, n_test, level=plan.level)
    if auc is None:
        warnings.append(f"only {n_forget} forgotten sample{'s' if n_forget != 1 else ''}: no population attack "
                        f"can detect any leak at {plan.level:.1%} confidence")
    elif auc - 0.5 > plan.policy.detectable_margin:
        warnings.append(f"only {n_forget} forgotten samples: a leak smaller than AUC {auc:.3f} is likely to go "
                        "unseen")
    if n_test * fpr < 1:
        warnings.append(f"only {n_test} test samples: the {fpr:.1%} FPR threshold of the per-sample verdicts "
                        "is the largest test score")
    return warnings
