"""The fused ∇τ loss op against a float64 pure-PyTorch reference, on the CPU backend.

The checks are plain functions of a device so tests/test_ops_cuda.py runs the same ones on CUDA.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
import zlib

import pytest
import torch
from torch.nn import functional as F

from auditkit import ops
from auditkit.errors import InputError, OpBuildError
from auditkit.resources import resource_dir

# (Bf, Br, C): one-row batches, one class, two classes, a size with a vector tail, a huge C.
SHAPES = [(1, 1, 1), (3, 4, 2), (17, 9, 10), (5, 6, 37), (4, 3, 10000)]


@pytest.fixture(scope="module", autouse=True)
def built_op():
    return ops.build_extension()


def float64_reference(f_logits, f_labels, r_logits, r_labels, *, tau, alpha, per_sample):
    """Losses, norms and logit gradients of the ∇τ loss computed independently in float64."""
    f = f_logits.detach().double().requires_grad_()
    r = r_logits.detach().double().requires_grad_()
    f_losses = F.cross_entropy(f, f_labels, reduction="none")
    r_losses = F.cross_entropy(r, r_labels, reduction="none")
    if per_sample:
        forget_term = torch.relu(tau - f_losses).square().mean() if len(f_losses) else f.sum() * 0
    else:
        forget_term = torch.relu(tau - f_losses.mean()).square() if len(f_losses) else f.sum() * 0
    retain_term = r_losses.mean() if len(r_losses) else r.sum() * 0
    loss = alpha * forget_term + (1 - alpha) * retain_term
    f_grad, r_grad = torch.autograd.grad(loss, (f, r))

    def norms(logits, labels):
        return (logits.detach().softmax(1) - F.one_hot(labels, logits.shape[1]).double()).norm(dim=1)

    return {"loss": loss.detach(), "forget_losses": f_losses.detach(), "retain_losses": r_losses.detach(),
            "forget_grad_norms": norms(f, f_labels), "retain_grad_norms": norms(r, r_labels),
            "forget_grad": f_grad, "retain_grad": r_grad}


def random_inputs(bf, br, c, *, device, dtype, seed, scale=3.0):
    gen = torch.Generator().manual_seed(seed)
    f_logits = (torch.randn(bf, c, generator=gen, dtype=torch.float64) * scale).to(device, dtype)
    r_logits = (torch.randn(br, c, generator=gen, dtype=torch.float64) * scale).to(device, dtype)
    f_labels = torch.randint(0, c, (bf,), generator=gen).to(device)
    r_labels = torch.randint(0, c, (br,), generator=gen).to(device)
    return f_logits, f_labels, r_logits, r_labels


def tau_for(regime, f_logits, f_labels):
    """τ that makes the forget ReLU active for every row, inactive for every row, or mixed.

    "mixed" sits midway between the two middle losses, away from every ℓ_i: a τ within δ of a float32
    loss leaves τ − ℓ_i (and that row's gradient) with a relative error of about 1e-7 · ℓ_i / δ.
    """
    losses = F.cross_entropy(f_logits.double(), f_labels, reduction="none").sort().values
    middle = len(losses) // 2
    mixed = (losses[middle - 1] + losses[middle]).item() / 2 if len(losses) > 1 else losses[0].item() + 0.5
    return {"active": losses[-1].item() + 1.0, "inactive": losses[0].item() - 1.0, "mixed": mixed}[regime]


def fused_outputs(f_logits, f_labels, r_logits, r_labels, *, tau, alpha, per_sample, backend):
    f = f_logits.detach().clone().requires_grad_()
    r = r_logits.detach().clone().requires_grad_()
    result = ops.nabla_tau_loss(f, f_labels, r, r_labels, tau=tau, alpha=alpha, per_sample=per_sample,
                                backend=backend)
    result.loss.backward()
    return result, {"loss": result.loss, "forget_losses": result.forget_losses,
                    "retain_losses": result.retain_losses, "forget_grad_norms": result.forget_grad_norms,
                    "retain_grad_norms": result.retain_grad_norms, "forget_grad": f.grad,
                    "retain_grad": r.grad}


def assert_matches_reference(got, want, *, dtype):
    # Absolute slack relative to the tensor's largest entry: float32 rows of 10⁴ classes sum 10⁴ rounded
    # exps, and small gradient entries inherit the rounding of the row's normaliser.
    rtol, atol = (1e-10, 1e-13) if dtype == torch.float64 else (2e-5, 1e-6)
    for key, expected in want.items():
        actual = got[key]
        assert actual.shape == expected.shape, key
        scale = expected.abs().max().item() if expected.numel() else 0.0
        torch.testing.assert_close(actual.double().cpu(), expected.cpu(), rtol=rtol, atol=atol * scale,
                                   msg=lambda m, k=key: f"{k}: {m}")


def check_against_reference(device, backend, dtype, shape, per_sample, regime, seed):
    bf, br, c = shape
    inputs = random_inputs(bf, br, c, device=device, dtype=dtype, seed=seed)
    tau = tau_for(regime, inputs[0], inputs[1])
    want = float64_reference(*inputs, tau=tau, alpha=0.3, per_sample=per_sample)
    result, got = fused_outputs(*inputs, tau=tau, alpha=0.3, per_sample=per_sample, backend=backend)
    assert result.backend == backend
    assert got["forget_grad"].dtype == dtype and got["loss"].dtype == dtype
    assert_matches_reference(got, want, dtype=dtype)
    if regime == "inactive":
        assert torch.count_nonzero(got["forget_grad"]) == 0


def check_extreme_logits(device, backend, dtype):
    gen = torch.Generator().manual_seed(7)
    c = 50
    signs = torch.randint(0, 2, (6, c), generator=gen).double() * 2 - 1
    f_logits = (signs * 1e4).to(device, dtype)
    r_logits = torch.zeros(5, c, dtype=dtype, device=device)  # all classes tied
    r_logits[1:3, :] = 1e4  # ties at the extreme
    f_labels = torch.randint(0, c, (6,), generator=gen).to(device)
    r_labels = torch.randint(0, c, (5,), generator=gen).to(device)
    tau = 2e4 + 1.0  # above every forget loss (at most 2e4), so the ReLU is active
    for per_sample in (False, True):
        want = float64_reference(f_logits, f_labels, r_logits, r_labels, tau=tau, alpha=0.5, per_sample=per_sample)
        _, got = fused_outputs(f_logits, f_labels, r_logits, r_labels, tau=tau, alpha=0.5, per_sample=per_sample,
                               backend=backend)
        assert all(torch.isfinite(v).all() for v in got.values())
        assert_matches_reference(got, want, dtype=dtype)
    tied = ops.cross_entropy_stats(r_logits, r_labels, backend=backend)
    torch.testing.assert_close(tied[0].double().cpu(), torch.full((5,), math.log(50.0), dtype=torch.float64),
                               rtol=1e-6, atol=1e-6)


def check_reduced_precision(device, backend, dtype):
    inputs = random_inputs(8, 7, 33, device=device, dtype=dtype, seed=11)
    tau = tau_for("active", inputs[0], inputs[1])
    result, got = fused_outputs(*inputs, tau=tau, alpha=0.4, per_sample=False, backend=backend)
    assert result.loss.dtype == torch.float32 and result.forget_losses.dtype == torch.float32
    assert got["forget_grad"].dtype == dtype
    want = float64_reference(*inputs, tau=tau, alpha=0.4, per_sample=False)
    # Inputs are exact in float64, so only float32 accumulation and the final rounding of the
    # gradient to 8 (bf16) or 11 (fp16) mantissa bits differ from the reference.
    for key in ("loss", "forget_losses", "retain_losses", "forget_grad_norms", "retain_grad_norms"):
        torch.testing.assert_close(got[key].double().cpu(), want[key], rtol=1e-5, atol=1e-5)
    for key in ("forget_grad", "retain_grad"):
        torch.testing.assert_close(got[key].double().cpu(), want[key], rtol=1e-2, atol=1e-4)


def check_empty_batches(device, backend):
    f_logits, f_labels, r_logits, r_labels = random_inputs(4, 6, 5, device=device, dtype=torch.float64, seed=3)
    for f_rows, r_rows in ((0, 6), (4, 0), (0, 0)):
        args = (f_logits[:f_rows], f_labels[:f_rows], r_logits[:r_rows], r_labels[:r_rows])
        want = float64_reference(*args, tau=5.0, alpha=0.25, per_sample=False)
        result, got = fused_outputs(*args, tau=5.0, alpha=0.25, per_sample=False, backend=backend)
        assert result.forget_losses.shape == (f_rows,) and result.retain_losses.shape == (r_rows,)
        assert_matches_reference(got, want, dtype=torch.float64)
    only_retain = ops.nabla_tau_loss(f_logits[:0], f_labels[:0], r_logits, r_labels, tau=5.0, alpha=0.25,
                                     backend=backend)
    assert only_retain.loss.item() == pytest.approx(0.75 * F.cross_entropy(r_logits, r_labels).item(), rel=1e-12)
    both_empty = ops.nabla_tau_loss(f_logits[:0], f_labels[:0], r_logits[:0], r_labels[:0], tau=5.0, alpha=0.25,
                                    backend=backend)
    assert both_empty.loss.item() == 0.0


def check_gradient_scaling(device, backend):
    inputs = random_inputs(6, 5, 12, device=device, dtype=torch.float64, seed=5)
    tau = tau_for("active", inputs[0], inputs[1])
    want = float64_reference(*inputs, tau=tau, alpha=0.6, per_sample=False)
    f = inputs[0].clone().requires_grad_()
    r = inputs[2].clone().requires_grad_()
    loss = ops.nabla_tau_loss(f, inputs[1], r, inputs[3], tau=tau, alpha=0.6, backend=backend).loss
    (-2.5 * loss).backward(retain_graph=True)
    torch.testing.assert_close(f.grad, -2.5 * want["forget_grad"], rtol=1e-10, atol=1e-12)
    f.grad = None
    r.grad = None
    loss.backward()
    torch.testing.assert_close(r.grad, want["retain_grad"], rtol=1e-10, atol=1e-12)


def op_args(device, dtype, per_sample, seed=21):
    f_logits, f_labels, r_logits, r_labels = random_inputs(5, 4, 7, device=device, dtype=dtype, seed=seed)
    tau = tau_for("mixed", f_logits, f_labels) if per_sample else tau_for("active", f_logits, f_labels)
    return (f_logits.requires_grad_(), f_labels, r_logits.requires_grad_(), r_labels, tau, 0.35, per_sample)


def check_gradcheck(device, backend, per_sample):
    # τ sits between two rows' losses (mixed) or far above them (batch): ε = 1e-6 never crosses the kink.
    f_logits, f_labels, r_logits, r_labels, tau, alpha, _ = op_args(device, torch.float64, per_sample)

    def loss_of(f, r):
        return ops.nabla_tau_loss(f, f_labels, r, r_labels, tau=tau, alpha=alpha, per_sample=per_sample,
                                  backend=backend).loss

    assert torch.autograd.gradcheck(loss_of, (f_logits, r_logits), eps=1e-6, atol=1e-7)


def bad_input_cases(device):
    """(arguments, regex of the message) for each kind of bad input the kernel must name."""
    f_logits, f_labels, r_logits, r_labels = random_inputs(4, 3, 5, device=device, dtype=torch.float32, seed=1)
    nan_logits = f_logits.clone()
    nan_logits[1, 2] = float("nan")
    inf_logits = r_logits.clone()
    inf_logits[2, 0] = -float("inf")
    bad_label = r_labels.clone()
    bad_label[2] = 5
    negative_label = f_labels.clone()
    negative_label[3] = -1
    return [
        ((f_logits[0], f_labels, r_logits, r_labels), r"forget_logits must be 2-D"),
        ((f_logits, f_labels, r_logits, r_labels.float()), r"retain_labels must be int64"),
        ((f_logits, f_labels.view(2, 2), r_logits, r_labels), r"forget_labels must be 1-D"),
        ((f_logits.long(), f_labels, r_logits, r_labels), r"forget_logits must be float32, float64"),
        ((f_logits, f_labels[:3], r_logits, r_labels), r"forget_labels has 3 entries but forget_logits has 4 rows"),
        ((f_logits, f_labels, r_logits[:, :4], r_labels), r"forget_logits has C=5 classes but retain_logits has C=4"),
        ((f_logits, f_labels, r_logits.double(), r_labels), r"forget_logits is Float but retain_logits is Double"),
        ((f_logits, f_labels, r_logits, bad_label), r"retain_labels\[2\] = 5 is out of range for 5 classes"),
        ((f_logits, negative_label, r_logits, r_labels), r"forget_labels\[3\] = -1 is out of range"),
        ((nan_logits, f_labels, r_logits, r_labels), r"forget_logits\[1\] contains NaN or inf"),
        ((f_logits, f_labels, inf_logits, r_labels), r"retain_logits\[2\] contains NaN or inf"),
    ]


def check_bad_inputs(device, backend):
    for args, message in bad_input_cases(device):
        with pytest.raises(RuntimeError, match=message):
            ops.nabla_tau_loss(*args, tau=1.0, alpha=0.5, backend=backend)
    f_logits, f_labels, r_logits, r_labels = random_inputs(2, 2, 3, device=device, dtype=torch.float32, seed=2)
    with pytest.raises(RuntimeError, match=r"tau must be finite"):
        ops.nabla_tau_loss(f_logits, f_labels, r_logits, r_labels, tau=float("nan"), alpha=0.5, backend=backend)


def digits_step(device, backend, *, per_sample):
    """Parameters of a small MLP on sklearn digits before and after one AdamW step on the ∇τ loss."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.tensor(digits.data[:300], dtype=torch.float32, device=device) / 16.0
    y = torch.tensor(digits.target[:300], device=device)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10)).to(device)
    initial = [p.detach().clone() for p in model.parameters()]
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    forget, retain = slice(0, 40), slice(40, 300)
    result = ops.nabla_tau_loss(model(x[forget]), y[forget], model(x[retain]), y[retain], tau=3.0, alpha=0.5,
                                per_sample=per_sample, backend=backend)
    optimizer.zero_grad()
    result.loss.backward()
    optimizer.step()
    return initial, [p.detach().clone() for p in model.parameters()], result.loss.item()


