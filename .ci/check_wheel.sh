#!/usr/bin/env bash
# Build a wheel of the project (distribution auditkit-unlearn: "auditkit" on PyPI is an unrelated project),
# install it (non-editable) into a fresh venv that first gets the local CPU torch wheel, check that the venv
# holds auditkit-unlearn and no distribution named "auditkit", and from a directory outside the checkout:
# find csrc/, templates/ and the plugins, build and run the fused op against the reference, run
# `auditkit --help`, and install the example third-party plugin, whose dependency must resolve to this wheel.
#
# Env: PYTHON (default: the checkout's .venv/bin/python, else python3) builds the wheel and the venv.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-$repo/.venv/bin/python}"
[[ -x "$python" ]] || python=python3
torch_version="2.13.0"
start=$SECONDS
work="$(mktemp -d /tmp/auditkit-wheel.XXXXXX)"
trap 'rm -rf "$work"' EXIT

# Build from a copy so the build's own byproducts (build/, *.egg-info) never land in the checkout.
mkdir -p "$work/src"
git -C "$repo" ls-files -z --cached --others --exclude-standard | \
    (cd "$repo" && xargs -0 cp --parents -t "$work/src" 2>/dev/null || true)
"$python" -m pip wheel --quiet --no-deps --no-build-isolation -w "$work/dist" "$work/src"
wheel="$(ls "$work"/dist/auditkit_unlearn-*.whl)"
echo "check_wheel: built $(basename "$wheel") in $((SECONDS - start)) s"
"$python" -m zipfile -l "$wheel" | awk '{print $1}' > "$work/contents.txt"
for expected in auditkit/_csrc/nabla_tau.h auditkit/_csrc/nabla_tau_cpu.cpp auditkit/_csrc/nabla_tau_cuda.cu \
                auditkit/_csrc/nabla_tau.cpp auditkit/_templates/report.html auditkit_plugins/__init__.py; do
    grep -qx "$expected" "$work/contents.txt" || { echo "check_wheel: $expected is missing from the wheel" >&2; exit 1; }
done

"$python" -m venv "$work/venv"
# torch first, pinned by a constraint for the rest, so resolving auditkit's `torch>=...` never pulls
# a second (CUDA) torch.
echo "torch==$torch_version" > "$work/constraints.txt"
"$work/venv/bin/pip" install --quiet "torch==$torch_version"
"$work/venv/bin/pip" install --quiet --constraint "$work/constraints.txt" "$wheel"
torch_count="$("$work/venv/bin/pip" list 2>/dev/null | grep -c '^torch ' || true)"
[[ "$torch_count" == 1 ]] || { echo "check_wheel: expected one torch, pip list shows $torch_count" >&2; exit 1; }
check_distributions() {
    "$work/venv/bin/pip" list --format=freeze 2>/dev/null > "$work/freeze.txt"
    grep -qix 'auditkit-unlearn==[0-9.]*' "$work/freeze.txt" || { echo "check_wheel: auditkit-unlearn is not installed" >&2; exit 1; }
    if grep -qi '^auditkit==' "$work/freeze.txt"; then
        echo "check_wheel: the unrelated PyPI project 'auditkit' got installed" >&2; exit 1
    fi
}
check_distributions
echo "check_wheel: installed into a fresh venv at $((SECONDS - start)) s"

mkdir -p "$work/elsewhere"
cd "$work/elsewhere"
AUDITKIT_CACHE_DIR="$work/cache" "$work/venv/bin/python" - <<'PY'
import sys
import time
from importlib.metadata import entry_points
from pathlib import Path

import torch

import auditkit
from auditkit import ops
from auditkit.resources import resource_dir

site = Path(auditkit.__file__).resolve().parent
assert Path(sys.prefix) in site.parents, f"auditkit imported from {site}, not the venv"
csrc = resource_dir("csrc")
assert csrc == site / "_csrc", csrc
assert (resource_dir("templates") / "report.html").is_file()
for group in ("auditkit.models", "auditkit.datasets", "auditkit.methods", "auditkit.attacks"):
    assert entry_points(group=group), f"no {group} entry points"
import auditkit_plugins  # noqa: F401  (ships in the wheel)

start = time.perf_counter()
plan = ops.build_extension()
print(f"check_wheel: built the fused op from {csrc} in {time.perf_counter() - start:.1f} s ({plan.cpu_isa})")
gen = torch.Generator().manual_seed(0)
f = torch.randn(64, 10, generator=gen, dtype=torch.float64, requires_grad=True)
r = torch.randn(96, 10, generator=gen, dtype=torch.float64, requires_grad=True)
fy, ry = torch.randint(0, 10, (64,), generator=gen), torch.randint(0, 10, (96,), generator=gen)
grads = []
for backend in ("cpu", "reference"):
    f.grad = r.grad = None
    result = ops.nabla_tau_loss(f, fy, r, ry, tau=4.0, alpha=0.5, backend=backend)
    result.loss.backward()
    assert result.backend == backend
    grads.append((result.loss.detach(), result.forget_grad_norms, f.grad.clone(), r.grad.clone()))
for got, want in zip(*grads):
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
print("check_wheel: fused cpu op matches the reference")
PY
"$work/venv/bin/auditkit" --help > "$work/help.txt"
head -3 "$work/help.txt"

# The example plugin depends on auditkit-unlearn with a version range: installed with its dependencies, it
# must be satisfied by the wheel above and pull nothing named auditkit.
cp -r "$repo/examples/auditkit-example-attack" "$work/example"
"$python" -m pip wheel --quiet --no-deps --no-build-isolation -w "$work/example-dist" "$work/example"
"$work/venv/bin/pip" install --quiet --constraint "$work/constraints.txt" "$work"/example-dist/auditkit_example_attack-*.whl
check_distributions
"$work/venv/bin/auditkit" plugins list --kind attacks > "$work/attacks.txt"
grep -q $'^attacks\tlogit-margin\t' "$work/attacks.txt" || \
    { echo "check_wheel: the example plugin's logit-margin attack is not listed" >&2; exit 1; }
echo "check_wheel: the example plugin installs against auditkit-unlearn and is discovered"
echo "check_wheel: ok in $((SECONDS - start)) s"
