"""The four plugin contracts (datasets, models, unlearning methods, attacks) and what flows between them.

A plugin is a class with a ``PLUGIN_NAME`` and an ``OPTIONS`` mapping of option names to defaults.
Options arrive as keyword arguments (from the CLI ``--option key=value``, auditkit.toml, or code);
unknown names are rejected with the closest valid name, and strings are coerced to the default's type.
"""

from __future__ import annotations

import difflib
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from auditkit.audit.signals import SignalTable
from auditkit.data import SampleSet
from auditkit.errors import InputError
from auditkit.progress import ProgressCallback, no_progress
from auditkit.training import TrainRecipe


def _coerce(name: str, value: Any, default: Any) -> Any:
    if default is None or not isinstance(value, str) or isinstance(default, str):
        return value
    try:
        if isinstance(default, bool):
            lowered = value.strip().lower()
            if lowered in {"1", "true", "yes", "on"}:
                return True
            if lowered in {"0", "false", "no", "off"}:
                return False
            raise ValueError(value)
        if isinstance(default, (list, tuple)):
            return type(default)(int(part) for part in value.split(",") if part.strip())
        return type(default)(value)
    except ValueError:
        raise InputError(
            f"option {name}={value!r} is not a valid {type(default).__name__}",
            hint=f"pass a value like {name}={default!r}",
        ) from None


class Plugin:
    """Base of every plugin: a name, documented options with defaults, and validated construction."""

    PLUGIN_NAME: ClassVar[str]
    DESCRIPTION: ClassVar[str] = ""
    OPTIONS: ClassVar[dict[str, Any]] = {}

    def __init__(self, **options: Any) -> None:
        unknown = sorted(set(options) - set(self.OPTIONS))
        if unknown:
            name = unknown[0]
            close = difflib.get_close_matches(name, list(self.OPTIONS), n=1)
            valid = ", ".join(sorted(self.OPTIONS)) or "none"
            hint = f"did you mean {close[0]!r}?" if close else f"valid options: {valid}"
            raise InputError(f"{self.PLUGIN_NAME} has no option {name!r}", hint=hint)
        self.options: dict[str, Any] = {
            key: _coerce(key, options.get(key, default), default) for key, default in self.OPTIONS.items()
        }


class DatasetPlugin(Plugin, ABC):
    """Produces a :class:`SampleSet` with stable IDs and a fixed train/validation/test split.

    ``DEFAULT_MODEL``, ``DEFAULT_MODEL_OPTIONS`` and ``DEFAULT_RECIPE`` are what ``auditkit train``
    uses when no model or recipe is given: a combination that leaves a measurable membership signal.
    """

    DEFAULT_MODEL: ClassVar[str] = "mlp"
    DEFAULT_MODEL_OPTIONS: ClassVar[dict[str, Any]] = {}
    DEFAULT_RECIPE: ClassVar[TrainRecipe] = TrainRecipe()

    @abstractmethod
    def load(self) -> SampleSet:
        """Load the data; deterministic for the same options (the split seed is an option)."""


class ModelPlugin(Plugin, ABC):
    """Builds a freshly initialised ``nn.Module`` mapping ``[B, *input_shape]`` to logits ``[B, C]``."""

    @abstractmethod
    def build(self, *, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
        """Return a new model; the caller seeds torch beforehand for reproducible initialisation."""


@dataclass
class UnlearningTask:
    """Everything an unlearning method may use.

    ``forget``, ``retain``, ``validation`` and ``test`` are ``int64`` positions into ``data``; the
    retain set is the training split minus the forget set. Read rows with ``data.rows(positions)`` and
    :func:`auditkit.data.stream` (in memory or streamed alike), never ``data.features``. ``model`` is a
    private copy of the original model that the method may modify; ``build_model`` returns a freshly
    initialised model of the same architecture (for retraining from scratch); ``recipe`` is how the
    original was trained, ``None`` for a checkpoint adopted without one (see ``NEEDS_RECIPE``).
    """

    model: nn.Module
    build_model: Callable[[], nn.Module]
    recipe: TrainRecipe | None
    data: SampleSet
    forget: np.ndarray
    retain: np.ndarray
    validation: np.ndarray
    test: np.ndarray
    seed: int
    backend: str = "auto"
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))


@dataclass
class UnlearningOutcome:
    """What a method returns: the new weights, a per-epoch history, and the settings it resolved."""

    state_dict: dict[str, torch.Tensor]
    history: list[dict[str, float]]
    settings: dict[str, Any]
    backend: str


