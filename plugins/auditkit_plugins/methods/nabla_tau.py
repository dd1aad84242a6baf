"""∇τ (Trippa et al., arXiv 2403.14339): raise the forget loss to the validation loss τ, keep the retain loss low."""

from __future__ import annotations

from auditkit.errors import InputError
from auditkit.interfaces import UnlearningMethod, UnlearningOutcome, UnlearningTask
from auditkit.progress import ProgressCallback, no_progress
from auditkit.unlearning import (
    ADAPTIVE_MAX_TAU_REFRESHES,
    LOOP_OPTIONS,
    PRESETS,
    LoopConfig,
    NablaTauObjective,
    adaptive_step_scale,
    default_alpha,
    forget_loss_gap,
    linear_alphas,
    optional_number,
    resolve_loop,
    run_forget_loop,
    split_losses,
)

#: The official code's ~3 passes over the retain set, and its cap on forget epochs.
OFFICIAL_RETAIN_PASSES = 3
OFFICIAL_MAX_EPOCHS = 100


class NablaTau(UnlearningMethod):
    """∇τ: the paper's loss, ``α0 = 5/3 × |forget| / |train|`` decaying linearly to 0, sized by the ``preset``.

    ``preset=official`` is the official code: about three passes over the retain set
    (``floor(3 × retain_batches / forget_batches)`` forget epochs, at most ``max_epochs``, 100).
    ``preset=adaptive`` (the default) measures the model once before unlearning, the gap ``τ − mean
    forget loss``, and takes ``1 + ln(1 + gap) / 3`` times the official step count, with no epoch cap
    (``max_epochs`` sets one) and τ refreshed at most 10 times. ``alpha`` and ``epochs`` override either
    rule. τ = mean validation loss, refreshed every ``tau_every`` forget epochs. The model stays in eval
    mode by default, as in the official code: BatchNorm running statistics then keep the original
    training's values instead of absorbing forget-batch statistics (a membership channel of their own).
    ``per_sample=True`` applies the ReLU per forget sample, so samples already above τ stop being pushed.
    """

    PLUGIN_NAME = "nabla-tau"
    DESCRIPTION = "∇τ: raise the forget loss to the validation loss τ while training on the retain set"
    OPTIONS = {**LOOP_OPTIONS, "max_epochs": None, "preset": PRESETS[0], "alpha": None, "per_sample": False}

    def resolve(self, task: UnlearningTask) -> LoopConfig:
        """The run's resolved configuration (the adaptive preset reads the forget and validation losses once)."""
        preset = str(self.options["preset"]).strip().lower()
        if preset not in PRESETS:
            raise InputError(f"unknown nabla-tau preset {self.options['preset']!r}",
                             hint=f"use preset={' or preset='.join(PRESETS)}")
        n_forget, n_train = len(task.forget), len(task.forget) + len(task.retain)
        if n_forget == 0:
            raise InputError("the forget set is empty", hint="list at least one training sample to forget")
        per_sample = bool(self.options["per_sample"])
        alpha = optional_number(self.options, "alpha", float)
        settings: dict = {"preset": preset, "alpha_schedule": "linear to 0", "per_sample": per_sample,
                          "alpha_rule": "5/3 × |forget| / |train|" if alpha is None else "option alpha"}
        if preset == "official":
            retain_passes: float = OFFICIAL_RETAIN_PASSES
            loop = {"max_epochs": OFFICIAL_MAX_EPOCHS}
            settings["epochs_rule"] = "3 retain passes, at most 100 epochs (official)"
        else:
            if len(task.validation) == 0:
                raise InputError("τ needs a validation split, and this dataset has none",
                                 hint="give the dataset a validation fraction (e.g. validation_fraction=0.15)")
            snapshot = split_losses(task.model.to(task.device), task, splits=["forget", "validation"])
            forget_loss, tau = float(snapshot["forget"].mean()), float(snapshot["validation"].mean())
            gap = forget_loss_gap(forget_loss=forget_loss, tau=tau)
            scale = adaptive_step_scale(gap=gap)
            retain_passes = OFFICIAL_RETAIN_PASSES * scale
            loop = {"max_tau_refreshes": ADAPTIVE_MAX_TAU_REFRESHES}
            settings.update(epochs_rule="3 × (1 + ln(1 + gap) / 3) retain passes, no epoch cap (adaptive)",
                            gap=gap, step_scale=scale, forget_loss_before=forget_loss,
                            tau_before=tau)
        alpha0 = default_alpha(n_forget=n_forget, n_train=n_train) if alpha is None else alpha
        if optional_number(self.options, "epochs", int) is not None:
            settings["epochs_rule"] = "option epochs"
        return resolve_loop(task, self.options, method=self.PLUGIN_NAME, retain_passes=retain_passes,
                            alphas=lambda epochs: linear_alphas(alpha0, epochs), extra_settings=settings, **loop)

    def unlearn(self, task: UnlearningTask, *, progress: ProgressCallback = no_progress) -> UnlearningOutcome:
        config = self.resolve(task)
        objective = NablaTauObjective(backend=task.backend, per_sample=bool(self.options["per_sample"]))
        return run_forget_loop(task, objective=objective, config=config, progress=progress)
