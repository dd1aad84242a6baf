"""The shared forget loop behind ∇τ and its baselines (fine-tuning, NegGrad+), and its schedules.

The loop follows the ∇τ paper's official code (Trippa et al., arXiv 2403.14339): AdamW, a linear
learning-rate decay stepped once per *forget epoch* (one pass over the forget set), one retain batch
per forget batch drawn from a cycling retain loader, the target loss τ taken as the mean loss of the
current model on the validation split and refreshed every few forget epochs, and a forget weight α
that decays linearly to zero. Methods differ only in the per-step objective they plug in.

∇τ has two configurations (:data:`PRESETS`). ``official`` is the paper's code: α0 = 5/3 × the forget
fraction, about three passes over the retain set, at most 100 forget epochs. ``adaptive`` (the default)
keeps the loss, α0, the optimiser and the linear schedules, but reads one snapshot of the model before
unlearning, the *gap* ``τ − mean forget loss`` (in nats), and takes ``1 + ln(1 + gap) / 3`` times the
official step count with no epoch cap. The step count is a number of retain passes, so it does not grow
as the forget set shrinks; only the (cheap) epochs get shorter, and τ is refreshed at most 10 times.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from auditkit import distributed, ops
from auditkit.audit.metrics import lr_mia_accuracies
from auditkit.audit.signals import SignalTable, compute_signals, exact_loss, true_class_log_odds
from auditkit.data import stream
from auditkit.errors import InputError, RunError
from auditkit.interfaces import UnlearningOutcome, UnlearningTask
from auditkit.progress import Progress, ProgressCallback, no_progress
from auditkit.training import eager_optimizer, predict_logits

#: The official code's batch size, kept whenever the data is large enough for it.
DEFAULT_MAX_BATCH_SIZE = 256
#: Fewest retain batches a run aims for. ∇τ takes about ``3 × retain_batches`` steps, so on small
#: data the batch shrinks until a run still takes ~384 steps, inside the 350-570 steps of the
#: official CIFAR-10 runs (137-190 retain batches of 256 at 30/15/3 % forgotten).
DEFAULT_MIN_RETAIN_BATCHES = 128
#: Smallest batch the rule picks: the forget term is a batch mean, which needs a few samples.
DEFAULT_MIN_BATCH_SIZE = 8
#: Fewest samples per side for which the LR membership attack of the history is computed.
_MIN_MIA_SAMPLES = 10
#: ∇τ's configurations: the default first.
PRESETS = ("adaptive", "official")
#: Most τ refreshes (and history entries) in one adaptive run: each reads the whole validation split.
ADAPTIVE_MAX_TAU_REFRESHES = 10


def choose_batch_size(
    *,
    n_retain: int,
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
    min_retain_batches: int = DEFAULT_MIN_RETAIN_BATCHES,
    min_batch_size: int = DEFAULT_MIN_BATCH_SIZE,
) -> int:
    """The batch size of both loaders: ``min(max, max(min_batch, n_retain // min_retain_batches))``.

    With the defaults, data with at least 256 × 128 = 32,768 retain samples gets the official 256;
    smaller data gets a batch that still yields at least 128 retain batches (about 3 × 128 ∇τ
    steps), floored at 8. Below 1,024 retain samples the floor leaves fewer batches, and
    :func:`resolve_loop` makes up the steps with more passes instead.
    """
    if n_retain < 1:
        raise InputError("the retain set is empty", hint="forget fewer samples than the training split holds")
    return int(min(max_batch_size, max(min_batch_size, n_retain // min_retain_batches)))


def forget_epoch_count(
    *, retain_batches: int, forget_batches: int, retain_passes: float, max_epochs: int | None
) -> int:
    """Forget epochs so that the run draws about ``retain_passes`` passes over the retain set.

    Every forget epoch consumes ``forget_batches`` retain batches, so the count is
    ``floor(retain_batches × retain_passes / forget_batches)``, at least 1 and at most ``max_epochs``
    (``None``: no cap).
    The official ∇τ code's ``int(retain_batches / (2 × forget_batches) × 6)`` is ``retain_passes=3``
    (computed here in exact integer arithmetic); its fine-tuning baseline is ``retain_passes=6``.
    """
    if forget_batches < 1:
        raise InputError("the forget set is empty", hint="list at least one training sample to forget")
    if isinstance(retain_passes, int):
        epochs = retain_batches * retain_passes // forget_batches
    else:
        epochs = math.floor(retain_batches * retain_passes / forget_batches)
    return max(1, epochs if max_epochs is None else min(max_epochs, epochs))


def default_alpha(*, n_forget: int, n_train: int) -> float:
    """The official starting forget weight ``α0 = 5/3 × |forget| / |train|``, at most 1.

    That is 0.05 / 0.25 / 0.5 at 3 / 15 / 30 % forgotten.
    """
    return min(1.0, 5.0 / 3.0 * n_forget / n_train)


def forget_loss_gap(*, forget_loss: float, tau: float) -> float:
    """``max(0, τ − forget_loss)``: how far (in nats) the mean forget loss sits below τ before unlearning.

    The squared ReLU's gradient is ``2α(τ − ℓf)·∇ℓf``: the gap is how much ascent the forget set needs.
    """
    if not (math.isfinite(forget_loss) and math.isfinite(tau)):
        raise RunError(f"the loss before unlearning is not finite (mean forget loss {forget_loss}, τ {tau}); "
                       "no weights were returned",
                       hint="check the checkpoint and the data: the model must give finite losses on the forget "
                            "and validation rows")
    return max(0.0, tau - forget_loss)


def adaptive_step_scale(*, gap: float) -> float:
    """The adaptive preset's multiple of the official step count: ``1 + ln(1 + gap) / 3``.

    More ascent the further the forget set sits below τ: the official ~3 retain passes under-forget the
    50k ``tensors`` workload (gap 11 nats: LR-MIA 0.527 against retraining's 0.499 at 10 %, seed 0); 1.83×
    as many steps reach 0.509. The logarithm keeps the cost in check (at most ~3.3× for a gap of 1000).
    """
    return 1.0 + math.log1p(gap) / 3.0


def linear_alphas(alpha0: float, epochs: int) -> list[float]:
    """``[epochs]`` forget weights ``α0 × (1 − e / epochs)`` for forget epoch ``e = 0 … epochs−1``.

    This is the official schedule: α drops by ``α0 / epochs`` after every forget epoch, reaching 0 at the end.
    """
    return [alpha0 * (1.0 - epoch / epochs) for epoch in range(epochs)]


def split_signals(model: nn.Module, task: UnlearningTask, *, splits: Sequence[str]) -> SignalTable:
    """Signals of ``model`` (eval mode) on the task's ``splits``, grouped by split name.

    ``splits`` name the task's position arrays (``"forget"``, ``"retain"``, ``"validation"``,
    ``"test"``). One :func:`auditkit.audit.signals.compute_signals` pass, so the losses (and the history's
    MIA) are exactly the float64 values the audit's attacks see, exact even for memorised samples.
    """
    positions = [getattr(task, split) for split in splits]
    groups = np.concatenate([np.full(len(p), split) for split, p in zip(splits, positions)])
    return compute_signals(model, task.data, np.concatenate(positions), groups, model_name="unlearning",
                           backend=task.backend)


def split_losses(model: nn.Module, task: UnlearningTask, *, splits: Sequence[str]) -> dict[str, np.ndarray]:
    """Per-sample float64 cross-entropy ``{split: [n_split]}`` of ``model`` (eval mode) on the task's ``splits``.

    The loss alone, for τ and the history: one forward pass, no other signal, computed from float64 logits
    as :func:`auditkit.audit.signals.compute_signals` computes it, so a memorised sample's loss does not
    round to 0.
    """
    positions = [np.asarray(getattr(task, split), dtype=np.int64) for split in splits]
    rows = task.data.rows(np.concatenate(positions))
    logits = predict_logits(model, rows).double().cpu().numpy()
    losses = exact_loss(true_class_log_odds(logits, rows.labels.numpy()))
    bounds = np.cumsum([0, *map(len, positions)])
    return {split: losses[start:end] for split, start, end in zip(splits, bounds[:-1], bounds[1:])}


class StepLoss(Protocol):
    """What an objective returns for one step (:class:`auditkit.ops.NablaTauResult` is one)."""

    loss: torch.Tensor
    forget_losses: torch.Tensor
    retain_losses: torch.Tensor
    backend: str


class Objective(Protocol):
    """One step's loss from the forget batch's and the retain batch's logits.

    ``forget_logits [Bf, C]`` is empty when :attr:`uses_forget_batch` is false (fine-tuning), so the
    forget batch never passes through the model in train mode.
    """

    uses_forget_batch: bool

    def __call__(
        self,
        forget_logits: torch.Tensor,
        forget_labels: torch.Tensor,
        retain_logits: torch.Tensor,
        retain_labels: torch.Tensor,
        *,
        tau: float,
        alpha: float,
    ) -> StepLoss: ...


@dataclass(frozen=True)
class NablaTauObjective:
    """``α·ReLU(τ − mean ℓf)² + (1−α)·mean ℓr`` (or the per-sample ReLU) via :func:`auditkit.ops.nabla_tau_loss`."""

    backend: str
    per_sample: bool = False
    uses_forget_batch: bool = True

    def __call__(self, forget_logits, forget_labels, retain_logits, retain_labels, *, tau, alpha):
        return ops.nabla_tau_loss(forget_logits, forget_labels, retain_logits, retain_labels, tau=tau,
                                  alpha=alpha, per_sample=self.per_sample, backend=self.backend)


#: Options every loop-based method accepts (``None`` = the documented rule decides).
LOOP_OPTIONS: dict[str, Any] = {
    "lr": 1e-3,
    "weight_decay": 0.01,
    "lr_end_factor": 0.1,
    "batch_size": None,
    "max_batch_size": DEFAULT_MAX_BATCH_SIZE,
    "min_retain_batches": DEFAULT_MIN_RETAIN_BATCHES,
    "epochs": None,
    "max_epochs": 100,
    "tau_every": 5,
    "train_mode": False,
    "history_mia": False,
}


def optional_number(options: dict[str, Any], name: str, kind: type[int] | type[float]) -> int | float | None:
    """``options[name]`` as ``kind``, or ``None`` when unset (options whose default is "decided by a rule")."""
    value = options[name]
    if value is None or (isinstance(value, str) and value.strip().lower() in {"", "none", "auto"}):
        return None
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise InputError(
            f"option {name}={value!r} is not a valid {kind.__name__}",
            hint=f"pass a number like {name}={kind(1)!r}, or leave it unset for the default rule",
        ) from None


@dataclass(frozen=True)
class LoopConfig:
    """Resolved hyper-parameters of one run of :func:`run_forget_loop` (recorded in the outcome's settings)."""

    method: str
    alphas: Sequence[float]
    batch_size: int
    lr: float = 1e-3
    weight_decay: float = 0.01
    lr_end_factor: float = 0.1
    tau_every: int = 5
    train_mode: bool = False
    history_mia: bool = False
    extra_settings: dict[str, Any] = field(default_factory=dict)

    @property
    def epochs(self) -> int:
        return len(self.alphas)


def resolve_loop(
    task: UnlearningTask,
    options: dict[str, Any],
    *,
    method: str,
    retain_passes: float,
    alphas: Callable[[int], list[float]],
    max_epochs: int | None = None,
    max_tau_refreshes: int | None = None,
    extra_settings: dict[str, Any] | None = None,
) -> LoopConfig:
    """Resolve :data:`LOOP_OPTIONS` for ``task`` into a :class:`LoopConfig`.

    The batch size comes from :func:`choose_batch_size` unless set, the epoch count from
    :func:`forget_epoch_count` with ``retain_passes`` unless set (capped by the ``max_epochs`` option, or by
    the ``max_epochs`` argument where the option is unset; ``None`` for both: no cap), and ``alphas(epochs)``
    gives the ``[epochs]`` forget weights. When the rule's batch floor leaves fewer than ``min_retain_batches``
    retain batches (under 1,024 retain samples), the epoch count is computed as if there were
    ``min_retain_batches``: the run then makes more passes over the small retain set and still takes
    ~384 steps. With the official 56 steps, a digits model fitted to losses of ~1e-3 barely moved (forget
    loss 0.005 → 0.017 against τ = 0.26, loss-attack AUC 0.63); with 384 it reached τ's neighbourhood.
    """
    n_forget, n_retain = len(task.forget), len(task.retain)
    if n_forget == 0:
        raise InputError("the forget set is empty", hint="list at least one training sample to forget")
    max_epochs = optional_number(options, "max_epochs", int) or max_epochs
    min_retain_batches = int(options["min_retain_batches"])
    batch_size = optional_number(options, "batch_size", int) or choose_batch_size(
        n_retain=n_retain, max_batch_size=int(options["max_batch_size"]), min_retain_batches=min_retain_batches)
    forget_batches = math.ceil(n_forget / batch_size)
    retain_batches = math.ceil(n_retain / batch_size)
    if optional_number(options, "batch_size", int) is None:
        retain_batches = max(retain_batches, min_retain_batches)
    epochs = optional_number(options, "epochs", int) or forget_epoch_count(
        retain_batches=retain_batches, forget_batches=forget_batches, retain_passes=retain_passes,
        max_epochs=max_epochs)
    tau_every = int(options["tau_every"])
    if max_tau_refreshes is not None:
        # Each refresh reads the whole validation split; a long run of short epochs spaces them out.
        tau_every = max(tau_every, math.ceil(epochs / max_tau_refreshes))
    if batch_size < 1 or epochs < 1 or tau_every < 1:
        raise InputError("batch_size, epochs and tau_every must be positive",
                         hint="leave batch_size and epochs unset to use the documented rules")
    # Torch's AdamW and LinearLR refuse these too, but only with a traceback once the data is loaded.
    rates = {name: float(options[name]) for name in ("lr", "weight_decay", "lr_end_factor")}
    if not (all(0 <= value < math.inf for value in rates.values()) and rates["lr_end_factor"] <= 1):
        raise InputError(f"out of range: {', '.join(f'{k}={v:g}' for k, v in rates.items())}",
                         hint="use lr >= 0, weight_decay >= 0 and 0 <= lr_end_factor <= 1")
    return LoopConfig(
        method=method, alphas=alphas(epochs), batch_size=batch_size, lr=float(options["lr"]),
        weight_decay=float(options["weight_decay"]), lr_end_factor=float(options["lr_end_factor"]),
        tau_every=tau_every, train_mode=bool(options["train_mode"]), history_mia=bool(options["history_mia"]),
        extra_settings={"retain_passes": retain_passes, "max_epochs": max_epochs,
                        "max_batch_size": int(options["max_batch_size"]),
                        "min_retain_batches": min_retain_batches, **(extra_settings or {})},
    )


def _cycle(n: int, batch_size: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    """Endless seeded shuffled batches of ``range(n)``: the official code's cycling retain loader."""
    while True:
        order = torch.randperm(n, generator=generator)
        for start in range(0, n, batch_size):
            yield order[start : start + batch_size]


def step_batches(
    *, n_forget: int, n_retain: int, batch_size: int, epochs: int, uses_forget_batch: bool, generator: torch.Generator
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Per step, the forget and retain batch (positions within each set) of :func:`run_forget_loop`.

    Per forget epoch one shuffle of the forget set, and for each of its batches the next batch of the
    cycling retain loader, all from ``generator`` in that order; the forget batch is empty when the
    objective does not use it. Drawn lazily, so a DataLoader's workers can prefetch it.
    """
    retain_batches = _cycle(n_retain, batch_size, generator)
    empty = torch.zeros(0, dtype=torch.int64)
    for _ in range(epochs):
        order = torch.randperm(n_forget, generator=generator)
        for start in range(0, n_forget, batch_size):
            yield (order[start : start + batch_size] if uses_forget_batch else empty), next(retain_batches)


def _check_finite(value: float, what: str, epoch: int, lr: float) -> None:
    if not math.isfinite(value):
        raise RunError(
            f"{what} became {value} in forget epoch {epoch + 1}; no weights were returned",
            hint=f"lower the learning rate (lr={lr:g}) or the forget weight (alpha)",
        )


def run_forget_loop(
    task: UnlearningTask,
    *,
    objective: Objective,
    config: LoopConfig,
    progress: ProgressCallback = no_progress,
) -> UnlearningOutcome:
    """Run the forget loop on ``task.model`` (modified in place) and return its weights and history.

    Per forget epoch ``e`` (0-based): refresh τ on the validation split if ``e % tau_every == 0``, then
    for every shuffled forget batch take one retain batch from the cycling retain loader and one AdamW
    step on ``objective(..., tau=τ, alpha=config.alphas[e])``; then step the LR schedule
    (linear ``1 → lr_end_factor`` over the run), report progress, and record a history entry at the end
    of every epoch that refreshed τ and of the last one.

    History entry: ``epoch`` (1-based), ``tau``, ``alpha`` and ``lr`` used in that epoch; ``retain_loss``
    (mean over the retain batches since the previous entry); and, measured in eval mode at the epoch's
    end, ``forget_loss`` (mean over the whole forget set) and ``forget_below_tau`` (fraction of forget
    samples with loss < τ). Only with ``history_mia`` (off by default) also ``test_accuracy`` and ``mia``
    (mean of the paper's LR-on-loss attack, forget vs test, float64 losses; None when either side has
    fewer than 10 samples): they read the whole test split and fit 10 logistic regressions per entry,
    which on the 50k workload at 1 % forgotten cost more than the unlearning itself. Without it both are
    None.

    Raises :class:`RunError` (and returns nothing) when a loss or τ stops being finite.
    """
    device = torch.device(task.device)
    model = task.model.to(device)
    n_forget, n_retain = len(task.forget), len(task.retain)
    if len(task.validation) == 0:
        raise InputError("τ needs a validation split, and this dataset has none",
                         hint="give the dataset a validation fraction (e.g. validation_fraction=0.15)")

    generator = torch.Generator().manual_seed(task.seed)
    optimizer = eager_optimizer(torch.optim.AdamW, model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=1.0, end_factor=config.lr_end_factor,
                                                  total_iters=config.epochs)
    # One read of both sets per step; streamed datasets prefetch the planned rows in DataLoader workers.
    # Under a launch every rank draws the same global batches and trains on its share of each (DDP).
    planned = step_batches(n_forget=n_forget, n_retain=n_retain, batch_size=config.batch_size, epochs=config.epochs,
                           uses_forget_batch=objective.uses_forget_batch, generator=generator)
    steps = stream([task.data.rows(task.forget), task.data.rows(task.retain)],
                   ((distributed.shard(f), distributed.shard(r)) for f, r in planned), device=device)
    trained = distributed.data_parallel(model)
    history: list[dict[str, float]] = []
    backend = ""
    tau = float("nan")
    retain_sum, retain_count = 0.0, 0
    for epoch, alpha in enumerate(config.alphas):
        lr = optimizer.param_groups[0]["lr"]
        refresh = epoch % config.tau_every == 0
        if refresh:
            # Every rank holds the same model, so the mean is its own value; the all-reduce keeps them equal.
            validation = split_losses(model, task, splits=["validation"])["validation"]
            tau = distributed.all_mean([float(validation.mean())])[0]
            _check_finite(tau, "τ (the mean validation loss)", epoch, lr)
        model.train(config.train_mode)
        for _ in range(0, n_forget, config.batch_size):
            batch = next(steps)
            # One forward over both batches halves the calls; in eval mode (the default) it equals two
            # separate forwards, in train mode BatchNorm normalises the two batches together.
            logits = trained(batch.features)
            split, retain_rows = batch.sizes
            step = objective(logits[:split], batch.labels[:split], logits[split:], batch.labels[split:],
                             tau=tau, alpha=alpha)
            loss = distributed.all_mean([step.loss.item()])[0]  # every rank stops together on a bad step
            _check_finite(loss, f"the {config.method} loss", epoch, lr)
            optimizer.zero_grad(set_to_none=True)
            step.loss.backward()
            optimizer.step()
            backend = step.backend
            retain_sum += step.retain_losses.double().sum().item()
            retain_count += retain_rows
        scheduler.step()
        if refresh or epoch == config.epochs - 1:
            retain_total, retain_rows_total = distributed.all_sum([retain_sum, retain_count])
            history.append(_history_entry(model, task, epoch=epoch, tau=tau, alpha=alpha, lr=lr,
                                          retain_loss=retain_total / retain_rows_total, with_mia=config.history_mia))
            retain_sum, retain_count = 0.0, 0
        entry = history[-1]
        mia = "" if entry["mia"] is None else f" · MIA {entry['mia']:.3f}"
        progress(Progress(config.method, epoch + 1, config.epochs,
                          f"τ {tau:.3f} · forget loss {entry['forget_loss']:.3f} (epoch {entry['epoch']}){mia}"))
    model.eval()
    state_dict = {key: value.detach().cpu().clone() for key, value in model.state_dict().items()}
    settings = {
        "method": config.method,
        "epochs": config.epochs,
        "alpha0": config.alphas[0],
        "lr": config.lr,
        "lr_end_factor": config.lr_end_factor,
        "weight_decay": config.weight_decay,
        "optimizer": "adamw",
        "batch_size": config.batch_size,
        "forget_batches": math.ceil(n_forget / config.batch_size),
        "retain_batches": math.ceil(n_retain / config.batch_size),
        "tau_every": config.tau_every,
        "train_mode": config.train_mode,
        "history_mia": config.history_mia,
        "seed": task.seed,
        "backend_requested": task.backend,
        "n_forget": n_forget,
        "n_retain": n_retain,
        "n_validation": len(task.validation),
        "world_size": distributed.step_world_size(),  # > 1: data-parallel, each rank on a share of every batch
        **config.extra_settings,
    }
    return UnlearningOutcome(state_dict=state_dict, history=history, settings=settings, backend=backend)


def evaluation_entry(model: nn.Module, task: UnlearningTask, *, epoch: int, alpha: float, lr: float) -> dict[str, Any]:
    """A history entry (same keys as :func:`run_forget_loop`'s) for a model trained outside the loop.

    ``tau`` is the model's own mean validation loss and ``retain_loss`` its mean eval loss on the
    whole retain set; ``epoch`` is recorded as given.
    """
    signals = split_signals(model, task, splits=["validation", "retain"])
    return _history_entry(model, task, epoch=epoch - 1, tau=float(signals.group("validation").loss.mean()),
                          alpha=alpha, lr=lr, retain_loss=float(signals.group("retain").loss.mean()))


def _history_entry(
    model: nn.Module,
    task: UnlearningTask,
    *,
    epoch: int,
    tau: float,
    alpha: float,
    lr: float,
    retain_loss: float,
    with_mia: bool = True,
) -> dict[str, Any]:
    # The forget set's loss costs at most a third of the epoch that just ran over it; the test split can
    # be far larger than the forget set (30× at 1 % of the 50k workload), so it is read only when asked.
    if with_mia:
        signals = split_signals(model, task, splits=["forget", "test"])
        forget_losses, test_rows = signals.group("forget").loss, signals.group("test")
        test_losses = test_rows.loss
        test_accuracy = float((test_rows.logits.argmax(1) == test_rows.labels).mean()) if len(test_rows) else None
    else:
        forget_losses, test_losses = split_losses(model, task, splits=["forget"])["forget"], np.zeros(0)
        test_accuracy = None
    # The epoch's last step can blow the model up with no later training loss to show it (one step per
    # epoch for small requests): stop here, not with the history's attack failing on NaN losses.
    if not (np.isfinite(forget_losses).all() and np.isfinite(test_losses).all()):
        _check_finite(math.nan, "the loss on the forget or test set", epoch, lr)
    enough = with_mia and min(len(forget_losses), len(test_losses)) >= _MIN_MIA_SAMPLES
    mia = float(lr_mia_accuracies(forget_losses, test_losses, seed=task.seed).mean()) if enough else None
    return {
        "epoch": epoch + 1,
        "tau": tau,
        "alpha": alpha,
        "lr": lr,
        "forget_loss": float(forget_losses.mean()),
        "retain_loss": retain_loss,
        "forget_below_tau": float((forget_losses < tau).mean()),
        "test_accuracy": test_accuracy,
        "mia": mia,
    }
