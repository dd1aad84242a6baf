"""auditkit: forget samples with ∇τ, prove it with membership-inference attacks, report it."""

__version__ = "0.1.0"
