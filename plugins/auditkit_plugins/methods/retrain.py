"""Retraining from scratch on the retain set: the gold standard every verdict compares against."""

from __future__ import annotations

import torch

from auditkit.errors import InputError
from auditkit.interfaces import UnlearningMethod, UnlearningOutcome, UnlearningTask
from auditkit.progress import ProgressCallback, no_progress
from auditkit.training import train_model
from auditkit.unlearning import evaluation_entry


class Retrain(UnlearningMethod):
    """Train ``task.build_model()`` on the retain set with the original recipe and ``task.seed``.

    The fresh model is initialised under ``task.seed`` without disturbing the caller's global RNG.
    The history has one entry: the retrained model measured like a forget epoch's end.
    """

    PLUGIN_NAME = "retrain"
    DESCRIPTION = "retrain from scratch on the retain set with the original training recipe"
    OPTIONS = {}
    NEEDS_RECIPE = True

    def unlearn(self, task: UnlearningTask, *, progress: ProgressCallback = no_progress) -> UnlearningOutcome:
        if task.recipe is None:
            raise InputError("retrain trains with the original training recipe, and this checkpoint records none",
                             hint="adopt the model with --recipe-option epochs=N batch_size=B lr=LR")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(task.seed)
            model = task.build_model().to(task.device)
        train_model(model, task.data.rows(task.retain), recipe=task.recipe, seed=task.seed, progress=progress,
                    stage=self.PLUGIN_NAME)
        entry = evaluation_entry(model, task, epoch=task.recipe.epochs, alpha=0.0, lr=task.recipe.lr)
        state_dict = {key: value.detach().cpu().clone() for key, value in model.state_dict().items()}
        settings = {"method": self.PLUGIN_NAME, **task.recipe.to_dict(), "seed": task.seed,
                    "n_retain": len(task.retain), "n_forget": len(task.forget)}
        return UnlearningOutcome(state_dict=state_dict, history=[entry], settings=settings, backend="pytorch")
