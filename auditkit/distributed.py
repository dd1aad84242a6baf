"""Multi-process work, in one room: ranks, launching and gathering.

Everything else asks this module to "compute these K units of work" (:func:`map_units`), "write this on
the writer" (:func:`on_writer`) or "train this step on every rank" (:func:`data_parallel`,
:func:`shard`, :func:`all_sum`) and never checks a rank itself. Unit k is a pure function of its index
(it seeds itself from k), so the results do not depend on how many processes share the work.

A process is one rank of a launch when torch.distributed's launch environment is set (``RANK``,
``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``: what ``torchrun`` and ``--workers`` set). The pipeline
joins the launch's process group with :func:`join` (gloo for CPU runs; NCCL for CUDA tensors, with
objects still gathered over gloo) and the CLI leaves it with :func:`leave`. Without a launch every helper
runs its work in this process, one unit after another. Rank 0 is the writer: it alone writes the run
folder, the record, the checkpoints and the trail line; the other ranks write nothing.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from auditkit.errors import RunError

if TYPE_CHECKING:
    import torch
    from torch import nn

T = TypeVar("T")

#: The variables every torch.distributed launcher (torchrun, the elastic agent) sets for its workers.
LAUNCH_ENV = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
_joined: dict[str, Any] = {"owned": False, "backend": None}


class WorkerLost(RunError):
    """A worker process died, raised outside a unit, or left the process group: the run stops, unwritten."""


# ---------------------------------------------------------------- who am I


def launched() -> bool:
    """Whether this process is one rank of a torch.distributed launch (``torchrun`` or ``--workers``)."""
    return all(name in os.environ for name in LAUNCH_ENV)


def _group_ready() -> bool:
    if not (launched() or _joined["owned"]):
        return False
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    """How many processes share the run: the process group's size, else the launch's, else 1."""
    if _group_ready():
        import torch.distributed as dist

        return dist.get_world_size()
    return int(os.environ["WORLD_SIZE"]) if launched() else 1


def rank() -> int:
    """This process's rank in ``range(world_size())`` (0 without a launch)."""
    if _group_ready():
        import torch.distributed as dist

        return dist.get_rank()
    return int(os.environ["RANK"]) if launched() else 0


def is_writer() -> bool:
    """Whether this process writes the run's outputs (rank 0, or the only process)."""
    return rank() == 0


