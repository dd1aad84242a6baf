"""Fine-tuning baseline: the ∇τ loop with α = 0, i.e. training on the retain set only."""

from __future__ import annotations

from auditkit.interfaces import UnlearningMethod, UnlearningOutcome, UnlearningTask
from auditkit.progress import ProgressCallback, no_progress
from auditkit.unlearning import LOOP_OPTIONS, NablaTauObjective, resolve_loop, run_forget_loop


class Finetune(UnlearningMethod):
    """Fine-tune on the retain set with the ∇τ loop and α = 0.

    As in the official code's baseline, the run lasts twice as many forget epochs as ∇τ
    (``retain_passes=6``: about six passes over the retain set); set ``epochs`` to compare at equal
    steps. The forget batch never passes through the model.
    """

    PLUGIN_NAME = "finetune"
    DESCRIPTION = "fine-tune on the retain set only (the ∇τ loop with alpha = 0)"
    OPTIONS = {**LOOP_OPTIONS, "retain_passes": 6}

    def unlearn(self, task: UnlearningTask, *, progress: ProgressCallback = no_progress) -> UnlearningOutcome:
        config = resolve_loop(task, self.options, method=self.PLUGIN_NAME,
                              retain_passes=int(self.options["retain_passes"]),
                              alphas=lambda epochs: [0.0] * epochs, extra_settings={"alpha_schedule": "constant 0"})
        objective = NablaTauObjective(backend=task.backend, uses_forget_batch=False)
        return run_forget_loop(task, objective=objective, config=config, progress=progress)
