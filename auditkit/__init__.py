"""auditkit: forget samples with ∇τ, prove it with membership-inference attacks, report it.

The Python API (:mod:`auditkit.api`) is importable from here: ``auditkit.train``, ``auditkit.adopt``,
``auditkit.forget``, ``auditkit.audit_checkpoint`` and ``auditkit.load``. They are imported on first use, so
``import auditkit`` (and ``auditkit --help``) stays free of torch.
"""

__version__ = "0.1.0"

_API = ("train", "adopt", "forget", "audit_checkpoint", "load")
__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        from auditkit import api

        return getattr(api, name)
    raise AttributeError(f"module 'auditkit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])
