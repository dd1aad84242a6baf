"""Typed wrappers around the fused ∇τ loss op, with selectable backends.

Backends: ``"cpu"`` and ``"cuda"`` run the fused C++/CUDA extension in csrc/; ``"reference"`` is the
same math in pure PyTorch; ``"auto"`` picks the fused backend for the tensors' device and fails loudly
(never silently falls back) when the extension cannot be built.

The extension is compiled just in time with ninja on first use (15 s on two idle cores) into a
cache directory keyed by a hash of the sources, the torch version and the compiler flags
(``$AUDITKIT_CACHE_DIR``, default ``~/.cache/auditkit``); later processes load the cached library
directly. The CPU kernel is compiled for the host's widest vector instruction set, which is why the
library is built on the machine that runs it rather than shipped prebuilt.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.nn import functional as F

from auditkit.errors import InputError, OpBuildError
from auditkit.fsutil import atomic_write_text
from auditkit.progress import Progress, ProgressCallback, no_progress
from auditkit.resources import resource_dir

BACKENDS = ("auto", "cpu", "cuda", "reference")

_SOURCES = ("nabla_tau.cpp", "nabla_tau_cpu.cpp")
_CUDA_SOURCES = ("nabla_tau_cuda.cu",)
_HEADERS = ("nabla_tau.h", "nabla_tau_checks.h")
# Flags ATen itself uses for its AVX2 / AVX-512 kernels; at::vec picks its vector types from the
# CPU_CAPABILITY_* macro, so without them Vectorized<float>::exp is a scalar loop.
_ISA_FLAGS = {
    "AVX512": ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mfma",
               "-DCPU_CAPABILITY=AVX512", "-DCPU_CAPABILITY_AVX512"],
    "AVX2": ["-mavx2", "-mfma", "-mf16c", "-DCPU_CAPABILITY=AVX2", "-DCPU_CAPABILITY_AVX2"],
}
_COMPLETE_MARKER = "build-complete"
BUILD_STAGE = "fused op"
BUILD_MESSAGE = "building the fused op (first run only)…"


@dataclass(frozen=True)
class NablaTauResult:
    """Outputs of one ∇τ loss evaluation.

    Attributes:
        loss: scalar, differentiable w.r.t. both logit tensors.
        forget_losses: ``[Bf]`` per-sample cross-entropy of the forget batch (detached).
        retain_losses: ``[Br]`` per-sample cross-entropy of the retain batch (detached).
        forget_grad_norms: ``[Bf]`` ``‖softmax - onehot‖₂`` per forget sample (detached).
        retain_grad_norms: ``[Br]`` the same for the retain batch.
        backend: the backend that computed it (``"cpu"``, ``"cuda"`` or ``"reference"``).
    """

    loss: torch.Tensor
    forget_losses: torch.Tensor
    retain_losses: torch.Tensor
    forget_grad_norms: torch.Tensor
    retain_grad_norms: torch.Tensor
    backend: str


@dataclass(frozen=True)
class BuildPlan:
    """How the extension is (or would be) built on this machine.

    Attributes:
        name: library name, ``auditkit_ops_<hash>``; the hash covers sources, torch and flags.
        directory: the build directory inside the cache.
        sources: absolute paths of the compiled files.
        cflags: C++ flags (optimisation and the vector ISA).
        cuda_cflags: nvcc flags (empty without CUDA).
        with_cuda: whether the CUDA kernel is part of the build.
        cpu_isa: the vector ISA the CPU kernel targets (``AVX512``, ``AVX2`` or ``DEFAULT``).
    """

    name: str
    directory: Path
    sources: tuple[Path, ...]
    cflags: tuple[str, ...]
    cuda_cflags: tuple[str, ...]
    with_cuda: bool
    cpu_isa: str

    @property
    def library(self) -> Path:
        """The shared library the build produces."""
        return self.directory / f"{self.name}.so"


@dataclass(frozen=True)
class BackendStatus:
    """What ``auditkit doctor`` shows about the op backends.

    Attributes:
        plan: the build plan for this machine.
        built: whether the cached library exists (it may not be loaded yet).
        loaded: whether this process has loaded it.
        cuda_available: whether torch sees a CUDA device.
        error: the build error of this process, if a build failed.
    """

    plan: BuildPlan
    built: bool
    loaded: bool
    cuda_available: bool
    error: str | None

    @property
    def available(self) -> tuple[str, ...]:
        """Backends usable right now without a build (``reference`` always is)."""
        fused = ("cpu", "cuda") if self.plan.with_cuda else ("cpu",)
        return (*fused, "reference") if self.built else ("reference",)


_lock = threading.Lock()
_loaded_plan: BuildPlan | None = None
_build_error: OpBuildError | None = None
_python_parts_registered = False


def _cache_root() -> Path:
    override = os.environ.get("AUDITKIT_CACHE_DIR")
    return Path(override) if override else Path.home() / ".cache" / "auditkit"


def _cuda_wanted() -> bool:
    return torch.version.cuda is not None and torch.cuda.is_available()


def build_plan(*, with_cuda: bool | None = None) -> BuildPlan:
    """The build this machine needs: sources, flags and the cache directory keyed by their hash.

    Args:
        with_cuda: compile the CUDA kernel; ``None`` means when torch has CUDA and sees a GPU (CI sets
            it to compile the kernel on a machine without one).
    """
    csrc = resource_dir("csrc")
    with_cuda = _cuda_wanted() if with_cuda is None else with_cuda
    sources = tuple(csrc / name for name in _SOURCES + (_CUDA_SOURCES if with_cuda else ()))
    cpu_isa = torch.backends.cpu.get_cpu_capability()
    cflags = ("-O3", *_ISA_FLAGS.get(cpu_isa, []))
    cuda_cflags = ("-O3",) if with_cuda else ()
    digest = hashlib.sha256()
    for path in sorted(sources + tuple(csrc / name for name in _HEADERS)):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    for part in (torch.__version__, str(torch.version.cuda), os.environ.get("CXX", "c++"),
                 os.environ.get("TORCH_CUDA_ARCH_LIST", ""), *cflags, *cuda_cflags):
        digest.update(part.encode())
    name = f"auditkit_ops_{digest.hexdigest()[:16]}"
    return BuildPlan(name=name, directory=_cache_root() / "ops" / name, sources=sources,
                     cflags=cflags, cuda_cflags=cuda_cflags, with_cuda=with_cuda,
                     cpu_isa=cpu_isa if cpu_isa in _ISA_FLAGS else "DEFAULT")


def _first_error_lines(text: str, limit: int = 3) -> str:
    """The compiler's first diagnostics, skipping ninja's echo of the command lines."""
    lines = [line.strip() for line in text.splitlines()
             if re.search(r"\berror\b|not found|fatal", line, re.IGNORECASE)
             and not line.startswith(("Error building extension", "["))]
    return " | ".join(lines[:limit]) or (text.strip().splitlines() or ["no compiler output"])[-1][-400:]


def build_extension(*, verbose: bool = False, with_cuda: bool | None = None,
                    progress: ProgressCallback = no_progress) -> BuildPlan:
    """Build (first time) or load (cached) the fused op into this process; idempotent.

    Args:
        verbose: echo the compiler commands.
        with_cuda: see :func:`build_plan`.
        progress: told when a compile starts (:data:`BUILD_MESSAGE`) and how it ended, with the elapsed
            time, as a ``wait`` report of stage :data:`BUILD_STAGE`; a cached load reports nothing.

    Raises:
        OpBuildError: the compiler failed or is missing; the message quotes its first error lines.
    """
    global _loaded_plan, _build_error
    with _lock:
        if _loaded_plan is not None:
            return _loaded_plan
        if _build_error is not None:
            raise _build_error
        plan = build_plan(with_cuda=with_cuda)
        try:
            if (plan.directory / _COMPLETE_MARKER).is_file() and plan.library.is_file():
                torch.ops.load_library(str(plan.library))
            else:
                _timed_compile(plan, verbose=verbose, progress=progress)
        except (RuntimeError, OSError, ImportError, subprocess.SubprocessError) as exc:
            _build_error = OpBuildError(
                f"the fused ∇τ op could not be built in {plan.directory}: {_first_error_lines(str(exc))}",
                hint="install a C++17 compiler (g++) and ninja, or run with --backend reference",
            )
            raise _build_error from exc
        _register_python_parts()
        _loaded_plan = plan
        return plan


def _timed_compile(plan: BuildPlan, *, verbose: bool, progress: ProgressCallback) -> None:
    """:func:`_compile`, announced before it starts (it takes 15-60 s) and reported with its duration."""
    progress(Progress(BUILD_STAGE, 0, 1, BUILD_MESSAGE, wait=True))
    started = time.perf_counter()
    try:
        _compile(plan, verbose=verbose)
    except BaseException:
        progress(Progress(BUILD_STAGE, 1, 1, f"failed after {time.perf_counter() - started:.1f} s", wait=True))
        raise
    progress(Progress(BUILD_STAGE, 1, 1, f"built in {time.perf_counter() - started:.1f} s", wait=True))


def _compile(plan: BuildPlan, *, verbose: bool) -> None:
    from torch.utils import cpp_extension  # only needed when building: importing it costs ~0.3 s

    plan.directory.mkdir(parents=True, exist_ok=True)
    cpp_extension.load(
        name=plan.name,
        sources=[str(path) for path in plan.sources],
        extra_cflags=list(plan.cflags),
        extra_cuda_cflags=list(plan.cuda_cflags),
        build_directory=str(plan.directory),
        with_cuda=plan.with_cuda,
        is_python_module=False,
        verbose=verbose,
    )
    atomic_write_text(plan.directory / _COMPLETE_MARKER, f"{torch.__version__}\n")


def backend_status() -> BackendStatus:
    """Report the build plan and whether the fused op is built and loaded (builds nothing)."""
    plan = build_plan()
    built = (plan.directory / _COMPLETE_MARKER).is_file() and plan.library.is_file()
    return BackendStatus(plan=plan, built=built, loaded=_loaded_plan is not None,
                         cuda_available=torch.cuda.is_available(),
                         error=None if _build_error is None else _build_error.message)


def _fake_kernel(forget_logits, forget_labels, retain_logits, retain_labels, tau, alpha, per_sample):
    acc_dtype = torch.float64 if forget_logits.dtype == torch.float64 else torch.float32

    def stat(*shape: int) -> torch.Tensor:
        return forget_logits.new_empty(shape, dtype=acc_dtype)

    bf, br = forget_logits.shape[0], retain_logits.shape[0]
    return (stat(), stat(bf), stat(br), stat(bf), stat(br),
            forget_logits.new_empty(forget_logits.shape), retain_logits.new_empty(retain_logits.shape))


def _setup_context(ctx, inputs, output) -> None:
    ctx.save_for_backward(output[5], output[6])
    # Only the loss is differentiable; materialising zero gradients for the other six outputs would
    # fill two [B, C] tensors per backward (measured: more than the whole kernel).
    ctx.set_materialize_grads(False)


def _is_plain_cpu_one(grad: torch.Tensor) -> bool:
    # Under torch.compile the gradient is a fake/functional subclass and we take the traced multiply.
    return type(grad) is torch.Tensor and grad.device.type == "cpu" and grad.numel() == 1 and grad.item() == 1.0


def _backward(ctx, grad_loss, *_unused_grads):
    # The kernel already wrote d loss / d logits; the per-sample outputs are not differentiable.
    if grad_loss is None:  # the loss was not used (autograd passes None: grads are not materialised)
        return None, None, None, None, None, None, None
    forget_grad, retain_grad = ctx.saved_tensors
    if not _is_plain_cpu_one(grad_loss):
        forget_grad = (forget_grad * grad_loss).to(forget_grad.dtype)
        retain_grad = (retain_grad * grad_loss).to(retain_grad.dtype)
    return forget_grad, None, retain_grad, None, None, None, None


def _register_python_parts() -> None:
    # torch refuses a second fake kernel for one op; a reloaded library keeps the first registration.
    global _python_parts_registered
    if _python_parts_registered:
        return
    torch.library.register_fake("auditkit::nabla_tau_loss", _fake_kernel)
    torch.library.register_autograd("auditkit::nabla_tau_loss", _backward, setup_context=_setup_context)
    _python_parts_registered = True


def resolve_backend(backend: str, device: torch.device, *, progress: ProgressCallback = no_progress) -> str:
    """Map ``backend`` (one of :data:`BACKENDS`) to the concrete backend for ``device``.

    A fused backend is built (or loaded from the cache) here, so a missing compiler fails before any
    heavy work, with an :class:`~auditkit.errors.OpBuildError` that suggests ``--backend reference``;
    a first-run build is reported through ``progress`` (see :func:`build_extension`).
    """
    if backend not in BACKENDS:
        raise InputError(f"unknown op backend {backend!r}", hint=f"choose one of {', '.join(BACKENDS)}")
    if backend == "reference":
        return "reference"
    concrete = device.type if backend == "auto" else backend
    if concrete not in ("cpu", "cuda"):
        raise InputError(f"the fused op has no kernel for {device.type} tensors",
                         hint="use --backend reference")
    if concrete != device.type:
        raise InputError(f"backend {backend!r} cannot run tensors on {device.type}",
                         hint=f"use --backend auto or --backend {device.type}")
    plan = build_extension(progress=progress)
    if concrete == "cuda" and not plan.with_cuda:
        raise OpBuildError("the fused op was built without its CUDA kernel (torch has no CUDA device)",
                           hint="install a CUDA build of torch, or use --backend reference")
    return concrete


def _reference(forget_logits, forget_labels, retain_logits, retain_labels, tau, alpha, per_sample):
    compute_dtype = torch.float32 if forget_logits.dtype in (torch.float16, torch.bfloat16) else forget_logits.dtype
    f_logits = forget_logits.to(compute_dtype)
    r_logits = retain_logits.to(compute_dtype)
    f_losses = F.cross_entropy(f_logits, forget_labels, reduction="none")
    r_losses = F.cross_entropy(r_logits, retain_labels, reduction="none")
    if per_sample:
        forget_term = torch.relu(tau - f_losses).square().mean() if len(f_losses) else f_logits.sum() * 0
    else:
        forget_term = torch.relu(tau - f_losses.mean()).square() if len(f_losses) else f_logits.sum() * 0
    retain_term = r_losses.mean() if len(r_losses) else r_logits.sum() * 0
    loss = alpha * forget_term + (1 - alpha) * retain_term

    def grad_norms(logits, labels):
        with torch.no_grad():
            if logits.shape[0] == 0:
                return logits.new_zeros(0)
            probs = logits.softmax(1)
            probs[torch.arange(len(labels)), labels] -= 1
            return probs.norm(dim=1)

    return NablaTauResult(loss, f_losses.detach(), r_losses.detach(), grad_norms(f_logits, forget_labels),
                          grad_norms(r_logits, retain_labels), "reference")


def nabla_tau_loss(
    forget_logits: torch.Tensor,
    forget_labels: torch.Tensor,
    retain_logits: torch.Tensor,
    retain_labels: torch.Tensor,
    *,
    tau: float,
    alpha: float,
    per_sample: bool = False,
    backend: str = "auto",
) -> NablaTauResult:
    """The ∇τ loss ``α·ReLU(τ − mean ℓf)² + (1−α)·mean ℓr`` (or per-sample ReLU) in one pass.

    The fused backends compute cross-entropy, gradient norms and ``d loss / d logits`` of both sets in
    one sweep over the logits (max-subtracted logsumexp: safe for logits up to ±1e4); the backward
    pass only scales the stored gradients by the incoming one (and skips even that when it is 1).
    On CPU, gradient buffers of 1 MiB and more that autograd has released are reused by the next call
    (up to 8 buffers / 1 GiB), so a training loop does not page-fault a fresh ``[B, C]`` output every
    step. Gradients are first order only. float16/bfloat16 logits accumulate in float32, and ``loss`` and
    the per-sample outputs are then float32.

    An empty set (``Bf = 0`` or ``Br = 0``) contributes nothing: its term of the loss is 0 and its
    per-sample outputs are empty, so ``Bf = 0`` gives ``(1−α)·mean ℓr``.

    Args:
        forget_logits: ``[Bf, C]`` logits of the forget batch.
        forget_labels: ``[Bf]`` int64 labels in ``[0, C)``.
        retain_logits: ``[Br, C]`` logits of the retain batch (same ``C`` and dtype).
        retain_labels: ``[Br]`` int64 labels in ``[0, C)``.
        tau: the target loss τ (mean validation loss).
        alpha: weight of the forget term in [0, 1].
        per_sample: ``α·mean_i ReLU(τ − ℓf_i)²`` instead of the batch form.
        backend: one of :data:`BACKENDS`.

    Raises:
        InputError: unknown backend, or a backend that cannot run on the tensors' device.
        OpBuildError: a fused backend was asked for (``auto`` included) and the extension cannot be
            built.
        RuntimeError: bad tensors (from the kernel's checks, naming the argument).
    """
    concrete = resolve_backend(backend, forget_logits.device)
    if concrete == "reference":
        return _reference(forget_logits, forget_labels, retain_logits, retain_labels, tau, alpha, per_sample)
    loss, f_losses, r_losses, f_norms, r_norms, _, _ = torch.ops.auditkit.nabla_tau_loss.default(
        forget_logits, forget_labels, retain_logits, retain_labels, float(tau), float(alpha), bool(per_sample))
    return NablaTauResult(loss, f_losses.detach(), r_losses.detach(), f_norms.detach(), r_norms.detach(),
                          concrete)


def cross_entropy_stats(
    logits: torch.Tensor, labels: torch.Tensor, *, backend: str = "auto"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample cross-entropy ``[B]`` and logit-gradient norm ``[B]`` (no autograd)."""
    with torch.no_grad():
        # α = 1 zeroes the retain set's weight, so the fused kernel skips computing its gradient.
        result = nabla_tau_loss(logits[:0], labels[:0], logits, labels, tau=0.0, alpha=1.0, backend=backend)
    return result.retain_losses, result.retain_grad_norms
