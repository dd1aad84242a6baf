"""The checks of tests/test_ops.py on the CUDA backend; skipped without a GPU."""

from __future__ import annotations

import zlib

import pytest
import torch

from test_ops import (
    SHAPES,
    check_against_reference,
    check_bad_inputs,
    check_empty_batches,
    check_extreme_logits,
    check_gradcheck,
    check_gradient_scaling,
    check_model_step,
    check_reduced_precision,
    op_args,
)

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]
CUDA = torch.device("cuda")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("per_sample", [False, True])
@pytest.mark.parametrize("regime", ["active", "inactive", "mixed"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_matches_float64_reference(dtype, per_sample, regime, shape):
    seed = zlib.crc32(repr(("cuda", dtype, per_sample, regime, shape)).encode())
    check_against_reference(CUDA, "cuda", dtype, shape, per_sample, regime, seed)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_extreme_and_tied_logits(dtype):
    check_extreme_logits(CUDA, "cuda", dtype)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_reduced_precision_accumulates_in_float32(dtype):
    check_reduced_precision(CUDA, "cuda", dtype)


def test_empty_batches_contribute_nothing():
    check_empty_batches(CUDA, "cuda")


def test_backward_scales_by_incoming_gradient():
    check_gradient_scaling(CUDA, "cuda")


@pytest.mark.parametrize("per_sample", [False, True])
def test_gradcheck(per_sample):
    check_gradcheck(CUDA, "cuda", per_sample)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("per_sample", [False, True])
def test_opcheck(dtype, per_sample):
    torch.library.opcheck(torch.ops.auditkit.nabla_tau_loss.default, op_args(CUDA, dtype, per_sample))


def test_bad_inputs_name_the_argument():
    check_bad_inputs(CUDA, "cuda")


def test_one_adamw_step_equals_reference_step():
    check_model_step(CUDA, "cuda")


def test_auto_picks_cuda_for_cuda_tensors():
    from auditkit import ops

    args = op_args(CUDA, torch.float32, False)
    result = ops.nabla_tau_loss(*args[:4], tau=args[4], alpha=args[5])
    assert result.backend == "cuda" and result.loss.device.type == "cuda"