class UnlearningMethod(Plugin, ABC):
    """Removes the forget set's influence from a trained model.

    ``NEEDS_RECIPE``: the method trains with the checkpoint's recorded recipe (``task.recipe``), so it
    is refused up front for a checkpoint adopted without one.
    """

    NEEDS_RECIPE: ClassVar[bool] = False

    @abstractmethod
    def unlearn(self, task: UnlearningTask, *, progress: ProgressCallback = no_progress) -> UnlearningOutcome:
        """Run the method; never modifies anything but ``task.model``."""


@dataclass(frozen=True)
class AttackInput:
    """What an attack sees: signals, never a model.

    ``target`` holds the candidate rows (members then non-members, in any order) and ``members`` is
    the ``[N]`` bool mask of the member group (forget or retain samples); ``population`` holds samples
    that no audited model was trained on (the validation split), for attacks that need reference points
    (RMIA's z samples, calibration). ``calibration``, given only to attacks that asked for reference
    models, holds retain rows with ``reference_members`` set (samples some reference models trained on),
    for tuning an attack's parameters on a reference model (RMIA's ``a``). ``level``: the confidence of
    each of the audit's verdicts (Bonferroni over its checks), for an attack that tests at an error rate
    (u-lira's Benjamini–Hochberg rate is at most ``1 − level``).
    """

    target: SignalTable
    members: np.ndarray
    population: SignalTable
    seed: int
    calibration: SignalTable | None = None
    level: float = 0.95


@dataclass(frozen=True)
class Statistic:
    """An attack's own headline number (e.g. the paper's cross-validated LR accuracy).

    ``ci_low``/``ci_high``: its 95 % interval. ``se`` and ``df``: its standard error and degrees of
    freedom (None = normal), from which the battery computes the interval at the verdicts' confidence;
    without them the 95 % interval is stretched by the ratio of normal quantiles. A statistic with no
    interval at all cannot be judged: the attack abstains. ``spread``: optional standard deviation of
    the value over the attack's own repetitions (e.g. subsample draws), shown beside it.
    """

    name: str
    value: float
    ci_low: float | None = None
    ci_high: float | None = None
    chance: float = 0.5
    se: float | None = None
    df: float | None = None
    spread: float | None = None


@dataclass(frozen=True)
class AttackOutput:
    """What an attack returns.

    ``scores``: ``[N]`` float64, higher means more likely a member (may be None only when abstaining).
    ``statistic``: optional headline instead of the AUC. ``parameters``: every parameter the attack
    tuned or resolved (e.g. RMIA's ``a``), recorded with its result. ``abstained``: None, or why the
    attack cannot decide on this input (e.g. too few members for its cross-validation); an abstaining
    attack cannot make the audit pass or fail. ``per_example``: a per-example attack's decision on each
    member row, ``{"id", "score", "p_value", "flagged"}`` each; the policy then fails the audit when any
    ID is flagged (see :meth:`auditkit.audit.policy.Policy.judge`).
    """

    scores: np.ndarray | None
    statistic: Statistic | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    abstained: str | None = None
    per_example: list[dict[str, Any]] | None = None


class Attack(Plugin, ABC):
    """A membership-inference attack: a pure function of a signal table.

    An attack whose :meth:`reference_models` is > 0 asks the battery to train that many reference
    models (on random halves of the retain set) and put their signals in
    ``SignalTable.reference_logits``; such attacks are opt-in. One whose :meth:`shadow_pairs` is P > 0
    asks for P shadow pairs (u-lira's): pair j's never-seen shadow trained on the retain set and its
    unlearned one on the retain set plus the forget set, then unlearned with the audited run's method,
    both with seed j (``SignalTable.never_seen_logits`` / ``unlearned_logits``); with
    :meth:`shadow_pairs_on_halves`, on reference model j's retain half instead (the never-seen shadow is
    then reference model j).
    """

    def reference_models(self) -> int:
        """How many reference models this attack needs (0 for attacks that use the target alone)."""
        return 0

    def shadow_pairs(self) -> int:
        """How many never-seen / unlearned shadow pairs this attack needs (0 for all but per-example attacks)."""
        return 0

    def shadow_pairs_on_halves(self) -> bool:
        """Whether its shadow pairs train on reference models' retain halves rather than the whole retain set."""
        return False

    def minimum_detectable_statistic(self, *, n_members: int, n_nonmembers: int, level: float) -> float | None:
        """For an attack that returns a :class:`Statistic`: the smallest value of it that a verdict at
        ``level`` detects with 80 % power at these sizes, or None when unknown (such an attack can then
        fail an audit but never make it conclusive). Attacks judged by their AUC need not override it."""
        return None

    @abstractmethod
    def score(self, data: AttackInput) -> AttackOutput:
        """Score every row of ``data.target``; must not look at anything but the signals given."""
