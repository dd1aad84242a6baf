#!/usr/bin/env bash
# Compile the fused op's CUDA kernel (and the schema and CPU files it links with) against a CUDA build
# of torch, on a machine without a GPU: proves csrc/nabla_tau_cuda.cu builds; nothing is run on a GPU.
#
# A separate venv gets torch==2.14.1 (CUDA 13; installs from the local wheel store in ~80 s) because
# the CPU torch wheel lacks the c10/cuda headers. CUDA_HOME must be the real toolkit root: torch would
# otherwise derive it from the `nvcc` on PATH, a wrapper script, and linking then fails.
#
# Env: AUDITKIT_CUDA_VENV (default /tmp/auditkit-cuda-venv), CUDA_HOME (default /usr/local/cuda-13.0),
#      TORCH_CUDA_ARCH_LIST (default 9.0).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${AUDITKIT_CUDA_VENV:-/tmp/auditkit-cuda-venv}"
torch_version="2.14.1"
export CUDA_HOME="${CUDA_HOME:-/usr/local/cuda-13.0}"
export TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}"
export PATH="$CUDA_HOME/bin:$PATH"
start=$SECONDS

if [[ ! -x "$CUDA_HOME/bin/nvcc" ]]; then
    echo "compile_cuda: no nvcc under CUDA_HOME=$CUDA_HOME" >&2
    exit 1
fi
if ! "$venv/bin/python" -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '$torch_version' or torch.version.cuda is None)" 2>/dev/null; then
    echo "compile_cuda: creating $venv with torch==$torch_version (CUDA build)"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet "torch==$torch_version" ninja numpy
fi
install_s=$((SECONDS - start))

cache="$(mktemp -d /tmp/auditkit-cuda-build.XXXXXX)"
trap 'rm -rf "$cache"' EXIT
# The checkout itself is on PYTHONPATH (auditkit.ops needs only torch to build), so CI compiles exactly
# the plan that users get: same sources, same flags.
AUDITKIT_CACHE_DIR="$cache" PYTHONPATH="$repo" "$venv/bin/python" - <<'PY'
import time

import torch

from auditkit import ops

start = time.perf_counter()
plan = ops.build_extension(with_cuda=True)
elapsed = time.perf_counter() - start
assert plan.with_cuda and any(path.suffix == ".cu" for path in plan.sources), plan
for key in ("CPU", "CUDA"):
    assert torch._C._dispatch_has_kernel_for_dispatch_key("auditkit::nabla_tau_loss", key), key
print(f"compile_cuda: built {plan.library.name} with torch {torch.__version__} "
      f"(CUDA {torch.version.cuda}, arch {__import__('os').environ['TORCH_CUDA_ARCH_LIST']}) in {elapsed:.1f} s; "
      "CPU and CUDA kernels registered")
PY
echo "compile_cuda: ok in $((SECONDS - start)) s (venv check/install ${install_s} s)"