def check_model_step(device, backend):
    for per_sample in (False, True):
        initial, fused_params, fused_loss = digits_step(device, backend, per_sample=per_sample)
        _, ref_params, ref_loss = digits_step(device, "reference", per_sample=per_sample)
        assert fused_loss == pytest.approx(ref_loss, rel=1e-5)
        for before, fused, ref in zip(initial, fused_params, ref_params):
            assert not torch.equal(before, fused)  # the step reached every parameter
            torch.testing.assert_close(fused, ref, rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------------------- CPU tests


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("per_sample", [False, True])
@pytest.mark.parametrize("regime", ["active", "inactive", "mixed"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_matches_float64_reference(dtype, per_sample, regime, shape):
    seed = zlib.crc32(repr((dtype, per_sample, regime, shape)).encode())
    check_against_reference(torch.device("cpu"), "cpu", dtype, shape, per_sample, regime, seed)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_extreme_and_tied_logits(dtype):
    check_extreme_logits(torch.device("cpu"), "cpu", dtype)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_reduced_precision_accumulates_in_float32(dtype):
    check_reduced_precision(torch.device("cpu"), "cpu", dtype)


def test_empty_batches_contribute_nothing():
    check_empty_batches(torch.device("cpu"), "cpu")


def test_backward_scales_by_incoming_gradient():
    check_gradient_scaling(torch.device("cpu"), "cpu")


@pytest.mark.parametrize("per_sample", [False, True])
def test_gradcheck(per_sample):
    check_gradcheck(torch.device("cpu"), "cpu", per_sample)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("per_sample", [False, True])
def test_opcheck(dtype, per_sample):
    torch.library.opcheck(torch.ops.auditkit.nabla_tau_loss.default, op_args("cpu", dtype, per_sample))


def test_torch_compile_traces_the_op():
    f_logits, f_labels, r_logits, r_labels, tau, alpha, _ = op_args("cpu", torch.float32, False)

    def loss_of(f, r):
        return torch.ops.auditkit.nabla_tau_loss(f, f_labels, r, r_labels, tau, alpha, False)[0]

    compiled = torch.compile(loss_of, backend="aot_eager", fullgraph=True)
    got = compiled(f_logits, r_logits)
    got.backward()
    grads = f_logits.grad.clone(), r_logits.grad.clone()
    f_logits.grad = r_logits.grad = None
    loss_of(f_logits, r_logits).backward()
    torch.testing.assert_close(got, loss_of(f_logits, r_logits))
    torch.testing.assert_close(grads, (f_logits.grad, r_logits.grad))


def test_reused_gradient_buffers_are_fully_overwritten():
    # 64 x 5000 float32 = 1.3 MB: large enough for the kernel's buffer cache (>= 1 MiB).
    op = torch.ops.auditkit.nabla_tau_loss.default
    first = op(*random_inputs(64, 64, 5000, device="cpu", dtype=torch.float32, seed=31), 9.0, 0.5, False)
    second = op(*random_inputs(64, 64, 5000, device="cpu", dtype=torch.float32, seed=32), 9.0, 0.5, False)
    live = {t.data_ptr() for t in first[5:] + second[5:]}
    assert len(live) == 4  # live outputs never share memory
    del first, second
    inputs = random_inputs(64, 64, 5000, device="cpu", dtype=torch.float32, seed=33)
    tau = tau_for("active", inputs[0], inputs[1])
    third = op(*inputs, tau, 0.5, False)
    assert {t.data_ptr() for t in third[5:]} <= live  # the released buffers were reused...
    want = float64_reference(*inputs, tau=tau, alpha=0.5, per_sample=False)
    torch.testing.assert_close(third[5].double(), want["forget_grad"], rtol=2e-5, atol=1e-9)  # ...and rewritten
    torch.testing.assert_close(third[6].double(), want["retain_grad"], rtol=2e-5, atol=1e-9)


def test_bad_inputs_name_the_argument():
    check_bad_inputs(torch.device("cpu"), "cpu")


def test_one_adamw_step_equals_reference_step():
    check_model_step(torch.device("cpu"), "cpu")


def test_cross_entropy_stats_match_reference():
    logits, labels, _, _ = random_inputs(40, 1, 13, device="cpu", dtype=torch.float32, seed=9)
    losses, norms = ops.cross_entropy_stats(logits, labels, backend="cpu")
    ref_losses, ref_norms = ops.cross_entropy_stats(logits, labels, backend="reference")
    torch.testing.assert_close(losses, ref_losses)
    torch.testing.assert_close(norms, ref_norms)


def test_auto_records_the_fused_backend_and_reference_stays_explicit():
    inputs = random_inputs(3, 3, 4, device="cpu", dtype=torch.float32, seed=4)
    assert ops.nabla_tau_loss(*inputs, tau=1.0, alpha=0.5).backend == "cpu"
    assert ops.nabla_tau_loss(*inputs, tau=1.0, alpha=0.5, backend="reference").backend == "reference"
    with pytest.raises(InputError, match="cannot run tensors on cpu"):
        ops.nabla_tau_loss(*inputs, tau=1.0, alpha=0.5, backend="cuda")
    with pytest.raises(InputError, match="unknown op backend"):
        ops.nabla_tau_loss(*inputs, tau=1.0, alpha=0.5, backend="fast")


def test_failed_build_is_loud_and_suggests_reference(monkeypatch, tmp_path):
    inputs = random_inputs(2, 2, 3, device="cpu", dtype=torch.float32, seed=8)
    monkeypatch.setenv("AUDITKIT_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
    monkeypatch.setattr(ops, "_loaded_plan", None)
    monkeypatch.setattr(ops, "_build_error", None)
    with pytest.raises(OpBuildError, match="could not be built") as failure:
        ops.nabla_tau_loss(*inputs, tau=1.0, alpha=0.5, backend="auto")
    assert "--backend reference" in failure.value.hint
    assert not ops.backend_status().built
    assert ops.nabla_tau_loss(*inputs, tau=1.0, alpha=0.5, backend="reference").backend == "reference"


def test_compiler_error_is_quoted(monkeypatch, tmp_path):
    csrc = tmp_path / "csrc"
    shutil.copytree(resource_dir("csrc"), csrc)
    # A missing include is fatal at once (an #error would let gcc parse all of ATen first); both files,
    # so whichever ninja starts first fails immediately.
    for source in ("nabla_tau.cpp", "nabla_tau_cpu.cpp"):
        (csrc / source).write_text('#include "auditkit_no_such_header.h"\n' + (csrc / source).read_text())
    monkeypatch.setattr(ops, "resource_dir", lambda name: csrc)
    monkeypatch.setenv("AUDITKIT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(ops, "_loaded_plan", None)
    monkeypatch.setattr(ops, "_build_error", None)
    with pytest.raises(OpBuildError, match=r"nabla_tau(_cpu)?\.cpp:1:10: fatal error: auditkit_no_such_header\.h") \
            as failure:
        ops.build_extension()
    assert "--backend reference" in failure.value.hint


def test_cached_load_takes_under_a_second():
    script = ("import time, torch; from auditkit import ops; t = time.perf_counter(); "
              "ops.build_extension(); print(time.perf_counter() - t)")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                         env=dict(os.environ))
    assert float(out.stdout.strip()) < 1.0
