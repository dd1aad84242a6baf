"""Locate the files that ship beside the code: csrc/ (the op's sources) and templates/ (the report).

In a wheel they live inside the package as ``auditkit/_csrc`` and ``auditkit/_templates`` (see the
package-dir mapping in pyproject.toml); in a source checkout or editable install they are the top-level
``csrc/`` and ``templates/`` folders.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from auditkit.errors import RunError

ResourceName = Literal["csrc", "templates"]


def resource_dir(name: ResourceName) -> Path:
    """Return the directory holding the shipped resource ``name``."""
    package_dir = Path(__file__).resolve().parent
    for candidate in (package_dir / f"_{name}", package_dir.parent / name):
        if candidate.is_dir():
            return candidate
    raise RunError(
        f"auditkit's {name}/ folder is missing from the installation at {package_dir}",
        hint="reinstall auditkit with `pip install .` from a complete checkout",
    )
