"""The audit side: signals, metrics, the policy, the battery, and the reference models attacks train.

Data flows one way: :mod:`~auditkit.audit.signals` (one forward pass per model) → attacks (pure
functions of signals) → :mod:`~auditkit.audit.metrics` → :mod:`~auditkit.audit.policy` (verdicts) →
:mod:`~auditkit.audit.results` (the dataclasses the record stores).
"""
