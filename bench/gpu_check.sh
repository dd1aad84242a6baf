#!/usr/bin/env bash
# On a machine with a GPU: build the fused op with its CUDA kernel, check it against the reference
# (the CUDA tests, plus the benchmark sizes), and time it against eager PyTorch and torch.compile.
# Writes gpu_check.txt (the table) and op_cuda.json under $OUT (default bench/results/).
#
# Env: PYTHON (default python; needs a CUDA build of torch), CUDA_HOME (default /usr/local/cuda if
#      present), TORCH_CUDA_ARCH_LIST (default: the local GPU's), AUDITKIT_CACHE_DIR (build cache).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${OUT:-$repo/bench/results}"
python="${PYTHON:-python}"
mkdir -p "$out"
if [[ -z "${CUDA_HOME:-}" && -d /usr/local/cuda ]]; then export CUDA_HOME=/usr/local/cuda; fi
export AUDITKIT_CACHE_DIR="${AUDITKIT_CACHE_DIR:-/tmp/auditkit-gpu-cache}"
export PYTHONPATH="$repo:$repo/plugins${PYTHONPATH:+:$PYTHONPATH}"
cd "$repo"
log="$out/gpu_check.txt"
: > "$log"

{
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
    "$python" - <<'PY'
import time

import torch

from auditkit import ops

assert torch.cuda.is_available(), "gpu_check needs a CUDA device and a CUDA build of torch"
start = time.perf_counter()
plan = ops.build_extension(with_cuda=True)
print(f"built {plan.name} (torch {torch.__version__}, CUDA {torch.version.cuda}) in {time.perf_counter() - start:.1f} s")

# The benchmark's largest cells against the reference, float32: losses, norms and logit gradients.
for batch, classes in ((4096, 1000), (65536, 1000), (65536, 10)):
    gen = torch.Generator(device="cuda").manual_seed(batch + classes)
    half = batch // 2
    f = (torch.randn(half, classes, device="cuda", generator=gen) * 3).requires_grad_()
    r = (torch.randn(half, classes, device="cuda", generator=gen) * 3).requires_grad_()
    fy = torch.randint(0, classes, (half,), device="cuda", generator=gen)
    ry = torch.randint(0, classes, (half,), device="cuda", generator=gen)
    worst = 0.0
    for per_sample in (False, True):
        results, grads = [], []
        for backend in ("cuda", "reference"):
            f.grad = r.grad = None
            res = ops.nabla_tau_loss(f, fy, r, ry, tau=8.0, alpha=0.5, per_sample=per_sample, backend=backend)
            res.loss.backward()
            results.append(res)
            grads.append((f.grad.clone(), r.grad.clone()))
        fused, ref = results
        pairs = [(fused.loss, ref.loss), (fused.forget_losses, ref.forget_losses),
                 (fused.retain_grad_norms, ref.retain_grad_norms), (grads[0][0], grads[1][0]),
                 (grads[0][1], grads[1][1])]
        for got, want in pairs:
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6 * want.abs().max().item())
            worst = max(worst, ((got - want).abs().max() / want.abs().max().clamp_min(1e-12)).item())
    print(f"B={batch} C={classes}: matches the reference (worst relative error {worst:.2e})")
PY
    "$python" -m pytest tests/test_ops_cuda.py -q -p no:cacheprovider
    "$python" bench/op.py --device cuda --out "$out/op_cuda.json"
} 2>&1 | tee -a "$log"
echo "gpu_check: wrote $log and $out/op_cuda.json"
