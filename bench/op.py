"""Benchmark of the fused ∇τ loss op: forward + backward vs eager PyTorch vs torch.compile.

Each cell is B rows of float32 logits with C classes, split evenly into the forget and retain sets,
and times ``loss = ∇τ(forget, retain); loss.backward()`` down to the logits. The three variants run
interleaved in one loop (so a burst of load from other processes hits them alike) and the median is
reported. The memory-bandwidth floor is the bytes that must move (read the logits and labels once,
write the logit gradients once) divided by the bandwidth of a plain copy of the same size measured in
the same run.

Usage: python bench/op.py [--device cpu|cuda|all] [--cells 4096x1000 ...] [--threads N]
       [--out bench/results/op.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.nn import functional as F

from auditkit import ops
from auditkit.fsutil import atomic_write_text

BATCHES = (256, 4096, 65536)
CLASSES = (10, 100, 1000)
TAU = 3.0
ALPHA = 0.5


def eager_loss(f_logits, f_labels, r_logits, r_labels):
    """The ∇τ batch-form loss as a user would write it with F.cross_entropy and autograd."""
    f_losses = F.cross_entropy(f_logits, f_labels, reduction="none")
    r_losses = F.cross_entropy(r_logits, r_labels, reduction="none")
    return ALPHA * torch.relu(TAU - f_losses.mean()).square() + (1 - ALPHA) * r_losses.mean()


def fused_loss(f_logits, f_labels, r_logits, r_labels):
    return ops.nabla_tau_loss(f_logits, f_labels, r_logits, r_labels, tau=TAU, alpha=ALPHA,
                              backend=f_logits.device.type).loss


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def step_of(loss_fn: Callable, inputs: tuple) -> Callable[[], None]:
    f_logits, f_labels, r_logits, r_labels = inputs

    def step() -> None:
        f_logits.grad = None
        r_logits.grad = None
        loss = loss_fn(f_logits, f_labels, r_logits, r_labels)
        torch.autograd.backward(loss, inputs=[f_logits, r_logits])

    return step


def copy_bandwidth(numel: int, device: torch.device, repeats: int) -> float:
    """Bytes per second of ``dst.copy_(src)`` (read + write) for ``numel`` float32 values.

    The fastest of ``repeats`` copies: the floor is a physical limit, and on a shared machine slower
    copies measure the other processes, not the memory.
    """
    src = torch.randn(numel, device=device)
    dst = torch.empty_like(src)
    dst.copy_(src)
    times = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        dst.copy_(src)
        synchronize(device)
        times.append(time.perf_counter() - start)
    return 2 * src.numel() * src.element_size() / min(times)


def bench_cell(batch: int, classes: int, device: torch.device, *, budget_s: float) -> dict:
    gen = torch.Generator().manual_seed(batch * 1000 + classes)
    half = batch // 2

    def make_inputs():
        f_logits = (torch.randn(half, classes, generator=gen) * 2).to(device).requires_grad_()
        r_logits = (torch.randn(batch - half, classes, generator=gen) * 2).to(device).requires_grad_()
        f_labels = torch.randint(0, classes, (half,), generator=gen).to(device)
        r_labels = torch.randint(0, classes, (batch - half,), generator=gen).to(device)
        return f_logits, f_labels, r_logits, r_labels

    inputs = make_inputs()
    torch._dynamo.reset()
    compiled = torch.compile(eager_loss)
    steps = {"fused": step_of(fused_loss, inputs), "eager": step_of(eager_loss, inputs),
             "compile": step_of(compiled, inputs)}
    start = time.perf_counter()
    steps["compile"]()  # the compilation itself is not what we time
    compile_s = time.perf_counter() - start
    for step in steps.values():  # warm-up: allocator, caches, lazy initialisation
        for _ in range(3):
            step()
    synchronize(device)
    start = time.perf_counter()
    for step in steps.values():
        step()
    synchronize(device)
    repeats = max(7, min(101, int(budget_s / max(time.perf_counter() - start, 1e-6))))
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            synchronize(device)
            t0 = time.perf_counter()
            step()
            synchronize(device)
            times[name].append(time.perf_counter() - t0)
    medians = {name: statistics.median(values) for name, values in times.items()}
    best = {name: min(values) for name, values in times.items()}
    bandwidth = copy_bandwidth(batch * classes, device, repeats=max(30, repeats))
    must_move = 2 * batch * classes * 4 + batch * 8  # logits read once, gradients written once, labels
    floor_s = must_move / bandwidth
    return {
        "B": batch, "C": classes, "repeats": repeats,
        "fused_ms": medians["fused"] * 1e3, "eager_ms": medians["eager"] * 1e3,
        "compile_ms": medians["compile"] * 1e3, "compile_time_s": compile_s,
        "fused_best_ms": best["fused"] * 1e3, "eager_best_ms": best["eager"] * 1e3,
        "compile_best_ms": best["compile"] * 1e3,
        "speedup_vs_eager": medians["eager"] / medians["fused"],
        "speedup_vs_compile": medians["compile"] / medians["fused"],
        "bytes_must_move": must_move, "copy_bandwidth_gb_s": bandwidth / 1e9,
        "floor_ms": floor_s * 1e3, "fraction_of_floor": floor_s / medians["fused"],
        "fraction_of_floor_best": floor_s / best["fused"],
    }


def print_table(device: str, rows: list[dict]) -> None:
    print(f"\n{device}: forward+backward, float32, median ms (B rows split evenly into forget/retain)")
    print("(in brackets: the best run, which is what an unshared machine would show)")
    print(f"{'B':>6} {'C':>5} {'fused':>18} {'eager':>18} {'compile':>18} {'×eager':>7} {'×compile':>9} "
          f"{'floor':>8} {'of floor':>12} {'copy GB/s':>10}")
    for r in rows:
        cells = [f"{r[k + '_ms']:.3f} [{r[k + '_best_ms']:.3f}]" for k in ("fused", "eager", "compile")]
        print(f"{r['B']:>6} {r['C']:>5} {cells[0]:>18} {cells[1]:>18} {cells[2]:>18} "
              f"{r['speedup_vs_eager']:>7.2f} {r['speedup_vs_compile']:>9.2f} {r['floor_ms']:>8.3f} "
              f"{r['fraction_of_floor']:>5.0%} [{r['fraction_of_floor_best']:>4.0%}] {r['copy_bandwidth_gb_s']:>10.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cpu", "cuda", "all"), default="all")
    parser.add_argument("--cells", nargs="*", default=None, help="BxC cells, e.g. 4096x1000 (default: all 9)")
    parser.add_argument("--budget", type=float, default=1.5, help="seconds of timed runs per cell (approx.)")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads (default: torch's); 1 avoids OpenMP barrier stalls on a loaded machine")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "op.json")
    args = parser.parse_args()
    cells = ([tuple(int(v) for v in cell.split("x")) for cell in args.cells] if args.cells
             else [(b, c) for b in BATCHES for c in CLASSES])
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    devices = ["cpu", "cuda"] if args.device == "all" else [args.device]
    if "cuda" in devices and not torch.cuda.is_available():
        if args.device == "cuda":
            raise SystemExit("no CUDA device: run with --device cpu")
        devices.remove("cuda")
    plan = ops.build_extension()
    record = {
        "schema_version": 1, "torch": torch.__version__, "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(), "cpu_isa": plan.cpu_isa,
        "load_average_start": os.getloadavg(), "results": {},
    }
    for device in devices:
        rows = []
        for batch, classes in cells:
            rows.append(bench_cell(batch, classes, torch.device(device), budget_s=args.budget))
            r = rows[-1]
            print(f"  {device} B={batch} C={classes}: fused {r['fused_ms']:.3f} ms, eager {r['eager_ms']:.3f} ms, "
                  f"compile {r['compile_ms']:.3f} ms", flush=True)
        record["results"][device] = rows
        print_table(device, rows)
    record["load_average_end"] = os.getloadavg()
    print(f"\nload average (1/5/15 min): start {record['load_average_start']}, end {record['load_average_end']} "
          f"on {os.cpu_count()} CPUs")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(record, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
