"""`auditkit doctor`: what this installation can run: torch, CUDA, the fused op, the plugins."""

from __future__ import annotations

import platform
import time
from typing import Any

import click

from auditkit.cli.app import Application
from auditkit.cli.options import output_options


@click.command()
@click.option("--build", is_flag=True, help="Build (or load) the fused op now and report how long it took.")
@output_options
@click.pass_obj
def doctor(app: Application, build: bool) -> int:
    """Check the installation: Python, torch, CUDA, the fused op's build and backends, plugin errors.

    Exit code 0 when everything works, 3 when the op failed to build or a plugin failed to load.
    """
    import torch

    from auditkit import __version__, ops
    from auditkit.errors import EXIT_RUNTIME, OpBuildError
    from auditkit.registry import Registry

    report: dict[str, Any] = {"auditkit": __version__, "python": platform.python_version(), "torch": torch.__version__,
                              "torch_cuda": torch.version.cuda, "cuda_available": torch.cuda.is_available()}
    if report["cuda_available"]:
        report["cuda_device"] = torch.cuda.get_device_name(0)
    problems: list[str] = []
    if build:
        started = time.perf_counter()
        try:
            with app.progress() as progress:  # the same "building the fused op (first run only)…" line as a run
                ops.build_extension(progress=progress)
            report["build_seconds"] = round(time.perf_counter() - started, 2)
        except OpBuildError as exc:
            problems.append(exc.message)
    status = ops.backend_status()
    report["op"] = {"built": status.built, "loaded": status.loaded, "cpu_isa": status.plan.cpu_isa,
                    "with_cuda": status.plan.with_cuda, "cache": str(status.plan.directory),
                    "available_backends": list(status.available), "error": status.error}
    broken = [info for info in Registry.default().infos() if info.error]
    report["plugin_errors"] = [{"kind": i.kind, "name": i.name, "source": i.source, "error": i.error} for i in broken]
    problems += [f"{i.kind} plugin {i.name!r} ({i.source}): {i.error}" for i in broken]

    app.info(f"auditkit {__version__}, Python {report['python']}, torch {report['torch']}")
    cuda = f"yes ({report['cuda_device']})" if report["cuda_available"] else "no"
    app.info(f"CUDA: {cuda}; torch built with CUDA {report['torch_cuda'] or 'none'}")
    state = "loaded" if status.loaded else "built (cached)" if status.built else "not built yet (builds on first use, or run `auditkit doctor --build`)"
    app.info(f"fused op: {state}; CPU kernel ISA {status.plan.cpu_isa}; cache {status.plan.directory}")
    if "build_seconds" in report:
        app.info(f"fused op build/load took {report['build_seconds']} s")
    app.info(f"backends usable now: {', '.join(status.available)}")
    for problem in problems:
        app.info(f"problem: {problem}")
    if not problems:
        app.info("no problems found")
    report["problems"] = problems
    app.emit_json(report)
    return EXIT_RUNTIME if problems else 0
