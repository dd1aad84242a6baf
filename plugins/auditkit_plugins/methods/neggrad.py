"""NegGrad+ (Kurmanji et al., 2023): fixed-weight gradient ascent on the forget batch, descent on the retain batch."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as F

from auditkit.interfaces import UnlearningMethod, UnlearningOutcome, UnlearningTask
from auditkit.progress import ProgressCallback, no_progress
from auditkit.unlearning import LOOP_OPTIONS, resolve_loop, run_forget_loop


@dataclass(frozen=True)
class NegGradStep:
    """One NegGrad+ step's loss and detached per-sample losses (the loop's ``StepLoss``)."""

    loss: torch.Tensor
    forget_losses: torch.Tensor
    retain_losses: torch.Tensor
    backend: str = "pytorch"


class NegGradObjective:
    """``(1 − w)·mean ℓr − w·mean ℓf``, ``w`` the loop's constant alpha; plain PyTorch, not the ∇τ op."""

    uses_forget_batch = True

    def __call__(self, forget_logits, forget_labels, retain_logits, retain_labels, *, tau, alpha):
        forget_losses = F.cross_entropy(forget_logits, forget_labels, reduction="none")
        retain_losses = F.cross_entropy(retain_logits, retain_labels, reduction="none")
        loss = (1 - alpha) * retain_losses.mean() - alpha * forget_losses.mean()
        return NegGradStep(loss, forget_losses.detach(), retain_losses.detach())


class NegGradPlus(UnlearningMethod):
    """NegGrad+ on the ∇τ loop: same batches, schedule and step count as ∇τ, unbounded ascent.

    ``weight`` is the constant forget weight ``w`` (Kurmanji et al.'s ``1 − β``). Unlike ∇τ nothing
    stops the ascent at τ, so the forget loss can overshoot the test loss (over-forgetting).
    """

    PLUGIN_NAME = "neggrad-plus"
    DESCRIPTION = "NegGrad+: fixed-weight gradient ascent on the forget set plus descent on the retain set"
    OPTIONS = {**LOOP_OPTIONS, "weight": 0.05}

    def unlearn(self, task: UnlearningTask, *, progress: ProgressCallback = no_progress) -> UnlearningOutcome:
        weight = float(self.options["weight"])
        config = resolve_loop(task, self.options, method=self.PLUGIN_NAME, retain_passes=3,
                              alphas=lambda epochs: [weight] * epochs,
                              extra_settings={"alpha_schedule": "constant (weight)"})
        return run_forget_loop(task, objective=NegGradObjective(), config=config, progress=progress)
