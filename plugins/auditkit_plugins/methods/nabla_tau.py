"""∇τ (Trippa et al., arXiv 2403.14339): raise the forget loss to the validation loss τ, keep the retain loss low."""

from __future__ import annotations

from auditkit.interfaces import UnlearningMethod, UnlearningOutcome, UnlearningTask
from auditkit.progress import ProgressCallback, no_progress
from auditkit.unlearning import (
    LOOP_OPTIONS,
    NablaTauObjective,
    default_alpha,
    linear_alphas,
    optional_number,
    resolve_loop,
    run_forget_loop,
)


class NablaTau(UnlearningMethod):
    """∇τ with the official code's defaults.

    ``α0 = 5/3 × |forget| / |train|`` decaying linearly to 0 (``alpha`` overrides α0), about three
    passes over the retain set, τ = mean validation loss refreshed every ``tau_every`` forget epochs.
    The model stays in eval mode by default, as in the official code: BatchNorm running statistics
    then keep the original training's values instead of absorbing forget-batch statistics (which
    would be a membership channel of their own). ``per_sample=True`` applies the ReLU per forget
    sample, so samples already above τ stop being pushed further.
    """

    PLUGIN_NAME = "nabla-tau"
    DESCRIPTION = "∇τ: raise the forget loss to the validation loss τ while training on the retain set"
    OPTIONS = {**LOOP_OPTIONS, "alpha": None, "per_sample": False}

    def unlearn(self, task: UnlearningTask, *, progress: ProgressCallback = no_progress) -> UnlearningOutcome:
        alpha = optional_number(self.options, "alpha", float)
        alpha0 = default_alpha(n_forget=len(task.forget), n_train=len(task.forget) + len(task.retain)) \
            if alpha is None else alpha
        per_sample = bool(self.options["per_sample"])
        config = resolve_loop(
            task, self.options, method=self.PLUGIN_NAME, retain_passes=3,
            alphas=lambda epochs: linear_alphas(alpha0, epochs),
            extra_settings={"alpha_schedule": "linear to 0", "per_sample": per_sample,
                            "alpha_rule": "5/3 × |forget| / |train|" if alpha is None else "option alpha"},
        )
        objective = NablaTauObjective(backend=task.backend, per_sample=per_sample)
        return run_forget_loop(task, objective=objective, config=config, progress=progress)