def describe() -> dict[str, Any]:
    """The record's provenance of the process layout: ``world_size`` (processes that shared the run),
    ``local_world_size`` (of them on this machine), ``nodes`` and the collective ``backend`` (None alone)."""
    size = world_size()
    local = int(os.environ.get("LOCAL_WORLD_SIZE", size)) if launched() else 1
    return {"world_size": size, "local_world_size": local, "nodes": max(1, size // max(1, local)),
            "backend": _joined["backend"] if size > 1 else None}


# ---------------------------------------------------------------- the process group


def join(*, device: torch.device) -> None:
    """Join the launch's process group, once (nothing without a launch, or when the caller already has one).

    CPU runs use gloo; CUDA runs pin this rank to GPU ``LOCAL_RANK`` and use ``cpu:gloo,cuda:nccl``, so
    DistributedDataParallel reduces over NCCL while objects (reference models' weights) travel over gloo.
    """
    if not launched() or _group_ready():
        return
    import datetime

    import torch
    import torch.distributed as dist

    backend = "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        backend = "cpu:gloo,cuda:nccl"
    timeout = datetime.timedelta(seconds=float(os.environ.get("AUDITKIT_DIST_TIMEOUT", "1800")))
    try:
        dist.init_process_group(backend=backend, timeout=timeout)
    except (RuntimeError, ValueError) as exc:
        raise WorkerLost(f"could not join the workers' process group ({_first_line(exc)})",
                         hint="check that every worker was started with the same rendezvous "
                              "(MASTER_ADDR, MASTER_PORT, WORLD_SIZE) and can reach the others") from None
    _joined.update(owned=True, backend=backend)


def barrier() -> None:
    """Wait until every rank got here (nothing alone)."""
    if world_size() > 1:
        import torch.distributed as dist

        _collective(dist.barrier, "waiting for the other workers")


def leave(*, clean: bool) -> None:
    """Leave the process group :func:`join` joined (a group the caller made is left alone).

    ``clean``: the run finished on this rank, so wait for the others first (none tears the group down
    under a rank still receiving); after a failure the others may be gone, so leave at once.
    """
    if not _joined["owned"]:
        return
    import torch.distributed as dist

    if dist.is_initialized():
        if clean:
            with contextlib.suppress(WorkerLost):
                barrier()
        dist.destroy_process_group()
    _joined.update(owned=False, backend=None)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__


def _collective(call: Callable[[], Any], doing: str) -> Any:
    """``call()``, a collective; a peer that died or left turns into one :class:`WorkerLost`."""
    try:
        return call()
    except (RuntimeError, ValueError, ConnectionError) as exc:  # gloo: "Connection closed by peer", timeouts
        raise WorkerLost(f"a worker left the run while {doing} ({_first_line(exc)}); nothing was written",
                         hint="rerun the command; if a worker keeps dying, give it more memory or use fewer "
                              "--workers") from None


# ---------------------------------------------------------------- sharing work


@contextlib.contextmanager
def _own_rng() -> Iterator[None]:
    """Run a unit on a copy of the global RNG state: what it draws depends on its own seeding only, and the
    caller's state afterwards does not depend on which units ran in this process."""
    import torch

    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    with torch.random.fork_rng(devices=devices):
        yield


def _portable(exc: BaseException) -> BaseException:
    """``exc`` if it survives pickling (to be raised on every rank), else a :class:`RunError` naming it."""
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:
        return RunError(f"{type(exc).__name__}: {_first_line(exc)}", hint="see the worker's output above")


def map_units(fn: Callable[[int], T], count: int, *, stage: str = "units of work") -> list[T]:
    """``[fn(0), …, fn(count - 1)]``, in index order, on every rank.

    ``fn(k)`` must depend only on ``k`` and on state every process shares (it seeds itself from ``k``), and
    return something picklable made of CPU tensors and plain values. With a process group, rank r computes
    the units ``k ≡ r (mod world_size)`` and all results are gathered on every rank, so every rank then
    continues identically. A unit that raises raises on every rank (the lowest index's error); ``stage``
    names the work in the error when a worker is lost meanwhile.
    """
    size = world_size()
    if size == 1:
        results = []
        for k in range(count):
            with _own_rng():
                results.append(fn(k))
        return results
    import torch.distributed as dist

    mine: list[tuple[int, bool, Any]] = []
    for k in range(rank(), count, size):
        try:
            with _own_rng():
                mine.append((k, True, fn(k)))
        except Exception as exc:  # every rank must reach the gather, or the others wait for it forever
            mine.append((k, False, _portable(exc)))
            break
    gathered: list[Any] = [None] * size
    _collective(lambda: dist.all_gather_object(gathered, mine), f"gathering {stage}")
    done = {k: (ok, value) for part in gathered for k, ok, value in part}
    failed = sorted(k for k, (ok, _) in done.items() if not ok)
    if failed:
        raise done[failed[0]][1]
    return [done[k][1] for k in range(count)]


def on_writer(fn: Callable[[], T], *, stage: str = "writing the run") -> T:
    """``fn()`` on the writer (rank 0) alone; every rank returns its result, or raises its error.

    For what must happen once: creating and publishing the run folder, the trail line, the probes of
    writable folders. The result (or the exception) must be picklable.
    """
    if world_size() == 1:
        return fn()
    import torch.distributed as dist

    box: list[Any] = [None]
    if is_writer():
        try:
            box[0] = (True, fn())
        except Exception as exc:
            box[0] = (False, _portable(exc))
            _collective(lambda: dist.broadcast_object_list(box, src=0), stage)
            raise
        _collective(lambda: dist.broadcast_object_list(box, src=0), stage)
        return box[0][1]
    _collective(lambda: dist.broadcast_object_list(box, src=0), stage)
    ok, value = box[0]
    if not ok:
        raise value
    return value


# ---------------------------------------------------------------- data-parallel training


def shard(positions: torch.Tensor) -> torch.Tensor:
    """This rank's share of a global batch: ``positions[rank::world_size]`` (all of it alone)."""
    size = world_size()
    return positions if size == 1 else positions[rank()::size]


def all_sum(values: Sequence[float]) -> list[float]:
    """``values`` summed element-wise over all ranks, in float64 (``values`` themselves alone)."""
    if world_size() == 1:
        return [float(v) for v in values]
    import torch
    import torch.distributed as dist

    total = torch.tensor([float(v) for v in values], dtype=torch.float64)
    _collective(lambda: dist.all_reduce(total), "summing losses over the ranks")
    return total.tolist()


def all_mean(values: Sequence[float]) -> list[float]:
    """``values`` averaged element-wise over all ranks, in float64 (``values`` themselves alone)."""
    size = world_size()
    return [float(v) for v in values] if size == 1 else [total / size for total in all_sum(values)]


def data_parallel(model: nn.Module) -> nn.Module:
    """``model`` wrapped in DistributedDataParallel when a process group shares the run (``model`` alone).

    DDP starts every rank from rank 0's weights and averages the gradients of each backward pass over the
    ranks, so the ranks' models stay identical step after step. Train through the wrapper; evaluate
    ``model`` itself (an evaluation forward through the wrapper would synchronise buffers for nothing).
    """
    if world_size() == 1:
        return model
    from torch.nn.parallel import DistributedDataParallel

    device = next(model.parameters()).device
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


# ---------------------------------------------------------------- launching local workers


def _quiet_elastic() -> dict[str, int]:
    """Silence torch's elastic agent (its own warnings and failure dumps would add lines to the one
    ``error:``/``hint:`` pair); returns the levels to restore."""
    levels = {}
    for name in list(logging.root.manager.loggerDict):
        if name.startswith(("torch.distributed", "torch.multiprocessing")):
            logger = logging.getLogger(name)
            levels[name] = logger.level
            logger.setLevel(logging.CRITICAL)
    return levels


def launch(fn: Callable[..., T], args: Sequence[Any], *, workers: int) -> T:
    """``fn(*args)`` in ``workers`` local processes through torch's elastic launcher; rank 0's return value.

    Like ``torchrun --standalone --nproc-per-node N`` (a c10d rendezvous on a free localhost port, spawned
    workers, no restarts): each worker gets the launch environment, so it joins the process group as a
    ``torchrun`` worker would. ``fn`` must be importable by name and return a picklable value on every
    rank. The agent's log folder is a temporary folder, removed afterwards.

    Raises:
        WorkerLost: a worker died (killed, out of memory) or raised; the others were stopped.
        KeyboardInterrupt: the launch was interrupted (Ctrl-C, SIGTERM); the workers were stopped.
    """
    from torch.distributed.elastic.multiprocessing import DefaultLogsSpecs
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    logs = tempfile.mkdtemp(prefix="auditkit-workers.")
    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=workers, run_id=uuid.uuid4().hex,
                          rdzv_backend="c10d", rdzv_endpoint="localhost:0", max_restarts=0, start_method="spawn",
                          logs_specs=DefaultLogsSpecs(log_dir=logs))
    levels = _quiet_elastic()
    try:
        return elastic_launch(config, fn)(*args)[0]
    except ChildFailedError as exc:
        raise _lost(exc, workers=workers) from None
    except SignalException:
        raise KeyboardInterrupt from None
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
        shutil.rmtree(logs, ignore_errors=True)


def _lost(exc: Any, *, workers: int) -> WorkerLost:
    """One error for a launch that lost a worker: a worker killed by a signal is the cause (the others then
    fail for lack of it), else the lowest failed rank."""
    failures = exc.failures  # {global rank: ProcessFailure}
    killed = sorted(r for r, f in failures.items() if f.exitcode < 0)
    culprit = killed[0] if killed else min(failures)
    failure = failures[culprit]
    how = (f"was killed by {failure.signal_name()}" if failure.exitcode < 0
           else f"stopped with exit code {failure.exitcode}")
    return WorkerLost(f"worker {culprit} of {workers} {how}; the run stopped and nothing was written",
                      hint="rerun the command; if a worker keeps dying, give it more memory or use fewer --workers"
                           + ("" if killed else " (the worker's traceback is above)"))
