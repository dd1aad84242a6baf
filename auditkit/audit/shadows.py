"""Shadow models: models like the audited one, trained with its own recipe and seeded, cached on disk.
Three kinds, one trainer, one cache, one key scheme:

- **reference models** (LiRA's and RMIA's) train on a seeded random half k of the retain set only, so
  they never see a forget, test or validation sample, and each retain row is IN for some of them;
- **never-seen** shadows (u-lira's) are retrained references: the whole retain set (or, with
  ``halves``, reference model j itself), seed j;
- **unlearned** shadows (u-lira's) train on the same data *plus the forget set*, with the same seed,
  and are then unlearned with the audited run's method and options. The model before unlearning is
  cached too, so several methods audited on one request share its training.

Every shadow is cached under a key naming everything that determines its weights: the dataset (name,
options, and a hash of its features, labels and IDs), the model (the trainer's ``model_key``), the recipe,
the positions it trained on (which, for an unlearned shadow, include the request's forget set) and its
seed, plus, for an unlearned shadow, the method, its options, the op backend and the forget positions.
The cache lives in ``$AUDITKIT_CACHE_DIR`` or ``~/.cache/auditkit``; each entry is computed under a file
lock (``filelock``) and written atomically, so processes filling one cache at once neither train a
shadow twice nor read half a file, and it is loaded with ``torch.load(weights_only=True)``.

Shadow k is a pure function of the seed and k, computed through :func:`auditkit.distributed.map_units`,
so the results do not depend on how many processes share the work, and the first K of a larger set are
the K a smaller one trains.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from auditkit.data import SampleSet
from auditkit.distributed import map_units
from auditkit.fsutil import atomic_write_bytes, sha256_bytes, sha256_file
from auditkit.progress import Progress, ProgressCallback, no_progress
from auditkit.training import TrainRecipe, train_model

if TYPE_CHECKING:
    from auditkit.interfaces import UnlearningMethod

CACHE_ENV = "AUDITKIT_CACHE_DIR"
_FORMAT = 1  # bump when what a cache entry means changes


@dataclass(frozen=True)
class ShadowTrainer:
    """How to build and train a model like the audited one (the CLI fills it from the checkpoint).

    Attributes:
        build: returns a freshly initialised model of the audited architecture (torch is seeded first).
        recipe: the audited model's training recipe.
        model_key: names the model plugin and its options (part of the cache key), e.g. ``"mlp widths=256"``.
        device: where shadow models are trained.
    """

    build: Callable[[], nn.Module]
    recipe: TrainRecipe
    model_key: str
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))


@dataclass(frozen=True)
class ShadowUnlearning:
    """How the unlearned shadows forget: the audited run's method, with its options, on the request.

    ``forget``, ``validation`` and ``test`` are ``int64`` positions into the dataset (the request's forget
    set and the splits the method may use, e.g. ∇τ's τ); ``method_name`` is the method's plugin name.
    """

    method: UnlearningMethod
    method_name: str
    forget: np.ndarray
    validation: np.ndarray
    test: np.ndarray
    backend: str = "auto"

    def key(self) -> dict[str, Any]:
        """What of the unlearning determines an unlearned shadow's weights (part of its cache key)."""
        return {"method": self.method_name, "options": _plain(self.method.options), "backend": self.backend,
                "forget": sha256_bytes(np.asarray(self.forget, dtype=np.int64).tobytes())}


@dataclass
class ShadowSet:
    """The shadow models of an audit.

    ``references``: the reference models (eval mode), ``halves`` the ``[R, n_retain]`` bool retain half each
    trained on, ``reference_hashes`` the SHA-256 of each one's cache file. ``never_seen`` and ``unlearned``:
    u-lira's shadow pairs (pair j shares its data but the forget set, and its seed), with their hashes.
    """

    references: list[nn.Module]
    halves: np.ndarray
    reference_hashes: list[str]
    never_seen: list[nn.Module] = field(default_factory=list)
    never_seen_hashes: list[str] = field(default_factory=list)
    unlearned: list[nn.Module] = field(default_factory=list)
    unlearned_hashes: list[str] = field(default_factory=list)


def cache_dir() -> Path:
    """``$AUDITKIT_CACHE_DIR/reference-models`` or ``~/.cache/auditkit/reference-models``."""
    root = os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "auditkit"
    return Path(root) / "reference-models"


def reference_halves(n_retain: int, *, count: int, seed: int) -> np.ndarray:
    """``[count, n_retain]`` bool: which retain samples each shadow model trains on (a seeded random half)."""
    halves = np.zeros((count, n_retain), dtype=bool)
    for k in range(count):
        rng = np.random.default_rng([seed, k])
        halves[k, rng.permutation(n_retain)[: n_retain // 2]] = True
    return halves


def shadow_seed(seed: int, k: int) -> int:
    """The torch seed of shadow pair k (its never-seen and its unlearned shadow share it)."""
    return int(np.random.SeedSequence([seed, k]).generate_state(1)[0])


def train_reference_models(
    trainer: ShadowTrainer,
    *,
    data: SampleSet,
    retain: np.ndarray,
    count: int,
    seed: int,
    progress: ProgressCallback = no_progress,
) -> tuple[list[nn.Module], np.ndarray, list[str]]:
    """Train (or load from the cache) ``count`` never-seen shadows on random halves of ``retain``.

    Returns the models (eval mode, on ``trainer.device``), the ``[count, len(retain)]`` bool halves and the
    SHA-256 of each model's weights (of its cache file, so ``sha256sum`` on the cache checks it).
    """
    shadows = train_shadows(trainer, data=data, retain=retain, references=count, seed=seed, progress=progress)
    return shadows.references, shadows.halves, shadows.reference_hashes


@dataclass(frozen=True)
class _Plan:
    label: str           # "reference model 2/8", "unlearned shadow 1/4"
    positions: np.ndarray  # what it trains on
    seed: int
    path: Path           # its cache entry
    trained: Path | None = None  # an unlearned shadow's model before unlearning
    retain: np.ndarray | None = None  # an unlearned shadow's retain set (what it trained on but the forget set)


def train_shadows(
    trainer: ShadowTrainer,
    *,
    data: SampleSet,
    retain: np.ndarray,
    references: int,
    seed: int,
    pairs: int = 0,
    unlearning: ShadowUnlearning | None = None,
    halves_only: bool = False,
    progress: ProgressCallback = no_progress,
) -> ShadowSet:
    """Train (or load) ``references`` reference models and ``pairs`` u-lira shadow pairs.

    Pair j: a never-seen shadow trained on the whole retain set and an unlearned one trained on the
    retain set plus ``unlearning.forget``, both with seed j (``halves_only``: on reference model j's half
    instead, the never-seen one then being reference model j), the unlearned one then put through
    ``unlearning.method`` with that retain data as its retain set. Announces the cost (trainings and
    unlearning runs, how many are cached) through ``progress`` before starting, then the time the first
    one took with an estimate for the rest, and one report per shadow (stage ``reference-models`` without
    pairs, else ``shadows``).
    """
    if pairs and unlearning is None:
        raise ValueError("u-lira's shadow pairs need a ShadowUnlearning")
    if halves_only:
        references = max(references, pairs)
    retain = np.asarray(retain, dtype=np.int64)
    halves = reference_halves(len(retain), count=references, seed=seed)
    base = {"format": _FORMAT, "dataset": _dataset_key(data), "model": trainer.model_key,
            "recipe": trainer.recipe.to_dict()}

    def entry(positions: np.ndarray, model_seed: int, **extra: Any) -> Path:
        key = sha256_bytes(json.dumps({**base, "positions": sha256_bytes(positions.tobytes()), "seed": model_seed,
                                       **extra}, sort_keys=True).encode())
        return cache_dir() / f"{key}.pt"

    plans = [_Plan(f"reference model {k + 1}/{references}", retain[halves[k]], shadow_seed(seed, k),
                   entry(retain[halves[k]], shadow_seed(seed, k))) for k in range(references)]
    never_seen = 0 if halves_only else pairs
    plans += [_Plan(f"never-seen shadow {j + 1}/{pairs}", retain, shadow_seed(seed, j),
                    entry(retain, shadow_seed(seed, j))) for j in range(never_seen)]
    for j in range(pairs):
        kept = retain[halves[j]] if halves_only else retain
        positions = np.union1d(kept, np.asarray(unlearning.forget, dtype=np.int64))
        model_seed = shadow_seed(seed, j)
        plans.append(_Plan(f"unlearned shadow {j + 1}/{pairs}", positions, model_seed,
                           entry(positions, model_seed, unlearning=unlearning.key()), entry(positions, model_seed),
                           retain=kept))
    stage = "shadows" if pairs else "reference-models"
    total = len(plans)
    progress(Progress(stage, 0, total, message=_cost(plans, references, pairs, trainer)))
    timing = {"first": None}

    def unit(k: int) -> tuple[dict[str, torch.Tensor], str]:
        plan = plans[k]
        started = time.perf_counter()
        state, computed = _cached(trainer, plan.path, lambda: _compute(trainer, data, plan, unlearning, progress))
        if computed and timing["first"] is None:
            timing["first"] = time.perf_counter() - started
            rest = total - k - 1
            # A line of its own (a stage's first report with a message is always shown), then done.
            progress(Progress(f"{stage} time", 0, 1, message=(
                f"{plan.label} took {timing['first']:.1f} s" + (f": about {timing['first'] * rest:.0f} s for the "
                                                                 f"other {rest} if none is cached" if rest else ""))))
            progress(Progress(f"{stage} time", 1, 1))
        progress(Progress(stage, k + 1, total, message=plan.label))
        return state, sha256_file(plan.path)

    results = map_units(unit, total, stage=stage.replace("-", " "))
    models = [_model(trainer, state) for state, _ in results]
    hashes = [digest for _, digest in results]
    split = references + never_seen
    if halves_only:
        seen, seen_hashes = models[:pairs], hashes[:pairs]
    else:
        seen, seen_hashes = models[references:split], hashes[references:split]
    return ShadowSet(references=models[:references], halves=halves, reference_hashes=hashes[:references],
                     never_seen=seen, never_seen_hashes=seen_hashes, unlearned=models[split:],
                     unlearned_hashes=hashes[split:])


def _cost(plans: list[_Plan], references: int, pairs: int, trainer: ShadowTrainer) -> str:
    """The announcement before any shadow is trained: how many trainings and unlearning runs, how many cached."""
    cached = sum(plan.path.is_file() for plan in plans)
    if not pairs:
        size = len(plans[0].positions) if plans else 0
        return (f"{references} reference models needed: {references - cached} to train ({trainer.recipe.epochs} "
                f"epochs each on {size} samples), {cached} cached in {cache_dir()}")
    trainings = sum(not plan.path.is_file() and (plan.trained is None or not plan.trained.is_file()) for plan in plans)
    runs = sum(plan.trained is not None and not plan.path.is_file() for plan in plans)
    sizes = sorted({len(plan.positions) for plan in plans})
    span = f"{sizes[0]:,}" if len(sizes) == 1 else f"{sizes[0]:,}–{sizes[-1]:,}"
    kinds = (f"{references} reference models, " if references else "") + (
        f"{len(plans) - references - pairs} never-seen and " if len(plans) > references + pairs else "")
    return (f"{len(plans)} shadow models needed ({kinds}{pairs} trained with the forget set and unlearned by "
            f"the audited method, for u-lira): {trainings} trainings ({trainer.recipe.epochs} epochs each on {span} "
            f"samples) and {runs} unlearning runs to do, {cached} cached in {cache_dir()}")


def _compute(trainer: ShadowTrainer, data: SampleSet, plan: _Plan, unlearning: ShadowUnlearning | None,
             progress: ProgressCallback) -> dict[str, torch.Tensor]:
    """Shadow ``plan``'s weights: trained (an unlearned one: trained, or its trained model loaded, then unlearned)."""

    def train() -> dict[str, torch.Tensor]:
        torch.manual_seed(plan.seed)
        model = trainer.build().to(trainer.device)
        train_model(model, data.rows(plan.positions), recipe=trainer.recipe, seed=plan.seed, progress=progress,
                    stage=plan.label)
        return _cpu_state(model)

    if plan.trained is None:
        return train()
    from auditkit.interfaces import UnlearningTask

    state, _ = _cached(trainer, plan.trained, train)
    torch.manual_seed(plan.seed)
    task = UnlearningTask(
        model=_model(trainer, state).train(), build_model=trainer.build, recipe=trainer.recipe, data=data,
        forget=np.asarray(unlearning.forget, dtype=np.int64), retain=plan.retain,
        validation=np.asarray(unlearning.validation, dtype=np.int64),
        test=np.asarray(unlearning.test, dtype=np.int64), seed=plan.seed, backend=unlearning.backend,
        device=trainer.device,
    )
    return _cpu(unlearning.method.unlearn(task).state_dict)


def _cached(trainer: ShadowTrainer, path: Path, compute: Callable[[], dict[str, torch.Tensor]]
            ) -> tuple[dict[str, torch.Tensor], bool]:
    """The state dict cached at ``path``, else ``compute()``'s, written there; and whether it was computed.

    Under the entry's file lock: a second process asking for the same entry waits and then loads it.
    """
    from filelock import FileLock

    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):
        state = _load(trainer, path)
        if state is not None:
            return state, False
        state = compute()
        buffer = io.BytesIO()
        torch.save(state, buffer)
        atomic_write_bytes(path, buffer.getvalue())
        return state, True


def _dataset_key(data: SampleSet) -> dict:
    return {"name": data.name, "options": _plain(data.options), "contents": data.content_sha256()}


def _plain(options: dict) -> dict:
    return json.loads(json.dumps(options, default=str))


def _cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return _cpu(model.state_dict())


def _cpu(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().cpu() for name, tensor in state.items()}


def _model(trainer: ShadowTrainer, state: dict[str, torch.Tensor]) -> nn.Module:
    model = trainer.build().to(trainer.device)
    model.load_state_dict(state)
    return model.eval()


def _load(trainer: ShadowTrainer, path: Path) -> dict[str, torch.Tensor] | None:
    """The cached weights at ``path``, or None when missing or unreadable (then recomputed and rewritten)."""
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        trainer.build().load_state_dict(state)  # a stale or foreign entry fails here, not later
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, AttributeError, TypeError):
        return None
    return state
