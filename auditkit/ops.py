"""Typed wrappers around the fused ∇τ loss op, with selectable backends.

Backends: ``"cpu"`` and ``"cuda"`` run the fused C++/CUDA extension in csrc/; ``"reference"`` is the
same math in pure PyTorch; ``"auto"`` picks the fused backend for the tensors' device and fails loudly
(never silently falls back) when the extension cannot be built.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as F

from auditkit.errors import InputError, OpBuildError

BACKENDS = ("auto", "cpu", "cuda", "reference")


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


def resolve_backend(backend: str, device: torch.device) -> str:
    """Map ``backend`` (one of :data:`BACKENDS`) to the concrete backend for ``device``."""
    if backend not in BACKENDS:
        raise InputError(f"unknown op backend {backend!r}", hint=f"choose one of {', '.join(BACKENDS)}")
    if backend == "reference":
        return "reference"
    concrete = device.type if backend == "auto" else backend
    if concrete != device.type:
        raise InputError(f"backend {backend!r} cannot run tensors on {device.type}",
                         hint=f"use --backend auto or --backend {device.type}")
    raise OpBuildError("the fused op is not built yet", hint="use --backend reference")


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

    Args:
        forget_logits: ``[Bf, C]`` logits of the forget batch.
        forget_labels: ``[Bf]`` int64 labels.
        retain_logits: ``[Br, C]`` logits of the retain batch.
        retain_labels: ``[Br]`` int64 labels.
        tau: the target loss τ (mean validation loss).
        alpha: weight of the forget term in [0, 1].
        per_sample: ``α·mean_i ReLU(τ − ℓf_i)²`` instead of the batch form.
        backend: one of :data:`BACKENDS`.
    """
    concrete = resolve_backend(backend, forget_logits.device)
    return _reference(forget_logits, forget_labels, retain_logits, retain_labels, tau, alpha, per_sample)


def cross_entropy_stats(
    logits: torch.Tensor, labels: torch.Tensor, *, backend: str = "auto"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample cross-entropy ``[B]`` and logit-gradient norm ``[B]`` (no autograd)."""
    with torch.no_grad():
        result = nabla_tau_loss(logits[:0], labels[:0], logits, labels, tau=0.0, alpha=0.0, backend=backend)
    return result.retain_losses, result.retain_grad_norms
